"""Input checks shared by the estimator and every executor (no I/O, no estimator)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MAX_ABS",
    "check_factors_fit",
    "check_sample_weight",
    "check_scale",
    "normalise_sample_weight",
]


def check_sample_weight(sample_weight: Any, n_samples: int, *, what: str = "X") -> NDArray | None:
    """Row weights as a float64 array, or None.

    Parameters
    ----------
    sample_weight : array-like of shape (n_samples,), scalar or None
        A scalar is broadcast to every row.
    n_samples : int
        Rows the weights must match.
    what : str, default="X"
        Name of the data in the shape error.

    Returns
    -------
    w : ndarray of shape (n_samples,) or None

    Raises
    ------
    TypeError
        If the weights are not numeric.
    ValueError
        If their shape is wrong, or one is NaN, infinite or negative.
    """
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.ndim == 0:
        w = np.full(n_samples, float(w))
    if w.shape != (n_samples,):
        raise ValueError(
            f"sample_weight must have shape ({n_samples},) to match {what}, got {w.shape}"
        )
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight contains NaN or infinity")
    if np.any(w < 0):
        raise ValueError("sample_weight must be non-negative")
    return w


# Largest |x| accepted, per working precision. Squared differences of such values, and their
# sums over many rows, stay far below overflow (the square root of the largest float is 1.3e154
# in float64, 1.8e19 in float32). Beyond it k-means, the E-step's moments and the covariances
# themselves (about x²) would overflow, so the data is refused rather than fitted to inf or NaN.
MAX_ABS: dict[np.dtype, float] = {np.dtype(np.float64): 1e150, np.dtype(np.float32): 1e15}


def check_scale(X: NDArray, *, what: str = "X", largest: float | None = None) -> None:
    """Refuse values too large in magnitude for the working precision ``X.dtype``.

    Parameters
    ----------
    X : ndarray of float32 or float64
        Finite data in its working precision.
    what : str, default="X"
        Name of the data in the error.
    largest : float, optional
        ``max |x|`` when the caller has it (one pass fewer over ``X``).

    Raises
    ------
    ValueError
        If some ``|x|`` exceeds :data:`MAX_ABS` for ``X.dtype``.
    """
    if X.size == 0:
        return
    limit = MAX_ABS.get(np.dtype(X.dtype), MAX_ABS[np.dtype(np.float64)])
    # max and min: two passes without an (n_samples, n_features) temporary
    # fmax/fmin skip NaN (missing values), where max/min would return NaN and pass any scale
    if largest is None:
        largest = max(float(np.fmax.reduce(X, axis=None)), -float(np.fmin.reduce(X, axis=None)))
    if largest > limit:
        raise ValueError(
            f"{what} has values up to {largest:.3g} in absolute value, beyond the {limit:g} "
            f"that {np.dtype(X.dtype).name} arithmetic supports (squared distances would "
            "overflow): divide the data by a constant c first; log-likelihoods then shift by "
            "d·log(c) per row"
        )


def normalise_sample_weight(sample_weight: NDArray) -> NDArray:
    """Weights rescaled to sum to their number of rows (mean 1), which changes no fit.

    Weights mean repeated rows, so only their ratios matter; on their own scale, uniform
    weights of 1e-18 would vanish against the M-step's guard on empty components and weights
    of 1e300 would overflow the moments.

    Parameters
    ----------
    sample_weight : ndarray of shape (n_samples,)
        Checked weights (finite, non-negative) with a positive sum.

    Returns
    -------
    w : ndarray of shape (n_samples,)
        ``sample_weight * n_samples / sum(sample_weight)``, computed without overflow; uniform
        weights become exactly 1.
    """
    w = sample_weight / np.max(sample_weight)
    return w * (w.shape[0] / w.sum())


def check_factors_fit(factors: NDArray, dtype: Any) -> None:
    """Refuse precision factors whose Mahalanobis terms would overflow the working precision.

    A variance of 1e-300 is positive in float64 (the M-step's precision), but its factor
    1e150 is infinite in float32, and squared it overflows float64 as well: the component has
    collapsed for the arithmetic that evaluates it, and is reported as such rather than as a
    non-finite log-likelihood.

    Parameters
    ----------
    factors : ndarray of shape (n_components, ...)
        Per-component precision factors (``CovarianceModel.component_factors``).
    dtype : float32 or float64
        Precision of the E-step arithmetic.

    Raises
    ------
    CollapsedComponentError
        Naming the first component whose largest factor entry reaches the square root of the
        largest ``dtype`` number (variances below about 3e-39 in float32, 6e-309 in float64).
    """
    from gaussmix._covariance import CollapsedComponentError

    limit = np.sqrt(np.finfo(dtype).max)
    largest = np.abs(factors).reshape(factors.shape[0], -1).max(axis=1)
    bad = np.flatnonzero(~(largest < limit))
    if bad.size:
        # reg_covar = 1e-6 (the default) keeps every factor below 1e3
        raise CollapsedComponentError(int(bad[0]), None, 1e-6)
