"""gaussmix.plot, checked through the artists it draws and by a headless (Agg) render."""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy.stats import chi2, multivariate_normal

pytest.importorskip("matplotlib")

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from gaussmix import GaussianMixture, plot
from gaussmix.selection import select

plt.switch_backend("Agg")  # headless: no display, the same pixels everywhere

WEIGHTS = [0.5, 0.3, 0.2]
MEANS = [[0.0, 0.0, 0.0], [5.0, 4.0, -2.0], [-4.0, 6.0, 3.0]]
COVS = [
    [[1.0, 0.3, 0.1], [0.3, 0.5, 0.0], [0.1, 0.0, 0.8]],
    [[0.8, -0.4, 0.2], [-0.4, 1.2, 0.1], [0.2, 0.1, 0.6]],
    [[0.4, 0.0, 0.0], [0.0, 2.0, 0.5], [0.0, 0.5, 1.0]],
]


@pytest.fixture(scope="module")
def model3():
    return GaussianMixture.from_parameters(WEIGHTS, MEANS, COVS, random_state=0)


@pytest.fixture(scope="module")
def data3(model3):
    return model3.sample(400)[0]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _ax():
    return Figure().add_subplot()


def _patches(ax):
    return [p for p in ax.patches if isinstance(p, Ellipse)]


def test_ellipses_are_the_components_marginals(model3, data3):
    ax = plot.ellipses(model3, data3, features=[2, 0], mass=0.9, ax=_ax())
    patches = _patches(ax)
    assert len(patches) == 3
    r2 = chi2.ppf(0.9, df=2)
    cov = np.asarray(COVS)
    for k, patch in enumerate(patches):
        assert patch.get_gid() == f"ellipse-{k}"
        np.testing.assert_allclose(patch.center, np.asarray(MEANS)[k, [2, 0]], atol=1e-12)
        # on-curve points of the Bezier outline: every third vertex
        outline = patch.get_patch_transform().transform(patch.get_path().vertices[:-1:3])
        diff = outline - np.asarray(MEANS)[k, [2, 0]]
        sub = cov[k][np.ix_([2, 0], [2, 0])]
        m2 = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(sub), diff)
        np.testing.assert_allclose(m2, r2, rtol=1e-8)
    assert ax.get_xlabel() == "x2" and ax.get_ylabel() == "x0"


def test_ellipses_colour_points_by_the_given_classes(model3, data3):
    labels = np.where(data3[:, 0] > 2, "big", "small")
    ax = plot.ellipses(model3, data3, labels=labels, ax=_ax(), legend=True)
    (points,) = ax.collections
    colours = points.get_facecolors()[:, :3]
    big = colours[labels == "big"]
    assert len(np.unique(big, axis=0)) == 1 and len(np.unique(colours, axis=0)) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["big", "small"]
    with pytest.raises(ValueError, match="labels must have shape"):
        plot.ellipses(model3, data3, labels=labels[:5], ax=_ax())


def test_ellipses_without_data_and_in_one_dimension(model3, data3):
    ax = plot.ellipses(model3, ax=_ax())
    assert len(_patches(ax)) == 3 and not ax.collections
    lo, hi = ax.get_xlim()
    assert lo < min(m[0] for m in MEANS) and hi > max(m[0] for m in MEANS)
    ax = plot.ellipses(model3, data3, features=[1], ax=_ax())
    bars = sum(len(c) for c in ax.containers)
    assert bars == 3 * 30  # one histogram of 30 bins per component


def test_density_contours_are_the_marginal_log_density(model3, data3):
    ax = plot.density(model3, data3, features=[0, 2], ax=_ax(), n_grid=200)
    (cs,) = [c for c in ax.collections if hasattr(c, "levels")]
    assert len(cs.levels) == len(plot.DENSITY_DROPS)
    cov = np.asarray(COVS)[:, [0, 2]][:, :, [0, 2]]
    means = np.asarray(MEANS)[:, [0, 2]]

    def logp(P):  # the marginal by scipy, independent of gaussmix's maths
        return np.log(sum(w * multivariate_normal(m, c).pdf(P)
                          for w, m, c in zip(WEIGHTS, means, cov, strict=True)))  # fmt: skip

    for level, segs in zip(cs.levels, cs.allsegs, strict=True):
        vertices = np.concatenate([s for s in segs if len(s)])
        # linear interpolation on a 200-point grid: close, not exact
        np.testing.assert_allclose(logp(vertices), level, atol=0.02)


def test_density_one_feature_is_the_marginal_curve(model3, data3):
    ax = plot.density(model3, data3, features=[1], ax=_ax())
    (line,) = ax.get_lines()
    x, y = line.get_data()
    ref = sum(w * multivariate_normal(m[1], c[1][1]).pdf(x)
              for w, m, c in zip(WEIGHTS, MEANS, COVS, strict=True))  # fmt: skip
    np.testing.assert_allclose(y, ref, rtol=1e-10)


def test_uncertainty_points_are_one_minus_max_posterior(model3, data3):
    ax = plot.uncertainty(model3, data3, ax=_ax(), colorbar=True)
    (points,) = ax.collections
    joint = np.column_stack([w * multivariate_normal(m, c).pdf(data3)
                             for w, m, c in zip(WEIGHTS, MEANS, COVS, strict=True)])  # fmt: skip
    u = 1 - (joint / joint.sum(1, keepdims=True)).max(1)
    np.testing.assert_allclose(np.sort(points.get_array()), np.sort(u), atol=1e-12)
    assert points.norm.vmax == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="needs the data"):
        plot.uncertainty(model3, None, ax=_ax())
    with pytest.raises(ValueError, match="proba must have shape"):
        plot.uncertainty(model3, data3, proba=np.ones((3, 3)), ax=_ax())


def test_pairs_grid(model3, data3):
    fig = Figure(figsize=plot.pairs_size(3))
    axes = plot.pairs(model3, data3, fig=fig)
    assert axes.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            if j > i:
                assert not axes[i, j].axison
            elif j < i:
                centres = [p.center for p in _patches(axes[i, j])]
                np.testing.assert_allclose(centres, np.asarray(MEANS)[:, [j, i]], atol=1e-12)
    axes = plot.pairs(model3, data3, kind="uncertainty", fig=Figure())
    assert not axes[1, 1].axison and axes[1, 0].collections
    with pytest.raises(ValueError, match="kind must be one of"):
        plot.pairs(model3, data3, kind="violin", fig=Figure())


def test_pairs_defaults_to_the_most_separating_features():
    d, K = 7, 2
    means = np.zeros((K, d))
    means[1, [1, 4, 6]] = [8.0, 3.0, 5.0]
    means[1, [0, 2]] = [0.5, 0.2]
    model = GaussianMixture.from_parameters([0.5, 0.5], means, np.ones((K, d)), "diag")
    X, _ = model.sample(300)
    assert plot.most_separating(model, 3) == [1, 4, 6]
    assert plot.most_separating(model, 5) == [0, 1, 2, 4, 6]
    axes = plot.pairs(model, X, max_features=3, fig=Figure())
    assert axes.shape == (3, 3)
    assert [axes[2, j].get_xlabel() for j in range(3)] == ["x1", "x4", "x6"]
    axes = plot.pairs(model, X, features=[5, 0], fig=Figure())
    assert axes.shape == (1, 1) and axes[0, 0].get_xlabel() == "x5"


@pytest.fixture(scope="module")
def selection():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (150, 2)), rng.normal(6, 1, (150, 2)) * [1, 3]]
    return select(X, range(1, 6), ["spherical", "full"], n_jobs=1)


def test_criteria_curves_and_focus(selection):
    ax = plot.criteria(selection, "bic", ax=_ax())
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    table = selection.values("bic")
    for c, t in enumerate(selection.covariance_types):
        np.testing.assert_array_equal(lines[t].get_xdata(), selection.k_values)
        np.testing.assert_array_equal(lines[t].get_ydata(), table[:, c])
    best = selection.best_row
    assert list(lines["selected"].get_ydata()) == [best.bic]
    lo, hi = ax.get_ylim()
    # the worst value (K=1) is far above: the axis is not stretched to it ...
    assert hi < np.nanmax(table)
    # ... yet every curve's minimum and the selected curve next to K* stay in view
    assert lo < np.nanmin(table) and np.all(np.nanmin(table, axis=0) < hi)
    r = selection.k_values.index(best.n_components)
    c = selection.covariance_types.index(best.covariance_type)
    assert table[r - 1, c] < hi and table[r + 1, c] < hi
    full = plot.criteria(selection, "icl", ax=_ax(), focus=False)
    assert full.get_ylim()[1] >= np.nanmax(selection.values("icl"))
    with pytest.raises(ValueError, match="criterion"):
        plot.criteria(selection, "aicc", ax=_ax())


def test_selection_result_repr_frame_and_plot(selection):
    text = repr(selection)
    assert "\n" not in text and len(text) < 200
    best = selection.best_row
    assert f"best K={best.n_components} {best.covariance_type}" in text
    pd = pytest.importorskip("pandas")
    frame = selection.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == len(selection.rows)
    np.testing.assert_array_equal(frame["bic"], [r.bic for r in selection.rows])
    assert frame["selected"].sum() == 1
    assert frame.loc[frame["selected"], "n_components"].item() == best.n_components
    pivot = frame.pivot(index="n_components", columns="covariance_type", values="bic")
    np.testing.assert_array_equal(pivot[selection.covariance_types].to_numpy(),
                                  selection.values("bic"))  # fmt: skip
    ax = selection.plot(ax=_ax())
    assert ax.get_ylabel().startswith("BIC")


def test_log_likelihood_curves(model3, data3):
    fitted = GaussianMixture(3, random_state=0, tol=1e-6).fit(data3)
    ax = plot.log_likelihood(fitted, ax=_ax())
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), fitted.lower_bounds_)
    ax = plot.log_likelihood(fitted, ax=_ax(), change=True)
    assert ax.get_yscale() == "log"
    changes = np.abs(np.diff(fitted.lower_bounds_))
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), changes[changes > 0])
    ax = plot.log_likelihood(model3, ax=_ax())
    assert "no EM history" in ax.texts[0].get_text()


def test_headless_render_through_pyplot(model3, data3):
    """ax=None draws on a new pyplot figure; the Agg render is a real picture."""
    for draw in (plot.ellipses, plot.density, plot.uncertainty):
        ax = draw(model3, data3)
        buf = io.BytesIO()
        ax.figure.savefig(buf, format="png", dpi=60)
        pixels = mpimg.imread(io.BytesIO(buf.getvalue()), format="png")[..., :3]
        assert pixels.std() > 0.05 and (pixels < 0.9).any(axis=2).mean() > 0.01


def test_names_features_and_bad_arguments(model3, data3):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(data3, columns=["price $", "cost $", "z"])
    named = GaussianMixture(3, random_state=0).fit(df)
    ax = plot.ellipses(named, df, features=["z", "price $"], ax=_ax())
    assert ax.get_xlabel() == "z" and ax.get_ylabel() == "price $"
    np.testing.assert_allclose([p.center for p in _patches(ax)], named.means_[:, [2, 0]])
    with pytest.raises(ValueError, match="at most 2 features"):
        plot.ellipses(model3, data3, features=[0, 1, 2], ax=_ax())
    with pytest.raises(ValueError, match="X must have shape"):
        plot.density(model3, data3[:, :2], ax=_ax())
    with pytest.raises(ValueError, match="no feature named"):
        plot.density(named, df, features=["nope"], ax=_ax())
    with pytest.raises(ValueError, match="mass must be in"):
        plot.ellipses(model3, mass=1.5, ax=_ax())


def _readme_block(section: str) -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    body = text[text.index(f"## {section}\n"):]
    body = body[: body.index("\n## ", 1)]
    return body[body.index("```python\n") + 10 : body.index("```", body.index("```python\n") + 10)]


@pytest.mark.slow
@pytest.mark.parametrize("section", ["Conditioning and regression", "Plotting from Python"])
def test_readme_examples_run(section, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    exec(compile(_readme_block(section), f"README: {section}", "exec"), {})
    out = capsys.readouterr().out
    if section == "Conditioning and regression":
        first = [float(v) for v in out.splitlines()[0].split()]
        assert first[0] == pytest.approx(first[1], rel=1e-12)  # condition() == predict()
        assert mpimg.imread(tmp_path / "docs" / "regression.png")[..., :3].std() > 0.05
    else:
        assert out.startswith("SelectionResult(BIC over K=1..9")
