"""The fitted mixture as a distribution: ``marginal``, ``condition`` and ``summary`` methods.

:class:`DistributionMixin` is one of :class:`~gaussmix.GaussianMixture`'s bases; its methods
turn the maths of :mod:`gaussmix._conditional` into fitted estimators and readable summaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.utils.validation import check_is_fitted

from gaussmix import _conditional
from gaussmix._conditional import ConditionalMixtures, MixtureArrays
from gaussmix._gaussian import check_feature_indices

if TYPE_CHECKING:  # pragma: no cover
    from gaussmix.estimator import GaussianMixture

__all__ = ["ConditionalMixtures", "DistributionMixin", "MixtureSummary", "to_estimator"]


def to_estimator(arrays: MixtureArrays, names: NDArray | None = None, **kwargs: Any):
    """A fitted :class:`~gaussmix.GaussianMixture` from :class:`MixtureArrays`.

    Parameters
    ----------
    arrays : MixtureArrays
    names : ndarray of str, optional
        ``feature_names_in_`` of the new estimator.
    **kwargs
        Constructor parameters (``random_state`` ...).
    """
    from gaussmix.estimator import GaussianMixture

    est = GaussianMixture.from_parameters(
        arrays.weights, arrays.means, arrays.covariances, arrays.covariance_type, **kwargs
    )
    if names is not None:
        est.feature_names_in_ = np.asarray(names, dtype=object)
    return est


def resolve_features(estimator: Any, features: Any, *, what: str = "features") -> NDArray:
    """Feature indices from indices or, for an estimator fitted on named columns, names."""
    d = int(estimator.n_features_in_)
    items = [features] if isinstance(features, (str, int, np.integer)) else list(features)
    if not items:
        raise ValueError(f"{what} must name at least one feature")
    names = getattr(estimator, "feature_names_in_", None)
    out = []
    for item in items:
        if isinstance(item, str):
            if names is None:
                raise ValueError(
                    f"{what}: {item!r} is a name, but the model was not fitted on named "
                    "columns; give feature indices"
                )
            hits = np.flatnonzero(np.asarray(names) == item)
            if hits.size == 0:
                raise ValueError(
                    f"{what}: no feature named {item!r}; the features are {list(names)}"
                )
            out.append(int(hits[0]))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            out.append(int(item))
        else:
            raise ValueError(f"{what} must be feature indices or names, got {item!r}")
    return check_feature_indices(out, d, what=what)


@dataclass
class MixtureSummary:
    """What :meth:`GaussianMixture.summary` reports (mclust's ``summary`` in gaussmix's terms).

    Criteria follow :class:`~gaussmix.GaussianMixture`'s sign (lower is better); mclust prints
    BIC and ICL with the opposite sign.

    Attributes
    ----------
    covariance_type : str
    n_components, n_features, n_parameters : int
    weights : list of float
    converged : bool
    n_iter : int
    feature_names : list of str
    n_samples : int or None
        The rows given to ``summary`` (None: no data, so no likelihood or criteria).
    log_likelihood, bic, icl : float or None
    cluster_sizes : list of int or None
        Rows whose most probable component is k.
    """

    covariance_type: str
    n_components: int
    n_features: int
    n_parameters: int
    weights: list[float]
    converged: bool
    n_iter: int
    feature_names: list[str] = field(default_factory=list)
    n_samples: int | None = None
    log_likelihood: float | None = None
    bic: float | None = None
    icl: float | None = None
    cluster_sizes: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (NaN as None)."""
        out = dict(self.__dict__)
        for key in ("log_likelihood", "bic", "icl"):
            if out[key] is not None and not np.isfinite(out[key]):
                out[key] = None
        return out

    def __str__(self) -> str:
        K = self.n_components
        state = "converged" if self.converged else "not converged"
        iters = f"{self.n_iter} EM iterations, {state}" if self.n_iter else "no EM history"
        lines = [
            f"Gaussian mixture: '{self.covariance_type}' covariance, {K} component"
            f"{'s' if K != 1 else ''}, {self.n_features} feature"
            f"{'s' if self.n_features != 1 else ''}, {self.n_parameters} free parameters "
            f"({iters})"
        ]
        if self.n_samples is not None:
            cells = [
                ("log-likelihood", f"{self.log_likelihood:.3f}"),
                ("n", str(self.n_samples)),
                ("df", str(self.n_parameters)),
                ("BIC", f"{self.bic:.3f}"),
                ("ICL", f"{self.icl:.3f}"),
            ]
            widths = [max(len(h), len(v)) for h, v in cells]
            lines.append("  ".join(f"{h:>{w}}" for (h, _), w in zip(cells, widths, strict=True)))
            lines.append("  ".join(f"{v:>{w}}" for (_, v), w in zip(cells, widths, strict=True)))
            lines.append("(BIC and ICL: lower is better)")
        head = ["component", *(str(k) for k in range(K))]
        weights = ["weight", *(f"{w:.4f}" for w in self.weights)]
        rows = [head, weights]
        if self.cluster_sizes is not None:
            rows.append(["size", *(str(s) for s in self.cluster_sizes)])
        widths = [max(len(r[c]) for r in rows) for c in range(K + 1)]
        for r in rows:
            lines.append("  ".join(f"{v:>{w}}" for v, w in zip(r, widths, strict=True)))
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle) -> None:  # IPython shows the table, not the fields
        p.text(str(self))


class DistributionMixin:
    """``marginal``, ``condition`` and ``summary`` for a fitted mixture estimator."""

    def _arrays_kwargs(self) -> dict[str, Any]:
        return {"random_state": getattr(self, "random_state", None)}

    def _names(self, idx: NDArray) -> NDArray | None:
        names = getattr(self, "feature_names_in_", None)
        return None if names is None else np.asarray(names, dtype=object)[idx]

    def marginal(self, features: Any) -> GaussianMixture:
        """The mixture of some features: same weights, the components' means and covariance
        blocks (a marginal of a Gaussian is Gaussian).

        Parameters
        ----------
        features : int, str or sequence of them
            Features to keep, in the order wanted: indices, or names when the model was fitted
            on a DataFrame.

        Returns
        -------
        marginal : GaussianMixture
            Fitted; "diag", "spherical" and "tied" stay so, any other structure becomes "full".

        Examples
        --------
        >>> from gaussmix import GaussianMixture
        >>> gm = GaussianMixture.from_parameters([0.5, 0.5], [[0, 0, 0], [4, 4, 4]],
        ...                                      [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], "diag")
        >>> gm.marginal([2, 0]).covariances_.tolist()
        [[1.0, 1.0], [2.0, 2.0]]
        """
        check_is_fitted(self)
        idx = resolve_features(self, features)
        arrays = _conditional.marginal(self._fitted_params(), idx)
        return to_estimator(arrays, self._names(idx), **self._arrays_kwargs())

    def condition(self, features: Any, values: ArrayLike) -> GaussianMixture:
        """The mixture of the other features given the values of ``features``: p(y | x).

        Weights ``∝ φ_k N(x; μ_k,x, Σ_k,xx)``, means ``μ_k,y + Σ_k,yx Σ_k,xx⁻¹ (x − μ_k,x)``,
        covariances the Schur complements ``Σ_k,yy − Σ_k,yx Σ_k,xx⁻¹ Σ_k,xy``; computed with
        Cholesky factors of ``Σ_k,xx``, never an explicit inverse.

        Parameters
        ----------
        features : int, str or sequence of them
            Observed features (indices or names); at least one feature must remain.
        values : array-like of shape (len(features),)
            Their values. For many rows at once use :meth:`condition_rows`.

        Returns
        -------
        conditional : GaussianMixture
            Fitted, over the remaining features in their original order; "tied", "diag" and
            "spherical" stay so, any other structure becomes "full".
        """
        check_is_fitted(self)
        idx = resolve_features(self, features)
        x = np.asarray(values, dtype=np.float64)
        if x.ndim == 0:
            x = x.reshape(1)
        if x.shape != (idx.size,):
            raise ValueError(
                f"values must have shape ({idx.size},), one per feature in features, got "
                f"{np.shape(values)}; use condition_rows for many rows"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("values must contain only finite values")
        cond = _conditional.condition(self._fitted_params(), idx, x[None, :])
        return to_estimator(cond.parameters(0), self._names(cond.outputs),
                            **self._arrays_kwargs())  # fmt: skip

    def condition_rows(self, features: Any, values: ArrayLike) -> ConditionalMixtures:
        """p(y | x) for many rows of observed values at once (the batched :meth:`condition`).

        Parameters
        ----------
        features : int, str or sequence of them
            Observed features (indices or names); at least one feature must remain.
        values : array-like of shape (n_rows, len(features))
            One row of observed values per case.

        Returns
        -------
        conditional : ConditionalMixtures
            ``weights`` (n_rows, K), ``means`` (n_rows, K, n_outputs), shared ``covariances``;
            ``mean`` and ``covariance`` give E[y | x] and Cov[y | x] per row.
        """
        check_is_fitted(self)
        idx = resolve_features(self, features)
        X = np.asarray(values, dtype=np.float64)
        if X.ndim == 1 and idx.size == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape[1] != idx.size:
            raise ValueError(
                f"values must have shape (n_rows, {idx.size}), one column per feature in "
                f"features, got {np.shape(values)}"
            )
        if not np.all(np.isfinite(X)):
            raise ValueError("values must contain only finite values")
        return _conditional.condition(self._fitted_params(), idx, X)

    def summary(self, X: ArrayLike | None = None) -> MixtureSummary:
        """A summary like mclust's: model, K, log-likelihood, BIC, ICL, cluster sizes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), optional
            Data for the likelihood, the criteria and the cluster sizes (usually the training
            data); without it only the model's own facts are given.

        Returns
        -------
        summary : MixtureSummary
            Prints as a table; ``to_dict()`` for JSON.
        """
        check_is_fitted(self)
        K, d = self.means_.shape
        names = getattr(self, "feature_names_in_", None)
        out = MixtureSummary(
            covariance_type=str(self.covariance_type),
            n_components=int(K),
            n_features=int(d),
            n_parameters=int(self._n_parameters()),
            weights=[float(w) for w in self.weights_],
            converged=bool(self.converged_),
            n_iter=int(self.n_iter_),
            feature_names=[str(c) for c in names] if names is not None else
            [f"x{i}" for i in range(d)],
        )  # fmt: skip
        if X is None:
            return out
        log_prob = np.asarray(self.score_samples(X), dtype=np.float64)
        labels = np.asarray(self.predict(X))
        out.n_samples = int(log_prob.shape[0])
        out.log_likelihood = float(log_prob.sum())
        out.bic = float(self.bic(X))
        out.icl = float(self.icl(X))
        out.cluster_sizes = np.bincount(labels, minlength=K).astype(int).tolist()
        return out
