"""Distributed executor: one E-step task per block of a Dask array, summed by a tree reduction.

Per EM iteration the client builds a small graph: one task per row block computing that
block's :class:`~gaussmix._stats.SuffStats` under the current parameters, then sums of
``split_every`` statistics at a time until one is left. Only that sum (``K·d²`` numbers) comes
back to the client, which runs the M-step. The data is never computed or gathered: it is
persisted on the cluster once per fit (when a ``distributed`` client is in use), so later
passes read worker memory instead of re-reading the source.

Which scheduler runs the graph, first match wins:

1. ``scheduler=`` given to :class:`DaskExecutor` (an address such as
   ``"tcp://10.0.0.5:8786"`` or a :class:`distributed.Client`);
2. the active ``distributed`` client (``with Client(address): gm.fit(X)``);
3. dask's ``scheduler-address`` setting (environment variable ``DASK_SCHEDULER_ADDRESS``),
   to which one client per address is opened and kept for the process;
4. dask's local scheduler (threads); then nothing is persisted, each pass recomputes the
   blocks from their source, and memory stays bounded by the blocks in flight.

Lost workers are dask's business: their tasks (and any persisted blocks they held) are
recomputed elsewhere from the graph, and because the reduction tree is fixed by the graph the
sum, hence the fit, is the same bit for bit.

Initialisation pulls a uniform random sample of at most ``init_rows`` rows (default
:func:`~gaussmix.backends.stream.default_init_rows`): the client draws how many rows each
block contributes (sequential hypergeometric draws, so the sample is uniform without
replacement), each block task returns its share, and k-means runs on the sample. Data with no
more rows than that is pulled whole, in order, so that the fit starts like the in-memory fit.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gaussmix import _mixture
from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats
from gaussmix._validation import check_sample_weight, check_scale
from gaussmix.backends.stream import chunk_e_step, default_init_rows

__all__ = ["DaskExecutor", "predict_op"]

_SPLIT_EVERY = 8
_clients: dict[str, Any] = {}


def _rows(start: int, stop: int) -> str:
    return f"rows {start}-{stop - 1}" if stop > start + 1 else f"row {start}"


# ---------------------------------------------------------------------------------- tasks
def _check_block(X: NDArray, w: NDArray | None, start: int) -> None:
    # NaN marks a missing value (EM on the observed entries, as for arrays); infinity is refused
    if np.isinf(X).any():
        bad = start + int(np.flatnonzero(np.isinf(X).any(axis=1))[0])
        raise ValueError(
            f"Input X contains infinity in the block of {_rows(start, start + len(X))} "
            f"(first at row {bad})"
        )
    if w is not None and not (np.isfinite(w).all() and (w >= 0).all()):
        bad = start + int(np.flatnonzero(~(np.isfinite(w) & (w >= 0)))[0])
        raise ValueError(f"sample_weight must be finite and non-negative; row {bad} is not")
    # the in-memory limit on |x|: a Dask array is refused as the same rows in memory would be
    check_scale(X)


def _block_stats(
    X: NDArray, w: NDArray | None, params: MixtureParams, shift: NDArray, start: int
) -> SuffStats:
    """E-step of one block (runs on a worker)."""
    _check_block(X, w, start)
    # one thread per task: dask runs as many tasks at once as each worker has threads
    return chunk_e_step(X, w, params, shift, n_threads=1)


def _sum_stats(*stats: SuffStats) -> SuffStats:
    return sum(stats[1:], stats[0])


def _sample_block(
    X: NDArray, w: NDArray | None, size: int, seed: int, start: int
) -> tuple[NDArray, NDArray | None]:
    """``size`` distinct rows of a block, uniformly, in row order (runs on a worker)."""
    _check_block(X, w, start)
    rows = np.sort(np.random.RandomState(seed).choice(X.shape[0], size=size, replace=False))
    return np.array(X[rows]), None if w is None else np.array(w[rows])


def _whole_block(X: NDArray, w: NDArray | None, start: int) -> tuple[NDArray, NDArray | None]:
    _check_block(X, w, start)
    return np.array(X), None if w is None else np.array(w)


def _allocate(counts: list[int], size: int, rng: np.random.RandomState) -> list[int]:
    """How many of ``size`` rows drawn uniformly without replacement fall in each block.

    Block by block, the number taken from a block of ``c`` rows, with ``left`` rows after it
    and ``need`` still to draw, is hypergeometric(c, left, need); drawing that many rows of
    the block uniformly then gives every ``size``-subset of rows the same probability.
    """
    sizes, left, need = [], int(sum(counts)), int(size)
    for c in counts:
        left -= c
        if need == 0:
            take = 0
        elif left == 0:
            take = need  # the last blocks must supply the rest
        else:
            take = int(rng.hypergeometric(c, left, need))
        sizes.append(take)
        need -= take
    return sizes


# ---------------------------------------------------------------------------------- client
def _resolve_client(scheduler: Any) -> Any:
    """The ``distributed`` client to run on, or None for dask's local scheduler."""
    import dask

    if scheduler is None:
        try:
            from distributed import default_client
        except ImportError:
            return None
        try:
            return default_client()
        except ValueError:
            scheduler = dask.config.get("scheduler-address", None)
            if not scheduler:
                return None
    if not isinstance(scheduler, str):
        return scheduler  # a Client
    from distributed import Client

    client = _clients.get(scheduler)
    if client is None or client.status in ("closing", "closed"):
        try:
            client = Client(scheduler, set_as_default=False, timeout="20s")
        except OSError as exc:
            raise OSError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        _clients[scheduler] = client
    return client


# ---------------------------------------------------------------------------------- inputs
def _as_feature_array(X: Any, sample_weight: Any) -> tuple[Any, Any, list[str] | None]:
    """``(2-D dask array, weights or None, column names)`` from a Dask array or DataFrame."""
    import dask.array as da
    import dask.dataframe as dd

    names = None
    if isinstance(X, dd.Series):
        raise ValueError("expected a 2-D Dask array or a DataFrame, got a Series; use .to_frame()")
    if isinstance(X, dd.DataFrame):
        columns = list(X.columns)
        if isinstance(sample_weight, str):
            if sample_weight not in columns:
                raise ValueError(
                    f"sample_weight column {sample_weight!r} is not in the DataFrame; "
                    f"columns: {columns}"
                )
            columns.remove(sample_weight)
            sample_weight = X[sample_weight]
        bad = [f"{c} ({X.dtypes[c]})" for c in columns if X.dtypes[c].kind not in "biuf"]
        if bad:
            raise TypeError(f"the DataFrame has non-numeric columns: {', '.join(bad)}")
        if not columns:
            raise ValueError("the DataFrame has no feature columns")
        # as scikit-learn does for DataFrames: names are kept when they are all strings
        names = list(columns) if all(isinstance(c, str) for c in columns) else None
        # lengths=True counts the rows of each partition (one number per partition comes back)
        arr = X[columns].to_dask_array(lengths=True)
        if isinstance(sample_weight, dd.Series):
            sample_weight = sample_weight.to_dask_array(lengths=True)
        return arr, sample_weight, names
    if isinstance(X, np.ndarray) and X.ndim == 2:
        # an in-memory array given to this engine (engine="dask"): the same EM over it in
        # blocks, so callers need not know which engines read which sources
        X = da.from_array(X, chunks=(max(1024, -(-X.shape[0] // 8)), -1))
    if not isinstance(X, da.Array):
        raise TypeError(
            f"the dask engine needs a dask.array.Array, dask.dataframe.DataFrame or 2-D "
            f"numpy array, got {type(X).__name__}"
        )
    if isinstance(sample_weight, str):
        raise ValueError(
            f"sample_weight={sample_weight!r} names a column, but X is an array; pass the "
            "weights as an array"
        )
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got {X.ndim}D array of shape {X.shape} instead")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"X must be numeric, got dtype {X.dtype}")
    if any(np.isnan(c) for c in X.chunks[0]):
        X = X.compute_chunk_sizes()
    return X, sample_weight, names


def _align_weights(sample_weight: Any, X: Any) -> Any:
    import dask.array as da

    if sample_weight is None:
        return None
    n = X.shape[0]
    if isinstance(sample_weight, da.Array):
        if sample_weight.dtype.kind not in "biuf":
            raise TypeError(f"sample_weight must be numeric, got dtype {sample_weight.dtype}")
        if sample_weight.ndim != 1 or sample_weight.shape[0] != n:
            raise ValueError(
                f"sample_weight must have shape ({n},) to match X, got {sample_weight.shape}"
            )
        return sample_weight.astype(np.float64).rechunk((X.chunks[0],))
    w = check_sample_weight(sample_weight, n)
    return da.from_array(w, chunks=(X.chunks[0],))


# ---------------------------------------------------------------------------------- executor
class DaskExecutor:
    """E-step as one task per row block of a Dask collection, combined by a tree reduction.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features) or dask.dataframe.DataFrame
        Numeric data; a DataFrame's columns are the features (its row partitions the blocks).
        Column blocks of an array are merged so that every block holds whole rows.
    sample_weight : array-like or dask array of shape (n_samples,), str, or None
        Row weights: a numpy or Dask array (rechunked to match X's blocks), or the name of a
        DataFrame column holding them (that column is then not a feature). None: all ones.
    chunk_size : int, optional
        Rows per block; None keeps X's own blocks.
    device : None or "cpu"
        The workers run on their CPUs.
    dtype : {None, "float32", "float64"}
        Working precision; None: float32 data stays float32, anything else becomes float64.
    scheduler : str or distributed.Client, optional
        Where to run (see the module docstring for the default).
    init_rows : int, optional
        Rows sampled for initialisation (default
        :func:`~gaussmix.backends.stream.default_init_rows`).
    split_every : int, default=8
        Fan-in of the reduction tree.

    Attributes
    ----------
    n_samples, n_features : int
    dtype : numpy.dtype
    client : distributed.Client or None
    feature_names : list of str or None
        DataFrame column names of the features.
    """

    def __init__(
        self,
        X: Any,
        sample_weight: Any = None,
        *,
        chunk_size: int | None = None,
        device: str | None = None,
        dtype: str | np.dtype | None = None,
        scheduler: Any = None,
        init_rows: int | None = None,
        split_every: int = _SPLIT_EVERY,
    ) -> None:
        if device not in (None, "cpu"):
            raise ValueError(f"the dask engine runs on the workers' CPUs, got device={device!r}")
        if split_every < 2:
            raise ValueError(f"split_every must be >= 2, got {split_every}")
        X, sample_weight, self.feature_names = _as_feature_array(X, sample_weight)
        if dtype is None:
            self.dtype = np.dtype(np.float32 if X.dtype == np.float32 else np.float64)
        else:
            self.dtype = np.dtype(dtype)
            if self.dtype not in (np.float32, np.float64):
                raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        X = X.astype(self.dtype)
        if X.numblocks[1] > 1 or chunk_size is not None:
            X = X.rechunk({0: chunk_size or X.chunks[0], 1: -1})
        self.n_samples, self.n_features = (int(s) for s in X.shape)
        if self.n_samples == 0 or self.n_features == 0:
            raise ValueError(f"X is empty: shape {X.shape}")
        w = _align_weights(sample_weight, X)
        self.client = _resolve_client(scheduler)
        if self.client is not None:
            # once per fit: later passes read the blocks from worker memory
            X = self.client.persist(X)
            w = None if w is None else self.client.persist(w)
        self.X, self.sample_weight = X, w
        self.init_rows = init_rows
        self.split_every = int(split_every)
        self.starts = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]]).astype(int).tolist()
        self._x_blocks = X.to_delayed().ravel().tolist()
        self._w_blocks = (
            [None] * len(self._x_blocks) if w is None else w.to_delayed().ravel().tolist()
        )

    def _compute(self, obj: Any) -> Any:
        if self.client is not None:
            return self.client.compute(obj, sync=True)
        import dask

        return dask.compute(obj)[0]

    def _tree_sum(self, parts: list) -> Any:
        from dask import delayed

        while len(parts) > 1:
            parts = [
                delayed(_sum_stats, pure=True)(*parts[i : i + self.split_every])
                for i in range(0, len(parts), self.split_every)
            ]
        return parts[0]

    def e_step(self, params: MixtureParams, *, shift: NDArray | None = None) -> SuffStats:
        """Summed statistics of all blocks under ``params``, computed on the cluster."""
        from dask import delayed

        shift = params.means if shift is None else np.asarray(shift, dtype=np.float64)
        token = uuid.uuid4().hex
        # one key each for the parameters and the shift, shared by every block task
        params_d = delayed(params, name=f"gaussmix-params-{token}", traverse=False)
        shift_d = delayed(shift, name=f"gaussmix-shift-{token}", traverse=False)
        parts = [
            delayed(_block_stats, pure=True)(xb, wb, params_d, shift_d, start)
            for xb, wb, start in zip(self._x_blocks, self._w_blocks, self.starts, strict=True)
        ]
        total = self._compute(self._tree_sum(parts))
        if total.weight_sum <= 0:
            raise ValueError("the sample weights are all zero")
        return total

    def init_data(
        self, max_rows: int | None, rng: np.random.RandomState
    ) -> tuple[NDArray, NDArray | None]:
        """A uniform sample of at most ``max_rows`` rows in row order, with their weights.

        Parameters
        ----------
        max_rows : int or None
            Sample size (None: ``init_rows`` or the default).
        rng : numpy.random.RandomState
            Not used when all rows fit in the sample.

        Returns
        -------
        X : ndarray of shape (n_rows, n_features)
        weights : ndarray of shape (n_rows,) or None
        """
        from dask import delayed

        if max_rows is None:
            max_rows = self.init_rows or default_init_rows(self.n_features)
        counts = [int(c) for c in self.X.chunks[0]]
        if self.n_samples <= max_rows:
            tasks = [
                delayed(_whole_block, pure=True)(xb, wb, start)
                for xb, wb, start in zip(self._x_blocks, self._w_blocks, self.starts, strict=True)
            ]
        else:
            sizes = _allocate(counts, max_rows, rng)
            seeds = rng.randint(0, 2**31 - 1, size=len(counts))
            tasks = [
                delayed(_sample_block, pure=True)(xb, wb, size, int(seed), start)
                for xb, wb, size, seed, start in zip(
                    self._x_blocks, self._w_blocks, sizes, seeds, self.starts, strict=True
                )
                if size
            ]
        pieces = self._compute(tasks)
        X = np.concatenate([p[0] for p in pieces]).astype(self.dtype, copy=False)
        w = None if self.sample_weight is None else np.concatenate([p[1] for p in pieces])
        # rows with an observed value, as the in-memory fit starts from (missing values)
        from gaussmix._missing import drop_unobserved

        exact = self.n_samples <= max_rows
        try:
            X, w, n_empty = drop_unobserved(X, w, self.feature_names)
        except ValueError as exc:
            where = "" if exact else " (in the sample drawn for initialisation)"
            raise ValueError(f"{exc}{where}") from None
        if n_empty and exact:
            warnings.warn(
                f"{n_empty} rows of X have no observed value (all NaN): they are left out of "
                "the fit",
                UserWarning,
                stacklevel=2,
            )
        return X, w


# ---------------------------------------------------------------------------------- predict
def _predict_block(X: NDArray, params: MixtureParams, op: str, block_info=None) -> NDArray:
    if np.isinf(X).any():  # NaN entries are missing values: marginal densities
        where = ""
        if block_info is not None and 0 in block_info:
            first = block_info[0]["array-location"][0][0]
            # a DataFrame's partitions have unknown lengths: name the block instead
            where = (
                f" in the block of {_rows(int(first), int(first) + len(X))}"
                if np.isfinite(first)
                else f" in row block {block_info[0]['chunk-location'][0]}"
            )
        raise ValueError(f"Input X contains infinity{where}")
    return getattr(_mixture, op)(params, X)


def predict_op(estimator: Any, X: Any, op: str) -> Any:
    """Row-wise ``op`` of a fitted estimator on Dask input, as a lazy Dask array.

    Parameters
    ----------
    estimator : GaussianMixture
        Fitted.
    X : dask.array.Array of shape (n_samples, n_features) or dask.dataframe.DataFrame
    op : {"log_joint", "score_samples", "predict_proba", "predict"}

    Returns
    -------
    out : dask.array.Array
        Shape ``(n_samples,)`` or ``(n_samples, n_components)``, one block per row block of
        ``X``; nothing is computed until you ask.
    """
    import dask.array as da
    import dask.dataframe as dd

    if isinstance(X, dd.DataFrame):
        fitted = getattr(estimator, "feature_names_in_", None)
        given = list(X.columns)
        if fitted is not None and given != list(fitted):
            # scikit-learn's rule for DataFrames: same names, same order
            raise ValueError(
                f"The feature names should match those that were passed during fit: fitted "
                f"on {list(fitted)}, got {given}; select them with X[{list(fitted)}]"
            )
        bad = [f"{c} ({X.dtypes[c]})" for c in X.columns if X.dtypes[c].kind not in "biuf"]
        if bad:
            raise TypeError(f"the DataFrame has non-numeric columns: {', '.join(bad)}")
        X = X.to_dask_array()
    if not isinstance(X, da.Array):
        raise TypeError(f"expected a Dask array or DataFrame, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got {X.ndim}D array instead")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"X must be numeric, got dtype {X.dtype}")
    if X.shape[1] != estimator.n_features_in_:
        raise ValueError(
            f"X has {X.shape[1]} features, but GaussianMixture is expecting "
            f"{estimator.n_features_in_} features as input"
        )
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    params = estimator._fitted_params()
    K = params.n_components
    probe = getattr(_mixture, op)(params, np.zeros((1, X.shape[1]), dtype=X.dtype))
    if probe.ndim == 1:
        return X.map_blocks(_predict_block, params=params, op=op, dtype=probe.dtype, drop_axis=1)
    return X.map_blocks(
        _predict_block, params=params, op=op, dtype=probe.dtype, chunks=(X.chunks[0], (K,))
    )
