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
from scipy.linalg import lapack

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
    #: every component has the same precision factor (executors may project rows once)
    shared_factor: ClassVar[bool] = False
    #: all components share one orientation D (used to report the decomposition)
    common_orientation: ClassVar[bool] = False

    def component_factors(
        self, prec_chol: NDArray, n_components: int, n_features: int
    ) -> NDArray:
        """Precision Cholesky factors laid out per component, as the E-step kernels take them.

        Returns an array of shape (K, d, d) when ``moment == "full"`` and (K, d) (inverse
        standard deviations) when ``moment == "diag"``, whatever this model stores. Executors
        call this instead of looking at the model's name; the result may be a read-only
        broadcast view.
        """
        return prec_chol

    def rotated_factors(
        self, covariances: NDArray, n_components: int, n_features: int
    ) -> tuple[NDArray, NDArray] | None:
        """``(D, s)`` with every precision ``Σ_k⁻¹ = D diag(s_k)² Dᵀ``, or None.

        Models whose components share an orientation but not a whole factor (VEE, EVE, VVE)
        return it: an E-step then projects each row once on ``D`` (d² multiply-adds instead
        of K·d²/2) and scales the projection per component. None for the other models, and
        where the covariances do not share their eigenvectors to 1e-12 (then the
        per-component factors are the exact ones).

        Returns
        -------
        D : ndarray of shape (n_features, n_features)
            Orthogonal, eigenvectors in columns.
        s : ndarray of shape (n_components, n_features)
            ``a_k^(-1/2)``, the eigenvalues ``a_k`` of ``Σ_k`` along ``D``.
        """
        if self.moment != "full" or self.shared_factor or not self.common_orientation:
            return None
        K, d = n_components, n_features
        mats = np.stack([self.full_matrix(covariances, k, d) for k in range(K)])
        if not np.all(np.isfinite(mats)):
            return None
        D, B = _common_axes(mats)
        eig = np.diagonal(B, axis1=1, axis2=2)
        if not (np.all(np.isfinite(B)) and np.all(eig > 0)):
            return None
        off = B - eig[:, :, None] * np.eye(d)
        # relative to the geometric mean of the two variances an entry couples
        if np.any(np.abs(off) > 1e-12 * np.sqrt(eig[:, :, None] * eig[:, None, :])):
            return None
        return D, 1.0 / np.sqrt(eig)

    def decompose(
        self, covariances: NDArray, n_components: int, n_features: int
    ) -> tuple[NDArray, NDArray, NDArray]:
        """Volume, shape and orientation of every component: ``Σ_k = λ_k D_k A_k D_kᵀ``.

        Returns
        -------
        volumes : ndarray of shape (n_components,)
            ``λ_k = det(Σ_k)^(1/d)``.
        shapes : ndarray of shape (n_components, n_features)
            Diagonal of ``A_k`` (determinant one), in the column order of ``D_k``: decreasing
            for models with a free orientation, the feature order for diagonal models.
        orientations : ndarray of shape (n_components, n_features, n_features)
            ``D_k``, orthogonal, eigenvectors in columns (the identity for diagonal models).
        """
        K, d = n_components, n_features
        mats = np.stack([self.full_matrix(covariances, k, d) for k in range(K)])
        if self.moment == "diag":
            var = np.diagonal(mats, axis1=1, axis2=2)
            vol = np.exp(np.mean(np.log(var), axis=1))
            return vol, var / vol[:, None], np.broadcast_to(np.eye(d), (K, d, d)).copy()
        if self.common_orientation:
            D, B = _common_axes(mats)
            eig = np.diagonal(B, axis1=1, axis2=2)
            orient = np.broadcast_to(D, mats.shape).copy()
        else:
            eig, orient = np.linalg.eigh(mats)
            eig, orient = eig[:, ::-1], orient[:, :, ::-1]
        vol = np.exp(np.mean(np.log(eig), axis=1))
        return vol, eig / vol[:, None], orient

    @abstractmethod
    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of ``covariances_`` and ``precisions_cholesky_``."""

    @abstractmethod
    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Free parameters in the covariances."""

    @abstractmethod
    def from_scatter(
        self, nk: NDArray, scatter: NDArray, reg_covar: float, previous: NDArray | None = None
    ) -> NDArray:
        """Covariances from central scatter (the covariance part of the M-step).

        Parameters
        ----------
        nk : ndarray of shape (n_components,)
            Summed responsibilities (positive).
        scatter : ndarray of shape (K, d, d) or (K, d)
            ``Σ_n r_nk (x_n - μ_k)(x_n - μ_k)ᵀ`` (or its diagonal), as ``moment`` says.
        reg_covar : float
            Regularisation: ``n_k * reg_covar`` is added to the diagonal of each component's
            scatter, which adds ``reg_covar`` to the diagonal of unconstrained covariances.
        previous : ndarray, optional
            The previous EM iteration's covariances (this model's layout): the starting point
            of models whose M-step is itself iterative. Closed forms ignore it.
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

    @abstractmethod
    def from_full_matrices(self, full: NDArray) -> NDArray:
        """This model's storage of (K, d, d) covariance matrices that have its structure
        (e.g. a VII fit's matrices stored as 'spherical')."""

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


# from this many features a loop of triangular inverses beats one batched LU solve (K small
# LAPACK calls cost more than the E-step when K is large and d small: 100 × 2 × 2, 0.1 ms
# against 0.03; 16 × 16 × 16, 0.03 ms against 0.08)
_TRIANGULAR_INVERSE_MIN = 8


class FullCovariance(CovarianceModel):
    """Each component has its own general covariance matrix."""

    name = "full"
    moment = "full"

    def shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) // 2

    def from_scatter(self, nk, scatter, reg_covar, previous=None):
        cov = scatter / nk[:, None, None]
        cov = (cov + np.swapaxes(cov, 1, 2)) / 2.0
        d = cov.shape[1]
        cov[:, np.arange(d), np.arange(d)] += reg_covar
        return cov

    def precision_cholesky(self, covariances, reg_covar=None):
        # one batched factorisation (and, below _TRIANGULAR_INVERSE_MIN features, one batched
        # solve): K small LAPACK calls cost more than the E-step when K is large and d small
        try:
            L = np.linalg.cholesky(covariances)
        except np.linalg.LinAlgError:
            L = None
        if L is not None and np.all(np.isfinite(L)):
            d = covariances.shape[1]
            if d < _TRIANGULAR_INVERSE_MIN:
                eye = np.broadcast_to(np.eye(d), covariances.shape)
                return np.swapaxes(np.linalg.solve(L, eye), 1, 2)
            # LAPACK's triangular inverse per component: exactly triangular (the LU solve's
            # pivoting left 1e-16 noise above the diagonal) and 3.5x faster at K = 32, d = 64
            out = np.empty_like(L)
            for k in range(L.shape[0]):
                inv, info = lapack.dtrtri(L[k], lower=1)
                if info != 0:
                    break
                out[k] = inv.T
            else:
                return out
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

    def from_full_matrices(self, full):
        return np.array(full, dtype=np.float64)

    def full_matrix(self, covariances, k, n_features):
        return covariances[k]


class TiedCovariance(CovarianceModel):
    """All components share one general covariance matrix."""

    name = "tied"
    moment = "full"
    shared_factor = True
    common_orientation = True

    def component_factors(self, prec_chol, n_components, n_features):
        return np.broadcast_to(prec_chol, (n_components, n_features, n_features))

    def shape(self, n_components, n_features):
        return (n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) // 2

    def from_scatter(self, nk, scatter, reg_covar, previous=None):
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

    def from_full_matrices(self, full):
        return np.array(full[0], dtype=np.float64)

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

    def from_scatter(self, nk, scatter, reg_covar, previous=None):
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

    def from_full_matrices(self, full):
        return np.diagonal(full, axis1=1, axis2=2).astype(np.float64)

    def full_matrix(self, covariances, k, n_features):
        return np.diag(covariances[k])


class SphericalCovariance(CovarianceModel):
    """Each component has one variance shared by all features."""

    name = "spherical"
    moment = "diag"

    def component_factors(self, prec_chol, n_components, n_features):
        return np.broadcast_to(prec_chol[:, None], (n_components, n_features))

    def shape(self, n_components, n_features):
        return (n_components,)

    def n_parameters(self, n_components, n_features):
        return n_components

    def from_scatter(self, nk, scatter, reg_covar, previous=None):
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

    def from_full_matrices(self, full):
        return np.array(full[:, 0, 0], dtype=np.float64)

    def full_matrix(self, covariances, k, n_features):
        return np.eye(n_features) * covariances[k]

# ------------------------------------------------------------------------------------------
# mclust's models: Σ_k = λ_k D_k A_k D_kᵀ with volume λ, shape A (det 1), orientation D each
# Equal across components, Variable, or the Identity (Banfield & Raftery 1993; Celeux &
# Govaert 1995). Diagonal models store (K, d) variances, the others (K, d, d) matrices; the
# E-step is then the diag or full one unchanged, and only the M-step knows the constraint.
#
# Every M-step starts from the regularised scatter W_k + n_k·reg·I, so that reg_covar adds
# reg_covar to the diagonal of the unconstrained models (VVV = full, EEE = tied, VVI = diag,
# VII = spherical, exactly) while every model's constraint still holds.

# inner iterations of the iterative M-steps stop at this relative change of their objective
# (mclust's emControl(tol = c(., 1e-15)) standard for golden values; looser tolerances give
# visibly different covariances for the MM algorithms, see README)
INNER_TOL = 1e-15
INNER_MAX_ITER = 10_000


def _regularised(nk: NDArray, scatter: NDArray, reg_covar: float) -> NDArray:
    if scatter.ndim == 2:
        return scatter + (nk * reg_covar)[:, None]
    out = scatter + 0.0
    d = scatter.shape[1]
    out[:, np.arange(d), np.arange(d)] += (nk * reg_covar)[:, None]
    return (out + np.swapaxes(out, 1, 2)) / 2.0


def _geo_mean(values: NDArray, axis: int = -1) -> NDArray:
    """``det^(1/d)`` of diagonal matrices; 0 (not nan) for a zero entry: singular, caught later."""
    with np.errstate(divide="ignore"):
        return np.exp(np.mean(np.log(values), axis=axis))


def _sorted_eigh(mats: NDArray) -> tuple[NDArray, NDArray]:
    """Eigenvalues (decreasing, clipped at 0) and eigenvectors of symmetric matrices."""
    eig, vec = np.linalg.eigh(mats)
    return np.maximum(eig[..., ::-1], 0.0), vec[..., ::-1]


def _common_eigenvectors(mats: NDArray) -> NDArray:
    """The eigenvectors shared by commuting symmetric matrices (columns, decreasing order).

    A generic positive combination of matrices with a common eigenbasis has distinct
    eigenvalues, so its eigenvectors are that basis even where one matrix alone has a
    repeated eigenvalue.
    """
    scale = np.array([np.trace(m) for m in mats])
    coef = 1.0 + 0.37 * np.sin(np.arange(1, len(mats) + 1) * 1.7)
    combo = np.tensordot(coef / np.where(scale > 0, scale, 1.0), mats, axes=1)
    _, vec = _sorted_eigh(combo)
    return vec


def _common_axes(mats: NDArray) -> tuple[NDArray, NDArray]:
    """:func:`_common_eigenvectors` refined to rounding, and ``Dᵀ Σ_k D`` for every matrix.

    The combination's eigenvectors are accurate to eps / (its eigenvalue gaps), which a
    generic combination may leave small (2e-12 off-diagonal measured at d = 16): two
    first-order Jacobi steps on every pair at once (the angle zeroing Σ_k of the off-diagonal
    entries in least squares) converge quadratically to the common axes.
    """
    d = mats.shape[-1]
    D = _common_eigenvectors(mats)
    B = D.T @ mats @ D
    for _ in range(2):
        eig = np.diagonal(B, axis1=1, axis2=2)
        gap = eig[:, :, None] - eig[:, None, :]
        den = np.sum(gap * gap, axis=0)
        theta = -np.sum(B * gap, axis=0) / np.where(den > 0, den, 1.0)
        D = np.linalg.qr(D @ (np.eye(d) + theta))[0]
        B = D.T @ mats @ D
    return D, B


class _MclustModel:
    """What the 14 mclust models add to the diag/full storage they inherit."""

    name: ClassVar[str]
    #: human-readable structure: (volume, shape, orientation) each "equal", "variable" or
    #: "identity"/"axes"
    structure: ClassVar[tuple[str, str, str]]
    iterative: ClassVar[bool] = False

    def n_parameters(self, n_components: int, n_features: int) -> int:
        K, d = n_components, n_features
        vol, shape, orient = self.name
        n = {"E": 1, "V": K, "I": 0}[vol]
        n += {"E": d - 1, "V": K * (d - 1), "I": 0}[shape]
        n += {"E": d * (d - 1) // 2, "V": K * d * (d - 1) // 2, "I": 0}[orient]
        return n


class _DiagonalMclust(_MclustModel, DiagCovariance):
    moment = "diag"

    def from_scatter(self, nk, scatter, reg_covar, previous=None):
        W = _regularised(nk, scatter, reg_covar)  # (K, d) diagonals
        return self._covariances(nk, W, previous)

    def _covariances(self, nk: NDArray, W: NDArray, previous: NDArray | None) -> NDArray:
        raise NotImplementedError


class EII(_DiagonalMclust):
    """Spherical, equal volume: ``Σ_k = λ I``."""

    name = "EII"
    structure = ("equal", "identity", "identity")

    def _covariances(self, nk, W, previous):
        lam = W.sum() / (nk.sum() * W.shape[1])
        return np.full(W.shape, lam)


class VII(_DiagonalMclust):
    """Spherical, varying volume: ``Σ_k = λ_k I`` (scikit-learn's "spherical")."""

    name = "VII"
    structure = ("variable", "identity", "identity")

    def _covariances(self, nk, W, previous):
        lam = W.sum(axis=1) / (nk * W.shape[1])
        return np.repeat(lam[:, None], W.shape[1], axis=1)


class EEI(_DiagonalMclust):
    """Diagonal, equal volume and shape: ``Σ_k = λ B``."""

    name = "EEI"
    structure = ("equal", "equal", "axes")

    def _covariances(self, nk, W, previous):
        return np.broadcast_to(W.sum(axis=0) / nk.sum(), W.shape).copy()


class VEI(_DiagonalMclust):
    """Diagonal, varying volume, equal shape: ``Σ_k = λ_k B`` (iterative M-step)."""

    name = "VEI"
    structure = ("variable", "equal", "axes")
    iterative = True

    def _covariances(self, nk, W, previous):
        d = W.shape[1]
        # fixed point of Celeux & Govaert (1995): B ∝ Σ W_k / λ_k, λ_k = tr(W_k B⁻¹) / (d n_k)
        lam = np.ones(len(nk)) if previous is None else _geo_mean(previous)
        stall = [np.inf]
        for _ in range(INNER_MAX_ITER):
            B = (W / lam[:, None]).sum(axis=0)
            B = B / _geo_mean(B)
            new = (W / B).sum(axis=1) / (d * nk)
            lam, done = _fixed_point_step(lam, new, stall)
            if done:
                break
        return lam[:, None] * B


class EVI(_DiagonalMclust):
    """Diagonal, equal volume, varying shape: ``Σ_k = λ B_k``."""

    name = "EVI"
    structure = ("equal", "variable", "axes")

    def _covariances(self, nk, W, previous):
        g = _geo_mean(W)
        lam = g.sum() / nk.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            return lam * W / g[:, None]


class VVI(_DiagonalMclust):
    """Diagonal, varying volume and shape: ``Σ_k = λ_k B_k`` (scikit-learn's "diag")."""

    name = "VVI"
    structure = ("variable", "variable", "axes")

    def _covariances(self, nk, W, previous):
        return W / nk[:, None]


class _GeneralMclust(_MclustModel, FullCovariance):
    moment = "full"

    def from_scatter(self, nk, scatter, reg_covar, previous=None):
        W = _regularised(nk, scatter, reg_covar)
        cov = self._covariances(nk, W, previous)
        return (cov + np.swapaxes(cov, 1, 2)) / 2.0

    def _covariances(self, nk: NDArray, W: NDArray, previous: NDArray | None) -> NDArray:
        raise NotImplementedError


class EEE(_GeneralMclust):
    """Ellipsoidal, all equal: ``Σ_k = λ D A Dᵀ`` (scikit-learn's "tied")."""

    name = "EEE"
    structure = ("equal", "equal", "equal")
    common_orientation = True
    shared_factor = True

    def _covariances(self, nk, W, previous):
        return np.broadcast_to(W.sum(axis=0) / nk.sum(), W.shape).copy()


class VEE(_GeneralMclust):
    """Ellipsoidal, varying volume: ``Σ_k = λ_k C`` with ``det C = 1`` (iterative M-step)."""

    name = "VEE"
    structure = ("variable", "equal", "equal")
    common_orientation = True
    iterative = True

    def _covariances(self, nk, W, previous):
        d = W.shape[1]
        lam = np.ones(len(nk)) if previous is None else _volumes(previous)
        stall = [np.inf]
        for _ in range(INNER_MAX_ITER):
            C = np.tensordot(1.0 / lam, W, axes=1)
            C = C / np.linalg.det(C) ** (1.0 / d)
            if not _pd(C):
                return np.full(W.shape, np.nan)
            C_inv = linalg.cho_solve((linalg.cholesky(C, lower=True), True), np.eye(d))
            tr = np.einsum("kij,ij->k", W, C_inv)
            new = tr / (d * nk)
            lam, done = _fixed_point_step(lam, new, stall)
            if done:
                break
        return lam[:, None, None] * C


class EVE(_GeneralMclust):
    """Ellipsoidal, equal volume and orientation: ``Σ_k = λ D A_k Dᵀ`` (MM M-step)."""

    name = "EVE"
    structure = ("equal", "variable", "equal")
    common_orientation = True
    iterative = True

    def _covariances(self, nk, W, previous):
        D, A, trgt = _mm_orientation(W, nk, previous, variable_volume=False)
        lam = trgt / (nk.sum() * W.shape[1])
        return lam * np.einsum("ij,kj,lj->kil", D, A, D)


class VVE(_GeneralMclust):
    """Ellipsoidal, equal orientation: ``Σ_k = λ_k D A_k Dᵀ`` (MM M-step)."""

    name = "VVE"
    structure = ("variable", "variable", "equal")
    common_orientation = True
    iterative = True

    def _covariances(self, nk, W, previous):
        D, A, _ = _mm_orientation(W, nk, previous, variable_volume=True)
        return np.einsum("ij,kj,lj->kil", D, A, D)


class EEV(_GeneralMclust):
    """Ellipsoidal, equal volume and shape: ``Σ_k = λ D_k A D_kᵀ``."""

    name = "EEV"
    structure = ("equal", "equal", "variable")

    def _covariances(self, nk, W, previous):
        omega, D = _sorted_eigh(W)
        diag = omega.sum(axis=0) / nk.sum()  # λ A
        return np.einsum("kij,j,klj->kil", D, diag, D)


class VEV(_GeneralMclust):
    """Ellipsoidal, equal shape: ``Σ_k = λ_k D_k A D_kᵀ`` (iterative M-step)."""

    name = "VEV"
    structure = ("variable", "equal", "variable")
    iterative = True

    def _covariances(self, nk, W, previous):
        d = W.shape[1]
        omega, D = _sorted_eigh(W)
        lam = np.ones(len(nk)) if previous is None else _volumes(previous)
        stall = [np.inf]
        for _ in range(INNER_MAX_ITER):
            A = (omega / lam[:, None]).sum(axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                A = A / _geo_mean(A)
            with np.errstate(divide="ignore", invalid="ignore"):
                new = (omega / A).sum(axis=1) / (d * nk)
            lam, done = _fixed_point_step(lam, new, stall)
            if done:
                break
        return np.einsum("kij,kj,klj->kil", D, lam[:, None] * A, D)


class EVV(_GeneralMclust):
    """Ellipsoidal, equal volume: ``Σ_k = λ C_k`` with ``det C_k = 1``."""

    name = "EVV"
    structure = ("equal", "variable", "variable")

    def _covariances(self, nk, W, previous):
        d = W.shape[1]
        g = np.maximum(np.linalg.det(W), 0.0) ** (1.0 / d)
        lam = g.sum() / nk.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            return lam * W / g[:, None, None]


class VVV(_GeneralMclust):
    """Ellipsoidal, all varying: ``Σ_k = λ_k D_k A_k D_kᵀ`` (scikit-learn's "full")."""

    name = "VVV"
    structure = ("variable", "variable", "variable")

    def _covariances(self, nk, W, previous):
        return W / nk[:, None, None]


def _fixed_point_step(lam: NDArray, new: NDArray, stall: list[float]) -> tuple[NDArray, bool]:
    """Accept a fixed-point update; done at ``INNER_TOL`` relative change, at the rounding
    floor (the change stopped shrinking: linear convergence has reached the last digits), or
    on a non-finite value (a singular component, reported by the caller's factorisation)."""
    if not np.all(np.isfinite(new)):
        return new, True
    change = float(np.max(np.abs(new - lam) / np.maximum(np.abs(new), np.finfo(float).tiny)))
    floor = change < 1e-13 and change >= stall[0]
    stall[0] = change
    return new, change <= INNER_TOL or floor


def _pd(matrix: NDArray) -> bool:
    return bool(np.all(np.isfinite(matrix))) and np.linalg.eigvalsh(matrix)[0] > 0


def _volumes(covariances: NDArray) -> NDArray:
    """``det(Σ_k)^(1/d)`` of (K, d, d) matrices (1 where not positive definite)."""
    sign, logdet = np.linalg.slogdet(covariances)
    lam = np.exp(logdet / covariances.shape[1])
    return np.where((sign > 0) & np.isfinite(lam), lam, 1.0)


def _mm_orientation(
    W: NDArray, nk: NDArray, previous: NDArray | None, *, variable_volume: bool
) -> tuple[NDArray, NDArray, float]:
    """Common orientation ``D`` and shapes ``A_k`` (EVE, VVE) by the MM algorithms of Browne &
    McNicholas (2014).

    ``D`` minimises ``Σ_k tr(W_k D A_k⁻¹ Dᵀ)`` over orthogonal matrices. Both majorisations
    used write the objective as a concave quadratic in ``D`` plus a constant (shifting
    ``W_k`` by its largest eigenvalue, then ``A_k⁻¹`` by its largest entry) and minimise the
    tangent plane, a linear function of ``D`` whose minimiser over orthogonal matrices is
    given by one SVD; each step cannot increase the objective. Shapes are then the normalised
    diagonals of ``Dᵀ W_k D``. Starts from ``previous`` (the last EM iteration's
    covariances) or, with none, from the axes of the components' scatter.

    Returns
    -------
    D : ndarray of shape (d, d)
    A : ndarray of shape (K, d)
        ``A_k`` with determinant one (EVE) or ``λ_k A_k`` (VVE).
    objective : float
        ``Σ_k tr(Dᵀ W_k D A_k⁻¹)`` at the returned ``D`` and determinant-one shapes.
    """
    K, d, _ = W.shape
    # a cold start from the pooled covariance's axes (mclust starts from D = I): on data with
    # a common orientation they are nearly the answer, and the slow MM needs far fewer steps
    start = previous if previous is not None and np.all(np.isfinite(previous)) else None
    if start is None:
        start = W / nk[:, None, None]
    D = _common_eigenvectors(start)
    A = np.einsum("ji,kjl,li->ki", D, start, D)
    if not variable_volume:  # EVE's shapes have determinant one; VVE's carry λ_k
        with np.errstate(divide="ignore", invalid="ignore"):
            A = A / _geo_mean(A)[:, None]
    if not (np.all(np.isfinite(A)) and np.all(A > 0)):
        D = np.eye(d)
        A = np.diagonal(W, axis1=1, axis2=2) / nk[:, None] if variable_volume else np.ones((K, d))
    omega = np.linalg.eigvalsh(W)[:, -1]
    from gaussmix._mm_kernel import mm_orientation_loop

    D, A, target, ok = mm_orientation_loop(
        np.ascontiguousarray(W), np.asarray(nk, dtype=np.float64), np.ascontiguousarray(D),
        np.ascontiguousarray(A), np.ascontiguousarray(omega), variable_volume, INNER_TOL,
        INNER_MAX_ITER,
    )  # fmt: skip
    if not ok:
        # a component whose scatter has no extent along an axis of D is singular: NaN for it
        # alone, so the factorisation names that component
        diag = np.einsum("ji,kjl,li->ki", D, W, D)
        bad = ~np.all(diag > np.sqrt(np.finfo(np.float64).eps) * np.max(diag), axis=1)
        if not np.any(bad):
            bad[:] = True
        A = diag / nk[:, None] if variable_volume else diag / _geo_mean(np.abs(diag))[:, None]
        A[bad] = np.nan
        return D, A, np.nan
    return D, A, target



def _suggest(reg_covar: float | None, diagonal: NDArray) -> float:
    scale = float(np.max(np.abs(diagonal))) if diagonal.size else 1.0
    base = 1e-6 * scale if scale > 0 else 1e-6
    return max(base, 10.0 * (reg_covar or 0.0), 1e-12)


def _collapsed(k: int, reg_covar: float | None, covariances: NDArray) -> CollapsedComponentError:
    diag = covariances if covariances.ndim <= 2 else np.diagonal(covariances, axis1=1, axis2=2)
    return CollapsedComponentError(k, reg_covar, _suggest(reg_covar, np.asarray(diag).ravel()))


#: the 14 mclust model names, in mclust's order
MCLUST_MODELS = (
    "EII", "VII", "EEI", "VEI", "EVI", "VVI",
    "EEE", "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV",
)  # fmt: skip
#: scikit-learn name -> the mclust model it is
SKLEARN_EQUIVALENT = {"full": "VVV", "tied": "EEE", "diag": "VVI", "spherical": "VII"}

COVARIANCE_MODELS: dict[str, CovarianceModel] = {
    m.name: m
    for m in (
        FullCovariance(),
        TiedCovariance(),
        DiagCovariance(),
        SphericalCovariance(),
        EII(), VII(), EEI(), VEI(), EVI(), VVI(),
        EEE(), VEE(), EVE(), VVE(), EEV(), VEV(), EVV(), VVV(),
    )
}


def get_model(covariance_type: str | CovarianceModel) -> CovarianceModel:
    """Look up a covariance model by its ``covariance_type`` name.

    Parameters
    ----------
    covariance_type : str or CovarianceModel
        One of scikit-learn's ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``, one of
        mclust's 14 names (``"EII"`` ... ``"VVV"``), or a model instance.

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
