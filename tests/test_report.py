"""The report's figures, checked by their data, and the HTML page in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import chi2, multivariate_normal

pytest.importorskip("matplotlib")

import matplotlib.image as mpimg
from matplotlib.patches import Ellipse

from gaussmix import GaussianMixture
from gaussmix.report import (
    ELLIPSE_MASS,
    build_section,
    read_report_data,
    write_html,
    write_png,
)
from gaussmix.selection import select

WEIGHTS = [0.5, 0.3, 0.2]
MEANS_3D = [[0.0, 0.0, 0.0], [5.0, 4.0, -2.0], [-4.0, 6.0, 3.0]]
COVS_3D = [
    [[1.0, 0.3, 0.1], [0.3, 0.5, 0.0], [0.1, 0.0, 0.8]],
    [[0.8, -0.4, 0.2], [-0.4, 1.2, 0.1], [0.2, 0.1, 0.6]],
    [[0.4, 0.0, 0.0], [0.0, 2.0, 0.5], [0.0, 0.5, 1.0]],
]


def _model(d: int, covariance_type: str = "full") -> GaussianMixture:
    means = np.array(MEANS_3D)[:, :d]
    covs = np.array(COVS_3D)[:, :d, :d]
    if covariance_type == "diag":
        covs = np.stack([np.diag(c) for c in covs])
    return GaussianMixture.from_parameters(WEIGHTS, means, covs, covariance_type, random_state=0)


@pytest.fixture(scope="module")
def fitted_2d():
    X, _ = _model(2).sample(600)
    model = GaussianMixture(3, random_state=0).fit(X)
    return X, model, select(X, range(1, 5), ["full", "diag"], n_jobs=1)


@pytest.fixture(scope="module")
def section_2d(fitted_2d):
    X, model, selection = fitted_2d
    return build_section(X, model, selection=selection, feature_names=["a", "b"], title="two")


def _ellipses(fig):
    return [p for ax in fig.axes for p in ax.patches if isinstance(p, Ellipse)]


def _boundary_in_data(patch: Ellipse) -> np.ndarray:
    """On-curve points of the drawn outline, in data coordinates.

    The outline is a unit circle of cubic Bezier segments (MOVETO, then control, control,
    end-point triplets, then CLOSEPOLY): every third vertex lies exactly on the curve.
    """
    vertices = patch.get_path().vertices[:-1:3]
    assert len(vertices) >= 8
    return patch.get_patch_transform().transform(vertices)


def test_ellipses_are_the_fitted_components(section_2d, fitted_2d):
    _, model, _ = fitted_2d
    patches = _ellipses(section_2d.figures["classification"])
    assert len(patches) == 3
    radius2 = chi2.ppf(ELLIPSE_MASS, df=2)
    for k, patch in enumerate(patches):
        np.testing.assert_allclose(patch.center, model.means_[k], rtol=1e-12)
        # every point of the drawn outline is at squared Mahalanobis distance chi2(0.95, 2)
        diff = _boundary_in_data(patch) - model.means_[k]
        m2 = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(model.covariances_[k]), diff)
        np.testing.assert_allclose(m2, radius2, rtol=1e-8)
    data = section_2d.data["classification"]["panels"][0]["ellipses"]
    for k, e in enumerate(data):
        np.testing.assert_allclose(e["center"], model.means_[k], rtol=1e-12)
        np.testing.assert_allclose(e["cov"], model.covariances_[k], rtol=1e-12)


def test_pairs_plot_projects_each_pair():
    model = _model(3, "diag")
    X, _ = model.sample(300)
    section = build_section(X, model)
    panels = section.data["classification"]["panels"]
    assert {(p["x_index"], p["y_index"]) for p in panels} == {(0, 1), (0, 2), (1, 2)}
    full = np.stack([np.diag(c) for c in model.covariances_])
    for p in panels:
        i, j = p["x_index"], p["y_index"]
        for k, e in enumerate(p["ellipses"]):
            np.testing.assert_allclose(e["center"], model.means_[k, [i, j]], rtol=1e-12)
            np.testing.assert_allclose(e["cov"], full[k][np.ix_([i, j], [i, j])], rtol=1e-12)
    patches = _ellipses(section.figures["classification"])
    drawn = sorted(tuple(np.round(p.center, 12)) for p in patches)
    expected = sorted(
        tuple(np.round(model.means_[k, [p["x_index"], p["y_index"]]], 12))
        for p in panels
        for k in range(3)
    )
    assert drawn == expected


def test_density_contours_are_the_marginal_density():
    """The contoured function of a pairs panel is the mixture integrated over the third axis."""
    model = _model(3)
    marginal = model.marginal([0, 2])

    def joint(x1, x0, x2):
        return sum(
            w * multivariate_normal(m, c).pdf([x0, x1, x2])
            for w, m, c in zip(WEIGHTS, MEANS_3D, COVS_3D, strict=True)
        )

    for x0, x2 in [(0.0, 0.0), (4.0, -1.5), (-3.0, 2.5)]:
        integral, _ = integrate.quad(joint, -30, 30, args=(x0, x2), epsabs=1e-13)
        assert np.exp(marginal.score_samples([[x0, x2]]))[0] == pytest.approx(integral, rel=1e-7)


def test_density_levels_match_the_figure(section_2d):
    levels = section_2d.data["density"]["panels"][0]["levels"]
    (ax,) = section_2d.figures["density"].axes
    drawn = [c for c in ax.collections if hasattr(c, "levels")]
    assert len(drawn) == 1
    np.testing.assert_allclose(drawn[0].levels, levels)
    assert max(levels) < section_2d.data["density"]["panels"][0]["max_log_density"]


def test_uncertainty_is_one_minus_max_posterior(section_2d, fitted_2d):
    X, model, _ = fitted_2d
    # posterior by scipy densities, independent of the library's maths
    joint = np.column_stack(
        [
            w * multivariate_normal(m, c).pdf(X)
            for w, m, c in zip(model.weights_, model.means_, model.covariances_, strict=True)
        ]
    )
    u = 1 - (joint / joint.sum(1, keepdims=True)).max(1)
    assert section_2d.data["uncertainty"]["mean"] == pytest.approx(u.mean(), rel=1e-9, abs=1e-15)
    assert section_2d.data["uncertainty"]["max"] == pytest.approx(u.max(), rel=1e-9, abs=1e-15)


def test_criteria_curves_are_the_selection_table(section_2d, fitted_2d):
    _, _, selection = fitted_2d
    fig = section_2d.figures["criteria"]
    for ax, crit in zip(fig.axes[:2], ("bic", "icl"), strict=True):
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        table = selection.values(crit)
        for c, t in enumerate(selection.covariance_types):
            np.testing.assert_array_equal(lines[t].get_xdata(), selection.k_values)
            np.testing.assert_array_equal(lines[t].get_ydata(), table[:, c])
        star = lines["selected"]
        assert list(star.get_xdata()) == [selection.best_row.n_components]
        assert list(star.get_ydata()) == [getattr(selection.best_row, crit)]


def test_log_likelihood_curve_is_lower_bounds(section_2d, fitted_2d):
    _, model, _ = fitted_2d
    ax = section_2d.figures["log_likelihood"].axes[0]
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), model.lower_bounds_)
    assert section_2d.data["log_likelihood"]["lower_bounds"] == model.lower_bounds_


def test_parameter_table_lists_every_component(section_2d, fitted_2d):
    _, model, _ = fitted_2d
    table = section_2d.html_blocks[0]
    for w in model.weights_:
        assert f"{w:.4f}" in table


def test_one_feature_and_mismatch():
    model = GaussianMixture.from_parameters([0.5, 0.5], [[0.0], [4.0]], [[[1.0]], [[1.0]]])
    X, _ = model.sample(200)
    section = build_section(X, model)
    assert set(section.figures) == {"classification", "density", "uncertainty", "log_likelihood"}
    with pytest.raises(ValueError, match="2 columns but the model was fitted on 1"):
        build_section(np.zeros((5, 2)), model)


def _decoded_images(html: str) -> list[np.ndarray]:
    blobs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    return [mpimg.imread(io.BytesIO(base64.b64decode(b)), format="png") for b in blobs]


def test_html_is_self_contained_and_carries_the_data(section_2d, fitted_2d, tmp_path):
    _, model, _ = fitted_2d
    path = write_html([section_2d], tmp_path / "r.html", title="t")
    html = path.read_text()
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", html), "external resource"
    images = _decoded_images(html)
    assert len(images) == len(section_2d.figures) == 5
    for img in images:
        assert img.shape[0] > 200 and img[..., :3].std() > 0.05  # drawn, not blank
    data = read_report_data(path)
    ellipses = data["sections"][0]["classification"]["panels"][0]["ellipses"]
    np.testing.assert_allclose([e["center"] for e in ellipses], model.means_, rtol=1e-12)
    np.testing.assert_allclose(data["sections"][0]["model"]["weights"], model.weights_)


def test_png_files(section_2d, tmp_path):
    written = write_png([section_2d], tmp_path / "figs")
    assert sorted(p.name for p in written) == sorted(f"two-{n}.png" for n in section_2d.figures)
    for p in written:
        assert mpimg.imread(p)[..., :3].std() > 0.05


# --------------------------------------------------------------------- real browser
def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium not installed (.ci/run installs Debian's chromium)")
    return exe


def _run_chromium(url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [
        _chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, url,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console(proc: subprocess.CompletedProcess) -> list[str]:
    """Console messages of the page (Chromium logs each as ``INFO:CONSOLE(...)``)."""
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def test_chromium_console_detection_works(tmp_path):
    """Positive control: a page that logs an error and throws is caught by the check below."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('boom'); missing();</script></body></html>")
    proc = _run_chromium(page.as_uri(), tmp_path, "--dump-dom")
    console = _console(proc)
    assert any("boom" in line for line in console)
    assert any("missing is not defined" in line for line in console)


@pytest.mark.slow
def test_report_in_headless_chromium(section_2d, tmp_path):
    model3 = _model(3)
    X3, _ = model3.sample(300)
    pairs = build_section(X3, model3, title="three features")
    path = write_html([section_2d, pairs], tmp_path / "report.html")
    n_figures = len(section_2d.figures) + len(pairs.figures)

    dom = _run_chromium(path.as_uri(), tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console(dom) == []
    # the page's script parsed the data block and counted decoded figures
    assert f"{n_figures} of {n_figures} figures loaded" in dom.stdout
    assert "three features: 300 points, K = 3 (full)" in dom.stdout

    shot = tmp_path / "shot.png"
    run = _run_chromium(path.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    assert _console(run) == []
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    non_white = (pixels < 0.95).any(axis=2).mean()
    assert pixels.std() > 0.05 and non_white > 0.03, (pixels.std(), non_white)


def test_dollar_signs_in_column_names_are_plain_text(tmp_path):
    # two "$" in a label made matplotlib parse it as mathtext: "^{" is a parse error
    X, _ = _model(2).sample(300)
    names = ["gain $^{$", "cost in $ and $"]
    model = GaussianMixture(3, random_state=0).fit(X)
    section = build_section(X, model, feature_names=names, title="money")
    written = write_png([section], tmp_path)
    assert len(written) == len(section.figures)
    labels = {ax.get_xlabel() for fig in section.figures.values() for ax in fig.axes}
    assert names[0] in labels


# --------------------------------------------------------------------- features and CLI options
def _seven_features():
    means = np.zeros((2, 7))
    means[1, [1, 4, 6]] = [8.0, 3.0, 5.0]
    return GaussianMixture.from_parameters([0.5, 0.5], means, np.ones((2, 7)), "diag",
                                           random_state=0)  # fmt: skip


@pytest.mark.slow
def test_pairs_plot_shows_the_most_separating_or_the_chosen_features():
    model = _seven_features()
    X, _ = model.sample(200)
    section = build_section(X, model)
    # 7 > 5 features: the 5 most separating (1, 4, 6 carry the clusters), in column order
    shown = section.data["features_shown"]
    assert len(shown) == 5 and {"x1", "x4", "x6"} <= set(shown)
    assert shown == sorted(shown, key=lambda n: int(n[1:]))
    assert "most separating" in section.captions["classification"]
    chosen = build_section(X, model, features=["x6", 1])
    panels = chosen.data["classification"]["panels"]
    assert [(p["x"], p["y"]) for p in panels] == [("x6", "x1")]
    with pytest.raises(ValueError, match="no feature named 'x9'"):
        build_section(X, model, features=["x9"])


def test_criteria_axis_is_focused_where_the_choice_is_made(section_2d, fitted_2d):
    from gaussmix.plot import focus_limits

    _, _, selection = fitted_2d
    data = section_2d.data["criteria"]
    limits = focus_limits(selection, "bic")
    if limits is None:  # nothing to cut on this grid: the axis spans every value
        assert data["bic_ylim"][1] >= np.nanmax(selection.values("bic"))
    else:
        np.testing.assert_allclose(data["bic_ylim"], limits)
        assert data["bic_ylim"][1] < np.nanmax(selection.values("bic"))


def test_report_and_select_share_the_k_range():
    from gaussmix import cli

    def default(command, name):
        return next(p.default for p in command.params if p.name == name)

    assert default(cli.report, "k_max") == default(cli.select, "k_max") == 9
    assert default(cli.report, "k_min") == default(cli.select, "k_min") == 1
    assert default(cli.report, "n_init") == default(cli.select, "n_init")
    assert default(cli.report, "tol") == default(cli.select, "tol")


def test_report_command_features_n_init_tol(tmp_path):
    from click.testing import CliRunner

    from gaussmix.cli import main

    model = _seven_features()
    X, _ = model.sample(150)
    header = ",".join(f"f{i}" for i in range(7))
    np.savetxt(tmp_path / "d.csv", X, delimiter=",", header=header, comments="")
    runner = CliRunner()
    args = ["report", str(tmp_path / "d.csv"), "--k-max", "2", "--covariance-type", "diag",
            "--n-init", "2", "--tol", "1e-5", "-q"]  # fmt: skip
    bad = runner.invoke(main, [*args, "--features", "f1,nope", "-o", str(tmp_path / "bad.html")])
    assert bad.exit_code == 1 and "--features: 'nope'" in bad.output
    assert not (tmp_path / "bad.html").exists()
    ok = runner.invoke(main, [*args, "--features", "f6,1", "-o", str(tmp_path / "r.html")])
    assert ok.exit_code == 0, ok.output
    data = read_report_data(tmp_path / "r.html")["sections"][0]
    assert data["features_shown"] == ["f6", "f1"]
    # --n-init and --tol reach the grid: the shown model is select's with those settings
    ref = select(X, range(1, 3), ["diag"], n_jobs=1, n_init=2, tol=1e-5)
    np.testing.assert_allclose(data["model"]["means"], ref.best_model.means_, rtol=1e-10)
