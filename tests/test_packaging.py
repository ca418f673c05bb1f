"""Packaging (issue 7, item 17): a library asks for compatible ranges, never exact torch pins."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_torch_is_a_range_that_the_installed_pair_satisfies():
    reqs = {r.name: r for r in map(Requirement, PYPROJECT["project"]["dependencies"])}
    for name in ("torch", "torchvision"):
        spec = reqs[name].specifier
        assert not any(s.operator in ("==", "===", "~=") for s in spec), f"{name} is pinned: {spec}"
        assert any(s.operator == ">=" for s in spec) and any(s.operator == "<" for s in spec), spec
        installed = version(name).split("+")[0]  # local tags such as +cu130 or +cpu
        assert spec.contains(installed), f"installed {name} {installed} is outside {spec}"


def test_version_matches_the_package_metadata():
    from curate import __version__

    assert __version__ == PYPROJECT["project"]["version"]


def test_demo_folder_is_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "curate-demo/" in ignored and ".curate/" in ignored
