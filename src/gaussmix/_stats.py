"""Additive sufficient statistics: the E-step of one chunk, and the M-step of their sum.

Every executor (in memory, streamed, Dask, GPU) calls a kernel that returns a
:class:`SuffStats` per chunk; statistics of chunks add with ``+``; :func:`m_step` turns the sum
into new :class:`~gaussmix._params.MixtureParams`. Second moments are accumulated around a
per-component ``shift`` (the previous means), so that ``Σ r (x-s)(x-s)ᵀ / n - δδᵀ`` with
``δ = Σ r (x-s) / n`` subtracts small numbers, never two large ones (the float32 negative
variances of scikit-learn issue #30382 come from the raw-moment form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from gaussmix._covariance import CovarianceModel
from gaussmix._gaussian import logsumexp
from gaussmix._params import MixtureParams

__all__ = ["SuffStats", "accumulate", "e_step_chunk", "m_step"]

_EPS = 10 * np.finfo(np.float64).eps


@dataclass(frozen=True, eq=False)
class SuffStats:
    """Sufficient statistics of a set of rows, all in float64.

    Attributes
    ----------
    shift : ndarray of shape (n_components, n_features)
        Per-component origin of ``sx`` and ``sxx``.
    nk : ndarray of shape (n_components,)
        ``Σ_n w_n r_nk``.
    sx : ndarray of shape (n_components, n_features)
        ``Σ_n w_n r_nk (x_n - s_k)``.
    sxx : ndarray of shape (n_components, n_features, n_features) or (n_components, n_features)
        ``Σ_n w_n r_nk (x_n - s_k)(x_n - s_k)ᵀ``, or only its diagonal.
    log_likelihood : float
        ``Σ_n w_n log p(x_n)`` under the parameters of the E-step.
    weight_sum : float
        ``Σ_n w_n``.
    n_samples : int
        Rows seen.
    """

    shift: NDArray
    nk: NDArray
    sx: NDArray
    sxx: NDArray
    log_likelihood: float
    weight_sum: float
    n_samples: int

    @classmethod
    def zeros(cls, shift: NDArray, moment: Literal["full", "diag"]) -> SuffStats:
        """Statistics of no rows (the neutral element of ``+``)."""
        K, d = shift.shape
        sxx = np.zeros((K, d, d) if moment == "full" else (K, d))
        return cls(shift, np.zeros(K), np.zeros((K, d)), sxx, 0.0, 0.0, 0)

    def __add__(self, other: SuffStats) -> SuffStats:
        if not isinstance(other, SuffStats):
            return NotImplemented
        if other.sxx.shape != self.sxx.shape or not np.array_equal(self.shift, other.shift):
            raise ValueError("statistics accumulated around different shifts cannot be added")
        return SuffStats(
            self.shift,
            self.nk + other.nk,
            self.sx + other.sx,
            self.sxx + other.sxx,
            self.log_likelihood + other.log_likelihood,
            self.weight_sum + other.weight_sum,
            self.n_samples + other.n_samples,
        )

    def __radd__(self, other):
        # lets sum(stats_list) start from 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    @property
    def mean_log_likelihood(self) -> float:
        """Weighted mean log-likelihood per sample (scikit-learn's lower bound)."""
        return self.log_likelihood / self.weight_sum


def accumulate(
    X: NDArray,
    resp_weighted: NDArray,
    shift: NDArray,
    moment: Literal["full", "diag"],
) -> tuple[NDArray, NDArray, NDArray]:
    """``(nk, sx, sxx)`` of one chunk from its (weighted) responsibilities, in float64.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    resp_weighted : ndarray of shape (n_samples, n_components)
        ``w_n r_nk``.
    shift : ndarray of shape (n_components, n_features)
    moment : {"full", "diag"}
    """
    X64 = X.astype(np.float64, copy=False)
    r = resp_weighted.astype(np.float64, copy=False)
    K, d = shift.shape
    nk = r.sum(axis=0)
    sx = np.empty((K, d))
    sxx = np.empty((K, d, d) if moment == "full" else (K, d))
    for k in range(K):
        centred = X64 - shift[k]
        rk = r[:, k]
        sx[k] = rk @ centred
        if moment == "full":
            sxx[k] = (centred * rk[:, None]).T @ centred
        else:
            sxx[k] = rk @ (centred * centred)
    return nk, sx, sxx


def e_step_chunk(
    X: NDArray,
    sample_weight: NDArray | None,
    params: MixtureParams,
    shift: NDArray,
) -> SuffStats:
    """E-step of one chunk: responsibilities under ``params`` folded into statistics.

    This is the readable reference kernel; faster executors must agree with it.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        Checked rows (float32 or float64; arithmetic in that dtype, sums in float64); NaN
        entries are missing values (:mod:`gaussmix._missing`), other entries finite.
    sample_weight : ndarray of shape (n_samples,) or None
        Row weights (None: all ones).
    params : MixtureParams
        Current parameters.
    shift : ndarray of shape (n_components, n_features)
        Origin of the second moments.

    Returns
    -------
    stats : SuffStats
    """
    if X.size and np.isnan(np.min(X)):  # min propagates NaN, without a boolean temporary
        # NaN marks missing entries: exact EM on the observed ones (rows grouped by pattern)
        from gaussmix._missing import e_step_missing

        return e_step_missing(X, sample_weight, params, shift)
    log_joint = params.log_joint(X)
    log_norm = logsumexp(log_joint, axis=1)
    resp = np.exp(log_joint - log_norm[:, None])
    log_norm = log_norm.astype(np.float64)
    if sample_weight is None:
        ll = float(log_norm.sum())
        wsum = float(X.shape[0])
    else:
        resp = resp * sample_weight[:, None].astype(resp.dtype)
        ll = float(sample_weight @ log_norm)
        wsum = float(sample_weight.sum())
    nk, sx, sxx = accumulate(X, resp, shift, params.model.moment)
    return SuffStats(shift, nk, sx, sxx, ll, wsum, X.shape[0])


def m_step(
    stats: SuffStats,
    model: CovarianceModel,
    reg_covar: float,
    previous: MixtureParams | None = None,
) -> MixtureParams:
    """New parameters from summed statistics.

    Parameters
    ----------
    stats : SuffStats
        Sum over all chunks.
    model : CovarianceModel
        Covariance structure.
    reg_covar : float
        Non-negative regularisation added to the covariances' diagonal.
    previous : MixtureParams, optional
        The parameters of the E-step: models whose M-step iterates start from their
        covariances (used only when they are of the same model).

    Returns
    -------
    params : MixtureParams

    Raises
    ------
    CollapsedComponentError
        When a covariance is not positive definite.
    """
    # weights mean repeated rows, so only their ratios count: statistics on the scale of one
    # unit weight per row keep the guard below meaningful whatever the weights' scale (every
    # engine: streamed and Dask weights are not rescaled before the fit); 1 for unit weights
    scale = 1.0
    if stats.n_samples > 0 and stats.weight_sum > 0 and stats.weight_sum != stats.n_samples:
        scale = stats.weight_sum / stats.n_samples
    # scikit-learn's guard: an empty component keeps finite parameters
    nk = stats.nk / scale + _EPS
    delta = (stats.sx / scale) / nk[:, None]
    means = stats.shift + delta
    sxx = stats.sxx / scale
    if sxx.ndim == 3:
        scatter = sxx - nk[:, None, None] * delta[:, :, None] * delta[:, None, :]
    else:
        scatter = sxx - nk[:, None] * delta * delta
    if model.moment == "diag" and scatter.ndim == 3:
        # a start given as full matrices ran a full E-step; a diagonal model needs only this
        scatter = np.diagonal(scatter, axis1=1, axis2=2).copy()
    start = None if previous is None or previous.model is not model else previous.covariances
    covariances = model.from_scatter(nk, scatter, reg_covar, start)
    weights = nk / nk.sum()
    return MixtureParams.from_covariances(weights, means, covariances, model, reg_covar=reg_covar)
