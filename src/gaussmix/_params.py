"""Parameters of a Gaussian mixture, validated once, with their Cholesky factors cached."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from gaussmix._covariance import CovarianceModel, get_model
from gaussmix._gaussian import LOG_2PI

__all__ = ["MixtureParams"]


@dataclass(frozen=True, eq=False)
class MixtureParams:
    """Weights, means and covariances of a K-component mixture (float64, immutable).

    Build it with :meth:`from_covariances` or :meth:`from_precisions_cholesky`; the
    precision Cholesky factors and their log-determinants are computed there once and reused by
    every E-step.

    Attributes
    ----------
    weights : ndarray of shape (n_components,)
        Mixing weights φ, non-negative, summing to one.
    means : ndarray of shape (n_components, n_features)
        Component means μ_k.
    covariances : ndarray
        Shape as ``model.shape(K, d)``.
    precisions_cholesky : ndarray
        Same shape; ``P_k`` with ``Σ_k⁻¹ = P_k P_kᵀ``.
    model : CovarianceModel
        Covariance structure.
    log_det_precision_cholesky : ndarray of shape (n_components,)
        ``log det P_k = -log det Σ_k / 2``.
    """

    weights: NDArray
    means: NDArray
    covariances: NDArray
    precisions_cholesky: NDArray
    model: CovarianceModel
    log_det_precision_cholesky: NDArray = field(repr=False)

    @classmethod
    def from_covariances(
        cls,
        weights: NDArray,
        means: NDArray,
        covariances: NDArray,
        covariance_type: str | CovarianceModel,
        *,
        reg_covar: float | None = None,
    ) -> MixtureParams:
        """Parameters from covariances (factorised here, once).

        Parameters
        ----------
        weights : ndarray of shape (n_components,)
        means : ndarray of shape (n_components, n_features)
        covariances : ndarray
            Shape as the covariance type requires.
        covariance_type : str or CovarianceModel
        reg_covar : float, optional
            Only quoted in the error raised for a collapsed component.
        """
        model = get_model(covariance_type)
        means = np.asarray(means, dtype=np.float64)
        covariances = np.asarray(covariances, dtype=np.float64)
        prec_chol = model.precision_cholesky(covariances, reg_covar)
        return cls._build(weights, means, covariances, prec_chol, model)

    @classmethod
    def from_precisions_cholesky(
        cls,
        weights: NDArray,
        means: NDArray,
        precisions_cholesky: NDArray,
        covariance_type: str | CovarianceModel,
        *,
        covariances: NDArray | None = None,
    ) -> MixtureParams:
        """Parameters from precision Cholesky factors (covariances derived if not given)."""
        model = get_model(covariance_type)
        prec_chol = np.asarray(precisions_cholesky, dtype=np.float64)
        if covariances is None:
            covariances = model.covariances_from_precision_cholesky(prec_chol)
        return cls._build(weights, means, np.asarray(covariances, np.float64), prec_chol, model)

    @classmethod
    def _build(cls, weights, means, covariances, prec_chol, model):
        means = np.asarray(means, dtype=np.float64)
        log_det = model.log_det_precision_cholesky(prec_chol, means.shape[1])
        log_det = np.broadcast_to(log_det, (means.shape[0],)).astype(np.float64)
        return cls(
            weights=np.asarray(weights, dtype=np.float64),
            means=means,
            covariances=covariances,
            precisions_cholesky=prec_chol,
            model=model,
            log_det_precision_cholesky=log_det,
        )

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        """Dimension d."""
        return self.means.shape[1]

    @property
    def precisions(self) -> NDArray:
        """Precision matrices (full/tied) or inverse variances (diag/spherical)."""
        return self.model.precisions(self.precisions_cholesky)

    def log_gaussian(self, X: NDArray) -> NDArray:
        """``log N(x_n; μ_k, Σ_k)`` of shape (n_samples, n_components), in ``X.dtype``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Checked, finite data.
        """
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
        means = self.means.astype(dtype, copy=False)
        prec_chol = self.precisions_cholesky.astype(dtype, copy=False)
        maha = self.model.squared_mahalanobis(X.astype(dtype, copy=False), means, prec_chol)
        const = (self.log_det_precision_cholesky - 0.5 * self.n_features * LOG_2PI).astype(dtype)
        return const - 0.5 * maha

    def log_joint(self, X: NDArray) -> NDArray:
        """``log p(x_n, z=k) = log φ_k + log N(x_n; μ_k, Σ_k)``, shape (n_samples, n_components).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Checked, finite data.
        """
        out = self.log_gaussian(X)
        with np.errstate(divide="ignore"):
            out += np.log(self.weights).astype(out.dtype)
        return out
