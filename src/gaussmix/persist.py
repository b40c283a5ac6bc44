"""Saving and loading fitted models without pickle.

The file is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays) read with
``allow_pickle=False``: arrays are raw numbers, so no file can make ``load`` run code. Metadata
(format version, hyper-parameters, scalars, feature names) is a JSON document stored as a
``uint8`` array inside the same archive. Before any array is read, every member's declared size
is checked against the shapes the metadata implies, so a truncated, corrupted or inflated file
is refused with ``ValueError`` instead of crashing or exhausting memory.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT = "gaussmix-model"
FORMAT_VERSION = 1
_INIT_ARRAYS = ("weights_init", "means_init", "precisions_init")
_MAX_META = 1 << 20
#: room for a .npy member's header (numpy pads it to 64 bytes; long shapes need more)
_NPY_HEADER = 4096
#: the most the members may decompress to, as a multiple of the archive's size
_MAX_RATIO = 16


def _jsonable_params(est) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    params, arrays = {}, {}
    for name, value in est.get_params(deep=False).items():
        if name in _INIT_ARRAYS and value is not None:
            arrays[f"init__{name}"] = np.asarray(value, dtype=np.float64)
        elif name == "random_state" and not (value is None or isinstance(value, int)):
            params[name] = None  # a generator's state is not part of the model
        elif isinstance(value, (np.integer, np.floating)):
            params[name] = value.item()
        else:
            params[name] = value
    return params, arrays


def save(estimator, file: str | os.PathLike | IO[bytes]) -> None:
    """Write a fitted :class:`~gaussmix.GaussianMixture` to a file.

    Parameters
    ----------
    estimator : GaussianMixture
        A fitted estimator.
    file : str, path-like or binary file object
        Destination. A path is written atomically (:func:`gaussmix._atomic.atomic_write`: a
        temporary file in the same folder, renamed once complete, with the permissions ``open``
        would give, through a symbolic link, never over a read-only file), so an interrupted
        save never leaves a partial file. A file object (opened ``"wb"``, or ``io.BytesIO``)
        is written to as :func:`numpy.savez` writes to one, and left open.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    params, init_arrays = _jsonable_params(estimator)
    arrays = {
        "weights": estimator.weights_,
        "means": estimator.means_,
        "covariances": estimator.covariances_,
        "precisions_cholesky": estimator.precisions_cholesky_,
        "precisions": estimator.precisions_,
        "lower_bounds": np.asarray(estimator.lower_bounds_, dtype=np.float64),
        **init_arrays,
    }
    from gaussmix import __version__

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gaussmix_version": __version__,
        "params": params,
        "n_components": int(estimator.means_.shape[0]),
        "n_features": int(estimator.means_.shape[1]),
        "dtype": str(estimator.means_.dtype),
        "converged": bool(estimator.converged_),
        "n_iter": int(estimator.n_iter_),
        "lower_bound": float(estimator.lower_bound_),
        "feature_names": (
            [str(c) for c in estimator.feature_names_in_]
            if hasattr(estimator, "feature_names_in_")
            else None
        ),
        "arrays": {k: list(np.shape(v)) for k, v in arrays.items()},
    }
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    members = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    if hasattr(file, "write"):
        np.savez(file, meta=blob, **members)
        return
    from gaussmix._atomic import atomic_write

    with atomic_write(file, "wb") as fh:
        np.savez(fh, meta=blob, **members)


def _bad(path, why: str) -> ValueError:
    return ValueError(f"{path}: not a valid gaussmix model file ({why})")


def _read_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """One ``.npy`` member, its header checked before any data is read.

    The header must declare exactly ``shape`` and a float32/float64 dtype (uint8 for the
    metadata); only then are exactly that many bytes read, so the memory used is the model's
    own size whatever the member claims.
    """
    fmt = np.lib.format
    with archive.open(f"{name}.npy") as fh:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            header = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            header = fmt.read_array_header_2_0(fh)
        else:
            raise ValueError(f"array {name!r} has an unsupported .npy version {version}")
        got, fortran, dtype = header
        if name == "meta":
            if dtype != np.uint8 or len(got) != 1 or got[0] > _MAX_META:
                raise ValueError("metadata has the wrong type or size")
            shape = got
        elif dtype.kind != "f" or dtype.itemsize not in (4, 8):
            raise ValueError(f"array {name!r} has dtype {dtype}, not float32 or float64")
        if tuple(got) != tuple(shape):
            raise ValueError(f"array {name!r} has shape {tuple(got)}, expected {tuple(shape)}")
        count = math.prod(shape)
        data = fh.read(count * dtype.itemsize + 1)
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"array {name!r} does not hold {count} values")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C").astype(dtype.newbyteorder("="))


def _read_meta(archive: zipfile.ZipFile, path) -> dict:
    try:
        info = archive.getinfo("meta.npy")
    except KeyError:
        raise _bad(path, "no metadata") from None
    if info.file_size > _MAX_META + 4096:
        raise _bad(path, "metadata too large")
    blob = _read_member(archive, "meta", ())
    meta = json.loads(blob.tobytes().decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _bad(path, "not written by gaussmix")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad(path, "no format version")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: model file format version {version} is newer than this gaussmix "
            f"supports ({FORMAT_VERSION}); upgrade gaussmix to read it"
        )
    return meta


def _count(meta: dict, key: str, minimum: int) -> int:
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _expected_shapes(meta: dict, model) -> dict[str, tuple[int, ...]]:
    """Every member's shape, from the model's own K, d and n_iter (not from what the file
    declares about its arrays)."""
    K, d = _count(meta, "n_components", 1), _count(meta, "n_features", 1)
    n_iter = _count(meta, "n_iter", 0)
    declared = meta.get("arrays")
    lb = declared.get("lower_bounds") if isinstance(declared, dict) else None
    if not (isinstance(lb, list) and len(lb) == 1 and isinstance(lb[0], int)
            and 0 <= lb[0] <= n_iter):  # fmt: skip
        raise ValueError(f"lower_bounds must list at most n_iter ({n_iter}) values")
    cov_shape = tuple(model.shape(K, d))
    return {
        "weights": (K,),
        "means": (K, d),
        "covariances": cov_shape,
        "precisions_cholesky": cov_shape,
        "precisions": cov_shape,
        "lower_bounds": (lb[0],),
        "init__weights_init": (K,),
        "init__means_init": (K, d),
        "init__precisions_init": cov_shape,
    }


def _archive_size(file) -> int:
    if hasattr(file, "seek"):
        here = file.tell()
        size = file.seek(0, os.SEEK_END)
        file.seek(here)
        return int(size)
    return os.stat(file).st_size


def _check_sizes(archive: zipfile.ZipFile, expected: dict, archive_size: int) -> None:
    """Refuse, before anything is decompressed, members larger than their shapes and a total
    that the archive's own size cannot account for (a zip bomb)."""
    total = 0
    for name, shape in expected.items():
        try:
            info = archive.getinfo(f"{name}.npy")
        except KeyError:
            if name.startswith("init__"):
                continue
            raise ValueError(f"missing array {name!r}") from None
        limit = 8 * math.prod(shape) + _NPY_HEADER
        if info.file_size > limit:
            raise ValueError(f"array {name!r} is larger than its declared shape")
        total += info.file_size
    # save() stores members uncompressed: the content can be no larger than the file (a
    # compressed copy of real float data shrinks by far less than this ratio)
    if total > _MAX_RATIO * archive_size + (1 << 20):
        raise ValueError(
            f"its arrays would take {total} bytes once decompressed, out of proportion to the "
            f"file's {archive_size} bytes"
        )


def _tolerance(dtype: np.dtype) -> float:
    # loose enough for rounding through any condition number a fit can produce, tight enough
    # to catch parameters that disagree
    return 1e-6 if dtype == np.float64 else 1e-3


def _check_parameters(arrays: dict, meta: dict, model, dtype: np.dtype) -> None:
    """The arrays describe one valid mixture: the checks every covariance model shares."""
    K, d = meta["n_components"], meta["n_features"]
    for name, arr in arrays.items():
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"array {name!r} is not finite")
    w = arrays["weights"]
    if np.any(w < 0) or not np.isclose(w.sum(), 1.0, atol=1e-5):
        raise ValueError("weights are not a probability vector")
    model.validate(arrays["covariances"], K, d)  # shape, symmetry, positive definite
    prec_chol = arrays["precisions_cholesky"].astype(np.float64)
    with np.errstate(all="ignore"):
        log_det = model.log_det_precision_cholesky(prec_chol, d)
    if not np.all(np.isfinite(log_det)):
        raise ValueError("precisions_cholesky has a diagonal entry that is not positive")
    tol = _tolerance(dtype)
    cov = arrays["covariances"].astype(np.float64)
    again = model.covariances_from_precision_cholesky(prec_chol)
    if not np.allclose(again, cov, rtol=tol * 100, atol=tol * 100 * np.max(np.abs(cov))):
        raise ValueError("covariances and precisions_cholesky describe different mixtures")
    prec = arrays["precisions"].astype(np.float64)
    from_chol = model.precisions(prec_chol)
    if not np.allclose(from_chol, prec, rtol=tol, atol=tol * np.max(np.abs(from_chol))):
        raise ValueError("precisions and precisions_cholesky describe different mixtures")
    names = meta.get("feature_names")
    if names is not None:
        if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise ValueError("feature_names must be a list of strings")
        if len(names) != d:
            raise ValueError(f"feature_names lists {len(names)} names for {d} features")
        if len(set(names)) != d:
            raise ValueError("feature_names repeats a name")


def _scalars(meta: dict) -> tuple[bool, int, float]:
    converged = meta.get("converged")
    if not isinstance(converged, bool):
        raise ValueError(f"converged must be true or false, got {converged!r}")
    lower_bound = meta.get("lower_bound")
    if not isinstance(lower_bound, (int, float)) or isinstance(lower_bound, bool):
        raise ValueError(f"lower_bound must be a number, got {lower_bound!r}")
    return converged, meta["n_iter"], float(lower_bound)


def load(file: str | os.PathLike | IO[bytes]):
    """Read a model written by :meth:`GaussianMixture.save`.

    Parameters
    ----------
    file : str, path-like or binary file object
        Model file.

    Returns
    -------
    estimator : GaussianMixture
        Fitted; predicts exactly as the saved one did.

    Raises
    ------
    FileNotFoundError
        If ``file`` is a path that does not exist.
    ValueError
        If the file is not a gaussmix model, is truncated, corrupted or inflated (a member or
        the total larger than the model's own K, d and n_iter allow), holds parameters that
        are not a valid mixture, or was written by a newer format version.
    """
    is_object = hasattr(file, "read")
    path = getattr(file, "name", "<file object>") if is_object else Path(file)
    if not is_object:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such model file")
        if not path.is_file():
            raise _bad(path, "not a regular file")
    try:
        with zipfile.ZipFile(file) as archive:
            meta = _read_meta(archive, path)
            params = meta.get("params")
            if not isinstance(params, dict):
                raise ValueError("no hyper-parameters")
            # SciPy (through the covariance models) only once the file looks like a model
            from gaussmix._covariance import get_model

            model = get_model(params.get("covariance_type"))
            expected = _expected_shapes(meta, model)
            if meta.get("dtype") not in ("float32", "float64"):
                raise ValueError(f"unsupported dtype {meta.get('dtype')!r}")
            dtype = np.dtype(meta["dtype"])
            _check_sizes(archive, expected, _archive_size(file))
            names = set(archive.namelist())
            arrays = {
                name: _read_member(archive, name, shape)
                for name, shape in expected.items()
                if f"{name}.npy" in names
            }
        _check_parameters(arrays, meta, model, dtype)
        converged, n_iter, lower_bound = _scalars(meta)
        from gaussmix.estimator import GaussianMixture

        params = dict(params)
        for n in _INIT_ARRAYS:
            params[n] = arrays.get(f"init__{n}")
        est = GaussianMixture(**params)
        est._check_parameters()
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise _bad(path, str(exc)) from None
    except Exception as exc:  # zip, zlib, JSON, key and type errors of a damaged file
        raise _bad(path, f"{type(exc).__name__}: {exc}") from None
    est.weights_ = arrays["weights"].astype(dtype)
    est.means_ = arrays["means"].astype(dtype)
    est.covariances_ = arrays["covariances"].astype(dtype)
    est.precisions_cholesky_ = arrays["precisions_cholesky"].astype(dtype)
    est.precisions_ = arrays["precisions"].astype(dtype)
    est.converged_ = converged
    est.n_iter_ = n_iter
    est.lower_bound_ = lower_bound
    est.lower_bounds_ = [float(v) for v in arrays["lower_bounds"]]
    est.n_features_in_ = int(meta["n_features"])
    if meta.get("feature_names") is not None:
        est.feature_names_in_ = np.asarray(meta["feature_names"], dtype=object)
    return est
