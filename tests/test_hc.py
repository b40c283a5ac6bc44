"""Model-based hierarchical clustering (gaussmix._hc) against mclust's ``hc``/``hclass``.

Oracles: the mclust 6.0.0 fixtures (tests/fixtures/mclust/hc.json: trees and ``hclass``
partitions for K = 1..9 on six data sets, and the transformed data ``Z`` they merged), the
fixtures' ``mclustBIC`` tables (a fit started from hc must reach mclust's BIC), and, for the
exact criterion, the criterion recomputed from its definition with numpy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gaussmix import GaussianMixture
from gaussmix._hc import hc_partitions, hc_start_labels, hc_transform, hc_tree
from mclust_fixtures import DATASETS, load_bic_tables, load_dataset, load_em14, load_hc

TREES = {"VVV_SVD": ("VVV", "SVD"), "EII_VARS": ("EII", "VARS"), "VVV_VARS": ("VVV", "VARS")}


@pytest.mark.parametrize("key", sorted(TREES))
@pytest.mark.parametrize("name", DATASETS)
def test_tree_equals_mclust(name, key):
    fx = load_hc()[name][key]
    X, _ = load_dataset(name)
    model, use = TREES[key]
    tree = hc_tree(X, model=model, use=use)
    # every merge, in mclust's own numbering (1-based there)
    np.testing.assert_array_equal(tree.merges, fx["merge"] - 1)
    for k in range(1, 10):
        np.testing.assert_array_equal(tree.tree_partition(k), fx["partitions"][k])
        np.testing.assert_array_equal(tree.partition(k), fx["partitions"][k])


@pytest.mark.parametrize("name", DATASETS)
def test_merges_on_mclusts_transformed_data(name):
    # the merge algorithm alone, on the very doubles mclust merged
    fx = load_hc()[name]["VVV_SVD"]
    tree = hc_tree(fx["Z"], model="VVV", use="VARS")
    np.testing.assert_array_equal(tree.merges, fx["merge"] - 1)


@pytest.mark.parametrize("name", DATASETS)
def test_svd_transform_matches_mclust(name):
    X, _ = load_dataset(name)
    Z = hc_transform(X, "SVD")
    Zr = load_hc()[name]["VVV_SVD"]["Z"]
    # singular vectors have arbitrary signs: compare column by column up to sign
    for j in range(Z.shape[1]):
        sign = np.sign(Z[:, j] @ Zr[:, j])
        np.testing.assert_allclose(sign * Z[:, j], Zr[:, j], rtol=0, atol=1e-13)


def test_em14_starting_labels_are_the_hc_partition():
    parts = {name: hc_tree(load_dataset(name)[0]) for name in ("faithful", "iris")}
    seen = 0
    for case in load_em14():
        if case["dataset"] in parts and case["iterations"] == 10 and case["model"] == "VVV":
            got = parts[case["dataset"]].partition(case["K"])
            np.testing.assert_array_equal(got, case["labels"])
            seen += 1
    assert seen == 4


def _vvv_term(Y: np.ndarray, alpha: float) -> float:
    m, p = Y.shape
    if m == 1:
        return math.log(alpha)
    C = Y - Y.mean(axis=0)
    W = C.T @ C
    tr = float(np.trace(W))
    if m <= p:
        return m * math.log((tr + alpha) / m)
    return m * math.log(np.linalg.det(W / m) + (tr + alpha) / m)


def _replay(tree, n):
    """Members of the two groups joined at each merge."""
    members = {i: [i] for i in range(n)}
    for a, b in tree.merges:
        yield members[a], members[b]
        members[a] = members[a] + members.pop(b)


def test_exact_vvv_criterion_is_its_definition():
    X, _ = load_dataset("faithful")
    n, p = X.shape
    C = X / math.sqrt(n * p)
    alpha = float(np.sum((C - C.mean(axis=0)) ** 2))
    tree = hc_tree(X, model="VVV", use="VARS", mclust_compat=False)
    expected = [
        _vvv_term(X[a + b], alpha) - _vvv_term(X[a], alpha) - _vvv_term(X[b], alpha)
        for a, b in _replay(tree, n)
    ]
    np.testing.assert_allclose(tree.criterion, expected, rtol=1e-7, atol=1e-7)
    # the first merge is the cheapest pair of rows: 2 log((|x_i - x_j|^2 / 2 + α) / 2) - 2 log α
    d2 = np.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)[np.triu_indices(n, 1)]
    cheapest = 2 * np.log((d2.min() / 2 + alpha) / 2) - 2 * math.log(alpha)
    assert tree.criterion[0] == pytest.approx(cheapest, rel=1e-12)


def test_compat_changes_the_tree_only_where_mclust_reads_a_stored_factor():
    X, _ = load_dataset("faithful")
    exact = hc_tree(X, model="VVV", use="VARS", mclust_compat=False)
    compat = hc_tree(X, model="VVV", use="VARS")
    differ = np.flatnonzero((exact.merges != compat.merges).any(axis=1))
    # measured: the first 207 of 271 merges agree, to the last bit of their cost
    assert differ.size and differ[0] == 207
    np.testing.assert_array_equal(exact.criterion[:207], compat.criterion[:207])


def test_eii_criterion_is_wards():
    X, _ = load_dataset("iris")
    tree = hc_tree(X, model="EII", use="VARS")
    expected = []
    for a, b in _replay(tree, X.shape[0]):
        na, nb = len(a), len(b)
        diff = X[a].mean(axis=0) - X[b].mean(axis=0)
        expected.append(na * nb / (na + nb) * float(diff @ diff))
    np.testing.assert_allclose(tree.criterion, expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(3, 25), st.integers(1, 3)),
        elements=st.floats(-100, 100, allow_nan=False, width=32),
    ),
    st.sampled_from(["VVV", "EII"]),
)
def test_partitions_are_nested(X, model):
    if np.ptp(X, axis=0).min() == 0:
        X = X + np.arange(X.shape[0])[:, None]  # no constant column for the SVD transform
    tree = hc_tree(X, model=model)
    n = X.shape[0]
    parts = tree.tree_partitions(list(range(1, n + 1)))
    for k in range(1, n + 1):
        lab = parts[k - 1]
        assert sorted(set(lab)) == list(range(k))
        # first-appearance numbering, as mclust's hclass
        _, first = np.unique(lab, return_index=True)
        assert np.all(np.diff(first) > 0)
        if k < n:
            finer = parts[k]
            # every group of the finer partition sits inside one group of the coarser
            for g in range(k + 1):
                assert np.unique(lab[finer == g]).size == 1


def test_subset_is_reproducible_and_covers_every_row():
    X, _ = load_dataset("wreath")
    a = hc_tree(X, max_rows=300, random_state=3)
    b = hc_tree(X, max_rows=300, random_state=3)
    c = hc_tree(X, max_rows=300, random_state=4)
    assert a.rows.shape == (300,) and np.all(np.diff(a.rows) > 0)
    np.testing.assert_array_equal(a.rows, b.rows)
    assert not np.array_equal(a.rows, c.rows)
    for k in (1, 4, 9):
        la, lb = a.partition(k), b.partition(k)
        np.testing.assert_array_equal(la, lb)
        assert la.shape == (X.shape[0],) and sorted(set(la)) == list(range(k))
        # the subset's rows keep their tree group (up to the renumbering of all rows)
        sub = la[a.rows]
        tree_lab = a.tree_partition(k)
        for g in range(k):
            assert np.unique(sub[tree_lab == g]).size == 1


def test_subset_rows_join_the_most_probable_group():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(400, 2) * 0.3 + c for c in ([0, 0], [6, 0], [0, 6])])
    tree = hc_tree(X, max_rows=150, random_state=0)
    lab = tree.partition(3)
    truth = np.repeat(np.arange(3), 400)
    # three well separated blobs: the extension recovers them exactly (up to numbering)
    table = np.zeros((3, 3), dtype=int)
    np.add.at(table, (truth, lab), 1)
    assert np.all(table.max(axis=1) == 400)


def test_hc_partitions_leaves_out_zero_weights():
    X, _ = load_dataset("iris")
    w = np.ones(X.shape[0])
    w[::7] = 0.0
    parts = hc_partitions(X, [2, 3, 5], sample_weight=w)
    ref = hc_tree(X[w > 0])
    for k, lab in zip([2, 3, 5], parts, strict=True):
        assert np.all(lab[w == 0] == -1)
        np.testing.assert_array_equal(lab[w > 0], ref.partition(k))


@pytest.mark.parametrize(
    ("name", "model", "K"),
    [("faithful", "EEE", 3), ("iris", "VEV", 2), ("diabetes", "VVV", 3), ("thyroid", "VVI", 3)],
)
def test_fit_from_hc_reaches_mclusts_bic(name, model, K):
    # mclust's chosen model on each data set; its BIC is 2 loglik - npar log n (higher better)
    tables = load_bic_tables()["datasets"][name]
    col = tables["models"].index(model)
    mclust_bic = -tables["bic"][K - 1, col]
    X, _ = load_dataset(name)
    gm = GaussianMixture(
        K, covariance_type=model, init_params="hc", tol=1e-10, max_iter=5000, reg_covar=0.0
    ).fit(X)
    assert gm.bic(X) <= mclust_bic + 0.5


def test_init_hc_with_weights_and_float32():
    X, _ = load_dataset("faithful")
    w = np.ones(X.shape[0])
    w[:20] = 0.0
    gm = GaussianMixture(2, init_params="hc", random_state=0).fit(X, sample_weight=w)
    ref = GaussianMixture(2, init_params="hc", random_state=0).fit(X[20:])
    np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-6)
    X32 = X.astype(np.float32)
    gm32 = GaussianMixture(2, init_params="hc", random_state=0).fit(X32)
    ref32 = GaussianMixture(2, init_params="hc", random_state=0).fit(X32.astype(np.float64))
    assert gm32.means_.dtype == np.float32
    np.testing.assert_allclose(gm32.means_, ref32.means_, rtol=1e-4)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_init_hc_above_max_rows_is_reproducible():
    X, _ = load_dataset("wreath")
    # 2001 rows: one more than the tree takes, so it runs on a subset drawn from random_state
    X = np.vstack([X, X + 0.01, X[:1] + 0.5])
    a = GaussianMixture(5, init_params="hc", random_state=7, max_iter=1).fit(X)
    b = GaussianMixture(5, init_params="hc", random_state=7, max_iter=1).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "VEV"}, "model must be one of"),
        ({"use": "PCS"}, "use must be one of"),
        ({"max_rows": 1}, "max_rows must be an integer >= 2"),
        ({"max_rows": 2.5}, "max_rows must be an integer >= 2"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hc_tree(np.random.RandomState(0).randn(10, 2), **kwargs)


def test_bad_data():
    with pytest.raises(ValueError, match="finite"):
        hc_tree(np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="at least 2 rows"):
        hc_tree(np.ones((1, 3)))
    with pytest.raises(ValueError, match="not constant"):
        hc_tree(np.ones((5, 2)))
    # constant data are fine on the raw scale
    assert hc_tree(np.ones((5, 2)), use="VARS").n_rows == 5
    tree = hc_tree(np.random.RandomState(0).randn(6, 2))
    with pytest.raises(ValueError, match="between 1 and the 6 rows"):
        tree.partition(7)
    with pytest.raises(TypeError, match="integer"):
        tree.partition(2.0)
    with pytest.raises(ValueError, match="at least max\\(2, n_components\\) = 3 rows"):
        w = np.array([1.0, 1.0, 0.0, 0.0])
        hc_start_labels(np.arange(8.0).reshape(4, 2), w, 3, np.random.RandomState(0))
