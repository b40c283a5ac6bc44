"""Fused Triton kernels for one chunk's E-step and sufficient statistics.

Imported only by :mod:`gaussmix.backends.torch`, and only when triton is importable and the
device is CUDA (or ``TRITON_INTERPRET=1``, which runs the same kernels on CPU tensors for the
tests). The plain torch path of that module is the reference these kernels must equal.

Two kernels per chunk, neither of which materialises an (rows, K, d) array:

``_responsibilities_kernel`` (one program per block of rows)
    For each component ``k``: ``diff = x - μ_k``, ``y = diff P_k`` (a ``tl.dot`` for d >= 16,
    a broadcast product below that), ``log p(x, k) = c_k - |y|²/2``, kept in a
    (rows, K) register tile; then log-sum-exp, responsibilities times the row weight, written
    transposed as (K, rows) so that the next kernel reads each component's column contiguously,
    and the block's ``Σ w log p(x)``. With ``ONLINE`` (by default for K > 32, or K > 64 when
    d > 32) the log-joint is not kept as a register tile: each component's column is stored as
    it is computed, a running log-sum-exp is kept per row, and a second pass over the stored
    columns turns them into responsibilities (the columns are still in cache).

``_statistics_kernel`` (one program per component and slice of rows)
    ``diff = x - s_k`` around the component's shift, then ``Σ r``, ``Σ r diff`` and
    ``Σ r diff diffᵀ`` (a ``tl.dot`` of the r-scaled and plain tiles for d >= 16) or its
    diagonal, accumulated in float32 registers over the slice and written as per-slice partial
    sums, which the caller adds in float64.

Storing the (K, rows) responsibilities costs 8·K bytes per row of memory traffic; recomputing
them in the second kernel would cost the Mahalanobis products again (2·K·d² flops per row),
which is dearer for every d above a few.

Launch settings (row tiles, warps, pipeline stages, statistics programs per multiprocessor,
``ONLINE``) default by shape; a caller's ``tuning=`` or ``$GAUSSMIX_TRITON_TUNING``
("block_resp=64,warps_resp=8,...") overrides them, which is how ``benchmarks/bench_gpu.py
--tune`` sweeps them.

Precision: float32 only (float64 data takes the torch path). The matrix products (d >= 16)
use IEEE float32 FMA by default. ``precision="tf32x3"`` runs them on the tensor cores in three
TF32 passes (split operands, about float32 accuracy); ``"tf32"`` in one pass, faster again but
about 1e-3 relative error in each Mahalanobis term and scatter entry — enough for the
responsibilities, not for the 1e-4 log-likelihood agreement that the default keeps.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl
from numpy.typing import NDArray

from gaussmix._gaussian import LOG_2PI
from gaussmix._params import MixtureParams

__all__ = [
    "MAX_COMPONENTS",
    "MAX_FEATURES",
    "PRECISIONS",
    "TUNING_KEYS",
    "TritonParams",
    "compiled_resources",
    "e_step_chunk",
    "launch_shapes",
    "parse_tuning",
    "supported",
    "tuning_from_env",
]

#: largest K and d the kernels take (register tiles of K_PAD per row, d_pad² per program)
MAX_COMPONENTS = 256
MAX_FEATURES = 64
# at and above this padded d the products go through tl.dot (which needs 16 x 16 tiles)
_DOT_MIN_D = 16
_INT32_LIMIT = 1 << 31
#: ``tl.dot`` input precisions: IEEE float32, 3-pass TF32 (≈ float32), 1-pass TF32 (≈ 1e-3)
PRECISIONS = ("ieee", "tf32x3", "tf32")


def supported(n_features: int, n_components: int | None, dtype: torch.dtype) -> bool:
    """Whether the fused kernels take this shape and dtype (else use the torch path).

    Parameters
    ----------
    n_features : int
    n_components : int or None
        None: K not known yet (only d and dtype are checked).
    dtype : torch.dtype
    """
    return (
        dtype == torch.float32
        and 1 <= n_features <= MAX_FEATURES
        and (n_components is None or 1 <= n_components <= MAX_COMPONENTS)
    )


@dataclass(frozen=True)
class TritonParams:
    """Kernel inputs on the device, float32, contiguous.

    Attributes
    ----------
    means : Tensor of shape (K, d)
    factors : Tensor of shape (K, d, d) or (K, d)
        Per-component precision Cholesky: full matrices ("full", and "tied" broadcast), or
        diagonals ("diag", and "spherical" broadcast).
    full_factor : bool
        Whether ``factors`` are matrices.
    log_const : Tensor of shape (K,)
        ``log φ_k + log det P_k - d/2 log 2π``.
    shift : Tensor of shape (K, d)
    full_moment : bool
        Accumulate (K, d, d) scatter (else its (K, d) diagonal).
    """

    means: torch.Tensor
    factors: torch.Tensor
    full_factor: bool
    log_const: torch.Tensor
    shift: torch.Tensor
    full_moment: bool

    @classmethod
    def of(cls, params: MixtureParams, shift: NDArray, device: torch.device) -> TritonParams:
        K, d = params.n_components, params.n_features
        pc = params.model.component_factors(params.precisions_cholesky, K, d)
        with np.errstate(divide="ignore"):
            log_const = (
                np.log(params.weights) + params.log_det_precision_cholesky - 0.5 * d * LOG_2PI
            )

        def put(a):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        return cls(
            means=put(params.means),
            factors=put(pc),
            full_factor=params.model.moment == "full",
            log_const=put(log_const),
            shift=put(shift),
            full_moment=params.model.moment == "full",
        )


@triton.jit
def _responsibilities_kernel(
    X,
    W,
    MEANS,
    FACTORS,
    LOG_CONST,
    RESP_T,
    LL_PART,
    n_rows,
    n_features,
    n_components,
    stride_x,
    HAS_W: tl.constexpr,
    FULL_FACTOR: tl.constexpr,
    USE_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    ONLINE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    D_PAD: tl.constexpr,
    K_PAD: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    cols = tl.arange(0, D_PAD)
    col_ok = cols < n_features
    x = tl.load(
        X + rows[:, None] * stride_x + cols[None, :],
        mask=row_ok[:, None] & col_ok[None, :],
        other=0.0,
    )
    kcols = tl.arange(0, K_PAD)
    if not ONLINE:
        log_joint = tl.full((BLOCK_N, K_PAD), float("-inf"), tl.float32)
    top = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    total = tl.zeros((BLOCK_N,), tl.float32)
    for k in range(n_components):
        mu = tl.load(MEANS + k * n_features + cols, mask=col_ok, other=0.0)
        diff = x - mu[None, :]
        if FULL_FACTOR:
            # padded rows/columns of P are zero, so padded features add nothing
            P = tl.load(
                FACTORS + k * n_features * n_features + cols[:, None] * n_features + cols[None, :],
                mask=col_ok[:, None] & col_ok[None, :],
                other=0.0,
            )
            if USE_DOT:
                y = tl.dot(diff, P, input_precision=PRECISION)
            else:
                y = tl.sum(diff[:, :, None] * P[None, :, :], axis=1)
        else:
            p = tl.load(FACTORS + k * n_features + cols, mask=col_ok, other=0.0)
            y = diff * p[None, :]
        maha = tl.sum(y * y, axis=1)
        value = tl.load(LOG_CONST + k) - 0.5 * maha
        if ONLINE:
            # log p(x, k) parked in the output (this program's own cache lines, read back
            # below) and a running log-sum-exp: no (rows, K_PAD) select per component, whose
            # cost grows as K² per row
            tl.store(RESP_T + k * n_rows + rows, value, mask=row_ok)
            new_top = tl.maximum(top, value)
            # rows with every component at -inf so far: keep the exponents finite
            safe = tl.where(new_top > float("-inf"), new_top, 0.0)
            total = total * tl.exp(top - safe) + tl.exp(value - safe)
            top = new_top
        else:
            log_joint = tl.where(kcols[None, :] == k, value[:, None], log_joint)
    if not ONLINE:
        top = tl.max(log_joint, axis=1)
    # a row whose every component has weight zero would give -inf - -inf; keep it finite
    top = tl.where(top > float("-inf"), top, 0.0)
    if not ONLINE:
        e = tl.exp(log_joint - top[:, None])
        total = tl.sum(e, axis=1)
    log_norm = top + tl.log(total)
    if HAS_W:
        w = tl.load(W + rows, mask=row_ok, other=0.0)
        ll = tl.sum(tl.where(row_ok, w * log_norm, 0.0), axis=0)
    else:
        w = tl.full((BLOCK_N,), 1.0, tl.float32)
        ll = tl.sum(tl.where(row_ok, log_norm, 0.0), axis=0)
    if ONLINE:
        for k in range(n_components):
            value = tl.load(RESP_T + k * n_rows + rows, mask=row_ok, other=0.0)
            tl.store(RESP_T + k * n_rows + rows, tl.exp(value - log_norm) * w, mask=row_ok)
    else:
        resp = e / total[:, None] * w[:, None]
        tl.store(
            RESP_T + kcols[None, :] * n_rows + rows[:, None],
            resp,
            mask=row_ok[:, None] & (kcols[None, :] < n_components),
        )
    tl.store(LL_PART + pid, ll)


@triton.jit
def _statistics_kernel(
    X,
    RESP_T,
    SHIFT,
    NK_PART,
    SX_PART,
    SXX_PART,
    n_rows,
    n_features,
    n_components,
    stride_x,
    rows_per_slice,
    FULL_MOMENT: tl.constexpr,
    USE_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr,
    D_PAD: tl.constexpr,
):
    k = tl.program_id(0)
    piece = tl.program_id(1)
    start = piece * rows_per_slice
    stop = tl.minimum(start + rows_per_slice, n_rows)
    cols = tl.arange(0, D_PAD)
    col_ok = cols < n_features
    s = tl.load(SHIFT + k * n_features + cols, mask=col_ok, other=0.0)
    # per-lane partial sums over the slice, reduced once at the end (fewer rounding steps)
    acc_nk = tl.zeros((BLOCK_N,), tl.float32)
    acc_sx = tl.zeros((BLOCK_N, D_PAD), tl.float32)
    if FULL_MOMENT:
        acc_sxx = tl.zeros((D_PAD, D_PAD), tl.float32)
    else:
        acc_sxx = tl.zeros((BLOCK_N, D_PAD), tl.float32)
    for first in range(start, stop, BLOCK_N):
        rows = first + tl.arange(0, BLOCK_N)
        row_ok = rows < stop
        ok = row_ok[:, None] & col_ok[None, :]
        x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=ok, other=0.0)
        r = tl.load(RESP_T + k * n_rows + rows, mask=row_ok, other=0.0)
        diff = tl.where(ok, x - s[None, :], 0.0)
        rdiff = diff * r[:, None]
        acc_nk += r
        acc_sx += rdiff
        if FULL_MOMENT:
            if USE_DOT:
                acc_sxx = tl.dot(tl.trans(rdiff), diff, acc_sxx, input_precision=PRECISION)
            else:
                acc_sxx += tl.sum(rdiff[:, :, None] * diff[:, None, :], axis=0)
        else:
            acc_sxx += rdiff * diff
    slot = piece * n_components + k
    tl.store(NK_PART + slot, tl.sum(acc_nk, axis=0))
    tl.store(SX_PART + slot * n_features + cols, tl.sum(acc_sx, axis=0), mask=col_ok)
    if FULL_MOMENT:
        tl.store(
            SXX_PART + slot * n_features * n_features + cols[:, None] * n_features + cols[None, :],
            acc_sxx,
            mask=col_ok[:, None] & col_ok[None, :],
        )
    else:
        tl.store(SXX_PART + slot * n_features + cols, tl.sum(acc_sxx, axis=0), mask=col_ok)


def _pow2(n: int, low: int = 1) -> int:
    return max(low, triton.next_power_of_2(int(n)))


def _programs_wanted(device: torch.device, per_multiprocessor: int = 4) -> int:
    """Resident programs wanted for the statistics kernel's grid (per multiprocessor)."""
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return per_multiprocessor * sms
    return per_multiprocessor


#: launch settings a caller (or ``$GAUSSMIX_TRITON_TUNING``) may override; None: by shape
TUNING_KEYS = (
    "block_resp",
    "warps_resp",
    "online",
    "block_stats",
    "warps_stats",
    "stages_stats",
    "programs_per_sm",
)


def tuning_from_env() -> dict[str, int]:
    """Launch settings from ``$GAUSSMIX_TRITON_TUNING`` ("block_resp=64,warps_resp=8,...")."""
    text = os.environ.get("GAUSSMIX_TRITON_TUNING", "").strip()
    return parse_tuning(text) if text else {}


def parse_tuning(text: str) -> dict[str, int]:
    """``"key=value,..."`` into a dict of :data:`TUNING_KEYS` (integers); raises on others."""
    out: dict[str, int] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in TUNING_KEYS:
            raise ValueError(
                f"GAUSSMIX_TRITON_TUNING: {item.strip()!r} is not key=value with a key among "
                f"{TUNING_KEYS}"
            )
        try:
            out[key] = int(value)
        except ValueError:
            raise ValueError(
                f"GAUSSMIX_TRITON_TUNING: {key} must be an integer, got {value.strip()!r}"
            ) from None
    return out


def _check_tuning(tuning: dict[str, int], d_pad: int, k_pad: int) -> None:
    for key, value in tuning.items():
        if key not in TUNING_KEYS:
            raise ValueError(f"unknown Triton tuning key {key!r}; known: {TUNING_KEYS}")
        if key.startswith(("block", "warps")) and (value < 1 or value & (value - 1)):
            raise ValueError(f"Triton tuning {key} must be a power of two, got {value}")
        if key in ("stages_stats", "programs_per_sm") and value < 1:
            raise ValueError(f"Triton tuning {key} must be >= 1, got {value}")
    if tuning.get("block_stats", 16) < 16 and d_pad >= _DOT_MIN_D:
        raise ValueError("Triton tuning block_stats must be >= 16 where tl.dot is used")
    if tuning.get("block_resp", 16) < 16 and d_pad >= _DOT_MIN_D:
        raise ValueError("Triton tuning block_resp must be >= 16 where tl.dot is used")


def launch_shapes(
    n_rows: int,
    n_features: int,
    n_components: int,
    device: torch.device,
    tuning: dict[str, int] | None = None,
):
    """Tile sizes, warps and grids of both kernels (exposed for tests and benchmarks).

    Parameters
    ----------
    n_rows, n_features, n_components : int
    device : torch.device
    tuning : dict, optional
        Overrides of the shape-based defaults, keys among :data:`TUNING_KEYS`.

    Returns
    -------
    shapes : dict
        ``D_PAD``, ``K_PAD``, ``USE_DOT``, ``ONLINE``, ``BLOCK_N`` and warps of each kernel,
        the statistics kernel's pipeline stages, number of row slices and rows per slice.
    """
    tuning = dict(tuning or {})
    use_dot = _pow2(n_features) >= _DOT_MIN_D
    d_pad = _pow2(n_features, _DOT_MIN_D if use_dot else 2)
    k_pad = _pow2(n_components, 2)
    _check_tuning(tuning, d_pad, k_pad)
    # the (rows, K_PAD) log-joint tile and, without tl.dot, the (rows, d, d) broadcast product
    # are the large register tiles: keep each near 4096-8192 float32 per program
    block_resp = max(16, min(128, 4096 // k_pad))
    if not use_dot:
        block_resp = max(16, min(block_resp, 8192 // (d_pad * d_pad)))
    else:
        # the (rows, d) tiles x, x - μ and y: sm_90 builds (Triton 3.9, cuobjdump -res-usage)
        # spill at 128 rows for d = 32 (255 registers, 144 B of stack per thread)
        block_resp = max(16, min(block_resp, 2048 // d_pad))
    block_stats = 64 if use_dot else max(16, min(128, 4096 // (d_pad * d_pad)))
    warps = 4
    online = k_pad >= 64
    if use_dot and d_pad >= 64:
        # the d = 64 tiles spill on 4 warps (255 registers, 0.1-4 KiB of stack per thread);
        # 32 rows on 8 warps do not (resp 118 registers with the (rows, K) tile up to K = 64,
        # 194 with the running log-sum-exp, which K = 256 needs; statistics 91)
        block_resp, block_stats, warps, online = 32, 32, 8, k_pad >= 128
    block_resp = tuning.get("block_resp", block_resp)
    block_stats = tuning.get("block_stats", block_stats)
    per_sm = tuning.get("programs_per_sm", 4)
    slices = max(
        1,
        min(
            triton.cdiv(n_rows, block_stats),
            triton.cdiv(_programs_wanted(device, per_sm), n_components),
        ),
    )
    rows_per_slice = triton.cdiv(triton.cdiv(n_rows, slices), block_stats) * block_stats
    slices = triton.cdiv(n_rows, rows_per_slice)
    return dict(
        D_PAD=d_pad,
        K_PAD=k_pad,
        USE_DOT=use_dot,
        # the running log-sum-exp pays off where the (rows, K_PAD) select per component is
        # dear: many components
        ONLINE=bool(tuning.get("online", online)),
        BLOCK_RESP=block_resp,
        WARPS_RESP=tuning.get("warps_resp", warps),
        BLOCK_STATS=block_stats,
        WARPS_STATS=tuning.get("warps_stats", warps),
        STAGES_STATS=tuning.get("stages_stats", 3),
        slices=slices,
        rows_per_slice=rows_per_slice,
    )


def compiled_resources(
    n_features: int,
    n_components: int,
    *,
    tuning: dict[str, int] | None = None,
    precision: str = "ieee",
    capability: int = 90,
) -> dict[str, dict[str, int]]:
    """Registers and stack per thread of both kernels as compiled for an NVIDIA GPU, no GPU
    needed (a developer's check for spills: a non-zero stack is local memory).

    The kernels are compiled ahead of time for compute capability ``capability`` (90: H100,
    H200) with the launch settings :func:`launch_shapes` picks (or ``tuning``), and the
    cubin's resource usage is read with the ``cuobjdump`` that Triton's wheel carries.

    Parameters
    ----------
    n_features, n_components : int
    tuning : dict, optional
    precision : {"ieee", "tf32x3", "tf32"}
    capability : int, default=90

    Returns
    -------
    usage : dict
        ``{"responsibilities": {"registers": ..., "stack": ...}, "statistics": {...}}``.

    Raises
    ------
    RuntimeError
        When this Triton cannot compile ahead of time or has no ``cuobjdump``.
    """
    import re
    import shutil
    import subprocess
    import tempfile

    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except ImportError as exc:
        raise RuntimeError(f"this Triton cannot compile ahead of time: {exc}") from None
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    tool = tool if os.path.exists(tool) else shutil.which("cuobjdump")
    if tool is None:
        raise RuntimeError("no cuobjdump (Triton's wheel carries one on Linux x86-64)")
    sh = launch_shapes(1 << 20, n_features, n_components, torch.device("cpu"), tuning)
    pointers = dict.fromkeys(
        ("X", "W", "MEANS", "FACTORS", "LOG_CONST", "RESP_T", "LL_PART"), "*fp32"
    )
    integers = dict.fromkeys(("n_rows", "n_features", "n_components", "stride_x"), "i32")
    resp_constants = dict(
        HAS_W=False,
        FULL_FACTOR=True,
        USE_DOT=sh["USE_DOT"],
        PRECISION=precision,
        ONLINE=sh["ONLINE"],
        BLOCK_N=sh["BLOCK_RESP"],
        D_PAD=sh["D_PAD"],
        K_PAD=sh["K_PAD"],
    )
    stats_pointers = dict.fromkeys(
        ("X", "RESP_T", "SHIFT", "NK_PART", "SX_PART", "SXX_PART"), "*fp32"
    )
    stats_integers = dict(integers, rows_per_slice="i32")
    stats_constants = dict(
        FULL_MOMENT=True,
        USE_DOT=sh["USE_DOT"],
        PRECISION=precision,
        BLOCK_N=sh["BLOCK_STATS"],
        D_PAD=sh["D_PAD"],
    )
    jobs = {
        "responsibilities": (
            _responsibilities_kernel,
            {**pointers, **integers},
            resp_constants,
            dict(num_warps=sh["WARPS_RESP"]),
        ),
        "statistics": (
            _statistics_kernel,
            {**stats_pointers, **stats_integers},
            stats_constants,
            dict(num_warps=sh["WARPS_STATS"], num_stages=sh["STAGES_STATS"]),
        ),
    }
    target = GPUTarget("cuda", capability, 32)
    out = {}
    for name, (kernel, signature, constants, options) in jobs.items():
        signature = {**signature, **dict.fromkeys(constants, "constexpr")}
        try:
            source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
            cubin = triton.compile(source, target=target, options=options).asm["cubin"]
        except Exception as exc:
            raise RuntimeError(f"ahead-of-time compile failed with this Triton: {exc}") from None
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "kernel.cubin")
            with open(path, "wb") as f:
                f.write(cubin)
            text = subprocess.run(
                [tool, "-res-usage", path], capture_output=True, text=True, timeout=120
            ).stdout
        found = re.search(r"REG:(\d+) STACK:(\d+)", text)
        if found is None:
            raise RuntimeError(f"cuobjdump printed no resource usage: {text[-300:]!r}")
        out[name] = dict(registers=int(found.group(1)), stack=int(found.group(2)))
    return out


def e_step_chunk(
    Xc: torch.Tensor,
    wc: torch.Tensor | None,
    tp: TritonParams,
    *,
    precision: str = "ieee",
    tuning: dict[str, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """E-step of one chunk with the fused kernels.

    Parameters
    ----------
    Xc : Tensor of shape (rows, d), float32
        Rows on the device (row stride arbitrary, columns contiguous).
    wc : Tensor of shape (rows,) or None
        Row weights.
    tp : TritonParams
    precision : {"ieee", "tf32x3", "tf32"}, default="ieee"
        ``tl.dot`` input precision of the products (used for d >= 16): IEEE float32 FMA,
        three TF32 tensor-core passes (about float32 accuracy), or one (about 1e-3).
    tuning : dict, optional
        Launch settings (keys :data:`TUNING_KEYS`) overriding the shape-based defaults; None
        reads ``$GAUSSMIX_TRITON_TUNING``.

    Returns
    -------
    nk, sx, sxx, log_likelihood : float64 tensors on the device
        Shapes (K,), (K, d), (K, d, d) or (K, d), and ().
    """
    if Xc.dtype != torch.float32:
        raise TypeError(f"the Triton kernels take float32 rows, got {Xc.dtype}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if Xc.stride(1) != 1:
        Xc = Xc.contiguous()
    n, d = Xc.shape
    K = tp.means.shape[0]
    if n * max(d, K) >= _INT32_LIMIT and n > 1:
        # the kernels index with 32-bit offsets: split chunks whose (rows, d) or (K, rows)
        # arrays reach 2**31 elements
        half = n // 2
        kw = dict(precision=precision, tuning=tuning)
        first = e_step_chunk(Xc[:half], None if wc is None else wc[:half], tp, **kw)
        second = e_step_chunk(Xc[half:], None if wc is None else wc[half:], tp, **kw)
        return tuple(a + b for a, b in zip(first, second, strict=True))
    if not supported(d, K, Xc.dtype):
        raise ValueError(
            f"the Triton kernels take 1 <= d <= {MAX_FEATURES} and K <= {MAX_COMPONENTS}, "
            f"got d = {d}, K = {K}: use kernel='torch'"
        )
    dev = Xc.device
    sh = launch_shapes(n, d, K, dev, tuning_from_env() if tuning is None else tuning)
    resp_t = torch.empty((K, n), dtype=torch.float32, device=dev)
    grid_resp = triton.cdiv(n, sh["BLOCK_RESP"])
    ll_part = torch.empty(grid_resp, dtype=torch.float32, device=dev)
    w = None if wc is None else wc.to(torch.float32).contiguous()
    _responsibilities_kernel[(grid_resp,)](
        Xc,
        Xc if w is None else w,
        tp.means,
        tp.factors,
        tp.log_const,
        resp_t,
        ll_part,
        n,
        d,
        K,
        Xc.stride(0),
        HAS_W=w is not None,
        FULL_FACTOR=tp.full_factor,
        USE_DOT=sh["USE_DOT"],
        PRECISION=precision,
        ONLINE=sh["ONLINE"],
        BLOCK_N=sh["BLOCK_RESP"],
        D_PAD=sh["D_PAD"],
        K_PAD=sh["K_PAD"],
        num_warps=sh["WARPS_RESP"],
    )
    slices = sh["slices"]
    nk_part = torch.empty((slices, K), dtype=torch.float32, device=dev)
    sx_part = torch.empty((slices, K, d), dtype=torch.float32, device=dev)
    sxx_shape = (slices, K, d, d) if tp.full_moment else (slices, K, d)
    sxx_part = torch.empty(sxx_shape, dtype=torch.float32, device=dev)
    _statistics_kernel[(K, slices)](
        Xc,
        resp_t,
        tp.shift,
        nk_part,
        sx_part,
        sxx_part,
        n,
        d,
        K,
        Xc.stride(0),
        sh["rows_per_slice"],
        FULL_MOMENT=tp.full_moment,
        USE_DOT=sh["USE_DOT"],
        PRECISION=precision,
        BLOCK_N=sh["BLOCK_STATS"],
        D_PAD=sh["D_PAD"],
        num_warps=sh["WARPS_STATS"],
        num_stages=sh["STAGES_STATS"],
    )
    f64 = torch.float64
    return (
        nk_part.to(f64).sum(0),
        sx_part.to(f64).sum(0),
        sxx_part.to(f64).sum(0),
        ll_part.to(f64).sum(),
    )
