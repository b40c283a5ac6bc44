"""The torch executor: equal to the numpy reference on the CPU, tensors in and out, clear errors.

CUDA-only tests run when a GPU is visible and are skipped otherwise.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gaussmix import CollapsedComponentError, GaussianMixture  # noqa: E402
from gaussmix._covariance import get_model  # noqa: E402
from gaussmix._params import MixtureParams  # noqa: E402
from gaussmix._stats import e_step_chunk  # noqa: E402
from gaussmix.backends.torch import TorchExecutor  # noqa: E402

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]
INITS = ["kmeans", "k-means++", "random", "random_from_data"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
FITTED = ["weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # torch's OpenMP pool and OpenBLAS spin against each other on a 2-core runner; the
    # results do not depend on it
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _blobs(n=240, d=3, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * d, [5.0] * d, [-4.0] + [2.0] * (d - 1)])
    scales = np.array([1.0, 2.0, 0.5])
    labels = rng.integers(0, 3, n)
    X = centres[labels] + rng.normal(size=(n, d)) * scales[labels, None] + offset
    return X, rng.uniform(0.0, 2.0, n)


def _assert_same_fit(a, b, tol):
    for name in FITTED:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=tol, atol=tol)
    assert a.n_iter_ == b.n_iter_
    assert a.converged_ == b.converged_
    assert abs(a.lower_bound_ - b.lower_bound_) <= tol * max(1.0, abs(b.lower_bound_))


def _random_params(covariance_type, K, d, rng):
    if covariance_type == "full":
        A = rng.normal(size=(K, d, d))
        cov = A @ A.transpose(0, 2, 1) / d + np.eye(d)
    elif covariance_type == "tied":
        A = rng.normal(size=(d, d))
        cov = A @ A.T / d + np.eye(d)
    elif covariance_type == "diag":
        cov = rng.uniform(0.5, 2.0, (K, d))
    else:
        cov = rng.uniform(0.5, 2.0, K)
    weights = rng.uniform(0.5, 1.0, K)
    return MixtureParams.from_covariances(
        weights / weights.sum(), rng.normal(0, 3, (K, d)), cov, get_model(covariance_type)
    )


# ------------------------------------------------------------------ equal to the numpy engine
@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_cpu_fit_equals_numpy_engine(covariance_type, init):
    X, w = _blobs()
    kw = dict(
        n_components=3,
        covariance_type=covariance_type,
        init_params=init,
        random_state=7,
        n_init=2,
        max_iter=30,
    )
    ref = GaussianMixture(engine="numpy", **kw).fit(X, sample_weight=w)
    got = GaussianMixture(device="cpu", **kw).fit(X, sample_weight=w)
    _assert_same_fit(got, ref, 1e-10)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_cpu_fit_without_weights_and_warm_start_equal_numpy(covariance_type):
    X, _ = _blobs(seed=3)
    kw = dict(n_components=3, covariance_type=covariance_type, random_state=0, max_iter=3, tol=0.0)
    ref = GaussianMixture(engine="numpy", warm_start=True, **kw).fit(X)
    got = GaussianMixture(device="cpu", warm_start=True, **kw).fit(X)
    _assert_same_fit(got, ref, 1e-10)
    # the second fit starts where the first stopped, on both engines
    ref.fit(X)
    got.fit(X)
    assert got.n_iter_ == 3
    _assert_same_fit(got, ref, 1e-10)


def test_torch_tensor_input_uses_torch_engine_and_equals_numpy():
    X, w = _blobs(seed=5)
    kw = dict(n_components=3, random_state=2, max_iter=40)
    ref = GaussianMixture(engine="numpy", **kw).fit(X, sample_weight=w)
    got = GaussianMixture(**kw).fit(torch.from_numpy(X), sample_weight=torch.from_numpy(w))
    _assert_same_fit(got, ref, 1e-10)
    assert got.n_features_in_ == 3
    assert isinstance(got.means_, np.ndarray)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_e_step_chunked_with_foreign_shift_equals_reference_kernel(covariance_type):
    rng = np.random.default_rng(11)
    X = rng.normal(0, 3, (301, 4))
    w = rng.uniform(0, 2, 301)
    params = _random_params(covariance_type, 5, 4, rng)
    shift = params.means + rng.normal(size=params.means.shape)
    ref = e_step_chunk(X, w, params, shift)
    for chunk_size in (None, 1, 64):
        got = TorchExecutor(X, w, chunk_size=chunk_size).e_step(params, shift=shift)
        for field in ("nk", "sx", "sxx"):
            np.testing.assert_allclose(getattr(got, field), getattr(ref, field), rtol=1e-12)
        assert got.log_likelihood == pytest.approx(ref.log_likelihood, rel=1e-13)
        assert got.weight_sum == pytest.approx(w.sum(), rel=1e-15)
        assert got.n_samples == 301
        assert got.shift is shift or np.array_equal(got.shift, shift)


# ------------------------------------------------------------------ float32
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_far_from_origin_matches_float64(covariance_type):
    # data 1e4 away from the origin with unit spread: raw moments in float32 would lose
    # every digit of the variances; statistics around the shift keep them. The reference
    # fits the same float32-rounded data in float64, for the same number of iterations.
    X, _ = _blobs(n=600, seed=2, offset=1e4)
    X32 = X.astype(np.float32)
    kw = dict(n_components=3, covariance_type=covariance_type, random_state=0, max_iter=20)
    ref = GaussianMixture(engine="numpy", tol=0.0, **kw).fit(X32.astype(np.float64))
    got = GaussianMixture(device="cpu", tol=0.0, **kw).fit(X32)
    assert got.means_.dtype == np.float32
    assert got.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-5)
    assert got.lower_bounds_ == pytest.approx(ref.lower_bounds_, rel=1e-5)
    covariances = got.covariances_
    matrices = covariance_type in ("full", "tied")
    variances = np.diagonal(covariances, 0, -2, -1) if matrices else covariances
    assert np.all(np.isfinite(covariances)) and np.all(variances > 0)
    np.testing.assert_allclose(covariances, ref.covariances_, rtol=1e-3)


# ------------------------------------------------------------------ predictions
@pytest.mark.parametrize("op", ["log_joint", "score_samples", "predict_proba", "predict"])
def test_predictions_keep_the_kind_of_input(op):
    X, _ = _blobs(seed=4)
    ref = GaussianMixture(3, engine="numpy", random_state=0).fit(X)
    expected = getattr(ref, op)(X)
    gm = GaussianMixture(3, device="cpu", random_state=0).fit(X)
    from_numpy = getattr(gm, op)(X)
    assert isinstance(from_numpy, np.ndarray)
    assert from_numpy.dtype == expected.dtype and from_numpy.shape == expected.shape
    from_tensor = getattr(gm, op)(torch.from_numpy(X))
    assert isinstance(from_tensor, torch.Tensor) and from_tensor.device.type == "cpu"
    if op == "predict":
        np.testing.assert_array_equal(from_numpy, expected)
        np.testing.assert_array_equal(from_tensor.numpy(), expected)
    else:
        np.testing.assert_allclose(from_numpy, expected, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(from_tensor.numpy(), expected, rtol=1e-12, atol=1e-12)
    # a model fitted on the numpy engine also answers tensors with tensors
    assert isinstance(getattr(ref, op)(torch.from_numpy(X)), torch.Tensor)


def test_float32_tensor_predictions_and_score():
    X, _ = _blobs(seed=8)
    gm = GaussianMixture(3, random_state=0).fit(torch.from_numpy(X.astype(np.float32)))
    proba = gm.predict_proba(torch.from_numpy(X.astype(np.float32)))
    assert proba.dtype == torch.float32
    torch.testing.assert_close(proba.sum(1), torch.ones(len(X)), rtol=1e-5, atol=1e-5)
    assert gm.score_samples(torch.from_numpy(X)).dtype == torch.float64
    assert np.isfinite(gm.score(torch.from_numpy(X)))
    labels = gm.fit_predict(torch.from_numpy(X))
    assert isinstance(labels, torch.Tensor) and labels.shape == (len(X),)


# ------------------------------------------------------------------ initialisation data
def test_init_data_is_the_host_array_itself():
    X, w = _blobs()
    ex = TorchExecutor(X, w)
    X0, w0 = ex.init_data(None, np.random.RandomState(0))
    assert np.shares_memory(X0, X)
    np.testing.assert_array_equal(w0, w)
    X1, w1 = ex.init_data(50, np.random.RandomState(0))
    assert X1.shape == (50, 3) and w1.shape == (50,)
    # the sample is made of rows of X with their own weights
    rows = [int(np.flatnonzero((X == row).all(1))[0]) for row in X1]
    np.testing.assert_array_equal(w1, w[rows])


def test_dtype_follows_data_unless_given():
    X, _ = _blobs()
    assert TorchExecutor(X).dtype == np.float64
    assert TorchExecutor(X.astype(np.float32)).dtype == np.float32
    assert TorchExecutor(X.astype(np.int64)).dtype == np.float64
    assert TorchExecutor(X, dtype="float32").dtype == np.float32
    assert TorchExecutor(torch.from_numpy(X).float()).dtype == np.float32


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("X", "error", "match"),
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), ValueError, "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), ValueError, "infinity"),
        (np.zeros(5), ValueError, "2D"),
        (np.zeros((2, 2, 2)), ValueError, "2D"),
        (np.zeros((0, 3)), ValueError, "0 sample"),
        (np.array([["a", "b"]]), TypeError, "real numbers"),
        (torch.zeros((3, 2), dtype=torch.complex64), TypeError, "real numbers"),
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), ValueError, "NaN"),
        ("data.npy", TypeError, "engine='stream'"),
    ],
)
def test_bad_data_is_refused_clearly(X, error, match):
    with pytest.raises(error, match=match):
        TorchExecutor(X)


@pytest.mark.parametrize(
    ("w", "match"),
    [
        (np.ones(3), "shape"),
        (-np.ones(4), "non-negative"),
        (np.zeros(4), "sums to zero"),
        (np.array([1.0, np.nan, 1.0, 1.0]), "NaN"),
    ],
)
def test_bad_weights_are_refused_clearly(w, match):
    with pytest.raises(ValueError, match=match):
        TorchExecutor(np.ones((4, 2)), w)


def test_bad_options_are_refused_clearly():
    X = np.ones((4, 2))
    with pytest.raises(ValueError, match="torch device"):
        TorchExecutor(X, device="gpu0")
    with pytest.raises(ValueError, match="kernel must be one of"):
        TorchExecutor(X, kernel="cuda")
    with pytest.raises(ValueError, match="chunk_size"):
        TorchExecutor(X, chunk_size=0)
    with pytest.raises(ValueError, match="dtype"):
        TorchExecutor(X, dtype="float16")
    with pytest.raises(ValueError, match="features"):
        GaussianMixture(2, device="cpu").fit(X + np.arange(8).reshape(4, 2)).predict(
            torch.ones(3, 5)
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_gpu_says_what_to_do():
    with pytest.raises(ValueError, match="sees no CUDA GPU.*device='cpu'"):
        GaussianMixture(2, device="cuda").fit(np.random.default_rng(0).normal(size=(20, 2)))


def test_triton_kernel_without_cuda_or_interpreter_is_refused(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the Triton kernels would run")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        TorchExecutor(np.ones((4, 2), dtype=np.float32), kernel="triton")


def test_without_torch_the_gpu_engine_says_how_to_install_it():
    # a finder that refuses torch stands for an environment where it is not installed
    script = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import numpy as np\n"
        "from gaussmix import GaussianMixture\n"
        "try:\n"
        "    GaussianMixture(2, device='cuda').fit(np.random.default_rng(0).normal(size=(9, 2)))\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert "pip install 'gaussmix[gpu]'" in out.stdout


def test_collapsed_component_names_component_and_remedy():
    # three distinct points repeated, three components, no regularisation: a component
    # collapses onto a single point and the host M-step says which and what to do
    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, -1.0]]), 10, axis=0)
    gm = GaussianMixture(3, device="cpu", reg_covar=0.0, random_state=0)
    with pytest.raises(CollapsedComponentError, match=r"component \d.*reg_covar"):
        gm.fit(X)


# ------------------------------------------------------------------ CUDA only
@CUDA
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_cuda_fit_equals_cpu_in_float64(covariance_type):
    X, w = _blobs(n=2000, seed=1)
    kw = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    ref = GaussianMixture(engine="numpy", **kw).fit(X, sample_weight=w)
    got = GaussianMixture(device="cuda", **kw).fit(X, sample_weight=w)
    _assert_same_fit(got, ref, 1e-8)


@CUDA
def test_cuda_tensors_in_cuda_tensors_out():
    X, _ = _blobs(n=2000, seed=1)
    Xc = torch.from_numpy(X).cuda()
    gm = GaussianMixture(3, random_state=0).fit(Xc)
    assert isinstance(gm.means_, np.ndarray)
    for op in ("log_joint", "score_samples", "predict_proba", "predict"):
        out = getattr(gm, op)(Xc)
        assert isinstance(out, torch.Tensor) and out.device.type == "cuda"
    assert isinstance(gm.predict(X), np.ndarray)


@CUDA
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_cuda_streamed_host_data_equals_resident(covariance_type):
    rng = np.random.default_rng(0)
    X = rng.normal(0, 3, (50_001, 5)).astype(np.float32)
    w = rng.uniform(0, 2, len(X))
    params = _random_params(covariance_type, 4, 5, rng)
    resident = TorchExecutor(X, w, device="cuda", kernel="torch", resident=True)
    streamed = TorchExecutor(X, w, device="cuda", kernel="torch", resident=False, chunk_size=4096)
    assert streamed.streamed and not resident.streamed
    a, b = resident.e_step(params), streamed.e_step(params)
    for field in ("nk", "sx", "sxx"):
        np.testing.assert_allclose(getattr(b, field), getattr(a, field), rtol=1e-4, atol=1e-3)
    assert b.log_likelihood == pytest.approx(a.log_likelihood, rel=1e-5)


# ------------------------------------------------------------------ initialisation on the device
def test_device_kmeans_finds_the_partition_scikit_learn_finds():
    from sklearn.cluster import KMeans

    from gaussmix.backends import _torch_init

    X, _ = _blobs(n=3000, d=4, seed=3)
    Xt = torch.from_numpy(X)
    gen = torch.Generator().manual_seed(0)
    labels, centers, n_iter = _torch_init.kmeans(Xt, 3, generator=gen)
    assert 1 <= n_iter < 300 and centers.shape == (3, 4)
    ref = KMeans(3, n_init=10, random_state=0).fit(X)
    # the same partition up to the names of the clusters, hence the same inertia
    ours = _torch_init.inertia(Xt, labels, 3)
    assert ours == pytest.approx(ref.inertia_, rel=1e-9)
    pairs = set(zip(labels.tolist(), ref.labels_.tolist(), strict=True))
    assert len(pairs) == 3


def test_device_kmeans_plusplus_weights_and_float32():
    from gaussmix.backends import _torch_init

    X, _ = _blobs(n=600, d=3, seed=4)
    Xt = torch.from_numpy(X).float()
    # rows of weight zero are never chosen as centres
    w = torch.zeros(600)
    w[:200] = 1.0
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        centers, idx = _torch_init.kmeans_plusplus(Xt, 4, sample_weight=w, generator=gen)
        assert centers.dtype == torch.float32
        assert len(set(idx.tolist())) == 4 and int(idx.max()) < 200
        torch.testing.assert_close(centers, Xt[idx])
    # weighted Lloyd: equal to unweighted k-means on the rows repeated by their weights
    counts = torch.from_numpy(np.random.default_rng(0).integers(1, 3, 600))
    gen = torch.Generator().manual_seed(1)
    labels, centers, _ = _torch_init.kmeans(
        Xt.double(), 3, sample_weight=counts.double(), generator=gen
    )
    for k in range(3):
        rows = Xt.double()[labels == k]
        c = counts[labels == k].double()
        torch.testing.assert_close(centers[k], (c[:, None] * rows).sum(0) / c.sum())


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((torch.ones(5, 2), 6), {}, ValueError, "n_clusters"),
        ((torch.ones(5, 2), 0), {}, ValueError, "n_clusters"),
        ((torch.ones(5), 2), {}, ValueError, "2-D"),
        ((torch.ones(5, 2, dtype=torch.long), 2), {}, TypeError, "floating"),
        ((torch.ones(5, 2), 2), {"sample_weight": torch.ones(4)}, ValueError, "shape"),
        ((torch.ones(5, 2), 2), {"sample_weight": -torch.ones(5)}, ValueError, "non-negative"),
        ((torch.ones(5, 2), 2), {"max_iter": 0}, ValueError, "max_iter"),
    ],
)
def test_device_kmeans_refuses_bad_input(args, kwargs, error, match):
    from gaussmix.backends import _torch_init

    with pytest.raises(error, match=match):
        _torch_init.kmeans(*args, **kwargs)


@CUDA
def test_device_kmeans_on_cuda_equals_cpu_partition():
    from gaussmix.backends import _torch_init

    X, _ = _blobs(n=20_000, d=5, seed=5)
    Xt = torch.from_numpy(X).float()
    a, _, _ = _torch_init.kmeans(Xt.cuda(), 3, generator=torch.Generator("cuda").manual_seed(0))
    b, _, _ = _torch_init.kmeans(Xt, 3, generator=torch.Generator().manual_seed(0))
    ia, ib = _torch_init.inertia(Xt, a.cpu(), 3), _torch_init.inertia(Xt, b, 3)
    assert ia == pytest.approx(ib, rel=1e-6)


@pytest.mark.parametrize("model", ["VVV", "EEE", "VVI", "VII", "EII", "VEV", "EVE"])
def test_device_start_from_a_partition_equals_the_host_code(model):
    from gaussmix import _init
    from gaussmix.backends import _torch_init

    X, w = _blobs(n=900, d=3, seed=6)
    labels = np.random.default_rng(0).integers(0, 4, 900)
    m = get_model(model)
    host = _init._from_labels(X, w, labels, 4, m, 1e-6)
    stats = _torch_init.label_stats(
        torch.from_numpy(X), torch.from_numpy(w), torch.from_numpy(labels), 4, m.moment
    )
    from gaussmix._stats import m_step

    dev = m_step(stats, m, 1e-6)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(getattr(dev, name), getattr(host, name), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["kmeans", "k-means++"])
def test_executor_device_start_is_as_good_as_the_host_start(method):
    from gaussmix import _init
    from gaussmix.backends import _torch_init

    X, w = _blobs(n=3000, d=3, seed=7)
    model = get_model("full")
    ex = TorchExecutor(X, w, device="cpu")
    a = ex.device_initial_params(method, 3, model, 1e-6, np.random.RandomState(0), max_rows=2000)
    b = ex.device_initial_params(method, 3, model, 1e-6, np.random.RandomState(0), max_rows=2000)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))  # reproducible
    if method == "kmeans":
        # the three blobs, as the host k-means finds them: same log-likelihood of the start
        # on all rows, as the host code for this size
        a = ex.device_initial_params(method, 3, model, 1e-6, np.random.RandomState(0))
        host = _init.initial_params(method, X, w, 3, model, 1e-6, np.random.RandomState(0))
        got = ex.e_step(a).log_likelihood
        assert got == pytest.approx(ex.e_step(host).log_likelihood, rel=1e-6)
    else:
        # seeds: K distinct rows as means, reg_covar covariances
        assert len({tuple(m) for m in a.means}) == 3
        assert all(any(np.allclose(m, x) for x in X) for m in a.means)
        np.testing.assert_allclose(
            a.covariances, np.broadcast_to(1e-6 * np.eye(3), (3, 3, 3)), rtol=1e-7, atol=1e-12
        )
    with pytest.raises(ValueError, match="device initialisation"):
        _torch_init.initial_params("random", torch.from_numpy(X), None, 3, model, 1e-6,
                                   np.random.RandomState(0))


@CUDA
def test_cuda_device_start_is_as_good_as_the_host_start():
    from gaussmix import _init

    X, w = _blobs(n=30_000, d=4, seed=8)
    model = get_model("full")
    ex = TorchExecutor(X.astype(np.float32), w, device="cuda")
    dev = ex.device_initial_params("kmeans", 3, model, 1e-6, np.random.RandomState(0))
    host = _init.initial_params("kmeans", X, w, 3, model, 1e-6, np.random.RandomState(0))
    ref = TorchExecutor(X, w, device="cpu")
    assert ref.e_step(dev).log_likelihood == pytest.approx(
        ref.e_step(host).log_likelihood, rel=1e-4
    )
