"""Every component's log-joint from the rows' quadratic features, formed in registers.

With full precision matrices the log-joint of row ``x`` and component ``k`` is a linear
function of the quadratic features of ``x' = x - c``: ``x'_i x'_j`` (``i <= j``), ``x'_i`` and
1 (:func:`gaussmix.backends.cpu._quadratic_weights` builds the weights). Appending a constant
coordinate ``x'_d = 1`` makes all of them products ``x'_i x'_j`` over ``i <= j <= d``, so one
loop nest covers them.

The BLAS form of this (features of a block of rows written to memory, then a GEMM with the
weights) runs at half the machine's GEMM rate: the GEMM has only K output columns, so packing
its operands costs as much as the multiply-adds. Here a tile of 24 rows × 8 components keeps
its 24 accumulators in vector registers for the whole pair loop: per pair ``(i, j)`` three
vector products ``x'_i x'_j`` (8 rows each) and eight broadcast weights feed 24 fused
multiply-adds; no feature is ever stored. The tile is written in LLVM IR (a numba intrinsic)
because LLVM's loop vectoriser only vectorises innermost loops and would keep the
accumulators of a numba loop in memory.

The features and sums are float64 for float32 rows too (written out in float32 for a GEMM,
the expanded form would cancel: there the executor projects float32 rows instead).

It needs 32 vector registers of 8 float64 (AVX-512): :func:`available` says whether numba's
target has them; elsewhere the executor keeps the BLAS form.
"""

from __future__ import annotations

import functools

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numpy.typing import NDArray

from gaussmix import _jit
from gaussmix._vecmath import transpose_block, transpose_rows

__all__ = ["COMPONENTS", "ROWS", "available", "log_joint", "tile_weights"]

_LANES = 8  # float64 per 512-bit vector
_ROW_VECTORS = 3
# components per tile: 3 × 8 accumulators, 3 products and 3 row vectors of x'_i in 32
# registers (rows × components in scratch timings on one Emerald Rapids core, d = 64, K = 32:
# 24 × 8 at 74-91 GFLOP/s, 16 × 12 at 72, 48 × 4 at 66, 8 × 24 at 65, 16 × 16 at 63-65,
# 8 × 16 at 55-63, 32 × 4 at 53, 16 × 8 at 41-57; square dgemm 79-88 on that core)
COMPONENTS = 8
ROWS = _LANES * _ROW_VECTORS


def available() -> bool:
    """Whether numba's target has AVX-512 registers (see :func:`gaussmix._jit.wide_registers`)."""
    return _jit.wide_registers()


def tile_weights(W: NDArray, n_features: int) -> NDArray:
    """The weights ``W`` (features × K, in :func:`_cpu_kernels.quadratic_features`' order)
    rearranged for :func:`log_joint`: shape ``(ceil(K / COMPONENTS), P, COMPONENTS)`` with
    ``P = (d + 1)(d + 2) / 2`` pairs ``i <= j <= d`` in row-major order, padded with zero
    columns."""
    d = n_features
    P, K = W.shape
    if P != d * (d + 1) // 2 + d + 1:
        raise ValueError(f"W has {P} rows, not the {d * (d + 1) // 2 + d + 1} of d = {d}")
    blocks = -(-K // COMPONENTS)
    out = np.zeros((blocks * COMPONENTS, P))
    out[:K] = W[_order(d)].T
    return np.ascontiguousarray(out.reshape(blocks, COMPONENTS, P).transpose(0, 2, 1))


@functools.lru_cache(maxsize=16)
def _order(d: int) -> NDArray:
    """For each pair ``i <= j <= d`` in row-major order, its row in the feature order (pairs
    ``i <= j < d`` row-major, then ``x'_i``, then 1)."""
    pair = np.empty((d + 1, d + 1), dtype=np.intp)
    i2, j2 = np.triu_indices(d)
    pair[i2, j2] = np.arange(i2.size)
    pair[:d, d] = i2.size + np.arange(d)
    pair[d, d] = i2.size + d
    order = pair[np.triu_indices(d + 1)]
    order.flags.writeable = False
    return order


def _is_c_float64(ty, ndim: int) -> bool:
    return (
        isinstance(ty, types.Array)
        and ty.dtype == types.float64
        and ty.ndim == ndim
        and ty.layout == "C"
    )


@intrinsic
def _tile(typingctx, xt, w, lt, r0, block):
    """``lt[block·C + c, r0 + q] = Σ_{i <= j} xt[i, r0 + q] xt[j, r0 + q] w[block, p(i, j), c]``
    for ``q < ROWS``, ``c < COMPONENTS`` (numba only; ``xt`` is ``(d + 1, n)``, ``w`` from
    :func:`tile_weights`, ``lt`` is ``(≥ (block + 1)·C, n)``, all C-contiguous float64)."""
    if not (_is_c_float64(xt, 2) and _is_c_float64(w, 3) and _is_c_float64(lt, 2)):
        return None
    sig = types.void(xt, w, lt, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        vec = ir.VectorType(ir.DoubleType(), _LANES)
        X = context.make_array(signature.args[0])(context, builder, args[0])
        W = context.make_array(signature.args[1])(context, builder, args[1])
        L = context.make_array(signature.args[2])(context, builder, args[2])
        r0, block = args[3], args[4]
        eight = ir.Constant(i64, 8)
        d1 = cgutils.unpack_tuple(builder, X.shape)[0]
        ldx = builder.sdiv(cgutils.unpack_tuple(builder, X.strides)[0], eight)
        ldw = builder.sdiv(cgutils.unpack_tuple(builder, W.strides)[0], eight)
        ldl = builder.sdiv(cgutils.unpack_tuple(builder, L.strides)[0], eight)
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.v{_LANES}f64"
        )
        undef = ir.Constant(vec, ir.Undefined)
        lane0 = ir.Constant(ir.IntType(32), 0)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES)

        def offset(value, extra):
            return builder.add(value, ir.Constant(i64, extra))

        def load_vector(ptr, index):
            address = builder.bitcast(builder.gep(ptr, [index]), vec.as_pointer())
            return builder.load(address, align=8)

        # loop-carried values live in allocas: LLVM's SROA turns them into registers
        zero = ir.Constant(vec, [0.0] * _LANES)
        acc = [
            cgutils.alloca_once_value(builder, zero) for _ in range(_ROW_VECTORS * COMPONENTS)
        ]
        weights = cgutils.alloca_once_value(
            builder, builder.gep(W.data, [builder.mul(block, ldw)])
        )
        with cgutils.for_range(builder, d1) as outer:
            i = outer.index
            row_i = builder.add(builder.mul(i, ldx), r0)
            xi = [load_vector(X.data, offset(row_i, _LANES * g)) for g in range(_ROW_VECTORS)]
            with cgutils.for_range_slice(builder, i, d1, ir.Constant(i64, 1)) as (j, _):
                row_j = builder.add(builder.mul(j, ldx), r0)
                f = [
                    builder.fmul(xi[g], load_vector(X.data, offset(row_j, _LANES * g)))
                    for g in range(_ROW_VECTORS)
                ]
                wp = builder.load(weights)
                for c in range(COMPONENTS):
                    s = builder.load(builder.gep(wp, [ir.Constant(i64, c)]))
                    b = builder.shuffle_vector(
                        builder.insert_element(undef, s, lane0), undef, splat
                    )
                    for g in range(_ROW_VECTORS):
                        a = acc[g * COMPONENTS + c]
                        builder.store(builder.call(fma, [f[g], b, builder.load(a)]), a)
                builder.store(builder.gep(wp, [ir.Constant(i64, COMPONENTS)]), weights)
        first = builder.mul(block, ir.Constant(i64, COMPONENTS))
        for c in range(COMPONENTS):
            row = builder.add(builder.mul(offset(first, c), ldl), r0)
            for g in range(_ROW_VECTORS):
                address = builder.gep(L.data, [offset(row, _LANES * g)])
                address = builder.bitcast(address, vec.as_pointer())
                builder.store(builder.load(acc[g * COMPONENTS + c]), address, align=8)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True, error_model="numpy")
def log_joint(X, centre, W, xt, lt, L):
    """``L[r, k] = features(X[r] - centre) · W[:, k]`` for every row and component, in
    float64 (``X`` and ``L`` may be float32).

    ``W`` comes from :func:`tile_weights`; ``xt`` (``(d + 1, ≥ n)``) and ``lt``
    (``(W.shape[0]·COMPONENTS, ≥ n)``) are scratch, with ``n`` the rows of ``X`` rounded up to
    a multiple of :data:`ROWS`; ``L`` is ``(rows, K)``.
    """
    m, d = X.shape
    n = (m + ROWS - 1) // ROWS * ROWS
    K = L.shape[1]
    # the tiles read and write without bounds checks
    if xt.shape[0] != d + 1 or xt.shape[1] < n or centre.shape[0] != d:
        raise ValueError("xt must be (n_features + 1, rows rounded up to ROWS), centre (d,)")
    if W.shape[1] != (d + 1) * (d + 2) // 2 or W.shape[2] != COMPONENTS:
        raise ValueError("W must come from tile_weights for these n_features")
    if lt.shape[0] < W.shape[0] * COMPONENTS or lt.shape[1] < n:
        raise ValueError("lt must be (W.shape[0] * COMPONENTS, rows rounded up to ROWS)")
    if L.shape[0] != m or K > W.shape[0] * COMPONENTS:
        raise ValueError("L must be (rows, at most W.shape[0] * COMPONENTS)")
    # transposed in 8 x 8 blocks, then centred: feature by feature, the strided reads took
    # 6.4 against 2.9 ms over W3's 50 000 x 64 rows in chunks of 782 (scratch, one thread)
    transpose_rows(X, 0, m, xt)
    for i in range(d):
        ci = centre[i]
        for r in range(m):
            xt[i, r] -= ci
        for r in range(m, n):
            xt[i, r] = 0.0
    for r in range(n):
        xt[d, r] = 1.0
    for b in range(W.shape[0]):
        for r0 in range(0, n, ROWS):
            _tile(xt, W, lt, r0, b)
    transpose_block(lt, 0, 0, K, m, L, 0, 0)
