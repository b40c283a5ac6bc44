"""mclust's grid of models × K, fitted as a batch of compiled cell fits.

Every cell of the grid starts from partitions of the rows: the hierarchical clustering's cut
at its K, k-means++ seedings (the rows nearest each seed: what scikit-learn's k-means++ start
becomes after its first E-step) and, once every cell has a fit, the classifications of the
best few models of the same K (a constrained model often misses an optimum that another model
of its K found). Each (cell, partition) pair is one call of :func:`gaussmix._small.fit_cell`:
start, EM and the end (log-likelihood, ICL's term, the classification, mclust's NA tests)
without a numpy call, so the hundreds of fits of a grid on a few hundred rows cost their
arithmetic, and the calls run in threads (they release the GIL).

Large data: the search above runs on a uniform subsample of :data:`SEARCH_ROWS` rows, and each
cell's best fit there is refined by EM on all rows from its parameters (one fit per cell,
which from a start that close converges in a few iterations). mclust itself fits every cell
once on all rows, from a tree built on a 2000-row subset.

Maths and scheduling only: no estimator, no I/O (``gaussmix.selection`` builds the table).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gaussmix._covariance import get_model
from gaussmix._small import (
    FIT_EMPTY,
    FIT_USABLE,
    NON_FINITE,
    OK,
    CellFit,
    fit_cell,
    kernel_array,
)

__all__ = ["LABEL_STARTS", "SEARCH_ROWS", "Cell", "fit_grid", "same_partition"]

#: starts the grid can express as partitions of the rows
LABEL_STARTS = frozenset({"hc", "k-means++", "kmeans"})
#: rows of the subsample the starts are searched on (all rows up to this many)
SEARCH_ROWS = 2000
# the search on a subsample stops at this many times the tolerance (the refit converges)
SEARCH_TOL_FACTOR = 10.0
# the best few classifications of each K restart that K's other cells
CROSS_SOURCES = 3
# above SEARCH_ROWS, each cell is refitted on all rows from its best search fit, or from the
# next of up to this many (distinct classifications) when the refit fails. Measured on the
# benchmark's 10 000 x 4 mixture against mclust: refitting the best one reached 107 of 126
# cells within 0.5 BIC units, the best two 108 (for twice the refit time), a further round
# of cross-starts on all rows 109-111 (for 1.2-2.6 s more); at 100 000 x 4, the best three
# 106 against 103 (12.1 s against 4.5 s). The misses are local optima at K above the true
# K, where mclust's single start and ours each win some (ours more: 48 cells better by more
# than 10 units, 19 worse)
REFIT_CANDIDATES = 2
# inner iterations per M-step of the iterative models (generalised EM): uncapped, a nearly
# singular VVE/EVE component took the MM loop's 300 steps in every EM iteration (1.5 s for
# one banknote fit); with 10 every mclust cell of the six fixture data sets is still reached
INNER_MAX_ITER = 10
# and their relative tolerance: mclust's (emControl's tol[2], sqrt(eps))
INNER_TOL = float(np.sqrt(np.finfo(np.float64).eps))


@dataclass
class Cell:
    """The outcome of one grid cell: its best usable fit, or why it has none."""

    n_components: int
    model: str
    n_parameters: int
    fit: CellFit | None = None
    reason: str | None = None


def same_partition(a: NDArray, b: NDArray) -> bool:
    """Whether two labellings are the same partition (up to renaming the groups)."""
    a = np.asarray(a, dtype=np.intp)
    b = np.asarray(b, dtype=np.intp)
    if a.shape != b.shape:
        return False
    if a.size == 0:
        return True
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    used = lambda v, m: int(np.count_nonzero(np.bincount(v, minlength=m)))  # noqa: E731
    # the same partition iff every group of one meets exactly one group of the other
    return used(a * kb + b, ka * kb) == used(a, ka) == used(b, kb)


def _nearest(X: NDArray, centres: NDArray) -> NDArray:
    d2 = (
        np.einsum("ij,ij->i", X, X)[:, None]
        - 2.0 * X @ centres.T
        + np.einsum("ij,ij->i", centres, centres)[None, :]
    )
    return np.argmin(d2, axis=1)


def label_starts(
    X: NDArray,
    w: NDArray | None,
    ks: Sequence[int],
    starts: Sequence[str],
    n_init: int,
    seed,
) -> dict[int, list[NDArray]]:
    """The distinct seeded starting partitions of every K (k-means++, kmeans).

    Each K draws its seedings from its own ``RandomState(seed)``, in the order of
    ``starts`` repeated ``n_init`` times, so every model of a K starts from the same ones.
    """
    from gaussmix._init import kmeans, kmeans_plusplus

    out: dict[int, list[NDArray]] = {}
    for k in ks:
        sets: list[NDArray] = []
        rng = np.random.RandomState(seed)
        for _ in range(max(int(n_init), 1)):
            for start in starts:
                if start == "k-means++":
                    _, idx = kmeans_plusplus(X, k, sample_weight=w, random_state=rng)
                    labels = _nearest(X, X[idx])
                elif start == "kmeans":
                    labels, _ = kmeans(X, k, sample_weight=w, random_state=rng)
                else:
                    continue
                labels = np.asarray(labels, dtype=np.intp)
                if not any(same_partition(labels, s) for s in sets):
                    sets.append(labels)
        out[k] = sets
    return out


def _cost(task) -> float:
    k, model = task[0], task[1]
    # an iterative M-step (its inner loop) makes a model's iterations the dearest
    return k * (4.0 if get_model(model).iterative else 1.0)


def _reason(fit: CellFit, reg_covar: float) -> str:
    if fit.status == NON_FINITE:
        return "the log-likelihood became non-finite"
    if fit.status != OK:
        return f"component {fit.component} has a singular covariance (reg_covar={reg_covar:g})"
    if fit.degenerate == FIT_EMPTY:
        return f"component {fit.component} is empty (mixing proportion below threshold)"
    return f"component {fit.component} has a singular covariance (held up only by reg_covar)"


def _usable(fit: CellFit) -> bool:
    return fit.status == OK and fit.degenerate == FIT_USABLE and np.isfinite(fit.log_likelihood)


def fit_grid(
    X: NDArray,
    w: NDArray | None,
    ks: Sequence[int],
    models: Sequence[str],
    *,
    starts: Sequence[str],
    n_init: int,
    seed,
    hc_partitions: Callable[[NDArray, NDArray | None], dict[int, NDArray]],
    reg_covar: float,
    tol: float,
    rel_tol: float,
    max_iter: int,
    threads: int | None = None,
    cross: bool = True,
    on_cell: Callable[[Cell, int, int], None] | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[tuple[int, str], Cell]:
    """Fit every (K, model) cell of mclust's models and keep each cell's best usable fit.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Finite float64 data.
    w : ndarray of shape (n_samples,) or None
        Row weights.
    ks, models : sequences
        The grid (models: mclust's names).
    starts, n_init, seed :
        Starting partitions ("hc" and :func:`label_starts`'s).
    hc_partitions : callable
        ``hc_partitions(rows, weights) -> {K: labels}`` for the rows the search runs on.
    reg_covar, tol, rel_tol, max_iter :
        EM settings (see :func:`gaussmix._small.fit_cell`).
    threads : int, optional
        Threads running fits (default: the cores).
    cross : bool, default=True
        Restart each K's cells from its best few classifications.
    on_cell : callable, optional
        ``on_cell(cell, done, total)`` as cells get their final fit.
    on_progress : callable, optional
        ``on_progress(stage, done, total)`` as the fits of a stage end ("search",
        "cross-starts", "refit on all rows").

    Returns
    -------
    cells : dict
        ``(K, model) -> Cell``.
    """
    n, d = X.shape
    threads = max(1, int(threads or os.cpu_count() or 1))
    weights = np.ones(n) if w is None else kernel_array(w)
    cells: dict[tuple[int, str], Cell] = {}
    for model in models:
        for k in ks:
            n_par = get_model(model).n_parameters(k, d) + k * d + k - 1
            cell = Cell(k, model, n_par)
            if n_par > n * d:
                cell.reason = f"more free parameters ({n_par}) than data values ({n * d})"
            cells[(k, model)] = cell
    open_cells = [c for c in cells.values() if c.reason is None]

    # the search: on all rows, or on a uniform subsample of large data (large enough for
    # about 10 d rows per component at the largest K, so that wide data do not turn the
    # search's fits singular where all rows would carry them)
    search_rows = max(SEARCH_ROWS, 10 * d * max(ks))
    if n > search_rows:
        rng = np.random.RandomState(seed)
        keep = np.sort(rng.choice(n, search_rows, replace=False))
        Xs, ws = np.ascontiguousarray(X[keep]), weights[keep]
    else:
        Xs, ws = X, weights
    ws_or_none = None if w is None else ws
    fits: dict[tuple[int, str], list[CellFit]] = {key: [] for key in cells}
    reasons: dict[tuple[int, str], list[str]] = {key: [] for key in fits}
    pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    # set when this thread stops the grid (an error, Ctrl-C, a signal turned into an
    # exception): running fits end at their next iteration instead of running to the end
    stop = np.zeros(1, dtype=np.uint8)

    def run(task):
        k, model, labels, start, data, dw = task
        # a subsample's search only ranks starts: the refit on all rows converges them
        loose = SEARCH_TOL_FACTOR if data is not X else 1.0
        return task, fit_cell(data, dw, model, k, labels=labels, start=start,
                              reg_covar=reg_covar, tol=tol * loose, rel_tol=rel_tol * loose,
                              max_iter=max_iter, inner_max_iter=INNER_MAX_ITER,
                              inner_tol=INNER_TOL, stop=stop)  # fmt: skip

    def submit(tasks):
        tasks = sorted(tasks, key=_cost, reverse=True)
        if pool is None:
            return [_Done(run(t)) for t in tasks]
        return [pool.submit(run, t) for t in tasks]

    def finish(futures, stage):
        """The futures' results, reporting progress as each ends."""
        total = len(futures)
        if on_progress is None or pool is None:
            out = []
            for done, f in enumerate(futures, start=1):
                out.append(f.result())
                if on_progress is not None:
                    on_progress(stage, done, total)
            return out
        for done, _ in enumerate(as_completed(futures), start=1):
            on_progress(stage, done, total)
        # in submission order, whatever the order they ended in: the same grid every time
        return [f.result() for f in futures]

    def execute(tasks, stage):
        return finish(submit(tasks), stage)

    def keep_best(outcomes):
        for (k, model, *_), fit in outcomes:
            if _usable(fit):
                fits[(k, model)].append(fit)
            else:
                reasons[(k, model)].append(_reason(fit, reg_covar))

    try:
        # phase 1: every cell from every starting partition; the hierarchical tree (compiled,
        # GIL released) grows while the seeded starts' fits already run
        hc_future = None
        if pool is not None and "hc" in starts:
            hc_future = pool.submit(hc_partitions, Xs, ws_or_none)
        seeded_starts = [st for st in starts if st != "hc"]
        seeded = label_starts(Xs, ws_or_none, ks, seeded_starts, n_init, seed)
        pending = submit([(c.n_components, c.model, labels, None, Xs, ws)
                          for c in open_cells for labels in seeded[c.n_components]])  # fmt: skip
        if "hc" in starts:
            hc = hc_future.result() if hc_future is not None else hc_partitions(Xs, ws_or_none)
            tasks = []
            for k, labels in hc.items():
                labels = np.asarray(labels, dtype=np.intp)
                if k in seeded and any(same_partition(labels, o) for o in seeded[k]):
                    continue
                tasks += [(k, c.model, labels, None, Xs, ws)
                          for c in open_cells if c.n_components == k]  # fmt: skip
            pending += submit(tasks)
        keep_best(finish(pending, "search"))
        best = {key: max(v, key=lambda f: f.log_likelihood) for key, v in fits.items() if v}

        # phase 2: each K's cells from the classifications of its best few models
        if cross:
            keep_best(execute(_cross_tasks(ks, models, cells, open_cells, best, Xs, ws,
                                            CROSS_SOURCES), "cross-starts"))  # fmt: skip
            best = {key: max(v, key=lambda f: f.log_likelihood) for key, v in fits.items() if v}

        # phase 3 (subsampled search): refit each cell on all rows from its best search fit
        # (from the next one, of another classification, if that one fails there)
        if Xs is not X:
            candidates: dict[tuple[int, str], list[CellFit]] = {}
            for key, found in fits.items():
                chosen: list[CellFit] = []
                for f in sorted(found, key=lambda f: -f.log_likelihood):
                    if not any(same_partition(f.labels, g.labels) for g in chosen):
                        chosen.append(f)
                    if len(chosen) == REFIT_CANDIDATES:
                        break
                candidates[key] = chosen
            refined: dict[tuple[int, str], CellFit] = {}
            for round_ in range(REFIT_CANDIDATES):
                tasks = [(k, model, None, (c[round_].weights, c[round_].means,
                                           c[round_].covariances), X, weights)
                         for (k, model), c in candidates.items()
                         if len(c) > round_ and (k, model) not in refined]  # fmt: skip
                for (k, model, *_), fit in execute(tasks, "refit on all rows"):
                    if _usable(fit):
                        refined[(k, model)] = fit
                    else:
                        reasons[(k, model)].append(_reason(fit, reg_covar))
            best = refined
    except BaseException:
        stop[0] = 1
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    for done, (key, cell) in enumerate(cells.items(), start=1):
        if cell.reason is None:
            if key in best:
                cell.fit = best[key]
            else:
                cell.reason = reasons[key][0] if reasons[key] else "no start could be fitted"
        if on_cell is not None:
            on_cell(cell, done, len(cells))
    return cells


class _Done:
    """A finished result with a future's ``result()`` (fits run here, without a pool)."""

    def __init__(self, value) -> None:
        self.value = value

    def result(self):
        return self.value


def _cross_tasks(ks, models, cells, open_cells, best, Xs, ws, sources) -> list[tuple]:
    tasks = []
    for k in ks:
        ranked = sorted(
            (m for m in models if (k, m) in best),
            # BIC on the search rows
            key=lambda m: cells[(k, m)].n_parameters * np.log(ws.sum())
            - 2.0 * best[(k, m)].log_likelihood,
        )
        if k == 1 or not ranked:
            continue
        seeds: list[NDArray] = []
        for source in ranked[:sources]:
            labels = best[(k, source)].labels
            if np.unique(labels[ws > 0]).size == k and not any(
                same_partition(labels, s) for s in seeds
            ):
                seeds.append(labels)
        for labels in seeds:
            for c in open_cells:
                if c.n_components != k:
                    continue
                own = best.get((k, c.model))
                if own is not None and same_partition(labels, own.labels):
                    continue
                tasks.append((k, c.model, labels.copy(), None, Xs, ws))
    return tasks
