"""Online EM (partial_fit): exact re-centring, the documented update, convergence to batch EM."""

import itertools
import warnings

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.exceptions import ConvergenceWarning

from gaussmix import GaussianMixture
from gaussmix._online import KAPPA, online_step, recentre, step_size
from gaussmix._stats import SuffStats, accumulate

MEANS = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 6.0]])
WEIGHTS = np.array([0.5, 0.3, 0.2])
SCALES = np.array([[1.0, 0.7], [0.8, 1.2], [1.0, 1.0]])


def _draw(rng, n):
    z = rng.choice(3, n, p=WEIGHTS)
    return MEANS[z] + rng.standard_normal((n, 2)) * SCALES[z]


def _given_init():
    return {
        "weights_init": np.full(3, 1 / 3),
        "means_init": np.array([[1.0, 1.0], [4.0, -1.0], [-1.0, 5.0]]),
        "precisions_init": np.broadcast_to(np.eye(2), (3, 2, 2)).copy(),
    }


@pytest.mark.parametrize("moment", ["full", "diag"])
def test_recentre_is_exact(moment):
    rng = np.random.RandomState(0)
    X = 1e3 + rng.standard_normal((500, 4))  # far from the origin, where it matters
    r = rng.dirichlet(np.ones(3), size=500) * rng.uniform(0, 2, (500, 1))
    a = 1e3 + rng.standard_normal((3, 4))
    b = 1e3 + rng.standard_normal((3, 4))
    nk, sx, sxx = accumulate(X, r, a, moment)
    moved = recentre(SuffStats(a, nk, sx, sxx, -1.5, 7.0, 500), b)
    _, sx_b, sxx_b = accumulate(X, r, b, moment)
    np.testing.assert_array_equal(moved.shift, b)
    np.testing.assert_array_equal(moved.nk, nk)
    np.testing.assert_allclose(moved.sx, sx_b, rtol=0, atol=1e-10 * np.abs(sx_b).max())
    np.testing.assert_allclose(moved.sxx, sxx_b, rtol=0, atol=1e-12 * np.abs(sxx_b).max())
    assert (moved.log_likelihood, moved.weight_sum, moved.n_samples) == (-1.5, 7.0, 500)


def test_step_size_schedule():
    assert step_size(0) == 1.0  # the first batch replaces the empty average
    rho = [step_size(t) for t in range(100)]
    assert all(a > b for a, b in itertools.pairwise(rho))
    assert step_size(99) == pytest.approx(100**-KAPPA)
    assert step_size(3, kappa=1.0) == pytest.approx(1 / 4)
    for kappa in (0.5, 1.01):
        with pytest.raises(ValueError, match="kappa"):
            step_size(1, kappa=kappa)


def _raw_moment_oracle(batches, init, reg_covar=1e-6):
    """Online EM written from the textbook, on raw (uncentred) moments and scipy densities."""
    weights = init["weights_init"]
    means = init["means_init"]
    covs = np.linalg.inv(init["precisions_init"])
    S0 = S1 = S2 = None
    for t, (X, w) in enumerate(batches):
        logp = np.column_stack(
            [
                np.log(weights[k]) + sps.multivariate_normal(means[k], covs[k]).logpdf(X)
                for k in range(3)
            ]
        )
        resp = np.exp(logp - logp.max(1, keepdims=True))
        resp /= resp.sum(1, keepdims=True)
        r = resp * w[:, None]
        b0, b1 = r.sum(0) / w.sum(), r.T @ X / w.sum()
        b2 = np.einsum("nk,ni,nj->kij", r, X, X) / w.sum()
        rho = (t + 1.0) ** -0.6
        if t == 0:
            S0, S1, S2 = b0, b1, b2
        else:
            S0, S1, S2 = (
                (1 - rho) * S0 + rho * b0,
                (1 - rho) * S1 + rho * b1,
                ((1 - rho) * S2 + rho * b2),
            )
        weights = S0 / S0.sum()
        means = S1 / S0[:, None]
        covs = S2 / S0[:, None, None] - means[:, :, None] * means[:, None, :]
        covs = covs + reg_covar * np.eye(2)
    return weights, means, covs


def test_partial_fit_is_the_documented_update():
    rng = np.random.RandomState(1)
    batches = [(_draw(rng, n), rng.uniform(0.5, 2.0, n)) for n in (300, 50, 400, 120, 7, 260)]
    gm = GaussianMixture(3, **_given_init())
    for X, w in batches:
        gm.partial_fit(X, sample_weight=w)
    weights, means, covs = _raw_moment_oracle(batches, _given_init())
    np.testing.assert_allclose(gm.weights_, weights, rtol=1e-10)
    np.testing.assert_allclose(gm.means_, means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gm.covariances_, covs, rtol=1e-9, atol=1e-12)
    assert gm.n_iter_ == 6 and len(gm.lower_bounds_) == 6 and not gm.converged_


def test_first_batch_is_one_em_step():
    X = _draw(np.random.RandomState(2), 400)
    online = GaussianMixture(3, **_given_init()).partial_fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batch = GaussianMixture(3, max_iter=1, engine="numpy", **_given_init()).fit(X)
    for name in ("weights_", "means_", "covariances_"):
        # the online path divides by the batch weight first: rounding apart, the same step
        np.testing.assert_allclose(
            getattr(online, name), getattr(batch, name), rtol=1e-12, atol=1e-13
        )
    assert online.lower_bound_ == pytest.approx(batch.lower_bound_, rel=1e-12)


@pytest.mark.slow
def test_converges_to_batch_em_on_a_stationary_stream():
    rng = np.random.RandomState(3)
    B, T = 2000, 150
    batches = [_draw(rng, B) for _ in range(T)]
    online = GaussianMixture(3, random_state=0)
    errors = []
    # the batch solution, started at the truth (k-means on 300 000 rows would dominate)
    full = GaussianMixture(
        3,
        tol=1e-9,
        max_iter=1000,
        engine="numpy",
        weights_init=WEIGHTS,
        means_init=MEANS,
        precisions_init=np.stack([np.diag(1 / s**2) for s in SCALES]),
    ).fit(np.concatenate(batches))
    order_full = np.argsort(full.means_ @ [1.0, 10.0])
    for t, X in enumerate(batches):
        online.partial_fit(X)
        if t in (9, T - 1):
            order = np.argsort(online.means_ @ [1.0, 10.0])
            errors.append(np.abs(online.means_[order] - full.means_[order_full]).max())
    order = np.argsort(online.means_ @ [1.0, 10.0])
    # Tolerance: at the end the running statistics are an exponentially weighted average
    # with weight rho_T on the newest batch, whose noise is that of a fit on about
    # n_eff = B (2 - rho) / rho rows (~80 000 here). The batch fit on T·B = 300 000 rows
    # is the target; allow 6 standard errors of the online estimate.
    rho = step_size(T - 1)
    n_eff = B * (2 - rho) / rho
    pi = full.weights_[order_full]
    sd = np.sqrt(np.linalg.eigvalsh(full.covariances_[order_full])[:, -1])
    np.testing.assert_array_less(
        np.abs(online.means_[order] - full.means_[order_full]).max(axis=1),
        6 * sd / np.sqrt(pi * n_eff),
    )
    np.testing.assert_array_less(
        np.abs(online.weights_[order] - pi), 6 * np.sqrt(pi * (1 - pi) / n_eff)
    )
    # variance of a sample variance ~ 2 sd^4 / n
    np.testing.assert_array_less(
        np.abs(online.covariances_[order] - full.covariances_[order_full]).max(axis=(1, 2)),
        6 * np.sqrt(2) * sd**2 / np.sqrt(pi * n_eff),
    )
    assert errors[1] < errors[0], "the estimate keeps approaching the batch solution"


def test_weights_equal_repeated_rows():
    rng = np.random.RandomState(4)
    X1, X2 = _draw(rng, 200), _draw(rng, 150)
    w1, w2 = rng.randint(0, 4, 200), rng.randint(1, 3, 150)
    weighted = GaussianMixture(3, **_given_init())
    weighted.partial_fit(X1, sample_weight=w1).partial_fit(X2, sample_weight=w2)
    repeated = GaussianMixture(3, **_given_init())
    repeated.partial_fit(np.repeat(X1, w1, axis=0)).partial_fit(np.repeat(X2, w2, axis=0))
    np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-11)
    np.testing.assert_allclose(weighted.covariances_, repeated.covariances_, rtol=1e-10)


def test_after_fit_starts_from_fitted_parameters_and_fit_restarts():
    rng = np.random.RandomState(5)
    X = _draw(rng, 600)
    gm = GaussianMixture(3, random_state=0).fit(X)
    fitted = gm._fitted_params()
    batch = _draw(rng, 300)
    _, expected, _ = online_step(None, fitted, batch, None, reg_covar=gm.reg_covar)
    gm.partial_fit(batch)
    np.testing.assert_allclose(gm.means_, expected.means, rtol=1e-12)
    assert gm.n_iter_ == 1
    gm.partial_fit(_draw(rng, 300))
    assert gm.n_iter_ == 2
    gm.fit(X)  # a new batch fit: the next partial_fit begins a new average
    gm.partial_fit(batch)
    assert gm.n_iter_ == 1 and len(gm.lower_bounds_) == 1


def test_float32_batches_stay_float32():
    X = _draw(np.random.RandomState(6), 300).astype(np.float32)
    gm = GaussianMixture(3, random_state=0).partial_fit(X).partial_fit(X[:100])
    assert gm.means_.dtype == np.float32
    assert gm.predict(X).shape == (300,)


def test_bad_batches():
    rng = np.random.RandomState(7)
    gm = GaussianMixture(3, random_state=0)
    with pytest.raises(ValueError, match="n_samples >= n_components = 3, got 2 rows"):
        gm.partial_fit(_draw(rng, 2))
    gm.partial_fit(_draw(rng, 50))
    gm.partial_fit(_draw(rng, 1))  # later batches may be a single row
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 2"):
        gm.partial_fit(rng.standard_normal((10, 3)))
    with pytest.raises(ValueError, match="sum to zero"):
        gm.partial_fit(_draw(rng, 5), sample_weight=np.zeros(5))
    with pytest.raises(ValueError, match="non-negative"):
        gm.partial_fit(_draw(rng, 5), sample_weight=-np.ones(5))
    # NaN is a missing value (issue 12, tests/test_missing.py); infinity is refused
    with pytest.raises(ValueError, match="(?i)infinity"):
        gm.partial_fit(np.array([[np.inf, 1.0]]))
    assert gm.n_iter_ == 2, "failed batches change nothing"


def test_first_batch_with_all_zero_weights_is_a_clear_error():
    X = _draw(np.random.RandomState(8), 50)
    gm = GaussianMixture(3, random_state=0)
    with pytest.raises(ValueError, match="sum to zero"):
        gm.partial_fit(X, sample_weight=np.zeros(50))
    with pytest.raises(ValueError, match="needs n_components = 3 rows of positive weight, got 2"):
        gm.partial_fit(X, sample_weight=np.r_[1.0, 1.0, np.zeros(48)])
    assert not hasattr(gm, "means_"), "failed batches change nothing"
    gm.partial_fit(X, sample_weight=np.ones(50))


def test_a_file_name_is_refused_with_the_way_out(tmp_path):
    path = tmp_path / "batch.csv"
    np.savetxt(path, _draw(np.random.RandomState(9), 20), delimiter=",")
    for source in (str(path), path):
        with pytest.raises(TypeError, match=r"not a file name .*fit\(path\)"):
            GaussianMixture(3).partial_fit(source)


@pytest.mark.parametrize("scale", [1e-18, 1e300])
def test_batch_weights_are_scale_free(scale):
    rng = np.random.RandomState(10)
    X1, X2 = _draw(rng, 200), _draw(rng, 150)
    w1, w2 = rng.uniform(0.5, 2.0, 200), rng.uniform(0.5, 2.0, 150)
    unit = GaussianMixture(3, random_state=0)
    unit.partial_fit(X1, sample_weight=w1).partial_fit(X2, sample_weight=w2)
    scaled = GaussianMixture(3, random_state=0)
    with np.errstate(all="raise"):
        scaled.partial_fit(X1, sample_weight=w1 * scale).partial_fit(X2, sample_weight=w2 * scale)
    np.testing.assert_allclose(scaled.means_, unit.means_, rtol=1e-9)
    np.testing.assert_allclose(scaled.covariances_, unit.covariances_, rtol=1e-9)
    assert scaled.lower_bound_ == pytest.approx(unit.lower_bound_, rel=1e-12)
