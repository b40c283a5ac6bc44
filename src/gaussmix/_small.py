"""A compiled whole-array E-step for small data: model selection's thousands of tiny fits.

mclust's grid fits 14 models × 9 values of K, each to convergence, on data sets of a few
hundred rows. There an EM iteration is microseconds of arithmetic, and the reference kernel's
numpy calls (a few dozen per iteration, each microseconds of overhead) cost more than the
work. :class:`SmallExecutor` does the whole E-step in one compiled single-threaded pass over
the rows (no (n, K) temporaries, no threads to start), so that a grid over small data is bound
by its arithmetic. It implements the executor protocol, so :func:`gaussmix._em.run_em` and
every covariance model's M-step run on it unchanged; the conformance tests hold it to the
numpy reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from gaussmix._gaussian import LOG_2PI
from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats

__all__ = ["SmallExecutor"]


@njit(cache=True, nogil=True)
def _estep_full(X, w, means, P, const, shift):  # pragma: no cover - compiled
    n, d = X.shape
    K = means.shape[0]
    nk = np.zeros(K)
    sx = np.zeros((K, d))
    sxx = np.zeros((K, d, d))
    lj = np.empty(K)
    y = np.empty(d)
    c = np.empty(d)
    ll = 0.0
    for i in range(n):
        top = -np.inf
        for k in range(K):
            # y = (x - μ_k) P_k
            maha = 0.0
            for b in range(d):
                acc = 0.0
                for a in range(d):
                    acc += (X[i, a] - means[k, a]) * P[k, a, b]
                maha += acc * acc
            lj[k] = const[k] - 0.5 * maha
            if lj[k] > top:
                top = lj[k]
        s = 0.0
        for k in range(K):
            lj[k] = np.exp(lj[k] - top)
            s += lj[k]
        wi = w[i]
        ll += wi * (top + np.log(s))
        for k in range(K):
            r = wi * lj[k] / s
            if r == 0.0:
                continue
            nk[k] += r
            for a in range(d):
                c[a] = X[i, a] - shift[k, a]
                y[a] = r * c[a]
                sx[k, a] += y[a]
            for a in range(d):
                for b in range(a + 1):
                    sxx[k, a, b] += y[a] * c[b]
    for k in range(K):
        for a in range(d):
            for b in range(a):
                sxx[k, b, a] = sxx[k, a, b]
    return nk, sx, sxx, ll


@njit(cache=True, nogil=True)
def _estep_diag(X, w, means, P, const, shift):  # pragma: no cover - compiled
    n, d = X.shape
    K = means.shape[0]
    nk = np.zeros(K)
    sx = np.zeros((K, d))
    sxx = np.zeros((K, d))
    lj = np.empty(K)
    ll = 0.0
    for i in range(n):
        top = -np.inf
        for k in range(K):
            maha = 0.0
            for a in range(d):
                v = (X[i, a] - means[k, a]) * P[k, a]
                maha += v * v
            lj[k] = const[k] - 0.5 * maha
            if lj[k] > top:
                top = lj[k]
        s = 0.0
        for k in range(K):
            lj[k] = np.exp(lj[k] - top)
            s += lj[k]
        wi = w[i]
        ll += wi * (top + np.log(s))
        for k in range(K):
            r = wi * lj[k] / s
            if r == 0.0:
                continue
            nk[k] += r
            for a in range(d):
                c = X[i, a] - shift[k, a]
                sx[k, a] += r * c
                sxx[k, a] += r * c * c
    return nk, sx, sxx, ll


class SmallExecutor:
    """E-step over a small in-memory float64 array in one compiled single-threaded pass.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Checked, finite float64 data.
    sample_weight : ndarray of shape (n_samples,) or None
    """

    def __init__(self, X: NDArray, sample_weight: NDArray | None = None) -> None:
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.n_samples, self.n_features = self.X.shape
        self.dtype = np.dtype(np.float64)
        self.sample_weight = sample_weight
        self._w = (
            np.ones(self.n_samples)
            if sample_weight is None
            else np.ascontiguousarray(sample_weight, dtype=np.float64)
        )
        self._wsum = float(self._w.sum())

    def e_step(self, params: MixtureParams, *, shift: NDArray | None = None) -> SuffStats:
        """Summed statistics of all rows under ``params`` (around ``shift``, default the means)."""
        shift = params.means if shift is None else shift
        model = params.model
        K, d = params.means.shape
        factors = np.ascontiguousarray(
            model.component_factors(params.precisions_cholesky, K, d), dtype=np.float64
        )
        with np.errstate(divide="ignore"):
            const = np.log(params.weights) + params.log_det_precision_cholesky - 0.5 * d * LOG_2PI
        kernel = _estep_full if model.moment == "full" else _estep_diag
        nk, sx, sxx, ll = kernel(
            self.X, self._w, np.ascontiguousarray(params.means), factors, const,
            np.ascontiguousarray(shift, dtype=np.float64),
        )  # fmt: skip
        return SuffStats(np.asarray(shift), nk, sx, sxx, float(ll), self._wsum, self.n_samples)

    def init_data(self, max_rows, rng):
        """All rows: they are already in memory."""
        return self.X, self.sample_weight
