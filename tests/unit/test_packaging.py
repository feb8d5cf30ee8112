"""A real install carries every subpackage: each folder of Python files is a package the build finds."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]
TOP = ("brokers", "daemon", "risk", "strategies")


def test_every_folder_of_python_files_is_found_by_the_build() -> None:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    found = set(find_packages(str(ROOT), include=include))
    folders = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in TOP
        for path in (ROOT / top).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert folders - found == set(), "these folders would be left out of a wheel (no __init__.py?)"
    assert {"brokers.sim", "daemon.store", "daemon.orders", "risk.layers", "strategies.training"} <= found
