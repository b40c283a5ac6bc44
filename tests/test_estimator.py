"""GaussianMixture against scikit-learn as the oracle, and its own promises."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from gaussmix import CollapsedComponentError, GaussianMixture

TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.RandomState(0)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 5.0, 5.0]])
    z = rng.randint(0, 3, 600)
    A = rng.standard_normal((3, 3))
    return centres[z] + rng.standard_normal((600, 3)) @ (0.3 * np.eye(3) + 0.2 * A)


def _sk_start(X, covariance_type, K=3, seed=0):
    sk = SkGaussianMixture(K, covariance_type=covariance_type, random_state=seed, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X)
    return {"weights_init": sk.weights_, "means_init": sk.means_, "precisions_init": sk.precisions_}


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("reg_covar", [1e-6, 1e-2])
@pytest.mark.parametrize("n_iter", [1, 10])
def test_same_parameters_as_sklearn(blobs, covariance_type, reg_covar, n_iter):
    init = _sk_start(blobs, covariance_type)
    kw = dict(covariance_type=covariance_type, reg_covar=reg_covar, tol=0, max_iter=n_iter, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkGaussianMixture(3, **kw).fit(blobs)
        ours = GaussianMixture(3, engine="numpy", **kw).fit(blobs)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(ours, name), getattr(sk, name), rtol=1e-6, atol=1e-12, err_msg=name
        )
    assert ours.lower_bound_ == pytest.approx(sk.lower_bound_, rel=1e-10)
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-10)
    assert ours.n_iter_ == sk.n_iter_ == n_iter
    np.testing.assert_allclose(ours.score_samples(blobs), sk.score_samples(blobs), rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(blobs), sk.predict_proba(blobs), atol=1e-9)
    assert ours.bic(blobs) == pytest.approx(sk.bic(blobs), rel=1e-10)
    assert ours.aic(blobs) == pytest.approx(sk.aic(blobs), rel=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_means_init_only_matches_sklearn(blobs, covariance_type):
    # covariances come from the initial responsibilities around their means, as in sklearn.
    # Not "tied": sklearn's tied M-step uses the scatter of all of X, which is only right when
    # every row's responsibilities sum to one; the one-hot starts of random_from_data and
    # k-means++ break that (we compute the true weighted scatter; see README)
    means = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 5.0, 5.0]])
    kw = dict(
        covariance_type=covariance_type,
        means_init=means,
        tol=0,
        max_iter=5,
        init_params="random_from_data",
        random_state=3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkGaussianMixture(3, **kw).fit(blobs)
        ours = GaussianMixture(3, engine="numpy", **kw).fit(blobs)
    np.testing.assert_allclose(ours.means_, sk.means_, rtol=1e-6)
    np.testing.assert_allclose(ours.covariances_, sk.covariances_, rtol=1e-6)


def test_iris_oracle():
    X = load_iris().data
    gm = GaussianMixture(2, covariance_type="full", random_state=0).fit(X)
    assert gm.converged_
    assert gm.score(X) * len(X) == pytest.approx(-214.3547, abs=1e-3)
    assert gm.lower_bound_ * len(X) == pytest.approx(-214.3547, abs=1e-3)
    assert gm.bic(X) == pytest.approx(574.0178, abs=1e-3)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_every_init_and_type_fits(blobs, covariance_type, init_params):
    gm = GaussianMixture(
        3,
        covariance_type=covariance_type,
        init_params=init_params,
        random_state=1,
        n_init=2,
        max_iter=200,
    ).fit(blobs)
    assert gm.converged_
    assert gm.weights_.shape == (3,)
    assert gm.means_.shape == (3, 3)
    expected = {"full": (3, 3, 3), "tied": (3, 3), "diag": (3, 3), "spherical": (3,)}
    assert (
        gm.covariances_.shape
        == gm.precisions_.shape
        == gm.precisions_cholesky_.shape
        == expected[covariance_type]
    )
    np.testing.assert_allclose(gm.predict_proba(blobs).sum(axis=1), 1.0)
    assert gm.lower_bounds_[-1] == gm.lower_bound_
    assert np.all(np.diff(gm.lower_bounds_) > -1e-10)  # EM never decreases the likelihood


def test_n_init_keeps_the_best(blobs):
    # restart 0 of n_init=5 is the n_init=1 run (same random stream), so the best of five can
    # only be at least as good; with random starts and 3 iterations some restart is better
    kw = dict(init_params="random", random_state=0, max_iter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one = GaussianMixture(3, **kw).fit(blobs)
        five = GaussianMixture(3, n_init=5, **kw).fit(blobs)
    assert five.lower_bound_ > one.lower_bound_


def test_fit_predict_equals_fit_then_predict(blobs):
    a = GaussianMixture(3, random_state=0).fit_predict(blobs)
    b = GaussianMixture(3, random_state=0).fit(blobs).predict(blobs)
    np.testing.assert_array_equal(a, b)


def test_joint_marginal_posterior_agree(blobs):
    gm = GaussianMixture(3, random_state=0).fit(blobs)
    lj = gm.log_joint(blobs)
    assert lj.shape == (600, 3)
    marginal = gm.score_samples(blobs)
    np.testing.assert_allclose(np.log(np.exp(lj).sum(axis=1)), marginal, rtol=1e-12)
    np.testing.assert_allclose(np.exp(lj - marginal[:, None]), gm.predict_proba(blobs), rtol=1e-10)
    np.testing.assert_array_equal(np.argmax(lj, axis=1), gm.predict(blobs))
    assert gm.score(blobs) == pytest.approx(marginal.mean())


def test_icl_convention(blobs):
    gm = GaussianMixture(3, random_state=0).fit(blobs)
    resp = gm.predict_proba(blobs)
    expected = gm.bic(blobs) - 2 * np.sum(np.log(resp.max(axis=1)))
    assert gm.icl(blobs) == pytest.approx(expected, rel=1e-12)
    assert gm.icl(blobs) >= gm.bic(blobs)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_sample_weights_mean_repeated_rows(blobs, covariance_type):
    rng = np.random.RandomState(5)
    w = rng.randint(0, 4, len(blobs))
    X = blobs
    kw = dict(covariance_type=covariance_type, random_state=0, tol=1e-8, max_iter=300)
    weighted = GaussianMixture(3, **kw).fit(X, sample_weight=w)
    repeated = GaussianMixture(3, **kw).fit(np.repeat(X, w, axis=0))
    perm = np.random.RandomState(1).permutation(len(X))
    shuffled = GaussianMixture(3, **kw).fit(X[perm], sample_weight=w[perm])
    for other in (repeated, shuffled):
        np.testing.assert_allclose(weighted.means_, other.means_, rtol=1e-6)
        np.testing.assert_allclose(weighted.covariances_, other.covariances_, rtol=1e-6)
        np.testing.assert_allclose(weighted.weights_, other.weights_, rtol=1e-6)


def test_zero_weight_drops_the_row(blobs):
    w = np.ones(len(blobs))
    w[::3] = 0
    kw = dict(random_state=0, tol=1e-8)
    a = GaussianMixture(3, **kw).fit(blobs, sample_weight=w)
    b = GaussianMixture(3, **kw).fit(blobs[w > 0])
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-8)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_float32_in_float32_out(blobs, covariance_type):
    init = _sk_start(blobs, covariance_type)
    kw = dict(covariance_type=covariance_type, tol=0, max_iter=10, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g64 = GaussianMixture(3, **kw).fit(blobs)
        g32 = GaussianMixture(3, **kw).fit(blobs.astype(np.float32))
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert getattr(g32, name).dtype == np.float32
        np.testing.assert_allclose(
            getattr(g32, name), getattr(g64, name), rtol=1e-4, atol=1e-5, err_msg=name
        )
    assert g32.lower_bound_ == pytest.approx(g64.lower_bound_, rel=1e-5)
    assert GaussianMixture(3, dtype="float32", random_state=0).fit(blobs).means_.dtype == np.float32


def test_convergence_warning(blobs):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        gm = GaussianMixture(3, tol=0, max_iter=2, random_state=0).fit(blobs)
    assert not gm.converged_


def test_warm_start_continues(blobs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, warm_start=True, max_iter=2, tol=0, random_state=0)
        gm.fit(blobs)
        first = gm.means_.copy()
        gm.fit(blobs)
        cold = GaussianMixture(3, max_iter=4, tol=0, random_state=0).fit(blobs)
    assert not np.array_equal(first, gm.means_)
    np.testing.assert_allclose(gm.means_, cold.means_, rtol=1e-10)


def test_sampling_follows_the_generative_story():
    gm = GaussianMixture.from_parameters(
        [0.2, 0.8],
        [[0.0, 0.0], [10.0, 10.0]],
        [np.eye(2), [[2.0, 0.5], [0.5, 1.0]]],
        random_state=0,
    )
    X, z = gm.sample(100_000)
    assert X.shape == (100_000, 2) and z.shape == (100_000,)
    assert np.mean(z == 0) == pytest.approx(0.2, abs=0.01)
    np.testing.assert_allclose(X[z == 1].mean(0), [10.0, 10.0], atol=0.02)
    np.testing.assert_allclose(np.cov(X[z == 1].T), [[2.0, 0.5], [0.5, 1.0]], atol=0.05)
    # labels are drawn, not sorted: both components appear in the first rows
    assert len(set(z[:50])) == 2
    with pytest.raises(ValueError, match="n_samples"):
        gm.sample(0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(weights=[0.5, 0.6]), "sum to 1"),
        (dict(weights=[-0.5, 1.5]), r"range \[0, 1\]"),
        (dict(weights=[1.0]), "shape"),
        (dict(covariances=[np.eye(2), [[1.0, 2.0], [2.0, 1.0]]]), "not positive definite"),
        (dict(covariances=[np.eye(2), [[1.0, 0.2], [0.0, 1.0]]]), "not symmetric"),
        (dict(covariances=np.ones((2, 3, 3))), "shape"),
        (dict(means=[[0.0, np.nan], [1.0, 1.0]]), "finite"),
    ],
)
def test_from_parameters_validates(kwargs, match):
    args = dict(
        weights=[0.5, 0.5], means=[[0.0, 0.0], [1.0, 1.0]], covariances=[np.eye(2), np.eye(2)]
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        GaussianMixture.from_parameters(**args)


@pytest.mark.parametrize(
    ("X", "match"),
    [
        # NaN is a missing value (tests/test_missing.py); a feature never observed is refused
        (np.array([[1.0, np.nan], [2.0, np.nan], [1.0, np.nan]]), "never observed"),
        (np.array([[1.0, np.inf], [2.0, 3.0], [1.0, 1.0]]), "infinity"),
        (np.arange(5.0), "2D array"),
        (np.ones((3, 2, 2)), "dim"),
        (np.empty((0, 2)), "0 sample"),
        (np.array([["a", "b"], ["c", "d"], ["e", "f"]]), "string|convert"),
        (np.array([[1.0, 2.0], [object(), 1.0], [0.0, 1.0]], dtype=object), "float|convert"),
    ],
)
def test_bad_training_data_rejected(X, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GaussianMixture(2).fit(X)


def test_fewer_samples_than_components():
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(np.random.rand(3, 2))


@pytest.mark.parametrize(
    ("w", "match"),
    [
        ([1.0, -1.0, 1.0, 1.0], "non-negative"),
        ([1.0, 1.0], "shape"),
        ([1.0, np.nan, 1.0, 1.0], "NaN"),
        ([0.0, 0.0, 0.0, 0.0], "zero"),
        ([1.0, 0.0, 0.0, 0.0], "fewer than n_components"),
        (["a", "b", "c", "d"], "numeric"),
    ],
)
def test_bad_sample_weight_rejected(w, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GaussianMixture(2).fit(np.random.rand(4, 2), sample_weight=np.asarray(w))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (dict(n_components=0), "n_components"),
        (dict(n_components=1.5), "n_components"),
        (dict(covariance_type="banana"), "covariance_type"),
        (dict(tol=-1.0), "tol"),
        (dict(reg_covar=-1e-6), "reg_covar"),
        (dict(max_iter=-1), "max_iter"),
        (dict(n_init=0), "n_init"),
        (dict(init_params="best"), "init_params"),
        (dict(engine="warp"), "engine"),
        (dict(dtype="float16"), "dtype"),
        (dict(weights_init=[0.2, 0.2]), "sum to 1"),
        (dict(means_init=np.zeros((3, 2))), "means_init"),
        (dict(precisions_init=np.stack([np.eye(2), -np.eye(2)])), "positive definite"),
    ],
)
def test_bad_parameters_rejected(params, match):
    kw = {"n_components": 2, **params}
    with pytest.raises((ValueError, TypeError), match=match):
        GaussianMixture(**kw).fit(np.random.RandomState(0).rand(20, 2))


def test_predict_checks(blobs):
    with pytest.raises(NotFittedError):
        GaussianMixture(2).predict(blobs)
    gm = GaussianMixture(2, random_state=0).fit(blobs)
    with pytest.raises(ValueError, match="features"):
        gm.predict(blobs[:, :2])
    with pytest.raises(ValueError, match="infinity"):
        gm.score_samples(np.full((2, 3), np.inf))


def test_plain_float_arrays_predict_as_validated_ones(blobs):
    # a plain float array of the fitted width skips scikit-learn's validation: every other
    # input still goes through it, and both give the same numbers and the same errors
    gm = GaussianMixture(2, random_state=0).fit(blobs)
    expected = gm.score_samples(blobs.tolist())  # a list: scikit-learn's checks
    for X in (blobs, np.asfortranarray(blobs), blobs.astype(">f8")):
        np.testing.assert_array_equal(gm.score_samples(X), expected)
    np.testing.assert_array_equal(gm.score_samples(blobs[::2]), expected[::2])
    X32 = blobs.astype(np.float32)
    np.testing.assert_array_equal(gm.score_samples(X32), gm.score_samples(X32.tolist()))
    with pytest.raises(ValueError, match="0 sample"):
        gm.score_samples(np.empty((0, 3)))
    with pytest.raises(ValueError, match="3 features"):
        gm.predict(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="2D array"):
        gm.predict(np.zeros(3))
    pd = pytest.importorskip("pandas")
    named = GaussianMixture(2, random_state=0).fit(pd.DataFrame(blobs, columns=list("abc")))
    with pytest.warns(UserWarning, match="feature names"):
        named.predict(blobs)


def test_dataframe_feature_names():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(np.random.RandomState(0).rand(50, 2), columns=["height", "weight"])
    gm = GaussianMixture(2, random_state=0).fit(df)
    assert list(gm.feature_names_in_) == ["height", "weight"]
    assert gm.predict(df).shape == (50,)


def test_constant_column_is_carried_by_reg_covar():
    rng = np.random.RandomState(0)
    X = np.c_[rng.rand(100), np.full(100, 3.0)]
    gm = GaussianMixture(2, random_state=0).fit(X)
    assert np.all(np.isfinite(gm.means_))
    assert np.all(np.linalg.eigvalsh(gm.covariances_) > 0)


def test_duplicated_points():
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]), 20, axis=0)
    gm = GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), [0.0, 1.0, 5.0], atol=1e-9)


def test_collapsed_component_names_it_and_the_remedy():
    X = np.r_[np.zeros((10, 2)), np.random.RandomState(0).rand(30, 2) + 5]
    with pytest.raises(CollapsedComponentError, match=r"component \d.*increase reg_covar") as e:
        GaussianMixture(2, reg_covar=0.0, random_state=0, init_params="kmeans").fit(X)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        (dict(n_components=2.5), "n_components"),
        (dict(tol="1e-3"), "tol"),
        (dict(max_iter=1.5), "max_iter"),
        (dict(reg_covar=float("inf")), "reg_covar"),
        (dict(covariance_type="banana"), "covariance_type"),
        (dict(init_params=None), "init_params"),
        (dict(engine="warp"), "engine"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(dtype="float16"), "dtype"),
        (dict(verbose=-1), "verbose"),
        (dict(warm_start="yes"), "warm_start"),
    ],
)
def test_invalid_hyper_parameters_raise_sklearns_error(params, name):
    # scikit-learn's InvalidParameterError is both a ValueError and a TypeError, so
    # `except ValueError` catches a float n_components as it does for sklearn's own estimators
    from sklearn.utils._param_validation import InvalidParameterError

    X = np.random.RandomState(0).rand(20, 2)
    gm = GaussianMixture(**{"n_components": 2, **params})
    for method in (gm.fit, gm.partial_fit):
        with pytest.raises(InvalidParameterError, match=f"'{name}' parameter") as e:
            method(X)
        assert isinstance(e.value, ValueError) and isinstance(e.value, TypeError)


def test_every_registered_covariance_model_and_init_is_accepted():
    from gaussmix._covariance import COVARIANCE_MODELS
    from gaussmix._init import INIT_METHODS

    gm = GaussianMixture(2)
    for name in COVARIANCE_MODELS:
        gm.set_params(covariance_type=name)._check_parameters()
    for name in INIT_METHODS:
        gm.set_params(init_params=name)._check_parameters()


@pytest.mark.parametrize(
    ("precisions", "match"),
    [
        (np.ones((3, 2, 2)), r"precisions_init .*shape \(2, 2, 2\), got \(3, 2, 2\)"),
        (np.stack([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]]), "precisions_init .*not symmetric"),
        (np.stack([np.eye(2), np.full((2, 2), np.nan)]), "precisions_init .*finite"),
        (np.stack([np.eye(2), -np.eye(2)]), "precisions_init .*positive definite"),
    ],
)
def test_bad_precisions_init_is_named(precisions, match):
    with pytest.raises(ValueError, match=match) as e:
        GaussianMixture(2, precisions_init=precisions).fit(np.random.RandomState(0).rand(20, 2))
    assert "covariance matrix" not in str(e.value) and "covariances" not in str(e.value)


@pytest.mark.parametrize(
    ("weights", "match"), [([0.2, 0.2], "weights must sum to 1"), ([1.0], "weights must have")]
)
def test_from_parameters_names_its_own_arguments(weights, match):
    with pytest.raises(ValueError, match=match) as e:
        GaussianMixture.from_parameters(weights, [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    assert "weights_init" not in str(e.value)
    with pytest.raises(ValueError, match="'random_state' parameter"):
        GaussianMixture.from_parameters([0.5, 0.5], [[0.0], [1.0]], [1.0, 1.0], "spherical",
                                        random_state="seed")  # fmt: skip


@pytest.mark.parametrize("change", [dict(covariance_type="diag"), dict(n_components=3)])
def test_warm_start_after_changing_the_model_is_a_clear_error(blobs, change):
    gm = GaussianMixture(2, warm_start=True, random_state=0).fit(blobs)
    before = gm.means_.copy()
    with pytest.raises(ValueError, match="warm_start=True continues from the fitted parameters"):
        gm.set_params(**change).fit(blobs)
    np.testing.assert_array_equal(gm.means_, before)
    gm.set_params(warm_start=False).fit(blobs)  # the way out the message names
