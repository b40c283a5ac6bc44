"""Packaging metadata: what pip and setuptools read from pyproject.toml."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_expression_setuptools_takes_without_warning(monkeypatch):
    """A TOML-table license is deprecated (builds stop being supported after 2027-02-18)."""
    setuptools = pytest.importorskip("setuptools")
    if tuple(int(p) for p in setuptools.__version__.split(".")[:1]) < (77,):
        pytest.skip("SPDX license expressions need setuptools >= 77")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(ROOT)  # license-files are globs relative to the project root
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the deprecation is a warning: make it fail here
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert dist.metadata.license_expression == "BSD-3-Clause"
    assert [Path(f).name for f in dist.metadata.license_files] == ["LICENSE"]
    assert "Redistribution and use in source and binary forms" in (ROOT / "LICENSE").read_text()
