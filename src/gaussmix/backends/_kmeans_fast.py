"""Compiled k-means steps for :mod:`gaussmix._init` (used when numba is available).

A Lloyd step on the full data is one pass: nearest centre, its squared distance, and the
per-centre weighted sums for the next update, accumulated per fixed row group (then added in
group order, so threads never change the result). The statistics of a hard partition for the
first M-step come from one more pass. Sampling for large data is keyed by a hash of each row's
values, so a weighted row and its repeated copies are kept or dropped together, wherever they
are in the data.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numpy.typing import NDArray

from gaussmix import _jit  # noqa: F401  (numba's vector width, before any kernel compiles)
from gaussmix._stats import SuffStats
from gaussmix.backends._cpu_kernels import f64_bits
from gaussmix.backends.cpu import _run_threads, _single_threaded_blas, default_threads

__all__ = [
    "assign_sums",
    "label_stats",
    "mean_variance",
    "sample_mask",
    "single_threaded_blas",
]

single_threaded_blas = _single_threaded_blas

_JIT = {"cache": True, "nogil": True, "fastmath": {"contract", "reassoc", "nsz"}}
_MAX_GROUPS = 64


def _groups(n: int, slot: int) -> tuple[int, int]:
    max_groups = max(1, min(_MAX_GROUPS, (1 << 21) // max(slot, 1)))
    rows = min(n, max(4096, -(-n // max_groups)))
    return rows, -(-n // rows)


@nb.njit(**_JIT)
def _row_uniforms(X, seed, out):
    # multiply-xorshift of each value's bits, then a splitmix64 finaliser; rows are independent
    # so the CPU overlaps their dependency chains; -0.0 and 0.0 hash alike
    n, d = X.shape
    for i in range(n):
        x = np.uint64(seed)
        for j in range(d):
            x = (x ^ f64_bits(np.float64(X[i, j]) + 0.0)) * np.uint64(0x9E3779B97F4A7C15)
            x ^= x >> np.uint64(29)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
        out[i] = np.float64(x >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def sample_mask(X: NDArray, w: NDArray, n_rows: int, rng: np.random.RandomState) -> NDArray:
    """Rows kept in a Bernoulli sample of expected total weight ``n_rows``.

    Each row is kept when a seeded hash of its values falls below ``n_rows / Σw``: identical
    rows are kept or dropped together, so the sample (with its weights) is the same for a
    weighted row and its repeated copies, and for any row order.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    w : ndarray of shape (n_samples,)
        Non-negative weights.
    n_rows : int
        Expected sample weight.
    rng : numpy.random.RandomState
        Draws the hash seed (one draw).

    Returns
    -------
    keep : ndarray of shape (n_samples,), bool
    """
    seed = int(rng.randint(0, 2**31 - 1))
    u = np.empty(X.shape[0])
    _row_uniforms(np.ascontiguousarray(X), seed, u)
    return (u < n_rows / float(w.sum())) & (w > 0)


@nb.njit(**_JIT)
def _assign_groups(X, w, weighted, centers, group_rows, first, step, labels, dist, sums, counts):
    n, d = X.shape
    K = centers.shape[0]
    tile = 256
    xt = np.empty((d, tile), dtype=X.dtype)
    acc = np.empty(tile)
    best = np.empty(tile)
    arg = np.empty(tile, dtype=np.intp)
    for g in range(first, sums.shape[0], step):
        sums[g] = 0.0
        counts[g] = 0.0
        stop = min(n, (g + 1) * group_rows)
        for t0 in range(g * group_rows, stop, tile):
            m = min(tile, stop - t0)
            for r in range(m):
                for j in range(d):
                    xt[j, r] = X[t0 + r, j]
            # rows innermost: every loop below vectorises across the tile
            for k in range(K):
                for r in range(m):
                    acc[r] = 0.0
                for j in range(d):
                    c = centers[k, j]
                    for r in range(m):
                        t = np.float64(xt[j, r] - c)
                        acc[r] += t * t
                if k == 0:
                    for r in range(m):
                        best[r] = acc[r]
                        arg[r] = 0
                else:
                    for r in range(m):
                        if acc[r] < best[r]:
                            best[r] = acc[r]
                            arg[r] = k
            for r in range(m):
                i = t0 + r
                a = arg[r]
                labels[i] = a
                dist[i] = best[r]
                wi = w[i] if weighted else 1.0
                counts[g, a] += wi
                for j in range(d):
                    sums[g, a, j] += wi * xt[j, r]


def assign_sums(
    X: NDArray, w: NDArray | None, centers: NDArray, n_threads: int | None = None
) -> tuple[NDArray, NDArray, NDArray, NDArray]:
    """Nearest centre of every row, and the weighted sums of the next Lloyd update.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    w : ndarray of shape (n_samples,) or None
    centers : ndarray of shape (n_clusters, n_features)
    n_threads : int, optional

    Returns
    -------
    labels : ndarray of shape (n_samples,), intp
    dist : ndarray of shape (n_samples,)
        Squared distance to the nearest centre (float64).
    sums : ndarray of shape (n_clusters, n_features)
        ``Σ w x`` over the rows of each centre.
    counts : ndarray of shape (n_clusters,)
        ``Σ w`` over the rows of each centre.
    """
    X = np.ascontiguousarray(X)
    n, d = X.shape
    K = centers.shape[0]
    rows, G = _groups(n, K * (d + 1))
    labels = np.empty(n, dtype=np.intp)
    dist = np.empty(n)
    sums = np.empty((G, K, d))
    counts = np.empty((G, K))
    weighted = w is not None
    ww = np.array(w, dtype=np.float64) if weighted else np.empty(0)
    c = np.array(centers, dtype=X.dtype, order="C")

    def task(first, step):
        _assign_groups(X, ww, weighted, c, rows, first, step, labels, dist, sums, counts)

    _run_threads(task, min(G, n_threads or default_threads()))
    return labels, dist, sums.sum(axis=0), counts.sum(axis=0)


@nb.njit(**_JIT)
def _label_groups(X, w, weighted, labels, shift, full, group_rows, first, step, nk, sx, sxx):
    n, d = X.shape
    diff = np.empty(d)
    for g in range(first, nk.shape[0], step):
        nk[g] = 0.0
        sx[g] = 0.0
        sxx[g] = 0.0
        for i in range(g * group_rows, min(n, (g + 1) * group_rows)):
            k = labels[i]
            wi = w[i] if weighted else 1.0
            nk[g, k] += wi
            for j in range(d):
                diff[j] = X[i, j] - shift[k, j]
                sx[g, k, j] += wi * diff[j]
            if full:
                # the whole square (fixed-length inner loop vectorises; a triangle would not)
                for a in range(d):
                    t = wi * diff[a]
                    for b in range(d):
                        sxx[g, k, a, b] += t * diff[b]
            else:
                for a in range(d):
                    sxx[g, k, 0, a] += wi * diff[a] * diff[a]


def label_stats(
    X: NDArray,
    w: NDArray | None,
    labels: NDArray,
    shift: NDArray,
    moment: str,
    n_threads: int | None = None,
) -> SuffStats:
    """Statistics of a hard partition (one-hot responsibilities), around ``shift``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    w : ndarray of shape (n_samples,) or None
    labels : ndarray of shape (n_samples,)
        Component of each row, in ``[0, K)``.
    shift : ndarray of shape (K, n_features)
    moment : {"full", "diag"}
    n_threads : int, optional

    Returns
    -------
    stats : SuffStats
        ``log_likelihood`` is 0 (not computed).
    """
    X = np.ascontiguousarray(X)
    n, d = X.shape
    K = shift.shape[0]
    full = moment == "full"
    rows, G = _groups(n, K * ((d * d if full else d) + d + 1))
    nk = np.empty((G, K))
    sx = np.empty((G, K, d))
    sxx = np.empty((G, K, d if full else 1, d))
    weighted = w is not None
    ww = np.array(w, dtype=np.float64) if weighted else np.empty(0)
    lab = np.ascontiguousarray(labels, dtype=np.intp)
    s = np.array(shift, dtype=np.float64, order="C")

    def task(first, step):
        _label_groups(X, ww, weighted, lab, s, full, rows, first, step, nk, sx, sxx)

    _run_threads(task, min(G, n_threads or default_threads()))
    sxx_t = sxx.sum(axis=0)
    if not full:
        sxx_t = sxx_t[:, 0, :]
    wsum = float(n) if not weighted else float(ww.sum())
    return SuffStats(shift, nk.sum(axis=0), sx.sum(axis=0), sxx_t, 0.0, wsum, n)


@nb.njit(**_JIT)
def _mean_var(X, w):
    n, d = X.shape
    mean = np.zeros(d)
    total = 0.0
    for i in range(n):
        total += w[i]
        for j in range(d):
            mean[j] += w[i] * X[i, j]
    mean /= total
    var = np.zeros(d)
    for i in range(n):
        for j in range(d):
            t = X[i, j] - mean[j]
            var[j] += w[i] * t * t
    return mean, var / total


def mean_variance(X: NDArray, w: NDArray) -> tuple[NDArray, NDArray]:
    """Weighted mean and variance of every feature (two compiled passes, no temporaries).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    w : ndarray of shape (n_samples,)

    Returns
    -------
    mean, var : ndarray of shape (n_features,)
    """
    return _mean_var(np.ascontiguousarray(X), np.array(w, dtype=np.float64))
