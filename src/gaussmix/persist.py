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
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gaussmix._covariance import get_model

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT = "gaussmix-model"
FORMAT_VERSION = 1
_INIT_ARRAYS = ("weights_init", "means_init", "precisions_init")
_MAX_META = 1 << 20


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


def save(estimator, path: str | os.PathLike) -> None:
    """Write a fitted :class:`~gaussmix.GaussianMixture` to ``path``.

    Parameters
    ----------
    estimator : GaussianMixture
        A fitted estimator.
    path : str or path-like
        Destination file. Written to a temporary file in the same folder, then renamed, so an
        interrupted save never leaves a partial file.
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
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, meta=blob, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _bad(path, why: str) -> ValueError:
    return ValueError(f"{path}: not a valid gaussmix model file ({why})")


def _read_meta(archive: zipfile.ZipFile, path) -> dict:
    try:
        info = archive.getinfo("meta.npy")
    except KeyError:
        raise _bad(path, "no metadata") from None
    if info.file_size > _MAX_META:
        raise _bad(path, "metadata too large")
    with archive.open(info) as fh:
        blob = np.lib.format.read_array(fh, allow_pickle=False)
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise _bad(path, "metadata has the wrong type")
    meta = json.loads(blob.tobytes().decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _bad(path, "not written by gaussmix")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise _bad(path, "no format version")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: model file format version {version} is newer than this gaussmix "
            f"supports ({FORMAT_VERSION}); upgrade gaussmix to read it"
        )
    return meta


def _expected_shapes(meta: dict) -> dict[str, tuple[int, ...]]:
    K, d = int(meta["n_components"]), int(meta["n_features"])
    if K < 1 or d < 1:
        raise ValueError("bad dimensions")
    model = get_model(meta["params"]["covariance_type"])
    cov_shape = model.shape(K, d)
    return {
        "weights": (K,),
        "means": (K, d),
        "covariances": cov_shape,
        "precisions_cholesky": cov_shape,
        "precisions": cov_shape,
        "lower_bounds": (int(meta["arrays"]["lower_bounds"][0]),),
    }


def load(path: str | os.PathLike):
    """Read a model written by :meth:`GaussianMixture.save`.

    Parameters
    ----------
    path : str or path-like
        Model file.

    Returns
    -------
    estimator : GaussianMixture
        Fitted; predicts exactly as the saved one did.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a gaussmix model, is truncated or corrupted, or was written by a
        newer format version.
    """
    from gaussmix.estimator import GaussianMixture

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        with zipfile.ZipFile(path) as archive:
            meta = _read_meta(archive, path)
            expected = _expected_shapes(meta)
            dtype = np.dtype(meta["dtype"])
            if dtype not in (np.float32, np.float64):
                raise ValueError(f"unsupported dtype {dtype}")
            arrays = {}
            names = set(archive.namelist())
            for name in [*expected, *(f"init__{n}" for n in _INIT_ARRAYS)]:
                member = f"{name}.npy"
                if member not in names:
                    if name.startswith("init__"):
                        continue
                    raise ValueError(f"missing array {name!r}")
                info = archive.getinfo(member)
                shape = expected.get(name, tuple(meta["arrays"].get(name, ())))
                limit = 8 * int(np.prod(shape, dtype=np.int64)) + 4096
                if info.file_size > limit:
                    raise ValueError(f"array {name!r} is larger than its declared shape")
                with archive.open(info) as fh:
                    arr = np.lib.format.read_array(fh, allow_pickle=False)
                if arr.shape != tuple(shape):
                    raise ValueError(f"array {name!r} has shape {arr.shape}, expected {shape}")
                if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)):
                    raise ValueError(f"array {name!r} is not finite floating point")
                arrays[name] = arr
            params = dict(meta["params"])
            for n in _INIT_ARRAYS:
                params[n] = arrays.get(f"init__{n}")
            est = GaussianMixture(**params)
            est._check_parameters()
            w = arrays["weights"]
            if np.any(w < 0) or not np.isclose(w.sum(), 1.0, atol=1e-5):
                raise ValueError("weights are not a probability vector")
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
    est.converged_ = bool(meta["converged"])
    est.n_iter_ = int(meta["n_iter"])
    est.lower_bound_ = float(meta["lower_bound"])
    est.lower_bounds_ = [float(v) for v in arrays["lower_bounds"]]
    est.n_features_in_ = int(meta["n_features"])
    if meta.get("feature_names") is not None:
        est.feature_names_in_ = np.asarray(meta["feature_names"], dtype=object)
    return est
