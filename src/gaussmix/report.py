"""The visual report: figures of a fitted mixture, as one self-contained HTML page or PNG files.

Figures, drawn by the functions of :mod:`gaussmix.plot` (one code path for notebooks and the
report) on figures made without pyplot, so no display or global state is involved:

- ``classification``: the data coloured by most probable component, with each component's
  covariance ellipse (95 % probability contour) and mean; a pairs plot when d > 2 (of the five
  most separating features when d > 5, or the ``features`` chosen).
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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from gaussmix import plot
from gaussmix._conditional import full_covariances
from gaussmix.estimator import GaussianMixture
from gaussmix.plot import ELLIPSE_MASS, ellipse_geometry

__all__ = [
    "ELLIPSE_MASS",
    "ReportSection",
    "build_section",
    "ellipse_geometry",
    "read_report_data",
    "write_html",
    "write_png",
]

#: pairs plots show at most this many features (by default the most separating ones)
MAX_PAIR_FEATURES = 5
#: points drawn per scatter (a seeded subsample beyond that)
MAX_POINTS = 4000
_PALETTE = plot.PALETTE


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


def _canvas(width, height, nrows=1, ncols=1, *, left=0.8, right=0.3, bottom=0.65, top=0.35,
            space=0.3):  # fmt: skip
    """A figure with a fixed grid and margins in inches (constrained layout costs seconds)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=space, hspace=space)  # fmt: skip
    return fig, axes


def _pairs_figure(model, X, kind, dims, names, *, top=0.35, right=0.3, **kwargs):
    """A pyplot-free figure drawn by :func:`gaussmix.plot.pairs`, and its scatter panels."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=plot.pairs_size(len(dims), top=top, right=right), dpi=100)
    axes = plot.pairs(model, X, kind=kind, features=dims, fig=fig, top=top, right=right,
                      feature_names=names, **kwargs)  # fmt: skip
    if len(dims) == 1:
        return fig, []
    if len(dims) == 2:
        return fig, [(axes[0, 0], dims[0], dims[1])]
    n = len(dims)
    return fig, [(axes[i, j], dims[j], dims[i]) for i in range(n) for j in range(i)]


def _classification(X, labels, model, names, dims) -> tuple[Any, dict]:
    means = np.asarray(model.means_, dtype=np.float64)
    K = means.shape[0]
    covs = full_covariances(model._fitted_params())
    fig, panels = _pairs_figure(model, X, "ellipses", dims, names, top=0.55, labels=labels,
                                mass=ELLIPSE_MASS)  # fmt: skip
    panels_out = []
    for _, fx, fy in panels:
        ellipses = [
            {"component": k,
             **ellipse_geometry(means[k, [fx, fy]], covs[k][np.ix_([fx, fy], [fx, fy])])}
            for k in range(K)
        ]  # fmt: skip
        panels_out.append({"x": names[fx], "y": names[fy], "x_index": fx, "y_index": fy,
                           "ellipses": ellipses})  # fmt: skip
    handles = [plot._legend_handle(_PALETTE[k % 10], f"component {k}") for k in range(K)]
    fig.legend(handles=handles, loc="upper center", ncols=min(5, K), fontsize=8, frameon=False)
    return fig, {"panels": panels_out, "means": means.tolist(), "ellipse_mass": ELLIPSE_MASS}


def _density(X, model, names, dims) -> tuple[Any, dict]:
    fig, panels = _pairs_figure(model, X, "density", dims, names,
                                n_grid=150 if len(dims) == 2 else 70)  # fmt: skip
    out = []
    for ax, fx, fy in panels:
        (contours,) = [c for c in ax.collections if hasattr(c, "levels")]
        levels = np.asarray(contours.levels, dtype=np.float64)
        out.append({"x": names[fx], "y": names[fy], "levels": levels.tolist(),
                    # the levels sit DENSITY_DROPS below the grid's peak
                    "max_log_density": float(levels[-1] + min(plot.DENSITY_DROPS))})  # fmt: skip
    return fig, {"panels": out}


def _uncertainty(X, proba, model, names, dims) -> tuple[Any, dict]:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig, _ = _pairs_figure(model, X, "uncertainty", dims, names, right=1.2, proba=proba)
    uncertainty = 1.0 - proba.max(axis=1)
    top_u = max(1.0 - 1.0 / max(int(model.means_.shape[0]), 1), 1e-12)
    width = fig.get_size_inches()[0]
    cax = fig.add_axes((1 - 0.95 / width, 0.2, 0.15 / width, 0.6))
    fig.colorbar(ScalarMappable(norm=Normalize(0.0, top_u), cmap="plasma"), cax=cax,
                 label="1 - max posterior probability")  # fmt: skip
    return fig, {
        "mean": float(uncertainty.mean()),
        "max": float(uncertainty.max()),
        "scale_max": top_u,
        "n_above_0.1": int((uncertainty > 0.1).sum()),
    }


def _criteria(selection, model: GaussianMixture) -> tuple[Any, dict]:
    fig, grid = _canvas(10.5, 4.2, 1, 2, space=0.3)
    ks = selection.k_values
    types = selection.covariance_types
    out: dict[str, Any] = {"k": ks, "covariance_types": types, "criterion": selection.criterion}
    best = selection.best_row
    for ax, crit in zip(grid[0], ("bic", "icl"), strict=True):
        plot.criteria(selection, crit, ax=ax, legend=crit == "bic")
        table = selection.values(crit)
        out[crit] = {t: [None if not np.isfinite(v) else float(v) for v in table[:, c]]
                     for c, t in enumerate(types)}  # fmt: skip
        out[f"{crit}_ylim"] = [float(v) for v in ax.get_ylim()]
    out["selected"] = {"n_components": best.n_components, "covariance_type": best.covariance_type}
    out["shown_model"] = {"n_components": int(model.means_.shape[0]),
                          "covariance_type": model.covariance_type}  # fmt: skip
    return fig, out


def _log_likelihood(model: GaussianMixture) -> tuple[Any, dict]:
    fig, grid = _canvas(11, 3.8, 1, 2, left=1.25, space=0.45)
    ax, ax_change = grid[0]
    bounds = [float(v) for v in getattr(model, "lower_bounds_", [])]
    changes = [abs(b - a) for a, b in itertools.pairwise(bounds)]
    plot.log_likelihood(model, ax=ax)
    if bounds:
        plot.log_likelihood(model, ax=ax_change, change=True)
    else:
        ax_change.set_axis_off()
    return fig, {"lower_bounds": bounds, "changes": changes}


def _fmt(values: Any) -> str:
    return np.array2string(np.asarray(values, dtype=np.float64), precision=4, suppress_small=True,
                           max_line_width=80)  # fmt: skip


def _parameter_table(model: GaussianMixture, names: list[str]) -> str:
    covs = full_covariances(model._fitted_params())
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
    features: list | None = None,
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
    features : list of int or str, optional
        Features of the scatter and pairs plots, in order (indices, or names from
        ``feature_names``). Default: all when d <= 5, else the 5 that separate the components
        most (:func:`gaussmix.plot.most_separating`).

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
    dims = _shown_features(model, names, features)
    proba = model.predict_proba(Xs).astype(np.float64)
    labels = np.argmax(proba, axis=1)
    section = ReportSection(title, _slug(name or title))
    cap_note = ""
    if len(dims) < d:
        how = "chosen" if features is not None else "most separating"
        cap_note = f" ({len(dims)} of {d} features, {how}: {', '.join(names[i] for i in dims)})"
    fig, data = _classification(Xs, labels, model, names, dims)
    section.figures["classification"], section.data["classification"] = fig, data
    section.captions["classification"] = (
        f"Data coloured by most probable component, with {int(ELLIPSE_MASS * 100)} % "
        f"covariance ellipses and means (x){cap_note}."
    )
    fig, data = _density(Xs, model, names, dims)
    section.figures["density"], section.data["density"] = fig, data
    section.captions["density"] = f"Contours of the mixture's log-density{cap_note}."
    fig, data = _uncertainty(Xs, proba, model, names, dims)
    section.figures["uncertainty"], section.data["uncertainty"] = fig, data
    section.captions["uncertainty"] = (
        "Classification uncertainty 1 - max_k p(z=k | x): large bright points are ambiguous."
    )
    if selection is not None:
        fig, data = _criteria(selection, model)
        section.figures["criteria"], section.data["criteria"] = fig, data
        section.captions["criteria"] = (
            "BIC and ICL across K, one curve per covariance type; the y-axis shows the range "
            "where the choice is made (curves far worse leave the top)."
        )
    fig, data = _log_likelihood(model)
    section.figures["log_likelihood"], section.data["log_likelihood"] = fig, data
    section.captions["log_likelihood"] = "Mean log-likelihood per sample at each EM iteration."
    section.data["model"] = {
        "n_components": int(model.means_.shape[0]),
        "covariance_type": model.covariance_type,
        "weights": np.asarray(model.weights_, dtype=np.float64).tolist(),
        "means": np.asarray(model.means_, dtype=np.float64).tolist(),
        "covariances": full_covariances(model._fitted_params()).tolist(),
        "feature_names": names,
    }
    section.data["features_shown"] = [names[i] for i in dims]
    section.data["n_samples"] = int(X.shape[0])
    section.data["n_points_drawn"] = int(Xs.shape[0])
    section.html_blocks.append(_parameter_table(model, names))
    if selection is not None:
        section.html_blocks.append(_selection_table(selection))
    return section


def _shown_features(model: GaussianMixture, names: list[str], features) -> list[int]:
    d = len(names)
    if features is None:
        if d <= MAX_PAIR_FEATURES:
            return list(range(d))
        return plot.most_separating(model, MAX_PAIR_FEATURES)
    out = []
    for f in [features] if isinstance(features, (str, int)) else list(features):
        if isinstance(f, str):
            if f not in names:
                raise ValueError(f"features: no feature named {f!r}; the features are {names}")
            out.append(names.index(f))
        elif isinstance(f, (int, np.integer)) and not isinstance(f, bool) and 0 <= f < d:
            out.append(int(f))
        else:
            raise ValueError(f"features: {f!r} is not a feature name or an index in 0..{d - 1}")
    if not out or len(set(out)) != len(out):
        raise ValueError(f"features must name distinct features, got {features!r}")
    return out


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
