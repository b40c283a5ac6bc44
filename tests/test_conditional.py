"""Marginals and conditionals of a mixture and of one Gaussian, against gmr, scipy and the
closed forms; the model summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import multivariate_normal

from gaussmix import GaussianMixture, MultivariateNormal
from gaussmix._covariance import COVARIANCE_MODELS, get_model

gmr = pytest.importorskip("gmr")

FOUR = ["full", "tied", "diag", "spherical"]


def _random_mixture(seed: int, K: int, d: int, covariance_type: str = "full") -> GaussianMixture:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(K))
    means = rng.normal(0.0, 3.0, (K, d))
    A = rng.normal(size=(K, d, d))
    full = A @ np.swapaxes(A, 1, 2) + 0.5 * np.eye(d)
    covs = {
        "full": full,
        "tied": full[0],
        "diag": np.abs(rng.normal(1.0, 0.5, (K, d))) + 0.2,
        "spherical": np.abs(rng.normal(1.0, 0.5, K)) + 0.2,
    }[covariance_type]
    return GaussianMixture.from_parameters(weights, means, covs, covariance_type)


def _full(model: GaussianMixture) -> np.ndarray:
    K, d = model.means_.shape
    m = get_model(model.covariance_type)
    return np.stack([m.full_matrix(model.covariances_, k, d) for k in range(K)])


def _gmr(model: GaussianMixture):
    return gmr.GMM(
        n_components=model.means_.shape[0],
        priors=model.weights_,
        means=model.means_,
        covariances=_full(model),
    )


def _split(seed: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    n_given = int(rng.integers(1, d))
    return rng.permutation(d)[:n_given]


# ------------------------------------------------------------------ conditioning vs gmr
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    K=st.integers(1, 4),
    d=st.integers(2, 5),
    covariance_type=st.sampled_from(FOUR),
)
def test_condition_equals_gmr(seed, K, d, covariance_type):
    model = _random_mixture(seed, K, d, covariance_type)
    given_idx = _split(seed, d)
    x = np.random.default_rng(seed + 2).normal(0.0, 2.0, given_idx.size)
    ours = model.condition(given_idx.tolist(), x)
    ref = _gmr(model).condition(given_idx, x)
    np.testing.assert_allclose(ours.weights_, ref.priors, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.means_, ref.means, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(_full(ours), ref.covariances, rtol=1e-9, atol=1e-9)
    # the structure is kept where it provably survives conditioning
    assert ours.covariance_type == covariance_type


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), K=st.integers(1, 4), d=st.integers(2, 5))
def test_condition_rows_equal_gmr_predict_and_per_row_condition(seed, K, d):
    model = _random_mixture(seed, K, d)
    given_idx = _split(seed, d)
    X = np.random.default_rng(seed + 3).normal(0.0, 2.0, (30, given_idx.size))
    cond = model.condition_rows(given_idx.tolist(), X)
    ref = _gmr(model)
    np.testing.assert_allclose(cond.mean, ref.predict(given_idx, X), rtol=1e-9, atol=1e-9)
    for i in (0, 17, 29):
        one = ref.condition(given_idx, X[i])
        np.testing.assert_allclose(cond.weights[i], one.priors, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(cond.means[i], one.means, rtol=1e-9, atol=1e-9)
        mvn = one.to_mvn()  # moment-matched: the conditional's mean and covariance
        np.testing.assert_allclose(cond.mean[i], mvn.mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(cond.covariance[i], mvn.covariance, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cond.weights.sum(axis=1), 1.0, rtol=1e-12)


def test_conditional_weights_by_scipy_densities():
    """Weights ∝ φ_k N(x; μ_k,x, Σ_k,xx), means and Schur complements from explicit formulas."""
    model = _random_mixture(5, 3, 4)
    full = _full(model)
    g, r = np.array([2, 0]), np.array([1, 3])
    x = np.array([0.4, -1.2])
    dens = [multivariate_normal(model.means_[k, g], full[k][np.ix_(g, g)]).pdf(x) for k in range(3)]
    w = model.weights_ * np.array(dens)
    ours = model.condition([2, 0], x)
    np.testing.assert_allclose(ours.weights_, w / w.sum(), rtol=1e-10)
    for k in range(3):
        S = full[k]
        gain = S[np.ix_(r, g)] @ np.linalg.inv(S[np.ix_(g, g)])
        np.testing.assert_allclose(
            ours.means_[k], model.means_[k, r] + gain @ (x - model.means_[k, g]), rtol=1e-10
        )
        np.testing.assert_allclose(
            ours.covariances_[k], S[np.ix_(r, r)] - gain @ S[np.ix_(g, r)], rtol=1e-10, atol=1e-12
        )


def test_far_from_every_component_weights_stay_finite():
    # each marginal density underflows to 0 here; the log-space normalisation does not
    model = _random_mixture(1, 3, 3)
    cond = model.condition_rows([0], np.array([[1e4], [-3e4]]))
    assert np.all(np.isfinite(cond.weights)) and np.allclose(cond.weights.sum(axis=1), 1.0)
    assert np.all(np.isfinite(cond.mean))


def test_zero_weight_component_gets_zero_conditional_weight():
    model = GaussianMixture.from_parameters(
        [0.0, 1.0], [[0.0, 0.0], [3.0, 3.0]], [[[1.0, 0.5], [0.5, 1.0]]] * 2
    )
    cond = model.condition([0], [0.0])
    assert cond.weights_[0] == 0.0 and cond.weights_[1] == 1.0


def test_diagonal_components_are_unchanged_by_conditioning():
    model = _random_mixture(3, 2, 3, "diag")
    cond = model.condition([1], [0.7])
    np.testing.assert_array_equal(cond.means_, model.means_[:, [0, 2]])
    np.testing.assert_array_equal(cond.covariances_, model.covariances_[:, [0, 2]])


@pytest.mark.parametrize("covariance_type", sorted(COVARIANCE_MODELS))
def test_every_covariance_model_conditions_and_marginalises(covariance_type):
    """Generic path: any registered model (mclust's too) through full_matrix, checked vs gmr."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (150, 3)), rng.normal(4, 1.5, (150, 3))]
    X[:, 2] += 0.5 * X[:, 0]
    model = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X)
    kept = covariance_type if covariance_type in FOUR else "full"
    cond = model.condition([0], [1.5])
    assert cond.covariance_type == kept
    ref = _gmr(model).condition(np.array([0]), np.array([1.5]))
    np.testing.assert_allclose(cond.weights_, ref.priors, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cond.means_, ref.means, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(_full(cond), ref.covariances, rtol=1e-9, atol=1e-9)
    marg = model.marginal([2, 1])
    assert marg.covariance_type == kept
    np.testing.assert_allclose(_full(marg), _full(model)[:, [2, 1]][:, :, [2, 1]], rtol=1e-12)


# ------------------------------------------------------------------ marginals
@pytest.mark.parametrize("covariance_type", FOUR)
def test_marginal_is_the_closed_form(covariance_type):
    model = _random_mixture(11, 3, 4, covariance_type)
    marg = model.marginal([3, 1])
    assert marg.covariance_type == covariance_type
    np.testing.assert_array_equal(marg.weights_, model.weights_)
    np.testing.assert_array_equal(marg.means_, model.means_[:, [3, 1]])
    for k in range(3):
        mvn = gmr.MVN(mean=model.means_[k], covariance=_full(model)[k]).marginalize([3, 1])
        np.testing.assert_allclose(marg.means_[k], mvn.mean, rtol=1e-15)
        np.testing.assert_allclose(_full(marg)[k], mvn.covariance, rtol=1e-15)


def test_marginal_density_integrates_the_joint():
    model = _random_mixture(2, 2, 2)
    marg = model.marginal(1)
    for y in (-1.0, 0.5, 2.0):
        integral, _ = integrate.quad(
            lambda x, y=y: np.exp(model.score_samples([[x, y]]))[0], -60, 60, epsabs=1e-13
        )
        assert np.exp(marg.score_samples([[y]]))[0] == pytest.approx(integral, rel=1e-7)


# ------------------------------------------------------------------ names and bad input
def test_feature_names_select_and_name_the_result():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    df["c"] += df["a"]
    model = GaussianMixture(2, random_state=0).fit(df)
    by_name = model.condition(["c", "a"], [1.0, 0.5])
    by_index = model.condition([2, 0], [1.0, 0.5])
    np.testing.assert_array_equal(by_name.means_, by_index.means_)
    assert list(by_name.feature_names_in_) == ["b"]
    assert list(model.marginal(["c", "a"]).feature_names_in_) == ["c", "a"]
    rows = model.condition_rows("a", df[["a"]].to_numpy()[:5])
    assert list(rows.outputs) == [1, 2] and rows.mean.shape == (5, 2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.marginal([0, 0]), "must not repeat"),
        (lambda m: m.marginal([3]), "out of range for 3 features"),
        (lambda m: m.marginal([]), "at least one feature"),
        (lambda m: m.marginal([0.5]), "feature indices or names"),
        (lambda m: m.marginal("a"), "not fitted on named columns"),
        (lambda m: m.condition([0, 1, 2], [0, 0, 0]), "leave at least one feature"),
        (lambda m: m.condition([0], [0.0, 1.0]), r"values must have shape \(1,\)"),
        (lambda m: m.condition([0], [np.nan]), "finite"),
        (lambda m: m.condition_rows([0, 1], np.zeros((4, 3))), r"shape \(n_rows, 2\)"),
        (lambda m: m.condition_rows([0], [[np.inf]]), "finite"),
    ],
)
def test_bad_input_is_one_clear_error(call, message):
    model = _random_mixture(0, 2, 3)
    with pytest.raises(ValueError, match=message):
        call(model)


def test_unfitted_model_raises():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        GaussianMixture(2).condition([0], [1.0])


# ------------------------------------------------------------------ one Gaussian
def test_multivariate_normal_condition_and_marginal_equal_gmr():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(4, 4))
    mean, cov = rng.normal(size=4), A @ A.T + np.eye(4)
    mvn = MultivariateNormal(mean, cov)
    ref = gmr.MVN(mean=mean, covariance=cov)
    c, rc = mvn.condition([3, 0], [0.2, -0.4]), ref.condition([3, 0], np.array([0.2, -0.4]))
    np.testing.assert_allclose(c.mean, rc.mean, rtol=1e-10)
    np.testing.assert_allclose(c.cov, rc.covariance, rtol=1e-10)
    m, rm = mvn.marginal([2, 1]), ref.marginalize(np.array([2, 1]))
    np.testing.assert_array_equal(m.mean, rm.mean)
    np.testing.assert_array_equal(m.cov, rm.covariance)
    with pytest.raises(ValueError, match="leave at least one"):
        mvn.condition([0, 1, 2, 3], [0, 0, 0, 0])
    with pytest.raises(ValueError, match="values must have shape"):
        mvn.condition([0], [1.0, 2.0])


# ------------------------------------------------------------------ summary
def test_summary_matches_the_estimator():
    model = _random_mixture(7, 3, 2)
    X, _ = model.sample(400)
    fitted = GaussianMixture(3, random_state=0).fit(X)
    s = fitted.summary(X)
    assert s.log_likelihood == pytest.approx(fitted.score(X) * 400, rel=1e-12)
    assert s.bic == pytest.approx(fitted.bic(X), rel=1e-12)
    assert s.icl == pytest.approx(fitted.icl(X), rel=1e-12)
    assert s.cluster_sizes == np.bincount(fitted.predict(X), minlength=3).tolist()
    assert sum(s.cluster_sizes) == 400
    assert s.n_parameters == 3 * 2 + 3 * 3 + 2
    text = str(s)
    assert "'full' covariance, 3 components, 2 features, 17 free parameters" in text
    assert f"{s.bic:.3f}" in text and " ".join(str(n) for n in s.cluster_sizes) in " ".join(
        text.split()
    )
    json.dumps(s.to_dict())
    bare = fitted.summary()
    assert bare.bic is None and "BIC" not in str(bare)


def test_info_command_prints_the_summary(tmp_path):
    from click.testing import CliRunner

    from gaussmix.cli import main

    model = _random_mixture(7, 2, 2)
    X, _ = model.sample(300)
    fitted = GaussianMixture(2, random_state=0).fit(X)
    fitted.save(tmp_path / "m.gmm")
    np.savetxt(tmp_path / "d.csv", X, delimiter=",", header="a,b", comments="")
    runner = CliRunner()
    out = runner.invoke(main, ["info", str(tmp_path / "m.gmm"), str(tmp_path / "d.csv")])
    assert out.exit_code == 0, out.output
    s = fitted.summary(X)
    assert f"{s.bic:.3f}" in out.output and f"{s.icl:.3f}" in out.output
    out = runner.invoke(main, ["info", str(tmp_path / "m.gmm"), "--json"])
    payload = json.loads(out.output)
    assert payload["summary"]["n_parameters"] == s.n_parameters
    assert payload["summary"]["bic"] is None


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    K=st.integers(1, 4),
    d=st.integers(2, 5),
    covariance_type=st.sampled_from(FOUR),
)
def test_joint_is_marginal_times_conditional(seed, K, d, covariance_type):
    """log p(x, y) = log p(x) + log p(y | x): the lecture notes' product rule, at random points."""
    model = _random_mixture(seed, K, d, covariance_type)
    given_idx = _split(seed, d)
    rest = np.setdiff1d(np.arange(d), given_idx)
    point = np.random.default_rng(seed + 4).normal(0.0, 2.0, d)
    joint = model.score_samples(point[None, :])[0]
    marginal = model.marginal(given_idx.tolist()).score_samples(point[None, given_idx])[0]
    conditional = model.condition(given_idx.tolist(), point[given_idx])
    assert list(conditional.means_.shape) == [K, rest.size]
    log_cond = conditional.score_samples(point[None, rest])[0]
    assert joint == pytest.approx(marginal + log_cond, rel=1e-10, abs=1e-10)
