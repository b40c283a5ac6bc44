"""``GaussianMixtureRegressor``: Gaussian mixture regression (GMR), a scikit-learn regressor.

Fits one joint mixture p(x, y) on the columns [X, y] with :class:`~gaussmix.GaussianMixture`,
then predicts with the conditional p(y | x), itself a mixture (:mod:`gaussmix._conditional`):
``E[y | x] = Σ_k p(z=k | x) (μ_k,y + Σ_k,yx Σ_k,xx⁻¹ (x − μ_k,x))``. With one component this is
ordinary least squares on the joint Gaussian; more components bend the regression function and
let the noise vary with x (Ghahramani & Jordan 1994; Calinon 2007).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from gaussmix._conditional import ConditionalMixtures
from gaussmix._conditional import condition as _condition
from gaussmix.estimator import GaussianMixture

__all__ = ["GaussianMixtureRegressor"]

_BLOCK = 1 << 21  # elements of a (rows, K, outputs) block in predict


class GaussianMixtureRegressor(RegressorMixin, BaseEstimator):
    """Gaussian mixture regression: a joint mixture on [X, y], predictions from p(y | x).

    Parameters
    ----------
    n_components : int, default=1
        Components of the joint mixture (1: linear regression).
    covariance_type : str, default="full"
        Structure of the joint covariances (any of :class:`~gaussmix.GaussianMixture`'s).
        "diag" and "spherical" have no covariance between x and y, so the prediction is a
        weighted average of constant component means (a soft piecewise-constant fit).
    tol, reg_covar, max_iter, n_init, init_params, random_state, engine, chunk_size, dtype, device
        Passed to the joint :class:`~gaussmix.GaussianMixture`; same meaning and defaults.
        With ``engine="dask"`` the stacked [X, y] is handed over as a Dask array; "stream"
        reads files, so it does not apply to in-memory X and y.

    Attributes
    ----------
    mixture_ : GaussianMixture
        The fitted joint mixture over ``n_features_in_ + n_outputs_`` columns (X first).
    n_features_in_ : int
        Columns of X.
    feature_names_in_ : ndarray of str
        Column names of X, when it was a DataFrame with string column names.
    n_outputs_ : int
        Columns of y (1 for a 1-D y).
    n_iter_ : int
        EM iterations of the joint fit.
    converged_ : bool
        Whether the joint fit converged.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmix import GaussianMixtureRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-3, 3, (500, 1))
    >>> y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(500)
    >>> reg = GaussianMixtureRegressor(n_components=6, random_state=0).fit(X, y)
    >>> bool(reg.score(X, y) > 0.9)
    True
    """

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
        random_state: int | np.random.RandomState | None = None,
        engine: str = "auto",
        chunk_size: int | None = None,
        dtype: str | None = None,
        device: str | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state
        self.engine = engine
        self.chunk_size = chunk_size
        self.dtype = dtype
        self.device = device

    def _mixture(self) -> GaussianMixture:
        params = self.get_params()
        return GaussianMixture(**params)

    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None):
        """Fit the joint mixture on the columns [X, y].

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
            Row weights, as in :meth:`GaussianMixture.fit`.

        Returns
        -------
        self : GaussianMixtureRegressor
        """
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        Y = y.reshape(y.shape[0], -1)
        joint = np.column_stack([X, Y])
        mixture = self._mixture().fit(joint, sample_weight=sample_weight)
        self.mixture_ = mixture
        self.n_outputs_ = int(Y.shape[1])
        self.n_iter_ = int(mixture.n_iter_)
        self.converged_ = bool(mixture.converged_)
        self._y_1d = y.ndim == 1
        return self

    def predict_distribution(self, X: ArrayLike) -> ConditionalMixtures:
        """The full conditional mixture p(y | x) of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        conditional : ConditionalMixtures
            ``weights`` (n_samples, K), ``means`` (n_samples, K, n_outputs), ``covariances``
            (K, n_outputs, n_outputs); ``mean`` and ``covariance`` per row;
            ``parameters(i)`` for :meth:`GaussianMixture.from_parameters`.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        params = self.mixture_._fitted_params()
        return _condition(params, np.arange(self.n_features_in_), X)

    def predict(self, X: ArrayLike, return_std: bool = False) -> NDArray | tuple[NDArray, NDArray]:
        """Conditional mean E[y | x] of each row (and its standard deviation).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        return_std : bool, default=False
            Also return the standard deviation of p(y | x) (within- plus between-component
            spread); single-output models only.

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Shaped like the y given to :meth:`fit`.
        y_std : ndarray of shape (n_samples,)
            Only with ``return_std=True``.
        """
        if return_std and getattr(self, "n_outputs_", 1) != 1:
            raise ValueError(
                f"return_std=True needs a single output, this model has {self.n_outputs_}; "
                "use predict_distribution(X).covariance"
            )
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        params = self.mixture_._fitted_params()
        given = np.arange(self.n_features_in_)
        mean = np.empty((X.shape[0], self.n_outputs_))
        var = np.empty(X.shape[0]) if return_std else None
        # blocks bound the (rows, K, outputs) temporaries on large inputs
        step = max(1024, _BLOCK // max(params.n_components * self.n_outputs_, 1))
        for start in range(0, X.shape[0], step):
            block = slice(start, start + step)
            cond = _condition(params, given, X[block])
            mean[block] = cond.mean
            if var is not None:
                var[block] = cond.variance[:, 0]
        if self._y_1d:
            mean = mean[:, 0]
        if var is None:
            return mean
        # clipped: a variance a few ulps below zero would give NaN
        return mean, np.sqrt(np.clip(var, 0.0, None))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.allow_nan = False
        return tags
