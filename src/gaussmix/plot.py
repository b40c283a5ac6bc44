"""Plots of a fitted mixture for notebooks (matplotlib), the same ones the HTML report shows.

Every function takes a fitted model (and data), draws on ``ax`` when given (else on a new
pyplot figure) and returns the Axes:

- :func:`ellipses`: the data coloured by class, each component's ellipse holding ``mass`` of its
  probability, and its mean;
- :func:`density`: contours of the log-density of a two-feature marginal;
- :func:`uncertainty`: each point's classification uncertainty ``1 − max_k p(z=k | x)``;
- :func:`criteria`: BIC (or ICL, AIC) against K for a :class:`~gaussmix.selection.SelectionResult`;
- :func:`log_likelihood`: the mean log-likelihood at each EM iteration;
- :func:`pairs`: any of the first three over every pair of features (d > 2).

With one feature, :func:`ellipses`, :func:`density` and :func:`uncertainty` draw the 1-D
version (class histograms, density curve, uncertainty against x). Features are indices, or names
for a model fitted on named columns. ``pip install gaussmix[report]`` installs matplotlib.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> from gaussmix import GaussianMixture, plot
>>> gm = GaussianMixture.from_parameters([0.5, 0.5], [[0, 0], [4, 4]], [[1, 1], [2, 2]], "diag")
>>> X, _ = gm.sample(200)
>>> ax = plot.ellipses(gm, X)
>>> len(ax.patches)
2
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gaussmix._conditional import feature_separation, full_covariances
from gaussmix._distribution import resolve_features

__all__ = [
    "ELLIPSE_MASS",
    "criteria",
    "density",
    "ellipse_geometry",
    "ellipses",
    "log_likelihood",
    "most_separating",
    "pairs",
    "uncertainty",
]

#: probability mass inside the drawn covariance ellipses
ELLIPSE_MASS = 0.95
PALETTE = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
]  # fmt: skip
#: log-density contours drawn this far below the peak (a density spread over decades)
DENSITY_DROPS = (0.5, 1.0, 2.0, 3.0, 4.5, 6.0, 8.0, 10.0)


def ellipse_geometry(mean: ArrayLike, cov: ArrayLike, mass: float = ELLIPSE_MASS) -> dict:
    """Centre, axes and angle of the ellipse holding ``mass`` of a 2-D Gaussian.

    Parameters
    ----------
    mean : array-like of shape (2,)
    cov : array-like of shape (2, 2)
    mass : float, default=0.95
        Probability inside the ellipse, in (0, 1).

    Returns
    -------
    geometry : dict
        ``center`` (2,), ``cov`` (2, 2), ``width`` and ``height`` (full axis lengths along the
        major and minor eigenvectors) and ``angle`` (degrees of the major axis from the x-axis).
    """
    from scipy.stats import chi2

    if not 0.0 < float(mass) < 1.0:
        raise ValueError(f"mass must be in (0, 1), got {mass!r}")
    cov = np.asarray(cov, dtype=np.float64)
    values, vectors = np.linalg.eigh(cov)
    values = np.clip(values, 0.0, None)
    # squared Mahalanobis radius of a 2-D Gaussian's mass-quantile: chi-square with 2 dof
    radius = math.sqrt(chi2.ppf(mass, df=2))
    major = vectors[:, 1]
    return {
        "center": [float(v) for v in np.asarray(mean, dtype=np.float64)],
        "cov": cov.tolist(),
        "width": float(2 * radius * math.sqrt(values[1])),
        "height": float(2 * radius * math.sqrt(values[0])),
        "angle": float(math.degrees(math.atan2(major[1], major[0]))),
    }


# ------------------------------------------------------------------ helpers
def _new_axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.figure().add_subplot()


def _check_fitted(model) -> None:
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(model)


def _feature_list(model, features, n_max: int = 2) -> list[int]:
    d = int(model.means_.shape[1])
    if features is None:
        return list(range(min(d, n_max)))
    idx = [int(i) for i in resolve_features(model, features)]
    if len(idx) > n_max:
        raise ValueError(
            f"features: this plot shows at most {n_max} features, got {len(idx)}; "
            "use plot.pairs for more"
        )
    return idx


def _names(model, feature_names=None) -> list[str]:
    # drawn with parse_math=False: a column name with two "$" is text, not mathtext
    d = int(model.means_.shape[1])
    names = getattr(model, "feature_names_in_", None) if feature_names is None else feature_names
    if names is None:
        return [f"x{i}" for i in range(d)]
    names = [str(n) for n in names]
    if len(names) != d:
        raise ValueError(f"feature_names: {len(names)} names for {d} features")
    return names


def _data(model, X) -> NDArray | None:
    if X is None:
        return None
    X = np.asarray(X, dtype=np.float64)
    d = int(model.means_.shape[1])
    if X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"X must have shape (n_samples, {d}) like the model, got {X.shape}")
    return X


def _call(model, method: str, X: NDArray) -> NDArray:
    """``model.method(X)`` on the plain array the plot uses, checked for shape already.

    A model fitted on named columns warns for unnamed rows; here the rows are the user's own
    data (or a grid) in the model's feature order, so the warning would only be noise.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        return getattr(model, method)(X)


def _limits(values: NDArray) -> tuple[float, float]:
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = 0.08 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _model_limits(model, f: int) -> tuple[float, float]:
    """Range of feature f covering every component's mean ± 3 standard deviations."""
    mu = np.asarray(model.means_, dtype=np.float64)[:, f]
    sd = np.sqrt(full_covariances(model._fitted_params())[:, f, f])
    return _limits(np.r_[mu - 3 * sd, mu + 3 * sd])


def _colors_for(labels: NDArray) -> tuple[list, list[str], NDArray, list[str]]:
    """Classes in order, their colours, each point's colour, and the legend labels.

    Non-negative integer labels (components, coded classes) keep colour ``PALETTE[label]``, so
    component k has the same colour in every figure and table, present in the data or not;
    other labels take the palette in sorted order.
    """
    classes = list(np.unique(labels))
    if labels.dtype.kind in "iu" and (not classes or classes[0] >= 0):
        palette = [PALETTE[int(c) % len(PALETTE)] for c in classes]
    else:
        palette = [PALETTE[i % len(PALETTE)] for i in range(len(classes))]
    index = np.searchsorted(np.asarray(classes), labels)
    colors = np.array(palette)[index] if classes else np.array([])
    return classes, palette, colors, [str(c) for c in classes]


def _legend_handle(color: str, label: str):
    from matplotlib.lines import Line2D

    # a "$" in a class name would otherwise be parsed as mathtext
    return Line2D([], [], marker="o", linestyle="", color=color, label=label.replace("$", r"\$"))


# ------------------------------------------------------------------ plots of one panel
def ellipses(
    model,
    X: ArrayLike | None = None,
    *,
    features: Any = None,
    labels: ArrayLike | None = None,
    mass: float = ELLIPSE_MASS,
    ax=None,
    feature_names: list[str] | None = None,
    legend: bool = False,
    point_size: float = 5.0,
):
    """The data coloured by class, with each component's ellipse and mean.

    Parameters
    ----------
    model : GaussianMixture
        Fitted.
    X : array-like of shape (n_samples, n_features), optional
        Data in the model's features (all of them; ``features`` picks the two shown).
    features : sequence of two (or one) indices or names, default=(0, 1)
    labels : array-like of shape (n_samples,), optional
        Class of each row (e.g. known species); default the most probable component.
    mass : float, default=0.95
        Probability inside each ellipse: the contour at squared Mahalanobis distance
        ``chi2.ppf(mass, 2)`` of the component's two-feature marginal.
    ax : matplotlib Axes, optional
    feature_names : list of str, optional
        Axis labels; default the model's ``feature_names_in_``, else ``x0, x1, ...``.
    legend : bool, default=False
        Add a legend of the classes.
    point_size : float, default=5

    Returns
    -------
    ax : matplotlib Axes
        One ``Ellipse`` patch per component (``gid`` "ellipse-k"), centred on its mean.
    """
    from matplotlib.patches import Ellipse

    _check_fitted(model)
    X = _data(model, X)
    f = _feature_list(model, features)
    names = _names(model, feature_names)
    ax = _new_axes(ax)
    means = np.asarray(model.means_, dtype=np.float64)
    K = means.shape[0]
    covs = full_covariances(model._fitted_params())
    own = labels is None
    if own and X is not None:
        labels = np.asarray(_call(model, "predict", X))
    classes, palette, colors, label_text = [], [], None, []
    if X is not None:
        labels = np.asarray(labels)
        if labels.shape != (X.shape[0],):
            raise ValueError(f"labels must have shape ({X.shape[0]},), got {labels.shape}")
        classes, palette, colors, label_text = _colors_for(labels)
        if own:
            label_text = [f"component {c}" for c in classes]
    if len(f) == 1:
        (fx,) = f
        ax.set_xlabel(names[fx], parse_math=False)
        if X is not None:
            bins = np.linspace(*_limits(X[:, fx]), 31)
            for i, c in enumerate(classes):
                ax.hist(X[labels == c, fx], bins=bins, color=palette[i], alpha=0.6)
        else:
            from scipy.stats import norm

            grid = np.linspace(*_model_limits(model, fx), 300)
            for k in range(K):
                dens = model.weights_[k] * norm.pdf(grid, means[k, fx], np.sqrt(covs[k, fx, fx]))
                ax.plot(grid, dens, color=PALETTE[k % len(PALETTE)])
    else:
        fx, fy = f
        ax.set_xlabel(names[fx], parse_math=False)
        ax.set_ylabel(names[fy], parse_math=False)
        if X is not None:
            ax.scatter(X[:, fx], X[:, fy], c=colors, s=point_size, alpha=0.6, linewidths=0,
                       rasterized=True)  # fmt: skip
        for k in range(K):
            geo = ellipse_geometry(means[k, [fx, fy]], covs[k][np.ix_([fx, fy], [fx, fy])], mass)
            ax.add_patch(
                Ellipse(geo["center"], geo["width"], geo["height"], angle=geo["angle"],
                        fill=False, edgecolor="black", linewidth=1.1, gid=f"ellipse-{k}")
            )  # fmt: skip
            ax.plot(*geo["center"], marker="x", color="black", markersize=6)
        ax.autoscale_view()
    if legend and label_text:
        handles = [_legend_handle(c, t) for c, t in zip(palette, label_text, strict=True)]
        ax.legend(handles=handles, fontsize=8)
    return ax


def density(
    model,
    X: ArrayLike | None = None,
    *,
    features: Any = None,
    ax=None,
    feature_names: list[str] | None = None,
    n_grid: int = 150,
    levels: ArrayLike | None = None,
):
    """Contours of the log-density of the mixture's marginal over two features.

    Parameters
    ----------
    model : GaussianMixture
        Fitted.
    X : array-like of shape (n_samples, n_features), optional
        Drawn in grey; sets the plotted range (else every component's mean ± 3 sd).
    features : sequence of two (or one) indices or names, default=(0, 1)
        With one feature: the marginal density curve over a histogram of the data.
    ax : matplotlib Axes, optional
    feature_names : list of str, optional
        Axis labels; default the model's ``feature_names_in_``, else ``x0, x1, ...``.
    n_grid : int, default=150
        Grid points per axis.
    levels : array-like, optional
        Log-density levels; default the grid's peak minus 0.5, 1, 2, 3, 4.5, 6, 8, 10.

    Returns
    -------
    ax : matplotlib Axes
    """
    _check_fitted(model)
    X = _data(model, X)
    f = _feature_list(model, features)
    names = _names(model, feature_names)
    ax = _new_axes(ax)
    marginal = model.marginal(f)
    lims = [_limits(X[:, i]) if X is not None else _model_limits(model, i) for i in f]
    if len(f) == 1:
        grid = np.linspace(*lims[0], 200)[:, None]
        dens = np.exp(_call(marginal, "score_samples", grid))
        if X is not None:
            ax.hist(X[:, f[0]], bins=np.linspace(*lims[0], 31), density=True, color="#dddddd")
        ax.plot(grid[:, 0], dens, color="black", linewidth=1.0)
        ax.set_xlabel(names[f[0]], parse_math=False)
        return ax
    gx, gy = np.meshgrid(np.linspace(*lims[0], n_grid), np.linspace(*lims[1], n_grid))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    logp = _call(marginal, "score_samples", grid).reshape(gx.shape)
    if levels is None:
        levels = np.sort(float(logp.max()) - np.array(DENSITY_DROPS))
    if X is not None:
        ax.scatter(X[:, f[0]], X[:, f[1]], s=3, color="#999999", alpha=0.5, linewidths=0,
                   rasterized=True)  # fmt: skip
    ax.contour(gx, gy, logp, levels=np.asarray(levels, dtype=np.float64), cmap="viridis",
               linewidths=1.0)  # fmt: skip
    ax.set_xlim(*lims[0])
    ax.set_ylim(*lims[1])
    ax.set_xlabel(names[f[0]], parse_math=False)
    ax.set_ylabel(names[f[1]], parse_math=False)
    return ax


def uncertainty(
    model,
    X: ArrayLike,
    *,
    features: Any = None,
    ax=None,
    feature_names: list[str] | None = None,
    proba: ArrayLike | None = None,
    colorbar: bool = False,
):
    """Each point's classification uncertainty ``1 − max_k p(z=k | x)``: bigger, brighter
    points are more ambiguous.

    Parameters
    ----------
    model : GaussianMixture
        Fitted.
    X : array-like of shape (n_samples, n_features)
    features : sequence of two (or one) indices or names, default=(0, 1)
        With one feature: uncertainty against that feature.
    ax : matplotlib Axes, optional
    feature_names : list of str, optional
        Axis labels; default the model's ``feature_names_in_``, else ``x0, x1, ...``.
    proba : array-like of shape (n_samples, n_components), optional
        ``model.predict_proba(X)`` if already computed.
    colorbar : bool, default=False
        Add a colour bar to the figure.

    Returns
    -------
    ax : matplotlib Axes
        The colour scale runs from 0 to ``1 − 1/K`` (every component equally likely).
    """
    from matplotlib.colors import Normalize

    _check_fitted(model)
    X = _data(model, X)
    if X is None:
        raise ValueError("uncertainty needs the data X")
    f = _feature_list(model, features)
    names = _names(model, feature_names)
    ax = _new_axes(ax)
    if proba is None:
        proba = _call(model, "predict_proba", X)
    proba = np.asarray(proba, dtype=np.float64)
    K = int(model.means_.shape[0])
    if proba.shape != (X.shape[0], K):
        raise ValueError(f"proba must have shape ({X.shape[0]}, {K}), got {proba.shape}")
    u = 1.0 - proba.max(axis=1)
    order = np.argsort(u)  # most uncertain drawn last, on top
    top = max(1.0 - 1.0 / max(int(model.means_.shape[0]), 1), 1e-12)
    norm = Normalize(0.0, top)
    if len(f) == 1:
        mappable = ax.scatter(X[order, f[0]], u[order], c=u[order], cmap="plasma", norm=norm,
                              s=8, linewidths=0)  # fmt: skip
        ax.set_ylim(-0.05 * top, 1.05 * top)
        ax.set_xlabel(names[f[0]], parse_math=False)
        ax.set_ylabel("uncertainty")
    else:
        mappable = ax.scatter(X[order, f[0]], X[order, f[1]], c=u[order], cmap="plasma",
                              norm=norm, s=4 + 80 * u[order] / top, linewidths=0,
                              rasterized=True)  # fmt: skip
        ax.set_xlabel(names[f[0]], parse_math=False)
        ax.set_ylabel(names[f[1]], parse_math=False)
    if colorbar:
        ax.figure.colorbar(mappable, ax=ax, label="1 - max posterior probability")
    return ax


def focus_limits(selection, criterion: str) -> tuple[float, float] | None:
    """y-limits of a criterion plot that show where the choice is made.

    One bad curve (often spherical, or K = 1) can span many times the differences that decide
    the selection. The range kept: the best value, the selected curve at K ± 1, and the
    minimum of every curve that lies within three times that span; curves going further
    leave the top. None when nothing would be cut.
    """
    table = selection.values(criterion)
    finite = table[np.isfinite(table)]
    if finite.size < 2:
        return None
    best = selection.best_row
    r = selection.k_values.index(best.n_components)
    c = selection.covariance_types.index(best.covariance_type)
    lo = float(finite.min())
    column = table[:, c]
    near = [float(column[i]) for i in (r - 1, r + 1) if 0 <= i < len(column)]
    near = [v for v in near if np.isfinite(v)]
    span = max([v - lo for v in near] + [0.0])
    if span <= 0:
        span = max(abs(lo) * 1e-3, 1.0)
    hi = lo + span
    with np.errstate(all="ignore"):
        minima = np.nanmin(np.where(np.isfinite(table), table, np.nan), axis=0)
    for m in minima[np.isfinite(minima)]:
        if m - lo <= 3 * span:
            hi = max(hi, float(m))
    pad = 0.1 * (hi - lo if hi > lo else span)
    top = hi + 1.5 * pad
    if top >= float(finite.max()):
        return None
    return lo - pad, top


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "p", "h", "*", "d", "8")


def criteria(
    selection, criterion: str = "bic", *, ax=None, focus: bool = True, legend: bool = True
):
    """A criterion against K, one curve per covariance type, the selected model starred.

    Parameters
    ----------
    selection : SelectionResult
        From :func:`gaussmix.selection.select`.
    criterion : {"bic", "icl", "aic"}, default="bic"
    ax : matplotlib Axes, optional
    focus : bool, default=True
        Limit the y-axis to the range where the choice is made (:func:`focus_limits`)
        rather than stretch it over the worst curve.
    legend : bool, default=True
        Label the curves.

    Returns
    -------
    ax : matplotlib Axes
        Lines labelled by covariance type, and "selected".
    """
    if criterion not in ("bic", "icl", "aic"):
        raise ValueError(f"criterion must be 'bic', 'icl' or 'aic', got {criterion!r}")
    ax = _new_axes(ax)
    ks = selection.k_values
    table = selection.values(criterion)
    for c, t in enumerate(selection.covariance_types):
        # as mclust's BIC plot: a marker of its own per model, so 14 curves stay readable
        # (and later curves dashed once the 10 colours repeat)
        ax.plot(ks, table[:, c], marker=_MARKERS[c % len(_MARKERS)], markersize=4, label=t,
                linestyle="-" if c < 10 else "--")  # fmt: skip
    best = selection.best_row
    ax.plot([best.n_components], [getattr(best, criterion)], marker="*", markersize=16,
            color="gold", markeredgecolor="black", linestyle="", label="selected")  # fmt: skip
    ax.set_xlabel("number of components K")
    ax.set_ylabel(f"{criterion.upper()} (lower is better)")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    if focus:
        limits = focus_limits(selection, criterion)
        if limits is not None:
            ax.set_ylim(*limits)
    if legend:
        ax.legend(fontsize=7, ncol=2 if len(selection.covariance_types) > 6 else 1)
    return ax


def log_likelihood(model, *, ax=None, change: bool = False):
    """The mean log-likelihood per sample at each EM iteration of the fit.

    Parameters
    ----------
    model : GaussianMixture
        Fitted by EM (a model from known parameters has no history: the axes say so).
    ax : matplotlib Axes, optional
    change : bool, default=False
        Plot instead ``|change|`` between iterations on a log scale, with ``tol`` dashed.

    Returns
    -------
    ax : matplotlib Axes
    """
    from matplotlib.ticker import MaxNLocator

    _check_fitted(model)
    ax = _new_axes(ax)
    bounds = [float(v) for v in getattr(model, "lower_bounds_", [])]
    if not bounds:
        ax.text(0.5, 0.5, "no EM history (model built from known parameters)",
                ha="center", va="center", transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return ax
    if change:
        changes = [abs(b - a) for a, b in itertools.pairwise(bounds)]
        positive = [(i + 2, c) for i, c in enumerate(changes) if c > 0]
        if positive:
            ax.semilogy([p[0] for p in positive], [p[1] for p in positive], marker="o",
                        markersize=3, color="#d62728")  # fmt: skip
            ax.axhline(float(model.tol), color="black", linestyle="--", linewidth=1,
                       label=f"tol = {model.tol:g}")  # fmt: skip
            ax.legend(fontsize=8)
        ax.set_ylabel("|change| of the log-likelihood")
    else:
        ax.plot(range(1, len(bounds) + 1), bounds, marker="o", markersize=3)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_ylabel("mean log-likelihood per sample")
    ax.set_xlabel("EM iteration")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, len(bounds) + 0.5)
    return ax


# ------------------------------------------------------------------ pairs plots
def most_separating(model, n: int = 5) -> list[int]:
    """The ``n`` features that separate the components most, in their original order.

    Separation of feature j: the share of its variance under the mixture that lies between the
    components' means, ``B_j / (B_j + W_j)`` (:func:`gaussmix._conditional.feature_separation`).

    Parameters
    ----------
    model : GaussianMixture
        Fitted.
    n : int, default=5

    Returns
    -------
    features : list of int
    """
    _check_fitted(model)
    score = feature_separation(model._fitted_params())
    # stable sort: ties keep the earlier feature
    top = np.argsort(-score, kind="stable")[: max(1, int(n))]
    return sorted(int(i) for i in top)


_KINDS = {"ellipses": ellipses, "density": density, "uncertainty": uncertainty}


def pairs_size(n_features: int, *, top: float = 0.35, right: float = 0.3) -> tuple[float, float]:
    """Figure size (inches) :func:`pairs` uses for ``n_features`` panels' rows."""
    if n_features == 1:
        return 6.5 + right, 3.45 + top
    if n_features == 2:
        return 6.5 + right, 5.4 + top
    return 2.0 * n_features + 0.8 + right, 2.0 * n_features + 0.65 + top


def pairs(
    model,
    X: ArrayLike | None,
    *,
    kind: str = "ellipses",
    features: Any = None,
    fig=None,
    feature_names: list[str] | None = None,
    max_features: int = 5,
    top: float = 0.35,
    right: float = 0.3,
    **kwargs: Any,
) -> NDArray:
    """One plot per pair of features: the lower triangle of a grid, 1-D views on its diagonal.

    Parameters
    ----------
    model : GaussianMixture
        Fitted.
    X : array-like of shape (n_samples, n_features) or None
        Data (required for ``kind="uncertainty"``).
    kind : {"ellipses", "density", "uncertainty"}, default="ellipses"
        The panel function (:func:`ellipses`, :func:`density`, :func:`uncertainty`).
    features : sequence of indices or names, optional
        Features shown, in order; default all when d <= ``max_features``, else the
        ``max_features`` most separating ones (:func:`most_separating`).
    fig : matplotlib Figure, optional
        Drawn into (it should be empty); default a new pyplot figure sized for the grid.
    feature_names : list of str, optional
        Axis labels; default the model's ``feature_names_in_``, else ``x0, x1, ...``.
    max_features : int, default=5
    top, right : float
        Margins in inches above and right of the grid (room for a legend or colour bar).
    **kwargs
        Passed to the panel function (``labels=``, ``proba=``, ``mass=``...).

    Returns
    -------
    axes : ndarray of Axes, shape (n_shown, n_shown)
        ``axes[i, j]`` plots feature ``j`` (x) against feature ``i`` (y) below the diagonal;
        the diagonal holds 1-D views (empty for "uncertainty"); above it the axes are off.
        Two features give one panel (shape (1, 1)).
    """
    _check_fitted(model)
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    X = _data(model, X)
    if features is None:
        d = int(model.means_.shape[1])
        dims = list(range(d)) if d <= max_features else most_separating(model, max_features)
    else:
        dims = [int(i) for i in resolve_features(model, features)]
    draw = _KINDS[kind]
    # computed once for every panel, not once per panel
    if kind == "ellipses" and X is not None and kwargs.get("labels") is None:
        kwargs["labels"] = np.asarray(model.predict(X))
    if kind == "uncertainty" and X is not None and kwargs.get("proba") is None:
        kwargs["proba"] = np.asarray(_call(model, "predict_proba", X))
    n = len(dims)
    width, height = pairs_size(n, top=top, right=right)
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(width, height))
    else:
        width, height = fig.get_size_inches()
    left, bottom = 0.8, 0.65
    rows = 1 if n <= 2 else n
    axes = fig.subplots(rows, rows, squeeze=False)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=0.3 if n <= 2 else 0.08,
                        hspace=0.3 if n <= 2 else 0.08)  # fmt: skip
    if n <= 2:
        draw(model, X, features=dims, ax=axes[0, 0], feature_names=feature_names, **kwargs)
        return axes
    names = _names(model, feature_names)
    kwargs["feature_names"] = names
    for i, j in itertools.product(range(n), range(n)):
        ax = axes[i, j]
        if j > i or (i == j and kind == "uncertainty"):
            ax.set_axis_off()
            continue
        if i == j:
            draw(model, X, features=[dims[i]], ax=ax, **kwargs)
            ax.set_yticks([])
            ax.set_ylabel("")
        else:
            draw(model, X, features=[dims[j], dims[i]], ax=ax, **kwargs)
            if X is not None:
                ax.set_ylim(*_limits(X[:, dims[i]]))
        if X is not None:
            ax.set_xlim(*_limits(X[:, dims[j]]))
        ax.tick_params(labelsize=7, labelbottom=i == n - 1, labelleft=j == 0 and i > 0)
        ax.set_xlabel(names[dims[j]] if i == n - 1 else "", fontsize=8, parse_math=False)
        if j != i:
            ax.set_ylabel(names[dims[i]] if j == 0 else "", fontsize=8, parse_math=False)
    return axes
