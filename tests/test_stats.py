"""Additive sufficient statistics and the M-step."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaussmix._covariance import get_model
from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats, e_step_chunk, m_step

TYPES = ["full", "tied", "diag", "spherical"]  # the mclust names: test_models.py


def _params(rng, K, d, covariance_type):
    model = get_model(covariance_type)
    means = rng.standard_normal((K, d)) * 3
    full = np.stack([np.eye(d) * (1 + k) + 0.1 for k in range(K)])
    covs = {
        "full": full,
        "tied": full[0],
        "diag": np.stack([np.diag(c) for c in full]),
        "spherical": np.array([c[0, 0] for c in full]),
    }[covariance_type]
    w = rng.random(K) + 0.5
    return MixtureParams.from_covariances(w / w.sum(), means, covs, model)


def _close(a: SuffStats, b: SuffStats, rtol=1e-12):
    for name in ("nk", "sx", "sxx"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=1e-9)
    np.testing.assert_allclose(a.log_likelihood, b.log_likelihood, rtol=rtol)
    assert a.weight_sum == pytest.approx(b.weight_sum)
    assert a.n_samples == b.n_samples


@pytest.mark.parametrize("covariance_type", TYPES)
def test_chunk_statistics_add_up(covariance_type):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3)) * 2
    w = rng.random(300)
    p = _params(rng, 4, 3, covariance_type)
    whole = e_step_chunk(X, w, p, p.means)
    parts = [e_step_chunk(X[s : s + 70], w[s : s + 70], p, p.means) for s in range(0, 300, 70)]
    _close(whole, sum(parts))


def test_statistics_with_different_shifts_do_not_add():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 2))
    p = _params(rng, 2, 2, "full")
    a = e_step_chunk(X, None, p, p.means)
    b = e_step_chunk(X, None, p, p.means + 1)
    with pytest.raises(ValueError, match="different shifts"):
        _ = a + b


@pytest.mark.parametrize("covariance_type", TYPES)
def test_m_step_does_not_depend_on_shift(covariance_type):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 3)) + 50.0
    p = _params(rng, 3, 3, covariance_type)
    p = MixtureParams.from_covariances(p.weights, p.means + 50, p.covariances, p.model)
    a = m_step(e_step_chunk(X, None, p, p.means), p.model, 1e-6)
    b = m_step(e_step_chunk(X, None, p, np.zeros_like(p.means)), p.model, 1e-6)
    np.testing.assert_allclose(a.means, b.means, rtol=1e-11)
    np.testing.assert_allclose(a.covariances, b.covariances, rtol=1e-7)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), K=st.integers(1, 4), d=st.integers(1, 4))
def test_property_responsibilities_are_a_distribution(seed, K, d):
    rng = np.random.default_rng(seed)
    p = _params(rng, K, d, "full")
    X = rng.standard_normal((40, d)) * 10
    lj = p.log_joint(X)
    resp = np.exp(
        lj
        - np.log(np.exp(lj - lj.max(1, keepdims=True)).sum(1, keepdims=True))
        - lj.max(1, keepdims=True)
    )
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, rtol=1e-12)
    stats = e_step_chunk(X, None, p, p.means)
    assert stats.nk.sum() == pytest.approx(40.0, rel=1e-12)


def test_float32_far_from_origin_keeps_positive_variances():
    # scikit-learn #30382: raw moments in float32 give negative variances for data far away
    rng = np.random.default_rng(3)
    X64 = rng.standard_normal((20_000, 2)) * 0.01 + 1e4
    X32 = X64.astype(np.float32)
    p = MixtureParams.from_covariances(
        [1.0], X64.mean(0, keepdims=True), np.array([1e-4, 1e-4])[None], "diag"
    )
    for _ in range(3):
        p = m_step(e_step_chunk(X32, None, p, p.means), p.model, 0.0)
    assert np.all(p.covariances > 0)
    np.testing.assert_allclose(p.covariances[0], X32.astype(np.float64).var(0), rtol=1e-3)
