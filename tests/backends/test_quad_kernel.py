"""The log-joint kernel that forms the quadratic features in registers (``_quad_kernel``)
against the BLAS form it replaces: features written out, times the weights."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaussmix.backends import _cpu_kernels, _quad_kernel
from gaussmix.backends._quad_kernel import COMPONENTS, ROWS, log_joint, tile_weights


def _blas_form(X, centre, W):
    m, d = X.shape
    F = np.empty((m, W.shape[0]))
    _cpu_kernels.quadratic_features(X, centre, F, np.empty(d))
    return F @ W


def _scratch(m, d, Wt):
    n = -(-m // ROWS) * ROWS
    return np.empty((d + 1, n)), np.empty((Wt.shape[0] * COMPONENTS, n))


# runs on any host: without AVX-512 LLVM splits the 8-wide vectors (slower, same result)
@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(0, 3 * ROWS + 1),
    d=st.integers(1, 40),
    K=st.integers(1, 2 * COMPONENTS + 1),
    seed=st.integers(0, 2**32 - 1),
)
def test_equals_the_features_times_the_weights(m, d, K, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d)) * 3 + rng.normal(size=d) * 10
    centre = rng.normal(size=d) * 10
    W = rng.normal(size=(d * (d + 1) // 2 + d + 1, K))
    Wt = tile_weights(W, d)
    assert Wt.shape == (-(-K // COMPONENTS), (d + 1) * (d + 2) // 2, COMPONENTS)
    L = np.full((m, K), np.nan)
    log_joint(X, centre, Wt, *_scratch(m, d, Wt), L)
    ref = _blas_form(X, centre, W)
    scale = np.abs(_blas_form(np.abs(X - centre) + centre, centre, np.abs(W))) + 1e-300
    # against the sum of absolute terms: both forms round each of them once or twice
    assert np.all(np.abs(L - ref) <= 1e-13 * scale)


def test_scratch_wider_than_the_rows_and_the_last_chunk():
    # the engine sizes scratch for its chunk and passes shorter last chunks: padding columns
    # left over from a longer chunk must not reach the result
    rng = np.random.default_rng(3)
    d, K = 30, 5
    W = rng.normal(size=(d * (d + 1) // 2 + d + 1, K))
    Wt = tile_weights(W, d)
    xt, lt = _scratch(200, d, Wt)
    xt[:] = np.nan
    centre = np.zeros(d)
    for m in (200, 37, 1):
        X = rng.normal(size=(m, d))
        L = np.empty((m, K))
        log_joint(X, centre, Wt, xt, lt, L)
        np.testing.assert_allclose(L, _blas_form(X, centre, W), rtol=1e-12, atol=1e-12)


def test_nan_rows_stay_in_their_rows():
    # predictions on unchecked rows (with_extremes) may meet NaN: only that row is NaN
    rng = np.random.default_rng(4)
    d, K = 26, 9
    W = rng.normal(size=(d * (d + 1) // 2 + d + 1, K))
    Wt = tile_weights(W, d)
    X = rng.normal(size=(50, d))
    X[7, 3] = np.nan
    L = np.empty((50, K))
    log_joint(X, np.zeros(d), Wt, *_scratch(50, d, Wt), L)
    assert np.isnan(L[7]).all()
    assert np.isfinite(np.delete(L, 7, axis=0)).all()


def test_mismatched_arrays_are_refused():
    rng = np.random.default_rng(5)
    d, K, m = 30, 5, 40
    W = rng.normal(size=(d * (d + 1) // 2 + d + 1, K))
    with pytest.raises(ValueError, match="not the 496 of d = 30"):
        tile_weights(W[:-1], d)
    Wt = tile_weights(W, d)
    X, L = rng.normal(size=(m, d)), np.empty((m, K))
    xt, lt = _scratch(m, d, Wt)
    n = xt.shape[1]
    cases = [
        (X, np.zeros(d), Wt, np.empty((d, n)), lt, L),  # xt without the row of ones
        (X, np.zeros(d), Wt, np.empty((d + 1, ROWS)), lt, L),  # too few columns for the rows
        (X, np.zeros(d), tile_weights(W[: 29 * 30 // 2 + 30], 29), xt, lt, L),
        (X, np.zeros(d), Wt, xt, np.empty((COMPONENTS, ROWS)), L),
        (X, np.zeros(d), Wt, xt, lt, np.empty((m, COMPONENTS + 1))),
        (X, np.zeros(d + 1), Wt, xt, lt, L),
    ]
    for args in cases:
        with pytest.raises(ValueError):
            log_joint(*args)


@pytest.mark.skipif(not _quad_kernel.available(), reason="numba's target lacks AVX-512")
def test_the_tile_keeps_its_sums_in_zmm_registers():
    # where the executor uses the kernel: 512-bit FMAs, and the sums kept in registers. A
    # spilled tile moves zmm registers to and from the stack: 9 such moves in the whole
    # function as it stands (set-up, outside the pair loop), 39 with 32 sums, 91 with 40
    rng = np.random.default_rng(6)
    d, K, m = 30, 8, 48
    W = tile_weights(rng.normal(size=(d * (d + 1) // 2 + d + 1, K)), d)
    # compiled afresh: numba shows no assembly of code loaded from its cache
    fresh = numba.njit(nogil=True)(log_joint.py_func)
    fresh(rng.normal(size=(m, d)), np.zeros(d), W, *_scratch(m, d, W), np.empty((m, K)))
    asm = "\n".join(fresh.inspect_asm().values())
    lines = [line for line in asm.splitlines() if "zmm" in line]
    assert len([line for line in lines if "vfmadd" in line]) >= 24
    assert len([line for line in lines if "rsp" in line]) < 24
