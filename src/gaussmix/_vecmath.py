"""Vectorisable exp, log, float bit operations and block transposes for numba kernels (maths
only).

libm's ``exp``/``log`` are calls the loop vectoriser cannot see through, so every kernel that
takes the exponential of a row of log-ratios (the CPU engine's, the missing-data kernels, the
compiled grid's small E-step) uses these instead: branch-free polynomial versions, inlined into
the caller at compile time.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from gaussmix import _jit  # noqa: F401  (numba's vector width, before any kernel compiles)

__all__ = [
    "exp_nonpos",
    "f64_bits",
    "fmax",
    "fmin",
    "log_ge1",
    "transpose8",
    "transpose_block",
    "transpose_rows",
    "unliteral",
]

_FM = {"contract", "reassoc", "nsz", "arcp"}

_LN2_HI64 = 6.93147180369123816490e-01
_LN2_LO64 = 1.90821492927058770002e-10
_LOG2E = 1.4426950408889634
_LN2_HI32 = np.float32(0.693359375)
_LN2_LO32 = np.float32(-2.12194440e-4)


@intrinsic
def unliteral(typingctx, x):
    """``x`` typed as its run-time type (``bool``, not ``Literal[bool](True)``; numba only).

    A constant passed to a compiled function from compiled code is typed as a literal, and
    the callee is compiled once more for that constant: a whole EM loop again (``fit_cell``
    calling the fit that ``fit_small`` calls with a Python bool cost 16 s more of a cold
    compile). Wrapped, the constant reaches the callee with the type a Python caller gives.
    """
    t = types.unliteral(x)

    def codegen(context, builder, signature, args):
        return args[0]

    return t(t), codegen


@intrinsic
def _i64_as_f64(typingctx, x):
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def f64_bits(typingctx, x):
    """The bits of a float64 as uint64 (numba only)."""
    sig = types.uint64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def _i32_as_f32(typingctx, x):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _fmax(typingctx, a, b):
    """``max(a, b)`` of two floats of one type, for finite inputs (numba only).

    LLVM's ``maxnum`` with the no-NaN flag: a plain ``vmaxpd``. ``a if a > b else b`` (and
    ``max``) stored back to where ``b`` was loaded from became a masked store, which is
    microcoded on AMD cores (``mx[r] = max(mx[r], lj[k, r])`` ran at a third of the speed).
    """
    sig = a(a, b)

    def codegen(context, builder, signature, args):
        x, y = args
        fnty = ir.FunctionType(x.type, [x.type, x.type])
        fn = builder.module.declare_intrinsic("llvm.maxnum", [x.type], fnty)
        return builder.call(fn, [x, y], fastmath=("nnan",))

    return sig, codegen


@intrinsic
def _fmin(typingctx, a, b):
    """``min(a, b)`` of two floats of one type, for finite inputs (as :func:`_fmax`)."""
    sig = a(a, b)

    def codegen(context, builder, signature, args):
        x, y = args
        fnty = ir.FunctionType(x.type, [x.type, x.type])
        fn = builder.module.declare_intrinsic("llvm.minnum", [x.type], fnty)
        return builder.call(fn, [x, y], fastmath=("nnan",))

    return sig, codegen


def exp_nonpos(t, cut):
    """``exp(t)`` for ``t <= 0``, exactly 0 below ``cut`` (numba only; vectorisable)."""
    raise NotImplementedError  # replaced by the overload inside compiled code


@intrinsic
def _f32_bits(typingctx, x):
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


# adding 1.5·2^52 (1.5·2^23) to an integer-valued float puts that integer in the low bits of
# its representation: 2^n is then built with integer vector operations, because AVX2 has no
# packed float64 -> int64 conversion (a float -> int cast would run one lane at a time)
_SHIFT64 = 6755399441055744.0
# exp(r) = 1 + r + r²·q(r) on |r| <= ln2/2, q of degree 9 fitted to (expm1(r) - r)/r² on 200
# Chebyshev nodes with weights r² (least squares; near-minimax): relative error below 4.4e-16
# measured, as the degree-13 Taylor polynomial it replaces, with two fewer multiply-adds
(_E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11) = (
    0.5000000000000024,
    0.16666666666667096,
    0.041666666666371185,
    0.008333333332925144,
    0.0013888888998498103,
    0.0001984127075463671,
    2.4801426390141536e-05,
    2.755655931232192e-06,
    2.7656507974866827e-07,
    2.5283877711124586e-08,
)
_SHIFT32 = np.float32(12582912.0)
# float32: q of degree 4, fitted the same way (Estrin's scheme): relative error 1.2e-7 measured
# (one float32 rounding), 40 % faster than the degree-7 Taylor polynomial in Horner's scheme
_F2, _F3, _F4, _F5, _F6 = (
    np.float32(0.5000000080806988),
    np.float32(0.16666515988904151),
    np.float32(0.04166626313604872),
    np.float32(0.008369151694189362),
    np.float32(0.0013946446563996462),
)


@overload(exp_nonpos, inline="always", fastmath=_FM)
def _exp_nonpos_impl(t, cut):
    # Cody-Waite reduction t = n ln2 + r, |r| <= ln2/2, then a polynomial in r and 2^n built
    # from its exponent bits: no libm call, so the loop over rows vectorises (libm exp costs
    # ~14 ns per call and dominates small-d E-steps). np.floor, not math.floor: the latter
    # returns an integer, whose conversions do not vectorise. The float64 polynomial is
    # evaluated in Estrin's scheme (a dependency chain of 4 multiply-adds instead of 11).
    # Inside the kernels, compiled with reassociation, LLVM folds n·ln2_hi + n·ln2_lo into n
    # times ln 2 rounded (numba sets the fast-math flags on every instruction, so neither an
    # intrinsic nor the split survives; llvm.arithmetic.fence does, but keeps the loop scalar,
    # 3x slower): exp(t) then carries a further relative error of about |t|·2.3e-17, measured
    # 4e-16 for t in [-1, 0], 1.6e-15 at -40, 2e-14 at the float64 cut-off -600. The terms
    # that can move a row's sum (t > -37) stay within a few ulp of it.
    if isinstance(t, types.Float) and t.bitwidth == 32:

        def impl32(t, cut):
            tt = max(t, np.float32(-87.0))
            n = np.floor(tt * np.float32(_LOG2E) + np.float32(0.5))
            r = tt - n * _LN2_HI32 - n * _LN2_LO32
            r2 = r * r
            r4 = r2 * r2
            p = ((np.float32(1.0) + r) + (_F2 + _F3 * r) * r2) + (
                (_F4 + _F5 * r) + _F6 * r2
            ) * r4
            bits = _f32_bits(n + _SHIFT32)
            scale = _i32_as_f32((bits + np.int32(127)) << np.int32(23))
            return np.float32(0.0) if t < cut else p * scale

        return impl32

    def impl64(t, cut):
        tt = max(t, -708.0)
        n = np.floor(tt * _LOG2E + 0.5)
        r = tt - n * _LN2_HI64 - n * _LN2_LO64
        r2 = r * r
        r4 = r2 * r2
        r8 = r4 * r4
        q0 = 1.0 + r
        q1 = _E2 + r * _E3
        q2 = _E4 + r * _E5
        q3 = _E6 + r * _E7
        q4 = _E8 + r * _E9
        q5 = _E10 + r * _E11
        p = (q0 + q1 * r2) + (q2 + q3 * r2) * r4 + (q4 + q5 * r2) * r8
        bits = f64_bits(n + _SHIFT64)
        scale = _i64_as_f64(np.int64((bits + np.uint64(1023)) << np.uint64(52)))
        return 0.0 if t < cut else p * scale

    return impl64


def log_ge1(x):
    """``log(x)`` in float64 for finite ``x >= 1`` (numba only; vectorisable)."""
    raise NotImplementedError  # replaced by the overload inside compiled code


@overload(log_ge1, inline="always", fastmath=_FM)
def _log_ge1_impl(x):
    # x = 2^e m with m in [sqrt(2)/2, sqrt(2)); log m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.172,
    # as an odd series to s^19 (error below 1e-16 absolute). The arguments here are the sums
    # of a row's exponentials, each <= 1 and the largest exactly 1: a libm call per row (which
    # keeps the loop over rows scalar) cost about a fifth of a d = 8 E-step.
    def impl(x):
        bits = f64_bits(np.float64(x))
        m = _i64_as_f64(
            np.int64((bits & np.uint64(0x000FFFFFFFFFFFFF)) | np.uint64(0x3FF0000000000000))
        )
        e = _i64_as_f64(np.int64((bits >> np.uint64(52)) | np.uint64(0x4330000000000000)))
        e = e - (4503599627370496.0 + 1023.0)
        big = m > 1.4142135623730951
        m = m * 0.5 if big else m
        e = e + 1.0 if big else e
        f = m - 1.0
        s = f / (2.0 + f)
        z = s * s
        p = 1.0 / 19.0
        p = p * z + 1.0 / 17.0
        p = p * z + 1.0 / 15.0
        p = p * z + 1.0 / 13.0
        p = p * z + 1.0 / 11.0
        p = p * z + 1.0 / 9.0
        p = p * z + 1.0 / 7.0
        p = p * z + 1.0 / 5.0
        p = p * z + 1.0 / 3.0
        return e * _LN2_HI64 + ((2.0 * s) * (p * z) + 2.0 * s + e * _LN2_LO64)

    return impl


fmax = _fmax
fmin = _fmin


# the three rounds of an 8 x 8 transpose in registers: round s interleaves vectors 2^s apart
# in runs of 2^s lanes (lanes 8-15 name the second vector)
_TRANSPOSE_ROUNDS = (
    ((0, 8, 2, 10, 4, 12, 6, 14), (1, 9, 3, 11, 5, 13, 7, 15)),
    ((0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15)),
    ((0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)),
)
# (from, to): one dtype, float32 widened to float64 or float64 rounded to float32
_TRANSPOSE_DTYPES = (
    (types.float32, types.float32),
    (types.float64, types.float64),
    (types.float32, types.float64),
    (types.float64, types.float32),
)


@intrinsic
def transpose8(typingctx, X, r, c, Y, i, q):
    """``Y[i + a, q + b] = X[r + b, c + a]`` for ``a, b < 8`` (numba only; no bounds checks).

    ``X`` and ``Y`` are C-contiguous 2-d float arrays, of one dtype or of float32 and float64
    (converted after the shuffles, as an element-by-element assignment would). Eight vector
    loads, 24 shuffles and eight vector stores (:func:`transpose_block` handles the edges): the
    element-by-element copy it replaced took 9.2 against 5.8 ms for 1 000 000 x 8 float64 rows
    (scratch, one thread; a W4 diag E-step is about 40 ms there).
    """
    arrays = (X, Y)
    if not all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C" for a in arrays):
        return None
    if (X.dtype, Y.dtype) not in _TRANSPOSE_DTYPES:
        return None
    if not all(isinstance(t, types.Integer) for t in (r, c, i, q)):
        return None
    sig = types.void(X, r, c, Y, i, q)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        lanes = ir.VectorType(ir.IntType(32), 8)
        r, c, i, q = (
            context.cast(builder, args[a], signature.args[a], types.intp) for a in (1, 2, 4, 5)
        )

        def rows(a, first_row, col):
            """The addresses of eight consecutive rows of array argument ``a`` from
            ``(first_row, col)``, as vectors of 8, and the element alignment."""
            aty = signature.args[a]
            array = context.make_array(aty)(context, builder, args[a])
            size = aty.dtype.bitwidth // 8
            vec = ir.VectorType(context.get_value_type(aty.dtype), 8)
            stride = cgutils.unpack_tuple(builder, array.strides)[0]
            ld = builder.sdiv(stride, ir.Constant(i64, size))
            out = []
            for b in range(8):
                row = builder.add(first_row, ir.Constant(i64, b))
                index = builder.add(builder.mul(row, ld), col)
                out.append(builder.bitcast(builder.gep(array.data, [index]), vec.as_pointer()))
            return out, size, vec

        sources, align, _ = rows(0, r, c)
        v = [builder.load(address, align=align) for address in sources]
        for s, masks in enumerate(_TRANSPOSE_ROUNDS):
            step = 1 << s
            lo, hi = (ir.Constant(lanes, mask) for mask in masks)
            out = list(v)
            for base in range(0, 8, 2 * step):
                for o in range(base, base + step):
                    out[o] = builder.shuffle_vector(v[o], v[o + step], lo)
                    out[o + step] = builder.shuffle_vector(v[o], v[o + step], hi)
            v = out
        targets, align, vec = rows(3, i, q)
        for value, address in zip(v, targets, strict=True):
            if value.type != vec:
                widen = signature.args[3].dtype == types.float64
                value = (builder.fpext if widen else builder.fptrunc)(value, vec)
            builder.store(value, address, align=align)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, nogil=True, fastmath=_FM)
def transpose_block(X, r0, c0, rows, cols, Y, i0, q0):
    """``Y[i0 + a, q0 + b] = X[r0 + b, c0 + a]`` for ``a < cols``, ``b < rows``.

    Blocks of 8 x 8 go through :func:`transpose8`; the edges element by element. The CPU
    engine's kernels read tiles of rows through it (so that their loops over rows vectorise)
    and write (rows, K) outputs from their (K, rows) tiles. Dtypes as :func:`transpose8`. No
    bounds checks beyond numba's.
    """
    b = 0
    while b + 8 <= rows:
        a = 0
        while a + 8 <= cols:
            transpose8(X, r0 + b, c0 + a, Y, i0 + a, q0 + b)
            a += 8
        for edge in range(a, cols):
            for e in range(b, b + 8):
                Y[i0 + edge, q0 + e] = X[r0 + e, c0 + edge]
        b += 8
    for e in range(b, rows):
        for a in range(cols):
            Y[i0 + a, q0 + e] = X[r0 + e, c0 + a]


@nb.njit(cache=True, nogil=True, fastmath=_FM)
def transpose_rows(X, t0, m, xt):
    """``xt[:d, :m] = X[t0:t0 + m].T`` (``d`` = ``X.shape[1]``): a tile of rows transposed, so
    that kernels' loops over rows vectorise (:func:`transpose_block`)."""
    transpose_block(X, t0, 0, m, X.shape[1], xt, 0, 0)
