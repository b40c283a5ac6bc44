"""``GaussianMixture``: the scikit-learn drop-in estimator, a thin face over the EM core."""

from __future__ import annotations

import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterator, Set
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import assert_all_finite, check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from gaussmix import _mixture
from gaussmix._covariance import COVARIANCE_MODELS, CovarianceModel, get_model
from gaussmix._distribution import DistributionMixin
from gaussmix._em import EMProgress, best_of
from gaussmix._init import INIT_METHODS, initial_params
from gaussmix._params import MixtureParams
from gaussmix._validation import check_sample_weight, check_scale, normalise_sample_weight
from gaussmix.backends import (
    IN_MEMORY_ENGINES,
    available_engines,
    engine_module,
    make_executor,
    resolve_engine,
)

__all__ = ["GaussianMixture"]


def _is_dask(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] in ("dask", "dask_expr")


_FLOATS = [np.float64, np.float32]
# in native byte order: the arrays scikit-learn's validation returns unchanged
_NATIVE_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


def _check_weights(weights: ArrayLike, n_components: int, name: str) -> NDArray:
    """Mixing weights as a float64 probability vector (renormalised exactly), or ValueError."""
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {weights!r}") from None
    if w.shape != (n_components,):
        raise ValueError(f"{name} must have shape ({n_components},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or np.any(w > 1):
        raise ValueError(f"{name} must be in the range [0, 1]")
    if not np.isclose(w.sum(), 1.0, rtol=0, atol=1e-6):
        raise ValueError(f"{name} must sum to 1, got sum {w.sum():.6g}")
    return w / w.sum()


def _may_overflow(params: MixtureParams, X: NDArray, largest: float | None = None) -> bool:
    """Whether a squared Mahalanobis distance of some row might overflow ``X.dtype``.

    ``(x - μ)ᵀ P Pᵀ (x - μ) <= (‖x - μ‖ ‖P‖)²`` with ``‖x - μ‖ <= √d (max|x| + max|μ|)`` and
    ``‖P‖ <= d max|P_ij|`` for every covariance model's factor: a cheap, crude upper bound
    (two passes over ``X``) that is far from the limit for any row near the model.
    """
    if X.size == 0:
        return False
    d = X.shape[1]
    if largest is None:  # max |x|, unless the caller has it
        largest = max(float(np.max(X)), -float(np.min(X)))
    reach = largest + float(np.max(np.abs(params.means)))
    # Python floats: inf on overflow, no warning
    bound = math.sqrt(d) * reach * d * float(np.max(np.abs(params.precisions_cholesky)))
    return not bound < math.sqrt(float(np.finfo(X.dtype).max) / 16)


def _check_representable(params: MixtureParams, X: NDArray) -> None:
    """Refuse rows whose log-density is not a finite number in ``X.dtype`` arithmetic."""
    bad = np.flatnonzero(~np.isfinite(_mixture.score_samples(params, X)))
    if bad.size:
        raise ValueError(
            f"{bad.size} rows of X (the first: row {bad[0]}) are too far from every component "
            f"for {X.dtype.name} arithmetic: their squared Mahalanobis distances overflow and "
            "their log-density is not representable; check that the data matches the model "
            "(units, scale)"
        )


class _EngineNames(Set):
    """``"auto"`` and the registered engines, read at each check (engines register lazily)."""

    def __contains__(self, name: object) -> bool:
        return name == "auto" or name in available_engines()

    def __iter__(self) -> Iterator[str]:
        return iter(["auto", *available_engines()])

    def __len__(self) -> int:
        return 1 + len(available_engines())

    @classmethod
    def _from_iterable(cls, it):
        # set algebra (sklearn subtracts its deprecated options) yields a plain, fixed set
        return set(it)


class GaussianMixture(DistributionMixin, DensityMixin, BaseEstimator):
    """Gaussian mixture model fitted by EM on additive sufficient statistics.

    A drop-in replacement for :class:`sklearn.mixture.GaussianMixture`: same parameter names,
    defaults and meaning, same fitted attributes; in addition it accepts ``sample_weight``,
    runs on pluggable engines, and saves to a pickle-free file.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components K.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Structure of the covariances.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean log-likelihood per sample.
    reg_covar : float, default=1e-6
        Non-negative value added to the covariances' diagonal.
    max_iter : int, default=100
        EM iterations per initialisation.
    n_init : int, default=1
        Initialisations; the fit with the highest final lower bound is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How the first responsibilities are chosen.
    weights_init : array-like of shape (n_components,), default=None
        User-provided initial weights.
    means_init : array-like of shape (n_components, n_features), default=None
        User-provided initial means.
    precisions_init : array-like, default=None
        User-provided initial precisions, shaped as ``covariance_type`` requires.
    random_state : int, RandomState instance or None, default=None
        Seed of initialisation and sampling.
    warm_start : bool, default=False
        Start the next ``fit`` from the current parameters (``n_init`` is then ignored).
    verbose : int, default=0
        1 prints each initialisation, 2 also the lower bound every ``verbose_interval``
        iterations.
    verbose_interval : int, default=10
        Iterations between two verbose lines.
    engine : str, default="auto"
        Executor that runs the E-step: ``"numpy"`` (the reference), or any registered engine;
        ``"auto"`` picks the fastest available one for the data given.
    chunk_size : int or None, default=None
        Rows per E-step chunk (None: sized so that temporaries stay near 8 MiB).
    dtype : {None, "float32", "float64"}, default=None
        Working precision. None follows the data (float32 stays float32, anything else
        becomes float64). Statistics are always summed in float64.
    device : str or None, default=None
        Torch device (``"cuda"``, ``"cuda:1"``, ``"cpu"``) for the torch engine; with
        ``engine="auto"`` a device selects that engine. None runs on the CPU engines.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
        Mixing weights φ.
    means_ : ndarray of shape (n_components, n_features)
        Component means.
    covariances_ : ndarray
        (K, d, d) for "full", (d, d) for "tied", (K, d) for "diag", (K,) for "spherical".
    precisions_ : ndarray
        Inverses of the covariances, same shape.
    precisions_cholesky_ : ndarray
        Cholesky factors ``P`` of the precisions (``precision = P Pᵀ``), same shape.
    converged_ : bool
        Whether the best initialisation converged.
    n_iter_ : int
        Iterations of the best initialisation.
    lower_bound_ : float
        Mean log-likelihood per sample at the last E-step of the best initialisation.
    lower_bounds_ : list of float
        Lower bound at each iteration of the best initialisation.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when fitted on a DataFrame with string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmix import GaussianMixture
    >>> X = np.r_[np.random.default_rng(0).normal(0, 1, (100, 2)),
    ...           np.random.default_rng(1).normal(8, 1, (100, 2))]
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> sorted(np.round(gm.means_[:, 0]).tolist())
    [0.0, 8.0]
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
        weights_init: ArrayLike | None = None,
        means_init: ArrayLike | None = None,
        precisions_init: ArrayLike | None = None,
        random_state: int | np.random.RandomState | None = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
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
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.engine = engine
        self.chunk_size = chunk_size
        self.dtype = dtype
        self.device = device

    # ------------------------------------------------------------------ parameters
    # scikit-learn's declarative checks (run by _fit_context, and by _check_parameters for
    # callers outside fit): a bad value raises InvalidParameterError, both a ValueError and a
    # TypeError. Registries are read live (dict views), so covariance models, init methods and
    # engines registered after this class was defined are accepted.
    _parameter_constraints: ClassVar[dict] = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions(COVARIANCE_MODELS.keys())],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(Real, 0.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "init_params": [StrOptions(INIT_METHODS.keys())],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(Integral, 1, None, closed="left")],
        "engine": [StrOptions(_EngineNames())],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
        "dtype": [StrOptions({"float32", "float64"}), None],
        "device": [str, None],
    }

    def _check_parameters(self) -> CovarianceModel:
        """Validate the hyper-parameters; return the covariance model.

        Raises
        ------
        sklearn.utils._param_validation.InvalidParameterError
            Naming the parameter, its allowed values and the value given.
        """
        self._validate_params()
        if not np.isfinite(self.reg_covar):
            # the one rule the interval cannot say: an infinite reg_covar makes every
            # covariance infinite
            raise InvalidParameterError(
                f"The 'reg_covar' parameter of {type(self).__name__} must be finite. "
                f"Got {self.reg_covar!r} instead."
            )
        return get_model(self.covariance_type)

    def _user_init(self, model: CovarianceModel, n_features: int) -> dict[str, NDArray]:
        K, d = self.n_components, n_features
        out: dict[str, NDArray] = {}
        if self.weights_init is not None:
            out["weights"] = _check_weights(self.weights_init, K, "weights_init")
        if self.means_init is not None:
            m = np.asarray(self.means_init, dtype=np.float64)
            if m.shape != (K, d):
                raise ValueError(f"means_init must have shape ({K}, {d}), got {m.shape}")
            if not np.all(np.isfinite(m)):
                raise ValueError("means_init must contain only finite values")
            out["means"] = m
        if self.precisions_init is not None:
            p = np.asarray(self.precisions_init, dtype=np.float64)
            if p.shape == (K, d, d) and model.shape(K, d) != (K, d, d):
                # full matrices for a constrained model: the first E-step uses them as given,
                # the constraint holds from the first M-step on
                model = get_model("full")
                out["start_model"] = model
            try:
                p = model.validate(p, K, d)
            except ValueError as exc:
                # validate() speaks of covariances; precisions obey the same rules
                what = str(exc).replace("covariance", "precision")
                raise ValueError(
                    f"precisions_init is invalid for covariance_type '{model.name}': {what}"
                ) from None
            try:
                out["precisions_cholesky"] = model.precision_cholesky_from_precisions(p)
            except ValueError:
                raise ValueError(
                    f"precisions_init must be positive definite for covariance_type '{model.name}'"
                ) from None
        return out

    # ------------------------------------------------------------------ data checks
    def _working_dtype(self, X_dtype: np.dtype) -> type:
        if self.dtype is not None:
            return np.dtype(self.dtype).type
        return np.float32 if X_dtype == np.float32 else np.float64

    def _validate_fit_data(self, X, sample_weight):
        X = validate_data(
            self, X, dtype=_FLOATS, ensure_min_samples=2, ensure_all_finite="allow-nan"
        )
        X = X.astype(self._working_dtype(X.dtype), copy=False)
        check_scale(X)
        X, sample_weight = self._observed_rows(X, sample_weight)
        if X.shape[0] < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {X.shape[0]}"
            )
        w = check_sample_weight(sample_weight, X.shape[0])
        if w is not None:
            positive = int(np.count_nonzero(w))
            if positive == 0:
                raise ValueError("sample_weight is zero for every row: nothing to fit")
            if positive < self.n_components:
                raise ValueError(
                    f"sample_weight has {positive} positive entries, fewer than "
                    f"n_components = {self.n_components}"
                )
            w = normalise_sample_weight(w)
        return X, w

    def _observed_rows(self, X: NDArray, sample_weight: Any) -> tuple[NDArray, Any]:
        """Missing values (NaN): refuse a never-observed feature, leave out empty rows."""
        from gaussmix._missing import drop_unobserved

        names = getattr(self, "feature_names_in_", None)
        w = check_sample_weight(sample_weight, X.shape[0])
        X, w, n_empty = drop_unobserved(X, w, names)
        if n_empty:
            warnings.warn(
                f"{n_empty} rows of X have no observed value (all NaN): they are left out "
                "of the fit",
                UserWarning,
                stacklevel=6,  # the caller of fit (through _fit_context)
            )
        return X, w

    def _engine_name(self, X: Any) -> str:
        engine = self.engine
        if engine == "auto" and self.device is not None:
            engine = "torch"
        return resolve_engine(engine, X)

    def _make_executor(self, X: Any, sample_weight: Any):
        engine = self._engine_name(X)
        options = {"chunk_size": self.chunk_size, "device": self.device}
        if engine in IN_MEMORY_ENGINES:
            X, w = self._validate_fit_data(X, sample_weight)
            return make_executor(engine, X, w, **options)
        # out-of-core and device engines check their own source; n_features_in_ is set by
        # fit once EM succeeded, so that a source failing mid-fit leaves the estimator as it was
        executor = make_executor(engine, X, sample_weight, dtype=self.dtype, **options)
        if executor.n_samples < self.n_components:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {executor.n_samples}"
            )
        return executor

    def _validate_predict_data(self, X) -> NDArray:
        return self._checked_rows(X)[0]

    def _checked_rows(self, X) -> tuple[NDArray, float, float]:
        """Validated rows in the working dtype, and their ``(min, max)`` (NaN: some row has a
        missing value)."""
        X = self._validated_rows(X)
        lo, hi = engine_module("cpu").extremes(X)
        self._check_extremes(X, lo, hi)
        return X, lo, hi

    def _validated_rows(self, X) -> NDArray:
        """Rows validated as scikit-learn does, in the working dtype, values not yet checked."""
        check_is_fitted(self)
        # scikit-learn's checks (~0.1 ms: 10 % of a 100 000-row prediction at W1) find nothing
        # to convert or refuse in a plain float array of the fitted width; the finiteness test
        # comes with the min and max (_check_extremes): one pass over X
        if not (
            type(X) is np.ndarray
            and X.ndim == 2
            and X.dtype in _NATIVE_FLOATS
            and X.shape[0] > 0
            and X.shape[1] == getattr(self, "n_features_in_", None)
            and not hasattr(self, "feature_names_in_")
        ):
            X = validate_data(self, X, dtype=_FLOATS, reset=False, ensure_all_finite=False)
        # rows are evaluated in the model's precision or better: a float64 model rounded to
        # float32 rows lost up to 0.4 in log-density on data offset by 1e6
        return X.astype(np.result_type(X.dtype, self.means_.dtype), copy=False)

    @staticmethod
    def _check_extremes(X: NDArray, lo: float, hi: float) -> None:
        """Refuse infinities and values too large for the dtype, from ``X``'s min and max."""
        if math.isfinite(lo) and math.isfinite(hi):
            check_scale(X, largest=max(hi, -lo))
        else:
            # missing values (allowed) or infinities (refused, in scikit-learn's words)
            assert_all_finite(X, allow_nan=True, input_name="X")
            check_scale(X)

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        X: ArrayLike,
        y: Any = None,
        sample_weight: ArrayLike | None = None,
        *,
        callback: Callable[[EMProgress], None] | None = None,
    ):
        """Estimate the parameters with EM.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or a data source
            Training data: an array, or whatever the chosen engine reads (a file path for
            ``engine="stream"``, a Dask array or DataFrame, a torch tensor).
        y : Ignored
            Present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights with the meaning of repeated observations: weight 0
            drops the row, integer weight w counts it w times.
        callback : callable, optional
            Called with a :class:`gaussmix.EMProgress` after every EM iteration (progress
            bars, logging); its return value is ignored.

        Returns
        -------
        self : GaussianMixture
            The fitted estimator.
        """
        model = self._check_parameters()
        executor = self._make_executor(X, sample_weight)
        d = executor.n_features
        user = self._user_init(model, d)
        warm = self.warm_start and hasattr(self, "converged_")
        if warm:
            self._check_warm_start(model, d)
        rng = check_random_state(self.random_state)

        def starts(i: int) -> MixtureParams:
            if warm:
                return self._fitted_params()
            if self.verbose:
                print(f"Initialization {i}")
            return self._initial_params(executor, model, user, rng)

        start_time = [time.perf_counter()]

        def report(p: EMProgress) -> None:
            if callback is not None:
                callback(p)
            if self.verbose >= 2 and p.iteration % self.verbose_interval == 0:
                now = time.perf_counter()
                print(
                    f"  Iteration {p.iteration}\t time lapse {now - start_time[0]:.5f}s\t "
                    f"ll change {p.change:.5f}"
                )
                start_time[0] = now

        result = best_of(
            executor,
            starts,
            1 if warm else self.n_init,
            reg_covar=float(self.reg_covar),
            tol=float(self.tol),
            max_iter=int(self.max_iter),
            callback=report if (self.verbose >= 2 or callback is not None) else None,
            start_lower_bound=self.lower_bound_ if warm else -np.inf,
            model=model,
        )
        if self.verbose:
            state = "converged" if result.converged else "did not converge"
            print(f"Initialization {state}. lower bound {result.lower_bound:.5f}")
        if not result.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._set_fitted(result.params, executor.dtype)
        self.converged_ = bool(result.converged)
        self.n_iter_ = int(result.n_iter)
        self.lower_bound_ = float(result.lower_bound)
        self.lower_bounds_ = [float(v) for v in result.lower_bounds]
        if self._engine_name(X) not in IN_MEMORY_ENGINES:
            # names travel with every source: a file's header, a Dask DataFrame's columns
            names = getattr(executor, "feature_names", None)
            if names is not None:
                self.feature_names_in_ = np.asarray(names, dtype=object)
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
            self.n_features_in_ = executor.n_features
        return self

    def _initial_params(self, executor, model, user, rng) -> MixtureParams:
        K = self.n_components
        if {"weights", "means", "precisions_cholesky"} <= user.keys():
            base = None  # everything given: the data-driven start would be thrown away
        else:
            X0, w0 = executor.init_data(None, rng)
            # out-of-core engines meet the data here first: the same limit as in memory
            check_scale(np.asarray(X0))
            base = initial_params(
                self.init_params,
                X0,
                w0,
                K,
                model,
                float(self.reg_covar),
                rng,
                # the start always runs on rows in memory: compiled k-means steps serve every
                # engine but the numpy reference
                kernels=None if self.engine == "numpy" else engine_module("cpu").kmeans_kernels(),
            )
        weights = user.get("weights", None if base is None else base.weights)
        means = user.get("means", None if base is None else base.means)
        if "precisions_cholesky" in user:
            return MixtureParams.from_precisions_cholesky(
                weights, means, user["precisions_cholesky"], user.get("start_model", model)
            )
        return MixtureParams.from_covariances(
            weights, means, base.covariances, model, reg_covar=float(self.reg_covar)
        )

    def _set_fitted(self, params: MixtureParams, dtype) -> None:
        cast = np.dtype(dtype).type
        self.weights_ = params.weights.astype(cast)
        self.means_ = params.means.astype(cast)
        self.covariances_ = params.covariances.astype(cast)
        self.precisions_cholesky_ = params.precisions_cholesky.astype(cast)
        self.precisions_ = params.precisions.astype(cast)

    def _decomposition(self) -> tuple[NDArray, NDArray, NDArray]:
        check_is_fitted(self)
        K, d = self.means_.shape
        model = get_model(self.covariance_type)
        return model.decompose(np.asarray(self.covariances_, dtype=np.float64), K, d)

    @property
    def volumes_(self) -> NDArray:
        """Volume ``λ_k = det(Σ_k)^(1/d)`` of each component, shape (n_components,).

        With :attr:`shapes_` and :attr:`orientations_`, the decomposition
        ``Σ_k = λ_k D_k A_k D_kᵀ`` of Banfield & Raftery (1993) that mclust's models
        constrain (mclust's ``parameters$variance``: ``scale``, ``shape``, ``orientation``).
        """
        return self._decomposition()[0]

    @property
    def shapes_(self) -> NDArray:
        """Diagonal of each component's shape ``A_k`` (determinant one), shape (n_components,
        n_features), in the column order of :attr:`orientations_` (decreasing for ellipsoidal
        models, the feature order for diagonal ones)."""
        return self._decomposition()[1]

    @property
    def orientations_(self) -> NDArray:
        """Orientation ``D_k`` of each component (eigenvectors in columns), shape
        (n_components, n_features, n_features); the identity for diagonal models."""
        return self._decomposition()[2]

    def _check_warm_start(self, model: CovarianceModel, n_features: int) -> None:
        K = self.n_components
        expected = {"means_": (K, n_features), "covariances_": model.shape(K, n_features)}
        for name, shape in expected.items():
            have = np.shape(getattr(self, name))
            if have != shape:
                raise ValueError(
                    f"warm_start=True continues from the fitted parameters, but {name} has "
                    f"shape {have} where n_components={K}, covariance_type="
                    f"{self.covariance_type!r} and {n_features} features need {shape}: set "
                    "warm_start=False to fit from a new start"
                )

    def _fitted_params(self) -> MixtureParams:
        return MixtureParams.from_precisions_cholesky(
            self.weights_,
            self.means_,
            self.precisions_cholesky_,
            self.covariance_type,
            covariances=self.covariances_,
        )

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(
        self, X: ArrayLike, y: Any = None, sample_weight: ArrayLike | None = None
    ) -> GaussianMixture:
        """One step of online (stepwise) EM on a batch of rows.

        Keeps running sufficient statistics ``s_t = (1 - ρ_t) s_{t-1} + ρ_t stats(X_t) / w_t``
        (``w_t`` the batch's total weight) with ``ρ_t = (t + 1) ** -0.6`` for the ``t``-th
        batch (0-based), then takes an M-step (Cappé & Moulines 2009; details in
        :mod:`gaussmix._online`). On a stationary stream the parameters converge to those of
        batch EM on all the rows. The first call initialises from its batch with
        ``init_params`` (or ``weights_init``/``means_init``/``precisions_init``); on an
        estimator fitted by :meth:`fit`, the first call starts from the fitted parameters
        instead, and a later :meth:`fit` restarts the average.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One batch; the first needs ``n_samples >= n_components``.
        y : Ignored
            Present for API consistency.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights; the batch's statistics are divided by their sum.

        Returns
        -------
        self : GaussianMixture
            Updated; ``n_iter_`` counts the batches, ``lower_bound_`` is the mean
            log-likelihood of this batch under the parameters before the update,
            ``lower_bounds_`` lists it for every batch, ``converged_`` is False (online EM
            has no stopping rule).
        """
        from gaussmix._online import partial_fit

        return partial_fit(self, X, sample_weight)

    def fit_predict(
        self, X: ArrayLike, y: Any = None, sample_weight: ArrayLike | None = None
    ) -> NDArray:
        """Fit, then return the most probable component of each row of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            Equal to ``fit(X).predict(X)``.
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    # ------------------------------------------------------------------ probabilities
    def log_joint(self, X: ArrayLike) -> NDArray:
        """Joint log-probabilities ``log p(x, z=k) = log φ_k + log N(x; μ_k, Σ_k)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_joint : ndarray of shape (n_samples, n_components)
        """
        return self._predict_op(X, "log_joint")

    def score_samples(self, X: ArrayLike) -> NDArray:
        """Log-density ``log p(x) = log Σ_k φ_k N(x; μ_k, Σ_k)`` of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_prob : ndarray of shape (n_samples,)
        """
        return self._predict_op(X, "score_samples")

    def _predict_op(self, X: Any, op: str) -> Any:
        """Row-wise ``op`` of :mod:`gaussmix._mixture`, run where the input lives.

        In-memory arrays go through the numpy maths; other inputs (Dask collections, torch
        tensors, file paths) go to their engine module's ``predict_op(estimator, X, op)``,
        which returns the same kind of object it was given (lazy for Dask).
        """
        check_is_fitted(self)
        engine = resolve_engine("auto", X)
        if self.device is not None and engine in IN_MEMORY_ENGINES:
            engine = "torch"
        if engine not in IN_MEMORY_ENGINES:
            return engine_module(engine).predict_op(self, X, op)
        return self._in_memory_op(self._validated_rows(X), op, check_values=True)

    def _rows_on_cpu(self, X: NDArray) -> bool:
        """Whether in-memory rows run on the cpu engine: rows in memory run on an in-memory
        engine, the fit's own or (a model fitted on a file, a Dask collection, a device) the
        one "auto" picks for arrays."""
        engine = self.engine if self.engine in IN_MEMORY_ENGINES else "auto"
        return resolve_engine(engine, X) == "cpu"

    def _in_memory_op(
        self,
        X: NDArray,
        op: str,
        extremes: tuple[float, float] | None = None,
        *,
        check_values: bool = False,
    ) -> Any:
        """Row-wise ``op`` of in-memory rows, on the cpu engine's compiled row kernels where
        it runs fits; they decline (None) inputs the numpy code of _mixture handles better,
        which stays the reference.

        ``extremes``: ``(min, max)`` of ``X`` (NaN with missing values) when the caller has
        them; otherwise the row kernels find them on their own pass over the rows (a separate
        pass cost 10-20 % of a prediction) and a result they computed on rows that need the
        numpy code is dropped. ``check_values``: refuse infinities and values too large for
        the dtype (``_check_extremes``) once the extremes are known.
        """
        params = self._fitted_params()
        on_cpu = self._rows_on_cpu(X)
        fused = None
        if extremes is None and on_cpu:
            on_cpu = False  # asked once: declined inputs are declined again
            fused = engine_module("cpu").row_op(params, X, op, with_extremes=True)
            if fused is not None:
                extremes = fused[1:]
        # (min, max) of X, NaN with missing values: one pass for both checks below
        lo, hi = engine_module("cpu").extremes(X) if extremes is None else extremes
        if check_values:
            self._check_extremes(X, lo, hi)
        if np.isnan(lo):
            # missing values: the numpy maths marginalise them (gaussmix._missing)
            return getattr(_mixture, op)(params, X)
        if _may_overflow(params, X, max(hi, -lo)):
            # the compiled kernels use fast-math (inf -> NaN): rows this far from the model
            # take the numpy code, and rows it cannot represent are refused, on every path;
            # a single component's distance may overflow (its probability is then 0)
            with np.errstate(over="ignore"):
                _check_representable(params, X)
                return getattr(_mixture, op)(params, X)
        if fused is not None:
            return fused[0]
        if on_cpu:
            out = engine_module("cpu").row_op(params, X, op)
            if out is not None:
                return out
        return getattr(_mixture, op)(params, X)

    def score(self, X: ArrayLike, y: Any = None) -> float:
        """Mean log-likelihood per sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        log_likelihood : float
        """
        return float(self.score_samples(X).mean())

    def predict_proba(self, X: ArrayLike) -> NDArray:
        """Posterior probabilities (responsibilities) ``p(z=k | x)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components)
            Rows sum to one.
        """
        return self._predict_op(X, "predict_proba")

    def predict(self, X: ArrayLike) -> NDArray:
        """Most probable component of each row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self._predict_op(X, "predict")

    def sample(self, n_samples: int = 1) -> tuple[NDArray, NDArray]:
        """Draw from the fitted mixture: z ~ Categorical(φ), then x | z ~ N(μ_z, Σ_z).

        Parameters
        ----------
        n_samples : int, default=1

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        labels : ndarray of shape (n_samples,)
            Component of each row.
        """
        check_is_fitted(self)
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at "
                "least one sample."
            )
        rng = check_random_state(self.random_state)
        X, labels = _mixture.sample(self._fitted_params(), int(n_samples), rng)
        return X.astype(self.means_.dtype, copy=False), labels

    def impute(
        self,
        X: ArrayLike,
        method: str = "mean",
        random_state: int | np.random.RandomState | None = None,
    ) -> NDArray:
        """``X`` with its missing values (NaN) filled in under the fitted mixture.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            NaN marks a missing entry; observed entries are returned unchanged.
        method : {"mean", "sample"}, default="mean"
            ``"mean"``: the conditional expectation ``E[x_m | x_o] = Σ_k p(k | x_o)
            (μ_k,m + Σ_k,mo Σ_k,oo⁻¹ (x_o - μ_k,o))``, the best guess in squared error.
            ``"sample"``: a draw from ``p(x_m | x_o)`` (a component from its posterior, then
            the Gaussian conditional), for multiple imputation.
        random_state : int, RandomState instance or None, default=None
            Seed of ``"sample"`` (None: ``self.random_state``).

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features)
            In the model's dtype. A row with no observed value gets the mixture's mean
            (``"mean"``) or a draw from the mixture (``"sample"``).
        """
        from gaussmix._missing import impute

        if method not in ("mean", "sample"):
            raise ValueError(f"method must be 'mean' or 'sample', got {method!r}")
        X = self._validate_predict_data(X)
        rng = check_random_state(self.random_state if random_state is None else random_state)
        out = impute(self._fitted_params(), X, method, rng)
        return out.astype(self.means_.dtype, copy=False)

    # ------------------------------------------------------------------ model selection
    def _n_parameters(self) -> int:
        K, d = self.means_.shape
        return get_model(self.covariance_type).n_parameters(K, d) + K * d + K - 1

    def _log_likelihood(self, X: Any) -> tuple[float, int]:
        # through score_samples, so every input kind (array, tensor, Dask, file) works
        log_prob = self.score_samples(X)
        if _is_dask(log_prob):
            import dask

            # a Dask DataFrame's row count is unknown until read: counted in the same pass
            total, n = dask.compute(log_prob.sum(), log_prob.map_blocks(np.ones_like).sum())
            return float(total), int(n)
        return float(log_prob.sum()), int(log_prob.shape[0])

    def bic(self, X: ArrayLike) -> float:
        """Bayesian information criterion, ``-2 log L + p log N`` (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        bic : float
        """
        total, n = self._log_likelihood(X)
        return float(-2 * total + self._n_parameters() * np.log(n))

    def aic(self, X: ArrayLike) -> float:
        """Akaike information criterion, ``-2 log L + 2 p`` (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        aic : float
        """
        total, _ = self._log_likelihood(X)
        return float(-2 * total + 2 * self._n_parameters())

    def icl(self, X: ArrayLike) -> float:
        """Integrated completed likelihood, in scikit-learn's lower-is-better sign.

        mclust defines ``ICL = BIC + 2 Σ_n log max_k r_nk`` with its BIC = 2 log L - p log N
        (higher is better). Negated into the convention of :meth:`bic`:
        ``icl(X) = bic(X) - 2 Σ_n log max_k r_nk``, so ``icl(X) >= bic(X)``, the gap growing
        with the uncertainty of the classification.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        icl : float
        """
        check_is_fitted(self)
        if resolve_engine("auto", X) in IN_MEMORY_ENGINES and self.device is None:
            Xv, lo, hi = self._checked_rows(X)
            # not self.bic(Xv): Xv has lost a DataFrame's names, and bic would warn of it
            total = float(self._in_memory_op(Xv, "score_samples", (lo, hi)).sum())
            bic = -2 * total + self._n_parameters() * np.log(Xv.shape[0])
            return float(bic - 2.0 * self._in_memory_op(Xv, "log_resp_max", (lo, hi)))
        log_joint = self.log_joint(X)
        if _is_dask(log_joint):
            import dask
            import dask.array as da

            # one pass: log p(x) = logsumexp of the joint; rows counted (a DataFrame's
            # partitions have unknown lengths)
            row_max = log_joint.max(axis=1)
            log_prob = row_max + da.log(da.exp(log_joint - row_max[:, None]).sum(axis=1))
            total, log_resp_max, n = dask.compute(
                log_prob.sum(), (row_max - log_prob).sum(), row_max.map_blocks(np.ones_like).sum()
            )
            n, total, log_resp_max = int(n), float(total), float(log_resp_max)
            return float(-2 * total + self._n_parameters() * np.log(n) - 2.0 * log_resp_max)
        log_prob = self.score_samples(X)
        row_max = log_joint.amax(1) if hasattr(log_joint, "amax") else log_joint.max(axis=1)
        n = int(log_prob.shape[0])
        total = float(log_prob.sum())
        log_resp_max = float((row_max - log_prob).sum())
        return float(-2 * total + self._n_parameters() * np.log(n) - 2.0 * log_resp_max)

    # ------------------------------------------------------------------ construction, I/O
    @classmethod
    def from_parameters(
        cls,
        weights: ArrayLike,
        means: ArrayLike,
        covariances: ArrayLike,
        covariance_type: str = "full",
        **kwargs: Any,
    ) -> GaussianMixture:
        """A fitted mixture with known parameters (to sample from or evaluate).

        Parameters
        ----------
        weights : array-like of shape (n_components,)
            Non-negative, summing to one within 1e-6 (renormalised exactly).
        means : array-like of shape (n_components, n_features)
        covariances : array-like
            Shaped as ``covariance_type`` requires; symmetric positive definite.
        covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        **kwargs
            Further constructor parameters (e.g. ``random_state`` for :meth:`sample`).

        Returns
        -------
        model : GaussianMixture
            ``converged_`` is True, ``n_iter_`` is 0 and ``lower_bound_`` is NaN.
        """
        model = get_model(covariance_type)
        means = np.asarray(means, dtype=np.float64)
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must have shape (n_components, n_features), got {means.shape}")
        if not np.all(np.isfinite(means)):
            raise ValueError("means must contain only finite values")
        K, d = means.shape
        est = cls(n_components=K, covariance_type=model.name, **kwargs)
        est._check_parameters()
        weights = _check_weights(weights, K, "weights")
        covariances = model.validate(covariances, K, d)
        params = MixtureParams.from_covariances(weights, means, covariances, model)
        est._set_fitted(params, np.float64)
        est.n_features_in_ = d
        est.converged_ = True
        est.n_iter_ = 0
        est.lower_bound_ = float("nan")
        est.lower_bounds_ = []
        return est

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to ``path`` (``.npz`` arrays + JSON metadata, no pickle).

        Parameters
        ----------
        path : str or path-like
            Destination; written atomically (a temporary file renamed on success).
        """
        from gaussmix.persist import save

        save(self, path)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # NaN entries are missing values, marginalised by EM and by every density
        tags.input_tags.allow_nan = True
        return tags
