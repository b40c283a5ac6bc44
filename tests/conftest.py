"""Fixtures shared by several test files."""

import functools

import numpy as np
import pytest

from mclust_fixtures import load_dataset


@pytest.fixture(scope="session")
def mclust_data():
    """``mclust_data(name)``: one of mclust's fixture data sets (see ``mclust_fixtures``) as a
    C-contiguous float64 array, loaded once per session."""

    @functools.cache
    def load(name: str) -> np.ndarray:
        # shared between tests: treat as read-only (not flagged so, since numba would
        # compile every kernel again for read-only arrays)
        return np.ascontiguousarray(load_dataset(name)[0], dtype=np.float64)

    return load


@pytest.fixture
def reap():
    """``reap(proc)`` returns ``proc`` and kills it at the end of the test if it still runs: a
    failed assertion must not leave a million-iteration fit behind on the machine."""
    procs = []

    def register(proc):
        procs.append(proc)
        return proc

    yield register
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
