"""`llem report` prints the efficiency view per config × hardware with workload, n_runs and the SIMULATED mark;
`llem status` reads the instance's runs."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from llem_pipeline.cli import main as llem
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.storage.record_factory import make_config, make_record


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Two cycles of batch 8 on an H100 and on the simulated GPU (study 'nightly'), one run of batch 1 on the
    H100 (study 'adhoc')."""
    store = ResultStore(tmp_path / "llem.duckdb", lock_timeout_s=60)
    c1, c8 = make_config(batch_size=1), make_config(batch_size=8)
    records = []
    for cycle in range(2):
        for kind, gpu, watts in (("nvml", "NVIDIA H100 80GB HBM3", 300.0), ("simulated", "sim-gpu", 80.0)):
            records.append(make_record(c8, run_id=f"c8-{kind}-{cycle}", device_kind=kind, gpu_name=gpu,
                                       power_w=watts, seed=len(records), cycle=cycle, study="nightly"))
    records.append(make_record(c1, run_id="c1-h100", device_kind="nvml", gpu_name="NVIDIA H100 80GB HBM3",
                               power_w=250.0, seed=9, study="adhoc"))
    store.write_runs(records)
    return store.path


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict]:
    assert llem(["report", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_has_one_row_per_config_and_hardware_with_runs_and_workload(db: Path, capsys) -> None:
    rows = _json(capsys, "--db", str(db))
    got = sorted((r["setting"], r["hardware_id"], r["device"], r["n_runs"], r["studies"]) for r in rows)
    assert got == [
        ("batch_size=1", "nvml:H100-80GB-HBM3:x1", "real", 1, "adhoc"),
        ("batch_size=8", "nvml:H100-80GB-HBM3:x1", "real", 2, "nightly"),
        ("batch_size=8", "simulated:sim-gpu:x1", "SIMULATED", 2, "nightly"),
    ]
    for r in rows:
        assert r["workload_hash"] and r["j_per_token"] > 0
        if r["n_runs"] >= 2:
            assert r["j_per_token_ci_low"] <= r["j_per_token"] <= r["j_per_token_ci_high"]
        else:  # one run has no interval: none is printed rather than a zero-width one
            assert r["j_per_token_ci_low"] is None and r["j_per_token_ci_high"] is None


def test_report_filters_by_study_and_marks_simulated_rows_in_the_table(db: Path, capsys) -> None:
    assert [r["setting"] for r in _json(capsys, "--db", str(db), "--study", "adhoc")] == ["batch_size=1"]
    assert llem(["report", "--db", str(db), "--study", "nightly"]) == 0
    out = capsys.readouterr().out
    assert "SIMULATED" in out and "1 SIMULATED row(s)" in out and "2 row(s)" in out


def test_report_says_what_to_do_when_nothing_is_there(tmp_path: Path, db: Path, capsys) -> None:
    assert llem(["report", "--db", str(tmp_path / "none.duckdb")]) == 3
    assert "llem run demo" in capsys.readouterr().err
    assert llem(["report", "--db", str(db), "--study", "no-such-study"]) == 3
    assert "no results for study 'no-such-study'" in capsys.readouterr().err


def test_status_lists_the_instances_runs_with_their_labels(tmp_path: Path, monkeypatch, capsys) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    @dg.op
    def one() -> int:
        return 1

    @dg.job
    def tiny_job() -> None:
        one()

    with dg.DagsterInstance.get() as instance:
        assert tiny_job.execute_in_process(instance=instance, tags={"llem/label": "demo · batch_size=8 · sim"}).success
    assert llem(["status"]) == 0
    out = capsys.readouterr().out
    assert "daemon: not running" in out and "runs: 0 queued, 0 in progress" in out
    assert "SUCCESS" in out and "tiny_job" in out and "demo · batch_size=8 · sim" in out
