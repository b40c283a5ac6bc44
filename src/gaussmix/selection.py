"""Model selection: BIC, AIC and ICL over a grid of ``n_components`` x ``covariance_type``.

The workflow of R's mclust: fit every (K, covariance type) cell, tabulate the criteria, keep the
best. Criteria use :class:`~gaussmix.GaussianMixture`'s sign convention (lower is better):

- ``bic = -2 log L + p log N``
- ``aic = -2 log L + 2 p``
- ``icl = bic - 2 Σ_n log max_k p(z=k | x_n)`` (BIC plus a penalty for fuzzy classification)

A cell that cannot be fitted (a component collapses onto too few points) is kept in the table with
its error and NaN criteria, as mclust reports ``NA``. Cells run in parallel worker processes when
the grid is large enough to pay for starting them.
"""

from __future__ import annotations

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

from gaussmix._covariance import COVARIANCE_MODELS
from gaussmix.estimator import GaussianMixture

__all__ = ["COVARIANCE_TYPES", "CRITERIA", "SelectionResult", "SelectionRow", "select"]

CRITERIA = ("bic", "aic", "icl")
#: Covariance types in mclust's order of increasing flexibility.
COVARIANCE_TYPES = ("spherical", "diag", "tied", "full")

# below this many (row x feature x component) units of work per grid, starting worker processes
# (about a second each, importing numpy, scipy and scikit-learn) costs more than it saves
_PARALLEL_WORK = 2_000_000


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


def _fit_cell(
    X: NDArray,
    n_components: int,
    covariance_type: str,
    params: dict[str, Any],
    inner_threads: int | None,
    callback: Callable | None = None,
) -> tuple[SelectionRow, GaussianMixture | None]:
    """Fit one cell and compute its criteria; failures become a row with ``error`` set."""
    limiter = None
    if inner_threads is not None:
        # worker processes share the cores: one BLAS / numba thread each, not one per core each
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=inner_threads)
        if "numba" in sys.modules:
            import numba

            numba.set_num_threads(min(inner_threads, numba.config.NUMBA_NUM_THREADS))
    try:
        est = GaussianMixture(n_components, covariance_type=covariance_type, **params)
        with warnings.catch_warnings():
            # non-convergence is reported in the row; workers must not print on stderr
            warnings.simplefilter("ignore")
            try:
                est.fit(X, callback=callback)
            except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
                nan = float("nan")
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                return (
                    SelectionRow(
                        n_components, covariance_type, nan, nan, nan, nan, 0, 0, False, text
                    ),
                    None,
                )
            n = X.shape[0]
            log_likelihood = float(est.score(X) * n)
            row = SelectionRow(
                n_components=n_components,
                covariance_type=covariance_type,
                bic=est.bic(X),
                aic=est.aic(X),
                icl=est.icl(X),
                log_likelihood=log_likelihood,
                n_parameters=int(est._n_parameters()),
                n_iter=int(est.n_iter_),
                converged=bool(est.converged_),
            )
        return row, est
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


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
    n_components: int, covariance_type: str, params: dict[str, Any], inner_threads: int
) -> tuple[SelectionRow, GaussianMixture | None]:
    assert _WORKER_X is not None
    return _fit_cell(_WORKER_X, n_components, covariance_type, params, inner_threads)


def _run_pool(X: NDArray, order: list[tuple[int, str]], params: dict[str, Any], jobs: int):
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
            futures = [pool.submit(_fit_worker_cell, k, t, params, inner) for k, t in order]
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


def _resolve_jobs(n_jobs: int | None, n_cells: int, work: float) -> int:
    cores = os.cpu_count() or 1
    if n_jobs is None:
        return 1 if work < _PARALLEL_WORK else max(1, min(cores, n_cells))
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer or None, got {n_jobs!r}")
    if n_jobs < 0:  # joblib's convention: -1 all cores, -2 all but one, ...
        n_jobs = max(1, cores + 1 + n_jobs)
    return max(1, min(n_jobs, n_cells))


def select(
    X: ArrayLike,
    k_range: Iterable[int] = range(1, 10),
    covariance_types: Sequence[str] | str = COVARIANCE_TYPES,
    criterion: str = "bic",
    *,
    n_jobs: int | None = None,
    random_state: int | None = 0,
    on_cell: Callable[[SelectionRow, int, int], None] | None = None,
    callback: Callable | None = None,
    **params: Any,
) -> SelectionResult:
    """Fit every (K, covariance type) pair and pick the one with the lowest criterion.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Data (in memory).
    k_range : iterable of int, default=range(1, 10)
        Numbers of components to try, each in ``[1, n_samples]``.
    covariance_types : sequence of str or "all", default=all four
        Covariance structures to try.
    criterion : {"bic", "aic", "icl"}, default="bic"
        What ``best`` minimises.
    n_jobs : int or None, default=None
        Worker processes. None: sequential for small grids, one per core otherwise; -1 all
        cores (joblib's convention).
    random_state : int or None, default=0
        Seed of every cell's initialisation (the same seed everywhere, so cells differ only
        by the model).
    on_cell : callable, optional
        ``on_cell(row, done, total)`` after each cell finishes (progress display).
    callback : callable, optional
        Passed to ``GaussianMixture.fit`` when cells run in this process (sequential runs).
    **params
        Further :class:`~gaussmix.GaussianMixture` parameters (``n_init``, ``max_iter``,
        ``tol``, ``reg_covar``, ``init_params``, ``engine``...).

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
    n = X.shape[0]
    ks = sorted({int(k) for k in k_range})
    if not ks:
        raise ValueError("k_range is empty")
    if ks[0] < 1:
        raise ValueError(f"numbers of components must be >= 1, got {ks[0]}")
    if ks[-1] > n:
        raise ValueError(f"K = {ks[-1]} exceeds the number of rows ({n})")
    if isinstance(covariance_types, str):
        types = list(COVARIANCE_TYPES) if covariance_types == "all" else [covariance_types]
    else:
        types = list(dict.fromkeys(covariance_types))
    if not types:
        raise ValueError("covariance_types is empty")
    for t in types:
        if t not in COVARIANCE_MODELS:
            raise ValueError(
                f"covariance_type must be one of {sorted(COVARIANCE_MODELS)} or 'all', got {t!r}"
            )
    for reserved in ("n_components", "covariance_type"):
        if reserved in params:
            raise TypeError(f"{reserved} is set by the grid, not by a parameter")
    params = {"random_state": random_state, **params}
    cells = [(k, t) for t in types for k in ks]
    work = float(n) * X.shape[1] * sum(ks) * len(types)
    jobs = _resolve_jobs(n_jobs, len(cells), work)
    results: dict[tuple[int, str], tuple[SelectionRow, GaussianMixture | None]] = {}
    if jobs == 1:
        for done, (k, t) in enumerate(cells, start=1):
            results[(k, t)] = _fit_cell(X, k, t, params, None, callback)
            if on_cell is not None:
                on_cell(results[(k, t)][0], done, len(cells))
    else:
        # biggest cells first, so a long one does not start last and run alone
        order = sorted(cells, key=lambda c: -c[0])
        for done, (row, est) in enumerate(_run_pool(X, order, params, jobs), start=1):
            results[(row.n_components, row.covariance_type)] = (row, est)
            if on_cell is not None:
                on_cell(row, done, len(cells))
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
