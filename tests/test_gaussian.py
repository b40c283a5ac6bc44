"""The multivariate Gaussian against scipy, plus property tests of the maths layer."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from gaussmix import MultivariateNormal
from gaussmix._gaussian import logsumexp


def _spd(rng, d, cond):
    """A random SPD matrix with condition number ``cond``."""
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    eig = np.logspace(0, np.log10(cond), d)
    return (q * eig) @ q.T


@pytest.mark.parametrize("d", [1, 2, 10, 50, 100])
@pytest.mark.parametrize("cond", [1.0, 1e4, 1e8])
def test_logpdf_matches_scipy(d, cond):
    rng = np.random.default_rng(d + int(np.log10(cond)))
    cov = _spd(rng, d, cond)
    cov = (cov + cov.T) / 2
    mean = rng.standard_normal(d) * 3
    X = rng.multivariate_normal(mean, cov, size=50, method="cholesky")
    ours = MultivariateNormal(mean, cov).logpdf(X)
    ref = stats.multivariate_normal(mean, cov).logpdf(X)
    # both are backward-stable; differences scale with cond * eps relative to the terms
    np.testing.assert_allclose(ours, np.atleast_1d(ref), rtol=1e-9 * max(1.0, cond * 1e-4))
    np.testing.assert_allclose(MultivariateNormal(mean, cov).pdf(X[:3]), np.exp(ours[:3]))


def test_logpdf_far_tail_is_finite():
    mvn = MultivariateNormal([0.0, 0.0], np.eye(2))
    lp = mvn.logpdf([[1e3, -1e3]])
    assert np.isfinite(lp[0])
    np.testing.assert_allclose(lp, stats.multivariate_normal([0, 0], np.eye(2)).logpdf([1e3, -1e3]))


@pytest.mark.parametrize(
    ("cov", "match"),
    [
        ([[1.0, 0.5], [0.4, 1.0]], "not symmetric"),
        ([[1.0, 2.0], [2.0, 1.0]], "not positive definite"),
        ([[0.0, 0.0], [0.0, 0.0]], "not positive definite"),
        ([[1.0, 0.0]], "shape"),
        ([[np.nan, 0.0], [0.0, 1.0]], "finite"),
    ],
)
def test_bad_covariance_rejected(cov, match):
    with pytest.raises(ValueError, match=match):
        MultivariateNormal([0.0, 0.0], cov)


def test_fit_is_mean_and_biased_covariance():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3)) @ rng.standard_normal((3, 3)) + 1e6
    mvn = MultivariateNormal.fit(X)
    np.testing.assert_allclose(mvn.mean, X.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(mvn.cov, np.cov(X.T, bias=True), rtol=1e-9)


def test_weighted_fit_equals_repeated_rows():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 2))
    w = rng.integers(0, 4, size=30)
    a = MultivariateNormal.fit(X, sample_weight=w)
    b = MultivariateNormal.fit(np.repeat(X, w, axis=0))
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-13)
    np.testing.assert_allclose(a.cov, b.cov, rtol=1e-12)


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        MultivariateNormal.fit([[np.nan, 1.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="2-D"):
        MultivariateNormal.fit(np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        MultivariateNormal.fit(np.ones((3, 2)), sample_weight=[1, -1, 1])


def test_sample_moments_converge():
    cov = np.array([[2.0, 0.6], [0.6, 0.5]])
    mvn = MultivariateNormal([1.0, -2.0], cov)
    X = mvn.sample(200_000, random_state=0)
    # standard errors ~ sqrt(var / n) ~ 3e-3: 5 sigma bounds
    np.testing.assert_allclose(X.mean(axis=0), [1.0, -2.0], atol=0.02)
    np.testing.assert_allclose(np.cov(X.T), cov, atol=0.03)
    with pytest.raises(ValueError):
        mvn.sample(-1)


@settings(max_examples=60, deadline=None)
@given(
    d=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(1e-3, 1e3),
)
def test_property_logpdf_equals_scipy(d, seed, scale):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d))
    cov = (A @ A.T + d * np.eye(d)) * scale
    mean = rng.standard_normal(d) * scale
    X = rng.standard_normal((5, d)) * np.sqrt(scale) + mean
    ref = np.atleast_1d(stats.multivariate_normal(mean, cov).logpdf(X))
    np.testing.assert_allclose(MultivariateNormal(mean, cov).logpdf(X), ref, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-1e4, 1e4), min_size=1, max_size=20),
    offset=st.floats(-1e4, 1e4),
)
def test_property_logsumexp_never_overflows(values, offset):
    a = np.asarray(values) + offset
    out = logsumexp(a[None, :], axis=1)[0]
    assert np.isfinite(out)
    assert a.max() - 1e-9 <= out <= a.max() + np.log(a.size) + 1e-9


def test_logsumexp_all_minus_inf_row():
    out = logsumexp(np.array([[-np.inf, -np.inf], [0.0, 0.0]]), axis=1)
    assert out[0] == -np.inf
    np.testing.assert_allclose(out[1], np.log(2))
