"""Model selection: BIC, AIC and ICL over a grid of ``n_components`` x ``covariance_type``.

The workflow of R's mclust: fit every (K, covariance type) cell, tabulate the criteria, keep the
best. Criteria use :class:`~gaussmix.GaussianMixture`'s sign convention (lower is better):

- ``bic = -2 log L + p log N``
- ``aic = -2 log L + 2 p``
- ``icl = bic - 2 Σ_n log max_k p(z=k | x_n)`` (BIC plus a penalty for fuzzy classification)

The default grid is mclust's: its 14 covariance models × K = 1..9. Every cell starts from the
partition of one model-based hierarchical clustering of the data (mclust's default
initialisation, :mod:`gaussmix._hc`; one tree serves every K) and from a k-means++ start, runs
EM to mclust's tolerance, and keeps the better fit. A cell whose fit is singular or degenerate (a
component on fewer than two points, a covariance held up only by ``reg_covar``, more free
parameters than the data has values) is kept in the table as NA with its reason, as mclust
reports ``NA``, and can never be chosen. mclust's models (and scikit-learn's four names, as their
mclust equivalents) are fitted by :mod:`gaussmix._grid`: one compiled call per (cell, start) in
threads, the starts searched on a 2000-row subsample of larger data and each cell refitted on all
rows. A per-iteration ``callback`` or other starts take the cell-by-cell path (``run_em``; a
compiled single-pass E-step on small data, the CPU engine above; worker processes with
``n_jobs``).
"""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.utils.validation import _get_feature_names

from gaussmix._covariance import (
    COVARIANCE_MODELS,
    MCLUST_MODELS,
    SKLEARN_EQUIVALENT,
    CollapsedComponentError,
)
from gaussmix._grid import LABEL_STARTS, fit_grid, same_partition
from gaussmix._small import kernel_array
from gaussmix.estimator import GaussianMixture

__all__ = [
    "COVARIANCE_TYPES",
    "CRITERIA",
    "MCLUST_MODELS",
    "BootstrapLRT",
    "SelectionResult",
    "SelectionRow",
    "bootstrap_lrt",
    "select",
]

CRITERIA = ("bic", "aic", "icl")
#: scikit-learn's four covariance types, in order of increasing flexibility.
COVARIANCE_TYPES = ("spherical", "diag", "tied", "full")
#: how cells start: "hc" (the hierarchical partition) and scikit-learn init_params names
DEFAULT_STARTS = ("hc", "k-means++")
# up to this many rows the grid runs the compiled single-pass E-step; above, the CPU engine
_SMALL_ROWS = 20_000
# cells of a K are restarted from the classifications of that K's best few models
_CROSS_SOURCES = 3



@dataclass(frozen=True)
class SelectionRow:
    """One cell of the grid.

    Attributes
    ----------
    n_components : int
    covariance_type : str
    bic, aic, icl : float
        Criteria on the data the grid was fitted on (lower is better); NaN when ``error``.
    log_likelihood : float
        Total log-likelihood ``Σ_n log p(x_n)``.
    n_parameters : int
        Free parameters ``p`` of the model.
    n_iter : int
        EM iterations of the kept initialisation.
    converged : bool
    error : str or None
        Why the cell could not be fitted.
    """

    n_components: int
    covariance_type: str
    bic: float
    aic: float
    icl: float
    log_likelihood: float
    n_parameters: int
    n_iter: int
    converged: bool
    error: str | None = None


@dataclass
class SelectionResult:
    """Outcome of :func:`select`.

    Attributes
    ----------
    rows : list of SelectionRow
        Every cell, ordered by covariance type then K.
    criterion : {"bic", "aic", "icl"}
        The criterion ``best`` minimises.
    best_index : int
        Index in ``rows`` of the best cell.
    models : dict
        ``(n_components, covariance_type) -> GaussianMixture`` for every fitted cell.
    n_samples : int
        Rows the grid was fitted on.
    """

    rows: list[SelectionRow]
    criterion: str
    best_index: int
    models: dict[tuple[int, str], GaussianMixture] = field(repr=False)
    n_samples: int = 0

    @property
    def best_row(self) -> SelectionRow:
        """The selected cell."""
        return self.rows[self.best_index]

    @property
    def best_model(self) -> GaussianMixture:
        """The fitted estimator of the selected cell."""
        row = self.best_row
        return self.models[(row.n_components, row.covariance_type)]

    @property
    def k_values(self) -> list[int]:
        """The K values of the grid, ascending."""
        return sorted({r.n_components for r in self.rows})

    @property
    def covariance_types(self) -> list[str]:
        """The covariance types of the grid, in table order."""
        seen: list[str] = []
        for r in self.rows:
            if r.covariance_type not in seen:
                seen.append(r.covariance_type)
        return seen

    def values(self, criterion: str | None = None) -> NDArray:
        """The criterion as a (len(k_values), len(covariance_types)) matrix (mclust's layout).

        Parameters
        ----------
        criterion : {"bic", "aic", "icl"}, optional
            Default: the selection criterion.

        Returns
        -------
        table : ndarray of shape (n_k, n_covariance_types)
            NaN where the cell failed.
        """
        criterion = _check_criterion(criterion or self.criterion)
        ks, types = self.k_values, self.covariance_types
        out = np.full((len(ks), len(types)), np.nan)
        for r in self.rows:
            out[ks.index(r.n_components), types.index(r.covariance_type)] = getattr(r, criterion)
        return out

    def top(self, n: int = 3, criterion: str | None = None) -> list[SelectionRow]:
        """The ``n`` best cells by the criterion (mclust's "top 3 models"), NA cells excluded.

        Parameters
        ----------
        n : int, default=3
        criterion : {"bic", "aic", "icl"}, optional
            Default: the selection criterion.

        Returns
        -------
        rows : list of SelectionRow
            Best first; ties go to fewer parameters.
        """
        crit = _check_criterion(criterion or self.criterion)
        usable = [r for r in self.rows if math.isfinite(getattr(r, crit))]
        return sorted(usable, key=lambda r: (getattr(r, crit), r.n_parameters))[:n]

    def __repr__(self) -> str:
        best = self.best_row
        failed = sum(r.error is not None for r in self.rows)
        ks = self.k_values
        k_text = f"{ks[0]}..{ks[-1]}" if ks == list(range(ks[0], ks[-1] + 1)) else str(ks)
        value = getattr(best, self.criterion)
        types = self.covariance_types
        # a full list of mclust's 14 models would not be compact
        t_text = "/".join(types) if len(types) <= 4 else f"{len(types)} covariance models"
        return (
            f"SelectionResult({self.criterion.upper()} over K={k_text} x "
            f"{t_text} on {self.n_samples} rows: best K="
            f"{best.n_components} {best.covariance_type} ({self.criterion.upper()} {value:.4g})"
            + (f", {failed} cell(s) failed" if failed else "")
            + ")"
        )

    def _repr_pretty_(self, p, cycle) -> None:  # IPython: the one line, not the fields
        p.text(repr(self))

    def to_frame(self):
        """Every cell as a pandas DataFrame, one row per (covariance type, K).

        Returns
        -------
        frame : pandas.DataFrame
            Columns as :class:`SelectionRow`'s fields plus ``selected`` (bool); NaN criteria
            for failed cells. ``frame.pivot(index="n_components", columns="covariance_type",
            values="bic")`` gives mclust's table.
        """
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is optional
            raise ImportError("to_frame needs pandas: pip install pandas") from None
        frame = pd.DataFrame([asdict(r) for r in self.rows])
        frame["selected"] = [i == self.best_index for i in range(len(self.rows))]
        return frame

    def plot(self, criterion: str | None = None, *, ax=None, focus: bool = True):
        """The criterion against K, one curve per covariance type (:func:`gaussmix.plot.criteria`).

        Parameters
        ----------
        criterion : {"bic", "aic", "icl"}, optional
            Default: the selection criterion.
        ax : matplotlib Axes, optional
        focus : bool, default=True
            Limit the y-axis to the range where the choice is made.

        Returns
        -------
        ax : matplotlib Axes
        """
        from gaussmix.plot import criteria

        return criteria(self, _check_criterion(criterion or self.criterion), ax=ax, focus=focus)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: criterion, best cell and every row (NaN as None)."""

        def clean(row: SelectionRow) -> dict[str, Any]:
            d = asdict(row)
            for key, value in d.items():
                if isinstance(value, float) and not math.isfinite(value):
                    d[key] = None
            return d

        return {
            "criterion": self.criterion,
            "n_samples": self.n_samples,
            "best": clean(self.best_row),
            "rows": [clean(r) for r in self.rows],
        }


def _check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got {criterion!r}")
    return criterion


def _failed(n_components: int, covariance_type: str, reason: str, n_parameters: int = 0):
    nan = float("nan")
    return SelectionRow(n_components, covariance_type, nan, nan, nan, nan, n_parameters, 0,
                        False, reason)  # fmt: skip


def _degenerate(params, nk: NDArray, n_values: int, n_parameters: int, reg_covar: float):
    """Why a fitted cell is not a usable model (mclust reports such cells as NA), or None."""
    if n_parameters > n_values:
        return f"more free parameters ({n_parameters}) than data values ({n_values})"
    rteps = np.sqrt(np.finfo(np.float64).eps)
    empty = np.flatnonzero(nk < rteps)  # mclust's threshold on a column sum of z
    if empty.size:
        return f"component {int(empty[0])} is empty (mixing proportion below threshold)"
    model, (K, d) = params.model, params.means.shape
    for k in range(K):
        eig = np.linalg.eigvalsh(model.full_matrix(params.covariances, k, d))
        # singular as mclust's reciprocal condition test of the Cholesky factor calls it
        # (eigenvalue ratio at rounding level); with reg_covar the floor is that added
        # amount, so the data's own part is what must be positive
        if eig[0] - reg_covar <= 100.0 * np.finfo(np.float64).eps * eig[-1]:
            return f"component {k} has a singular covariance (held up only by reg_covar)"
    return None


def _fit_cell(
    X: NDArray,
    n_components: int,
    covariance_type: str,
    params: dict[str, Any],
    inner_threads: int | None,
    callback: Callable | None = None,
    hc_labels: NDArray | None = None,
    sample_weight: NDArray | None = None,
) -> tuple[SelectionRow, GaussianMixture | None]:
    """Fit one cell from every start, keep the best, compute its criteria or why it is NA."""
    from gaussmix._covariance import get_model
    from gaussmix._init import initial_params
    from gaussmix._mixture import log_resp_max

    limiter = None
    if inner_threads is not None:
        # worker processes share the cores: one BLAS / numba thread each, not one per core each
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=inner_threads)
        if "numba" in sys.modules:
            import numba

            numba.set_num_threads(min(inner_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        opts = dict(params)
        starts = opts.pop("starts", DEFAULT_STARTS)
        n_init = int(opts.pop("n_init", 1))
        reg = float(opts.get("reg_covar", 1e-6))
        tol = float(opts.get("tol", 1e-5))
        max_iter = int(opts.get("max_iter", 1000))
        seed = opts.get("random_state", 0)
        model = get_model(covariance_type)
        K, (n, d) = n_components, X.shape
        n_par = model.n_parameters(K, d) + K * d + K - 1
        executor = _executor(X, sample_weight)
        kernels = None if n < 512 else _kmeans_kernels()
        rng = np.random.RandomState(seed)
        best, best_stats, reasons = None, None, []
        plan = [s for s in starts if s != "hc"] * max(n_init, 1)
        if "hc" in starts:
            plan.insert(0, "hc")
        for index, start in enumerate(plan):
            try:
                if start == "hc":
                    if hc_labels is None:
                        continue
                    p0 = _start_from_labels(X, sample_weight, hc_labels, K, model, reg,
                                            executor)  # fmt: skip
                else:
                    p0 = initial_params(start, X, sample_weight, K, model, reg, rng,
                                        kernels=kernels)  # fmt: skip
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = _run(executor, p0, reg, tol, max_iter, callback, index)
            except (CollapsedComponentError, FloatingPointError, np.linalg.LinAlgError) as exc:
                reasons.append(_one_line(exc))
                continue
            # the criteria at the final parameters (one more pass over the data); a
            # degenerate end does not count, whatever its likelihood
            stats = executor.e_step(result.params)
            reason = _degenerate(result.params, stats.nk, n * d, n_par, reg)
            if reason is not None:
                reasons.append(reason)
                continue
            if best is None or stats.log_likelihood > best_stats.log_likelihood:
                best, best_stats = result, stats
        if best is None:
            reason = reasons[0] if reasons else "no start could be fitted"
            return _failed(K, covariance_type, reason, n_par), None
        stats = best_stats
        log_likelihood = float(stats.log_likelihood)
        n_eff = float(stats.weight_sum)
        bic = -2.0 * log_likelihood + n_par * np.log(n_eff)
        est = _estimator(best, K, covariance_type, opts, X.dtype)
        if sample_weight is None:
            resp_term = log_resp_max(best.params, X)
        else:  # ICL's classification term weighted like the likelihood
            resp_term = float(np.dot(sample_weight, _row_log_resp_max(best.params, X)))
        row = SelectionRow(
            n_components=K,
            covariance_type=covariance_type,
            bic=float(bic),
            aic=float(-2.0 * log_likelihood + 2.0 * n_par),
            icl=float(bic - 2.0 * resp_term),
            log_likelihood=log_likelihood,
            n_parameters=int(n_par),
            n_iter=int(best.n_iter),
            converged=bool(best.converged),
        )
        return row, est
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


def _start_from_labels(X, w, labels, K, model, reg_covar, executor):
    """The M-step of a partition: one compiled call for mclust's models on small data."""
    if type(executor).__name__ == "SmallExecutor" and model.name in MCLUST_MODELS:
        from gaussmix._small import start_from_labels

        start = start_from_labels(X, w, labels, K, model.name, reg_covar=reg_covar)
        start.raise_for_status(reg_covar)
        return start.params(model.name)
    from gaussmix._init import _from_labels

    return _from_labels(X, w, labels, K, model, reg_covar)


def _run(executor, start, reg_covar: float, tol: float, max_iter: int, callback, index: int):
    """EM from ``start``: one compiled call for mclust's models on small data (no callback
    is needed there), else :func:`gaussmix._em.run_em`."""
    from gaussmix._em import EMResult, run_em

    name = start.model.name
    small = type(executor).__name__ == "SmallExecutor"
    if callback is None and small and name in MCLUST_MODELS:
        from gaussmix._small import fit_small

        fit = fit_small(executor.X, executor.sample_weight, name, start.weights, start.means,
                        start.covariances, reg_covar=reg_covar, tol=tol,
                        max_iter=max_iter)  # fmt: skip
        fit.raise_for_status(reg_covar)
        bounds = [float(v) for v in fit.lower_bounds]
        return EMResult(params=fit.params(name), lower_bound=bounds[-1] if bounds else -np.inf,
                        lower_bounds=bounds, n_iter=int(fit.n_iter),
                        converged=bool(fit.converged))  # fmt: skip
    return run_em(executor, start, reg_covar=reg_covar, tol=tol, max_iter=max_iter,
                  callback=callback, init_index=index)  # fmt: skip


def _row_log_resp_max(params, X: NDArray) -> NDArray:
    from gaussmix._gaussian import logsumexp

    lj = params.log_joint(X)
    return np.max(lj, axis=1) - logsumexp(lj, axis=1)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _executor(X: NDArray, sample_weight: NDArray | None):
    if X.shape[0] <= _SMALL_ROWS:
        try:
            from gaussmix._small import SmallExecutor

            return SmallExecutor(X, sample_weight)
        except ImportError:  # pragma: no cover - numba is a dependency
            pass
    from gaussmix.backends import make_executor

    return make_executor("auto", X, sample_weight)


def _kmeans_kernels():
    from gaussmix.backends import engine_module

    try:
        return engine_module("cpu").kmeans_kernels()
    except ImportError:  # pragma: no cover - numba is a dependency
        return None


@functools.cache
def _estimator_params() -> frozenset[str]:
    return frozenset(GaussianMixture().get_params())


def _estimator(
    result, K: int, covariance_type: str, opts: dict[str, Any], dtype
) -> GaussianMixture:
    """A fitted GaussianMixture holding one EM result (no refit)."""
    keep = {k: v for k, v in opts.items() if k in _estimator_params()}
    est = GaussianMixture(K, covariance_type=covariance_type, **keep)
    est._set_fitted(result.params, dtype)
    est.n_features_in_ = result.params.n_features
    est.converged_ = bool(result.converged)
    est.n_iter_ = int(result.n_iter)
    est.lower_bound_ = float(result.lower_bound)
    est.lower_bounds_ = [float(v) for v in result.lower_bounds]
    return est


# ------------------------------------------------------------------------ worker processes
# The pool's contract: workers never outlive this process (SIGTERM, SIGHUP, SIGKILL or a crash
# of the parent: on Linux the kernel kills them, elsewhere a watchdog thread sees the parent
# go); they ignore SIGINT (Ctrl-C reaches the whole process group, and stopping is the
# parent's decision, so no worker prints a traceback); they hold neither stdout nor stderr (a
# worker still alive could keep `gaussmix select ... | cat` waiting); and when the parent stops
# the grid for any reason (an exception, Ctrl-C, SIGTERM turned into SignalExit) the workers
# are killed before the exception goes on.
_WORKER_X: NDArray | None = None
_BLOCKED_WHILE_STARTING = {
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
}
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    linked = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            linked = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            linked = False
    if os.getppid() != parent_pid:  # the parent died before the link was made
        os._exit(1)
    if not linked:
        import threading
        import time

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, name="gaussmix-parent-watchdog", daemon=True).start()


def _worker_start(parent_pid: int, X: NDArray) -> None:
    """Initializer of every worker process (see the pool's contract above)."""
    global _WORKER_X
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    if hasattr(signal, "pthread_sigmask"):
        # the parent blocked these while starting us (a Ctrl-C before this point would have
        # printed a KeyboardInterrupt traceback); SIGINT is ignored from now on, and SIGTERM
        # and SIGHUP may end a worker as they end any process
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED_WHILE_STARTING)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    _WORKER_X = X


def _fit_worker_cell(
    n_components: int,
    covariance_type: str,
    params: dict[str, Any],
    inner_threads: int,
    hc_labels: NDArray | None,
    sample_weight: NDArray | None,
) -> tuple[SelectionRow, GaussianMixture | None]:
    assert _WORKER_X is not None
    return _fit_cell(_WORKER_X, n_components, covariance_type, params, inner_threads,
                     hc_labels=hc_labels, sample_weight=sample_weight)  # fmt: skip


def _run_pool(
    X: NDArray,
    order: list[tuple[int, str]],
    params: dict[str, Any],
    jobs: int,
    hc: dict[int, NDArray],
    sample_weight: NDArray | None,
):
    """Fit the cells in ``jobs`` worker processes; yield each ``(row, model)`` as it ends."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    inner = max(1, (os.cpu_count() or 1) // jobs)
    # spawn, not fork: the parent's BLAS, numba and progress threads do not survive a fork
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_start, initargs=(os.getpid(), X))  # fmt: skip
    can_block = hasattr(signal, "pthread_sigmask")
    try:
        # workers start during the first submits and inherit this thread's signal mask: with
        # SIGINT blocked they cannot be interrupted before their initializer ignores it, and
        # with SIGTERM/SIGHUP blocked this process cannot stop half-way through starting one
        # (a worker started but not yet in the pool's table would be left running); signals
        # meanwhile wait, and arrive when the mask is restored
        old_mask = (
            signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED_WHILE_STARTING) if can_block else None
        )
        try:
            futures = [
                pool.submit(_fit_worker_cell, k, t, params, inner, hc.get(k), sample_weight)
                for k, t in order
            ]
        finally:
            if can_block:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        for future in as_completed(futures):
            yield future.result()
    except BaseException:
        # stop now, not after the running cells finish: kill the workers, then let the
        # exception (KeyboardInterrupt, SignalExit, a worker's error) go on
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _resolve_jobs(n_jobs: int | None, n_cells: int) -> int:
    cores = os.cpu_count() or 1
    if n_jobs is None:
        # one level of parallelism: the fits' own threads (compiled E-steps, BLAS)
        return 1
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer or None, got {n_jobs!r}")
    if n_jobs < 0:  # joblib's convention: -1 all cores, -2 all but one, ...
        n_jobs = max(1, cores + 1 + n_jobs)
    return max(1, min(n_jobs, n_cells))


def select(
    X: ArrayLike,
    k_range: Iterable[int] = range(1, 10),
    covariance_types: Sequence[str] | str = MCLUST_MODELS,
    criterion: str = "bic",
    *,
    n_jobs: int | None = None,
    random_state: int | None = 0,
    sample_weight: ArrayLike | None = None,
    starts: Sequence[str] = DEFAULT_STARTS,
    hc_model: str = "VVV",
    hc_use: str = "SVD",
    on_cell: Callable[[SelectionRow, int, int], None] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    callback: Callable | None = None,
    **params: Any,
) -> SelectionResult:
    """Fit every (K, covariance model) cell and pick the one with the lowest criterion.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Data (in memory; a DataFrame's column names go to every fitted model).
    k_range : iterable of int, default=range(1, 10)
        Numbers of components to try, each in ``[1, n_samples]``.
    covariance_types : sequence of str, "mclust", "sklearn" or "all", default=mclust's 14
        Models to try: any of mclust's names (EII ... VVV) and scikit-learn's
        (spherical, diag, tied, full). ``"mclust"``/``"all"``: the 14; ``"sklearn"``: the four.
    criterion : {"bic", "aic", "icl"}, default="bic"
        What ``best`` minimises (ICL is computed at the same fit as BIC).
    n_jobs : int or None, default=None
        Threads running the grid's compiled fits (None: one per core; -1 all cores, -2 all but
        one). On the cell-by-cell path (a ``callback``, or ``starts`` that are not partitions)
        None runs cells one after the other and an integer runs them in that many worker
        processes, each fit on one thread.
    random_state : int or None, default=0
        Seed of the hierarchical subset (above 2000 rows) and of each cell's k-means++ starts.
    sample_weight : array-like of shape (n_samples,), optional
        Row weights (repeated rows).
    starts : sequence of str, default=("hc", "k-means++")
        Starts of every cell: ``"hc"`` (the hierarchical partition for its K),
        ``"k-means++"`` (the rows nearest a k-means++ seeding), ``"kmeans"`` and any other
        ``init_params`` name (those take the cell-by-cell path); the fit with the highest
        likelihood is kept. ``n_init`` repeats the non-hc starts.
    hc_model, hc_use : str, default "VVV", "SVD"
        The hierarchical clustering's merge criterion ("VVV", "EII") and data transform
        ("SVD", "VARS"), as mclust's ``hcModelName`` and ``hcUse``.
    on_cell : callable, optional
        ``on_cell(row, done, total)`` after each cell finishes (progress display).
    on_progress : callable, optional
        ``on_progress(stage, done, total)`` as the compiled grid's fits end, stage by stage
        ("search", "cross-starts", "refit on all rows"): progress before cells finish.
    callback : callable, optional
        Receives every EM iteration's :class:`gaussmix.EMProgress`; it makes every cell take
        the cell-by-cell path (``run_em``), much slower than the compiled grid.
    **params
        ``tol`` (default 1e-5: mclust's test, the change of the total log-likelihood relative
        to ``1 + |log L|``; on the cell-by-cell path the change of the mean log-likelihood per
        row, tighter), ``max_iter`` (default 1000), ``reg_covar`` (default 1e-6), ``n_init``
        (default 1), and other :class:`~gaussmix.GaussianMixture` parameters given to the
        returned models.

    Returns
    -------
    result : SelectionResult

    Raises
    ------
    ValueError
        An empty or out-of-range ``k_range``, an unknown covariance type or criterion, or
        no cell could be fitted.
    """
    criterion = _check_criterion(criterion)
    # a DataFrame's column names go to every fitted model, as GaussianMixture.fit(df) keeps them
    names = _get_feature_names(X)
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise ValueError(f"X must be numeric, got dtype {X.dtype}")
    # writeable: a read-only array (a memory-mapped .npy file) would be copied by every cell
    X = kernel_array(X)
    if not np.all(np.isfinite(X)):
        raise ValueError("X must be finite for model selection (impute missing values first)")
    n = X.shape[0]
    w = None
    if sample_weight is not None:
        from gaussmix._validation import check_sample_weight

        w = check_sample_weight(sample_weight, n)
    ks = sorted({int(k) for k in k_range})
    if not ks:
        raise ValueError("k_range is empty")
    if ks[0] < 1:
        raise ValueError(f"numbers of components must be >= 1, got {ks[0]}")
    if ks[-1] > n:
        raise ValueError(f"K = {ks[-1]} exceeds the number of rows ({n})")
    types = _grid_types(covariance_types)
    for reserved in ("n_components", "covariance_type"):
        if reserved in params:
            raise TypeError(f"{reserved} is set by the grid, not by a parameter")
    starts = tuple(starts)
    if not starts:
        raise ValueError("starts is empty")
    params = {"random_state": random_state, "tol": 1e-5, "max_iter": 1000, **params,
              "starts": starts}  # fmt: skip
    cross = bool(params.pop("cross_starts", True))
    cells = [(k, t) for t in types for k in ks]
    results: dict[tuple[int, str], tuple[SelectionRow, GaussianMixture | None]] = {}
    # mclust's models from partitions: the compiled batch of gaussmix._grid; the rest (the
    # scikit-learn names, other starts, a per-iteration callback) cell by cell below
    # (scikit-learn's four names run as their mclust equivalents, stored in their layout)
    run_as = {t: SKLEARN_EQUIVALENT.get(t, t) for t in types}
    batch = [t for t in types if run_as[t] in MCLUST_MODELS]
    if callback is not None or not set(starts) <= LABEL_STARTS:
        batch = []
    if batch:
        grid = fit_grid(
            X, w, ks, list(dict.fromkeys(run_as[t] for t in batch)), starts=starts,
            n_init=int(params.get("n_init", 1)),
            seed=random_state,
            hc_partitions=lambda rows, rw: _hc_partitions(rows, rw, ks, starts, hc_model,
                                                          hc_use, random_state),
            reg_covar=float(params.get("reg_covar", 1e-6)), tol=0.0,
            rel_tol=float(params["tol"]), max_iter=int(params["max_iter"]),
            threads=None if n_jobs is None else _resolve_jobs(n_jobs, len(cells)),
            cross=cross, on_progress=on_progress,
        )  # fmt: skip
        n_eff = float(n if w is None else w.sum())
        opts = {k: v for k, v in params.items() if k not in ("starts", "n_init")}
        done_before = 0
        for t in batch:
            for k in ks:
                results[(k, t)] = _grid_row(grid[(k, run_as[t])], t, n_eff, opts, X.dtype)
                done_before += 1
                if on_cell is not None:
                    on_cell(results[(k, t)][0], done_before, len(cells))
        cells_left = [c for c in cells if c[1] not in batch]
    else:
        done_before, cells_left = 0, cells
    if cells_left:
        _fit_cells(X, w, ks, cells_left, params, n_jobs, callback, on_cell, hc_model, hc_use,
                   random_state, cross, results, done_before, len(cells))
    rows = [results[c][0] for c in cells]
    models = {c: results[c][1] for c in cells if results[c][1] is not None}
    if names is not None:
        for model in models.values():
            model.feature_names_in_ = names
    scores = np.array([getattr(r, criterion) for r in rows])
    if not np.isfinite(scores).any():
        raise ValueError(f"no model in the grid could be fitted: {rows[0].error}")
    # lowest criterion; ties go to the simpler model (fewer parameters), as mclust does
    finite = [i for i in range(len(rows)) if np.isfinite(scores[i])]
    best = min(finite, key=lambda i: (scores[i], rows[i].n_parameters, i))
    return SelectionResult(rows, criterion, best, models, n)


def _grid_row(cell, name: str, n_eff: float, opts: dict[str, Any], dtype):
    """A :class:`SelectionRow` and fitted model named ``name`` from a
    :class:`gaussmix._grid.Cell` (of ``name`` or of its mclust equivalent)."""
    from gaussmix._em import EMResult
    from gaussmix._params import MixtureParams

    K, n_par = cell.n_components, cell.n_parameters
    if cell.fit is None:
        return _failed(K, name, cell.reason, n_par), None
    fit = cell.fit
    log_likelihood = fit.log_likelihood
    bic = -2.0 * log_likelihood + n_par * np.log(n_eff)
    bounds = [float(v) for v in fit.lower_bounds]
    params = fit.params(cell.model)
    if name != cell.model:
        model = COVARIANCE_MODELS[name]
        d = params.n_features
        full = np.stack([params.model.full_matrix(params.covariances, k, d) for k in range(K)])
        params = MixtureParams.from_covariances(params.weights, params.means,
                                                model.from_full_matrices(full), model)  # fmt: skip
    result = EMResult(params=params, lower_bound=bounds[-1] if bounds else -np.inf,
                      lower_bounds=bounds, n_iter=fit.n_iter, converged=fit.converged)  # fmt: skip
    row = SelectionRow(
        n_components=K,
        covariance_type=name,
        bic=float(bic),
        aic=float(-2.0 * log_likelihood + 2.0 * n_par),
        icl=float(bic - 2.0 * fit.icl_term),
        log_likelihood=float(log_likelihood),
        n_parameters=int(n_par),
        n_iter=int(fit.n_iter),
        converged=bool(fit.converged),
    )
    return row, _estimator(result, K, name, opts, dtype)


def _fit_cells(X, w, ks, cells, params, n_jobs, callback, on_cell, hc_model, hc_use,
               random_state, cross, results, done_before, total) -> None:
    """The cells the compiled batch does not take, one fit per start each."""
    n = X.shape[0]
    starts = params["starts"]
    types = list(dict.fromkeys(t for _, t in cells))
    hc = _hc_partitions(X, w, ks, starts, hc_model, hc_use, random_state)
    jobs = _resolve_jobs(n_jobs, len(cells))
    on_cell = (lambda row, done, _: None) if on_cell is None else on_cell
    if jobs == 1 and callback is None and n <= _SMALL_ROWS:
        # small data: each fit is one single-threaded compiled call that releases the GIL,
        # so the cells themselves are the level of parallelism (threads, no processes)
        from concurrent.futures import ThreadPoolExecutor, as_completed

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            futures = {pool.submit(_fit_cell, X, k, t, params, None, None, hc.get(k), w): (k, t)
                       for k, t in sorted(cells, key=lambda c: -c[0])}  # fmt: skip
            for done, future in enumerate(as_completed(futures), start=1):
                results[futures[future]] = future.result()
                on_cell(results[futures[future]][0], done_before + done, total)
    elif jobs == 1:
        for done, (k, t) in enumerate(cells, start=1):
            results[(k, t)] = _fit_cell(X, k, t, params, None, callback, hc.get(k), w)
            on_cell(results[(k, t)][0], done_before + done, total)
    else:
        # biggest cells first, so a long one does not start last and run alone
        order = sorted(cells, key=lambda c: -c[0])
        for done, (row, est) in enumerate(_run_pool(X, order, params, jobs, hc, w), start=1):
            results[(row.n_components, row.covariance_type)] = (row, est)
            on_cell(row, done_before + done, total)
    if cross:
        _cross_starts(X, w, ks, types, params, results, callback)


def _cross_starts(X, w, ks, types, params, results, callback) -> None:
    """Restart every cell of each K from the classifications of that K's best models.

    One tree's partition and a k-means++ start can both miss a constrained model's best
    optimum that another model of the same K found (measured: VVE at K = 8 on mclust's
    diabetes data ended 12 BIC units short of mclust). Each restart is one more EM run per
    cell, skipped where the cell already classifies the rows that way; a cell keeps whichever
    fit has the lower BIC.
    """
    tasks = []
    for k in ks:
        fitted = sorted((results[(k, t)][0].bic, t) for t in types
                        if results[(k, t)][1] is not None)  # fmt: skip
        if k == 1 or not fitted:
            continue
        own = {t: results[(k, t)][1].predict(X) for _, t in fitted}
        # the classifications of the best few models at this K (distinct ones only)
        seeds: list[NDArray] = []
        for _, source in fitted[:_CROSS_SOURCES]:
            labels = own[source]
            if np.unique(labels).size == k and not any(same_partition(labels, s) for s in seeds):
                seeds.append(labels)
        for labels in seeds:
            for t in types:
                if t in own and same_partition(labels, own[t]):
                    continue
                tasks.append((k, t, labels))
    cell = {**params, "starts": ("hc",)}

    def run(task):
        k, t, labels = task
        return task, _fit_cell(X, k, t, cell, None, callback, labels, w)

    if callback is None and X.shape[0] <= _SMALL_ROWS:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            outcomes = list(pool.map(run, tasks))
    else:
        outcomes = [run(task) for task in tasks]
    for (k, t, _), (row, est) in outcomes:
        old = results[(k, t)][0]
        if est is not None and not (row.bic >= old.bic):
            results[(k, t)] = (row, est)


def _grid_types(covariance_types: Sequence[str] | str) -> list[str]:
    if isinstance(covariance_types, str):
        if covariance_types in ("all", "mclust"):
            return list(MCLUST_MODELS)
        if covariance_types == "sklearn":
            return list(COVARIANCE_TYPES)
        covariance_types = [covariance_types]
    types = list(dict.fromkeys(covariance_types))
    if not types:
        raise ValueError("covariance_types is empty")
    for t in types:
        if t not in COVARIANCE_MODELS:
            raise ValueError(
                f"covariance_type must be one of {sorted(COVARIANCE_MODELS)}, 'mclust', "
                f"'sklearn' or 'all', got {t!r}"
            )
    return types


def _hc_partitions(X, w, ks, starts, model, use, random_state) -> dict[int, NDArray]:
    """The hierarchical partition of the rows for every K of the grid (one tree)."""
    if "hc" not in starts:
        return {}
    from gaussmix._hc import hc_tree

    rows = X if w is None else X[w > 0]
    if rows.shape[0] < 2:
        return {}
    tree = hc_tree(rows, model=model, use=use, random_state=random_state)
    usable = [k for k in ks if k <= tree.n_rows]
    parts = tree.partitions(usable)
    out = {}
    for k, labels in zip(usable, parts, strict=True):
        if w is not None:
            full = np.zeros(X.shape[0], dtype=np.intp)
            full[w > 0] = labels
            labels = full
        out[k] = labels
    return out


@dataclass(frozen=True)
class BootstrapLRT:
    """mclust's bootstrap likelihood-ratio test for the number of components.

    Attributes
    ----------
    covariance_type : str
    k : list of int
        The K of each test (K components against K + 1).
    statistic : list of float
        Observed ``2 (log L_{K+1} - log L_K)``.
    p_value : list of float
        ``(1 + #{bootstrap statistics >= observed}) / (n_boot + 1)``.
    boot : list of ndarray
        The bootstrap statistics of each test.
    n_boot : int
    """

    covariance_type: str
    k: list[int]
    statistic: list[float]
    p_value: list[float]
    boot: list[NDArray] = field(repr=False)
    n_boot: int = 0

    def __str__(self) -> str:
        lines = [
            "Bootstrap sequential LRT for the number of components "
            f"({self.covariance_type}, {self.n_boot} bootstrap samples)",
            f"{'':>11}{'LRTS':>12}{'p-value':>10}",
        ]
        for k, stat, p in zip(self.k, self.statistic, self.p_value, strict=True):
            lines.append(f"{k:>3} vs {k + 1:<3}{stat:>12.3f}{p:>10.3f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the tests without the bootstrap samples."""
        return {"covariance_type": self.covariance_type, "n_boot": self.n_boot,
                "tests": [{"k": k, "k_alternative": k + 1, "statistic": st, "p_value": p}
                          for k, st, p in zip(self.k, self.statistic, self.p_value,
                                              strict=True)]}  # fmt: skip


def bootstrap_lrt(
    X: ArrayLike,
    covariance_type: str = "VVV",
    *,
    k_max: int = 9,
    n_boot: int = 999,
    level: float = 0.05,
    sequential: bool = True,
    random_state: int | None = 0,
    **params: Any,
) -> BootstrapLRT:
    """Bootstrap likelihood-ratio test of K against K + 1 components (McLachlan 1987).

    mclust's ``mclustBootstrapLRT``: for K = 1, 2, ..., the observed statistic
    ``2 (log L_{K+1} - log L_K)`` of the two fits is compared with its distribution under
    the null, simulated by the parametric bootstrap: ``n_boot`` data sets of the same size are
    drawn from the fitted K-component mixture and both models refitted on each. Every fit
    starts as the selection grid's cells do (hierarchical partition, k-means++).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    covariance_type : str, default="VVV"
        Any covariance model.
    k_max : int, default=9
        Largest K of the null (tests K = 1 .. k_max - 1 against K + 1).
    n_boot : int, default=999
        Bootstrap samples per test (mclust's default).
    level : float, default=0.05
        With ``sequential``, testing stops at the first K whose p-value exceeds it.
    sequential : bool, default=True
    random_state : int or None, default=0
    **params
        ``tol``, ``max_iter``, ``reg_covar`` of the fits.

    Returns
    -------
    result : BootstrapLRT
    """
    X = kernel_array(np.asarray(X))
    if X.ndim != 2 or not np.all(np.isfinite(X)):
        raise ValueError("X must be a finite 2-D array")
    _grid_types([covariance_type])
    if not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    n = X.shape[0]
    k_max = int(min(k_max, n - 1))
    rng = np.random.RandomState(random_state)
    opts = {"tol": 1e-5, "max_iter": 1000, **params, "random_state": random_state}

    def fit(data: NDArray, k: int):
        hc = _hc_partitions(data, None, [k], DEFAULT_STARTS, "VVV", "SVD", random_state)
        return _fit_cell(data, k, covariance_type, {**opts, "starts": DEFAULT_STARTS}, None,
                         None, hc.get(k), None)  # fmt: skip

    ks, stats, pvals, boots = [], [], [], []
    null_row, null_est = fit(X, 1)
    for k in range(1, k_max):
        alt_row, alt_est = fit(X, k + 1)
        if null_est is None or alt_est is None:
            break
        observed = 2.0 * (alt_row.log_likelihood - null_row.log_likelihood)
        boot = np.full(n_boot, np.nan)
        null_est.random_state = rng
        for b in range(n_boot):
            Xb, _ = null_est.sample(n)
            r0, _ = fit(Xb, k)
            r1, _ = fit(Xb, k + 1)
            boot[b] = 2.0 * (r1.log_likelihood - r0.log_likelihood)
        valid = boot[np.isfinite(boot)]
        p = (1.0 + np.sum(valid >= observed)) / (valid.size + 1.0)
        ks.append(k)
        stats.append(float(observed))
        pvals.append(float(p))
        boots.append(boot)
        if sequential and p > level:
            break
        null_row, null_est = alt_row, alt_est
    return BootstrapLRT(covariance_type, ks, stats, pvals, boots, n_boot)
