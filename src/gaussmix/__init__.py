"""gaussmix: Gaussian mixture models, exact and fast.

Public names
------------
MultivariateNormal
    One Gaussian: density, log-density, sampling, maximum-likelihood fit.
GaussianMixture
    The scikit-learn compatible mixture estimator (EM on additive sufficient statistics).
CollapsedComponentError
    Raised when a component's covariance stops being positive definite.
EMProgress
    What a ``fit(..., callback=...)`` callback receives after each EM iteration.
load
    Read a model written by ``GaussianMixture.save``.
"""

from gaussmix._covariance import CollapsedComponentError
from gaussmix._em import EMProgress
from gaussmix._gaussian import MultivariateNormal
from gaussmix.estimator import GaussianMixture
from gaussmix.persist import load

__version__ = "0.1.0"

__all__ = [
    "CollapsedComponentError",
    "EMProgress",
    "GaussianMixture",
    "MultivariateNormal",
    "__version__",
    "load",
]
