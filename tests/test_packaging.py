"""pyproject.toml in the form current setuptools builds without warnings."""

from __future__ import annotations

import tomllib

from tests.support import ROOT


def test_license_is_an_spdx_expression_with_its_files() -> None:
    """setuptools >= 77 warned three times per build that `project.license`
    as a table ({text = "MIT"}) is deprecated (an error from 2027-02-18)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] and all((ROOT / f).is_file() for f in project["license-files"])
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert "setuptools>=77" in meta["build-system"]["requires"]
