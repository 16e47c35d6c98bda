"""`llem run`: refuses to guess devices or dates, names unknown studies and bad files, plans through the instance."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from llem_pipeline.cli import main as llem
from llem_pipeline.commands.run import main_run
from llem_pipeline.defs.automation.launching import daemon_running


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, value in {"LLEM_DATA_DIR": tmp_path / "data", "LLEM_DUCKDB": tmp_path / "data" / "llem.duckdb",
                        "DAGSTER_HOME": tmp_path / "home", "LLEM_STUDIES_DIR": tmp_path / "studies"}.items():
        Path(value).parent.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(value))
    (tmp_path / "home").mkdir()
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "broken.yaml").write_text("name: broken\nbase: {model: x, n: -3}\n", encoding="utf-8")
    monkeypatch.setenv("LLEM_DEVICES", "simulated")
    return tmp_path


def test_run_needs_llem_devices(env: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("LLEM_DEVICES")
    assert main_run(["demo"]) == 2
    assert "LLEM_DEVICES is not set" in capsys.readouterr().err


def test_run_refuses_a_date_that_is_not_one_or_has_no_partition(env: Path, capsys) -> None:
    assert main_run(["demo", "--date", "2026-13-40"]) == 2
    assert "--date='2026-13-40' is not a date" in capsys.readouterr().err
    assert main_run(["demo", "--date", "2020-01-01"]) == 2
    assert "has no partition: measurement dates run from 2026-11-01" in capsys.readouterr().err


def test_run_names_an_unknown_study_and_the_bad_files(env: Path, capsys) -> None:
    assert llem(["run", "no_such_study"]) == 2
    err = capsys.readouterr().err
    assert "no_such_study" in err and "broken.yaml" in err


def test_queue_mode_needs_a_running_daemon(env: Path, capsys) -> None:
    (env / "studies" / "one.yaml").write_text(
        "name: one\nbase: {model: 'llem:tiny', n: 2, max_output_tokens: 2}\n", encoding="utf-8")
    assert main_run(["one", "--queue"]) == 2
    assert "needs a running Dagster daemon" in capsys.readouterr().err


def test_no_daemon_heartbeat_means_no_daemon(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        assert daemon_running(instance) is False
