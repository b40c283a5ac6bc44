"""The fast CPU engine against the numpy reference kernels and scikit-learn."""

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from gaussmix import GaussianMixture, _init, _mixture, _vecmath
from gaussmix._covariance import get_model
from gaussmix._params import MixtureParams
from gaussmix._stats import e_step_chunk
from gaussmix.backends import _cpu_kernels, _quad_kernel, resolve_engine
from gaussmix.backends import cpu as cpu_module
from gaussmix.backends.cpu import MIN_ROWS, CpuExecutor
from gaussmix.backends.numpy import NumpyExecutor

TYPES = ["full", "tied", "diag", "spherical"]
ROOT = Path(__file__).resolve().parents[2]


def _params(rng, K, d, covariance_type, offset=0.0, zero_weight=False):
    means = rng.normal(size=(K, d)) * 3 + offset
    A = rng.normal(size=(K, d, d)) * 0.4
    full = np.eye(d) + A @ np.swapaxes(A, 1, 2)
    covariances = {
        "full": full,
        "tied": full[0],
        "diag": 0.5 + rng.random((K, d)),
        "spherical": 0.5 + rng.random(K),
    }[covariance_type]
    weights = rng.random(K) + 0.2
    if zero_weight:
        weights[-1] = 0.0
    return MixtureParams.from_covariances(
        weights / weights.sum(), means, covariances, get_model(covariance_type)
    )


def _data(rng, n, params):
    z = rng.integers(0, params.n_components, n)
    return params.means[z] + rng.normal(size=(n, params.n_features)) * 1.5


def _assert_stats_close(a, b, rtol):
    # relative to each field's largest entry: single entries of sx may be near zero
    for name in ("nk", "sx", "sxx"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, name
        scale = np.max(np.abs(y))
        np.testing.assert_allclose(x, y, rtol=0, atol=rtol * scale, err_msg=name)
    assert a.log_likelihood == pytest.approx(b.log_likelihood, rel=rtol)
    assert a.weight_sum == pytest.approx(b.weight_sum, rel=1e-15)
    assert a.n_samples == b.n_samples
    np.testing.assert_array_equal(a.shift, b.shift)


# (n_samples, n_features, n_components): the fused kernel (d = 2: its own one-pass loops;
# d = 3: single columns; d = 6 and 14: upper triangular factors padded to the written-out
# d = 8 and d = 16 loops; d = 9: 4 × 4 blocks and a remainder), then the BLAS path (d > 24)
SHAPES = [(6000, 2, 5), (6000, 3, 4), (6000, 6, 3), (6000, 9, 3), (6000, 14, 3), (5000, 26, 3)]
SHAPE_IDS = ["fused2", "fused3", "fused6", "fused9", "fused14", "blas"]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_e_step_equals_reference(shape, covariance_type, weighted):
    rng = np.random.default_rng(7)
    n, d, K = shape
    # data away from the origin, and a shift that is not the means: the change of origin
    # of the float32 path is exercised, and nothing cancels by accident
    params = _params(rng, K, d, covariance_type, offset=40.0)
    X = _data(rng, n, params)
    w = rng.random(n) * 3 if weighted else None
    if weighted:
        w[::5] = 0.0
    shift = params.means + rng.normal(size=params.means.shape)
    ref64 = NumpyExecutor(X, w).e_step(params, shift=shift)
    ours64 = CpuExecutor(X, w).e_step(params, shift=shift)
    _assert_stats_close(ours64, ref64, 1e-10)
    X32 = X.astype(np.float32)
    ours32 = CpuExecutor(X32, w).e_step(params, shift=shift)
    _assert_stats_close(ours32, NumpyExecutor(X32, w).e_step(params, shift=shift), 1e-4)
    _assert_stats_close(ours32, ref64, 1e-4)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_quadratic_form_path_far_from_the_origin(offset):
    # the float64 BLAS path expands each Mahalanobis term around the weighted mean of the
    # means: far from the origin nothing may cancel, a zero-weight component stays at zero
    rng = np.random.default_rng(21)
    n, d, K = 6000, 40, 5
    params = _params(rng, K, d, "full", offset=offset, zero_weight=True)
    X = _data(rng, n, params)
    ours = CpuExecutor(X)
    assert ours.uses_blas(params)
    stats = ours.e_step(params)
    _assert_stats_close(stats, NumpyExecutor(X).e_step(params), 1e-10)
    assert stats.nk[-1] == 0.0


@pytest.mark.parametrize("in_registers", [True, False], ids=["registers", "blas-form"])
@pytest.mark.parametrize("shape", [(MIN_ROWS + 7, 25, 9), (6000, 40, 3)])
def test_both_forms_of_the_quadratic_log_joint(monkeypatch, in_registers, shape):
    # the features formed in registers (AVX-512 targets) and written out for a GEMM
    # (elsewhere): whichever this host takes, both must give the reference's statistics and
    # predictions (without AVX-512, LLVM splits the register kernel's vectors: same result)
    monkeypatch.setattr(_quad_kernel, "available", lambda: in_registers)
    rng = np.random.default_rng(22)
    n, d, K = shape
    params = _params(rng, K, d, "full", offset=50.0, zero_weight=True)
    X = _data(rng, n, params)
    w = rng.random(n)
    layout = cpu_module._blas_layout(
        params, cpu_module.prepare(params, params.means, X.dtype), X.dtype, 1024
    )
    assert layout.in_registers == in_registers
    for weights in (None, w):
        ours = CpuExecutor(X, weights, n_threads=2).e_step(params)
        _assert_stats_close(ours, NumpyExecutor(X, weights).e_step(params), 1e-10)
    for op in ("score_samples", "predict_proba"):
        np.testing.assert_allclose(
            cpu_module.row_op(params, X, op), getattr(_mixture, op)(params, X), rtol=1e-12,
            atol=1e-12,
        )  # fmt: skip
    # float32 rows: in registers the features are float64 (written out they would cancel:
    # the BLAS form projects float32 rows instead)
    X32 = X.astype(np.float32)
    layout32 = cpu_module._blas_layout(
        params, cpu_module.prepare(params, params.means, X32.dtype), X32.dtype, 1024
    )
    assert layout32.quad == in_registers
    ours32 = CpuExecutor(X32, w, n_threads=2).e_step(params)
    _assert_stats_close(ours32, NumpyExecutor(X32.astype(np.float64), w).e_step(params), 1e-4)
    np.testing.assert_allclose(
        cpu_module.row_op(params, X32, "score_samples"),
        _mixture.score_samples(params, X32.astype(np.float64)), rtol=1e-5,
    )  # fmt: skip


@pytest.mark.slow
def test_projection_path_beyond_the_quadratic_features():
    # above d = 360 the float64 BLAS path projects rows on [P_1 ... P_K] instead (the
    # quadratic features of even a few rows would be large)
    rng = np.random.default_rng(23)
    params = _params(rng, 2, 361, "full", offset=5.0)
    X = _data(rng, MIN_ROWS + 7, params)
    _assert_stats_close(CpuExecutor(X).e_step(params), NumpyExecutor(X).e_step(params), 1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_lower_triangular_factors_from_precisions_init(shape, covariance_type):
    # precisions_init gives lower Cholesky factors of the precisions (not the upper ones of
    # an M-step): the kernels must not assume a triangle
    rng = np.random.default_rng(8)
    n, d, K = shape
    upper = _params(rng, K, d, covariance_type)
    lower = MixtureParams.from_precisions_cholesky(
        upper.weights,
        upper.means,
        np.linalg.cholesky(upper.precisions),
        covariance_type,
    )
    assert not np.any(np.triu(np.atleast_3d(lower.precisions_cholesky.T).T, 1))
    X = _data(rng, n, upper)
    ref = NumpyExecutor(X).e_step(lower)
    _assert_stats_close(CpuExecutor(X).e_step(lower), ref, 1e-10)
    _assert_stats_close(CpuExecutor(X).e_step(upper), ref, 1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_factors_triangular_up_to_rounding_take_the_triangular_loops(shape):
    # an M-step's upper factor has 1e-16 below the diagonal where the exact one has zeros
    # (its inverse comes from an LU solve): read as upper, with the same statistics
    rng = np.random.default_rng(9)
    n, d, K = shape
    exact = _params(rng, K, d, "full")
    U = np.triu(exact.precisions_cholesky)
    noisy_U = U + np.tril(rng.normal(size=U.shape), -1) * 1e-16 * np.abs(U).max()
    noisy = MixtureParams.from_precisions_cholesky(exact.weights, exact.means, noisy_U, "full")
    assert cpu_module.prepare(noisy, noisy.means, np.dtype(np.float64)).tri == 1
    X = _data(rng, n, exact)
    _assert_stats_close(CpuExecutor(X).e_step(noisy), NumpyExecutor(X).e_step(noisy), 1e-10)
    # a genuinely dense factor stays dense
    dense_U = U + np.tril(rng.normal(size=U.shape), -1) * 1e-3
    dense = MixtureParams.from_precisions_cholesky(exact.weights, exact.means, dense_U, "full")
    assert cpu_module.prepare(dense, dense.means, np.dtype(np.float64)).tri == 0
    _assert_stats_close(CpuExecutor(X).e_step(dense), NumpyExecutor(X).e_step(dense), 1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_threads_never_change_the_sum(shape, dtype):
    rng = np.random.default_rng(1)
    n, d, K = shape
    params = _params(rng, K, d, "full")
    X = _data(rng, 3 * n, params).astype(dtype)
    results = [CpuExecutor(X, n_threads=t).e_step(params) for t in (1, 2, 3)]
    for other in results[1:]:
        for name in ("nk", "sx", "sxx"):
            np.testing.assert_array_equal(getattr(other, name), getattr(results[0], name))
        assert other.log_likelihood == results[0].log_likelihood


@pytest.mark.parametrize("covariance_type", TYPES)
def test_zero_weight_component_and_far_rows(covariance_type):
    rng = np.random.default_rng(3)
    params = _params(rng, 4, 3, covariance_type, zero_weight=True)
    X = _data(rng, 8000, params)
    X[:50] += 1e4  # responsibilities of these rows underflow for all but one component
    ref = NumpyExecutor(X).e_step(params)
    ours = CpuExecutor(X).e_step(params)
    _assert_stats_close(ours, ref, 1e-10)
    assert ours.nk[-1] == 0.0


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_separated_components_skip_exact_zeros(shape, covariance_type):
    # far-apart components: most responsibilities are exact zeros (below the exp cut-off),
    # which the kernels skip; sorted rows make whole tiles belong to one component
    rng = np.random.default_rng(9)
    n, d, K = shape
    params = _params(rng, K, d, covariance_type)
    params = MixtureParams.from_covariances(
        params.weights, params.means * 40, params.covariances, params.model
    )
    z = np.sort(rng.integers(0, K, n))
    X = params.means[z] + rng.normal(size=(n, d))
    X[::97] = params.means.mean(axis=0)  # a few rows shared between components
    for Xd in (X, X[rng.permutation(n)]):
        ref = NumpyExecutor(Xd).e_step(params)
        _assert_stats_close(CpuExecutor(Xd).e_step(params), ref, 1e-10)


def _exp_and_log(t, x, cut, e, lg):
    # compiled in the test below (numba resolves the kernels' overloads only when compiled)
    for i in range(t.shape[0]):
        e[i] = _cpu_kernels.exp_nonpos(t[i], cut)
    for i in range(x.shape[0]):
        lg[i] = _cpu_kernels.log_ge1(x[i])


def test_polynomial_exp_and_log_match_numpy():
    # the kernels' own exp (t <= 0, exact zero below the cut) and log (x >= 1) vectorise
    # where libm calls would not; they must stay at a few ulp of numpy's
    import numba

    both = numba.njit(_exp_and_log)
    rng = np.random.default_rng(22)
    for dtype, cut, rtol in ((np.float64, -600.0, 1e-13), (np.float32, -70.0, 1e-6)):
        t = np.concatenate([-rng.random(4000) * 700, -rng.random(4000), [0.0, -1e-30]])
        t = t.astype(dtype)
        x = np.concatenate([1 + rng.random(4000) * 200, [1.0, 2.0, np.sqrt(2.0), 1 + 1e-7]])
        x = x.astype(dtype)
        e, lg = np.empty_like(t), np.empty(x.size)
        both(t, x, dtype(cut), e, lg)
        ref = np.exp(t.astype(np.float64))
        kept = t >= cut
        assert np.all(e[~kept] == 0.0)
        np.testing.assert_allclose(e[kept], ref[kept], rtol=rtol, atol=0)
        assert e[-2] == 1.0
        np.testing.assert_allclose(lg, np.log(x.astype(np.float64)), rtol=0, atol=4e-15)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 40),
    dtypes=st.sampled_from(
        [(np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64)]
    ),
    data=st.data(),
)
def test_tiles_are_the_rows_transposed(n, d, dtypes, data):
    # the kernels read rows through transpose_rows (blocks of 8 x 8 transposed in registers
    # for d >= 8, element by element at the edges; float32 rows widened for the register
    # tiles of _quad_kernel): every value, NaN and infinities included, must arrive bit for
    # bit, and nothing outside the tile may be written
    t0 = data.draw(st.integers(0, n - 1))
    m = data.draw(st.integers(1, n - t0))
    rng = np.random.default_rng(n * 41 + d)
    X = rng.normal(size=(n, d)).astype(dtypes[0])
    X.flat[rng.integers(0, X.size, 3)] = [np.nan, np.inf, -np.inf]
    xt = np.full((d + 1, m + 5), 7.0, dtype=dtypes[1])
    _vecmath.transpose_rows(X, t0, m, xt)
    want = np.ascontiguousarray(X[t0 : t0 + m].T.astype(dtypes[1]))
    assert xt[:d, :m].copy().tobytes() == want.tobytes()
    assert np.all(xt[:, m:] == 7.0) and np.all(xt[d] == 7.0)


@settings(max_examples=40, deadline=None)
@given(
    K=st.integers(1, 40),
    m=st.integers(1, 40),
    t0=st.integers(0, 5),
    dtypes=st.sampled_from(
        [(np.float32, np.float32), (np.float64, np.float64), (np.float64, np.float32)]
    ),
)
def test_tiles_are_written_back_transposed(K, m, t0, dtypes):
    # the reverse of the tile load, for the (N, K) outputs of the row functions and of the
    # register tiles (float64 sums into float32 rows' outputs, rounded as an assignment
    # rounds): the tile's rows of out and nothing else
    lj = np.random.default_rng(K * 41 + m).normal(size=(K + 2, m + 3)).astype(dtypes[0])
    out = np.full((t0 + m + 2, K + 1), 7.0, dtype=dtypes[1])
    _vecmath.transpose_block(lj, 0, 0, K, m, out, t0, 0)
    assert out[t0 : t0 + m, :K].tobytes() == lj[:K, :m].T.astype(dtypes[1]).tobytes()
    assert np.all(out[:t0] == 7.0) and np.all(out[t0 + m :] == 7.0) and np.all(out[:, K] == 7.0)


def test_chunk_size_sets_the_groups_and_keeps_the_result():
    rng = np.random.default_rng(4)
    params = _params(rng, 3, 2, "diag")
    X = _data(rng, 20000, params)
    ref = NumpyExecutor(X).e_step(params)
    for chunk_size in (4096, 7001, 20000, 10**6):
        _assert_stats_close(CpuExecutor(X, chunk_size=chunk_size).e_step(params), ref, 1e-12)


def test_small_inputs_run_the_reference_kernel():
    rng = np.random.default_rng(5)
    params = _params(rng, 3, 2, "full")
    X = _data(rng, MIN_ROWS - 1, params)
    ours = CpuExecutor(X).e_step(params)
    ref = e_step_chunk(X, None, params, params.means)
    np.testing.assert_array_equal(ours.sxx, ref.sxx)


def test_auto_engine_is_cpu_for_arrays():
    assert resolve_engine("auto", np.zeros((3, 2))) == "cpu"


def _sk_start(X, covariance_type, K, seed=0):
    sk = SkGaussianMixture(K, covariance_type=covariance_type, random_state=seed, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X)
    return {"weights_init": sk.weights_, "means_init": sk.means_, "precisions_init": sk.precisions_}


@pytest.mark.parametrize("covariance_type", TYPES)
def test_fit_matches_sklearn_and_the_numpy_engine(covariance_type):
    rng = np.random.default_rng(11)
    params = _params(rng, 4, 3, "full")
    X = _data(rng, 6000, params)
    start = _sk_start(X, covariance_type, 4)
    kw = dict(covariance_type=covariance_type, tol=0, max_iter=8, **start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkGaussianMixture(4, **kw).fit(X)
        ours = GaussianMixture(4, engine="cpu", **kw).fit(X)
        ref = GaussianMixture(4, engine="numpy", **kw).fit(X)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(sk, name), rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-9, err_msg=name)
    np.testing.assert_allclose(ours.lower_bounds_, sk.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(ours.score_samples(X), sk.score_samples(X), rtol=1e-9)
    np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=1e-9)


def test_float32_fit_is_close_to_float64():
    rng = np.random.default_rng(12)
    params = _params(rng, 4, 3, "full", offset=20.0)
    X = _data(rng, 20000, params)
    kw = dict(tol=0, max_iter=5, **_sk_start(X, "full", 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f64 = GaussianMixture(4, engine="cpu", **kw).fit(X)
        f32 = GaussianMixture(4, engine="cpu", **kw).fit(X.astype(np.float32))
    assert f32.means_.dtype == np.float32
    for name in ("weights_", "means_", "covariances_"):
        a, b = getattr(f32, name).astype(np.float64), getattr(f64, name)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * np.max(np.abs(b)), err_msg=name)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
# 14 features: the written-out 16-wide loops; 30: full and tied factors take the GEMM path
# (quadratic features in float64)
@pytest.mark.parametrize("n_features", [4, 14, 30])
def test_row_ops_equal_the_numpy_code(covariance_type, dtype, n_features):
    rng = np.random.default_rng(13)
    params = _params(rng, 5, n_features, covariance_type, zero_weight=True)
    X = _data(rng, 3 * MIN_ROWS, params).astype(dtype)
    X[:10] += 300.0  # posteriors far below the exp cut-off
    ops = ["log_joint", "score_samples", "predict_proba", "predict", "log_resp_max"]
    fast = {op: cpu_module.row_op(params, X, op) for op in ops}
    ref = {op: getattr(_mixture, op)(params, X) for op in ops}
    # float32 rounding grows with the terms summed per distance
    rtol = 1e-12 if dtype == np.float64 else 5e-6 * n_features
    for op in ops:
        assert np.asarray(fast[op]).dtype == np.asarray(ref[op]).dtype, op
    finite = np.isfinite(ref["log_joint"])
    np.testing.assert_array_equal(np.isfinite(fast["log_joint"]), finite)
    np.testing.assert_allclose(fast["log_joint"][finite], ref["log_joint"][finite], rtol=rtol)
    np.testing.assert_allclose(fast["score_samples"], ref["score_samples"], rtol=rtol)
    np.testing.assert_allclose(fast["predict_proba"], ref["predict_proba"], rtol=0, atol=rtol)
    np.testing.assert_array_equal(fast["predict"], ref["predict"])
    assert fast["log_resp_max"] == pytest.approx(ref["log_resp_max"], rel=rtol * 10)


def test_estimator_predictions_use_the_engine_it_was_given():
    rng = np.random.default_rng(15)
    X = np.concatenate([rng.normal(0, 1, (3000, 3)), rng.normal(4, 1, (3000, 3))])
    gm = GaussianMixture(2, random_state=0).fit(X)
    fast = (gm.predict_proba(X), gm.score_samples(X), gm.icl(X))
    gm.set_params(engine="numpy")
    ref = (gm.predict_proba(X), gm.score_samples(X), gm.icl(X))
    np.testing.assert_allclose(fast[0], ref[0], atol=1e-12)
    np.testing.assert_allclose(fast[1], ref[1], rtol=1e-12)
    assert fast[2] == pytest.approx(ref[2], rel=1e-10)


def test_row_ops_decline_what_numpy_does_better():
    assert _init._FAST_MIN_ROWS == MIN_ROWS
    rng = np.random.default_rng(14)
    small = _params(rng, 2, 3, "full")
    assert cpu_module.row_op(small, _data(rng, MIN_ROWS - 1, small), "predict") is None


def test_kmeans_fast_steps_equal_the_numpy_ones():
    fast = cpu_module.kmeans_kernels()
    rng = np.random.default_rng(15)
    params = _params(rng, 5, 3, "full")
    X = _data(rng, 20000, params)
    w = rng.random(len(X))
    centres = params.means + 0.3
    labels, dist, sums, counts = fast.assign_sums(X, w, centres)
    ref_labels, ref_dist = _init._assign(X, centres)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(counts, np.bincount(labels, weights=w, minlength=5), rtol=1e-12)
    np.testing.assert_allclose(sums[2], w[labels == 2] @ X[labels == 2], rtol=1e-12)
    for name in ("full", "diag"):
        ours = _init._from_labels(X, w, labels, 5, get_model(name), 1e-6, kernels=fast)
        ref = _init._from_labels(X, w, labels, 5, get_model(name), 1e-6)
        np.testing.assert_allclose(ours.means, ref.means, rtol=1e-12)
        np.testing.assert_allclose(ours.covariances, ref.covariances, rtol=1e-10)


def test_sampled_kmeans_keeps_weights_as_repeats_and_row_order():
    # above the sampling threshold the sample is keyed by row values, so a weighted row and
    # its copies are kept together, wherever they are
    rng = np.random.default_rng(16)
    n = _init._SAMPLE_ABOVE + 5000
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    X = centres[rng.integers(0, 3, n)] + rng.normal(size=(n, 2))
    w = rng.integers(0, 3, n)

    def run(X, w=None):
        return _init.kmeans(
            X,
            3,
            sample_weight=w,
            random_state=np.random.RandomState(0),
            kernels=cpu_module.kmeans_kernels(),
        )[1]

    weighted = run(X, w)
    repeated = run(np.repeat(X, w, axis=0))
    perm = rng.permutation(n)
    shuffled = run(X[perm], w[perm])
    order = np.argsort(weighted[:, 0] + 10 * weighted[:, 1])
    for other in (repeated, shuffled):
        other = other[np.argsort(other[:, 0] + 10 * other[:, 1])]
        np.testing.assert_allclose(other, weighted[order], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(weighted[order], centres[[0, 1, 2]], atol=0.05)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(X=np.zeros((5, 2, 2))), "2-D"),
        (dict(X=np.array([[0.0, np.inf]] * 5)), "infinity"),
        (dict(X=np.array([["a", "b"]])), "numeric"),
        (dict(sample_weight=np.ones(3)), "shape"),
        (dict(sample_weight=-np.ones(10)), "non-negative"),
        (dict(device="cuda"), "CPU only"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(n_threads=0), "n_threads"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    args = {"X": np.zeros((10, 2))} | kwargs
    X = args.pop("X")
    with pytest.raises((ValueError, TypeError), match=match):
        CpuExecutor(X, **args)


def test_mismatched_parameters_are_named():
    rng = np.random.default_rng(17)
    params = _params(rng, 2, 3, "diag")
    with pytest.raises(ValueError, match="features"):
        CpuExecutor(np.zeros((10, 2))).e_step(params)


@pytest.mark.slow
def test_benchmark_quick_mode_runs():
    # the smoke test of benchmarks/bench_cpu.py: runs both libraries and checks agreement
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cpu.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "W4" in out.stdout and "speedup" in out.stdout


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [MIN_ROWS - 1, 70_000])
def test_extremes_equal_numpy(dtype, n):
    # the one-pass check before predictions: min and max as numpy's, NaN anywhere seen
    rng = np.random.default_rng(23)
    X = (rng.normal(size=(n, 5)) * 1e3).astype(dtype)
    X[n // 3, 2] = -7e5
    X[-1, -1] = 9e5
    assert cpu_module.extremes(X) == (float(X.min()), float(X.max()))
    assert cpu_module.extremes(X, n_threads=1) == (float(X.min()), float(X.max()))
    for where in [(0, 0), (n // 2, 3), (n - 1, 4)]:
        Y = X.copy()
        Y[where] = np.nan
        lo, hi = cpu_module.extremes(Y)
        assert np.isnan(lo) and np.isnan(hi), where
    Y = X.copy()
    Y[5, 1] = -np.inf
    assert cpu_module.extremes(Y)[0] == -np.inf
    assert cpu_module.extremes(np.empty((0, 3))) == (0.0, 0.0)
    # a non-contiguous view takes numpy's path, with the same answer
    assert cpu_module.extremes(X[:, ::2]) == (float(X[:, ::2].min()), float(X[:, ::2].max()))


def _common_orientation_params(rng, name, K, d):
    """Parameters of model ``name`` from one M-step on soft responsibilities of random data."""
    from gaussmix._stats import SuffStats, accumulate, m_step

    model = get_model(name)
    X = rng.standard_normal((400, d)) @ rng.standard_normal((d, d)) + rng.normal(0, 3, d)
    r = rng.dirichlet(np.ones(K), size=X.shape[0])
    shift = np.zeros((K, d))
    nk, sx, sxx = accumulate(X, r, shift, model.moment)
    return m_step(SuffStats(shift, nk, sx, sxx, 0.0, float(len(X)), len(X)), model, 1e-6)


@pytest.mark.parametrize("name", ["VEE", "EVE", "VVE"])
@pytest.mark.parametrize("d", [5, 16, 30])  # the fused kernels, their general loops, BLAS
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_common_orientation_projects_once(name, d, dtype):
    """VEE/EVE/VVE run as one projection on D scaled per component: E-step statistics and
    row functions equal the numpy reference on the per-component Cholesky factors."""
    rng = np.random.default_rng(21)
    params = _common_orientation_params(rng, name, 4, d)
    prep = cpu_module.prepare(params, params.means, np.dtype(dtype))
    assert prep.tri == 4 and prep.prec.shape == (1, d, d)  # the shared layout is taken
    assert not np.allclose(prep.scale, prep.scale[:1])  # with per-component scales
    X = np.concatenate([_data(rng, 1500, params) for _ in range(4)]).astype(dtype)
    ex = CpuExecutor(X)
    assert ex.n_samples >= MIN_ROWS
    got = ex.e_step(params)
    ref = e_step_chunk(X.astype(np.float64), None, params, params.means)
    # the eigenvectors of ill-conditioned covariances (random correlated data) carry their
    # own rounding, as the Cholesky factors do: 1e-9, not the 1e-12 of identical arithmetic
    rtol = 1e-9 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(got.nk, ref.nk, rtol=rtol)
    np.testing.assert_allclose(got.sxx, ref.sxx, rtol=rtol, atol=rtol * np.abs(ref.sxx).max())
    assert got.log_likelihood == pytest.approx(ref.log_likelihood, rel=rtol)
    for op in ("score_samples", "predict_proba"):
        fast = cpu_module.row_op(params, X, op)
        slow = getattr(_mixture, op)(params, X.astype(np.float64))
        np.testing.assert_allclose(fast, slow, rtol=rtol, atol=rtol)


def test_rotated_factors_are_the_precisions():
    """``rotated_factors`` reproduces every precision matrix, and declines covariances
    without a common orientation (then the per-component factors are used)."""
    rng = np.random.default_rng(22)
    for name in ("VEE", "EVE", "VVE"):
        params = _common_orientation_params(rng, name, 3, 6)
        D, s = params.model.rotated_factors(params.covariances, 3, 6)
        np.testing.assert_allclose(D.T @ D, np.eye(6), atol=1e-13)
        prec = np.einsum("ij,kj,lj->kil", D, s**2, D)
        np.testing.assert_allclose(prec, params.precisions, rtol=1e-10, atol=1e-12)
    # exact common axes whose generic combination has close eigenvalues (relative gaps of
    # 1e-5, eigenvectors good to ~1e-11 alone): the refinement reaches rounding
    for seed in range(3):
        r = np.random.default_rng(seed)
        Q = np.linalg.qr(r.standard_normal((16, 16)))[0]
        cov = np.einsum("ij,kj,lj->kil", Q, r.uniform(0.5, 2.0, (16, 16)), Q)
        D, s = get_model("VVE").rotated_factors((cov + np.swapaxes(cov, 1, 2)) / 2, 16, 16)
        prec = np.einsum("ij,kj,lj->kil", D, s**2, D)
        np.testing.assert_allclose(prec @ cov, np.broadcast_to(np.eye(16), cov.shape), atol=1e-13)
    vvv = _common_orientation_params(rng, "VVV", 3, 6)
    assert get_model("VVE").rotated_factors(vvv.covariances, 3, 6) is None
    for name in ("VVV", "EEE", "tied", "full", "diag", "VEV"):
        model = get_model(name)
        cov = _common_orientation_params(rng, name, 3, 6).covariances
        assert model.rotated_factors(cov, 3, 6) is None


@pytest.mark.parametrize("d", [4, 30])  # the fused row kernels and the GEMM path
def test_threads_never_change_the_row_functions(d):
    rng = np.random.default_rng(23)
    params = _params(rng, 3, d, "full")
    X = _data(rng, 3 * MIN_ROWS, params)
    for op in ("score_samples", "predict_proba", "predict"):
        results = [cpu_module.row_op(params, X, op, n_threads=t) for t in (1, 2, 3)]
        for other in results[1:]:
            np.testing.assert_array_equal(other, results[0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d", [4, 30])  # the fused row kernels and the GEMM path
def test_row_ops_find_the_extremes_on_their_pass(dtype, d):
    # predictions check X's min and max from the row kernels' own pass: the same numbers as
    # a separate pass, NaN anywhere seen, and the result unchanged
    rng = np.random.default_rng(24)
    params = _params(rng, 3, d, "full")
    X = _data(rng, 3 * MIN_ROWS, params).astype(dtype)
    n = X.shape[0]
    X[n // 3, 1] = -7e3
    X[-1, -1] = 9e3
    for op in ("log_joint", "score_samples", "predict_proba", "predict", "log_resp_max"):
        result, lo, hi = cpu_module.row_op(params, X, op, with_extremes=True)
        assert (lo, hi) == (float(X.min()), float(X.max())), op
        np.testing.assert_array_equal(result, cpu_module.row_op(params, X, op))
    for where in [(0, 0), (n // 2, 2), (n - 1, d - 1)]:
        Y = X.copy()
        Y[where] = np.nan
        _, lo, hi = cpu_module.row_op(params, Y, "score_samples", with_extremes=True)
        assert np.isnan(lo) and np.isnan(hi), where


@pytest.mark.parametrize("d", [4, 30])
def test_predictions_with_missing_or_infinite_values_after_the_fused_checks(d):
    # the kernels run before the checks: a NaN row still takes the numpy maths (marginals),
    # an infinity is still refused, and neither leaves a half-computed answer behind
    rng = np.random.default_rng(25)
    params = _params(rng, 3, d, "full")
    X = _data(rng, 3 * MIN_ROWS, params)
    gm = GaussianMixture.from_parameters(params.weights, params.means, params.covariances, "full")
    X[7, 1] = np.nan
    for op in ("score_samples", "predict_proba", "predict"):
        fast = getattr(gm.set_params(engine="cpu"), op)(X)
        ref = getattr(gm.set_params(engine="numpy"), op)(X)
        np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)
    X[7, 1] = -np.inf
    gm.set_params(engine="cpu")
    for op in ("score_samples", "predict_proba", "predict", "score"):
        with pytest.raises(ValueError, match="infinity"):
            getattr(gm, op)(X)


@pytest.mark.parametrize("K", [8, 11, 17])  # whole blocks of eight components, and the rest
def test_posteriors_are_written_whole_for_many_components(K):
    rng = np.random.default_rng(26)
    params = _params(rng, K, 3, "diag")
    X = _data(rng, 2 * MIN_ROWS + 5, params)
    for dtype in (np.float64, np.float32):
        Xd = X.astype(dtype)
        fast = cpu_module.row_op(params, Xd, "predict_proba")
        ref = _mixture.predict_proba(params, Xd)
        atol = 1e-12 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(fast, ref, rtol=0, atol=atol)


def _child_e_step(X, params, queue):
    queue.put(CpuExecutor(X, n_threads=2).e_step(params).log_likelihood)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12+: fork with threads
def test_a_forked_child_runs_the_engine_after_its_parent():
    # the parent's worker threads do not exist in a forked child: the child's E-step waited
    # forever for them (multiprocessing's default start method on Linux)
    import multiprocessing

    rng = np.random.default_rng(27)
    params = _params(rng, 3, 4, "full")
    X = _data(rng, 2 * MIN_ROWS, params)
    parent = CpuExecutor(X, n_threads=2).e_step(params).log_likelihood  # the pool exists now
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_e_step, args=(X, params, queue))
    child.start()
    child.join(120)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child's E-step did not finish")
    assert child.exitcode == 0
    assert queue.get(timeout=10) == parent


def test_written_out_kernels_are_what_their_generator_writes():
    # _upper4/8/16_log_joint are the output of tools/gen_upper.py: an edit by hand would be
    # lost at the next run of the script
    path = Path(__file__).resolve().parents[2] / "tools" / "gen_upper.py"
    spec = importlib.util.spec_from_file_location("gen_upper", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.main(["--check"]) == 0
