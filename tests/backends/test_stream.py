"""Out-of-core EM on real files: equal to the in-memory fit, and loud when a file misbehaves."""

import os
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils import check_random_state

from gaussmix import GaussianMixture
from gaussmix._covariance import get_model
from gaussmix._init import initial_params
from gaussmix.backends import stream
from gaussmix.backends.stream import SourceChangedError, SourceReadError, StreamExecutor

TYPES = ["full", "tied", "diag", "spherical"]
ATOL = 1e-10


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 4.0, 0.0], [0.0, 5.0, 6.0]])
    z = rng.randint(0, 3, 2400)
    A = rng.standard_normal((3, 3))
    X = centres[z] + rng.standard_normal((2400, 3)) @ (0.5 * np.eye(3) + 0.2 * A)
    w = rng.randint(0, 4, 2400).astype(float)
    return X, w


@pytest.fixture(scope="module")
def files(tmp_path_factory, data):
    X, w = data
    root = tmp_path_factory.mktemp("stream")
    df = pd.DataFrame(X, columns=["a", "b", "c"]).assign(w=w)
    np.save(root / "x.npy", X)
    np.save(root / "xf.npy", np.asfortranarray(X))
    pq.write_table(
        pa.Table.from_pandas(df, preserve_index=False), root / "x.parquet", row_group_size=500
    )
    (root / "parts").mkdir()
    for i, s in enumerate(range(0, 2400, 700)):  # uneven files, sorted by name
        pq.write_table(
            pa.Table.from_pandas(df.iloc[s : s + 700], preserve_index=False),
            root / "parts" / f"part-{i:02d}.parquet",
        )
    (root / "parts" / "_SUCCESS").write_text("")
    df.to_csv(root / "x.csv", index=False)
    np.savetxt(root / "x.tsv", X, delimiter="\t", fmt="%.17g")  # no header
    df.to_csv(root / "semicolon.csv", index=False, sep=";")
    return root


def _fit(source, *, sample_weight=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(**kw).fit(source, sample_weight=sample_weight)


def _given_init(X, covariance_type, K=3):
    # a deliberately rough start so that EM has work to do
    rng = np.random.RandomState(1)
    means = X[rng.choice(len(X), K, replace=False)]
    model = get_model(covariance_type)
    shape = model.shape(K, X.shape[1])
    if covariance_type in ("full",):
        prec = np.broadcast_to(np.eye(X.shape[1]), shape).copy()
    elif covariance_type == "tied":
        prec = np.eye(X.shape[1])
    else:
        prec = np.ones(shape)
    return {"weights_init": np.full(K, 1 / K), "means_init": means, "precisions_init": prec}


def _assert_same_fit(a, b, atol=ATOL):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(
            getattr(a, name), getattr(b, name), rtol=0, atol=atol, err_msg=name
        )
    assert a.n_iter_ == b.n_iter_
    assert a.lower_bound_ == pytest.approx(b.lower_bound_, rel=1e-12)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_npy_equals_in_memory_with_given_init(files, data, covariance_type):
    X, _ = data
    kw = dict(
        n_components=3,
        covariance_type=covariance_type,
        tol=1e-9,
        max_iter=60,
        **_given_init(X, covariance_type),
    )
    streamed = _fit(files / "x.npy", engine="stream", chunk_size=333, **kw)
    in_memory = _fit(np.load(files / "x.npy"), engine="numpy", **kw)
    _assert_same_fit(streamed, in_memory)
    assert streamed.n_features_in_ == 3


@pytest.mark.parametrize(
    "name",
    ["xf.npy", "x.parquet", "parts", "x.csv", "x.tsv", "semicolon.csv"],
    ids=lambda n: n,
)
def test_every_format_equals_in_memory(files, data, name):
    X, w = data
    weighted = name in ("x.parquet", "parts", "x.csv", "semicolon.csv")
    kw = dict(n_components=3, tol=1e-9, max_iter=40, **_given_init(X, "full"))
    # a weight column in the file is taken out of the features; elsewhere an array is given
    streamed = _fit(files / name, sample_weight="w" if weighted else w, **kw)
    in_memory = _fit(X, sample_weight=w, engine="numpy", **kw)
    _assert_same_fit(streamed, in_memory)


def test_default_kmeans_init_small_file_equals_in_memory(files, data):
    # a file with no more rows than the init sample is used whole, without random draws
    X, _ = data
    kw = dict(n_components=3, random_state=7, tol=1e-9, max_iter=100)
    _assert_same_fit(_fit(files / "x.npy", **kw), _fit(X, engine="numpy", **kw))


def test_default_kmeans_init_on_reservoir_sample(files, data, monkeypatch):
    # a larger file: k-means runs on a sample; the in-memory fit started from the same sample
    # (same draws) must agree
    X, w = data
    monkeypatch.setattr(stream, "DEFAULT_INIT_ROWS", 10)  # floor: 1000 of 2400 rows
    monkeypatch.setattr(stream, "_PLAIN_CHUNK_ROWS", 300)
    kw = dict(n_components=3, covariance_type="diag", tol=1e-9, max_iter=100)
    streamed = _fit(files / "x.parquet", sample_weight="w", random_state=3, **kw)

    rng = check_random_state(3)
    X0, w0 = StreamExecutor(files / "x.parquet", "w").init_data(None, rng)
    assert X0.shape == (1000, 3)
    rows = [int(np.flatnonzero((X == x).all(axis=1))[0]) for x in X0]
    assert rows == sorted(set(rows)), "sample rows are distinct and in file order"
    np.testing.assert_array_equal(w0, w[rows])
    assert np.all(w0 > 0), "rows of weight zero never enter the sample"
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
    _assert_same_fit(streamed, in_memory)


def test_reservoir_sample_is_uniform(tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "_PLAIN_CHUNK_ROWS", 37)  # many chunks: the threshold path
    n, m, reps = 200, 50, 400
    np.save(tmp_path / "r.npy", np.arange(n, dtype=float)[:, None])
    ex = StreamExecutor(tmp_path / "r.npy")
    rng = np.random.RandomState(0)
    counts = np.zeros(n)
    for _ in range(reps):
        X0, _ = ex.init_data(m, rng)
        rows = X0[:, 0].astype(int)
        assert rows.size == m and np.unique(rows).size == m
        counts[rows] += 1
    # each row is kept with probability m/n: chi-square over the 200 inclusion counts
    expected = reps * m / n
    chi2 = np.sum((counts - expected) ** 2 / (expected * (1 - m / n)))
    assert sps.chi2.sf(chi2, n - 1) > 1e-4


def test_float32_file_works_in_float32(tmp_path, data):
    X, _ = data
    np.save(tmp_path / "x32.npy", X.astype(np.float32))
    kw = dict(n_components=3, tol=1e-6, max_iter=30, **_given_init(X, "full"))
    streamed = _fit(tmp_path / "x32.npy", **kw)
    in_memory = _fit(X.astype(np.float32), engine="numpy", **kw)
    assert streamed.means_.dtype == np.float32
    # same float32 arithmetic; the chunks differ, so only float32 rounding separates them
    np.testing.assert_allclose(streamed.means_, in_memory.means_, rtol=0, atol=1e-4)


def test_predictions_on_a_path(files, data):
    X, _ = data
    gm = _fit(X, n_components=3, random_state=0)
    for op in ("predict", "predict_proba", "score_samples"):
        out = getattr(gm, op)(files / "x.tsv")
        assert isinstance(out, np.ndarray)
        np.testing.assert_allclose(out, getattr(gm, op)(X), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="4 features, but GaussianMixture is expecting 3"):
        gm.predict(files / "x.csv")  # the weight column counts as a feature here


# ------------------------------------------------------------------------------ failures
def test_infinite_chunk_names_file_and_rows(tmp_path, data):
    X = data[0].copy()
    X[1234, 1] = np.inf
    np.save(tmp_path / "inf.npy", X)
    # the first pass is an E-step in chunks of 500 rows
    gm = GaussianMixture(3, chunk_size=500, **_given_init(data[0], "full"))
    with pytest.raises(
        ValueError,
        match=r"inf\.npy: infinity in rows 1000-1499 \(first at row 1234\)",
    ):
        gm.fit(tmp_path / "inf.npy")
    with pytest.raises(NotFittedError):
        gm.predict(X[:5])
    # with k-means init the sampling pass meets it first
    gm = GaussianMixture(3)
    with pytest.raises(ValueError, match=r"inf\.npy: infinity in rows 0-2399 \(first at row 1234"):
        gm.fit(tmp_path / "inf.npy")
    with pytest.raises(NotFittedError):
        gm.predict(X[:5])


@pytest.mark.parametrize("init", ["given", "kmeans"])
def test_missing_values_stream_like_arrays(tmp_path, data, init):
    # NaN cells (NA in text, nulls in Parquet, NaN in .npy) are missing values: the streamed
    # fit equals the in-memory fit of the same array, all-NaN rows left out of both
    X = data[0].copy()
    rng = np.random.RandomState(3)
    X[rng.rand(*X.shape) < 0.05] = np.nan
    X[7] = np.nan
    np.save(tmp_path / "m.npy", X)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame.to_csv(tmp_path / "m.csv", index=False, na_rep="NA")
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "m.parquet")
    kw = dict(n_components=3, random_state=0, tol=0, max_iter=5)
    if init == "given":
        kw.update(_given_init(data[0], "full"))
    with pytest.warns(UserWarning, match="1 rows of X have no observed value"):
        in_memory = _fit(X, engine="numpy", **kw)
    for name in ("m.npy", "m.csv", "m.parquet"):
        # the sampling pass of the data-driven start sees the whole file and says so
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            streamed = _fit(tmp_path / name, chunk_size=500, **kw)
        said = [str(w.message) for w in seen if "no observed value" in str(w.message)]
        assert said == ([] if init == "given" else [
            f"1 rows of {tmp_path / name} have no observed value (all NaN): they are left "
            "out of the fit"])  # fmt: skip
        for attr in ("weights_", "means_", "covariances_"):
            np.testing.assert_allclose(
                getattr(streamed, attr), getattr(in_memory, attr), rtol=0, atol=ATOL,
                err_msg=f"{name} {attr}",
            )  # fmt: skip
        np.testing.assert_allclose(
            streamed.score_samples(tmp_path / name), in_memory.score_samples(X), rtol=1e-12
        )


def test_csv_missing_and_bad_values(tmp_path):
    # the messages of the CLI's reader (one layer), lines counted with the blank ones
    (tmp_path / "m.csv").write_text("a,b\n1,2\n\n3,-inf\n5,6\n")
    with pytest.raises(ValueError, match=r"m\.csv: column 'b' has an infinite value at line 4"):
        StreamExecutor(tmp_path / "m.csv")
    (tmp_path / "s.csv").write_text("a,b\n1,2\n3,x\n")
    with pytest.raises(ValueError, match=r"s\.csv: column 'b' is not numeric \(line 3: 'x'\)"):
        StreamExecutor(tmp_path / "s.csv")


def _callback_at(iteration, action):
    def callback(progress):
        if progress.iteration == iteration:
            action()

    return callback


def test_file_changed_between_passes_stops_the_fit(tmp_path, data):
    X = data[0]
    path = tmp_path / "c.npy"
    np.save(path, X)
    fitted = _fit(X[:500], n_components=3, random_state=0)
    before = fitted.means_.copy()

    def rewrite():
        np.save(path, X * 2.0)  # same size, new mtime
        os.utime(path, ns=(0, 10**18))

    with pytest.raises(SourceChangedError, match=r"c\.npy changed since the fit started"):
        fitted.fit(path, callback=_callback_at(1, rewrite))
    # nothing half-written: the previous parameters are intact
    np.testing.assert_array_equal(fitted.means_, before)
    assert fitted.n_features_in_ == 3


def test_rewrite_keeping_size_and_mtime_is_caught_by_the_digest(tmp_path, data):
    X = data[0]
    path = tmp_path / "c.npy"
    np.save(path, X)
    st = os.stat(path)

    def rewrite():
        with open(path, "r+b") as f:  # same inode, same size
            f.seek(-8, os.SEEK_END)
            f.write(np.float64(123.0).tobytes())
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    gm = GaussianMixture(3, **_given_init(X, "full"))
    with pytest.raises(SourceChangedError, match=r"values of rows 0-2399 differ"):
        gm.fit(path, callback=_callback_at(1, rewrite))
    assert not hasattr(gm, "means_")


def test_file_deleted_between_passes(tmp_path, data):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"a": data[0][:, 0], "b": data[0][:, 1]}), path)
    gm = GaussianMixture(2)
    with pytest.raises(SourceReadError, match=r"d\.parquet can no longer be read"):
        gm.fit(path, callback=_callback_at(1, lambda: os.remove(path)))
    assert not hasattr(gm, "means_")


def test_file_corrupted_in_place_is_a_read_error(tmp_path, data):
    # same size, same mtime, same inode: only reading notices
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": data[0][:, 0], "b": data[0][:, 1]}), path, compression="snappy")
    st = os.stat(path)

    def corrupt():
        with open(path, "r+b") as f:
            f.seek(4)  # past the magic: page headers become garbage
            f.write(b"\xff" * 2000)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    gm = GaussianMixture(2)
    with pytest.raises(SourceReadError, match=r"x\.parquet: read failed"):
        gm.fit(path, callback=_callback_at(1, corrupt))


def test_directory_gaining_a_file_is_a_change(files, tmp_path):
    import shutil

    parts = tmp_path / "parts"
    shutil.copytree(files / "parts", parts)
    extra = files / "parts" / "part-00.parquet"
    with pytest.raises(SourceChangedError, match="changed during the fit"):
        GaussianMixture(2).fit(
            parts,
            sample_weight="w",
            callback=_callback_at(1, lambda: shutil.copy(extra, parts / "part-99.parquet")),
        )


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda p: np.save(p / "v.npy", np.zeros(10)), ValueError, "expected 2-D"),
        (lambda p: np.save(p / "v.npy", np.array([["a", "b"]])), TypeError, "numeric"),
        (lambda p: (p / "v.npy").write_bytes(b"not numpy"), SourceReadError, "not a readable"),
        (lambda p: (p / "v.txt").write_text("1 2"), ValueError, "v.txt: no data rows"),
        (lambda p: os.mkfifo(p / "v.csv"), ValueError, "is a FIFO, not a regular file"),
        (lambda p: (p / "v.csv").write_bytes(b"1" * (1 << 24) + b"2"), ValueError, "longer"),
        (
            lambda p: pq.write_table(pa.table({"a": [1.0], "s": ["x"]}), p / "v.parquet"),
            TypeError,
            r"non-numeric columns: s \(string\)",
        ),
        (lambda p: (p / "v.csv").write_text(""), ValueError, "is empty"),
        (lambda p: (p / "v.csv").write_text("a,b\n"), ValueError, "no data rows"),
        (lambda p: (p / "v").mkdir(), ValueError, "no Parquet files"),
    ],
)
def test_bad_sources_are_clear_errors(tmp_path, make, error, match):
    make(tmp_path)
    (source,) = [p for p in tmp_path.iterdir()]
    with pytest.raises(error, match=match):
        GaussianMixture(1, engine="stream").fit(source)


def test_bad_weights(files, data):
    with pytest.raises(ValueError, match="no column names"):
        StreamExecutor(files / "x.npy", "w")
    with pytest.raises(ValueError, match="'q' is not in"):
        StreamExecutor(files / "x.csv", "q")
    with pytest.raises(ValueError, match=r"shape \(2400,\)"):
        StreamExecutor(files / "x.npy", np.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        StreamExecutor(files / "x.npy", -np.ones(2400))
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        StreamExecutor(files / "nope.npy")
    with pytest.raises(ValueError, match="CPU only"):
        StreamExecutor(files / "x.npy", device="cuda")
