"""pyproject.toml: setuptools reads it without a deprecation warning (SPDX licence string)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_has_no_setuptools_deprecation():
    pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = pyprojecttoml.apply_configuration(Distribution(), REPO / "pyproject.toml")
    messages = [f"{w.category.__name__}: {w.message}" for w in caught if "Deprecat" in w.category.__name__]
    assert messages == []
    assert dist.metadata.license_expression == "MIT"
    assert dist.metadata.name == "facekit"


def test_build_requires_a_setuptools_that_reads_spdx_licences():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    assert "setuptools>=77" in build["requires"]  # the first setuptools with PEP 639 licence strings
