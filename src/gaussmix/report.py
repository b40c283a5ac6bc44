"""The visual report: figures of a fitted mixture, as one self-contained HTML page or PNG files.

Figures (matplotlib, drawn without pyplot so no display or global state is involved):

- ``classification``: the data coloured by most probable component, with each component's
  covariance ellipse (95 % probability contour) and mean; a pairs plot when d > 2.
- ``density``: contours of the mixture's (marginal) log-density over the data.
- ``uncertainty``: each point's classification uncertainty ``1 - max_k p(z=k | x)``.
- ``criteria``: BIC and ICL against K, one curve per covariance type (needs a selection grid).
- ``log_likelihood``: the lower bound at each EM iteration of the fit.

Every figure's drawn geometry is also kept as plain data (:attr:`ReportSection.data`) and
embedded in the HTML as a JSON block, so tests and other tools can check the pictures by their
numbers (e.g. that the ellipse centres are the fitted means).
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from gaussmix._covariance import get_model
from gaussmix.estimator import GaussianMixture

__all__ = [
    "ReportSection",
    "build_section",
    "ellipse_geometry",
    "read_report_data",
    "write_html",
    "write_png",
]

#: pairs plots show at most this many features (the first ones)
MAX_PAIR_FEATURES = 5
#: points drawn per scatter (a seeded subsample beyond that)
MAX_POINTS = 4000
#: probability mass inside the drawn covariance ellipses
ELLIPSE_MASS = 0.95
_PALETTE = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
]  # fmt: skip


@dataclass
class ReportSection:
    """The figures and tables of one data set and its model.

    Attributes
    ----------
    title : str
    name : str
        Short name: HTML anchor and PNG file prefix.
    figures : dict of str to matplotlib.figure.Figure
        Keyed by figure name (see the module docstring).
    data : dict
        JSON-ready geometry of every figure, plus the model's parameters.
    html_blocks : list of str
        Extra HTML (tables) placed after the figures.
    """

    title: str
    name: str = "section"
    figures: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    html_blocks: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)


def ellipse_geometry(mean: ArrayLike, cov: ArrayLike, mass: float = ELLIPSE_MASS) -> dict:
    """Centre, axes and angle of the ellipse holding ``mass`` of a 2-D Gaussian.

    Parameters
    ----------
    mean : array-like of shape (2,)
    cov : array-like of shape (2, 2)
    mass : float, default=0.95
        Probability inside the ellipse.

    Returns
    -------
    geometry : dict
        ``center`` (2,), ``cov`` (2, 2), ``width`` and ``height`` (full axis lengths along the
        major and minor eigenvectors) and ``angle`` (degrees of the major axis from the x-axis).
    """
    from scipy.stats import chi2

    cov = np.asarray(cov, dtype=np.float64)
    values, vectors = np.linalg.eigh(cov)
    values = np.clip(values, 0.0, None)
    radius = math.sqrt(chi2.ppf(mass, df=2))
    major = vectors[:, 1]
    return {
        "center": [float(v) for v in np.asarray(mean, dtype=np.float64)],
        "cov": cov.tolist(),
        "width": float(2 * radius * math.sqrt(values[1])),
        "height": float(2 * radius * math.sqrt(values[0])),
        "angle": float(math.degrees(math.atan2(major[1], major[0]))),
    }


def _full_covariances(model: GaussianMixture) -> NDArray:
    K, d = model.means_.shape
    cov_model = get_model(model.covariance_type)
    cov = np.asarray(model.covariances_, dtype=np.float64)
    return np.stack([cov_model.full_matrix(cov, k, d) for k in range(K)])


def _marginal(model: GaussianMixture, dims: list[int]) -> GaussianMixture:
    """The mixture of the selected coordinates (marginals of Gaussians are Gaussian)."""
    cov = _full_covariances(model)[:, dims][:, :, dims]
    return GaussianMixture.from_parameters(
        np.asarray(model.weights_, dtype=np.float64),
        np.asarray(model.means_, dtype=np.float64)[:, dims],
        cov,
        "full",
    )


def _limits(values: NDArray) -> tuple[float, float]:
    lo, hi = float(np.min(values)), float(np.max(values))
    pad = 0.08 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _canvas(width, height, nrows=1, ncols=1, *, left=0.8, right=0.3, bottom=0.65, top=0.35,
            space=0.3):  # fmt: skip
    """A figure with a fixed grid and margins in inches (constrained layout costs seconds)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=space, hspace=space)  # fmt: skip
    return fig, axes


@dataclass
class _Panels:
    """Scatter panels (one for d = 2, a pairs plot's lower triangle above) and diagonal axes."""

    fig: Any
    scatter: list[tuple[Any, int, int]]  # (axes, x feature, y feature)
    diagonal: list[tuple[Any, int]]  # (axes, feature)


def _panels(X: NDArray, dims: list[int], names: list[str], *, top: float = 0.35,
            right: float = 0.3) -> _Panels:  # fmt: skip
    d = len(dims)
    if d == 1:
        fig, axes = _canvas(6.5, 3.8, top=top, right=right)
        axes[0][0].set_xlabel(names[dims[0]])
        return _Panels(fig, [], [(axes[0][0], dims[0])])
    if d == 2:
        fig, axes = _canvas(6.5 + right, 5.4 + top, top=top, right=right)
        ax = axes[0][0]
        ax.set_xlabel(names[dims[0]])
        ax.set_ylabel(names[dims[1]])
        ax.set_xlim(*_limits(X[:, dims[0]]))
        ax.set_ylim(*_limits(X[:, dims[1]]))
        return _Panels(fig, [(ax, dims[0], dims[1])], [])
    side = 2.0
    fig, axes = _canvas(side * d + 0.8 + right, side * d + 0.65 + top, d, d, top=top,
                        right=right, space=0.08)  # fmt: skip
    scatter, diagonal = [], []
    limits = {f: _limits(X[:, f]) for f in dims}
    for i, fy in enumerate(dims):
        for j, fx in enumerate(dims):
            ax = axes[i][j]
            if j > i:
                ax.set_axis_off()
                continue
            ax.tick_params(labelsize=7, labelbottom=i == d - 1, labelleft=j == 0 and i > 0)
            ax.set_xlim(*limits[fx])
            if i == d - 1:
                ax.set_xlabel(names[fx], fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(names[fy], fontsize=8)
            if i == j:
                ax.set_yticks([])
                diagonal.append((ax, fx))
            else:
                ax.set_ylim(*limits[fy])
                scatter.append((ax, fx, fy))
    return _Panels(fig, scatter, diagonal)


def _classification(X, labels, model, names, dims) -> tuple[Any, dict]:
    from matplotlib.patches import Ellipse

    means = np.asarray(model.means_, dtype=np.float64)
    K = means.shape[0]
    covs = _full_covariances(model)
    layout = _panels(X, dims, names, top=0.55)
    colors = np.array([_PALETTE[k % 10] for k in range(K)])[labels]
    panels_out = []
    for ax, fx, fy in layout.scatter:
        ax.scatter(X[:, fx], X[:, fy], c=colors, s=5, alpha=0.6, linewidths=0, rasterized=True)
        ellipses = []
        for k in range(K):
            sub = covs[k][np.ix_([fx, fy], [fx, fy])]
            geo = ellipse_geometry(means[k, [fx, fy]], sub)
            ax.add_patch(
                Ellipse(
                    geo["center"], geo["width"], geo["height"], angle=geo["angle"],
                    fill=False, edgecolor="black", linewidth=1.1, gid=f"ellipse-{k}",
                )
            )  # fmt: skip
            ax.plot(*geo["center"], marker="x", color="black", markersize=6)
            ellipses.append({"component": k, **geo})
        panels_out.append({"x": names[fx], "y": names[fy], "x_index": fx, "y_index": fy,
                           "ellipses": ellipses})  # fmt: skip
    for ax, f in layout.diagonal:
        bins = np.linspace(*_limits(X[:, f]), 31)
        for k in range(K):
            ax.hist(X[labels == k, f], bins=bins, color=_PALETTE[k % 10], alpha=0.6)
    handles = [_legend_handle(_PALETTE[k % 10], f"component {k}") for k in range(K)]
    layout.fig.legend(handles=handles, loc="upper center", ncols=min(5, K), fontsize=8,
                      frameon=False)  # fmt: skip
    return layout.fig, {"panels": panels_out, "means": means.tolist(),
                        "ellipse_mass": ELLIPSE_MASS}  # fmt: skip


def _legend_handle(color: str, label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], marker="o", linestyle="", color=color, label=label)


def _density(X, model, names, dims) -> tuple[Any, dict]:
    layout = _panels(X, dims, names)
    out = []
    n_grid = 150 if len(dims) == 2 else 70
    for ax, fx, fy in layout.scatter:
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        gx, gy = np.meshgrid(np.linspace(x0, x1, n_grid), np.linspace(y0, y1, n_grid))
        marginal = _marginal(model, [fx, fy])
        logp = marginal.score_samples(np.column_stack([gx.ravel(), gy.ravel()]))
        logp = logp.reshape(gx.shape)
        top = float(logp.max())
        # log-density levels from the peak down: contours of a density spread over decades
        levels = np.sort(top - np.array([0.5, 1, 2, 3, 4.5, 6, 8, 10]))
        ax.scatter(X[:, fx], X[:, fy], s=3, color="#999999", alpha=0.5, linewidths=0,
                   rasterized=True)  # fmt: skip
        ax.contour(gx, gy, logp, levels=levels, cmap="viridis", linewidths=1.0)
        out.append({"x": names[fx], "y": names[fy], "levels": levels.tolist(),
                    "max_log_density": top})  # fmt: skip
    for ax, f in layout.diagonal:
        lo, hi = _limits(X[:, f])
        grid = np.linspace(lo, hi, 200)[:, None]
        dens = np.exp(_marginal(model, [f]).score_samples(grid))
        ax.hist(X[:, f], bins=np.linspace(lo, hi, 31), density=True, color="#dddddd")
        ax.plot(grid[:, 0], dens, color="black", linewidth=1.0)
    return layout.fig, {"panels": out}


def _uncertainty(X, uncertainty, names, dims, n_components) -> tuple[Any, dict]:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    layout = _panels(X, dims, names, right=1.2)
    fig = layout.fig
    order = np.argsort(uncertainty)  # most uncertain drawn last, on top
    # absolute scale: 0 (certain) to 1 - 1/K (all components equally likely)
    top_u = max(1.0 - 1.0 / max(n_components, 1), 1e-12)
    norm = Normalize(0.0, top_u)
    sizes = 4 + 80 * uncertainty[order] / top_u
    for ax, fx, fy in layout.scatter:
        ax.scatter(X[order, fx], X[order, fy], c=uncertainty[order], cmap="plasma", norm=norm,
                   s=sizes, linewidths=0, rasterized=True)  # fmt: skip
    for ax, f in layout.diagonal:
        if layout.scatter:  # pairs plot: the diagonal stays empty
            ax.set_axis_off()
            continue
        ax.scatter(X[order, f], uncertainty[order], c=uncertainty[order], cmap="plasma",
                   norm=norm, s=8, linewidths=0)  # fmt: skip
        ax.set_ylim(-0.05 * top_u, 1.05 * top_u)
        ax.set_ylabel("uncertainty")
    width = fig.get_size_inches()[0]
    cax = fig.add_axes((1 - 0.95 / width, 0.2, 0.15 / width, 0.6))
    fig.colorbar(ScalarMappable(norm=norm, cmap="plasma"), cax=cax,
                 label="1 - max posterior probability")  # fmt: skip
    return fig, {
        "mean": float(uncertainty.mean()),
        "max": float(uncertainty.max()),
        "scale_max": top_u,
        "n_above_0.1": int((uncertainty > 0.1).sum()),
    }


def _criteria(selection, model: GaussianMixture) -> tuple[Any, dict]:
    fig, grid = _canvas(10.5, 4.2, 1, 2, space=0.3)
    axes = grid[0]
    ks = selection.k_values
    types = selection.covariance_types
    out: dict[str, Any] = {"k": ks, "covariance_types": types, "criterion": selection.criterion}
    best = selection.best_row
    for ax, crit in zip(axes, ("bic", "icl"), strict=True):
        table = selection.values(crit)
        out[crit] = {t: [None if not np.isfinite(v) else float(v) for v in table[:, c]]
                     for c, t in enumerate(types)}  # fmt: skip
        for c, t in enumerate(types):
            ax.plot(ks, table[:, c], marker="o", markersize=4, label=t)
        value = getattr(best, crit)
        ax.plot([best.n_components], [value], marker="*", markersize=16, color="gold",
                markeredgecolor="black", linestyle="", label="selected")  # fmt: skip
        ax.set_xlabel("number of components K")
        ax.set_ylabel(f"{crit.upper()} (lower is better)")
        ax.set_xticks(ks)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    out["selected"] = {"n_components": best.n_components, "covariance_type": best.covariance_type}
    out["shown_model"] = {"n_components": int(model.means_.shape[0]),
                          "covariance_type": model.covariance_type}  # fmt: skip
    return fig, out


def _log_likelihood(model: GaussianMixture) -> tuple[Any, dict]:
    from matplotlib.ticker import MaxNLocator

    fig, grid = _canvas(11, 3.8, 1, 2, left=1.25, space=0.45)
    ax, ax_change = grid[0]
    bounds = [float(v) for v in getattr(model, "lower_bounds_", [])]
    changes = [abs(b - a) for a, b in itertools.pairwise(bounds)]
    if bounds:
        iterations = range(1, len(bounds) + 1)
        ax.plot(iterations, bounds, marker="o", markersize=3)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xlabel("EM iteration")
        ax.set_ylabel("mean log-likelihood per sample")
        ax.grid(alpha=0.3)
        positive = [(i + 2, c) for i, c in enumerate(changes) if c > 0]
        if positive:
            xs, ys = [p[0] for p in positive], [p[1] for p in positive]
            ax_change.semilogy(xs, ys, marker="o", markersize=3, color="#d62728")
            ax_change.axhline(float(model.tol), color="black", linestyle="--", linewidth=1,
                              label=f"tol = {model.tol:g}")  # fmt: skip
            ax_change.legend(fontsize=8)
        ax_change.set_xlabel("EM iteration")
        ax_change.set_ylabel("|change| of the log-likelihood")
        ax_change.grid(alpha=0.3)
        for a in (ax, ax_change):
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
            a.set_xlim(0.5, len(bounds) + 0.5)
    else:
        ax_change.set_axis_off()
        ax.text(0.5, 0.5, "no EM history (model built from known parameters)",
                ha="center", va="center", transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
    return fig, {"lower_bounds": bounds, "changes": changes}


def _fmt(values: Any) -> str:
    return np.array2string(np.asarray(values, dtype=np.float64), precision=4, suppress_small=True,
                           max_line_width=80)  # fmt: skip


def _parameter_table(model: GaussianMixture, names: list[str]) -> str:
    covs = _full_covariances(model)
    rows = []
    for k in range(model.means_.shape[0]):
        rows.append(
            "<tr>"
            f"<td><span class='swatch' style='background:{_PALETTE[k % 10]}'></span>{k}</td>"
            f"<td>{float(model.weights_[k]):.4f}</td>"
            f"<td><pre>{html.escape(_fmt(model.means_[k]))}</pre></td>"
            f"<td><pre>{html.escape(_fmt(covs[k]))}</pre></td>"
            "</tr>"
        )
    head = html.escape(", ".join(names))
    return (
        f"<h3>Parameters ({html.escape(model.covariance_type)} covariance; features: {head})</h3>"
        "<table class='params'><thead><tr><th>component</th><th>weight</th><th>mean</th>"
        "<th>covariance</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _selection_table(selection) -> str:
    types = selection.covariance_types
    best = selection.best_row
    crit = selection.criterion
    table = selection.values(crit)
    head = "".join(f"<th>{html.escape(t)}</th>" for t in types)
    body = []
    for r, k in enumerate(selection.k_values):
        cells = []
        for c, t in enumerate(types):
            v = table[r, c]
            text = "NA" if not np.isfinite(v) else f"{v:.2f}"
            mark = best.n_components == k and best.covariance_type == t
            cells.append(f"<td class='best'>{text} *</td>" if mark else f"<td>{text}</td>")
        body.append(f"<tr><th>{k}</th>{''.join(cells)}</tr>")
    return (
        f"<h3>{crit.upper()} by K and covariance type (lower is better; * selected)</h3>"
        f"<table class='grid'><thead><tr><th>K</th>{head}</tr></thead><tbody>"
        + "".join(body) + "</tbody></table>"
    )  # fmt: skip


def build_section(
    X: ArrayLike,
    model: GaussianMixture,
    *,
    selection=None,
    feature_names: list[str] | None = None,
    title: str = "Gaussian mixture",
    name: str | None = None,
    random_state: int = 0,
) -> ReportSection:
    """Draw every figure for one data set and its fitted model.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The data shown (in memory).
    model : GaussianMixture
        Fitted on data with ``n_features`` columns.
    selection : SelectionResult, optional
        A grid from :func:`gaussmix.selection.select` for the BIC/ICL curves (omitted without).
    feature_names : list of str, optional
        Axis labels (default ``x0, x1, ...``).
    title : str
        Section heading.
    name : str, optional
        HTML anchor and PNG file prefix (default: from the title).
    random_state : int, default=0
        Seed of the subsample drawn in scatter plots of large data.

    Returns
    -------
    section : ReportSection
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {X.shape}")
    d = X.shape[1]
    if model.means_.shape[1] != d:
        raise ValueError(
            f"the data has {d} columns but the model was fitted on {model.means_.shape[1]}"
        )
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(d)]
    if len(names) != d:
        raise ValueError(f"{len(names)} feature names for {d} columns")
    if X.shape[0] > MAX_POINTS:
        rng = np.random.default_rng(random_state)
        shown = np.sort(rng.choice(X.shape[0], MAX_POINTS, replace=False))
        Xs = X[shown]
    else:
        Xs = X
    dims = list(range(min(d, MAX_PAIR_FEATURES)))
    proba = model.predict_proba(Xs).astype(np.float64)
    labels = np.argmax(proba, axis=1)
    uncertainty = 1.0 - proba.max(axis=1)
    section = ReportSection(title, _slug(name or title))
    cap_note = f" (first {len(dims)} of {d} features)" if len(dims) < d else ""
    fig, data = _classification(Xs, labels, model, names, dims)
    section.figures["classification"], section.data["classification"] = fig, data
    section.captions["classification"] = (
        f"Data coloured by most probable component, with {int(ELLIPSE_MASS * 100)} % "
        f"covariance ellipses and means (x){cap_note}."
    )
    fig, data = _density(Xs, model, names, dims)
    section.figures["density"], section.data["density"] = fig, data
    section.captions["density"] = f"Contours of the mixture's log-density{cap_note}."
    fig, data = _uncertainty(Xs, uncertainty, names, dims, int(model.means_.shape[0]))
    section.figures["uncertainty"], section.data["uncertainty"] = fig, data
    section.captions["uncertainty"] = (
        "Classification uncertainty 1 - max_k p(z=k | x): large bright points are ambiguous."
    )
    if selection is not None:
        fig, data = _criteria(selection, model)
        section.figures["criteria"], section.data["criteria"] = fig, data
        section.captions["criteria"] = "BIC and ICL across K, one curve per covariance type."
    fig, data = _log_likelihood(model)
    section.figures["log_likelihood"], section.data["log_likelihood"] = fig, data
    section.captions["log_likelihood"] = "Mean log-likelihood per sample at each EM iteration."
    section.data["model"] = {
        "n_components": int(model.means_.shape[0]),
        "covariance_type": model.covariance_type,
        "weights": np.asarray(model.weights_, dtype=np.float64).tolist(),
        "means": np.asarray(model.means_, dtype=np.float64).tolist(),
        "covariances": _full_covariances(model).tolist(),
        "feature_names": names,
    }
    section.data["n_samples"] = int(X.shape[0])
    section.data["n_points_drawn"] = int(Xs.shape[0])
    section.html_blocks.append(_parameter_table(model, names))
    if selection is not None:
        section.html_blocks.append(_selection_table(selection))
    return section


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    # light compression: encoding at the default level took a third of the report time
    fig.savefig(buf, format="png", dpi=100, pil_kwargs={"compress_level": 3})
    return buf.getvalue()


def _slug(text: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in text)
    return "-".join(p for p in out.split("-") if p) or "section"


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; color: #222; padding: 0 1em; background: #fff; }
h1 { border-bottom: 2px solid #1f77b4; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: .6em 0; flex: 1 1 420px; max-width: 100%; }
figure.wide { flex-basis: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; vertical-align: top; text-align: right; }
td pre { margin: 0; text-align: left; }
td.best { background: #fff3b0; font-weight: bold; }
.swatch { display: inline-block; width: .8em; height: .8em; margin-right: .4em; }
#summary { color: #555; }
"""

# Reads the embedded data back (a parse error would show in the browser console) and checks
# every figure decoded; the summary line it writes is the page's own self-test.
_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("gaussmix-data").textContent);
  function check() {
    var images = document.querySelectorAll("figure img");
    var broken = 0;
    images.forEach(function (img) {
      if (!img.complete || img.naturalWidth === 0) { broken += 1; }
    });
    if (broken) { console.error("gaussmix report: " + broken + " figure(s) failed to load"); }
    var parts = data.sections.map(function (s) {
      return s.title + ": " + s.n_samples + " points, K = " + s.model.n_components +
        " (" + s.model.covariance_type + ")";
    });
    var summary = document.getElementById("summary");
    summary.textContent = parts.join("; ") + "; " + (images.length - broken) + " of " +
      images.length + " figures loaded.";
    summary.setAttribute("data-figures-loaded", String(images.length - broken));
  }
  if (document.readyState === "complete") {
    check();
  } else {
    window.addEventListener("load", check);
  }
})();
"""


def _json_for_script(payload: dict) -> str:
    # "</" would end the <script> element early; JSON allows the escaped form
    return json.dumps(payload, allow_nan=False).replace("</", "<\\/")


def write_html(
    sections: list[ReportSection],
    path: str | os.PathLike,
    *,
    title: str = "gaussmix report",
    intro: str | None = None,
) -> Path:
    """Write a self-contained HTML page (PNG figures base64-embedded, no external resources).

    Parameters
    ----------
    sections : list of ReportSection
    path : str or path-like
        Destination, written atomically.
    title : str
        Page title.
    intro : str, optional
        A paragraph of plain text under the title.

    Returns
    -------
    path : pathlib.Path
    """
    from gaussmix import __version__
    from gaussmix._io import atomic_output

    body = [f"<h1>{html.escape(title)}</h1>"]
    if intro:
        body.append(f"<p>{html.escape(intro)}</p>")
    body.append("<p id='summary'>(summary needs JavaScript)</p>")
    for section in sections:
        slug = section.name
        body.append(f"<section id='{slug}'><h2>{html.escape(section.title)}</h2>")
        body.append("<div class='figures'>")
        for name, fig in section.figures.items():
            png = base64.b64encode(_png_bytes(fig)).decode("ascii")
            caption = html.escape(section.captions.get(name, name))
            # pairs plots and two-panel figures get a row of their own; 2-D scatters pair up
            wide = " class='wide'" if fig.get_size_inches()[0] > 8 else ""
            body.append(
                f"<figure id='{slug}-{name}'{wide}><img alt='{html.escape(name)}' "
                f"src='data:image/png;base64,{png}'><figcaption>{caption}</figcaption></figure>"
            )
        body.append("</div>")
        body.extend(section.html_blocks)
        body.append("</section>")
    payload = {
        "gaussmix_version": __version__,
        "sections": [{"title": s.title, **s.data} for s in sections],
    }
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<link rel='icon' href='data:,'>"  # no favicon request: the page needs no network
        f"<style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<footer><p>gaussmix {html.escape(__version__)}</p></footer>\n"
        f"<script type='application/json' id='gaussmix-data'>{_json_for_script(payload)}"
        f"</script>\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )
    path = Path(path)
    with atomic_output(path) as fh:
        fh.write(page)
    return path


def read_report_data(path: str | os.PathLike) -> dict:
    """The JSON block embedded in a report written by :func:`write_html`.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    data : dict
        ``{"gaussmix_version", "sections": [{"title", "classification", ...}]}``.
    """
    text = Path(path).read_text(encoding="utf-8")
    start_tag = "<script type='application/json' id='gaussmix-data'>"
    start = text.index(start_tag) + len(start_tag)
    end = text.index("</script>", start)
    return json.loads(text[start:end])


def write_png(sections: list[ReportSection], folder: str | os.PathLike) -> list[Path]:
    """Write each figure as ``<section>-<figure>.png`` in ``folder`` (created if missing).

    Parameters
    ----------
    sections : list of ReportSection
    folder : str or path-like

    Returns
    -------
    paths : list of pathlib.Path
        The files written, each atomically.
    """
    from gaussmix._io import atomic_output

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for section in sections:
        slug = section.name
        for name, fig in section.figures.items():
            target = folder / f"{slug}-{name}.png"
            with atomic_output(target, "wb") as fh:
                fh.write(_png_bytes(fig))
            written.append(target)
    return written
