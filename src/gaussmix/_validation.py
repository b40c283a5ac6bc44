"""Input checks shared by the estimator and every executor (no I/O, no estimator)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["check_sample_weight"]


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
