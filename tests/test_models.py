"""mclust's 14 covariance models: conformance of every executor, constraints, parameter counts.

The golden values from R's mclust itself are checked in ``test_mclust_oracle.py``.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from gaussmix import GaussianMixture
from gaussmix._covariance import (
    COVARIANCE_MODELS,
    MCLUST_MODELS,
    SKLEARN_EQUIVALENT,
    CollapsedComponentError,
    get_model,
)
from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats, e_step_chunk, m_step
from gaussmix.backends import make_executor
from gaussmix.backends.cpu import MIN_ROWS

ALL = sorted(COVARIANCE_MODELS)
RTOL = 1e-10


@pytest.fixture(scope="module")
def mixture_data():
    rng = np.random.RandomState(0)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 4.0, 0.0], [0.0, 5.0, 6.0]])
    # more rows than the cpu engine's MIN_ROWS: below, it runs the numpy reference itself
    n = 5000
    z = rng.randint(0, 3, n)
    A = rng.standard_normal((3, 3))
    X = centres[z] + rng.standard_normal((n, 3)) @ (0.5 * np.eye(3) + 0.3 * A)
    w = rng.randint(0, 4, n).astype(float)
    return X, w


def _params(X, model, K=3, seed=1):
    """Parameters of ``model`` from an M-step on random soft responsibilities."""
    rng = np.random.RandomState(seed)
    r = rng.dirichlet(np.ones(K), size=X.shape[0])
    shift = np.zeros((K, X.shape[1]))
    stats = SuffStats.zeros(shift, get_model(model).moment)
    from gaussmix._stats import accumulate

    nk, sx, sxx = accumulate(X, r, shift, get_model(model).moment)
    stats = SuffStats(shift, nk, sx, sxx, 0.0, float(X.shape[0]), X.shape[0])
    return m_step(stats, get_model(model), 1e-6)


def _executor(engine, X, w, tmp_path):
    if engine == "stream":
        path = tmp_path / "X.npy"
        np.save(path, X)
        return make_executor("stream", str(path), w, chunk_size=700)
    if engine == "dask":
        da = pytest.importorskip("dask.array")
        return make_executor("dask", da.from_array(X, chunks=(600, X.shape[1])), w)
    if engine == "torch":
        pytest.importorskip("torch")
        return make_executor("torch", X, w, device="cpu")
    if engine == "torch-cuda":
        # float64 rows: the torch kernel on the GPU, held to the same 1e-10 as on the CPU
        return make_executor("torch", X, w, device="cuda")
    return make_executor(engine, X, w)


def _cuda_visible() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


TORCH_CUDA = pytest.param(
    "torch-cuda", marks=pytest.mark.skipif(not _cuda_visible(), reason="needs a CUDA GPU")
)


def _close(a, b, rtol=RTOL):
    scale = max(1.0, float(np.max(np.abs(b))))
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("engine", ["numpy", "cpu", "stream", "dask", "torch", TORCH_CUDA])
def test_every_executor_runs_every_model(engine, mixture_data, tmp_path):
    """One E-step per model on each executor equals the numpy reference kernel (1e-10)."""
    X, w = mixture_data
    assert X.shape[0] >= MIN_ROWS  # the cpu engine's compiled kernels, not its fallback
    ex = _executor(engine, X, w, tmp_path)
    for name in ALL:
        params = _params(X, name)
        ref = e_step_chunk(X, w, params, params.means)
        got = ex.e_step(params)
        assert got.sxx.shape == ref.sxx.shape, name
        _close(got.nk, ref.nk)
        _close(got.sx, ref.sx)
        _close(got.sxx, ref.sxx)
        assert got.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-11), name


@pytest.mark.parametrize("engine", ["cpu", "torch", TORCH_CUDA])
def test_blas_width_every_full_moment_model(engine, tmp_path):
    """Wide data (the cpu engine's BLAS path) for the models with full moments."""
    rng = np.random.RandomState(3)
    X = rng.standard_normal((4500, 30)) + np.repeat(np.arange(3), 1500)[:, None]
    assert X.shape[0] >= MIN_ROWS
    ex = _executor(engine, X, None, tmp_path)
    vvv = _params(X, "VVV", seed=4)
    for name in ALL:
        model = get_model(name)
        if model.moment != "full":
            continue
        # the E-step does not look at the constraint: VVV's matrices in the model's storage
        cov = vvv.covariances
        if model.shared_factor:
            cov = cov[0] if model.shape(3, 30) == (30, 30) else np.broadcast_to(cov[0], cov.shape)
        params = MixtureParams.from_covariances(vvv.weights, vvv.means, cov, model)
        ref = e_step_chunk(X, None, params, params.means)
        got = ex.e_step(params)
        _close(got.sxx, ref.sxx)
        assert got.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-11), name


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_fits_agree_across_in_memory_engines(model, mixture_data):
    """Ten EM iterations from one start: cpu engine = numpy reference (iterative M-steps
    included: the M-step is shared, so any difference would come from the E-step)."""
    X, _ = mixture_data
    start = _params(X, "VVV")
    kw = dict(
        n_components=3,
        covariance_type=model,
        weights_init=start.weights,
        means_init=start.means,
        precisions_init=get_model("full").precisions(start.precisions_cholesky),
        max_iter=10,
        tol=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = GaussianMixture(engine="numpy", **kw).fit(X)
        b = GaussianMixture(engine="cpu", **kw).fit(X)
    _close(b.means_, a.means_, 1e-9)
    _close(b.covariances_, a.covariances_, 1e-9)
    # 1e-10: the common-orientation models (VEE, EVE, VVE) project on eigenvectors in the cpu
    # engine and on Cholesky factors in the reference, which round differently
    assert b.lower_bound_ == pytest.approx(a.lower_bound_, rel=1e-10)
    # from the second E-step on (the first ran the unconstrained start) EM never decreases
    assert np.all(np.diff(a.lower_bounds_[1:]) > -1e-10), "EM decreased the log-likelihood"


@pytest.mark.parametrize(("sk", "mc"), sorted(SKLEARN_EQUIVALENT.items()))
def test_sklearn_names_equal_their_mclust_model(sk, mc, mixture_data):
    X, w = mixture_data
    fits = {}
    for name in (sk, mc):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[name] = GaussianMixture(3, covariance_type=name, random_state=0, max_iter=20).fit(
                X, sample_weight=w
            )
    a, b = fits[sk], fits[mc]
    K, d = a.means_.shape
    A = np.stack([get_model(sk).full_matrix(a.covariances_, k, d) for k in range(K)])
    B = np.stack([get_model(mc).full_matrix(b.covariances_, k, d) for k in range(K)])
    np.testing.assert_allclose(B, A, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9, atol=1e-12)
    assert b.bic(X) == pytest.approx(a.bic(X), rel=1e-12)
    # the scikit-learn names keep their array shapes
    assert a.covariances_.shape == get_model(sk).shape(K, d)


def _constraint_holds(name, vol, shape, orient, atol=1e-7):
    v, s, o = name
    if v == "E":
        np.testing.assert_allclose(vol, vol[0], rtol=1e-9)
    if s == "E":
        np.testing.assert_allclose(shape, np.broadcast_to(shape[0], shape.shape), rtol=1e-7)
    if s == "I":
        np.testing.assert_allclose(shape, 1.0, rtol=1e-9)
    if o == "I":
        np.testing.assert_allclose(orient, np.broadcast_to(np.eye(orient.shape[1]), orient.shape))
    if o == "E":
        # one orientation up to column signs
        for k in range(1, len(orient)):
            np.testing.assert_allclose(np.abs(orient[k].T @ orient[0]), np.eye(orient.shape[1]),
                                       atol=atol)  # fmt: skip


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_constraint_and_decomposition(model, mixture_data):
    X, _ = mixture_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, covariance_type=model, random_state=0, max_iter=30).fit(X)
    vol, shape, orient = gm.volumes_, gm.shapes_, gm.orientations_
    K, d = gm.means_.shape
    assert vol.shape == (K,) and shape.shape == (K, d) and orient.shape == (K, d, d)
    np.testing.assert_allclose(np.prod(shape, axis=1), 1.0, rtol=1e-9)
    # the decomposition rebuilds the covariances
    cov = np.stack([get_model(model).full_matrix(gm.covariances_, k, d) for k in range(K)])
    rebuilt = np.einsum("k,kij,kj,klj->kil", vol, orient, shape, orient)
    np.testing.assert_allclose(rebuilt, cov, rtol=1e-8, atol=1e-12)
    _constraint_holds(model, vol, shape, orient)


# mclust's nMclustParams for the covariance part, written out per model (d features, K comps)
_COUNTS = {
    "EII": lambda K, d: 1,
    "VII": lambda K, d: K,
    "EEI": lambda K, d: d,
    "VEI": lambda K, d: K + d - 1,
    "EVI": lambda K, d: 1 + K * (d - 1),
    "VVI": lambda K, d: K * d,
    "EEE": lambda K, d: d * (d + 1) // 2,
    "VEE": lambda K, d: K + (d - 1) + d * (d - 1) // 2,
    "EVE": lambda K, d: 1 + K * (d - 1) + d * (d - 1) // 2,
    "VVE": lambda K, d: K * d + d * (d - 1) // 2,
    "EEV": lambda K, d: d + K * d * (d - 1) // 2,
    "VEV": lambda K, d: K + (d - 1) + K * d * (d - 1) // 2,
    "EVV": lambda K, d: 1 + K * (d * (d + 1) // 2 - 1),
    "VVV": lambda K, d: K * d * (d + 1) // 2,
}


@pytest.mark.parametrize("model", MCLUST_MODELS)
@pytest.mark.parametrize(("K", "d"), [(1, 1), (2, 3), (5, 4), (9, 6)])
def test_parameter_counts(model, K, d):
    assert get_model(model).n_parameters(K, d) == _COUNTS[model](K, d)


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_one_dimensional_data(model):
    """1-D data: every model reduces to mclust's E (equal variance) or V (variable)."""
    rng = np.random.RandomState(0)
    X = np.r_[rng.normal(0, 1, 300), rng.normal(6, 2, 300)][:, None]
    gm = GaussianMixture(2, covariance_type=model, random_state=0, tol=1e-8, max_iter=500).fit(X)
    var = np.array([get_model(model).full_matrix(gm.covariances_, k, 1)[0, 0] for k in range(2)])
    ref_type = "tied" if model[0] == "E" else "full"
    ref = GaussianMixture(2, covariance_type=ref_type, random_state=0, tol=1e-8, max_iter=500)
    ref.fit(X)
    ref_var = np.array([get_model(ref_type).full_matrix(ref.covariances_, k, 1)[0, 0]
                        for k in range(2)])  # fmt: skip
    order, ref_order = np.argsort(gm.means_[:, 0]), np.argsort(ref.means_[:, 0])
    np.testing.assert_allclose(var[order], ref_var[ref_order], rtol=1e-5)


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_collapsed_component_is_named(model):
    """A component on one point (no regularisation) is singular where its volume is its own;
    models with an equal volume borrow the other component's and stay finite."""
    rng = np.random.RandomState(0)
    X = np.r_[rng.standard_normal((200, 3)), [[50.0, 50.0, 50.0]]]
    resp = np.zeros((201, 2))
    resp[:200, 0] = 1
    resp[200:, 1] = 1
    from gaussmix._stats import accumulate

    shift = np.zeros((2, 3))
    nk, sx, sxx = accumulate(X, resp, shift, get_model(model).moment)
    stats = SuffStats(shift, nk, sx, sxx, 0.0, 201.0, 201)
    if model[0] == "E":
        try:
            assert np.all(np.isfinite(m_step(stats, get_model(model), 0.0).covariances))
        except CollapsedComponentError as exc:  # EVV: its own shape from a rank-1 scatter
            assert exc.component == 1
        return
    try:
        params = m_step(stats, get_model(model), 0.0)
    except CollapsedComponentError as exc:
        assert exc.component == 1
    else:
        # rounding left a positive variance: then it is a vanishing one (selection calls it NA)
        vol = get_model(model).decompose(params.covariances, 2, 3)[0]
        assert vol[1] < 1e-9 * vol[0]


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_full_precisions_init_for_any_model(model, mixture_data):
    """precisions_init as full (K, d, d) matrices: the first E-step uses them as given."""
    X, _ = mixture_data
    start = _params(X, "VVV")
    prec = get_model("full").precisions(start.precisions_cholesky)
    gm = GaussianMixture(
        3, covariance_type=model, weights_init=start.weights, means_init=start.means,
        precisions_init=prec, max_iter=1, tol=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    ref = e_step_chunk(X, None, start, start.means)
    assert gm.lower_bound_ == pytest.approx(ref.mean_log_likelihood, rel=1e-12)
    K, d = gm.means_.shape
    assert gm.covariances_.shape == get_model(model).shape(K, d)


def test_iterative_models_warm_start_matches_cold(mixture_data):
    """The warm start changes the inner iterations' starting point, not their answer."""
    X, _ = mixture_data
    for name in ("VEI", "VEE", "VEV", "EVE", "VVE"):
        model = get_model(name)
        params = _params(X, name)
        stats = e_step_chunk(X, None, params, params.means)
        cold = m_step(stats, model, 1e-6)
        warm = m_step(stats, model, 1e-6, params)
        np.testing.assert_allclose(warm.covariances, cold.covariances, rtol=2e-6, atol=1e-12)


def test_mixture_params_accept_every_model():
    for name in ALL:
        model = get_model(name)
        cov = np.ones(model.shape(2, 3)) if model.moment == "diag" else None
        if cov is None:
            cov = np.broadcast_to(np.eye(3), model.shape(2, 3)).copy()
        p = MixtureParams.from_covariances([0.5, 0.5], np.zeros((2, 3)), cov, name)
        assert p.log_joint(np.zeros((1, 3))).shape == (1, 2)


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_save_load_every_model(model, mixture_data, tmp_path):
    import gaussmix

    X, _ = mixture_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, covariance_type=model, random_state=0, max_iter=10).fit(X)
    gm.save(tmp_path / "m.gmm")
    back = gaussmix.load(tmp_path / "m.gmm")
    assert back.covariance_type == model
    np.testing.assert_array_equal(back.covariances_, gm.covariances_)
    np.testing.assert_allclose(back.score_samples(X), gm.score_samples(X), rtol=1e-13)
    np.testing.assert_allclose(back.shapes_, gm.shapes_, rtol=1e-12)


def test_cli_fits_and_describes_an_mclust_model(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from mclust_fixtures import DATA_DIR

    script = Path(sys.executable).with_name("gaussmix")
    data = DATA_DIR / "iris.csv"
    fit = subprocess.run(
        [str(script), "fit", str(data), "-k", "2", "--covariance-type", "VEV", "--tol", "1e-8",
         "-o", str(tmp_path / "iris.gmm"), "--json", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    info = subprocess.run([str(script), "info", str(tmp_path / "iris.gmm")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert "VEV" in info.stdout
    bad = subprocess.run([str(script), "fit", str(data), "-k", "2", "--covariance-type", "XYZ"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "VEV" in bad.stderr


# ------------------------------------------------------------------ EVE/VVE orientation kernel
def _orientation_objective(W, nk, D, variable_volume):
    """The profile objective the MM loop minimises over orthogonal D (shapes optimal for D)."""
    diag = np.einsum("ji,kjl,li->ki", D, W, D)
    if variable_volume:
        return float(np.sum(nk * np.sum(np.log(diag / nk[:, None]), axis=1)))
    return float(W.shape[1] * np.sum(np.exp(np.mean(np.log(diag), axis=1))))


def _random_orthogonal(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _start_shapes(W, nk, D, variable_volume):
    """_mm_orientation's start shapes for axes D: λ_k A_k (VVE) or determinant-one A_k (EVE)."""
    diag = np.einsum("ji,kjl,li->ki", D, W, D) / nk[:, None]
    if variable_volume:
        return diag
    return diag / np.exp(np.mean(np.log(diag), axis=1, keepdims=True))


def _common_axes_case(seed, K, d):
    """Scatters W_k = n_k D diag(a_k) Dᵀ sharing the axes D exactly: D is then the global
    minimiser of both objectives (Hadamard: Π diag(Dᵀ W_k D) >= det W_k, equal iff diagonal)."""
    rng = np.random.default_rng(seed)
    D = _random_orthogonal(rng, d)
    nk = rng.uniform(20.0, 200.0, K)
    a = rng.uniform(0.2, 5.0, (K, d))
    W = np.einsum("ij,kj,lj->kil", D, nk[:, None] * a, D)
    return W, nk, D, a


@pytest.mark.parametrize("variable_volume", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_mm_loop_reaches_the_common_axes(seed, variable_volume):
    """From a start 0.3 rad away, the loop (warm Jacobi polar factors, skipped rotation pairs)
    ends on the exact minimiser, its objective equal to the minimum's to rounding."""
    from scipy.linalg import expm

    from gaussmix._mm_kernel import mm_orientation_loop

    K, d = 3, 5
    W, nk, D_true, a = _common_axes_case(seed, K, d)
    rng = np.random.default_rng(100 + seed)
    S = rng.standard_normal((d, d))
    S = 0.3 * (S - S.T) / np.linalg.norm(S - S.T)
    D0 = np.ascontiguousarray(D_true @ expm(S))
    A0 = _start_shapes(W, nk, D0, variable_volume)
    # contiguous, as the library passes it (a strided view would compile the loop again)
    omega = np.ascontiguousarray(np.linalg.eigvalsh(W)[:, -1])
    D, A, _t, ok = mm_orientation_loop(W, nk, D0, A0, omega, variable_volume, 1e-15, 10_000)
    assert ok
    # the same axes up to column signs and order: |Dᵀ D_true| is a permutation matrix
    overlap = np.abs(D.T @ D_true)
    np.testing.assert_allclose(np.sort(overlap, axis=1)[:, -1], 1.0, atol=1e-9)
    np.testing.assert_allclose(np.sort(overlap, axis=1)[:, :-1], 0.0, atol=1e-5)
    np.testing.assert_allclose(D.T @ D, np.eye(d), atol=1e-13)
    best = _orientation_objective(W, nk, D_true, variable_volume)
    assert _orientation_objective(W, nk, D, variable_volume) == pytest.approx(best, rel=1e-13)
    # shapes in D's column order: λ_k A_k (VVE, the true variances) or A_k (EVE, determinant 1)
    expected = a[:, np.argmax(overlap, axis=1)]
    if not variable_volume:
        expected = expected / np.exp(np.mean(np.log(expected), axis=1, keepdims=True))
    np.testing.assert_allclose(A, expected, rtol=1e-9)


@pytest.mark.parametrize("variable_volume", [True, False])
def test_mm_sweep_skips_only_negligible_rotations(variable_volume):
    """At the minimiser turned by θ in one plane, a sweep undoes θ = 1e-3 (to rounding) and
    leaves θ = 1e-13 alone (its decrease, ~θ², is far below the objective's rounding)."""
    from gaussmix._mm_kernel import _jacobi_sweep

    W, nk, D_true, _ = _common_axes_case(7, 3, 4)
    for theta, moved in ((1e-3, True), (1e-13, False)):
        c, s = np.cos(theta), np.sin(theta)
        D = D_true.copy()
        D[:, 0], D[:, 1] = c * D_true[:, 0] + s * D_true[:, 1], c * D_true[:, 1] - s * D_true[:, 0]
        before = D.copy()
        _jacobi_sweep(W, D, nk, variable_volume)
        np.testing.assert_allclose(D, D_true, atol=1e-12)
        assert (not np.array_equal(D, before)) == moved


@pytest.mark.parametrize("variable_volume", [True, False])
def test_mm_loop_is_stationary_for_scipy(variable_volume):
    """On sample scatters (no exact common axes), BFGS over D·expm(S), S skew-symmetric, finds
    nothing lower than the loop's answer."""
    from scipy.linalg import expm
    from scipy.optimize import minimize

    from gaussmix._mm_kernel import mm_orientation_loop

    rng = np.random.default_rng(3)
    K, d = 3, 4
    D_true = _random_orthogonal(rng, d)
    nk = np.array([60.0, 150.0, 90.0])
    W = np.empty((K, d, d))
    for k in range(K):
        X = rng.standard_normal((int(nk[k]), d)) * rng.uniform(0.3, 3.0, d) @ D_true.T
        W[k] = X.T @ X
    D0 = np.eye(d)
    A0 = _start_shapes(W, nk, D0, variable_volume)
    # contiguous, as the library passes it (a strided view would compile the loop again)
    omega = np.ascontiguousarray(np.linalg.eigvalsh(W)[:, -1])
    D, _A, _t, ok = mm_orientation_loop(W, nk, D0, A0, omega, variable_volume, 1e-15, 10_000)
    assert ok
    iu = np.triu_indices(d, 1)

    def f(x):
        S = np.zeros((d, d))
        S[iu] = x
        return _orientation_objective(W, nk, D @ expm(S - S.T), variable_volume)

    ours = f(np.zeros(len(iu[0])))
    res = minimize(f, np.full(len(iu[0]), 1e-3), method="BFGS", options={"gtol": 1e-10})
    assert res.fun >= ours - 1e-11 * abs(ours)


def test_jacobi_polar_matches_svd():
    """Warm (a nearby matrix's right singular vectors) and cold starts give SVD's polar
    factor; a singular matrix is declined and left to the SVD fallback."""
    from gaussmix._mm_kernel import _jacobi_polar, _orthogonal_factor

    rng = np.random.default_rng(11)
    d = 16
    H, Q = np.empty((d, d)), np.empty((d, d))
    for trial in range(20):
        U, V = _random_orthogonal(rng, d), _random_orthogonal(rng, d)
        sigma = np.exp(rng.uniform(np.log(1e-4), 0.0, d))
        F = (U * sigma) @ V.T
        near = F + 1e-3 * rng.standard_normal((d, d))
        Vt = np.eye(d) if trial % 2 else np.ascontiguousarray(np.linalg.svd(near)[2])
        assert _jacobi_polar(F, Vt, H, Q)
        np.testing.assert_allclose(Q, U @ V.T, atol=1e-9)
        np.testing.assert_allclose(Q.T @ Q, np.eye(d), atol=1e-14)
        # Vt now holds F's right singular vectors: Vt FᵀF Vtᵀ is diagonal
        G = Vt @ F.T @ F @ Vt.T
        off = G - np.diag(np.diag(G))
        assert np.abs(off).max() <= 1e-12 * np.abs(G).max()
    F = rng.standard_normal((d, d))
    F[:, 3] = 0.0
    assert not _jacobi_polar(F, np.eye(d), H, Q)
    P, _s, Rt = np.linalg.svd(F)
    np.testing.assert_allclose(_orthogonal_factor(F, np.eye(d), H, Q, True), P @ Rt, atol=1e-12)


def test_mm_sweep_never_increases_the_objective():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from gaussmix._mm_kernel import _jacobi_sweep

    @settings(max_examples=40, deadline=None)
    @given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(2, 6), st.booleans())
    def check(seed, K, d, variable_volume):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((K, d + 3, d)) * rng.uniform(0.1, 10.0, (K, 1, d))
        W = np.einsum("kni,knj->kij", X, X)
        nk = rng.uniform(1.0, 50.0, K)
        D = _random_orthogonal(rng, d)
        before = _orientation_objective(W, nk, D, variable_volume)
        _jacobi_sweep(W, D, nk, variable_volume)
        after = _orientation_objective(W, nk, D, variable_volume)
        assert after <= before + 1e-12 * abs(before)
        np.testing.assert_allclose(D.T @ D, np.eye(d), atol=1e-13)

    check()


@pytest.mark.parametrize("d", [2, 7, 8, 40])
def test_full_precision_factors_both_ways(d):
    """Below 8 features one batched solve inverts the Cholesky factors, from 8 a triangular
    inverse per component (exactly upper triangular): both are Σ_k⁻¹ = P_k P_kᵀ, and a
    singular component is named either way."""
    rng = np.random.default_rng(d)
    A = rng.standard_normal((3, d, d + 2))
    cov = A @ np.swapaxes(A, 1, 2) / (d + 2) + 0.1 * np.eye(d)
    P = get_model("full").precision_cholesky(cov)
    np.testing.assert_allclose(P @ np.swapaxes(P, 1, 2), np.linalg.inv(cov), rtol=1e-9, atol=1e-9)
    if d >= 8:
        assert np.all(np.tril(P, -1) == 0.0)
    cov[1] = np.outer(cov[1, 0], cov[1, 0])  # rank one
    with pytest.raises(CollapsedComponentError) as info:
        get_model("full").precision_cholesky(cov, 0.0)
    assert info.value.component == 1
