"""Save and load: exact round trip, no pickle, damaged files refused cleanly."""

import io
import json
import pickle
import zipfile

import numpy as np
import pytest

import gaussmix
from gaussmix import GaussianMixture

TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    return np.r_[rng.randn(100, 3), rng.randn(100, 3) + 4]


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_round_trip_predicts_identically(tmp_path, data, covariance_type, dtype):
    X = data.astype(dtype)
    gm = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X)
    path = tmp_path / "model.gmm"
    gm.save(path)
    loaded = gaussmix.load(path)
    assert loaded.get_params() == gm.get_params()
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(gm, name))
        assert getattr(loaded, name).dtype == dtype
    np.testing.assert_array_equal(loaded.predict_proba(X), gm.predict_proba(X))
    np.testing.assert_array_equal(loaded.score_samples(X), gm.score_samples(X))
    assert loaded.lower_bounds_ == gm.lower_bounds_
    assert (loaded.converged_, loaded.n_iter_) == (gm.converged_, gm.n_iter_)
    assert [p.name for p in tmp_path.iterdir()] == ["model.gmm"]  # no temporary left


def test_user_init_arrays_and_feature_names_survive(tmp_path, data):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(data, columns=["a", "b", "c"])
    gm = GaussianMixture(2, means_init=[[0, 0, 0], [4, 4, 4]], random_state=7).fit(df)
    gm.save(tmp_path / "m")
    loaded = gaussmix.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.means_init, gm.means_init)
    assert list(loaded.feature_names_in_) == ["a", "b", "c"]
    np.testing.assert_array_equal(loaded.predict(df), gm.predict(df))


def _saved(tmp_path, data):
    path = tmp_path / "model.gmm"
    GaussianMixture(2, random_state=0).fit(data).save(path)
    return path


def _rewrite(path, replace):
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members.update(replace)
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickle_payload_is_never_executed(tmp_path, data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _saved(tmp_path, data)
    evil = np.empty(1, dtype=object)
    evil[0] = _Boom()
    _rewrite(path, {"means.npy": _npy(evil)})
    with pytest.raises(ValueError, match="not a valid gaussmix model"):
        gaussmix.load(path)
    assert not (tmp_path / "PWNED").exists()
    # a plain pickle file is refused too
    (tmp_path / "p.gmm").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ValueError, match="not a valid gaussmix model"):
        gaussmix.load(tmp_path / "p.gmm")
    assert not (tmp_path / "PWNED").exists()


def test_newer_format_version_refused(tmp_path, data):
    path = _saved(tmp_path, data)
    with zipfile.ZipFile(path) as z:
        with z.open("meta.npy") as fh:
            meta = json.loads(np.lib.format.read_array(fh).tobytes())
    meta["format_version"] = 99
    blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _rewrite(path, {"meta.npy": _npy(blob)})
    with pytest.raises(ValueError, match="version 99 is newer.*upgrade gaussmix"):
        gaussmix.load(path)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.99])
def test_truncated_file_refused(tmp_path, data, cut):
    path = _saved(tmp_path, data)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(ValueError, match="not a valid gaussmix model"):
        gaussmix.load(path)


def test_corrupted_bytes_refused(tmp_path, data):
    path = _saved(tmp_path, data)
    raw = bytearray(path.read_bytes())
    rng = np.random.RandomState(0)
    for _ in range(20):
        damaged = bytearray(raw)
        for i in rng.randint(0, len(raw), 8):
            damaged[i] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            loaded = gaussmix.load(path)
        except ValueError:
            continue
        # a flip that zip's CRC did not catch must still give a consistent, usable model
        assert np.all(np.isfinite(loaded.score_samples(data)))


def test_shape_mismatch_and_inflated_member_refused(tmp_path, data):
    path = _saved(tmp_path, data)
    _rewrite(path, {"weights.npy": _npy(np.ones(3) / 3)})
    with pytest.raises(ValueError, match="shape"):
        gaussmix.load(path)
    path = _saved(tmp_path, data)
    _rewrite(path, {"means.npy": _npy(np.zeros((10_000, 3)))})
    with pytest.raises(ValueError, match="larger than its declared shape"):
        gaussmix.load(path)


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a valid gaussmix model"):
        gaussmix.load(tmp_path / "junk")
    with pytest.raises(FileNotFoundError):
        gaussmix.load(tmp_path / "absent.gmm")


def test_unfitted_cannot_be_saved(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        GaussianMixture(2).save(tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
