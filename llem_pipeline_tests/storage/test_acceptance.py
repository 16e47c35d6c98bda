"""The storage side of the trustworthy-record scenario: one config measured on one day as simulated and as
real (device kind nvml), on two GPU models, two cycles each, plus a second workload: every run is kept, and
no view pools hardware, workloads or simulated with real."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llem_pipeline.storage import ResultStore, RunRecord
from llem_pipeline_tests.storage.record_factory import make_config, make_record

DAY = "2026-11-20"
GPUS = {"NVIDIA H100 80GB HBM3": 300.0, "NVIDIA A100-SXM4-80GB": 250.0}  # product name -> W drawn


def _scenario() -> list[RunRecord]:
    """8 runs of config A (2 GPU models x simulated/real x 2 cycles) and 2 of config B (another workload)."""
    a = make_config(batch_size=8)
    b = make_config(batch_size=8, n=16)  # same engine setting, another workload (n prompts)
    start = datetime(2026, 11, 20, 1, tzinfo=UTC)
    records = []
    for cycle in range(2):
        for gpu, watts in GPUS.items():
            for kind in ("simulated", "nvml"):
                i = len(records)
                records.append(make_record(
                    a, run_date=DAY, run_id=f"a-{kind}-{gpu.split()[1]}-c{cycle}", device_kind=kind, gpu_name=gpu,
                    power_w=watts * (0.3 if kind == "simulated" else 1.0), seed=i, cycle=cycle, study="demo",
                    start=start + timedelta(minutes=i), n_samples=20, n_requests=4,
                    label=f"demo · batch_size=8 · {kind} {gpu.split()[1]}",
                ))
    for cycle in range(2):
        records.append(make_record(b, run_date=DAY, run_id=f"b-c{cycle}", device_kind="nvml",
                                   gpu_name="NVIDIA H100 80GB HBM3", seed=20 + cycle, cycle=cycle, study="nightly",
                                   start=start + timedelta(hours=1, minutes=cycle), n_samples=20, n_requests=4))
    return records


def test_every_run_is_kept_and_efficiency_never_pools(store: ResultStore) -> None:
    records = _scenario()
    for record in records:  # one run at a time, as the measurements finish
        store.write_run(record)
    a_hash = records[0].config_hash
    b_hash = records[-1].config_hash
    assert store.query("SELECT count(*) AS n FROM experiment_results WHERE config_hash = ?",
                       [a_hash]).column("n").to_pylist() == [8]
    eff = store.query("SELECT * FROM efficiency ORDER BY config_hash = ?, hardware_id", [b_hash]).to_pylist()
    a_rows = [r for r in eff if r["config_hash"] == a_hash]
    assert [r["hardware_id"] for r in a_rows] == [
        "nvml:A100-SXM4-80GB:x1", "nvml:H100-80GB-HBM3:x1", "simulated:A100-SXM4-80GB:x1", "simulated:H100-80GB-HBM3:x1"]
    assert [r["n_runs"] for r in a_rows] == [2, 2, 2, 2]
    assert all(r["studies"] == "demo" and r["j_per_token_ci_low"] <= r["j_per_token"] <= r["j_per_token_ci_high"]
               for r in a_rows)
    # each row is the mean of exactly its own two runs
    for row in a_rows:
        mine = [r.result.avg_energy_per_token_j for r in records
                if r.config_hash == a_hash and r.hardware_id == row["hardware_id"]]
        assert len(mine) == 2 and row["j_per_token"] == pytest.approx(sum(mine) / 2)
    # the second workload is a row of its own, never pooled with config A on the same hardware
    b_rows = [r for r in eff if r["config_hash"] == b_hash]
    assert len(b_rows) == 1 and b_rows[0]["n_runs"] == 2 and b_rows[0]["hardware_id"] == "nvml:H100-80GB-HBM3:x1"
    assert b_rows[0]["workload_hash"] != a_rows[0]["workload_hash"] and b_rows[0]["setting"] == a_rows[0]["setting"]
    assert len(eff) == 5


def test_where_not_is_simulated_returns_the_real_rows(store: ResultStore) -> None:
    store.write_runs(_scenario())
    real = store.query("SELECT hardware_id, n_runs FROM efficiency WHERE NOT is_simulated AND workload_hash = "
                       "(SELECT workload_hash FROM experiment_results WHERE run_id = 'a-nvml-H100-c0') ORDER BY 1").to_pylist()
    assert real == [{"hardware_id": "nvml:A100-SXM4-80GB:x1", "n_runs": 2}, {"hardware_id": "nvml:H100-80GB-HBM3:x1", "n_runs": 2}]
    runs = store.query("SELECT run_id FROM experiment_results WHERE NOT is_simulated ORDER BY run_id")
    assert runs.column("run_id").to_pylist() == ["a-nvml-A100-SXM4-80GB-c0", "a-nvml-A100-SXM4-80GB-c1", "a-nvml-H100-c0",
                                                 "a-nvml-H100-c1", "b-c0", "b-c1"]
    latest = store.query("SELECT run_id FROM latest_results WHERE NOT is_simulated ORDER BY run_id")
    assert latest.column("run_id").to_pylist() == ["a-nvml-A100-SXM4-80GB-c1", "a-nvml-H100-c1", "b-c1"]


def test_a_later_simulated_run_never_shadows_the_real_ones(store: ResultStore) -> None:
    records = _scenario()
    store.write_runs(records)
    late = make_record(make_config(batch_size=8), run_date=DAY, run_id="late-sim", device_kind="simulated",
                       gpu_name="NVIDIA H100 80GB HBM3", start=datetime(2026, 11, 20, 23, tzinfo=UTC), cycle=2)
    store.write_run(late)
    rows = store.query("SELECT hardware_id, n_runs FROM efficiency WHERE config_hash = ? ORDER BY hardware_id",
                       [late.config_hash]).to_pylist()
    assert [(r["hardware_id"], r["n_runs"]) for r in rows] == [
        ("nvml:A100-SXM4-80GB:x1", 2), ("nvml:H100-80GB-HBM3:x1", 2), ("simulated:A100-SXM4-80GB:x1", 2),
        ("simulated:H100-80GB-HBM3:x1", 3)]
    assert store.query("SELECT count(*) AS n FROM experiment_results").column("n").to_pylist() == [11]
