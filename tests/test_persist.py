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


# --------------------------------------------------------------------------- issue 15
def test_every_covariance_model_round_trips_through_a_file_object(data):
    """save() writes to file objects as numpy.savez does; every registered model (mclust's
    too) is validated generically, without persist knowing its name."""
    from gaussmix._covariance import COVARIANCE_MODELS

    for name in COVARIANCE_MODELS:
        gm = GaussianMixture(2, covariance_type=name, random_state=0).fit(data)
        buf = io.BytesIO()
        gm.save(buf)
        assert not buf.closed
        buf.seek(0)
        loaded = gaussmix.load(buf)
        assert loaded.covariance_type == name
        for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            np.testing.assert_array_equal(getattr(loaded, attr), getattr(gm, attr))
        # (scores agree to rounding: a fitted mclust model may hold log-determinants from its
        # M-step, a loaded one computes them from the stored factors)
        np.testing.assert_allclose(loaded.score_samples(data), gm.score_samples(data), rtol=1e-13)


def _meta(path):
    with zipfile.ZipFile(path) as z, z.open("meta.npy") as fh:
        return json.loads(np.lib.format.read_array(fh).tobytes())


def _meta_npy(meta):
    return _npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))


def _zip_bomb(path, meta, member, shape):
    """Rewrite ``path`` with ``member`` replaced by deflated zeros of ``shape``, written in
    1 MiB pieces (the bomb never exists uncompressed, here or on disk)."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist() if n not in (member, "meta.npy")}
    members["meta.npy"] = _meta_npy(meta)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for n, b in members.items():
            z.writestr(n, b)
        with z.open(member, "w", force_zip64=True) as fh:
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                buf, {"descr": "<f8", "fortran_order": False, "shape": shape}
            )
            fh.write(buf.getvalue())
            chunk = bytes(1 << 20)
            left = 8 * int(np.prod(shape))
            while left:
                fh.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))


@pytest.mark.parametrize("variant", ["lower_bounds", "lower_bounds_and_n_iter", "init_array"])
def test_zip_bomb_is_refused_before_it_is_decompressed(tmp_path, data, variant):
    import tracemalloc

    path = _saved(tmp_path, data)
    meta = _meta(path)
    n = 25_000_000  # 200 MB of float64 once decompressed
    if variant == "init_array":
        member, shape = "init__means_init.npy", (n // 3, 3)
        meta["params"]["means_init"] = None
        meta["arrays"]["init__means_init"] = list(shape)
    else:
        member, shape = "lower_bounds.npy", (n,)
        meta["arrays"]["lower_bounds"] = [n]
        if variant == "lower_bounds_and_n_iter":
            meta["n_iter"] = n
    _zip_bomb(path, meta, member, shape)
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="not a valid gaussmix model"):
            gaussmix.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, f"load peaked at {peak / 1e6:.0f} MB"


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {n[:-4]: np.lib.format.read_array(z.open(n)) for n in z.namelist()}


def _flip_first_factor(covariance_type, prec_chol):
    """The same precision U Uᵀ (so the same covariances) with a negative diagonal in U."""
    U = prec_chol.copy()
    if covariance_type == "full":
        U[0, :, 0] *= -1
    elif covariance_type == "tied":
        U[:, 0] *= -1
    elif covariance_type == "diag":
        U[0, 0] *= -1
    else:
        U[0] *= -1
    return U


@pytest.mark.parametrize("covariance_type", TYPES)
def test_negative_precision_cholesky_diagonal_is_refused(tmp_path, data, covariance_type):
    path = tmp_path / "m.gmm"
    GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(data).save(path)
    U = _members(path)["precisions_cholesky"]
    _rewrite(path, {"precisions_cholesky.npy": _npy(_flip_first_factor(covariance_type, U))})
    with pytest.raises(ValueError, match="precisions_cholesky has a diagonal entry"):
        gaussmix.load(path)


def test_inconsistent_or_indefinite_parameters_are_refused(tmp_path, data):
    path = _saved(tmp_path, data)
    arrays = _members(path)
    # covariances that disagree with the precisions (still positive definite)
    _rewrite(path, {"covariances.npy": _npy(arrays["covariances"] * 2)})
    with pytest.raises(ValueError, match="covariances and precisions_cholesky describe"):
        gaussmix.load(path)
    # precisions that disagree with their Cholesky factors
    path = _saved(tmp_path, data)
    _rewrite(path, {"precisions.npy": _npy(arrays["precisions"] * 3)})
    with pytest.raises(ValueError, match="precisions and precisions_cholesky describe"):
        gaussmix.load(path)
    # a symmetric covariance that is not positive definite
    path = _saved(tmp_path, data)
    bad = arrays["covariances"].copy()
    bad[0] = [[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    _rewrite(path, {"covariances.npy": _npy(bad)})
    with pytest.raises(ValueError, match="component 0 is not positive definite"):
        gaussmix.load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"feature_names": ["a", "b"]}, "feature_names lists 2 names for 3 features"),
        ({"feature_names": ["a", "a", "b"]}, "feature_names repeats a name"),
        ({"feature_names": [1, 2, 3]}, "feature_names must be a list of strings"),
        ({"n_iter": None}, "n_iter must be an integer"),
        ({"n_iter": 2.5}, "n_iter must be an integer"),
        ({"converged": None}, "converged must be true or false"),
        ({"converged": "yes"}, "converged must be true or false"),
        ({"lower_bound": "x"}, "lower_bound must be a number"),
        ({"n_components": "2"}, "n_components must be an integer"),
        ({"n_features": True}, "n_features must be an integer"),
        ({"params": None}, "no hyper-parameters"),
        ({"params": {"covariance_type": ["full"]}}, "covariance_type must be one of"),
        ({"arrays": None}, "lower_bounds must list at most n_iter"),
    ],
)
def test_every_metadata_field_is_inside_the_value_error_promise(tmp_path, data, change, message):
    path = _saved(tmp_path, data)
    meta = _meta(path)
    meta.update(change)
    _rewrite(path, {"meta.npy": _meta_npy(meta)})
    with pytest.raises(ValueError, match=f"not a valid gaussmix model file.*{message}"):
        gaussmix.load(path)


@pytest.mark.parametrize("key", ["converged", "n_iter", "lower_bound", "n_components", "dtype"])
def test_missing_metadata_key_is_a_value_error(tmp_path, data, key):
    path = _saved(tmp_path, data)
    meta = _meta(path)
    del meta[key]
    _rewrite(path, {"meta.npy": _meta_npy(meta)})
    with pytest.raises(ValueError, match="not a valid gaussmix model file"):
        gaussmix.load(path)


def test_save_into_a_missing_folder_names_the_users_path(tmp_path, data):
    gm = GaussianMixture(1).fit(data)
    with pytest.raises(FileNotFoundError, match=r"x\.gmm: folder .*no.such does not exist$"):
        gm.save(tmp_path / "no" / "such" / "x.gmm")
