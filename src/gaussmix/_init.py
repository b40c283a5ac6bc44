"""Initial parameters: k-means, k-means++, random responsibilities, random data points, and
mclust's model-based hierarchical clustering ("hc").

All methods work on rows in memory (the whole data, or a sample that a streaming or Dask
executor hands over) and honour sample weights. For "kmeans" and "k-means++" an integer weight
w behaves exactly like w repeated rows, whatever the row order: every random draw over rows is
an inverse-CDF draw on cumulative weights taken in a canonical order of the rows (sorted by a
hash of their bits), so the same uniform number picks the same point whether it is weighted,
repeated or shuffled. "random" and "random_from_data" draw per row and have no such property.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from gaussmix._covariance import CovarianceModel
from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats, accumulate, m_step

__all__ = ["INIT_METHODS", "initial_params", "kmeans", "kmeans_plusplus"]

_CHUNK = 65536
# above this many rows k-means runs on a hashed sample first, then polishes on every row
_SAMPLE_ABOVE = 1 << 17
_SAMPLE_ROWS = 1 << 14  # at least; 256 per cluster
_POLISH_ITER = 3
_FAST_MIN_ROWS = 4096  # gaussmix.backends.cpu.MIN_ROWS


def _usable(kernels, n_rows: int):
    """``kernels`` (compiled k-means steps) where they pay off, else None:
    fewer rows than the compiled engine handles stay on numpy and never load numba."""
    return kernels if kernels is not None and n_rows >= _FAST_MIN_ROWS else None


def _weights(X: NDArray, sample_weight: NDArray | None) -> NDArray:
    if sample_weight is None:
        return np.ones(X.shape[0])
    return np.asarray(sample_weight, dtype=np.float64)


def _draw_rows(cum_weights: NDArray, u: NDArray) -> NDArray:
    """Positions whose cumulative-weight interval holds ``u`` (inverse-CDF sampling)."""
    idx = np.searchsorted(cum_weights, u, side="right")
    return np.minimum(idx, cum_weights.shape[0] - 1)


# odd 64-bit multipliers of the row hash (fixed: the order must not depend on a seed)
_HASH_MULT = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93],
    dtype=np.uint64,
)


def canonical_order(X: NDArray) -> NDArray:
    """A permutation that sorts rows by a hash of their values.

    Identical rows get identical hashes, hence end up next to each other, and the order does
    not depend on where the rows were in ``X``: draws made along this order are invariant to
    shuffling and to replacing a weighted row by repeated copies.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)

    Returns
    -------
    order : ndarray of shape (n_samples,)
    """
    h = np.zeros(X.shape[0], dtype=np.uint64)
    for j in range(X.shape[1]):
        # one column at a time: no copy of X; + 0.0 maps -0.0 to 0.0 so equal values hash equal
        bits = (X[:, j].astype(np.float64) + 0.0).view(np.uint64)
        h ^= bits * _HASH_MULT[j % 4] + np.uint64(j)
        h ^= h >> np.uint64(29)
        h *= _HASH_MULT[(j + 1) % 4]
    return np.argsort(h, kind="stable")


def _sq_dist_to(X: NDArray, center: NDArray) -> NDArray:
    diff = X - center
    return np.einsum("ij,ij->i", diff, diff)


def kmeans_plusplus(
    X: NDArray,
    n_clusters: int,
    *,
    sample_weight: NDArray | None = None,
    random_state: np.random.RandomState,
    n_local_trials: int | None = None,
) -> tuple[NDArray, NDArray]:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007), weighted.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    n_clusters : int
    sample_weight : ndarray of shape (n_samples,), optional
    random_state : numpy.random.RandomState
    n_local_trials : int, optional
        Candidates tried per centre (default ``2 + int(log(n_clusters))``).

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features)
    indices : ndarray of shape (n_clusters,)
        Rows chosen as centres.
    """
    w = _weights(X, sample_weight)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    X64 = X.astype(np.float64, copy=False)
    order = canonical_order(X64)
    cum = np.cumsum(w[order])
    first = int(order[_draw_rows(cum, random_state.uniform(0, cum[-1], size=1))[0]])
    indices = [first]
    closest = _sq_dist_to(X64, X64[first])
    potential = float(w @ closest)
    for _ in range(1, n_clusters):
        if potential <= 0:
            # every row coincides with a centre: repeat one (k-means will empty it)
            indices.append(first)
            continue
        cum = np.cumsum((w * closest)[order])
        u = random_state.uniform(0, cum[-1], size=n_local_trials)
        candidates = order[_draw_rows(cum, u)]
        best_pot, best_idx, best_dist = np.inf, -1, closest
        for c in candidates:
            dist = np.minimum(closest, _sq_dist_to(X64, X64[c]))
            pot = float(w @ dist)
            if pot < best_pot:
                best_pot, best_idx, best_dist = pot, int(c), dist
        indices.append(best_idx)
        closest, potential = best_dist, best_pot
    idx = np.asarray(indices)
    return X64[idx].copy(), idx


def _assign(X: NDArray, centers: NDArray) -> tuple[NDArray, NDArray]:
    """Nearest centre and squared distance of each row (chunked GEMM form)."""
    labels = np.empty(X.shape[0], dtype=np.intp)
    dist = np.empty(X.shape[0])
    c_sq = np.einsum("ij,ij->i", centers, centers)
    for s in range(0, X.shape[0], _CHUNK):
        Xc = X[s : s + _CHUNK].astype(np.float64, copy=False)
        d = c_sq - 2.0 * Xc @ centers.T
        lab = np.argmin(d, axis=1)
        labels[s : s + _CHUNK] = lab
        dist[s : s + _CHUNK] = np.maximum(
            d[np.arange(d.shape[0]), lab] + np.einsum("ij,ij->i", Xc, Xc), 0.0
        )
    return labels, dist


def _assign_sums(X, w, centers, fast):
    """Nearest centre, its squared distance, and the weighted sums of the next update."""
    if fast is not None:
        return fast.assign_sums(X, w, centers)
    labels, dist = _assign(X, centers)
    K = centers.shape[0]
    counts = np.bincount(labels, weights=w, minlength=K)
    sums = np.empty_like(centers)
    for j in range(X.shape[1]):
        sums[:, j] = np.bincount(labels, weights=w * X[:, j], minlength=K)
    return labels, dist, sums, counts


def kmeans(
    X: NDArray,
    n_clusters: int,
    *,
    sample_weight: NDArray | None = None,
    random_state: np.random.RandomState,
    max_iter: int = 300,
    tol: float = 1e-4,
    kernels=None,
) -> tuple[NDArray, NDArray]:
    """Lloyd's k-means from a k-means++ seeding, weighted.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    n_clusters : int
    sample_weight : ndarray of shape (n_samples,), optional
    random_state : numpy.random.RandomState
    max_iter : int, default=300
    tol : float, default=1e-4
        Stop when the centres move less than ``tol`` times the mean feature variance
        (scikit-learn's convention).
    kernels : module, optional
        Compiled k-means steps (``gaussmix.backends.cpu.kmeans_kernels()``): with them, more
        than 131 072 rows are clustered on a hashed sample first, then polished on all rows.

    Returns
    -------
    labels : ndarray of shape (n_samples,)
    centers : ndarray of shape (n_clusters, n_features)
    """
    w = _weights(X, sample_weight)
    fast = _usable(kernels, X.shape[0])
    n_iter = max_iter
    keep = None
    if fast is not None and X.shape[0] > _SAMPLE_ABOVE:
        # a sample gets the centres to within sampling error at a fraction of the cost; the
        # hash-keyed sample keeps weights-as-repeats and row-order invariance
        keep = fast.sample_mask(X, w, max(_SAMPLE_ROWS, 256 * n_clusters), random_state)
    if keep is not None and np.count_nonzero(keep) >= n_clusters:
        # many small BLAS calls on the sample: extra BLAS threads would only wait
        with fast.single_threaded_blas():
            _, centers = kmeans(
                X[keep],
                n_clusters,
                sample_weight=w[keep],
                random_state=random_state,
                max_iter=max_iter,
                tol=tol,
                kernels=kernels,
            )
        n_iter = min(max_iter, _POLISH_ITER)
    else:
        centers, _ = kmeans_plusplus(X, n_clusters, sample_weight=w, random_state=random_state)
    X64 = X.astype(np.float64, copy=False)
    if fast is not None:
        var = fast.mean_variance(X, w)[1]
    else:
        mean = w @ X64 / w.sum()
        # column by column: no (n_samples, n_features) temporary
        var = [w @ (X64[:, j] - mean[j]) ** 2 / w.sum() for j in range(X.shape[1])]
    tol_abs = tol * float(np.mean(var))
    labels, dist, sums, counts = _assign_sums(X, w, centers, fast)
    for _ in range(n_iter):
        new = centers.copy()
        nonempty = counts > 0
        new[nonempty] = sums[nonempty] / counts[nonempty, None]
        # an empty cluster takes the row farthest from its centre
        for k in np.flatnonzero(~nonempty):
            far = int(np.argmax(dist * (w > 0)))
            new[k] = X64[far]
            dist[far] = 0.0
        shift = float(np.sum((new - centers) ** 2))
        centers = new
        new_labels, dist, sums, counts = _assign_sums(X, w, centers, fast)
        if np.array_equal(new_labels, labels) or shift <= tol_abs:
            labels = new_labels
            break
        labels = new_labels
    return labels, centers


def _params_from_resp(
    X: NDArray,
    w: NDArray | None,
    resp_chunk: Callable[[int, int], NDArray],
    n_components: int,
    model: CovarianceModel,
    reg_covar: float,
) -> MixtureParams:
    """M-step on responsibilities produced chunk by chunk (no N × K array kept)."""
    ww = _weights(X, w)
    # one pass around the weighted data mean: enough digits for a starting point
    centre = ww @ X.astype(np.float64, copy=False) / ww.sum()
    shift = np.broadcast_to(centre, (n_components, X.shape[1])).copy()
    total = SuffStats.zeros(shift, model.moment)
    for s in range(0, X.shape[0], _CHUNK):
        stop = min(s + _CHUNK, X.shape[0])
        r = resp_chunk(s, stop) * ww[s:stop, None]
        nk, sx, sxx = accumulate(X[s:stop], r, shift, model.moment)
        total = total + SuffStats(shift, nk, sx, sxx, 0.0, float(ww[s:stop].sum()), stop - s)
    return m_step(total, model, reg_covar)


def _from_labels(X, w, labels, K, model, reg_covar, kernels=None):
    fast = _usable(kernels, X.shape[0])
    if fast is not None:
        # one compiled pass instead of one-hot responsibilities; same shift as below
        ww = _weights(X, w)
        centre = ww @ X.astype(np.float64, copy=False) / ww.sum()
        shift = np.broadcast_to(centre, (K, X.shape[1])).copy()
        return m_step(fast.label_stats(X, w, labels, shift, model.moment), model, reg_covar)

    def resp(s, e):
        out = np.zeros((e - s, K))
        out[np.arange(e - s), labels[s:e]] = 1.0
        return out

    return _params_from_resp(X, w, resp, K, model, reg_covar)


def _from_indices(X, idx, K, model, reg_covar):
    # one-hot responsibilities on K chosen rows: means are those rows, covariances reg_covar
    return _params_from_resp(X[idx], None, lambda s, e: np.eye(K)[s:e], K, model, reg_covar)


def _init_kmeans(X, w, K, model, reg_covar, rng, kernels=None):
    labels, _ = kmeans(X, K, sample_weight=w, random_state=rng, kernels=kernels)
    return _from_labels(X, w, labels, K, model, reg_covar, kernels)


def _init_kmeans_plusplus(X, w, K, model, reg_covar, rng, kernels=None):
    _, idx = kmeans_plusplus(X, K, sample_weight=w, random_state=rng)
    return _from_indices(X, idx, K, model, reg_covar)


def _init_hc(X, w, K, model, reg_covar, rng, kernels=None):
    # mclust's start: a model-based hierarchical clustering tree cut at K groups
    from gaussmix._hc import hc_start_labels

    keep, labels = hc_start_labels(X, w, K, rng)
    if keep is not None:
        X = X[keep]
        w = None if w is None else w[keep]
    return _from_labels(X, w, labels, K, model, reg_covar, kernels)


def _init_random(X, w, K, model, reg_covar, rng, kernels=None):
    def resp(s, e):
        # successive chunk draws give the same stream as one (N, K) draw
        r = rng.uniform(size=(e - s, K))
        return r / r.sum(axis=1, keepdims=True)

    return _params_from_resp(X, w, resp, K, model, reg_covar)


def _init_random_from_data(X, w, K, model, reg_covar, rng, kernels=None):
    if w is None:
        idx = rng.choice(X.shape[0], size=K, replace=False)
    else:
        idx = rng.choice(X.shape[0], size=K, replace=False, p=w / w.sum())
    return _from_indices(X, idx, K, model, reg_covar)


INIT_METHODS: dict[str, Callable[..., MixtureParams]] = {
    "kmeans": _init_kmeans,
    "k-means++": _init_kmeans_plusplus,
    "random": _init_random,
    "random_from_data": _init_random_from_data,
    "hc": _init_hc,
}


def initial_params(
    method: str,
    X: NDArray,
    sample_weight: NDArray | None,
    n_components: int,
    model: CovarianceModel,
    reg_covar: float,
    random_state: np.random.RandomState,
    *,
    kernels=None,
) -> MixtureParams:
    """Starting parameters by ``method`` (a key of :data:`INIT_METHODS`).

    Parameters
    ----------
    method : {"kmeans", "k-means++", "random", "random_from_data", "hc"}
        ``"hc"``: the partition at K of mclust's model-based hierarchical clustering
        (:mod:`gaussmix._hc`: VVV criterion on the SVD-transformed data, a random subset of
        2000 rows above that size, rows of weight zero left out), then one M-step.
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,) or None
    n_components : int
    model : CovarianceModel
    reg_covar : float
    random_state : numpy.random.RandomState
    kernels : module, optional
        Compiled k-means steps (``gaussmix.backends.cpu.kmeans_kernels()``); the numpy
        code runs without them.

    Returns
    -------
    params : MixtureParams

    Notes
    -----
    Missing values (NaN): the start is computed on the complete rows when they are at least
    a fifth of the rows and ten per component (no copy of the data is filled, and under
    missingness at random they are a fair sample); otherwise on all rows with each NaN replaced
    by its column's observed (weighted) mean, whose covariances are somewhat too small. EM on
    the observed entries corrects either start.
    """
    try:
        fn = INIT_METHODS[method]
    except KeyError:
        raise ValueError(
            f"init_params must be one of {sorted(INIT_METHODS)}, got {method!r}"
        ) from None
    if X.size and np.isnan(np.min(X)):
        from gaussmix._missing import start_rows

        X, sample_weight = start_rows(X, sample_weight, n_components)
    return fn(X, sample_weight, n_components, model, reg_covar, random_state, kernels)
