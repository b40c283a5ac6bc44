"""Numerical promises: scale-free weights, the model's precision, data scale, memory, collapse."""

import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from gaussmix import CollapsedComponentError, GaussianMixture
from gaussmix._params import MixtureParams
from gaussmix._validation import MAX_ABS
from gaussmix.backends.cpu import MIN_ROWS, CpuExecutor

TYPES = ["full", "tied", "diag", "spherical"]
ENGINES = ["numpy", "cpu"]


def _two_clusters(n, seed=0, offset=0.0):
    rng = np.random.RandomState(seed)
    A = np.array([[1.0, 0.4], [0.0, 0.7]])
    return offset + np.r_[rng.standard_normal((n, 2)) @ A, rng.standard_normal((n, 2)) + 6.0]


# --------------------------------------------------------------------- sample weights
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("scale", [1e-18, 1e300])
def test_uniform_weights_of_any_scale_fit_as_unit_weights(engine, covariance_type, scale):
    # 1e-18 used to stop both components at the global mean (converged_=True), 1e300 to
    # overflow: weights mean repeated rows, only their ratios count
    X = _two_clusters(2500)
    kw = dict(covariance_type=covariance_type, random_state=0, engine=engine)
    unit = GaussianMixture(2, **kw).fit(X, sample_weight=np.ones(len(X)))
    with np.errstate(over="raise", invalid="raise"):
        scaled = GaussianMixture(2, **kw).fit(X, sample_weight=np.full(len(X), scale))
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(scaled, name), getattr(unit, name), rtol=1e-12)
    assert scaled.lower_bound_ == pytest.approx(unit.lower_bound_, rel=1e-12)
    assert np.ptp(scaled.means_[:, 0]) > 5, "the two clusters are found"


def test_weight_ratios_spanning_the_float_range_mean_repeats():
    X = _two_clusters(300)
    w = np.random.RandomState(1).randint(1, 4, len(X)).astype(float)
    gm = GaussianMixture(2, random_state=0, engine="numpy")
    repeated = gm.fit(np.repeat(X, w.astype(int), 0))._fitted_params()
    for scale in (1e-300, 1e290):
        weighted = gm.fit(X, sample_weight=w * scale)
        np.testing.assert_allclose(weighted.means_, repeated.means, rtol=1e-9)
        np.testing.assert_allclose(weighted.covariances_, repeated.covariances, rtol=1e-9)


# --------------------------------------------------------------------- the model's precision
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("n_rows", [200, 2 * MIN_ROWS])
def test_float64_model_scores_float32_rows_in_float64(engine, n_rows):
    # data offset by 1e6: float32 arithmetic of the model's terms was off by up to 0.4
    X = _two_clusters(n_rows, offset=1e6)
    gm = GaussianMixture(2, random_state=0, engine=engine).fit(X)
    X32 = X.astype(np.float32)
    exact = X32.astype(np.float64)  # the same rows, evaluated in the model's precision
    np.testing.assert_allclose(gm.score_samples(X32), gm.score_samples(exact), rtol=0, atol=1e-9)
    np.testing.assert_allclose(gm.predict_proba(X32), gm.predict_proba(exact), rtol=0, atol=1e-9)
    assert gm.score(X32) == pytest.approx(gm.score(exact), abs=1e-9)


def test_float32_model_keeps_float32_arithmetic_for_float32_rows():
    X = _two_clusters(300).astype(np.float32)
    gm = GaussianMixture(2, random_state=0).fit(X)
    assert gm.means_.dtype == np.float32
    assert gm.predict_proba(X).dtype == np.float32


# --------------------------------------------------------------------- data scale
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("magnitude", [1e155, 1e200, 1e300])
def test_data_beyond_the_scale_limit_is_refused_on_every_path(engine, magnitude):
    X = _two_clusters(2500) * magnitude / 10
    with pytest.raises(ValueError, match=r"values up to .* beyond the 1e\+150 .*divide the data"):
        GaussianMixture(2, random_state=0, engine=engine).fit(X)
    with pytest.raises(ValueError, match="beyond the 1e"):
        GaussianMixture(2, random_state=0, engine=engine).partial_fit(X)
    gm = GaussianMixture(2, random_state=0, engine=engine).fit(_two_clusters(2500))
    for op in (gm.score_samples, gm.predict_proba, gm.predict, gm.score, gm.bic, gm.icl):
        with pytest.raises(ValueError, match="beyond the 1e"):
            op(X)


def test_float32_limit():
    X = (_two_clusters(300) * 1e15).astype(np.float32)
    with pytest.raises(ValueError, match=r"beyond the 1e\+15 that float32"):
        GaussianMixture(2, random_state=0).fit(X)
    assert MAX_ABS[np.dtype(np.float64)] == 1e150


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_large_data_fits_as_its_rescaled_copy(engine, covariance_type):
    # near the limit every path is exact: the fit of x is the fit of x/s mapped back
    s = 2.0**480  # 3.1e144, a power of two: X / s is exact
    X = _two_clusters(2500)
    kw = dict(covariance_type=covariance_type, engine=engine, reg_covar=0.0, tol=1e-12)
    # the same optimum (k-means draws rows along a hash of their bits, which scaling changes)
    start = np.array([[1.0, 1.0], [5.0, 5.0]])
    small = GaussianMixture(2, means_init=start, max_iter=1000, **kw).fit(X)
    large = GaussianMixture(2, means_init=start * s, max_iter=1000, **kw).fit(X * s)
    np.testing.assert_allclose(large.means_ / s, small.means_, rtol=0, atol=1e-9)
    np.testing.assert_allclose(large.covariances_ / s**2, small.covariances_, rtol=1e-8)
    d = X.shape[1]
    np.testing.assert_allclose(
        large.score_samples(X * s), small.score_samples(X) - d * np.log(s), rtol=0, atol=1e-7
    )
    np.testing.assert_allclose(large.predict_proba(X * s), small.predict_proba(X), atol=1e-9)


def _narrow_model():
    # unit-scale components of variance 1e-100: rows at 1e110 are 1e160 standard deviations away
    return GaussianMixture.from_parameters(
        [0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], np.full(2, 1e-100), "spherical"
    )


@pytest.mark.parametrize("n_rows", [10, 2 * MIN_ROWS])
def test_rows_whose_density_underflows_get_one_answer_from_every_path(n_rows):
    far = np.full((n_rows, 2), 1e110)
    far[0] = [0.0, 0.0]
    answers = []
    for engine in ENGINES:
        gm = _narrow_model().set_params(engine=engine)
        for op in ("score_samples", "predict_proba", "predict", "score", "icl"):
            with pytest.raises(ValueError, match=r"\d+ rows of X \(the first: row 1\) are too far"):
                getattr(gm, op)(far)
        near = np.r_[far[:1], np.full((n_rows - 1, 2), 1e40)]
        answers.append([gm.score_samples(near), gm.predict_proba(near), gm.predict(near)])
    # far but representable rows: the compiled kernels and the numpy reference agree
    for a, b in zip(*answers, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert np.all(np.isfinite(answers[0][0])) and np.all(np.isfinite(answers[0][1]))
    np.testing.assert_allclose(answers[0][1].sum(axis=1), 1.0)


def test_probabilities_far_from_the_model_still_sum_to_one():
    # |log p| > 2**53: the log-sum-exp loses log 2, and two tied components each got 1
    gm = GaussianMixture.from_parameters([0.5, 0.5], [[0.0], [0.0]], [1e-6, 1e-6], "spherical")
    proba = gm.set_params(engine="numpy").predict_proba(np.array([[1e20], [1e20]]))
    np.testing.assert_allclose(proba, 0.5)


# --------------------------------------------------------------------- memory
@pytest.mark.parametrize("chunk_size", [1, 7])
def test_small_chunk_size_keeps_the_memory_bound(chunk_size):
    # per-group statistics are bounded (about 16 MiB): chunk_size=1 used to allocate one
    # (K, d, d) slot per row, N·K·d² floats (here 100 MB)
    rng = np.random.RandomState(0)
    n, K, d = 24_000, 4, 12
    X = rng.standard_normal((n, d))
    eye = np.broadcast_to(np.eye(d), (K, d, d))
    means = rng.standard_normal((K, d))
    params = MixtureParams.from_covariances(np.full(K, 1 / K), means, eye, "full")
    reference = CpuExecutor(X).e_step(params)
    executor = CpuExecutor(X, chunk_size=chunk_size, n_threads=1)
    tracemalloc.start()
    try:
        stats = executor.e_step(params)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MiB"
    np.testing.assert_allclose(stats.sxx, reference.sxx, rtol=1e-10)
    assert stats.log_likelihood == pytest.approx(reference.log_likelihood, rel=1e-12)


# --------------------------------------------------------------------- collapse
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("n", [40, 2 * MIN_ROWS])
@pytest.mark.parametrize("covariance_type", ["spherical", "diag"])
def test_float32_collapse_is_a_collapsed_component_error(engine, n, covariance_type):
    # identical float32 points: the float64 M-step leaves a variance of about 1e-300 (the
    # reg_covar), positive, but its precision factor 1e150 is infinite in float32
    rng = np.random.RandomState(0)
    X = np.r_[np.full((n, 2), 3.3), rng.rand(3 * n, 2) + 8.3].astype(np.float32)
    gm = GaussianMixture(
        2, covariance_type=covariance_type, reg_covar=1e-300, random_state=0, engine=engine
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(CollapsedComponentError, match="component .*increase reg_covar"):
            gm.fit(X)


# --------------------------------------------------------------------- the command line
@pytest.mark.parametrize("value", [1e155, 1e110])
def test_cli_refuses_rows_it_cannot_evaluate(tmp_path, value):
    # 1e155: beyond the data limit; 1e110: within it, but 1e160 standard deviations from the
    # narrow model. `score --json` used to fail on -inf, `predict --proba` to write nan, exit 0
    from click.testing import CliRunner

    from gaussmix.cli import main

    model = tmp_path / "m.npz"
    _narrow_model().save(model)
    data = tmp_path / "far.csv"
    data.write_text("a,b\n0,0\n" + f"{value!r},{value!r}\n" * 3)
    out = tmp_path / "p.csv"
    runner = CliRunner()
    for args in (["score", model, data, "--json"], ["predict", model, data, "--proba", "-o", out]):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code not in (0, None), result.output
        assert "Traceback" not in result.output
        assert "nan" not in result.stdout.lower() and "inf" not in result.stdout.lower()
        assert "error" in result.stderr
        assert ("beyond the 1e" if value > 1e150 else "too far") in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("scale", [1e-18, 1e300])
def test_streamed_weights_are_scale_free(tmp_path, scale):
    """The stream engine does not rescale weights before the fit: the M-step does."""
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 1, (300, 2)), rng.normal(6, 1, (300, 2))]
    path = tmp_path / "x.npy"
    np.save(path, X)
    unit = GaussianMixture(2, random_state=0, engine="stream").fit(str(path))
    scaled = GaussianMixture(2, random_state=0, engine="stream").fit(
        str(path), sample_weight=np.full(600, scale)
    )
    np.testing.assert_allclose(scaled.means_, unit.means_, rtol=1e-9)
    np.testing.assert_allclose(scaled.covariances_, unit.covariances_, rtol=1e-9)


def test_streamed_and_dask_data_beyond_the_scale_limit_are_refused(tmp_path):
    """The same limit on |x| as in memory, on the stream and Dask engines."""
    da = pytest.importorskip("dask.array")
    X = np.random.RandomState(0).standard_normal((400, 2)) * 1e155
    path = tmp_path / "x.npy"
    np.save(path, X)
    with pytest.raises(ValueError, match="absolute value"):
        GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="absolute value"):
        GaussianMixture(2, random_state=0, engine="stream").fit(str(path))
    with pytest.raises(ValueError, match="absolute value"):
        GaussianMixture(2, random_state=0, engine="dask").fit(da.from_array(X, chunks=(100, 2)))
