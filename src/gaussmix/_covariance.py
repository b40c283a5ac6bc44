"""Covariance models: one object per ``covariance_type``, picked from a registry.

Each model knows the shape of its covariances, how many free parameters they have, which
per-component scatter the E-step must accumulate (``moment``), how to turn summed scatter into
covariances, and how to evaluate squared Mahalanobis distances against its precision Cholesky
factors. Constrained models (mclust's EEV, VVE, ...) are further subclasses of
:class:`CovarianceModel`; nothing else in the package branches on the type name.

Conventions follow scikit-learn: ``precisions_cholesky`` holds, per component, the upper
triangular ``U`` with ``precision = U @ U.T`` (full/tied), or ``1/sqrt(variance)``
(diag/spherical).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

__all__ = ["COVARIANCE_MODELS", "CollapsedComponentError", "CovarianceModel", "get_model"]


class CollapsedComponentError(ValueError):
    """A component's covariance is not positive definite (it collapsed onto few points).

    Parameters
    ----------
    component : int
        Index of the collapsed component.
    reg_covar : float or None
        The regularisation that was in force, if known.
    suggestion : float or None
        A ``reg_covar`` that would keep the component well defined.
    """

    def __init__(
        self, component: int, reg_covar: float | None = None, suggestion: float | None = None
    ) -> None:
        self.component = component
        msg = (
            f"component {component} has an ill-defined (not positive-definite) covariance: "
            "it collapsed onto a single point or a lower-dimensional set of points"
        )
        hints = []
        if suggestion is not None:
            cur = "" if reg_covar is None else f" (now {reg_covar:g})"
            hints.append(f"increase reg_covar{cur} to at least {suggestion:.1g}")
        hints.append("use fewer components")
        hints.append("rescale the data")
        msg += "; " + ", or ".join(hints)
        super().__init__(msg)


def _chol_or_raise(matrix: NDArray, component: int) -> NDArray:
    try:
        L = linalg.cholesky(matrix, lower=True, check_finite=False)
    except (linalg.LinAlgError, ValueError):
        raise CollapsedComponentError(component) from None
    if not np.all(np.isfinite(L)):
        raise CollapsedComponentError(component)
    return L


def _upper_prec_chol(cov: NDArray, component: int) -> NDArray:
    L = _chol_or_raise(cov, component)
    eye = np.eye(cov.shape[0])
    return linalg.solve_triangular(L, eye, lower=True, check_finite=False).T


class CovarianceModel(ABC):
    """Interface of a covariance structure.

    Attributes
    ----------
    name : str
        The ``covariance_type`` string.
    moment : {"full", "diag"}
        Per-component scatter the E-step accumulates: ``(K, d, d)`` outer products or
        ``(K, d)`` squares.
    """

    name: ClassVar[str]
    moment: ClassVar[Literal["full", "diag"]]

    @abstractmethod
    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of ``covariances_`` and ``precisions_cholesky_``."""

    @abstractmethod
    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Free parameters in the covariances."""

    @abstractmethod
    def from_scatter(self, nk: NDArray, scatter: NDArray, reg_covar: float) -> NDArray:
        """Covariances from central scatter.

        Parameters
        ----------
        nk : ndarray of shape (n_components,)
            Summed responsibilities (positive).
        scatter : ndarray of shape (K, d, d) or (K, d)
            ``Σ_n r_nk (x_n - μ_k)(x_n - μ_k)ᵀ`` (or its diagonal), as ``moment`` says.
        reg_covar : float
            Added to the diagonal.
        """

    @abstractmethod
    def precision_cholesky(self, covariances: NDArray, reg_covar: float | None = None) -> NDArray:
        """Precision Cholesky factors; raises :class:`CollapsedComponentError`."""

    @abstractmethod
    def precision_cholesky_from_precisions(self, precisions: NDArray) -> NDArray:
        """Precision Cholesky factors from precision matrices."""

    @abstractmethod
    def covariances_from_precision_cholesky(self, prec_chol: NDArray) -> NDArray:
        """Covariances whose precision Cholesky factors are ``prec_chol``."""

    @abstractmethod
    def precisions(self, prec_chol: NDArray) -> NDArray:
        """Precision matrices (or variances' inverses) from their Cholesky factors."""

    @abstractmethod
    def log_det_precision_cholesky(self, prec_chol: NDArray, n_features: int) -> NDArray:
        """``log det U_k`` per component, shape (n_components,) (tied: broadcast later)."""

    @abstractmethod
    def squared_mahalanobis(self, X: NDArray, means: NDArray, prec_chol: NDArray) -> NDArray:
        """``(x_n - μ_k)ᵀ Σ_k⁻¹ (x_n - μ_k)`` of shape (n_samples, n_components)."""

    @abstractmethod
    def full_matrix(self, covariances: NDArray, k: int, n_features: int) -> NDArray:
        """The (d, d) covariance matrix of component ``k``."""

    def validate(self, covariances: NDArray, n_components: int, n_features: int) -> NDArray:
        """Check shape, symmetry and positive-definiteness; return float64 covariances."""
        covariances = np.asarray(covariances, dtype=np.float64)
        expected = self.shape(n_components, n_features)
        if covariances.shape != expected:
            raise ValueError(
                f"'{self.name}' covariances must have shape {expected}, got {covariances.shape}"
            )
        if not np.all(np.isfinite(covariances)):
            raise ValueError("covariances must contain only finite values")
        return covariances

    def sample_component(
        self, rng: np.random.RandomState, mean: NDArray, covariances: NDArray, k: int, n: int
    ) -> NDArray:
        """Draw ``n`` points from component ``k`` as ``μ_k + L_k z``."""
        d = mean.shape[0]
        L = linalg.cholesky(self.full_matrix(covariances, k, d), lower=True)
        return mean + rng.standard_normal((n, d)) @ L.T


class FullCovariance(CovarianceModel):
    """Each component has its own general covariance matrix."""

    name = "full"
    moment = "full"

    def shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) // 2

    def from_scatter(self, nk, scatter, reg_covar):
        cov = scatter / nk[:, None, None]
        cov = (cov + np.swapaxes(cov, 1, 2)) / 2.0
        d = cov.shape[1]
        cov[:, np.arange(d), np.arange(d)] += reg_covar
        return cov

    def precision_cholesky(self, covariances, reg_covar=None):
        # one batched factorisation and solve: K small LAPACK calls cost more than the E-step
        # when K is large and d small
        try:
            L = np.linalg.cholesky(covariances)
        except np.linalg.LinAlgError:
            L = None
        if L is not None and np.all(np.isfinite(L)):
            eye = np.broadcast_to(np.eye(covariances.shape[1]), covariances.shape)
            return np.swapaxes(np.linalg.solve(L, eye), 1, 2)
        # the batch failed: find and name the first component that collapsed
        for k, cov in enumerate(covariances):
            try:
                _upper_prec_chol(cov, k)
            except CollapsedComponentError:
                raise _collapsed(k, reg_covar, covariances) from None
        raise _collapsed(0, reg_covar, covariances)

    def precision_cholesky_from_precisions(self, precisions):
        out = np.empty_like(precisions, dtype=np.float64)
        for k, prec in enumerate(precisions):
            out[k] = _chol_or_raise(prec, k)
        return out

    def covariances_from_precision_cholesky(self, prec_chol):
        out = np.empty_like(prec_chol, dtype=np.float64)
        eye = np.eye(prec_chol.shape[1])
        for k, P in enumerate(prec_chol):
            # P may be upper (from covariances) or lower (from precisions_init): refactor the
            # precision P Pᵀ and solve, rather than guess the triangle or form an inverse
            L = _chol_or_raise(P @ P.T, k)
            out[k] = linalg.cho_solve((L, True), eye, check_finite=False)
        return out

    def precisions(self, prec_chol):
        return np.einsum("kij,klj->kil", prec_chol, prec_chol)

    def log_det_precision_cholesky(self, prec_chol, n_features):
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)

    def squared_mahalanobis(self, X, means, prec_chol):
        out = np.empty((X.shape[0], means.shape[0]), dtype=X.dtype)
        for k in range(means.shape[0]):
            y = X @ prec_chol[k] - means[k] @ prec_chol[k]
            out[:, k] = np.einsum("ij,ij->i", y, y)
        return out

    def validate(self, covariances, n_components, n_features):
        covariances = super().validate(covariances, n_components, n_features)
        for k, cov in enumerate(covariances):
            if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-12 * np.max(np.abs(cov))):
                raise ValueError(f"covariance matrix of component {k} is not symmetric")
            try:
                _chol_or_raise(cov, k)
            except CollapsedComponentError:
                raise ValueError(
                    f"covariance matrix of component {k} is not positive definite"
                ) from None
        return covariances

    def full_matrix(self, covariances, k, n_features):
        return covariances[k]


class TiedCovariance(CovarianceModel):
    """All components share one general covariance matrix."""

    name = "tied"
    moment = "full"

    def shape(self, n_components, n_features):
        return (n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) // 2

    def from_scatter(self, nk, scatter, reg_covar):
        cov = scatter.sum(axis=0) / nk.sum()
        cov = (cov + cov.T) / 2.0
        cov.flat[:: cov.shape[0] + 1] += reg_covar
        return cov

    def precision_cholesky(self, covariances, reg_covar=None):
        try:
            return _upper_prec_chol(covariances, 0)
        except CollapsedComponentError:
            raise CollapsedComponentError(
                0, reg_covar, _suggest(reg_covar, np.diag(covariances))
            ) from None

    def precision_cholesky_from_precisions(self, precisions):
        return _chol_or_raise(precisions, 0)

    def covariances_from_precision_cholesky(self, prec_chol):
        return FullCovariance().covariances_from_precision_cholesky(prec_chol[None])[0]

    def precisions(self, prec_chol):
        return prec_chol @ prec_chol.T

    def log_det_precision_cholesky(self, prec_chol, n_features):
        return np.atleast_1d(np.sum(np.log(np.diag(prec_chol))))

    def squared_mahalanobis(self, X, means, prec_chol):
        y = X @ prec_chol
        mu_y = means @ prec_chol
        out = np.empty((X.shape[0], means.shape[0]), dtype=X.dtype)
        for k in range(means.shape[0]):
            diff = y - mu_y[k]
            out[:, k] = np.einsum("ij,ij->i", diff, diff)
        return out

    def validate(self, covariances, n_components, n_features):
        covariances = super().validate(covariances, n_components, n_features)
        FullCovariance().validate(covariances[None], 1, n_features)
        return covariances

    def full_matrix(self, covariances, k, n_features):
        return covariances


class DiagCovariance(CovarianceModel):
    """Each component has its own diagonal covariance (a variance per feature)."""

    name = "diag"
    moment = "diag"

    def shape(self, n_components, n_features):
        return (n_components, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features

    def from_scatter(self, nk, scatter, reg_covar):
        return scatter / nk[:, None] + reg_covar

    def precision_cholesky(self, covariances, reg_covar=None):
        bad = np.flatnonzero(~(np.min(covariances, axis=1) > 0.0))
        if bad.size:
            raise _collapsed(int(bad[0]), reg_covar, covariances)
        return 1.0 / np.sqrt(covariances)

    def precision_cholesky_from_precisions(self, precisions):
        if np.any(precisions <= 0):
            raise ValueError("'diag' precisions must be positive")
        return np.sqrt(precisions)

    def covariances_from_precision_cholesky(self, prec_chol):
        return 1.0 / prec_chol**2

    def precisions(self, prec_chol):
        return prec_chol**2

    def log_det_precision_cholesky(self, prec_chol, n_features):
        return np.sum(np.log(prec_chol), axis=1)

    def squared_mahalanobis(self, X, means, prec_chol):
        out = np.empty((X.shape[0], means.shape[0]), dtype=X.dtype)
        for k in range(means.shape[0]):
            # per component (x-μ)·p rather than sklearn's expanded x²p - 2xμp + μ²p,
            # which cancels catastrophically for data far from the origin
            y = (X - means[k]) * prec_chol[k]
            out[:, k] = np.einsum("ij,ij->i", y, y)
        return out

    def validate(self, covariances, n_components, n_features):
        covariances = super().validate(covariances, n_components, n_features)
        if np.any(covariances <= 0):
            raise ValueError("'diag' covariances must be positive")
        return covariances

    def full_matrix(self, covariances, k, n_features):
        return np.diag(covariances[k])


class SphericalCovariance(CovarianceModel):
    """Each component has one variance shared by all features."""

    name = "spherical"
    moment = "diag"

    def shape(self, n_components, n_features):
        return (n_components,)

    def n_parameters(self, n_components, n_features):
        return n_components

    def from_scatter(self, nk, scatter, reg_covar):
        return scatter.mean(axis=1) / nk + reg_covar

    def precision_cholesky(self, covariances, reg_covar=None):
        bad = np.flatnonzero(~(covariances > 0.0))
        if bad.size:
            raise _collapsed(int(bad[0]), reg_covar, covariances)
        return 1.0 / np.sqrt(covariances)

    def precision_cholesky_from_precisions(self, precisions):
        if np.any(precisions <= 0):
            raise ValueError("'spherical' precisions must be positive")
        return np.sqrt(precisions)

    def covariances_from_precision_cholesky(self, prec_chol):
        return 1.0 / prec_chol**2

    def precisions(self, prec_chol):
        return prec_chol**2

    def log_det_precision_cholesky(self, prec_chol, n_features):
        return n_features * np.log(prec_chol)

    def squared_mahalanobis(self, X, means, prec_chol):
        out = np.empty((X.shape[0], means.shape[0]), dtype=X.dtype)
        for k in range(means.shape[0]):
            diff = X - means[k]
            out[:, k] = np.einsum("ij,ij->i", diff, diff) * prec_chol[k] ** 2
        return out

    def validate(self, covariances, n_components, n_features):
        covariances = super().validate(covariances, n_components, n_features)
        if np.any(covariances <= 0):
            raise ValueError("'spherical' covariances must be positive")
        return covariances

    def full_matrix(self, covariances, k, n_features):
        return np.eye(n_features) * covariances[k]


def _suggest(reg_covar: float | None, diagonal: NDArray) -> float:
    scale = float(np.max(np.abs(diagonal))) if diagonal.size else 1.0
    base = 1e-6 * scale if scale > 0 else 1e-6
    return max(base, 10.0 * (reg_covar or 0.0), 1e-12)


def _collapsed(k: int, reg_covar: float | None, covariances: NDArray) -> CollapsedComponentError:
    diag = covariances if covariances.ndim <= 2 else np.diagonal(covariances, axis1=1, axis2=2)
    return CollapsedComponentError(k, reg_covar, _suggest(reg_covar, np.asarray(diag).ravel()))


COVARIANCE_MODELS: dict[str, CovarianceModel] = {
    m.name: m for m in (FullCovariance(), TiedCovariance(), DiagCovariance(), SphericalCovariance())
}


def get_model(covariance_type: str | CovarianceModel) -> CovarianceModel:
    """Look up a covariance model by its ``covariance_type`` name.

    Parameters
    ----------
    covariance_type : str or CovarianceModel
        One of ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``, or a model instance.

    Returns
    -------
    model : CovarianceModel
        The model object.
    """
    if isinstance(covariance_type, CovarianceModel):
        return covariance_type
    try:
        return COVARIANCE_MODELS[covariance_type]
    except (KeyError, TypeError):
        raise ValueError(
            f"covariance_type must be one of {sorted(COVARIANCE_MODELS)}, got {covariance_type!r}"
        ) from None
