"""``GaussianMixtureImputer``: missing values filled in by a Gaussian mixture, as a transformer."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from gaussmix._covariance import COVARIANCE_MODELS
from gaussmix._init import INIT_METHODS
from gaussmix.estimator import GaussianMixture

__all__ = ["GaussianMixtureImputer"]


class GaussianMixtureImputer(TransformerMixin, BaseEstimator):
    """Impute missing values (NaN) with a Gaussian mixture fitted on the observed entries.

    ``fit`` runs exact EM on the incomplete data (the observed-data likelihood, no
    pre-filling); ``transform`` replaces each NaN by its conditional expectation given the
    row's observed entries, ``Σ_k p(k | x_o) (μ_k,m + Σ_k,mo Σ_k,oo⁻¹ (x_o - μ_k,o))``, or, with
    ``sample_posterior=True``, by a draw from that conditional distribution (for multiple
    imputation, as :class:`sklearn.impute.IterativeImputer` does). Clustered data, where one
    Gaussian (or a chain of linear regressions) fits poorly, is where a mixture helps.

    Parameters
    ----------
    n_components : int, default=1
        Mixture components; 1 is the classical multivariate-normal EM imputation.
    covariance_type : str, default="full"
        Any covariance model of :class:`gaussmix.GaussianMixture` (the four of scikit-learn,
        mclust's 14).
    tol : float, default=1e-3
    reg_covar : float, default=1e-6
    max_iter : int, default=100
    n_init : int, default=1
    init_params : str, default="kmeans"
        As in :class:`gaussmix.GaussianMixture` (initialised on column-mean-filled data).
    sample_posterior : bool, default=False
        Draw the imputations instead of taking conditional means.
    random_state : int, RandomState instance or None, default=None
        Seed of the initialisation and of the draws.
    engine : str, default="auto"
        E-step engine of the fit.

    Attributes
    ----------
    mixture_ : GaussianMixture
        The fitted mixture.
    n_iter_ : int
        EM iterations of the fit.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        When fitted on a DataFrame with string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmix import GaussianMixtureImputer
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2))]
    >>> X[:, 1] += X[:, 0]
    >>> X[0, 1] = np.nan
    >>> imp = GaussianMixtureImputer(n_components=2, random_state=0).fit(X)
    >>> bool(np.isnan(imp.transform(X)).any())
    False
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(COVARIANCE_MODELS.keys())],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(INIT_METHODS.keys())],
        "sample_posterior": ["boolean"],
        "random_state": ["random_state"],
        "engine": [str],
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        sample_posterior: bool = False,
        random_state: int | np.random.RandomState | None = None,
        engine: str = "auto",
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.sample_posterior = sample_posterior
        self.random_state = random_state
        self.engine = engine

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: Any = None, sample_weight: ArrayLike | None = None):
        """Fit the mixture on the observed entries of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            NaN marks a missing entry.
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : GaussianMixtureImputer
        """
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan")
        self.mixture_ = GaussianMixture(
            self.n_components,
            covariance_type=self.covariance_type,
            tol=self.tol,
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            n_init=self.n_init,
            init_params=self.init_params,
            random_state=self.random_state,
            engine=self.engine,
        ).fit(X, sample_weight=sample_weight)
        # the draws of transform continue one stream across calls, as IterativeImputer's do
        self._rng = check_random_state(self.random_state)
        self.n_iter_ = self.mixture_.n_iter_
        return self

    def transform(self, X: ArrayLike) -> NDArray:
        """``X`` with every NaN replaced.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features)
            Observed entries unchanged.
        """
        check_is_fitted(self)
        X = validate_data(
            self, X, dtype=[np.float64, np.float32], reset=False, ensure_all_finite="allow-nan"
        )
        method = "sample" if self.sample_posterior else "mean"
        return self.mixture_.impute(X, method=method, random_state=self._rng)

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> NDArray:
        """The input feature names (imputation keeps the columns).

        Parameters
        ----------
        input_features : array-like of str, optional

        Returns
        -------
        names : ndarray of str objects
        """
        from sklearn.utils.validation import _check_feature_names_in

        check_is_fitted(self)
        return _check_feature_names_in(self, input_features)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags
