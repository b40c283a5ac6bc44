"""GaussianMixtureRegressor: predictions equal gmr's from the same joint, it regresses well, and
it behaves as a scikit-learn regressor."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from gaussmix import GaussianMixture, GaussianMixtureRegressor
from gaussmix._covariance import COVARIANCE_MODELS, get_model

gmr = pytest.importorskip("gmr")


def _sine(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3, 3, (n, 1))
    y = np.sin(2 * X[:, 0]) + 0.1 * rng.standard_normal(n)
    return X, y


def _two_outputs(n: int = 500, seed: int = 1):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, (n, 2))
    Y = np.column_stack([X[:, 0] ** 2 - X[:, 1], np.cos(X[:, 0]) * X[:, 1]])
    return X, Y + 0.05 * rng.standard_normal(Y.shape)


def _gmr_of(reg: GaussianMixtureRegressor):
    m = reg.mixture_
    K, d = m.means_.shape
    cov_model = get_model(m.covariance_type)
    full = np.stack([cov_model.full_matrix(m.covariances_, k, d) for k in range(K)])
    return gmr.GMM(n_components=K, priors=m.weights_, means=m.means_, covariances=full)


def test_predictions_equal_gmr_single_output():
    X, y = _sine()
    reg = GaussianMixtureRegressor(8, random_state=0).fit(X, y)
    assert reg.mixture_.means_.shape == (8, 2)
    X_new = np.linspace(-3, 3, 97)[:, None]
    ref = _gmr_of(reg)
    np.testing.assert_allclose(reg.predict(X_new), ref.predict(np.array([0]), X_new)[:, 0],
                               rtol=1e-9, atol=1e-12)  # fmt: skip
    mean, std = reg.predict(X_new, return_std=True)
    for i in (0, 40, 96):
        mvn = ref.condition(np.array([0]), X_new[i]).to_mvn()
        assert mean[i] == pytest.approx(mvn.mean[0], rel=1e-9, abs=1e-12)
        assert std[i] == pytest.approx(np.sqrt(mvn.covariance[0, 0]), rel=1e-9)


def test_predictions_equal_gmr_multi_output():
    X, Y = _two_outputs()
    reg = GaussianMixtureRegressor(6, random_state=0).fit(X, Y)
    assert reg.n_outputs_ == 2 and reg.mixture_.means_.shape == (6, 4)
    pred = reg.predict(X[:50])
    assert pred.shape == (50, 2)
    np.testing.assert_allclose(pred, _gmr_of(reg).predict(np.array([0, 1]), X[:50]), rtol=1e-9,
                               atol=1e-12)  # fmt: skip
    dist = reg.predict_distribution(X[:50])
    np.testing.assert_allclose(dist.mean, pred, rtol=1e-14)
    assert dist.covariance.shape == (50, 2, 2)
    one = GaussianMixture.from_parameters(*dist.parameters(3).__dict__.values())
    ref = _gmr_of(reg).condition(np.array([0, 1]), X[3])
    np.testing.assert_allclose(one.weights_, ref.priors, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="single output"):
        reg.predict(X, return_std=True)


def test_cross_validated_r2_on_a_smooth_nonlinear_problem():
    X, y = _sine()
    scores = cross_val_score(GaussianMixtureRegressor(8, random_state=0), X, y,
                             cv=KFold(5, shuffle=True, random_state=0))  # fmt: skip
    assert scores.min() > 0.9, scores
    # the check can fail: a line through a sine explains almost nothing
    linear = cross_val_score(GaussianMixtureRegressor(1), X, y, cv=5)
    assert linear.max() < 0.5, linear


def test_std_tracks_the_noise():
    rng = np.random.default_rng(3)
    X = rng.uniform(0, 4, (3000, 1))
    y = 2 * X[:, 0] + np.where(X[:, 0] < 2, 0.1, 1.0) * rng.standard_normal(3000)
    reg = GaussianMixtureRegressor(4, random_state=0).fit(X, y)
    _, std = reg.predict(np.array([[0.5], [3.5]]), return_std=True)
    assert std[0] == pytest.approx(0.1, rel=0.3) and std[1] == pytest.approx(1.0, rel=0.3)


def test_one_component_is_least_squares():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = X @ [1.0, -2.0, 0.5] + 3.0 + 0.3 * rng.standard_normal(300)
    reg = GaussianMixtureRegressor(1, reg_covar=0.0).fit(X, y)
    A = np.column_stack([X, np.ones(300)])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    np.testing.assert_allclose(reg.predict(X), A @ coef, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("covariance_type", sorted(COVARIANCE_MODELS))
def test_every_covariance_type_predicts(covariance_type):
    X, y = _sine(300)
    reg = GaussianMixtureRegressor(5, covariance_type=covariance_type, random_state=0)
    pred = reg.fit(X, y).predict(X)
    assert np.all(np.isfinite(pred))
    np.testing.assert_allclose(pred, _gmr_of(reg).predict(np.array([0]), X)[:, 0], rtol=1e-9,
                               atol=1e-12)  # fmt: skip


def test_engines_agree():
    X, y = _sine(400)
    preds = {}
    for engine in ("numpy", "cpu"):
        reg = GaussianMixtureRegressor(5, engine=engine, random_state=0, tol=1e-8, max_iter=500)
        preds[engine] = reg.fit(X, y).predict(X)
    np.testing.assert_allclose(preds["numpy"], preds["cpu"], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_dask_engine():
    pytest.importorskip("dask.array")
    X, y = _sine(2000)
    kw = dict(random_state=0, tol=1e-8, max_iter=500)
    ref = GaussianMixtureRegressor(5, engine="numpy", **kw).fit(X, y)
    reg = GaussianMixtureRegressor(5, engine="dask", **kw).fit(X, y)
    np.testing.assert_allclose(reg.predict(X), ref.predict(X), rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="file path"):
        GaussianMixtureRegressor(2, engine="stream").fit(X, y)


@pytest.mark.slow
def test_torch_engine():
    pytest.importorskip("torch")
    X, y = _sine(400)
    ref = GaussianMixtureRegressor(5, engine="numpy", random_state=0, tol=1e-8, max_iter=500)
    reg = GaussianMixtureRegressor(5, engine="torch", random_state=0, tol=1e-8, max_iter=500)
    np.testing.assert_allclose(reg.fit(X, y).predict(X), ref.fit(X, y).predict(X), rtol=1e-5,
                               atol=1e-5)  # fmt: skip


def test_sklearn_composition():
    X, y = _sine(300)
    reg = GaussianMixtureRegressor(6, random_state=0)
    twin = clone(reg)
    assert twin.get_params() == reg.get_params() and not hasattr(twin, "mixture_")
    pipe = make_pipeline(StandardScaler(), GaussianMixtureRegressor(6, random_state=0))
    assert pipe.fit(X, y).score(X, y) > 0.9
    search = GridSearchCV(GaussianMixtureRegressor(random_state=0),
                          {"n_components": [1, 6]}, cv=3).fit(X, y)  # fmt: skip
    assert search.best_params_ == {"n_components": 6}


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_feature_names_and_bad_input():
    pd = pytest.importorskip("pandas")
    X, y = _sine(200)
    df = pd.DataFrame(X, columns=["t"])
    reg = GaussianMixtureRegressor(3, random_state=0).fit(df, y)
    assert list(reg.feature_names_in_) == ["t"]
    np.testing.assert_array_equal(reg.predict(df), reg.predict(df.to_numpy()))
    with pytest.raises(ValueError, match="features"):
        reg.predict(np.zeros((3, 2)))
    with pytest.raises(ValueError):
        reg.predict(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixtureRegressor(0).fit(X, y)


@parametrize_with_checks([GaussianMixtureRegressor(random_state=0)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
