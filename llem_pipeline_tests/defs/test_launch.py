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


def test_launch_prints_skipped_points_and_invalid_files(llem_env: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The launcher registers for real and prints one warning line per skipped point of the study it launches and
    per invalid study file; the runs themselves are replaced by a recorder (they are tested elsewhere)."""
    import llem_pipeline.defs.automation.launching as launching

    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "skipping.yaml").write_text(
        "name: skipping\nbase: {model: m}\nsweep: {pytorch.batch_size: [0, 1]}\n", encoding="utf-8")
    (folder / "bad.yaml").write_text("name: bad\nbase: {model: m, n: .nan}\n", encoding="utf-8")
    (folder / "other.yaml").write_text("name: other\nbase: {model: m}\nsweep: {n: [0, 1]}\n", encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("LLEM_STUDIES_DIR", str(folder))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    launched: list[list[str]] = []
    monkeypatch.setattr(launching, "materialize_partitions", lambda date, hashes, **kw: launched.append(hashes) or [])
    monkeypatch.setattr(launching, "refresh_report", lambda instance, level: True)
    assert main(["skipping"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(launched) == 1 and len(launched[0]) == 1
    assert err[0] == ("llem launch: warning: skipping.yaml: skipped sweep point {'pytorch.batch_size': 0}: "
                      "pytorch.batch_size = 0: Input should be greater than or equal to 1")
    assert err[1].startswith("llem launch: warning: invalid study file (skipped): ") and "bad.yaml" in err[1]
    assert "n = nan: must be a finite number" in err[1]
    assert len(err) == 2  # other.yaml's skipped point belongs to another study: not printed here
