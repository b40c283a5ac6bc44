"""fit_small (the whole EM loop of mclust's 14 models compiled) against run_em, and mclust.

The oracle is the reference driver: ``run_em`` over :class:`SmallExecutor` (the same E-step
kernel) and over :class:`NumpyExecutor` (the readable numpy E-step), with ``m_step`` and each
covariance model's M-step. From the same start, fit_small must give the same parameters (1e-10
relative; 1e-6 for EVE and VVE, whose MM loop stops at a 1e-15 relative change of a slowly
(linearly) converging objective: rounding-level differences of its input move its output by
1e-8 to 1e-7, measured here on iris at K = 4, even with the very same loop), the same
lower bounds and the same number of iterations, for every model, K in {1, 2, 4}, with and
without sample weights, for 10 iterations and to convergence. It must also reach R's mclust
from mclust's own starts (golden fixtures), report singular fits as run_em's errors, and run
fits in threads without holding the GIL.
"""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gaussmix._covariance import MCLUST_MODELS, CollapsedComponentError, get_model
from gaussmix._em import run_em
from gaussmix._init import _from_labels
from gaussmix._params import MixtureParams
from gaussmix._small import (
    NON_FINITE,
    OK,
    SmallExecutor,
    fit_small,
    start_from_labels,
)
from gaussmix._stats import SuffStats, accumulate, m_step
from gaussmix.backends.numpy import NumpyExecutor
from mclust_fixtures import em14_cases, load_dataset

REG = 1e-6
# the MM loop (EVE, VVE) amplifies rounding: see the module docstring
_SENSITIVE = {"EVE", "VVE"}


def _partition_start(X, K, name, sample_weight=None, reg_covar=REG):
    """The model's M-step on a deterministic hard partition (slices of a projection)."""
    n, d = X.shape
    proj = (X - X.mean(axis=0)) @ np.linspace(1.0, 0.3, d)
    labels = np.searchsorted(np.quantile(proj, np.arange(1, K) / K), proj)
    resp = np.eye(K)[labels]
    w = np.ones(n) if sample_weight is None else sample_weight
    model = get_model(name)
    shift = np.zeros((K, d))
    nk, sx, sxx = accumulate(X, resp * w[:, None], shift, model.moment)
    stats = SuffStats(shift, nk, sx, sxx, 0.0, float(w.sum()), n)
    return m_step(stats, model, reg_covar)


def _weights(n):
    return np.random.default_rng(7).uniform(0.2, 3.0, n)


def _fit(X, w, name, p0, **kw):
    return fit_small(X, w, name, p0.weights, p0.means, p0.covariances, **kw)


def _assert_same(fit, ref, name, rtol=None):
    rtol = rtol if rtol is not None else (1e-7 if name in _SENSITIVE else 1e-10)
    p = ref.params
    for got, want in (
        (fit.weights, p.weights),
        (fit.means, p.means),
        (fit.covariances, p.covariances),
    ):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    assert fit.n_iter == ref.n_iter
    assert fit.converged == ref.converged
    np.testing.assert_allclose(fit.lower_bounds, ref.lower_bounds, rtol=rtol, atol=rtol)
    assert fit.status == OK


@pytest.fixture(scope="module")
def faithful(mclust_data):
    return mclust_data("faithful")


@pytest.fixture(scope="module")
def iris(mclust_data):
    return mclust_data("iris")


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("name", MCLUST_MODELS)
def test_ten_iterations_equal_run_em(faithful, iris, name, K, weighted):
    for X in (faithful, iris):
        w = _weights(len(X)) if weighted else None
        p0 = _partition_start(X, K, name, w)
        ref = run_em(SmallExecutor(X, w), p0, reg_covar=REG, tol=-1.0, max_iter=10)
        fit = _fit(X, w, name, p0, reg_covar=REG, tol=-1.0, max_iter=10)
        assert fit.n_iter == 10 and not fit.converged
        _assert_same(fit, ref, name)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("K", [1, 2, 4])
@pytest.mark.parametrize("name", MCLUST_MODELS)
def test_to_convergence_equals_run_em(faithful, iris, name, K, weighted):
    # mclust's EM tolerance, as the selection grid runs it
    for X in (faithful, iris):
        w = _weights(len(X)) if weighted else None
        p0 = _partition_start(X, K, name, w)
        ref = run_em(SmallExecutor(X, w), p0, reg_covar=REG, tol=1e-5, max_iter=300)
        fit = _fit(X, w, name, p0, reg_covar=REG, tol=1e-5, max_iter=300)
        _assert_same(fit, ref, name)
        assert fit.converged or K == 4  # K = 4 on faithful may take its time


@pytest.mark.parametrize("name", MCLUST_MODELS)
def test_equals_run_em_over_the_numpy_reference(iris, name):
    """The readable numpy E-step (different arithmetic, same maths) as the oracle."""
    w = _weights(len(iris))
    p0 = _partition_start(iris, 3, name, w)
    ref = run_em(NumpyExecutor(iris, w), p0, reg_covar=REG, tol=1e-5, max_iter=40)
    fit = _fit(iris, w, name, p0, reg_covar=REG, tol=1e-5, max_iter=40)
    _assert_same(fit, ref, name, rtol=1e-5 if name in _SENSITIVE else 1e-9)


@pytest.mark.parametrize("name", ["VEI", "VEE", "EVE", "VVE", "VEV", "VVV", "EII"])
def test_cold_start_equals_run_em_with_model_given(iris, name):
    """warm_start=False: the first M-step starts its inner iterations cold, as run_em does
    from a start of another model (here the scikit-learn model of the same storage)."""
    model = get_model(name)
    p0 = _partition_start(iris, 3, name)
    other = "diag" if model.moment == "diag" else "full"
    start = MixtureParams.from_covariances(p0.weights, p0.means, p0.covariances, other)
    ref = run_em(SmallExecutor(iris), start, reg_covar=REG, tol=-1.0, max_iter=5, model=model)
    fit = _fit(iris, None, name, p0, reg_covar=REG, tol=-1.0, max_iter=5, warm_start=False)
    _assert_same(fit, ref, name)
    if model.iterative:  # and the warm start is a different computation
        warm = _fit(iris, None, name, p0, reg_covar=REG, tol=-1.0, max_iter=1)
        cold = _fit(iris, None, name, p0, reg_covar=REG, tol=-1.0, max_iter=1, warm_start=False)
        assert not np.array_equal(warm.covariances, cold.covariances)


def test_start_lower_bound_and_params(faithful):
    p0 = _partition_start(faithful, 2, "VVV")
    ref = run_em(SmallExecutor(faithful), p0, reg_covar=REG, tol=1e-3, max_iter=50,
                 start_lower_bound=-4.0)  # fmt: skip
    fit = _fit(faithful, None, "VVV", p0, reg_covar=REG, tol=1e-3, max_iter=50,
               start_lower_bound=-4.0)  # fmt: skip
    _assert_same(fit, ref, "VVV")
    params = fit.params("VVV")
    np.testing.assert_allclose(params.precisions_cholesky, ref.params.precisions_cholesky,
                               rtol=1e-10, atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(params.log_joint(faithful), ref.params.log_joint(faithful),
                               rtol=1e-10)  # fmt: skip


def test_inputs_are_not_modified(iris):
    p0 = _partition_start(iris, 3, "VEV")
    w, m, c = p0.weights.copy(), p0.means.copy(), p0.covariances.copy()
    _fit(iris, None, "VEV", p0, reg_covar=REG, tol=-1.0, max_iter=7)
    assert np.array_equal(w, p0.weights) and np.array_equal(m, p0.means)
    assert np.array_equal(c, p0.covariances)


def test_zero_iterations_returns_the_start(iris):
    p0 = _partition_start(iris, 2, "EEE")
    fit = _fit(iris, None, "EEE", p0, reg_covar=REG, tol=1e-5, max_iter=0)
    assert fit.n_iter == 0 and fit.lower_bounds.shape == (0,) and fit.status == OK
    np.testing.assert_array_equal(fit.covariances, p0.covariances)


def test_stale_cache_of_the_mm_loop_is_dropped(tmp_path, monkeypatch):
    """numba would keep the MM loop (and the inlined exp/log of the CPU kernels) compiled
    into this file's cache after _mm_kernel.py (_vecmath.py) changes: an index older than
    either is removed at import."""
    import gaussmix._mm_kernel as kernel
    import gaussmix._small as small
    from gaussmix import _vecmath

    index = tmp_path / "stale.nbi"
    index.write_bytes(b"x")
    fresh = tmp_path / "fresh.nbi"
    fresh.write_bytes(b"x")
    now = max(os.stat(m.__file__).st_mtime for m in (kernel, _vecmath))
    os.utime(index, (now - 10, now - 10))
    os.utime(fresh, (now + 10, now + 10))

    class Fake:  # the attributes numba's dispatchers have
        def __init__(self, path):
            self._cache = type("C", (), {"_cache_file": type("F", (), {"_index_path": path})})

    monkeypatch.setattr(small, "_fake_stale", Fake(str(index)), raising=False)
    monkeypatch.setattr(small, "_fake_fresh", Fake(str(fresh)), raising=False)
    small._drop_stale_cache()
    assert not index.exists() and fresh.exists()
    # the real dispatchers have these attributes: their indexes are where numba keeps them
    path = small._fit_full._cache._cache_file._index_path
    assert path.endswith(".nbi") and "_small._fit_full" in path


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("name", MCLUST_MODELS)
def test_start_from_labels_is_the_init_m_step(faithful, iris, name, weighted):
    """start_from_labels = gaussmix._init._from_labels (the grid's start from a partition),
    then fit_small from it = run_em from it."""
    for X in (faithful, iris):
        w = _weights(len(X)) if weighted else None
        for K in (1, 3):
            labels = np.random.default_rng(K).integers(0, K, len(X))
            ref = _from_labels(X, w, labels, K, get_model(name), REG)
            start = start_from_labels(X, w, labels, K, name, reg_covar=REG)
            assert start.status == OK and start.n_iter == 0
            rtol = 1e-6 if name in _SENSITIVE else 1e-10
            for got, want in ((start.weights, ref.weights), (start.means, ref.means),
                              (start.covariances, ref.covariances)):  # fmt: skip
                np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
            p0 = start.params(name)
            em = run_em(SmallExecutor(X, w), p0, reg_covar=REG, tol=1e-5, max_iter=30)
            _assert_same(_fit(X, w, name, p0, reg_covar=REG, tol=1e-5, max_iter=30), em, name)


def test_start_from_labels_reports_an_empty_component(iris):
    labels = np.zeros(len(iris), dtype=int)  # component 1 empty
    start = start_from_labels(iris, None, labels, 2, "VVV", reg_covar=0.0)
    assert start.status == 1
    with pytest.raises(CollapsedComponentError):
        _from_labels(iris, None, labels, 2, get_model("VVV"), 0.0)
    with pytest.raises(CollapsedComponentError):
        start.raise_for_status(0.0)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.full(150, 2), "labels must lie"),
        (np.full(150, -1), "labels must lie"),
        (np.zeros(149, dtype=int), "labels"),
        (np.zeros(150), "labels"),
    ],
)
def test_start_from_labels_bad_labels(iris, labels, match):
    with pytest.raises(ValueError, match=match):
        start_from_labels(iris, None, labels, 2, "VVV", reg_covar=REG)


# ------------------------------------------------------------------------- singular fits
def _collapsing_start(X, name):
    """Component 1 sits on row 0 with a tiny variance: it keeps that row alone, and with
    reg_covar = 0 its next covariance is singular."""
    model = get_model(name)
    d = X.shape[1]
    means = np.stack([X.mean(axis=0), X[0]])
    full = np.stack([np.cov(X.T), 1e-8 * np.eye(d)])
    cov = np.diagonal(full, axis1=1, axis2=2).copy() if model.moment == "diag" else full
    return MixtureParams.from_covariances(np.array([0.9, 0.1]), means, cov, model)


@pytest.mark.parametrize(
    "name",
    [
        "VVV", "VVI", "VII", "EVV", "EVI",
        # VEV's M-step warns (0/0 in its shape normalisation) on the way to the collapse
        pytest.param("VEV", marks=pytest.mark.filterwarnings("ignore::RuntimeWarning")),
    ],
)  # fmt: skip
def test_collapse_is_a_status_with_run_em_error(iris, name):
    p0 = _collapsing_start(iris, name)
    seen = []
    with pytest.raises(CollapsedComponentError) as err:
        run_em(SmallExecutor(iris), p0, reg_covar=0.0, tol=-1.0, max_iter=20,
               callback=lambda e: seen.append(e.lower_bound))  # fmt: skip
    fit = _fit(iris, None, name, p0, reg_covar=0.0, tol=-1.0, max_iter=20)
    assert fit.status == err.value.component
    assert fit.n_iter == len(seen)
    np.testing.assert_allclose(fit.lower_bounds, seen, rtol=1e-10)
    with pytest.raises(CollapsedComponentError) as mine:
        fit.raise_for_status(0.0)
    assert mine.value.component == fit.status and "reg_covar" in str(mine.value)
    with pytest.raises(CollapsedComponentError):
        fit.params(name)


def test_singular_start_is_a_status(iris):
    p0 = _partition_start(iris, 2, "VVV")
    cov = p0.covariances.copy()
    cov[1] = 0.0
    fit = fit_small(iris, None, "VVV", p0.weights, p0.means, cov, reg_covar=REG, tol=-1.0,
                    max_iter=5)  # fmt: skip
    assert fit.status == 1 and fit.n_iter == 0


def test_non_finite_log_likelihood_is_a_status(iris):
    p0 = _partition_start(iris, 2, "EEE")
    zero = MixtureParams.from_covariances(np.zeros(2), p0.means, p0.covariances, "EEE")
    with pytest.raises(FloatingPointError):
        run_em(SmallExecutor(iris), zero, reg_covar=REG, tol=-1.0, max_iter=5)
    fit = _fit(iris, None, "EEE", zero, reg_covar=REG, tol=-1.0, max_iter=5)
    assert fit.status == NON_FINITE and fit.n_iter == 0
    with pytest.raises(FloatingPointError, match="non-finite"):
        fit.raise_for_status()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model_name": "full"}, "model_name"),
        ({"model_name": None}, "model_name"),
        ({"weights": np.ones((2, 1))}, "weights"),
        ({"means": np.zeros((3, 4))}, "means"),
        ({"covariances": np.ones((2, 4))}, "covariances"),
        ({"sample_weight": np.ones(3)}, "sample_weight"),
        ({"max_iter": -1}, "max_iter"),
        ({"max_iter": 2.5}, "max_iter"),
        ({"reg_covar": -1.0}, "reg_covar"),
        ({"X": np.zeros(4)}, "X"),
    ],
)
def test_bad_input_is_one_clear_error(iris, change, match):
    p0 = _partition_start(iris, 2, "VVV")
    args = {"X": iris, "sample_weight": None, "model_name": "VVV", "weights": p0.weights,
            "means": p0.means, "covariances": p0.covariances, "max_iter": 3,
            "reg_covar": REG}  # fmt: skip
    args.update(change)
    with pytest.raises(ValueError, match=match):
        fit_small(args.pop("X"), args.pop("sample_weight"), args.pop("model_name"),
                  args.pop("weights"), args.pop("means"), args.pop("covariances"),
                  tol=1e-5, **args)  # fmt: skip


# ----------------------------------------------------------------------------- threads
def test_threads_give_the_serial_results(faithful, iris):
    jobs = [(X, name, K) for X in (faithful, iris) for name in ("VEV", "EVE", "VVI", "EEE")
            for K in (2, 3)]  # fmt: skip
    starts = [_partition_start(X, K, name) for X, name, K in jobs]

    def run(i):
        X, name, _ = jobs[i]
        return _fit(X, None, name, starts[i], reg_covar=REG, tol=1e-5, max_iter=200)

    serial = [run(i) for i in range(len(jobs))]
    # ten rounds: the log-likelihood's last bits once followed where the heap put the arrays
    # (a worker thread allocates from another arena), about one round in four differing
    for _ in range(10):
        with ThreadPoolExecutor(2) as pool:
            threaded = list(pool.map(run, range(len(jobs))))
        for a, b in zip(serial, threaded, strict=True):
            assert a.n_iter == b.n_iter
            np.testing.assert_array_equal(a.covariances, b.covariances)
            np.testing.assert_array_equal(a.lower_bounds, b.lower_bounds)


def test_the_gil_is_released_during_a_fit(iris):
    p0 = _partition_start(iris, 4, "VVV")
    fit_kw = {"reg_covar": REG, "tol": -1.0, "max_iter": 20}
    _fit(iris, None, "VVV", p0, **fit_kw)  # compiled or loaded from the cache
    t = time.perf_counter()
    _fit(iris, None, "VVV", p0, **{**fit_kw, "max_iter": 10000})
    duration = time.perf_counter() - t
    done = threading.Event()

    def work():
        _fit(iris, None, "VVV", p0, **{**fit_kw, "max_iter": 10000})
        done.set()

    worker = threading.Thread(target=work)
    last = time.perf_counter()
    gap = 0.0
    worker.start()
    while not done.is_set():
        now = time.perf_counter()
        gap = max(gap, now - last)
        last = now
    worker.join()
    # holding the GIL, the fit would stall this loop for its whole duration
    # (half of it: this shared machine may pause the loop for a while on its own)
    assert gap < duration / 2, (gap, duration)


# ------------------------------------------------------------------- mclust's golden values
_ONE_D = {"E": "EII", "V": "VII"}


def _mclust_cases():
    return [
        pytest.param(c, id=f"{c['dataset']}-{c['model']}-K{c['K']}-it{c['iterations']}")
        for c in em14_cases()
    ]


@pytest.mark.parametrize("case", _mclust_cases())
def test_reaches_mclust_from_its_start(case):
    if case["start"] is None or case["end"] is None:
        pytest.skip(f"mclust reports NA here: {case['messages']}")
    name = _ONE_D.get(case["model"], case["model"])
    model = get_model(name)
    X, _ = load_dataset(case["dataset"].split("[")[0])
    if case["dataset"].endswith("[, 1]"):
        X = X[:, :1]
    K, d = case["K"], X.shape[1]
    start, end = case["start"], case["end"]
    sigma = start["sigma"]
    if sigma is None or sigma.ndim == 1:  # 1-D: sigmasq
        sigma = np.broadcast_to(np.asarray(start["sigmasq"], float).reshape(-1, 1, 1), (K, 1, 1))
    cov = np.diagonal(sigma, axis1=1, axis2=2).copy() if model.moment == "diag" else sigma
    info = case.get("em_info") or {}
    its = info.get("iterations", info.get("niterout"))
    n_iter = case["iterations"] if its is None else abs(int(its))
    fit = fit_small(X, None, name, start["pro"], start["mean"], cov, reg_covar=0.0, tol=-1.0,
                    max_iter=n_iter)  # fmt: skip
    assert fit.status == OK and fit.n_iter == n_iter
    params = fit.params(name)
    logdens = np.log(np.exp(params.log_joint(X)).sum(axis=1))
    if name == "VVE":
        # gaussmix's VVE M-step maximises VVE's objective where mclust's minimises EVE's
        # (test_mclust_oracle): never below mclust's likelihood
        assert logdens.sum() >= case["loglik"] - 1e-8 * abs(case["loglik"])
        return
    rtol = 1e-5 if model.iterative else 1e-7
    np.testing.assert_allclose(fit.weights, end["pro"], rtol=rtol)
    scale = np.abs(X).max()
    np.testing.assert_allclose(fit.means, end["mean"], rtol=rtol, atol=rtol * 1e-3 * scale)
    full = np.stack([model.full_matrix(fit.covariances, k, d) for k in range(K)])
    ref = end["sigma"]
    if ref is None or ref.ndim != 3:
        ref = np.broadcast_to(np.asarray(end["sigmasq"], float).reshape(-1, 1, 1), (K, 1, 1))
    np.testing.assert_allclose(full, ref, rtol=rtol, atol=rtol * np.abs(ref).max())
    np.testing.assert_allclose(logdens, case["logdens"], rtol=rtol, atol=rtol)
    assert logdens.sum() == pytest.approx(case["loglik"], rel=rtol)


def test_every_path_reaches_each_kernel_with_one_signature(mclust_data):
    """numba compiles a function once per argument types, and a constant passed from
    compiled code is typed as a literal, a read-only array (a memory-mapped ``.npy`` file) as
    another type: the compiled grid's EM loop was compiled three times (a cold compile about
    a minute longer). Every way in, from writeable and read-only data, must reach each kernel
    of the grid with one signature (``.signatures`` lists what this process compiled or
    loaded, so kernels reached the same way by earlier tests count too)."""
    from numba.core.dispatcher import Dispatcher

    from gaussmix import _hc, _mm_kernel, _small
    from gaussmix._small import fit_cell

    X = mclust_data("faithful")
    read_only = X.copy()
    read_only.flags.writeable = False
    w = np.ones(X.shape[0])
    labels = (X[:, 0] > np.median(X[:, 0])).astype(np.intp)
    kw = {"reg_covar": REG, "tol": 1e-5, "max_iter": 3}
    for data in (X, read_only):
        for name in ("VII", "VVV", "VVE"):  # diagonal, full, and the MM loop
            start = start_from_labels(data, None, labels, 2, name, reg_covar=REG)
            p0 = (start.weights, start.means, start.covariances)
            fit_small(data, None, name, *p0, **kw)
            fit_cell(data, w, name, 2, labels=labels, rel_tol=0.0, **kw)
            fit_cell(data, w, name, 2, start=p0, rel_tol=0.0, **kw)
            params = _partition_start(data, 2, name)
            SmallExecutor(data).e_step(params)
        _hc.hc_tree(data)
    for module in (_small, _mm_kernel, _hc):
        for name, obj in vars(module).items():
            if isinstance(obj, Dispatcher):
                assert len(obj.signatures) <= 1, (module.__name__, name, obj.signatures)
