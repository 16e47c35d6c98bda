"""Migration 6 on a database file made by the schema before it (migrations up to 5 applied, runs written as
the store wrote them then): every run gets its hardware_id and workload_hash, the columns take their new
names, config_day_stats is built, the audit still vouches for every write, and new runs no longer replace
old ones of another hardware."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from llem_pipeline.domain.identity import compute_workload_hash, hardware_id
from llem_pipeline.storage import PARTITIONED_TABLES, ResultStore
from llem_pipeline.storage import journal as J
from llem_pipeline.storage.schema import LATEST_VERSION, apply_schema
from llem_pipeline_tests.storage.record_factory import (
    insert_pre_006_run,
    make_config,
    make_record,
    timeseries_table,
)

# What nightly_trend looked like before migration 6 (it read the columns the migration renames and drops).
OLD_VIEW = """CREATE OR REPLACE VIEW nightly_trend AS SELECT config_hash, run_date, avg_energy_per_token_j AS j_per_token,
prev_j_per_token FROM experiment_results"""


@pytest.fixture
def old_db(tmp_path: Path):
    """A database at schema version 5 with four runs (and one power-only partition), its journal, and the records."""
    db = tmp_path / "v5.duckdb"
    a, b, broken = make_config(batch_size=1), make_config(batch_size=8), make_config(batch_size=2)
    records = {
        "sim": make_record(a, run_id="r-sim", run_date="2026-11-01", device_kind="simulated"),
        "h100": make_record(a, run_id="r-h100", run_date="2026-11-02", device_kind="nvml",
                            gpu_name="NVIDIA H100 80GB HBM3", seed=1),
        "a100x2": make_record(b, run_id="r-a100", run_date="2026-11-01", device_kind="nvml",
                              gpu_name="NVIDIA A100-SXM4-80GB", devices_per_process=2, seed=2),
        "broken": make_record(broken, run_id="r-broken", run_date="2026-11-01", seed=3),
    }
    con = duckdb.connect(str(db))
    con.execute("BEGIN")
    assert apply_schema(con, up_to=5) < 6
    con.execute(OLD_VIEW)
    lines = []
    for seq, rec in enumerate(records.values(), start=1):
        counts = insert_pre_006_run(con, rec, write_seq=seq)
        lines += [{"seq": seq, "store": "", "table": t, "run_date": rec.run_date.isoformat(), "config_hash": rec.config_hash,
                   "run_id": rec.run_id, "rows": n, "pid": 1, "at": "2026-11-02T03:00:00+00:00"} for t, n in counts.items()]
    # A run whose stored config no longer validates, and a partition with samples only (as old tests wrote).
    con.execute("UPDATE experiment_results SET result_json = json_merge_patch(result_json, ?) WHERE run_id = 'r-broken'",
                [json.dumps({"effective_config": {"model": 42}})])
    con.register("_s", timeseries_table(7))
    con.execute("INSERT INTO power_samples BY NAME SELECT DATE '2026-10-30' AS run_date, '00000000000000aa' AS config_hash, "
                "'r-orphan' AS run_id, * FROM _s")
    con.execute("INSERT INTO partition_manifest VALUES ('power_samples', DATE '2026-10-30', '00000000000000aa', 'r-orphan', "
                "7, now(), 1, 5)")
    lines.append({"seq": 5, "store": "", "table": "power_samples", "run_date": "2026-10-30",
                  "config_hash": "00000000000000aa", "run_id": "r-orphan", "rows": 7, "pid": 1, "at": "x"})
    con.execute("UPDATE write_sequence SET seq = 5")
    store_id = con.execute("SELECT store_id FROM write_sequence").fetchone()[0]
    con.execute("COMMIT")
    con.close()
    J.append(J.journal_path(db), [{**line, "store": store_id} for line in lines])
    return db, records


def test_migration_6_backfills_identity_and_renames_the_metrics(old_db) -> None:
    db, records = old_db
    store = ResultStore(db, lock_timeout_s=30)
    assert store.ensure_schema() == LATEST_VERSION
    want = {r.run_id: hardware_id(r.result.device_kind, [n for p in r.processes for n in p.gpu_names])
            for r in records.values()}
    assert want == {"r-sim": "simulated:Fabricated-GPU:x1", "r-h100": "nvml:H100-80GB-HBM3:x1",
                    "r-a100": "nvml:A100-SXM4-80GB:x2", "r-broken": "simulated:Fabricated-GPU:x1"}
    for table in PARTITIONED_TABLES:
        got = {r["run_id"]: r["hardware_id"]
               for r in store.query(f"SELECT DISTINCT run_id, hardware_id FROM {table}").to_pylist()}
        expected = {k: v for k, v in want.items() if k in got} | ({"r-orphan": "unknown:no-gpu:x0"} if table == "power_samples" else {})
        assert got == expected, table
    rows = {r["run_id"]: r for r in store.query("SELECT * FROM experiment_results").to_pylist()}
    assert rows["r-sim"]["workload_hash"] == compute_workload_hash(make_config(batch_size=1))
    assert rows["r-a100"]["workload_hash"] == compute_workload_hash(make_config(batch_size=8))
    assert rows["r-broken"]["workload_hash"] == rows["r-broken"]["config_hash"]  # unreadable config: its own workload
    assert rows["r-h100"]["j_per_token"] == pytest.approx(records["h100"].result.avg_energy_per_token_j)
    assert rows["r-h100"]["tokens_per_s"] == pytest.approx(records["h100"].result.avg_tokens_per_second)
    assert {"avg_energy_per_token_j", "avg_tokens_per_second", "prev_j_per_token"}.isdisjoint(rows["r-h100"])
    assert rows["r-h100"]["cycle"] is None and rows["r-h100"]["label"] is None
    manifest = store.query("SELECT DISTINCT run_id, hardware_id FROM partition_manifest ORDER BY run_id").to_pylist()
    assert {r["run_id"]: r["hardware_id"] for r in manifest} == {**want, "r-orphan": "unknown:no-gpu:x0"}
    # the statistics and the views cover the old runs, hardware kept apart
    eff = store.query("SELECT hardware_id, n_runs FROM efficiency WHERE config_hash = ? ORDER BY hardware_id",
                      [records["sim"].config_hash]).to_pylist()
    assert eff == [{"hardware_id": "nvml:H100-80GB-HBM3:x1", "n_runs": 1}, {"hardware_id": "simulated:Fabricated-GPU:x1", "n_runs": 1}]
    assert store.query("SELECT count(*) AS n FROM nightly_trend").column("n").to_pylist() == [4]
    # the write journal of before the migration (partition lines, no hardware_id) still matches the file
    assert store.audit() == []


def test_after_migration_6_runs_are_kept_and_old_runs_can_be_retried(old_db) -> None:
    db, records = old_db
    store = ResultStore(db, lock_timeout_s=30)
    # a simulated run of the H100 run's config on the H100 run's day: kept beside it, never replacing it
    h100 = records["h100"]
    store.write_run(make_record(make_config(batch_size=1), run_id="r-new-sim", run_date=h100.run_date))
    got = store.query("SELECT run_id, hardware_id FROM experiment_results WHERE run_date = ? AND config_hash = ? "
                      "ORDER BY run_id", [h100.run_date, h100.config_hash]).to_pylist()
    assert [r["run_id"] for r in got] == ["r-h100", "r-new-sim"]
    assert store.query("SELECT count(*) AS n FROM efficiency WHERE NOT is_simulated AND config_hash = ?",
                       [h100.config_hash]).column("n").to_pylist() == [1]
    # a retry of an old run (same key after the back-fill) replaces its rows instead of adding a copy
    before = store.row_counts()
    store.write_run(records["a100x2"])
    assert store.row_counts() == before
    assert store.audit() == []
