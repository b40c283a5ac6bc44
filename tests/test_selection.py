"""Model selection over K x covariance type (gaussmix.selection)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from gaussmix import GaussianMixture
from gaussmix.demo import faithful_like
from gaussmix.selection import COVARIANCE_TYPES, select

K_RANGE = range(1, 5)


@pytest.fixture(scope="module")
def faithful():
    return faithful_like()


@pytest.fixture(scope="module")
def grid(faithful):
    return select(faithful, K_RANGE, "all", "bic", random_state=0, n_jobs=1)


def _free_parameters(K: int, d: int, covariance_type: str) -> int:
    """Counted by hand: K-1 weights, K*d means, and the covariance entries."""
    cov = {
        "full": K * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": K * d,
        "spherical": K,
    }[covariance_type]
    return (K - 1) + K * d + cov


def _sklearn_twin(est: GaussianMixture) -> SkGaussianMixture:
    """scikit-learn's estimator holding our fitted parameters: its bic/aic are the oracle."""
    sk = SkGaussianMixture(est.n_components, covariance_type=est.covariance_type)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
        setattr(sk, name, getattr(est, name))
    sk.converged_, sk.n_iter_, sk.lower_bound_ = True, est.n_iter_, est.lower_bound_
    sk.n_features_in_ = est.means_.shape[1]
    return sk


def test_grid_covers_every_cell(grid):
    assert [(r.covariance_type, r.n_components) for r in grid.rows] == [
        (t, k) for t in COVARIANCE_TYPES for k in K_RANGE
    ]
    assert grid.k_values == list(K_RANGE)
    assert grid.covariance_types == list(COVARIANCE_TYPES)
    assert all(r.error is None for r in grid.rows)


def test_table_equals_estimator_criteria(grid, faithful):
    for row in grid.rows:
        est = grid.models[(row.n_components, row.covariance_type)]
        assert row.bic == est.bic(faithful)
        assert row.aic == est.aic(faithful)
        assert row.icl == est.icl(faithful)
        assert row.n_parameters == _free_parameters(row.n_components, 2, row.covariance_type)
        assert row.log_likelihood == pytest.approx(est.score(faithful) * len(faithful), rel=1e-14)


def test_table_equals_sklearn_bic_aic(grid, faithful):
    for row in grid.rows:
        sk = _sklearn_twin(grid.models[(row.n_components, row.covariance_type)])
        assert row.bic == pytest.approx(sk.bic(faithful), rel=1e-12)
        assert row.aic == pytest.approx(sk.aic(faithful), rel=1e-12)


def test_selects_the_model_bic_by_hand_selects(grid, faithful):
    """Fit every cell independently and compute -2 log L + p log N by hand."""
    n = len(faithful)
    by_hand = {}
    for t in COVARIANCE_TYPES:
        for k in K_RANGE:
            est = GaussianMixture(k, covariance_type=t, random_state=0).fit(faithful)
            log_l = float(np.sum(est.score_samples(faithful)))
            by_hand[(k, t)] = -2 * log_l + _free_parameters(k, 2, t) * math.log(n)
    best = min(by_hand, key=by_hand.get)
    assert (grid.best_row.n_components, grid.best_row.covariance_type) == best
    assert grid.best_row.n_components == 2  # the two eruption regimes
    assert grid.best_row.bic == pytest.approx(by_hand[best], rel=1e-12)
    assert grid.best_model is grid.models[best]


def test_icl_penalises_uncertain_classification(grid):
    for row in grid.rows:
        assert row.icl >= row.bic - 1e-9
        if row.n_components == 1:
            assert row.icl == pytest.approx(row.bic, abs=1e-9)


def test_values_layout_and_criterion_choice(grid, faithful):
    table = grid.values("aic")
    assert table.shape == (len(K_RANGE), len(COVARIANCE_TYPES))
    row = grid.rows[5]
    assert table[row.n_components - 1, COVARIANCE_TYPES.index(row.covariance_type)] == row.aic
    by_aic = select(faithful, K_RANGE, "all", "aic", random_state=0, n_jobs=1)
    flat = [r.aic for r in by_aic.rows]
    assert by_aic.best_index == int(np.argmin(flat))


@pytest.mark.slow
def test_parallel_equals_sequential(faithful):
    seq = select(faithful, range(1, 4), ["full", "diag"], n_jobs=1)
    par = select(faithful, range(1, 4), ["full", "diag"], n_jobs=2)
    # workers run one thread each: sums may be ordered differently, hence approx
    for a, b in zip(par.rows, seq.rows, strict=True):
        assert (a.n_components, a.covariance_type, a.n_iter) == (
            b.n_components, b.covariance_type, b.n_iter
        )  # fmt: skip
        assert [a.bic, a.aic, a.icl] == pytest.approx([b.bic, b.aic, b.icl], rel=1e-10)
    assert par.best_index == seq.best_index


def test_progress_hook_sees_every_cell(faithful):
    seen = []
    select(faithful, [1, 2], "full", on_cell=lambda row, done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]


def test_failed_cells_are_kept_as_na():
    # two distinct points repeated: K=3 has a component with no spread (zero reg_covar)
    X = np.repeat([[0.0, 0.0], [5.0, 5.0]], 20, axis=0)
    X[:20] += np.random.default_rng(0).normal(scale=0.5, size=(20, 2))
    result = select(X, [1, 2, 3], "full", reg_covar=0.0)
    failed = [r for r in result.rows if r.error]
    assert failed, "expected a collapsed component"
    assert all(math.isnan(r.bic) for r in failed)
    assert result.best_row.error is None
    d = result.to_dict()
    assert any(r["bic"] is None for r in d["rows"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k_range": []}, "k_range is empty"),
        ({"k_range": [0, 1]}, ">= 1"),
        ({"k_range": [1, 1000]}, "exceeds the number of rows"),
        ({"covariance_types": ["full", "banana"]}, "covariance_type must be one of"),
        ({"criterion": "hqic"}, "criterion must be one of"),
        ({"n_jobs": 0}, "n_jobs"),
    ],
)
def test_bad_arguments(faithful, kwargs, message):
    args = {"k_range": [1, 2], "covariance_types": "full", **kwargs}
    with pytest.raises(ValueError, match=message):
        select(faithful, **args)


def test_grid_parameters_cannot_be_overridden(faithful):
    with pytest.raises(TypeError, match="set by the grid"):
        select(faithful, [1], "full", n_components=3)
