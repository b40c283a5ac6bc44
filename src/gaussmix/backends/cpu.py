"""The fast CPU executor: fused, compiled E-step kernels on threads, BLAS for large d.

Two paths compute the same statistics as the reference kernel
(:func:`gaussmix._stats.e_step_chunk`):

- **fused** (every "diag"/"spherical" fit, and "full"/"tied" up to ``d = 24``): one numba
  kernel reads each row once and does Mahalanobis terms, log-sum-exp, responsibilities and the
  per-component first and second moments on a transposed tile of rows held in L1/L2 (loops
  over rows innermost, so they vectorise), with a polynomial ``exp`` and ``log`` (a libm call
  per row and component would dominate at small d, and keeps the loop scalar). Tied
  covariances project each tile once (``x P``) instead of once per component.
- **blas** ("full"/"tied" above that): per chunk, the log-joints of all components are a
  product of the rows' quadratic features (``x'_i x'_j`` for ``i <= j``, ``x'``, 1, with
  ``x'`` centred on the weighted mean of the means) and weights from the precision matrices:
  ``d²/2`` multiply-adds per row and component, the useful minimum, and a (rows, K) output.
  Where numba's target has AVX-512 the features are formed in registers, in float64 for
  float64 and float32 rows alike (:mod:`gaussmix.backends._quad_kernel`); elsewhere float64
  rows write them out for one GEMM, and float32 rows (where that expanded form would cancel
  in float32) are projected, ``X_chunk @ [P_1 ... P_K]`` (two GEMMs, 3/4 of the work, for
  upper triangular factors), as are rows with a tied factor (one d × d factor). A small
  kernel turns the log-joints into responsibilities, and each component's scatter is the
  GEMM ``Zᵀ Z`` of its ``sqrt(r)``-scaled centred rows.

Responsibilities that are exact zeros (log-ratio to the row's best component below -600 in
float64, -70 in float32, where ``exp`` would return a slow denormal or 0 anyway) are skipped in
the statistics: whole tiles in the fused kernel, rows packed per component in the BLAS path.
With well-separated components this removes most of the scatter work without changing it.

Rows are cut into a fixed number of contiguous *groups* that depends only on the data shape;
threads claim groups as they come free, each group's statistics go to its own slot, and the
slots are added in group order. The result therefore does not depend on how many threads ran or
how they were scheduled. Threads are plain Python threads running kernels that release the GIL
(BLAS is held to one thread meanwhile), not numba's parallel loops: one thread pool, never two
competing for the cores, and about half the compile time of a ``parallel=True`` kernel.

float32 data is processed in float32 (twice the SIMD width, half the memory traffic): per-tile
sums (at most 256 terms) in float32, every total in float64, around the float32-rounded shift;
the exact change of origin to the requested float64 shift is applied afterwards.

Inputs of fewer than :data:`MIN_ROWS` rows run the reference numpy kernel: compiling on a cold
cache (a few seconds, once per machine: the kernels are cached on disk) would cost more than it
saves.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gaussmix._gaussian import LOG_2PI
from gaussmix._missing import split_missing
from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats, e_step_chunk
from gaussmix._validation import check_factors_fit, check_sample_weight

__all__ = ["MIN_ROWS", "CpuExecutor", "default_threads", "extremes", "row_op"]

# above this many features a full/tied E-step is matrix-shaped: GEMM beats the fused loops
BLAS_MIN_FEATURES = 24
# fewer rows than this run the reference numpy code: compiling the kernels on a cold cache
# (a few seconds, once per machine) would cost more than it saves
MIN_ROWS = 4096
# per-group statistics kept at once (float64 elements): bounds memory when K·d² is large
_SLOT_ELEMENTS = 1 << 21
# groups per data set: enough for load balance across threads, few enough to add cheaply
_MAX_GROUPS = 64
# elements of a chunk temporary in the BLAS path (rows × K·d): 16 MiB in float64; larger
# chunks make the per-component scatter GEMMs (d × rows × d) more efficient
_BLAS_CHUNK_ELEMENTS = 1 << 21
# elements of a quadratic-feature block (rows × (d(d+1)/2 + d + 1)): 768 KiB, so that the
# block and the GEMM's weights (W3: 2145 × 32, 536 KiB) stay in a 2 MiB L2 together (with the
# groups in fours: W3 E-step 129-143 ms against 135-155 with 2 MiB blocks and 15 groups, four
# alternating rounds on two Emerald Rapids cores)
_QUAD_FEATURE_ELEMENTS = 3 << 15


def _tile(n_components: int, n_features: int) -> int:
    """Rows per tile of the fused kernels: about L1/L2-sized scratch (256 measured best from
    64-512 for d = 2-16, K = 5-100; 512 overflowed the 32 KiB L1 at d = 16)."""
    return int(max(64, min(256, 32768 // max(n_components, n_features))))


def _kernels():
    """The numba kernels, imported on first use: small inputs never load numba."""
    from gaussmix.backends import _cpu_kernels

    return _cpu_kernels


_pool_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def default_threads() -> int:
    """Threads the engine uses: ``NUMBA_NUM_THREADS`` if set, else the usable CPUs."""
    env = os.environ.get("NUMBA_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _pool(n_threads: int) -> ThreadPoolExecutor:
    with _pool_lock:
        pool = _pools.get(n_threads)
        if pool is None:
            pool = ThreadPoolExecutor(n_threads, thread_name_prefix="gaussmix-cpu")
            _pools[n_threads] = pool
        return pool


def _forget_pools() -> None:
    """Drop the parent's pools in a forked child: its worker threads do not exist there, and
    a task submitted to them waited forever (a fit in a ``multiprocessing`` child, the
    default start method on Linux, after a fit in the parent)."""
    global _pool_lock
    _pool_lock = threading.Lock()
    _pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pools)


def _run_groups(run, n_groups: int, n_threads: int) -> None:
    """``run(lo, hi)`` over consecutive batches of the groups ``[0, n_groups)``, claimed by the
    threads as they come free.

    A thread that the OS deschedules (a shared machine) then holds up only its current batch,
    not a fixed share of the groups. Every group still has its own statistics slot, so the
    result does not depend on who ran what.
    """
    if n_threads <= 1:
        run(0, n_groups)
        return
    batch = max(1, n_groups // (4 * n_threads))
    claims = itertools.count(0, batch)  # next() is one C call under the GIL: atomic

    def task(_first, _step):
        for lo in claims:
            if lo >= n_groups:
                return
            run(lo, min(n_groups, lo + batch))

    _run_threads(task, n_threads)


def _run_threads(task, n_threads: int) -> None:
    """``task(first, step)`` for first in range(n_threads), on the pool; errors re-raised."""
    if n_threads == 1:
        task(0, 1)
        return
    # the calling thread runs the first share itself: one thread fewer to wake (a wake-up is
    # tens of microseconds, a noticeable share of a 1 ms iteration at W1)
    pool = _pool(n_threads - 1)
    futures = [pool.submit(task, t, n_threads) for t in range(1, n_threads)]
    try:
        task(0, n_threads)
    finally:
        # the workers finish before anything is raised: they write into the caller's arrays
        wait(futures)
    for f in futures:
        f.result()


_blas_controller = None


def _single_threaded_blas():
    """Context that holds BLAS to one thread (each of our threads runs its own GEMMs)."""
    global _blas_controller
    try:
        if _blas_controller is None:
            from threadpoolctl import ThreadpoolController

            _blas_controller = ThreadpoolController().select(user_api="blas")
        return _blas_controller.limit(limits=1)
    except ImportError:  # threadpoolctl missing: BLAS threads oversubscribe, results unchanged
        return nullcontext()


@dataclass(frozen=True)
class _Prepared:
    """Parameters laid out for the kernels, in the working dtype."""

    means: NDArray  # (K, d)
    prec: NDArray  # (K, d, d) full moment, (K, 1, d) diag moment
    scale: NDArray  # (K, d) column scales of a shared projection (tri >= 4), else (0, d)
    tri: int  # 0 dense, 1 upper, 2 lower triangular factors; + 4 when shared
    full: bool  # full moment
    const: NDArray  # (K,) log φ + log det P - d/2 log 2π, finite
    shift: NDArray  # (K, d) shift rounded to the working dtype
    shift_error: NDArray  # (K, d) float64: rounded shift minus requested shift

    @property
    def factors(self) -> tuple:
        """The kernels' ``means, prec, scale, tri, full, const`` arguments, in that order."""
        return self.means, self.prec, self.scale, self.tri, self.full, self.const


@functools.lru_cache(maxsize=64)
def _strict_upper(d: int) -> tuple[NDArray, NDArray]:
    """Row and column indices of the strict upper triangle of a d × d matrix (cached: index
    arithmetic instead of ``np.tril``/``np.triu`` masks, a per-iteration cost at small N)."""
    return np.triu_indices(d, 1)


# off-triangle entries at most this fraction of a factor's largest entry are rounding noise:
# below 8 features the M-step's triangular inverse comes from a batched general solve (LU),
# whose pivoting leaves entries of 1e-16 where the exact factor has zeros (factors of other
# models' M-steps and from the user may carry such noise too); read as dense, the kernels did
# up to 60 % more work (d = 16) and skipped the triangular loops
_TRIANGLE_NOISE = 1e-14


def _triangle(P: NDArray) -> int:
    """0 dense, 1 upper, 2 lower triangular (up to rounding noise, see ``_TRIANGLE_NOISE``)."""
    i, j = _strict_upper(P.shape[-1])
    tol = _TRIANGLE_NOISE * np.abs(P).max(axis=(1, 2))[:, None]
    if np.all(np.abs(P[:, j, i]) <= tol):
        return 1
    if np.all(np.abs(P[:, i, j]) <= tol):
        return 2
    return 0


def prepare(
    params: MixtureParams, shift: NDArray, dtype: np.dtype, factors: NDArray | None = None
) -> _Prepared:
    """Kernel inputs for ``params``: every covariance model maps onto two layouts, asked of
    the model (``moment`` and ``component_factors``, which ``factors`` may pass in), never of
    its name."""
    K, d = params.means.shape
    model = params.model
    full = model.moment == "full"
    rotated = model.rotated_factors(params.covariances, K, d) if full else None
    scale = np.empty((0, d))
    if factors is None and rotated is None:
        factors = model.component_factors(params.precisions_cholesky, K, d)
    if rotated is not None:
        # a common orientation: one projection of each tile on D, scaled per component
        P3, scale = rotated[0][None], rotated[1]
        tri = 4
    elif full:
        tri = _triangle(factors)
        # the noise below (above) the diagonal is dropped: the kernels skip that triangle
        P3 = np.triu(factors) if tri == 1 else np.tril(factors) if tri == 2 else factors
        # one factor for all: the kernels project each tile once with P3[0] (a start given
        # as full matrices may hand a shared-factor model distinct ones for its first E-step)
        if model.shared_factor and np.array_equal(P3, np.broadcast_to(P3[0], P3.shape)):
            tri += 4
            scale = np.ones((K, d))
    else:
        P3 = factors.reshape(K, 1, d)
        tri = 0
    with np.errstate(divide="ignore"):
        const = np.log(params.weights) + params.log_det_precision_cholesky - 0.5 * d * LOG_2PI
    # a zero weight is a very negative finite number: the kernels use fast-math
    floor = -1e30 if dtype == np.float32 else -1e300
    const = np.maximum(const, floor)
    shift = np.asarray(shift, dtype=np.float64)
    shift_w = np.array(shift, dtype=dtype, order="C")
    # fresh writable copies: numba compiles read-only arrays (broadcasts) as another type
    return _Prepared(
        means=np.array(params.means, dtype=dtype, order="C"),
        prec=np.array(P3, dtype=dtype, order="C"),
        scale=np.array(scale, dtype=dtype, order="C"),
        tri=tri,
        full=full,
        const=np.array(const, dtype=dtype),
        shift=shift_w,
        shift_error=shift_w.astype(np.float64) - shift,
    )


def _quadratic_weights(params: MixtureParams, P: NDArray, const: NDArray):
    """``(c, W)``: ``features(x) @ W`` is every component's log-joint (float64).

    ``features`` are those of :func:`_cpu_kernels.quadratic_features` around ``c``, the
    weighted mean of the means (so that the expanded form ``x'Λx' - 2 x'Λm + m'Λm`` of each
    Mahalanobis term, with ``x' = x - c`` and ``m = μ_k - c``, does not cancel far from the
    origin). Off-diagonal products appear once, so their weight is ``-Λ_ij``, the diagonal's
    ``-Λ_ii / 2``.
    """
    d = params.means.shape[1]
    centre = np.ascontiguousarray(params.weights @ params.means)
    lam = np.matmul(P, np.swapaxes(P, 1, 2))  # precision matrices P_k P_kᵀ
    mk = params.means - centre
    iu, ju = np.triu_indices(d)
    quad = -lam[:, iu, ju]
    quad[:, iu == ju] *= 0.5
    lin = np.einsum("kij,kj->ki", lam, mk)
    const_k = const - 0.5 * np.einsum("ki,ki->k", mk, lin)
    W = np.concatenate([quad, lin, const_k[:, None]], axis=1).T
    return centre, np.ascontiguousarray(W)


def _recentre(nk, sx, sxx, e, full):
    """Statistics around ``s`` from those around ``s + e`` (exact algebra, float64)."""
    if not np.any(e):
        return sx, sxx
    sx_new = sx + nk[:, None] * e
    if full:
        outer = sx[:, :, None] * e[:, None, :]
        sxx = (
            sxx
            + outer
            + np.swapaxes(outer, 1, 2)
            + nk[:, None, None] * (e[:, :, None] * e[:, None, :])
        )
    else:
        sxx = sxx + 2.0 * e * sx + nk[:, None] * e * e
    return sx_new, sxx


def kmeans_kernels():
    """The compiled k-means steps (:mod:`gaussmix.backends._kmeans_fast`), or None without numba.

    The estimator hands them to :func:`gaussmix._init.initial_params`, so that the
    initialisation code, which sits below the estimator, never imports an engine itself.
    """
    try:
        from gaussmix.backends import _kmeans_fast
    except ImportError:
        return None
    return _kmeans_fast


class CpuExecutor:
    """E-step over an in-memory array with compiled, multithreaded kernels.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Data, float32 or float64 (anything else is converted to float64); the E-step runs in
        this dtype and sums in float64. A non-contiguous array is copied once.
    sample_weight : ndarray of shape (n_samples,) or None
        Non-negative finite row weights.
    chunk_size : int, optional
        Rows per group of the row partition (default: about ``n_samples / 64``, so that
        threads balance). Results do not depend on the number of threads, but may differ in
        the last bits for another ``chunk_size``.
    device : None or "cpu"
        Accepted for a uniform factory signature.
    n_threads : int, optional
        Worker threads (default :func:`default_threads`).

    Attributes
    ----------
    n_samples, n_features : int
        Shape of ``X``.
    dtype : numpy.dtype
        Working precision.

    Notes
    -----
    Extra memory: per-group statistics (at most about 16 MiB) plus, per thread, one tile of
    rows (fused path) or one chunk of ``(rows, K·d)`` projections and ``(K, rows, d)`` scaled
    rows of about 16 MiB each in float64 (BLAS path). Nothing of size N × K is allocated.
    """

    def __init__(
        self,
        X: NDArray,
        sample_weight: NDArray | None = None,
        *,
        chunk_size: int | None = None,
        device: str | None = None,
        n_threads: int | None = None,
    ) -> None:
        if device not in (None, "cpu"):
            raise ValueError(f"the cpu engine runs on the CPU only, got device={device!r}")
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array, got shape {X.shape}")
        if X.dtype.kind not in "biuf":
            raise TypeError(f"X must be numeric, got dtype {X.dtype}")
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        X = np.ascontiguousarray(X)
        if X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"X must have at least one row and one column, got {X.shape}")
        if np.isinf(X).any():
            raise ValueError("X contains infinity")
        # a fresh, writable float64 copy: numba would compile read-only arrays once more
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        # rows with NaN (missing values) are split out once, for the exact E-step of
        # gaussmix._missing; the kernels below see the complete rows only
        self._init_rows = (X, sample_weight)
        X, sample_weight, self._missing = split_missing(X, sample_weight)
        if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if n_threads is not None and (int(n_threads) != n_threads or n_threads < 1):
            raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
        self.X = X
        self.sample_weight = sample_weight
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.n_threads = int(n_threads) if n_threads is not None else default_threads()
        self.n_samples, self.n_features = X.shape
        self.dtype = X.dtype

    # ------------------------------------------------------------------ partition
    def _groups(self, n_components: int, full: bool) -> tuple[int, int]:
        """``(group_rows, n_groups)``: a partition fixed by the data shape, not by threads."""
        n, d = self.n_samples, self.n_features
        slot = n_components * (d * d if full else d) + n_components * (d + 1) + 1
        max_groups = max(1, min(_MAX_GROUPS, _SLOT_ELEMENTS // slot))
        if max_groups > 4:
            # a multiple of four: 1, 2 or 4 threads get equal shares (W3's 15 groups left one of
            # two threads to run the last alone)
            max_groups -= max_groups % 4
        if self.chunk_size is not None:
            # at least n / max_groups: chunk_size=1 made N per-group slots (N·K·d² floats)
            rows = max(self.chunk_size, -(-n // max_groups))
        else:
            rows = max(1024, -(-n // max_groups))
        rows = min(rows, n)
        return rows, -(-n // rows)

    def uses_blas(self, params: MixtureParams) -> bool:
        """Whether ``params`` take the BLAS path (full/tied with many features)."""
        return params.model.moment == "full" and self.n_features > BLAS_MIN_FEATURES

    # ------------------------------------------------------------------ E-step
    def e_step(self, params: MixtureParams, *, shift: NDArray | None = None) -> SuffStats:
        """Summed statistics of all rows under ``params``, around ``shift``.

        Parameters
        ----------
        params : MixtureParams
            Current parameters (``n_features`` must match ``X``).
        shift : ndarray of shape (n_components, n_features), optional
            Origin of the moments (default ``params.means``).

        Returns
        -------
        stats : SuffStats
        """
        if params.n_features != self.n_features:
            raise ValueError(
                f"params have {params.n_features} features, the data {self.n_features}"
            )
        shift = params.means if shift is None else np.asarray(shift, dtype=np.float64)
        K, d = params.means.shape
        # a collapse in float32 is named, not NaN from fast-math or a non-finite log-likelihood
        factors = params.model.component_factors(params.precisions_cholesky, K, d)
        check_factors_fit(factors, self.dtype)
        if self.n_samples < MIN_ROWS:
            stats = e_step_chunk(self.X, self.sample_weight, params, shift)
            return self._add_missing(stats, params)
        _k = _kernels()
        prep = prepare(params, shift, self.dtype, factors)
        rows, G = self._groups(K, prep.full)
        nk = np.empty((G, K))
        sx = np.empty((G, K, d))
        sxx = np.empty((G, K, d if prep.full else 1, d))
        ll = np.empty(G)
        weighted = self.sample_weight is not None
        w = self.sample_weight if weighted else np.empty(0)
        cut = _k.EXP_CUT[self.dtype]
        n_threads = min(self.n_threads, G)
        if self.uses_blas(params):
            task = self._blas_task(params, prep, rows, G, w, weighted, cut, nk, sx, sxx, ll)
            with _single_threaded_blas():
                _run_threads(task, n_threads)
        else:
            tile = _tile(K, d)

            def run(lo, hi):
                _k.estep_groups(
                    self.X,
                    w,
                    weighted,
                    *prep.factors,
                    prep.shift,
                    cut,
                    tile,
                    rows,
                    lo,
                    hi,
                    1,
                    nk,
                    sx,
                    sxx,
                    ll,
                )

            _run_groups(run, G, n_threads)
        # slots added in group order: the same sum whatever the threads did
        nk_t = nk.sum(axis=0)
        sx_t = sx.sum(axis=0)
        sxx_t = sxx.sum(axis=0)
        if prep.full:
            if not self.uses_blas(params):
                # the kernels fill the lower triangle (and some entries above it)
                iu, ju = _strict_upper(d)
                sxx_t[:, iu, ju] = sxx_t[:, ju, iu]
        else:
            sxx_t = sxx_t[:, 0, :]
        sx_t, sxx_t = _recentre(nk_t, sx_t, sxx_t, prep.shift_error, prep.full)
        wsum = float(self.n_samples) if not weighted else float(self.sample_weight.sum())
        stats = SuffStats(shift, nk_t, sx_t, sxx_t, float(ll.sum()), wsum, self.n_samples)
        return self._add_missing(stats, params)

    def _add_missing(self, stats: SuffStats, params: MixtureParams) -> SuffStats:
        """Plus the statistics of the rows with NaN, around the same shift."""
        if self._missing is None:
            return stats
        if self._missing.n_samples < MIN_ROWS:
            return stats + self._missing.e_step(params, stats.shift)
        from gaussmix.backends import _missing_kernels

        # compiled, on this engine's threads
        return stats + _missing_kernels.e_step(
            self._missing, params, stats.shift, _run_threads, self.n_threads
        )

    def _blas_task(self, params, prep, rows, G, w, weighted, cut, nk, sx, sxx, ll):
        _k = _kernels()
        X = self.X
        K, d = params.means.shape
        layout = _blas_layout(params, prep, self.dtype, rows)
        m = layout.chunk
        # groups are claimed one at a time by whichever thread is free (see _run_groups)
        claims = itertools.count()

        def task(_first, _step):
            scratch = layout.scratch()
            R = np.empty((m, K), dtype=self.dtype)
            lognorm = np.empty(m)
            Z = np.empty(K * m * d, dtype=self.dtype)
            counts = np.empty(K, dtype=np.int64)
            for g in claims:
                if g >= G:
                    return
                nk[g] = 0.0
                sx[g] = 0.0
                sxx[g] = 0.0
                ll[g] = 0.0
                stop_g = min(self.n_samples, (g + 1) * rows)
                for s in range(g * rows, stop_g, m):
                    e = min(stop_g, s + m)
                    c = e - s
                    Xc = X[s:e]
                    layout.log_joint(Xc, R[:c], scratch)
                    _k.resp_from_log_joint(R[:c], w, weighted, s, cut, R[:c], lognorm[:c])
                    ll[g] += float(lognorm[:c].sum())
                    # a C-contiguous (K, c, d) view for partial chunks too: one compiled kernel
                    Zc = Z[: K * c * d].reshape(K, c, d)
                    _k.scaled_centred(Xc, R[:c], prep.shift, Zc, nk[g], sx[g], counts)
                    if np.all(counts == c):
                        sxx[g] += np.matmul(Zc.transpose(0, 2, 1), Zc)
                    else:
                        for k in np.flatnonzero(counts):
                            Zk = Zc[k, : counts[k]]
                            sxx[g, k] += Zk.T @ Zk

        return task

    def init_data(self, max_rows, rng):
        """All rows: they are already in memory.

        Parameters
        ----------
        max_rows : int or None
            Ignored (everything fits).
        rng : numpy.random.RandomState
            Unused.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            As given, with the rows that hold NaN.
        sample_weight : ndarray of shape (n_samples,) or None
        """
        return self._init_rows


@dataclass(frozen=True)
class _BlasLayout:
    """Every component's log-joint of a chunk of rows by GEMM (full factors, many features).

    The log-joint is the product of the rows' quadratic features and weights built from the
    precision matrices (half the multiply-adds of ``X @ [P_1 ... P_K]``): formed in registers
    in float64 where the target has AVX-512 (any rows' dtype), else written out for one GEMM
    (float64 rows). Without AVX-512 float32 rows keep the projections (the expanded quadratic
    form cancels too much in single precision), and a tied factor projects each row once.
    """

    K: int
    d: int
    dtype: np.dtype
    const: NDArray  # (K,) in the working dtype
    quad: bool
    per_component: bool
    PL: NDArray  # (h, K·h): the first h columns of every upper triangular factor
    PR: NDArray  # (d, K·(d - h)), or (d, d) tied
    biasL: NDArray  # (K, h): μ_k P_k, first h columns
    biasR: NDArray  # (K, d - h), or (K, d) shared
    scale: NDArray  # (K, d) column scales of a shared projection
    centre: NDArray  # (d,) origin of the quadratic features
    # weights of the quadratic features: (d(d+1)/2 + d + 1, K), or tiled for the kernel that
    # forms them in registers (_quad_kernel.tile_weights)
    Wq: NDArray
    chunk: int  # rows per chunk
    quad_rows: int  # rows per block of quadratic features (about L2-sized); 0: in registers

    @property
    def in_registers(self) -> bool:
        """Whether the quadratic features are formed in registers (:mod:`._quad_kernel`)."""
        return self.quad and self.quad_rows == 0

    def scratch(self) -> tuple[NDArray, ...]:
        """One thread's work arrays."""
        m, dt = self.chunk, self.dtype
        if self.in_registers:
            from gaussmix.backends import _quad_kernel

            n = -(-m // _quad_kernel.ROWS) * _quad_kernel.ROWS
            return np.empty((self.d + 1, n)), np.empty((self.Wq.shape[0] * self.Wq.shape[2], n))
        if self.quad:
            return np.empty((self.quad_rows, self.Wq.shape[0])), np.empty(self.d)
        YL = np.empty((m, self.PL.shape[1] if self.per_component else 0), dtype=dt)
        return YL, np.empty((m, self.PR.shape[1]), dtype=dt)

    def log_joint(self, Xc: NDArray, L: NDArray, scratch: tuple[NDArray, ...]) -> None:
        """``L[r, k] = log φ_k + log N(x_r; μ_k, Σ_k)`` for the rows ``Xc`` (at most
        ``chunk``); ``L`` is C-contiguous, of the working dtype."""
        _k = _kernels()
        c = Xc.shape[0]
        if self.in_registers:
            from gaussmix.backends import _quad_kernel

            xt, lt = scratch
            _quad_kernel.log_joint(Xc, self.centre, self.Wq, xt, lt, L)
            return
        if self.quad:
            F, xc = scratch
            mq = self.quad_rows
            for q in range(0, c, mq):
                cq = min(c, q + mq) - q
                _k.quadratic_features(Xc[q : q + cq], self.centre, F[:cq], xc)
                np.matmul(F[:cq], self.Wq, out=L[q : q + cq])
            return
        YL, YR = scratch
        np.matmul(Xc, self.PR, out=YR[:c])
        if not self.per_component:
            _k.log_joint_from_projection(YR[:c], self.biasR, self.scale, self.const, L)
            return
        if self.PL.shape[0]:
            np.matmul(Xc[:, : self.PL.shape[0]], self.PL, out=YL[:c])
        _k.log_joint_from_split_projection(
            YL[:c], YR[:c], self.biasL, self.biasR, self.const, L
        )


def _blas_layout(
    params: MixtureParams,
    prep: _Prepared,
    dtype: np.dtype,
    rows: int,
    *,
    registers: bool | None = None,
):
    """The :class:`_BlasLayout` of ``params`` for chunks of at most ``rows`` rows.

    ``registers``: form the quadratic features in registers where they apply (None: where
    the target has AVX-512, :func:`_quad_kernel.available`); False keeps the BLAS form
    (``benchmarks/bench_blas_parts.py`` times both).
    """
    from gaussmix.backends import _quad_kernel

    K, d = params.means.shape
    per_component = prep.tri < 4
    # the factors as prepare laid them out (their rounding noise off the triangle dropped);
    # shared: one projection for all components, scaled per component
    P = prep.prec.astype(np.float64) if per_component else prep.prec[0].astype(np.float64)
    # upper triangular factors (every M-step's): the first h columns of x P_k involve
    # only the first h features, so the projection is two GEMMs with 3/4 of the work
    h = d // 2 if per_component and prep.tri == 1 else 0
    if per_component:
        bias = np.einsum("kd,kde->ke", params.means, P)
        # [P_1 ... P_K] side by side: one GEMM gives every component's projection
        PL = np.array(P[:, :h, :h].transpose(1, 0, 2).reshape(h, K * h), dtype=dtype)
        PR = np.array(P[:, :, h:].transpose(1, 0, 2).reshape(d, K * (d - h)), dtype=dtype)
        biasL = np.array(bias[:, :h], dtype=dtype, order="C")
        biasR = np.array(bias[:, h:], dtype=dtype, order="C")
    else:
        PL = biasL = np.empty((0, 0), dtype=dtype)
        PR = np.array(P, dtype=dtype, order="C")
        biasR = np.array(params.means @ P, dtype=dtype, order="C")
    m = int(max(64, min(rows, _BLAS_CHUNK_ELEMENTS // (K * d))))
    # only while d(d+1)/2 features of a few rows stay small: d <= 360
    fits = per_component and d * (d + 1) // 2 + d + 1 <= 1 << 16
    # formed in registers the features are float64 whatever the rows' dtype (written out in
    # float32 for a GEMM, the expanded form would cancel): 1.7-5.9x the BLAS form's speed
    # (d 30-200), and for float32 rows (W3) a 10 % faster E-step than their projections with
    # statistics as close to float64's (scratch A/B)
    if registers is None:
        registers = _quad_kernel.available()
    in_registers = fits and registers
    quad = in_registers or (fits and dtype == np.float64)
    if quad:
        centre, Wq = _quadratic_weights(params, P, prep.const)
        if in_registers:
            Wq, mq = _quad_kernel.tile_weights(Wq, d), 0
        else:
            mq = int(max(8, min(m, _QUAD_FEATURE_ELEMENTS // Wq.shape[0])))
    else:
        centre, Wq, mq = np.empty(0), np.empty((0, K)), 0
    return _BlasLayout(
        K, d, np.dtype(dtype), prep.const, quad, per_component, PL, PR, biasL, biasR,
        prep.scale, centre, Wq, m, mq,
    )  # fmt: skip


_OPS = {"log_joint": 0, "score_samples": 1, "predict_proba": 2, "predict": 3, "log_resp_max": 4}


def row_op(
    params: MixtureParams,
    X: NDArray,
    op: str,
    n_threads: int | None = None,
    *,
    with_extremes: bool = False,
):
    """Compiled, multithreaded row-wise ``op`` of :mod:`gaussmix._mixture`, or None.

    Parameters
    ----------
    params : MixtureParams
    X : ndarray of shape (n_samples, n_features)
        Float32/float64 rows: finite, or (``with_extremes``) not yet checked.
    op : {"log_joint", "score_samples", "predict_proba", "predict", "log_resp_max"}
    n_threads : int, optional
    with_extremes : bool, default=False
        Also return ``(min, max)`` of ``X`` as :func:`extremes` does (NaN when some entry is
        NaN), found on the same pass over the rows. The result is then only meaningful if
        the caller's checks of ``min`` and ``max`` pass (the kernels use fast-math).

    Returns
    -------
    result : ndarray or float or None
        As the function of the same name in :mod:`gaussmix._mixture`; None where the numpy
        code is the better choice (fewer than ``MIN_ROWS`` rows, other dtypes). Full and
        tied factors with more than ``BLAS_MIN_FEATURES`` features take the E-step's GEMM
        path. With ``with_extremes``: ``(result, min, max)``, or None.
    """
    if (
        not isinstance(X, np.ndarray)
        or X.ndim != 2
        or X.dtype not in (np.float32, np.float64)
        or X.shape[0] < MIN_ROWS
        or X.shape[1] != params.n_features
    ):
        return None
    _k = _kernels()
    code = _OPS[op]
    X = np.ascontiguousarray(X)
    n = X.shape[0]
    K, d = params.means.shape
    prep = prepare(params, params.means, X.dtype)
    # the E-step's floor: 8192 left W5's 20 000 rows in groups of 8192, 8192 and 3616 (one
    # thread ran 59 % of the rows); no sums across groups, so any partition gives one result
    rows = max(1024, -(-n // _MAX_GROUPS))
    n_groups = -(-n // rows)
    tile = _tile(K, d)
    out2 = np.empty((n, K) if code in (0, 2) else (0, K), dtype=X.dtype)
    out1 = np.empty(n if code in (1, 4) else 0)
    labels = np.empty(n if code == 3 else 0, dtype=np.intp)
    cut = _k.EXP_CUT[X.dtype]
    n_threads = min(n_threads or default_threads(), n_groups)
    # per group: (min, max, NaN count) of its rows
    ext = np.empty((n_groups if with_extremes else 0, 3))
    if prep.full and d > BLAS_MIN_FEATURES:
        # matrix-shaped, as the E-step: the log-joint by GEMM, chunk by chunk
        layout = _blas_layout(params, prep, X.dtype, rows)
        m = layout.chunk
        claims = itertools.count()

        def task(_first, _step):
            # unchecked rows (with_extremes) may hold NaN or infinities: their result is
            # dropped, and numpy's warnings about them too (errstate is per thread)
            quiet = np.errstate(invalid="ignore", over="ignore") if with_extremes else nullcontext()
            with quiet:
                scratch = layout.scratch()
                L = np.empty((0 if code in (0, 2) else m, K), dtype=X.dtype)
                for g in claims:
                    if g >= n_groups:
                        return
                    stop_g = min(n, (g + 1) * rows)
                    if with_extremes:
                        # the group's rows while they are in cache, before the GEMMs
                        _k.extremes_groups(X[g * rows : stop_g].reshape(-1), X.size, 0, 1, ext[g:])
                    for s in range(g * rows, stop_g, m):
                        e = min(n, s + m)
                        # the rows' block of the output is the log-joint's own
                        Lc = out2[s:e] if code in (0, 2) else L[: e - s]
                        layout.log_joint(X[s:e], Lc, scratch)
                        if code != 0:
                            _k.ops_from_log_joint(Lc, cut, code, s, out1, labels)

        with _single_threaded_blas():
            _run_threads(task, n_threads)
    else:

        def run(lo, hi):
            _k.rows_op(
                X,
                *prep.factors,
                cut,
                tile,
                code,
                rows,
                lo,
                hi,
                1,
                out2,
                out1,
                labels,
                ext,
            )

        _run_groups(run, n_groups, n_threads)
    if code == 0:
        # the kernels work with a finite stand-in for log 0
        out2[:, params.weights == 0] = -np.inf
    result = (out2, out1, out2, labels)[code] if code < 4 else float(out1.sum())
    if not with_extremes:
        return result
    if np.any(ext[:, 2] != 0):
        return result, float("nan"), float("nan")
    return result, float(ext[:, 0].min()), float(ext[:, 1].max())


def extremes(X: NDArray, n_threads: int | None = None) -> tuple[float, float]:
    """``(min, max)`` of ``X``, or ``(nan, nan)`` when some entry is NaN.

    One compiled, multithreaded pass over a large float64 array (numpy's ``min``, ``max`` and
    a NaN test are three: 12 ms against 6.5 ms on one thread for 1 000 000 × 8); numpy
    otherwise.

    Parameters
    ----------
    X : ndarray
    n_threads : int, optional

    Returns
    -------
    lo, hi : float
        ``(0.0, 0.0)`` for an empty array.
    """
    X = np.asarray(X)
    if X.size == 0:
        return 0.0, 0.0
    if X.ndim != 2 or X.dtype != np.float64 or X.shape[0] < MIN_ROWS or not X.flags.c_contiguous:
        # numpy's float32 reductions were as fast as the compiled pass (measured)
        lo = float(np.min(X))
        return (lo, lo) if np.isnan(lo) else (lo, float(np.max(X)))
    _k = _kernels()
    flat = X.reshape(-1)  # a view: X is C-contiguous
    n = flat.shape[0]
    size = max(1 << 16, -(-n // _MAX_GROUPS))
    out = np.empty((-(-n // size), 3))

    def run(lo, hi):
        _k.extremes_groups(flat, size, lo, hi, out)

    _run_groups(run, out.shape[0], min(n_threads or default_threads(), out.shape[0]))
    if np.any(out[:, 2] != 0):
        return float("nan"), float("nan")
    return float(out[:, 0].min()), float(out[:, 1].max())
