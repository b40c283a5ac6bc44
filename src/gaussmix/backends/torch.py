"""The torch executor: the E-step on a torch device (a CUDA GPU, or the CPU).

Data may be a numpy array, a CPU tensor or a CUDA tensor. On a GPU the rows stay on the device
when they fit (half the free memory); otherwise they stay on the host and are streamed through
the GPU chunk by chunk, each chunk copied from pinned memory on a side stream while the previous
one is being computed. Each chunk's statistics are accumulated around the shift (the previous
means) in the working precision and summed in float64 across chunks, on the device; one small
copy per EM iteration brings the sums to the host, where the M-step (numpy) runs.

Two kernels compute a chunk's E-step: the plain torch path below (batched matmuls, readable, the
reference and fallback), and fused Triton kernels (:mod:`gaussmix.backends._triton`), chosen
automatically on CUDA for float32 data of supported shapes. ``kernel=`` (or the environment
variable ``GAUSSMIX_GPU_KERNEL``) forces either.

torch is an optional dependency (``pip install 'gaussmix[gpu]'``): importing this module without
it raises an ImportError that says so.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gaussmix._gaussian import LOG_2PI
from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats
from gaussmix._validation import check_sample_weight

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without torch
    raise ImportError(
        "the GPU engine (device=... or engine='torch') needs PyTorch, which is not installed: "
        "pip install 'gaussmix[gpu]' (install torch first from the index matching your CUDA)"
    ) from exc

__all__ = ["KERNELS", "TorchExecutor", "predict_op"]

#: E-step kernels accepted by ``kernel=``; "auto" picks Triton on CUDA when it applies
KERNELS = ("auto", "torch", "triton")
# Triton matrix-product precisions (kept here too: the Triton module is imported lazily)
_PRECISIONS = ("ieee", "tf32x3", "tf32")

# elements of the largest (K, rows, d) temporary of the torch path: 1 Mi (8 MiB float64) keeps
# it in cache on a CPU; 32 Mi (128 MiB float32) amortises kernel launches on a GPU
_CPU_CHUNK_ELEMENTS = 1 << 20
_GPU_CHUNK_ELEMENTS = 1 << 25
# rows copied to the host for initialisation when the data lives on the GPU
_DEVICE_INIT_ROWS = 1 << 20
# fraction of free GPU memory that host data may take before it is streamed instead of copied
_RESIDENT_FRACTION = 0.5
_STREAM_BUFFERS = 3

_INSTALL_HINT = "pip install 'gaussmix[gpu]'"


def _is_tensor(X: Any) -> bool:
    return isinstance(X, torch.Tensor)


def _resolve_device(device: Any, X: Any) -> torch.device:
    if device is None:
        return X.device if _is_tensor(X) else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be a torch device such as 'cuda', 'cuda:1' or 'cpu', got {device!r}"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but torch {torch.__version__} sees no CUDA "
                "GPU (a CPU-only build of torch, or no GPU/driver); use device='cpu', or "
                f"install a CUDA build of torch ({_INSTALL_HINT} after installing torch from "
                "the index matching your CUDA)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ValueError(f"the torch engine runs on 'cuda' or 'cpu' devices, got {device!r}")
    return dev


def _working_dtype(source_dtype: Any, dtype: str | None) -> torch.dtype:
    """float32 stays float32, anything else becomes float64, unless ``dtype`` says otherwise."""
    if dtype is not None:
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}")
        return torch.float32 if dtype == "float32" else torch.float64
    if source_dtype in (torch.float32, np.float32, np.dtype(np.float32)):
        return torch.float32
    return torch.float64


_NUMPY_OF = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def _check_tensor(X: torch.Tensor, what: str = "X") -> None:
    if X.dtype.is_complex or not (X.dtype.is_floating_point or X.dtype in _INTEGER_DTYPES):
        raise TypeError(f"{what} must hold real numbers, got a tensor of dtype {X.dtype}")


_INTEGER_DTYPES = {
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
}


def _as_source(X: Any) -> torch.Tensor | NDArray:
    """A 2-D tensor or numpy array of real numbers, not yet cast; raises on anything else."""
    if _is_tensor(X):
        _check_tensor(X)
        if X.requires_grad:
            X = X.detach()
        source = X
    else:
        if isinstance(X, (str, bytes, os.PathLike)):
            raise TypeError(
                f"the torch engine needs an array or tensor, got {type(X).__name__} "
                "(files are read by engine='stream')"
            )
        try:
            source = np.asarray(X)
        except Exception as exc:
            raise TypeError(f"X could not be read as an array: {exc}") from None
        if source.dtype.kind not in "biuf":
            raise TypeError(f"X must hold real numbers, got dtype {source.dtype}")
    if source.ndim != 2:
        raise ValueError(
            f"Expected 2D array, got {source.ndim}D array instead; reshape your data with "
            "X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single sample"
        )
    n, d = source.shape
    if n < 1:
        raise ValueError(f"Found array with 0 sample(s) (shape={tuple(source.shape)}); need >= 1")
    if d < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={tuple(source.shape)}); need >= 1")
    return source


def _check_finite(X: torch.Tensor | NDArray, what: str = "X") -> None:
    if _is_tensor(X):
        if X.dtype.is_floating_point:
            bad_nan = bool(torch.isnan(X).any())
            bad_inf = bool(torch.isinf(X).any())
        else:
            return
    else:
        if X.dtype.kind != "f":
            return
        bad_nan = bool(np.isnan(X).any())
        bad_inf = bool(np.isinf(X).any())
    if bad_nan:
        raise ValueError(f"Input {what} contains NaN.")
    if bad_inf:
        raise ValueError(f"Input {what} contains infinity or a value too large for its dtype.")


def _check_weights(sample_weight: Any, n: int) -> NDArray | None:
    if sample_weight is None:
        return None
    if _is_tensor(sample_weight):
        _check_tensor(sample_weight, "sample_weight")
        w = sample_weight.detach().to("cpu", torch.float64).numpy()
    else:
        w = sample_weight
    w = check_sample_weight(w, n)
    if not w.sum() > 0:
        raise ValueError("sample_weight sums to zero: at least one row needs a positive weight")
    return w


def _triton_importable() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def _triton_module():
    """:mod:`gaussmix.backends._triton`, imported on first use (it imports triton)."""
    from gaussmix.backends import _triton

    return _triton


# ---------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class _DeviceParams:
    """MixtureParams as tensors on the device, in the working dtype."""

    moment: str
    means: torch.Tensor  # (K, d)
    prec_chol: torch.Tensor  # (K, d, d) for the "full" moment, (K, d) for "diag"
    log_gauss_const: torch.Tensor  # (K,): log det P_k - d/2 log 2π
    log_weights: torch.Tensor  # (K,)

    @classmethod
    def of(cls, params: MixtureParams, device: torch.device, dtype: torch.dtype):
        np_dtype = _NUMPY_OF[dtype]

        def put(a):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np_dtype)).to(device)

        # cast exactly as MixtureParams.log_gaussian/log_joint do, so float64 runs agree
        const = (params.log_det_precision_cholesky - 0.5 * params.n_features * LOG_2PI).astype(
            np_dtype
        )
        with np.errstate(divide="ignore"):
            log_w = np.log(params.weights).astype(np_dtype)
        return cls(
            moment=params.model.moment,
            means=put(params.means),
            # the model lays its factors out per component: no branching on its name here
            prec_chol=put(
                params.model.component_factors(
                    params.precisions_cholesky, params.n_components, params.n_features
                )
            ),
            log_gauss_const=put(const),
            log_weights=put(log_w),
        )


def _centred(Xc: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """``x_n - c_k`` for every component: shape (K, rows, d)."""
    return Xc.unsqueeze(0) - centres.unsqueeze(1)


def _squared_mahalanobis(diff: torch.Tensor, dp: _DeviceParams) -> torch.Tensor:
    """``|(x_n - μ_k) P_k|²`` of shape (K, rows) from ``diff = x - μ`` of shape (K, rows, d)."""
    if dp.moment == "full":
        y = torch.bmm(diff, dp.prec_chol)
    else:
        y = diff * dp.prec_chol.unsqueeze(1)
    return (y * y).sum(-1)


def _log_joint_t(diff: torch.Tensor, dp: _DeviceParams) -> torch.Tensor:
    """``log φ_k + log N(x_n; μ_k, Σ_k)`` of shape (K, rows)."""
    maha = _squared_mahalanobis(diff, dp)
    return (dp.log_gauss_const.unsqueeze(1) - 0.5 * maha) + dp.log_weights.unsqueeze(1)


def _torch_chunk_stats(
    Xc: torch.Tensor,
    wc: torch.Tensor | None,
    dp: _DeviceParams,
    shift: torch.Tensor,
    shift_is_means: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference E-step of one chunk on the device.

    Returns ``(nk, sx, sxx, log_likelihood)`` as float64 tensors on the chunk's device; the
    per-chunk products run in the working dtype, centred on each component's shift.
    """
    diff = _centred(Xc, dp.means)  # (K, n, d)
    log_joint = _log_joint_t(diff, dp)  # (K, n)
    log_norm = torch.logsumexp(log_joint, dim=0)  # (n,)
    resp = torch.exp(log_joint - log_norm.unsqueeze(0))  # (K, n)
    if wc is None:
        ll = log_norm.to(torch.float64).sum()
    else:
        resp = resp * wc.to(resp.dtype).unsqueeze(0)
        ll = torch.dot(wc.to(torch.float64), log_norm.to(torch.float64))
    centred = diff if shift_is_means else _centred(Xc, shift)
    nk = resp.sum(1, dtype=torch.float64)
    sx = torch.bmm(resp.unsqueeze(1), centred).squeeze(1)
    if dp.moment == "full":
        sxx = torch.bmm((centred * resp.unsqueeze(2)).transpose(1, 2), centred)
    else:
        sxx = torch.bmm(resp.unsqueeze(1), centred * centred).squeeze(1)
    return nk, sx.to(torch.float64), sxx.to(torch.float64), ll


# ------------------------------------------------------------------------------------ executor
class TorchExecutor:
    """E-step on a torch device: a CUDA GPU, or the CPU (the same code, for testing and as a
    fallback).

    Parameters
    ----------
    X : ndarray or torch.Tensor of shape (n_samples, n_features)
        Rows of real numbers, finite, on the CPU or a CUDA device. A tensor already on
        ``device`` in the working dtype is used without a copy.
    sample_weight : array-like or torch.Tensor of shape (n_samples,), optional
        Non-negative row weights (not all zero).
    chunk_size : int, optional
        Rows per E-step chunk (default: sized so that the largest temporary is about
        8 MiB on a CPU and 128 MiB on a GPU).
    device : str or torch.device, optional
        ``"cuda"``, ``"cuda:1"``, ``"cpu"``; None: the tensor's own device, the CPU for arrays.
    dtype : {None, "float32", "float64"}, optional
        Working precision; None follows the data (float32 stays float32, else float64).
    kernel : {"auto", "torch", "triton"}, optional
        E-step kernel. "auto" (the default, or ``$GAUSSMIX_GPU_KERNEL``) uses the fused Triton
        kernels on CUDA for float32 data of supported shapes and the torch path otherwise;
        "triton" forces them (CUDA, or the CPU under ``TRITON_INTERPRET=1``).
    precision : {"ieee", "tf32x3", "tf32"}, optional
        Input precision of the Triton kernels' matrix products (d >= 16): IEEE float32
        (the default, or ``$GAUSSMIX_GPU_PRECISION``), three TF32 tensor-core passes (about
        float32 accuracy, faster at large d·K), or one TF32 pass (fastest, about 1e-3
        relative error in the Mahalanobis terms). The torch path ignores it.
    resident : bool, optional
        Force (True) or forbid (False) copying host data to the GPU once; None decides by
        size (at most half the free GPU memory), streaming the rest.

    Attributes
    ----------
    n_samples, n_features : int
        Shape of the data.
    dtype : numpy.dtype
        Working precision.
    device : torch.device
        Where the E-step runs.
    kernel : {"torch", "triton"}
        The kernel in use (``kernel="auto"`` resolved).
    streamed : bool
        True when host rows are streamed through the GPU each iteration.
    """

    def __init__(
        self,
        X: Any,
        sample_weight: Any = None,
        *,
        chunk_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: str | None = None,
        kernel: str | None = None,
        precision: str | None = None,
        resident: bool | None = None,
    ) -> None:
        source = _as_source(X)
        self.device = _resolve_device(device, source)
        work = _working_dtype(source.dtype, dtype)
        self._torch_dtype = work
        self.dtype = _NUMPY_OF[work]
        self.n_samples, self.n_features = (int(s) for s in source.shape)
        if chunk_size is not None and (
            not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        _check_finite(source)
        w = _check_weights(sample_weight, self.n_samples)
        self._weights_np = w
        self.weight_sum = float(self.n_samples if w is None else w.sum())

        on_gpu = self.device.type == "cuda"
        if resident is None:
            resident = not on_gpu or (_is_tensor(source) and source.device.type == "cuda")
            if not resident:
                free, _ = torch.cuda.mem_get_info(self.device)
                resident = _nbytes(source.shape, work) <= _RESIDENT_FRACTION * free
        self.streamed = on_gpu and not resident

        if self.streamed:
            # stays on the host, cast chunk by chunk while it is copied into pinned buffers
            self._X = (
                source if _is_tensor(source) else torch.from_numpy(np.ascontiguousarray(source))
            )
            self._X = self._X.to("cpu")
            self._w = None if w is None else torch.from_numpy(w)
        else:
            self._X = _to_device(source, self.device, work)
            self._w = None if w is None else torch.from_numpy(w).to(self.device)

        self._kernel_request = (
            os.environ.get("GAUSSMIX_GPU_KERNEL", "auto") if kernel is None else kernel
        )
        self.kernel = self._pick_kernel(self._kernel_request)
        if precision is None:
            precision = os.environ.get("GAUSSMIX_GPU_PRECISION", "ieee")
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
        self.precision = precision

    # ------------------------------------------------------------------ kernel choice
    def _pick_kernel(self, kernel: str) -> str:
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
        if kernel == "torch":
            return "torch"
        interpret = os.environ.get("TRITON_INTERPRET") == "1"
        usable = _triton_importable() and (self.device.type == "cuda" or interpret)
        if kernel == "triton":
            if not usable:
                raise ValueError(
                    "kernel='triton' needs the triton package and a CUDA device (or "
                    "TRITON_INTERPRET=1 to run the kernels on the CPU, slowly)"
                )
            tri = _triton_module()
            if not tri.supported(self.n_features, None, self._torch_dtype):
                raise ValueError(
                    f"kernel='triton' takes float32 data with d <= {tri.MAX_FEATURES}, got "
                    f"{self.dtype} and d = {self.n_features}; use kernel='torch' or 'auto'"
                )
            return "triton"
        # auto: the interpreter is for testing only, never chosen by itself
        if self.device.type == "cuda" and usable:
            tri = _triton_module()
            if tri.supported(self.n_features, None, self._torch_dtype):
                return "triton"
        return "torch"

    def _kernel_for(self, n_components: int) -> str:
        """The kernel for K components: "auto" falls back to torch beyond the kernels' limits."""
        if self.kernel != "triton":
            return "torch"
        tri = _triton_module()
        if tri.supported(self.n_features, n_components, self._torch_dtype):
            return "triton"
        if self._kernel_request == "triton":
            raise ValueError(
                f"kernel='triton' takes float32 data with d <= {tri.MAX_FEATURES} and "
                f"K <= {tri.MAX_COMPONENTS}, got {self.dtype}, d = {self.n_features}, "
                f"K = {n_components}; use kernel='torch' or 'auto'"
            )
        return "torch"

    # ------------------------------------------------------------------ chunks
    def _rows_per_chunk(self, n_components: int) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        if self.device.type == "cuda":
            if self._kernel_for(n_components) == "triton":
                # the (K, rows) responsibilities are the one large temporary
                return max(1024, _GPU_CHUNK_ELEMENTS // max(n_components, 1))
            budget = _GPU_CHUNK_ELEMENTS
        else:
            budget = _CPU_CHUNK_ELEMENTS
        return max(64, budget // max(n_components * self.n_features, 1))

    def _chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(X_chunk, w_chunk)`` on the device, covering all rows in order."""
        if self.streamed:
            yield from self._streamed_chunks(size)
            return
        for start in range(0, self.n_samples, size):
            stop = start + size
            yield self._X[start:stop], None if self._w is None else self._w[start:stop]

    def _streamed_chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Host rows through the GPU: pinned staging buffers, copies on a side stream.

        Chunk i+1 is staged (host memcpy into pinned memory) and its host-to-device copy is
        queued on the copy stream before chunk i's kernels are issued, so the PCIe transfer
        overlaps compute. Events order the reuse of each buffer: the host waits for a pinned
        buffer's previous copy to finish, the copy stream waits for the compute that last
        read a device buffer.
        """
        dev, work, d, n = self.device, self._torch_dtype, self.n_features, self.n_samples
        size = min(size, n)
        nb = _STREAM_BUFFERS
        host_x = [torch.empty((size, d), dtype=work, pin_memory=True) for _ in range(nb)]
        dev_x = [torch.empty((size, d), dtype=work, device=dev) for _ in range(nb)]
        has_w = self._w is not None
        host_w = [torch.empty(size, dtype=torch.float64, pin_memory=True) for _ in range(nb)]
        dev_w = [torch.empty(size, dtype=torch.float64, device=dev) for _ in range(nb)]
        copied: list[Any] = [None] * nb
        consumed: list[Any] = [None] * nb
        compute = torch.cuda.current_stream(dev)
        copier = torch.cuda.Stream(device=dev)
        starts = list(range(0, n, size))

        def stage(i: int) -> tuple[int, int]:
            b, start = i % nb, starts[i]
            m = min(size, n - start)
            if copied[b] is not None:
                copied[b].synchronize()  # the pinned buffer's last copy has left it
            host_x[b][:m].copy_(self._X[start : start + m])
            if has_w:
                host_w[b][:m].copy_(self._w[start : start + m])
            with torch.cuda.stream(copier):
                if consumed[b] is not None:
                    copier.wait_event(consumed[b])  # the device buffer's last reader is done
                dev_x[b][:m].copy_(host_x[b][:m], non_blocking=True)
                # the allocator must not hand these blocks out while the copier still writes
                # (matters only if the loop is abandoned with a prefetch in flight)
                dev_x[b].record_stream(copier)
                if has_w:
                    dev_w[b][:m].copy_(host_w[b][:m], non_blocking=True)
                    dev_w[b].record_stream(copier)
                event = torch.cuda.Event()
                event.record(copier)
                copied[b] = event
            return b, m

        pending = stage(0)
        for i in range(len(starts)):
            b, m = pending
            if i + 1 < len(starts):
                pending = stage(i + 1)
            compute.wait_event(copied[b])
            yield dev_x[b][:m], dev_w[b][:m] if has_w else None
            event = torch.cuda.Event()
            event.record(compute)
            consumed[b] = event

    # ------------------------------------------------------------------ protocol
    def e_step(self, params: MixtureParams, *, shift: NDArray | None = None) -> SuffStats:
        """Summed statistics of all rows under ``params``, around ``shift``.

        Parameters
        ----------
        params : MixtureParams
            Current parameters (host, float64).
        shift : ndarray of shape (n_components, n_features), optional
            Origin of the second moments (default ``params.means``).

        Returns
        -------
        stats : SuffStats
            float64 numpy arrays on the host.
        """
        shift_np = params.means if shift is None else np.asarray(shift, dtype=np.float64)
        shift_is_means = shift is None or np.array_equal(shift_np, params.means)
        K, d = params.n_components, params.n_features
        if d != self.n_features:
            raise ValueError(f"params have {d} features, the data {self.n_features}")
        moment = params.model.moment
        f64 = dict(dtype=torch.float64, device=self.device)
        nk = torch.zeros(K, **f64)
        sx = torch.zeros(K, d, **f64)
        sxx = torch.zeros((K, d, d) if moment == "full" else (K, d), **f64)
        ll = torch.zeros((), **f64)
        size = self._rows_per_chunk(K)
        if self._kernel_for(K) == "triton":
            tri = _triton_module()
            tp = tri.TritonParams.of(params, shift_np, self.device)
            for Xc, wc in self._chunks(size):
                c_nk, c_sx, c_sxx, c_ll = tri.e_step_chunk(Xc, wc, tp, precision=self.precision)
                nk += c_nk
                sx += c_sx
                sxx += c_sxx
                ll += c_ll
        else:
            dp = _DeviceParams.of(params, self.device, self._torch_dtype)
            shift_t = dp.means if shift_is_means else _put(shift_np, self.device, self._torch_dtype)
            for Xc, wc in self._chunks(size):
                c_nk, c_sx, c_sxx, c_ll = _torch_chunk_stats(Xc, wc, dp, shift_t, shift_is_means)
                nk += c_nk
                sx += c_sx
                sxx += c_sxx
                ll += c_ll
        # one device-to-host copy per iteration
        packed = torch.cat([nk, sx.reshape(-1), sxx.reshape(-1), ll.reshape(1)]).cpu().numpy()
        i1, i2 = K, K + K * d
        return SuffStats(
            shift_np,
            packed[:i1].copy(),
            packed[i1:i2].reshape(K, d).copy(),
            packed[i2:-1].reshape(sxx.shape).copy(),
            float(packed[-1]),
            self.weight_sum,
            self.n_samples,
        )

    def init_data(
        self, max_rows: int | None, rng: np.random.RandomState
    ) -> tuple[NDArray, NDArray | None]:
        """Rows on the host for initialisation (k-means, k-means++ run in numpy there).

        With ``device="cpu"`` the rows are returned whole (without a copy when they already
        have the working dtype), as the in-memory engines do, so fits equal theirs. For a GPU
        run at most ``max_rows`` rows (default 2**20) come back: all of them when there are
        no more, else a uniform sample without replacement, in row order.

        Parameters
        ----------
        max_rows : int or None
            Most rows wanted (None: all on the CPU, 2**20 for a GPU run).
        rng : numpy.random.RandomState
            Draws the sample when one is needed.

        Returns
        -------
        X : ndarray of shape (n_rows, n_features)
            In the working dtype.
        sample_weight : ndarray of shape (n_rows,) or None
        """
        # on the CPU all rows, as the in-memory engines (so fits equal theirs); for a GPU run
        # a bounded sample keeps the host-side k-means short at 1e7-1e8 rows
        on_cpu = self.device.type == "cpu"
        limit = max_rows if max_rows is not None else (None if on_cpu else _DEVICE_INIT_ROWS)
        n = self.n_samples
        if limit is None or limit >= n:
            rows = None
        else:
            rows = np.sort(rng.choice(n, size=int(limit), replace=False))
        X = self._X if rows is None else self._X[torch.from_numpy(rows).to(self._X.device)]
        X = X.to("cpu", self._torch_dtype).numpy()
        w = self._weights_np
        if w is not None and rows is not None:
            w = w[rows]
        return X, w


    def device_initial_params(
        self,
        method: str,
        n_components: int,
        model: Any,
        reg_covar: float,
        rng: np.random.RandomState,
        max_rows: int | None = None,
    ) -> MixtureParams:
        """Starting parameters by k-means or k-means++ on the device (no copy to the host).

        The same row sample as :meth:`init_data` (at most ``max_rows``, default 2**20 on a
        GPU, uniform without replacement) is clustered where the rows are, by
        :func:`gaussmix.backends._torch_init.initial_params`; only the K × d statistics come
        back. Streamed (host-resident) data moves just the sample to the device.

        Parameters
        ----------
        method : {"kmeans", "k-means++"}
        n_components : int
        model : CovarianceModel
        reg_covar : float
        rng : numpy.random.RandomState
            Draws the sample and seeds the device generator.
        max_rows : int, optional

        Returns
        -------
        params : MixtureParams
        """
        from gaussmix.backends import _torch_init

        limit = _DEVICE_INIT_ROWS if max_rows is None else int(max_rows)
        n = self.n_samples
        X = self._X
        w = None if self._weights_np is None else torch.from_numpy(self._weights_np)
        if limit < n:
            rows = torch.from_numpy(np.sort(rng.choice(n, size=limit, replace=False)))
            X = X[rows.to(X.device)]
            w = None if w is None else w[rows]
        X = X.to(self.device, self._torch_dtype)
        w = None if w is None else w.to(self.device)
        return _torch_init.initial_params(method, X, w, n_components, model, reg_covar, rng)


def _nbytes(shape, dtype: torch.dtype) -> int:
    return int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()


def _put(a: NDArray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=_NUMPY_OF[dtype])).to(device)


def _to_device(source: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``source`` as a contiguous tensor on ``device`` in ``dtype`` (no copy when it already is)."""
    if not _is_tensor(source):
        source = torch.from_numpy(np.ascontiguousarray(source))
    return source.to(device=device, dtype=dtype).contiguous()


# ---------------------------------------------------------------------------------- prediction
def _log_joint_rows(X: torch.Tensor, dp: _DeviceParams) -> Iterator[torch.Tensor]:
    """``log p(x, z=k)`` of shape (rows, K), chunk by chunk."""
    K = dp.means.shape[0]
    budget = _GPU_CHUNK_ELEMENTS if X.device.type == "cuda" else _CPU_CHUNK_ELEMENTS
    size = max(64, budget // max(K * X.shape[1], 1))
    for start in range(0, X.shape[0], size):
        Xc = X[start : start + size]
        yield _log_joint_t(_centred(Xc, dp.means), dp).T


def _row_op(X: torch.Tensor, dp: _DeviceParams, op: str) -> torch.Tensor:
    parts = []
    for lj in _log_joint_rows(X, dp):
        if op == "log_joint":
            parts.append(lj)
        elif op == "score_samples":
            parts.append(torch.logsumexp(lj, dim=1).to(torch.float64))
        elif op == "predict_proba":
            parts.append(torch.exp(lj - torch.logsumexp(lj, dim=1, keepdim=True)))
        else:
            parts.append(torch.argmax(lj, dim=1))
    return torch.cat(parts)


_OPS = ("log_joint", "score_samples", "predict_proba", "predict")


def predict_op(estimator: Any, X: Any, op: str) -> Any:
    """Row-wise ``op`` of a fitted estimator, computed with torch.

    Parameters
    ----------
    estimator : GaussianMixture
        Fitted; its parameters (numpy) are copied to the device.
    X : ndarray or torch.Tensor of shape (n_samples, n_features)
        A tensor is evaluated on the estimator's ``device`` if set, else on its own device;
        an array on the estimator's ``device``.
    op : {"log_joint", "score_samples", "predict_proba", "predict"}

    Returns
    -------
    out : torch.Tensor or ndarray
        A tensor on ``X``'s device for tensor input, a numpy array otherwise:
        (n_samples, n_components) for "log_joint" and "predict_proba" (working dtype),
        (n_samples,) float64 for "score_samples", (n_samples,) integers for "predict".
    """
    if op not in _OPS:
        raise ValueError(f"op must be one of {_OPS}, got {op!r}")
    params = estimator._fitted_params()
    if _is_tensor(X):
        source = _as_source(X)
        if source.shape[1] != estimator.n_features_in_:
            raise ValueError(
                f"X has {source.shape[1]} features, but {type(estimator).__name__} is "
                f"expecting {estimator.n_features_in_} features as input."
            )
        _check_finite(source)
        home = source.device
        device = _resolve_device(estimator.device, source)
        work = _working_dtype(source.dtype, None)
        Xt = source.to(device=device, dtype=work)
        out = _row_op(Xt, _DeviceParams.of(params, device, work), op)
        return out.to(home)
    X = estimator._validate_predict_data(X)
    device = _resolve_device(estimator.device, X)
    work = _working_dtype(X.dtype, None)
    out = _row_op(_to_device(X, device, work), _DeviceParams.of(params, device, work), op)
    out = out.cpu().numpy()
    return out.astype(np.intp, copy=False) if op == "predict" else out
