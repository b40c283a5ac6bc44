"""The mixture as a distribution: marginals and conditionals of a Gaussian mixture.

For a mixture p(x, y) = Σ_k φ_k N([x, y]; μ_k, Σ_k):

- the marginal of some features is the mixture of the components' marginals, with the same
  weights: Σ_k φ_k N(x; μ_k,x, Σ_k,xx);
- the conditional p(y | x) is again a mixture, with weights
  φ_k N(x; μ_k,x, Σ_k,xx) / Σ_j φ_j N(x; μ_j,x, Σ_j,xx), means
  μ_k,y + Σ_k,yx Σ_k,xx⁻¹ (x − μ_k,x) and covariances the Schur complements
  Σ_k,yy − Σ_k,yx Σ_k,xx⁻¹ Σ_k,xy (:func:`gaussmix._gaussian.condition_gaussian`, triangular
  solves only).

Every covariance model works through ``model.full_matrix``. The result keeps the model's
structure where it provably survives: the marginal of a diagonal, spherical or tied model is
diagonal, spherical or tied; so is the conditional (a diagonal component has no cross-covariance,
so conditioning leaves its y-block unchanged; a tied model's Schur complement is the same for
every component). Every other structure comes back as ``"full"``.

Numpy arrays in, numpy arrays out; no estimator and no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gaussmix._gaussian import check_feature_indices, condition_gaussian, logsumexp
from gaussmix._params import MixtureParams

__all__ = [
    "ConditionalMixtures",
    "MixtureArrays",
    "condition",
    "feature_separation",
    "full_covariances",
    "marginal",
]


@dataclass(frozen=True)
class MixtureArrays:
    """Parameters of a mixture, as :meth:`GaussianMixture.from_parameters` takes them.

    Attributes
    ----------
    weights : ndarray of shape (n_components,)
    means : ndarray of shape (n_components, n_features)
    covariances : ndarray
        Shaped as ``covariance_type`` requires.
    covariance_type : str
    """

    weights: NDArray
    means: NDArray
    covariances: NDArray
    covariance_type: str


def full_covariances(params: MixtureParams) -> NDArray:
    """Every component's (d, d) covariance matrix, shape (K, d, d), float64."""
    K, d = params.n_components, params.n_features
    cov = np.asarray(params.covariances, dtype=np.float64)
    return np.stack([params.model.full_matrix(cov, k, d) for k in range(K)])


# structures that survive marginalisation and conditioning, and how to pack (K, d, d) into them
_PACK: dict[str, Callable[[NDArray], NDArray]] = {
    "full": lambda full: full,
    "tied": lambda full: full[0],
    "diag": lambda full: np.diagonal(full, axis1=1, axis2=2).copy(),
    "spherical": lambda full: full[:, 0, 0].copy(),
}


def _packed(name: str, full: NDArray) -> tuple[NDArray, str]:
    if name in _PACK:
        return _PACK[name](full), name
    return full, "full"


def marginal(params: MixtureParams, features: NDArray) -> MixtureArrays:
    """The mixture of the chosen features: same weights, means and covariance blocks.

    Parameters
    ----------
    params : MixtureParams
    features : array-like of int
        Features to keep, in the order wanted.

    Returns
    -------
    marginal : MixtureArrays
    """
    idx = check_feature_indices(features, params.n_features)
    full = full_covariances(params)[:, idx][:, :, idx]
    covariances, name = _packed(params.model.name, full)
    return MixtureArrays(
        np.asarray(params.weights, dtype=np.float64).copy(),
        np.asarray(params.means, dtype=np.float64)[:, idx],
        covariances,
        name,
    )


@dataclass(frozen=True)
class ConditionalMixtures:
    """p(y | x) for many rows x: one mixture per row, sharing its covariances.

    The conditional covariances (Schur complements) do not depend on x, so they are stored once.

    Attributes
    ----------
    weights : ndarray of shape (n_rows, n_components)
        ``p(z=k | x)`` of each row; rows sum to one.
    means : ndarray of shape (n_rows, n_components, n_outputs)
        Conditional mean of each component for each row.
    covariances : ndarray of shape (n_components, n_outputs, n_outputs)
        Conditional covariance of each component.
    covariance_type : str
        Structure of the conditional mixtures (see :meth:`parameters`).
    given : ndarray of shape (n_given,)
        Indices of the observed features in the joint.
    outputs : ndarray of shape (n_outputs,)
        Indices in the joint of the features y, ascending.
    """

    weights: NDArray
    means: NDArray
    covariances: NDArray
    covariance_type: str
    given: NDArray
    outputs: NDArray

    def __len__(self) -> int:
        return self.weights.shape[0]

    @property
    def mean(self) -> NDArray:
        """``E[y | x] = Σ_k p(z=k | x) m_k(x)``, shape (n_rows, n_outputs)."""
        return np.einsum("nk,nkd->nd", self.weights, self.means)

    @property
    def covariance(self) -> NDArray:
        """``Cov[y | x]`` by the law of total covariance, shape (n_rows, n_outputs, n_outputs).

        ``Σ_k w_k (S_k + (m_k − m)(m_k − m)ᵀ)``: within-component plus between-component spread,
        written around the mean m so that no large terms cancel.
        """
        dev = self.means - self.mean[:, None, :]
        within = np.einsum("nk,kij->nij", self.weights, self.covariances)
        between = np.einsum("nk,nki,nkj->nij", self.weights, dev, dev)
        return within + between

    @property
    def variance(self) -> NDArray:
        """Diagonal of :attr:`covariance`, shape (n_rows, n_outputs)."""
        dev = self.means - self.mean[:, None, :]
        within = self.weights @ np.diagonal(self.covariances, axis1=1, axis2=2)
        return within + np.einsum("nk,nkd->nd", self.weights, dev * dev)

    def parameters(self, row: int) -> MixtureArrays:
        """The conditional mixture of one row, in the structure ``covariance_type`` names."""
        n = len(self)
        if not -n <= row < n:
            raise IndexError(f"row {row} is out of range for {n} rows")
        covariances, _ = _packed(self.covariance_type, self.covariances)
        return MixtureArrays(
            self.weights[row].copy(), self.means[row].copy(), covariances, self.covariance_type
        )


def condition(params: MixtureParams, given: NDArray, values: NDArray) -> ConditionalMixtures:
    """Condition the mixture on the values of some features, for every row of ``values``.

    Parameters
    ----------
    params : MixtureParams
    given : array-like of int
        Indices of the observed features; at least one feature must remain.
    values : ndarray of shape (n_rows, len(given))
        Checked, finite values.

    Returns
    -------
    conditional : ConditionalMixtures
    """
    idx = check_feature_indices(given, params.n_features, what="features", keep_one=True)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != idx.size:
        raise ValueError(
            f"values must have shape (n_rows, {idx.size}) to match the features, "
            f"got {values.shape}"
        )
    K, n = params.n_components, values.shape[0]
    rest = np.setdiff1d(np.arange(params.n_features), idx)
    full = full_covariances(params)
    mu = np.asarray(params.means, dtype=np.float64)
    means = np.empty((n, K, rest.size))
    covs = np.empty((K, rest.size, rest.size))
    log_w = np.empty((n, K))
    with np.errstate(divide="ignore"):
        log_phi = np.log(np.asarray(params.weights, dtype=np.float64))
    for k in range(K):
        means[:, k], covs[k], log_marginal = condition_gaussian(mu[k], full[k], idx, values)
        log_w[:, k] = log_phi[k] + log_marginal
    # normalised in log space: far from every component the densities underflow, their ratios
    # do not
    weights = np.exp(log_w - logsumexp(log_w, axis=1)[:, None])
    name = params.model.name if params.model.name in _PACK else "full"
    return ConditionalMixtures(weights, means, covs, name, idx, rest)


def feature_separation(params: MixtureParams) -> NDArray:
    """How much each feature separates the components, in [0, 1], shape (n_features,).

    The share of the feature's mixture variance that lies between the components:
    ``B_j / (B_j + W_j)`` with ``B_j = Σ_k φ_k (μ_kj − m_j)²`` (``m_j = Σ_k φ_k μ_kj``) and
    ``W_j = Σ_k φ_k Σ_k,jj`` (the law of total variance, per feature). One component gives 0.
    """
    w = np.asarray(params.weights, dtype=np.float64)
    mu = np.asarray(params.means, dtype=np.float64)
    within = w @ np.diagonal(full_covariances(params), axis1=1, axis2=2)
    between = w @ (mu - w @ mu) ** 2
    total = between + within
    return np.divide(between, total, out=np.zeros_like(total), where=total > 0)
