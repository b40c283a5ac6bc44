"""gaussmix: Gaussian mixture models, exact and fast.

Public names
------------
MultivariateNormal
    One Gaussian: density, log-density, sampling, maximum-likelihood fit.
GaussianMixture
    The scikit-learn compatible mixture estimator (EM on additive sufficient statistics);
    also a distribution: ``marginal``, ``condition``, ``condition_rows``, ``summary``.
GaussianMixtureImputer
    A scikit-learn transformer filling missing values (NaN) from a mixture fitted on the
    observed entries (conditional means, or draws for multiple imputation).
GaussianMixtureRegressor
    Gaussian mixture regression: a scikit-learn regressor predicting E[y | x] from a joint
    mixture on [X, y].
ConditionalMixtures
    p(y | x) for many rows at once (``GaussianMixture.condition_rows``).
MixtureSummary
    What ``GaussianMixture.summary`` returns (prints like mclust's summary).
CollapsedComponentError
    Raised when a component's covariance stops being positive definite.
EMProgress
    What a ``fit(..., callback=...)`` callback receives after each EM iteration.
load
    Read a model written by ``GaussianMixture.save``.

The names are imported on first use: ``import gaussmix`` alone (the command line's start-up)
does not load scikit-learn and SciPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CollapsedComponentError",
    "ConditionalMixtures",
    "EMProgress",
    "GaussianMixture",
    "GaussianMixtureImputer",
    "GaussianMixtureRegressor",
    "MixtureSummary",
    "MultivariateNormal",
    "__version__",
    "load",
]

_WHERE = {
    "CollapsedComponentError": "gaussmix._covariance",
    "EMProgress": "gaussmix._em",
    "ConditionalMixtures": "gaussmix._conditional",
    "GaussianMixture": "gaussmix.estimator",
    "GaussianMixtureImputer": "gaussmix.imputer",
    "GaussianMixtureRegressor": "gaussmix.regressor",
    "MixtureSummary": "gaussmix._distribution",
    "MultivariateNormal": "gaussmix._gaussian",
    "load": "gaussmix.persist",
}

if TYPE_CHECKING:  # pragma: no cover
    from gaussmix._conditional import ConditionalMixtures
    from gaussmix._covariance import CollapsedComponentError
    from gaussmix._distribution import MixtureSummary
    from gaussmix._em import EMProgress
    from gaussmix._gaussian import MultivariateNormal
    from gaussmix.estimator import GaussianMixture
    from gaussmix.imputer import GaussianMixtureImputer
    from gaussmix.persist import load
    from gaussmix.regressor import GaussianMixtureRegressor


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'gaussmix' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
