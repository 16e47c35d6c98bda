"""Migration 7 on a database file made by the schema before it (migrations up to 6, runs written as the store
wrote them then): TPOT p99 is back-filled from result_json, old runs keep NULL attribution columns, the
user tables are seeded once, the views run, the audit still vouches for every write, and a new run with its
attribution is stored beside the old ones."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from llem_pipeline.storage import PARTITIONED_TABLES, ResultStore
from llem_pipeline.storage import rows as R
from llem_pipeline.storage.schema import LATEST_VERSION, VIEWS, apply_schema
from llem_pipeline_tests.storage.record_factory import ADDED_IN_007, make_config, make_record
from llem_pipeline_tests.storage.served_runs import served_record


def _insert_v6(con: duckdb.DuckDBPyConnection, record) -> None:
    """Insert ``record`` as the store wrote runs at schema version 6 (no migration-7 columns)."""
    key = record.key_columns()
    tables = {
        "experiment_results": [R.experiment_result_row(record)],
        "process_results": R.process_result_rows(record.processes, key),
        "environment_snapshots": [R.environment_row(record.environment, key)],
        "baselines": R.baseline_rows(record.baseline, key),
    }
    for name, rows in tables.items():
        old = [{k: v for k, v in r.items() if k not in ADDED_IN_007} for r in rows]
        con.register("_old", R.rows_to_table(old))
        con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _old")
        con.unregister("_old")
    counts = {name: len(rows) for name, rows in tables.items()}
    for name in ("power_samples", "requests"):
        table = getattr(record, name)
        counts[name] = table.num_rows
        con.register("_old", table.drop_columns([c for c in ADDED_IN_007 if c in table.column_names]))
        con.execute(f"INSERT INTO {name} BY NAME SELECT ?::DATE AS run_date, ? AS config_hash, ? AS hardware_id, "
                    "? AS run_id, * FROM _old", [record.run_date, record.config_hash, record.hardware_id, record.run_id])
        con.unregister("_old")
    for name, n in counts.items():  # the manifest rows the store wrote with each run
        con.execute("INSERT INTO partition_manifest (table_name, run_date, config_hash, hardware_id, run_id, row_count, "
                    "written_at, writer_pid, write_seq) VALUES (?, ?, ?, ?, ?, ?, now(), 1, NULL)",
                    [name, record.run_date, record.config_hash, record.hardware_id, record.run_id, n])


@pytest.fixture
def v6_db(tmp_path: Path):
    db = tmp_path / "v6.duckdb"
    old = make_record(make_config(batch_size=4), run_id="r-old", run_date="2026-11-01")
    con = duckdb.connect(str(db))
    con.execute("BEGIN")
    assert apply_schema(con, up_to=6) == 6
    _insert_v6(con, old)
    con.execute("COMMIT")
    columns = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'requests'").fetchall()}
    assert "energy_j" not in columns  # really the schema before migration 7
    con.close()
    return db, old


def test_migration_7_upgrades_a_version_6_database(v6_db) -> None:
    db, old = v6_db
    store = ResultStore(db)
    assert store.ensure_schema() == LATEST_VERSION == 7
    row = store.query("SELECT * FROM experiment_results WHERE run_id = 'r-old'").to_pylist()[0]
    assert row["tpot_p99_ms"] == pytest.approx(old.result.latency_stats.tpot.p99_ms)  # back-filled
    assert row["request_energy_p50_j"] is None and row["attribution_method"] is None
    assert store.query("SELECT count(*) AS n FROM requests WHERE energy_j IS NOT NULL").column("n").to_pylist() == [0]
    targets = store.query("SELECT target, ttft_p99_ms, tpot_p99_ms FROM latency_targets ORDER BY target").to_pylist()
    assert targets == [{"target": "batch", "ttft_p99_ms": None, "tpot_p99_ms": None},
                       {"target": "interactive", "ttft_p99_ms": 500.0, "tpot_p99_ms": 50.0}]
    assert store.query("SELECT count(*) AS n FROM published_results").column("n").to_pylist() == [4]
    for view in VIEWS:
        store.query(f"SELECT * FROM {view}")
    # the old run is not attributed: left out of request_energy, still in energy_latency and carbon_cost
    assert store.query("SELECT count(*) AS n FROM request_energy").column("n").to_pylist() == [0]
    assert store.query("SELECT count(*) AS n FROM carbon_cost").column("n").to_pylist() == [1]

    new = served_record(make_config(backend="vllm", batch_size=16, n=80), 16, run_id="r-new", run_date="2026-11-02")
    counts = store.write_run(new)
    assert counts["requests"] == 80
    assert store.audit() == []
    assert store.query("SELECT count(*) AS n FROM request_energy").column("n").to_pylist() == [1]
    assert {r["run_id"] for r in store.query("SELECT run_id FROM experiment_results").to_pylist()} == {"r-old", "r-new"}
    stored = store.query("SELECT prefill_share, attribution_method FROM experiment_results WHERE run_id = 'r-new'"
                         ).to_pylist()[0]
    assert stored["prefill_share"] == pytest.approx(new.attribution["prefill_share"])
    assert stored["attribution_method"].startswith("interval_split:")
    for name in PARTITIONED_TABLES:
        store.query(f"SELECT count(*) FROM {name}")


def test_migration_7_seeds_user_tables_once(v6_db) -> None:
    db, _ = v6_db
    store = ResultStore(db)
    store.ensure_schema()
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE latency_targets SET ttft_p99_ms = 300 WHERE target = 'interactive'")
    assert ResultStore(db).ensure_schema() == LATEST_VERSION
    assert store.query("SELECT ttft_p99_ms FROM latency_targets WHERE target = 'interactive'").column(
        "ttft_p99_ms").to_pylist() == [300.0]  # the user's edit survives; nothing is seeded again
    # an edit by hand that makes no sense is refused by the table itself
    with duckdb.connect(str(db)) as con:
        for bad in ("UPDATE latency_targets SET tpot_p99_ms = -5 WHERE target = 'interactive'",
                    "INSERT INTO factors VALUES ('pue', 'nan', 'ratio', 's', now(), NULL, now())",
                    "INSERT INTO factors VALUES ('carbon', 1, 'x', 's', now(), NULL, now())",
                    "INSERT INTO factors VALUES ('pue', 1.2, 'ratio', 's', now(), now() - INTERVAL 1 DAY, now())"):
            with pytest.raises(duckdb.ConstraintException):
                con.execute(bad)
