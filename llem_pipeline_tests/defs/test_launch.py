"""`python -m llem_pipeline.defs.launch` (make demo): refuses to guess devices and names unknown studies."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from llem_pipeline.defs.launch import main


def test_launch_needs_llem_devices(llem_env: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("LLEM_DEVICES")
    assert main(["demo"]) == 2
    assert "LLEM_DEVICES is not set" in capsys.readouterr().err


def test_launch_names_an_unknown_study(llem_env: Path, instance: dg.DagsterInstance, capsys) -> None:
    assert main(["no_such_study"]) == 2
    err = capsys.readouterr().err
    assert "no_such_study" in err and "demo" in err
