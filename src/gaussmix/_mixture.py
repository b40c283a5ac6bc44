"""The mixture as a distribution: joint, marginal and posterior probabilities, and sampling.

Functions of :class:`~gaussmix._params.MixtureParams` and in-memory rows; they work chunk by
chunk so that no more than one (chunk, K) temporary is alive at a time.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from gaussmix._gaussian import logsumexp
from gaussmix._params import MixtureParams

__all__ = [
    "log_joint",
    "log_resp_max",
    "predict",
    "predict_proba",
    "sample",
    "score_samples",
]

_ROWS = 1 << 20  # elements of a (rows, K) block


def _blocks(n_rows: int, n_components: int):
    size = max(256, _ROWS // max(n_components, 1))
    for start in range(0, n_rows, size):
        yield slice(start, min(start + size, n_rows))


def _log_joint(params: MixtureParams, X: NDArray) -> NDArray:
    # NaN entries are missing: the marginal density of the observed ones (float64)
    if X.size and np.isnan(np.min(X)):
        from gaussmix._missing import log_joint as observed_log_joint

        return observed_log_joint(params, X)
    return params.log_joint(X)


def log_joint(params: MixtureParams, X: NDArray) -> NDArray:
    """``log p(x_n, z=k)``, shape (n_samples, n_components); over the observed entries of
    rows with NaN (a row without any gets ``log φ_k``)."""
    return _log_joint(params, X)


def score_samples(params: MixtureParams, X: NDArray) -> NDArray:
    """``log p(x_n) = logsumexp_k log p(x_n, z=k)``, shape (n_samples,), float64."""
    out = np.empty(X.shape[0])
    for block in _blocks(X.shape[0], params.n_components):
        out[block] = logsumexp(_log_joint(params, X[block]), axis=1)
    return out


def predict_proba(params: MixtureParams, X: NDArray) -> NDArray:
    """Posterior ``p(z=k | x_n)``, shape (n_samples, n_components); rows sum to one."""
    out = np.empty((X.shape[0], params.n_components), dtype=X.dtype)
    for block in _blocks(X.shape[0], params.n_components):
        lj = _log_joint(params, X[block])
        # normalised by their sum, not by exp(log-sum-exp): far from the model, where
        # |log p| > 2**53, log 2 is lost in the log-sum-exp and two tied components got 1 each
        r = np.exp(lj - np.max(lj, axis=1, keepdims=True))
        out[block] = r / np.sum(r, axis=1, keepdims=True)
    return out


def predict(params: MixtureParams, X: NDArray) -> NDArray:
    """Most probable component of each row, shape (n_samples,)."""
    out = np.empty(X.shape[0], dtype=np.intp)
    for block in _blocks(X.shape[0], params.n_components):
        out[block] = np.argmax(_log_joint(params, X[block]), axis=1)
    return out


def log_resp_max(params: MixtureParams, X: NDArray) -> float:
    """``Σ_n log max_k p(z=k | x_n)`` (the classification term of ICL), float64."""
    total = 0.0
    for block in _blocks(X.shape[0], params.n_components):
        lj = _log_joint(params, X[block]).astype(np.float64)
        total += float(np.sum(np.max(lj, axis=1) - logsumexp(lj, axis=1)))
    return total


def sample(
    params: MixtureParams, n_samples: int, rng: np.random.RandomState
) -> tuple[NDArray, NDArray]:
    """Draw ``z_n ~ Categorical(φ)``, then ``x_n | z_n ~ N(μ_z, Σ_z)``, for n = 1..N.

    Parameters
    ----------
    params : MixtureParams
    n_samples : int
    rng : numpy.random.RandomState

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    labels : ndarray of shape (n_samples,)
        The latent component of each row, in draw order.
    """
    labels = rng.choice(params.n_components, size=n_samples, p=params.weights)
    X = np.empty((n_samples, params.n_features))
    for k in range(params.n_components):
        rows = np.flatnonzero(labels == k)
        if rows.size:
            X[rows] = params.model.sample_component(
                rng, params.means[k], params.covariances, k, rows.size
            )
    return X, labels
