"""Distributed EM on a real LocalCluster (2 worker processes): equal to the in-memory fit."""

import logging
import os
import signal
import threading
import time
import warnings

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from gaussmix import GaussianMixture
from gaussmix._covariance import get_model
from gaussmix._init import initial_params
from gaussmix.backends import stream
from gaussmix.backends.dask import DaskExecutor, _allocate

distributed = pytest.importorskip("distributed")

TYPES = ["full", "tied", "diag", "spherical"]
ATOL = 1e-10


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 4.0, 0.0], [0.0, 5.0, 6.0]])
    z = rng.randint(0, 3, 3000)
    A = rng.standard_normal((3, 3))
    X = centres[z] + rng.standard_normal((3000, 3)) @ (0.5 * np.eye(3) + 0.2 * A)
    w = rng.randint(0, 4, 3000).astype(float)
    return X, w


def _given_init(X, covariance_type, K=3):
    rng = np.random.RandomState(1)
    shape = get_model(covariance_type).shape(K, X.shape[1])
    if covariance_type == "full":
        prec = np.broadcast_to(np.eye(X.shape[1]), shape).copy()
    elif covariance_type == "tied":
        prec = np.eye(X.shape[1])
    else:
        prec = np.ones(shape)
    return {
        "weights_init": np.full(K, 1 / K),
        "means_init": X[rng.choice(len(X), K, replace=False)],
        "precisions_init": prec,
    }


def _fit(X, *, sample_weight=None, callback=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(**kw).fit(X, sample_weight=sample_weight, callback=callback)


def _assert_same_fit(a, b, atol=ATOL):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(a, name), getattr(b, name), rtol=0, atol=atol, err_msg=name
        )
    assert a.n_iter_ == b.n_iter_
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-12)


def test_allocation_gives_uniform_samples():
    # inclusion frequency of every row, over many draws, with uneven blocks
    counts, size, reps = [7, 30, 1, 50, 12], 20, 3000
    rng = np.random.RandomState(0)
    hits = np.zeros(sum(counts))
    starts = np.cumsum([0, *counts[:-1]])
    for _ in range(reps):
        sizes = _allocate(counts, size, rng)
        assert sum(sizes) == size and all(0 <= s <= c for s, c in zip(sizes, counts, strict=True))
        for start, c, s in zip(starts, counts, sizes, strict=True):
            hits[start + rng.choice(c, s, replace=False)] += 1
    p = size / sum(counts)
    chi2 = np.sum((hits - reps * p) ** 2 / (reps * p * (1 - p)))
    assert sps.chi2.sf(chi2, sum(counts) - 1) > 1e-4


def test_local_scheduler_without_a_cluster(data):
    # runs before the module's cluster starts: dask's threads, nothing persisted
    try:
        distributed.default_client()
    except ValueError:
        pass
    else:
        pytest.skip("a distributed client of another test module is still active")
    X, _ = data
    kw = dict(n_components=3, tol=0, max_iter=5, covariance_type="diag", **_given_init(X, "diag"))
    ex = DaskExecutor(da.from_array(X, chunks=1000))
    assert ex.client is None
    _assert_same_fit(_fit(da.from_array(X, chunks=1000), **kw), _fit(X, engine="numpy", **kw))


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("covariance_type", TYPES)
def test_equals_in_memory_with_given_init(client, data, covariance_type):
    X, _ = data
    kw = dict(
        n_components=3,
        covariance_type=covariance_type,
        tol=0,
        max_iter=12,
        **_given_init(X, covariance_type),
    )
    distributed_fit = _fit(da.from_array(X, chunks=(400, 3)), **kw)
    _assert_same_fit(distributed_fit, _fit(X, engine="numpy", **kw))
    assert distributed_fit.n_features_in_ == 3


def test_weights_array_dataframe_column_and_dask_weights(client, data):
    X, w = data
    kw = dict(n_components=3, tol=0, max_iter=10, **_given_init(X, "full"))
    in_memory = _fit(X, sample_weight=w, engine="numpy", **kw)
    Xd = da.from_array(X, chunks=(700, 2))  # column blocks are merged
    _assert_same_fit(_fit(Xd, sample_weight=w, **kw), in_memory)
    wd = da.from_array(w, chunks=1000)  # rechunked to X's blocks
    _assert_same_fit(_fit(Xd, sample_weight=wd, **kw), in_memory)
    df = dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]).assign(w=w), npartitions=4)
    _assert_same_fit(_fit(df, sample_weight="w", **kw), in_memory)


def test_default_kmeans_init_small_data_equals_in_memory(client, data):
    X, _ = data
    kw = dict(n_components=3, random_state=5, tol=1e-9, max_iter=200)
    _assert_same_fit(_fit(da.from_array(X, chunks=500), **kw), _fit(X, engine="numpy", **kw))


def test_init_on_a_distributed_sample(client, data, monkeypatch):
    X, w = data
    monkeypatch.setattr(stream, "DEFAULT_INIT_ROWS", 10)  # floor: 1000 of 3000 rows
    Xd, wd = da.from_array(X, chunks=(450, 3)), da.from_array(w, chunks=450)
    kw = dict(n_components=3, covariance_type="diag", tol=1e-9, max_iter=100)
    distributed_fit = _fit(Xd, sample_weight=wd, random_state=3, **kw)

    rng = check_random_state(3)
    X0, w0 = DaskExecutor(Xd, wd).init_data(None, rng)
    assert X0.shape == (1000, 3)
    rows = [int(np.flatnonzero((X == x).all(axis=1))[0]) for x in X0]
    assert rows == sorted(set(rows)), "sample rows are distinct and in row order"
    np.testing.assert_array_equal(w0, w[rows])
    start = initial_params("kmeans", X0, w0, 3, get_model("diag"), 1e-6, rng)
    in_memory = _fit(
        X,
        sample_weight=w,
        engine="numpy",
        weights_init=start.weights,
        means_init=start.means,
        precisions_init=start.precisions,
        **kw,
    )
    _assert_same_fit(distributed_fit, in_memory)


def test_predictions_are_lazy_dask_arrays(client, data):
    X, _ = data
    gm = _fit(X, n_components=3, random_state=0)
    Xd = da.from_array(X, chunks=(800, 3))
    df = dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]), npartitions=3)
    for op in ("predict", "predict_proba", "score_samples", "log_joint"):
        for source in (Xd, df):
            out = getattr(gm, op)(source)
            assert isinstance(out, da.Array), op
            np.testing.assert_allclose(
                out.compute(), getattr(gm, op)(X), rtol=1e-12, atol=1e-12, err_msg=op
            )
    assert gm.predict(Xd).numblocks == (4,)
    with pytest.raises(ValueError, match="2 features, but GaussianMixture is expecting 3"):
        gm.predict(Xd[:, :2])
    bad = df.assign(b=df.b / (df.a > 100))  # inf in every row
    where = r"(row block \d|the block of rows \d+-\d+)"  # DataFrame lengths may be unknown
    with pytest.raises(ValueError, match=f"infinity in {where}"):
        gm.predict(bad).compute()


def test_scheduler_address(cluster, client, data):
    # an address opens (and keeps) a client of its own on that scheduler
    X, _ = data
    Xd = da.from_array(X, chunks=1000)
    params = _fit(X, n_components=2, random_state=0)._fitted_params()
    by_address = DaskExecutor(Xd, scheduler=cluster.scheduler_address)
    assert by_address.client is not client
    assert by_address.client.scheduler.address == cluster.scheduler_address
    try:
        a, b = by_address.e_step(params), DaskExecutor(Xd).e_step(params)
        np.testing.assert_array_equal(a.sxx, b.sxx)
        assert a.n_samples == 3000
    finally:
        by_address.client.close()


def test_errors(client, data):
    X, w = data
    bad = X.copy()
    bad[1234, 2] = np.inf
    with pytest.raises(
        ValueError,
        match=r"contains infinity in the block of rows 1000-1499 "
        r"\(first at row 1234\)",
    ):
        GaussianMixture(2, **_given_init(X, "full", K=2)).fit(da.from_array(bad, chunks=500))
    with pytest.raises(ValueError, match="Expected 2D array"):
        GaussianMixture(1, engine="dask").fit(da.zeros(10))
    with pytest.raises(TypeError, match="non-numeric columns: s"):
        df = pd.DataFrame({"a": [1.0, 2.0], "s": ["x", "y"]})
        GaussianMixture(1).fit(dd.from_pandas(df, npartitions=1))
    with pytest.raises(ValueError, match=r"shape \(3000,\)"):
        DaskExecutor(da.from_array(X), np.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        DaskExecutor(da.from_array(X), -w)
    with pytest.raises(ValueError, match="names a column"):
        DaskExecutor(da.from_array(X), "w")
    with pytest.raises(TypeError, match="dask.array.Array, dask.dataframe.DataFrame or 2-D"):
        DaskExecutor(X.tolist())
    # an in-memory array is read in blocks: the same statistics as the Dask array
    params = initial_params("kmeans", X, None, 2, get_model("full"), 1e-6,
                            check_random_state(0))  # fmt: skip
    a = DaskExecutor(X).e_step(params)
    b = DaskExecutor(da.from_array(X, chunks=(137, -1))).e_step(params)
    np.testing.assert_allclose(a.sxx, b.sxx, rtol=1e-12)
    with pytest.raises(ValueError, match="workers' CPUs"):
        DaskExecutor(da.from_array(X), device="cuda")


@pytest.mark.slow
def test_worker_killed_mid_fit_gives_the_undisturbed_fit(client, data):
    X, _ = data
    # bigger blocks so that an E-step is long enough to be interrupted
    Xd = da.from_array(np.tile(X, (20, 1)), chunks=(6000, 3))
    kw = dict(n_components=3, tol=0, max_iter=6, **_given_init(X, "full"))
    undisturbed = _fit(Xd, **kw)
    pids = client.run(os.getpid)
    victim, victim_pid = sorted(pids.items())[0]
    killed = threading.Event()

    def kill_when_busy():
        # kill the worker while it is running E-step tasks of the next iteration
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if client.processing(workers=[victim]).get(victim):
                os.kill(victim_pid, signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.002)

    def kill_soon(progress):
        if progress.iteration == 2:
            threading.Thread(target=kill_when_busy, daemon=True).start()

    disturbed = _fit(Xd, callback=kill_soon, **kw)
    assert killed.is_set()
    np.testing.assert_array_equal(disturbed.means_, undisturbed.means_)
    np.testing.assert_array_equal(disturbed.covariances_, undisturbed.covariances_)
    assert disturbed.lower_bounds_ == undisturbed.lower_bounds_
    # the nanny brings a fresh worker process back for the tests that follow
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (
            len(client.scheduler_info()["workers"]) == 2
            and victim_pid not in client.run(os.getpid).values()
        ):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the killed worker was not replaced within 60 s")


def test_dataframe_names_travel_and_criteria_work(client, data):
    # names kept like a pandas fit; bic/icl of a Dask DataFrame (unknown partition lengths)
    # equal those of the same rows in memory
    X, _ = data
    kw = dict(n_components=3, tol=0, max_iter=5, covariance_type="full", **_given_init(X, "full"))
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    ddf = dd.from_pandas(frame, npartitions=3).clear_divisions()
    gm = _fit(ddf, **kw)
    assert list(gm.feature_names_in_) == ["a", "b", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no false "feature names" warning anywhere
        assert gm.bic(ddf) == pytest.approx(gm.bic(frame), rel=1e-12)
        assert gm.icl(ddf) == pytest.approx(gm.icl(frame), rel=1e-12)
        assert gm.aic(ddf) == pytest.approx(gm.aic(frame), rel=1e-12)
        np.testing.assert_array_equal(gm.predict(ddf).compute(), gm.predict(frame))
    with pytest.raises(ValueError, match="feature names should match"):
        gm.predict(ddf[["b", "a", "c"]])
    # integer column names are no names, as in scikit-learn
    assert not hasattr(_fit(dd.from_pandas(pd.DataFrame(X), npartitions=2), **kw),
                       "feature_names_in_")  # fmt: skip


def test_missing_values_on_dask_like_arrays(client, data, tmp_path):
    # NaN entries are missing values, as for arrays; the CLI's reader makes them from NA cells
    X = data[0].copy()
    X[np.random.RandomState(3).rand(*X.shape) < 0.05] = np.nan
    X[7] = np.nan
    kw = dict(n_components=3, random_state=0, tol=0, max_iter=5)
    with pytest.warns(UserWarning, match="1 rows of X have no observed value"):
        in_memory = _fit(X, engine="numpy", **kw)
    pd.DataFrame(X, columns=["a", "b", "c"]).to_csv(tmp_path / "m.csv", index=False, na_rep="NA")
    from gaussmix._io import read_dask

    lazy, _ = read_dask(tmp_path / "m.csv", allow_nan=True, blocksize=20_000)
    assert lazy.numblocks[0] > 1
    for source in (da.from_array(X, chunks=700), lazy):
        with pytest.warns(UserWarning, match="1 rows of X have no observed value"):
            fitted = _fit(source, **kw)
        _assert_same_fit(fitted, in_memory)
        np.testing.assert_allclose(
            fitted.score_samples(source).compute(), in_memory.score_samples(X), rtol=1e-12
        )
