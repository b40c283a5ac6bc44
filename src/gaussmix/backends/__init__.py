"""Executors: where and how the E-step runs over a data source.

An executor owns the data (an in-memory array, a file read in chunks, a Dask array, a GPU
tensor) and answers one question per EM iteration: the summed :class:`~gaussmix._stats.SuffStats`
of all its rows under given parameters. The EM driver (:mod:`gaussmix._em`) only ever talks to
this protocol, so the same loop runs everywhere.

Executors are registered by name with the module that implements them, imported only when used
(torch and dask stay optional).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from gaussmix._params import MixtureParams
from gaussmix._stats import SuffStats

__all__ = ["Executor", "available_engines", "make_executor", "register_executor"]


@runtime_checkable
class Executor(Protocol):
    """Runs the E-step over every chunk of one data source and sums the statistics.

    Attributes
    ----------
    n_samples : int
        Rows in the source.
    n_features : int
        Columns in the source.
    dtype : numpy.dtype
        Working precision of the E-step arithmetic (float32 or float64).
    """

    n_samples: int
    n_features: int
    dtype: np.dtype

    def e_step(self, params: MixtureParams, *, shift: NDArray | None = None) -> SuffStats:
        """Sum of per-chunk statistics, all around ``shift`` (default ``params.means``)."""
        ...

    def init_data(
        self, max_rows: int | None, rng: np.random.RandomState
    ) -> tuple[NDArray, NDArray | None]:
        """Rows in memory (and their weights) for initialisation: all of them when they fit."""
        ...


# name -> (module, factory attribute); factories take (X, sample_weight, **options) with
# options chunk_size and device. In-memory engines get checked numpy arrays; the others get
# the raw source (a path, a Dask collection, a tensor) and check it themselves.
_REGISTRY: dict[str, tuple[str, str]] = {
    "numpy": ("gaussmix.backends.numpy", "NumpyExecutor"),
}
IN_MEMORY_ENGINES = {"numpy", "cpu"}
# engines tried by "auto", in order; each entry (name, predicate on the data source)
_AUTO: list[tuple[str, Callable[[Any], bool]]] = []


def _module_of(X: Any) -> str:
    return type(X).__module__.split(".")[0]


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def register_executor(
    name: str,
    module: str,
    factory: str,
    *,
    auto: Callable[[Any], bool] | None = None,
    first: bool = False,
) -> None:
    """Make an executor available under ``engine=name``.

    Parameters
    ----------
    name : str
        Engine name.
    module, factory : str
        Where the factory lives; imported on first use.
    auto : callable, optional
        Predicate on the data source: when true, ``engine="auto"`` picks this executor.
    first : bool, default=False
        Give the predicate priority over those already registered.
    """
    _REGISTRY[name] = (module, factory)
    if auto is not None:
        entry = (name, auto)
        if first:
            _AUTO.insert(0, entry)
        else:
            _AUTO.append(entry)


def available_engines() -> list[str]:
    """Names accepted by ``engine=`` (besides ``"auto"``)."""
    return sorted(_REGISTRY)


def resolve_engine(engine: str, X: Any) -> str:
    """The concrete engine ``"auto"`` stands for, given the data source."""
    if engine != "auto":
        if engine not in _REGISTRY:
            raise ValueError(
                f"engine must be 'auto' or one of {available_engines()}, got {engine!r}"
            )
        return engine
    for name, predicate in _AUTO:
        if predicate(X):
            return name
    return "numpy"


def engine_module(name: str):
    """The module implementing engine ``name`` (imported now)."""
    return importlib.import_module(_REGISTRY[name][0])


def make_executor(engine: str, X: Any, sample_weight: Any = None, **options: Any) -> Executor:
    """Build the executor for ``engine`` (``"auto"`` resolved against ``X``)."""
    name = resolve_engine(engine, X)
    factory = getattr(engine_module(name), _REGISTRY[name][1])
    return factory(X, sample_weight, **options)


register_executor(
    "stream",
    "gaussmix.backends.stream",
    "StreamExecutor",
    auto=lambda X: isinstance(X, (str, os.PathLike)),
)
register_executor(
    "dask",
    "gaussmix.backends.dask",
    "DaskExecutor",
    auto=lambda X: _module_of(X) in ("dask", "dask_expr"),
)
register_executor(
    "torch", "gaussmix.backends.torch", "TorchExecutor", auto=lambda X: _module_of(X) == "torch"
)
register_executor(
    "cpu",
    "gaussmix.backends.cpu",
    "CpuExecutor",
    auto=lambda X: _has_module("numba") and _has_module("gaussmix.backends.cpu"),
)
