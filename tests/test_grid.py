"""The compiled grid: fit_cell against fit_small and the numpy evaluation of its end, the
partition test, and fit_grid's phases (threads, the subsampled search, NA cells).

Oracles: :func:`gaussmix._small.fit_small` (itself held to ``run_em``), the numpy log-density
of :class:`MixtureParams` for the end (log-likelihood, ICL's term, MAP labels), a brute-force
partition comparison, and the same grid run without the subsample.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gaussmix._grid as grid
from gaussmix._covariance import MCLUST_MODELS
from gaussmix._gaussian import logsumexp
from gaussmix._small import (
    FIT_SINGULAR,
    FIT_USABLE,
    OK,
    fit_cell,
    fit_small,
    start_from_labels,
)
from gaussmix.selection import _hc_partitions, select

REG = 1e-6


@pytest.fixture(scope="module")
def diabetes(mclust_data):
    return mclust_data("diabetes")


def _brute_same(a, b):
    # same partition: i ~ j in a  <=>  i ~ j in b, for every pair
    return bool(np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=30), st.permutations(range(5)),
       st.integers(0, 29), st.integers(0, 4))  # fmt: skip
def test_same_partition_is_the_pairwise_definition(labels, perm, where, to):
    a = np.array(labels)
    renamed = np.array(perm)[a]
    assert grid.same_partition(a, renamed)
    b = a.copy()
    b[where % a.size] = to
    assert grid.same_partition(a, b) == _brute_same(a, b)


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_fit_cell_is_fit_small_from_the_partition_then_one_more_e_step(diabetes, model):
    X = diabetes
    n = X.shape[0]
    w = np.random.default_rng(1).uniform(0.5, 2.0, n)
    K = 3
    labels = np.arange(n) % K
    cell = fit_cell(X, w, model, K, labels=labels, reg_covar=REG, tol=1e-6, rel_tol=0.0,
                    max_iter=200)  # fmt: skip
    start = start_from_labels(X, w, labels, K, model, reg_covar=REG)
    ref = fit_small(X, w, model, start.weights, start.means, start.covariances, reg_covar=REG,
                    tol=1e-6, max_iter=200)  # fmt: skip
    assert cell.status == OK and cell.n_iter == ref.n_iter
    # the start's centre is summed in another order; the MM loop of EVE/VVE amplifies that
    # rounding (see test_small), the other models keep it at rounding level
    tol = 1e-6 if model in ("EVE", "VVE") else 1e-9
    np.testing.assert_allclose(cell.means, ref.means, rtol=tol, atol=tol)
    np.testing.assert_allclose(cell.covariances, ref.covariances, rtol=tol, atol=1e-10)
    np.testing.assert_allclose(cell.lower_bounds, ref.lower_bounds, rtol=tol * 1e-2)
    # the end, evaluated in numpy at the returned parameters
    lj = cell.params(model).log_joint(X)
    norm = logsumexp(lj, axis=1)
    np.testing.assert_allclose(cell.log_likelihood, w @ norm, rtol=1e-11)
    np.testing.assert_allclose(cell.icl_term, w @ (lj.max(axis=1) - norm), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(cell.labels, np.argmax(lj, axis=1))
    assert cell.degenerate == FIT_USABLE


def test_fit_cell_from_parameters_continues_like_fit_small(diabetes):
    X = diabetes
    w = np.ones(X.shape[0])
    first = fit_cell(X, w, "VEV", 2, labels=np.arange(X.shape[0]) % 2, reg_covar=REG,
                     tol=0.0, rel_tol=0.0, max_iter=5)  # fmt: skip
    start = (first.weights, first.means, first.covariances)
    more = fit_cell(X, w, "VEV", 2, start=start, reg_covar=REG, tol=0.0, rel_tol=0.0,
                    max_iter=7)  # fmt: skip
    ref = fit_small(X, None, "VEV", *start, reg_covar=REG, tol=0.0, max_iter=7)
    np.testing.assert_allclose(more.covariances, ref.covariances, rtol=1e-10)
    assert more.n_iter == 7


def test_relative_tolerance_is_mclusts_test_on_the_total(diabetes):
    X = diabetes
    w = np.ones(X.shape[0])
    rel = 1e-5
    cell = fit_cell(X, w, "VVV", 3, labels=np.arange(X.shape[0]) % 3, reg_covar=REG, tol=0.0,
                    rel_tol=rel, max_iter=1000)  # fmt: skip
    total = cell.lower_bounds * w.sum()
    change = np.abs(np.diff(total)) / (1.0 + np.abs(total[1:]))
    assert cell.converged and change[-1] < rel and np.all(change[:-1] >= rel)


def test_a_component_on_one_row_is_singular(diabetes):
    X = diabetes
    labels = np.zeros(X.shape[0], dtype=np.intp)
    labels[0] = 1  # one row: its covariance is reg_covar alone
    cell = fit_cell(X, np.ones(X.shape[0]), "VVV", 2, labels=labels, reg_covar=REG, tol=0.0,
                    rel_tol=1e-5, max_iter=1)  # fmt: skip
    assert cell.status == OK and cell.degenerate == FIT_SINGULAR and cell.component == 1


def _grid(X, threads, **kw):
    return grid.fit_grid(
        X, None, range(1, 5), ["EII", "VVI", "EVE", "VVV"], starts=("hc", "k-means++"),
        n_init=1, seed=0,
        hc_partitions=lambda rows, rw: _hc_partitions(rows, rw, range(1, 5), ("hc",), "VVV",
                                                      "SVD", 0),
        reg_covar=REG, tol=0.0, rel_tol=1e-5, max_iter=1000, threads=threads, **kw)  # fmt: skip


def test_threads_do_not_change_the_grid(diabetes):
    one, two = _grid(diabetes, 1), _grid(diabetes, 2)
    for key, cell in one.items():
        other = two[key]
        assert (cell.fit is None) == (other.fit is None) and cell.reason == other.reason
        if cell.fit is not None:
            assert cell.fit.log_likelihood == other.fit.log_likelihood


def _mixture(n, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 2.0], [0.0, 7.0, -3.0]])
    z = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    A = np.array([[[1.0, 0.3, 0], [0, 1.0, 0.2], [0, 0, 0.7]], np.eye(3) * 1.5,
                  [[0.8, 0, 0], [0.5, 1.2, 0], [0, 0.3, 1.0]]])  # fmt: skip
    return centres[z] + np.einsum("nd,nde->ne", rng.standard_normal((n, 3)), A[z])


def test_subsampled_search_reaches_the_full_search(monkeypatch):
    """Above SEARCH_ROWS the starts are searched on a subsample and each cell refitted on all
    rows: at K = 1 and the true K every cell within a small margin of the search on all
    rows, and the same choice (at other K local optima differ either way, as between
    starts)."""
    X = _mixture(3000)
    monkeypatch.setattr(grid, "SEARCH_ROWS", 800)
    sub = _grid(X, 2)
    monkeypatch.setattr(grid, "SEARCH_ROWS", 10_000)
    full = _grid(X, 2)
    n_par = {key: c.n_parameters for key, c in full.items()}
    bic = {key: -2 * c.fit.log_likelihood + n_par[key] * np.log(3000)
           for key, c in full.items() if c.fit is not None}  # fmt: skip
    for key, value in bic.items():
        assert sub[key].fit is not None, (key, sub[key].reason)
        if key[0] not in (1, 3):
            continue
        ours = -2 * sub[key].fit.log_likelihood + n_par[key] * np.log(3000)
        # tolerance-level differences; a different local optimum would be tens of units
        assert ours <= value + 2.0, (key, ours, value)
    assert min(bic, key=bic.get) == (3, "VVV")


def test_select_batch_equals_the_cell_by_cell_path_for_sklearn_names(diabetes):
    """The scikit-learn names run as their mclust equivalents in the batch, stored in their
    own layout; the per-iteration-callback path (one fit per start, run_em) agrees."""
    batch = select(diabetes, range(1, 4), "sklearn")
    slow = select(diabetes, range(1, 4), "sklearn", callback=lambda progress: None)
    for a, b in zip(batch.rows, slow.rows, strict=True):
        assert (a.n_components, a.covariance_type) == (b.n_components, b.covariance_type)
        # mclust's relative tolerance stops a little earlier than the per-row one
        assert abs(a.bic - b.bic) < 0.05
        ma = batch.models[(a.n_components, a.covariance_type)]
        mb = slow.models[(b.n_components, b.covariance_type)]
        assert ma.covariances_.shape == mb.covariances_.shape
        np.testing.assert_allclose(ma.score(diabetes) * len(diabetes), a.log_likelihood,
                                   rtol=1e-10)  # fmt: skip


def test_progress_reports_every_fit_of_every_stage(diabetes):
    seen = {}
    _grid(diabetes, 2, on_progress=lambda stage, done, total: seen.setdefault(stage, []).append(
        (done, total)))
    assert set(seen) == {"search", "cross-starts"}
    for reports in seen.values():
        total = reports[0][1]
        assert [d for d, _ in reports] == list(range(1, total + 1))
        assert all(t == total for _, t in reports)
