"""Fixtures for the tests of scripts/: load a script module by path (scripts/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str) -> ModuleType:
    """Return the module scripts/<name>.py (imported once per session under the name ``scripts_<name>``)."""
    key = f"scripts_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def gpu_probe() -> ModuleType:
    """scripts/gpu_probe.py as a module."""
    return load_script("gpu_probe")


@pytest.fixture(scope="session")
def gpu_check_plan() -> ModuleType:
    """scripts/gpu_check_plan.py as a module."""
    return load_script("gpu_check_plan")
