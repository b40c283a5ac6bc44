"""Maths of one multivariate Gaussian: Cholesky factors, log-density, log-sum-exp, MLE.

No I/O and no estimator here: every function takes arrays that were already checked.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import linalg

LOG_2PI = float(np.log(2.0 * np.pi))

__all__ = [
    "LOG_2PI",
    "MultivariateNormal",
    "check_feature_indices",
    "cholesky_lower",
    "condition_gaussian",
    "logsumexp",
]


def logsumexp(a: NDArray, axis: int = -1, keepdims: bool = False) -> NDArray:
    """Stable ``log(sum(exp(a), axis))``.

    Parameters
    ----------
    a : ndarray
        Values in log space; ``-inf`` entries are allowed.
    axis : int, default=-1
        Axis to reduce.
    keepdims : bool, default=False
        Keep the reduced axis with length one.

    Returns
    -------
    out : ndarray
        The reduced array; ``-inf`` where every entry along ``axis`` is ``-inf``.
    """
    a = np.asarray(a)
    m = np.max(a, axis=axis, keepdims=True)
    # a row that is all -inf has max -inf; shifting by it would give nan
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    if not keepdims:
        out = np.squeeze(out, axis=axis)
    return out


def cholesky_lower(matrix: NDArray, *, what: str = "covariance") -> NDArray:
    """Lower Cholesky factor ``L`` with ``matrix = L @ L.T``.

    Parameters
    ----------
    matrix : ndarray of shape (d, d)
        Symmetric positive-definite matrix.
    what : str, default="covariance"
        Name used in the error message.

    Returns
    -------
    L : ndarray of shape (d, d)
        Lower-triangular factor.

    Raises
    ------
    ValueError
        If ``matrix`` is not positive definite.
    """
    try:
        return linalg.cholesky(matrix, lower=True, check_finite=False)
    except linalg.LinAlgError:
        raise ValueError(f"the {what} matrix is not positive definite") from None


def check_feature_indices(
    indices: ArrayLike, n_features: int, *, what: str = "features", keep_one: bool = False
) -> NDArray:
    """Validated, distinct feature indices in ``[0, n_features)``, in the order given.

    Parameters
    ----------
    indices : int or array-like of int
        Feature indices (a scalar is one feature).
    n_features : int
        Dimension d.
    what : str, default="features"
        Parameter name quoted in error messages.
    keep_one : bool, default=False
        Also require that at least one feature is left out (conditioning needs a rest).

    Returns
    -------
    indices : ndarray of intp, shape (n_selected,)

    Raises
    ------
    ValueError
        Empty, repeated, non-integer or out-of-range indices.
    """
    arr = np.atleast_1d(np.asarray(indices))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty list of feature indices, got {indices!r}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "b" or not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{what} must be integer feature indices, got {indices!r}")
    arr = arr.astype(np.intp)
    bad = arr[(arr < 0) | (arr >= n_features)]
    if bad.size:
        raise ValueError(
            f"{what}: index {int(bad[0])} is out of range for {n_features} features "
            f"(valid: 0..{n_features - 1})"
        )
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{what} must not repeat a feature, got {arr.tolist()}")
    if keep_one and arr.size >= n_features:
        raise ValueError(f"{what} must leave at least one feature to condition on the others")
    return arr


def condition_gaussian(
    mean: NDArray, cov: NDArray, given: NDArray, values: NDArray
) -> tuple[NDArray, NDArray, NDArray]:
    """Condition N(μ, Σ) on some coordinates, for many rows of their values at once.

    With x the ``given`` coordinates and y the others (ascending index order), and
    ``Σ_xx = L Lᵀ`` (Cholesky), ``A = L⁻¹ Σ_xy`` and ``z = L⁻¹ (x − μ_x)``:
    ``E[y | x] = μ_y + Aᵀ z``, ``Cov[y | x] = Σ_yy − Aᵀ A`` (the Schur complement), and
    ``log N(x; μ_x, Σ_xx) = −(d_x log 2π + 2 Σ log L_ii + zᵀz) / 2``. Only triangular solves:
    no inverse is formed.

    Parameters
    ----------
    mean : ndarray of shape (d,)
    cov : ndarray of shape (d, d)
        Symmetric positive definite.
    given : ndarray of intp, shape (d_x,)
        Checked indices of the observed coordinates (``values`` columns in this order).
    values : ndarray of shape (n, d_x)
        Observed values, one row per case.

    Returns
    -------
    means : ndarray of shape (n, d - d_x)
        Conditional means.
    cov : ndarray of shape (d - d_x, d - d_x)
        Conditional covariance (the same for every row).
    log_marginal : ndarray of shape (n,)
        ``log N(x; μ_x, Σ_xx)`` of each row.
    """
    rest = np.setdiff1d(np.arange(mean.shape[0]), given)
    L = cholesky_lower(cov[np.ix_(given, given)], what="observed features' covariance")
    A = linalg.solve_triangular(L, cov[np.ix_(given, rest)], lower=True, check_finite=False)
    schur = cov[np.ix_(rest, rest)] - A.T @ A
    z = linalg.solve_triangular(L, (values - mean[given]).T, lower=True, check_finite=False)
    means = mean[rest] + (A.T @ z).T
    log_det = 2.0 * float(np.sum(np.log(np.diag(L))))
    log_marginal = -0.5 * (given.size * LOG_2PI + log_det + np.einsum("ij,ij->j", z, z))
    return means, (schur + schur.T) / 2.0, log_marginal


def _check_symmetric(matrix: NDArray, what: str) -> None:
    scale = max(float(np.max(np.abs(matrix))), np.finfo(np.float64).tiny)
    if not np.allclose(matrix, matrix.T, rtol=0.0, atol=1e-10 * scale):
        raise ValueError(f"the {what} matrix is not symmetric")


class MultivariateNormal:
    """The multivariate Gaussian N(x; μ, Σ).

    The Cholesky factor of ``cov`` is computed once; the log-density is a triangular solve
    and a sum of squares, and the log-determinant comes from the factor's diagonal, so no
    explicit inverse or determinant is ever formed.

    Parameters
    ----------
    mean : array-like of shape (n_features,)
        Mean vector μ.
    cov : array-like of shape (n_features, n_features)
        Symmetric positive-definite covariance matrix Σ.

    Attributes
    ----------
    mean : ndarray of shape (n_features,)
        Mean vector.
    cov : ndarray of shape (n_features, n_features)
        Covariance matrix.
    cov_cholesky : ndarray of shape (n_features, n_features)
        Lower Cholesky factor ``L`` of ``cov``.
    log_det_cov : float
        ``log det Σ = 2 Σ_i log L_ii``.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmix import MultivariateNormal
    >>> mvn = MultivariateNormal([0.0, 0.0], [[1.0, 0.5], [0.5, 2.0]])
    >>> float(np.round(mvn.logpdf([[0.0, 0.0]])[0], 6))
    -2.133394
    """

    def __init__(self, mean: ArrayLike, cov: ArrayLike) -> None:
        mean = np.asarray(mean, dtype=np.float64)
        cov = np.asarray(cov, dtype=np.float64)
        if mean.ndim != 1 or mean.shape[0] == 0:
            raise ValueError(f"mean must be a non-empty 1-D array, got shape {mean.shape}")
        d = mean.shape[0]
        if cov.shape != (d, d):
            raise ValueError(f"cov must have shape ({d}, {d}) to match mean, got {cov.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
            raise ValueError("mean and cov must contain only finite values")
        _check_symmetric(cov, "covariance")
        self.mean = mean
        self.cov = cov
        self.cov_cholesky = cholesky_lower(cov)
        self.log_det_cov = 2.0 * float(np.sum(np.log(np.diag(self.cov_cholesky))))

    @property
    def n_features(self) -> int:
        """Dimension d of the distribution."""
        return self.mean.shape[0]

    def _as_rows(self, X: ArrayLike) -> NDArray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1 and self.n_features == 1:
            X = X[:, None]
        elif X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must have shape (n_samples, {self.n_features}), got {np.shape(X)}")
        return X

    def logpdf(self, X: ArrayLike) -> NDArray:
        """Log-density log N(x; μ, Σ) of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points; a 1-D array is one point (or, when d = 1, a column of points).

        Returns
        -------
        logpdf : ndarray of shape (n_samples,)
            ``-(d log 2π + log det Σ + (x-μ)ᵀ Σ⁻¹ (x-μ)) / 2``.
        """
        X = self._as_rows(X)
        z = linalg.solve_triangular(
            self.cov_cholesky, (X - self.mean).T, lower=True, check_finite=False
        )
        maha = np.einsum("ij,ij->j", z, z)
        return -0.5 * (self.n_features * LOG_2PI + self.log_det_cov + maha)

    def pdf(self, X: ArrayLike) -> NDArray:
        """Density N(x; μ, Σ) of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points.

        Returns
        -------
        pdf : ndarray of shape (n_samples,)
            ``exp(logpdf(X))``.
        """
        return np.exp(self.logpdf(X))

    def sample(self, n: int, random_state: int | np.random.Generator | None = None) -> NDArray:
        """Draw ``n`` points as ``μ + L z`` with z standard normal.

        Parameters
        ----------
        n : int
            Number of points, >= 0.
        random_state : int, numpy.random.Generator or None
            Seed or generator.

        Returns
        -------
        X : ndarray of shape (n, n_features)
            The sample.
        """
        if int(n) != n or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        rng = np.random.default_rng(random_state)
        z = rng.standard_normal((int(n), self.n_features))
        return self.mean + z @ self.cov_cholesky.T

    def marginal(self, indices: ArrayLike) -> MultivariateNormal:
        """The distribution of some coordinates: N(μ_I, Σ_II).

        Parameters
        ----------
        indices : int or array-like of int
            Coordinates to keep, in the order wanted.

        Returns
        -------
        mvn : MultivariateNormal
        """
        idx = check_feature_indices(indices, self.n_features, what="indices")
        return MultivariateNormal(self.mean[idx], self.cov[np.ix_(idx, idx)])

    def condition(self, indices: ArrayLike, values: ArrayLike) -> MultivariateNormal:
        """The distribution of the other coordinates given the values of ``indices``.

        Mean ``μ_y + Σ_yx Σ_xx⁻¹ (x − μ_x)`` and covariance ``Σ_yy − Σ_yx Σ_xx⁻¹ Σ_xy``,
        computed from the Cholesky factor of ``Σ_xx`` (no explicit inverse). The remaining
        coordinates keep their ascending order.

        Parameters
        ----------
        indices : int or array-like of int
            Observed coordinates; at least one coordinate must remain.
        values : array-like of shape (len(indices),)
            Their values.

        Returns
        -------
        mvn : MultivariateNormal
        """
        idx = check_feature_indices(indices, self.n_features, what="indices", keep_one=True)
        x = np.asarray(values, dtype=np.float64)
        if x.shape != (idx.size,) and not (x.ndim == 0 and idx.size == 1):
            raise ValueError(
                f"values must have shape ({idx.size},) to match indices, got {np.shape(values)}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("values must contain only finite values")
        means, cov, _ = condition_gaussian(self.mean, self.cov, idx, x.reshape(1, -1))
        return MultivariateNormal(means[0], cov)

    @classmethod
    def fit(cls, X: ArrayLike, sample_weight: ArrayLike | None = None) -> MultivariateNormal:
        """Maximum-likelihood estimate: the sample mean and the 1/N sample covariance.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; weight w counts a row w times (the covariance divides by
            the total weight).

        Returns
        -------
        mvn : MultivariateNormal
            The fitted distribution.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X contains NaN or infinity")
        if sample_weight is None:
            w = np.ones(X.shape[0])
        else:
            w = np.asarray(sample_weight, dtype=np.float64)
            if w.shape != (X.shape[0],):
                raise ValueError(f"sample_weight must have shape ({X.shape[0]},), got {w.shape}")
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError("sample_weight must be finite and non-negative")
        total = w.sum()
        if total <= 0:
            raise ValueError("sample_weight sums to zero")
        mean = w @ X / total
        # center first: raw moments lose digits far from the origin
        centered = X - mean
        cov = (centered * w[:, None]).T @ centered / total
        return cls(mean, (cov + cov.T) / 2.0)

    def __repr__(self) -> str:
        return f"MultivariateNormal(n_features={self.n_features})"
