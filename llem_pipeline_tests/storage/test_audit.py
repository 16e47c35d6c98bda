"""audit.py + the store's manifest: every run write is recorded, and a lost run is named.

Losses are made for real on the DuckDB file: rows deleted by a raw DuckDB connection behind the
store's back, and a whole committed write undone by putting back a copy of the file taken before it
(what the race locking.py describes did: another process checkpointed the database state from before
the write).
"""

from __future__ import annotations

import shutil
import warnings
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from llem_pipeline.storage import Discrepancy, PartitionLostWarning, ResultStore, RunRecord
from llem_pipeline.storage import journal as J
from llem_pipeline.storage.schema import MIGRATIONS, PARTITIONED_TABLES, sql_text
from llem_pipeline_tests.storage.record_factory import make_config, make_record

DAY = "2026-11-01"


def _run(model: str, run_id: str = "run-0001", day: str = DAY) -> tuple[RunRecord, str]:
    """A run of the config of ``model``; returns (record, config_hash)."""
    record = make_record(make_config(model=model), run_date=day, run_id=run_id)
    return record, record.config_hash


def _manifest(store: ResultStore) -> dict[str, int]:
    rows = store.query("SELECT table_name, sum(row_count)::BIGINT AS n FROM partition_manifest GROUP BY 1").to_pylist()
    return {r["table_name"]: r["n"] for r in rows}


def _write_quietly(store: ResultStore, record: RunRecord) -> list[str]:
    """Write a run; return the PartitionLostWarning messages the write issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store.write_run(record)
    return [str(w.message) for w in caught if issubclass(w.category, PartitionLostWarning)]


def test_every_run_write_is_in_the_manifest_and_the_journal(store: ResultStore, data_dir: Path) -> None:
    a, ha = _run("a")
    b, hb = _run("b")
    assert _write_quietly(store, a) == [] and _write_quietly(store, b) == []
    assert _write_quietly(store, a) == []  # rewriting a run replaces its manifest rows
    counts = store.row_counts()
    assert _manifest(store) == {t: counts[t] for t in PARTITIONED_TABLES}
    rows = store.query("SELECT table_name, config_hash, hardware_id, run_id, row_count, writer_pid, write_seq "
                       "FROM partition_manifest WHERE table_name = 'power_samples' ORDER BY config_hash").to_pylist()
    assert {r["config_hash"] for r in rows} == {ha, hb} and all(r["row_count"] == 100 and r["writer_pid"] for r in rows)
    assert {r["hardware_id"] for r in rows} == {"simulated:Fabricated-GPU:x1"}
    assert store.query("SELECT seq FROM write_sequence").column("seq").to_pylist() == [3]
    entries = J.read_entries(store.journal_path)
    assert sorted({e["seq"] for e in entries}) == [1, 2, 3] and len(entries) == 3 * len(PARTITIONED_TABLES)
    assert {e["hardware_id"] for e in entries} == {"simulated:Fabricated-GPU:x1"}
    assert J.last_seq(store.journal_path) == 3
    assert store.audit() == []


def test_a_batch_records_each_run_with_its_own_count(store: ResultStore) -> None:
    r1 = make_record(make_config(model="b1"), run_id="r1", n_samples=7, n_requests=3)
    r2 = make_record(make_config(model="b2"), run_id="r2", n_samples=5, n_requests=0, with_baseline=False)
    store.write_runs([r1, RunRecord(**{**{f: getattr(r2, f) for f in r2.__dataclass_fields__}, "requests": pa.table({})})])
    rows = store.query("SELECT table_name, run_id, row_count FROM partition_manifest "
                       "WHERE table_name IN ('power_samples', 'requests', 'baselines') ORDER BY ALL").to_pylist()
    assert [tuple(r.values()) for r in rows] == [
        ("baselines", "r1", 1), ("baselines", "r2", 0), ("power_samples", "r1", 7), ("power_samples", "r2", 5),
        ("requests", "r1", 3), ("requests", "r2", 0),
    ]
    assert store.audit() == []


def test_a_run_deleted_behind_the_stores_back_is_named(store: ResultStore, data_dir: Path) -> None:
    a, ha = _run("a")
    b, _hb = _run("b")
    _write_quietly(store, a)
    _write_quietly(store, b)
    con = duckdb.connect(str(store.path))  # not through the store: the manifest is not updated
    con.execute("DELETE FROM power_samples WHERE config_hash = ?", [ha])
    con.execute("DELETE FROM requests WHERE config_hash = ? AND request_index = 0", [ha])
    con.close()
    found = store.audit()
    assert sorted((d.table, str(d.run_date), d.config_hash, d.expected, d.found, d.source) for d in found) == [
        ("power_samples", DAY, ha, 100, 0, "manifest"), ("requests", DAY, ha, 8, 7, "manifest"),
    ]
    text = str(next(d for d in found if d.table == "power_samples"))
    assert "missing" in text and "expected 100" in text and "found 0" in text and ha in text and "run-0001" in text
    assert "simulated:Fabricated-GPU:x1" in text
    # The next write (of another run) surfaces it, and still lands.
    c, hc = _run("c")
    fresh = ResultStore(store.path, lock_timeout_s=30)
    lost = _write_quietly(fresh, c)
    assert len(lost) == 1 and "power_samples rows of run" in lost[0] and ha in lost[0] and "expected 100" in lost[0]
    assert fresh.query("SELECT count(*) AS n FROM experiment_results WHERE config_hash = ?", [hc]).column("n")[0].as_py() == 1
    # Reported once per store (the same difference does not re-run the full audit on every write) ...
    d, _hd = _run("d")
    assert _write_quietly(fresh, d) == []
    # ... and the audit keeps naming it until the run is written again.
    assert {x.table for x in fresh.audit()} == {"power_samples", "requests"}
    _write_quietly(fresh, a)
    assert fresh.audit() == []


def test_rows_written_outside_the_store_are_named_too(store: ResultStore, data_dir: Path) -> None:
    a, _ha = _run("a")
    _write_quietly(store, a)
    con = duckdb.connect(str(store.path))
    con.execute("INSERT INTO requests SELECT * REPLACE ('2026-11-02'::DATE AS run_date) FROM requests LIMIT 2")
    con.close()
    [d] = store.audit()
    assert (d.table, str(d.run_date), d.expected, d.found, d.source) == ("requests", "2026-11-02", 0, 2, "manifest")
    assert "did not write" in str(d)


def test_a_committed_write_that_vanished_from_the_file_is_named_by_the_next_write(store: ResultStore, data_dir: Path) -> None:
    # The loss locking.py describes: the file goes back to a state from before a committed, verified write
    # (manifest included).
    a, _ha = _run("a")
    b, hb = _run("b")
    _write_quietly(store, a)
    before = store.path.with_name("before.duckdb")
    shutil.copyfile(store.path, before)
    assert _write_quietly(store, b) == []
    shutil.copyfile(before, store.path)  # b's write is gone from the file, its manifest rows too
    assert store.row_counts()["experiment_results"] == 1
    found = store.audit()
    assert {(d.table, d.config_hash, d.expected, d.found, d.source) for d in found} == {
        (t, hb, n, 0, "journal") for t, n in
        [("experiment_results", 1), ("process_results", 1), ("environment_snapshots", 1), ("baselines", 1),
         ("power_samples", 100), ("requests", 8)]
    }
    assert all("write #2" in d.detail and "no longer holds it" in d.detail for d in found)
    c, _hc = _run("c")
    lost = _write_quietly(store, c)
    assert len(lost) == 1 and "6 run write(s)" in lost[0] and hb in lost[0] and "experiment_results" in lost[0]
    # Once surfaced, later writes do not repeat it; the audit names it until b is written again.
    d_, _hd = _run("d")
    assert _write_quietly(store, d_) == []
    assert len(store.audit()) == 6
    _write_quietly(store, b)
    assert store.audit() == []


def test_migration_4_backfills_the_manifest_of_an_existing_database(tmp_path: Path) -> None:
    db = tmp_path / "v3.duckdb"
    con = duckdb.connect(str(db))
    for number, filename, description in MIGRATIONS[:3]:
        con.execute(sql_text(filename))
        con.execute("INSERT INTO schema_version VALUES (?, now(), ?)", [number, description])
    con.execute("CREATE TABLE schema_views_dummy AS SELECT 1")  # unrelated table: ignored
    for day, h, n in [(DAY, "00000000000000e1", 3), ("2026-11-02", "00000000000000e1", 2)]:
        con.execute(
            "INSERT INTO requests (run_date, config_hash, run_id, process_index, request_index) "
            "SELECT ?::DATE, ?, 'old', 0, range FROM range(?)", [day, h, n])
    con.close()
    store = ResultStore(db, lock_timeout_s=30)
    store.ensure_schema()
    rows = store.query("SELECT run_date::VARCHAR AS d, hardware_id, row_count, writer_pid, write_seq FROM partition_manifest "
                       "WHERE table_name = 'requests' ORDER BY 1").to_pylist()
    assert rows == [{"d": DAY, "hardware_id": "unknown:no-gpu:x0", "row_count": 3, "writer_pid": None, "write_seq": None},
                    {"d": "2026-11-02", "hardware_id": "unknown:no-gpu:x0", "row_count": 2, "writer_pid": None,
                     "write_seq": None}]
    assert store.audit() == []


def test_discrepancy_text_names_table_run_and_counts() -> None:
    d = Discrepancy("requests", date(2026, 11, 1), "00000000000000aa", "r1", 8, 3, "manifest", "write #4 by pid 7",
                    "nvml:H100:x1")
    assert str(d) == ("requests rows of run (config_hash=00000000000000aa, hardware_id=nvml:H100:x1, run_id=r1, "
                      "run_date=2026-11-01) differs: expected 8 row(s), found 3 [per the manifest; write #4 by pid 7]")


@pytest.mark.parametrize("warn_as_error", [False, True])
def test_a_clean_store_writes_without_lost_run_warnings(store: ResultStore, data_dir: Path, warn_as_error: bool) -> None:
    a, _ha = _run("a")
    with warnings.catch_warnings():
        warnings.simplefilter("error" if warn_as_error else "default", PartitionLostWarning)
        store.write_run(a)
    assert store.audit() == []


def test_a_database_created_again_sets_the_old_journal_aside(store: ResultStore, data_dir: Path) -> None:
    a, ha = _run("a")
    _write_quietly(store, a)
    old_id = store.query("SELECT store_id FROM write_sequence").column("store_id")[0].as_py()
    store.path.unlink()  # deleted on purpose (a fresh start), the journal left behind
    fresh = ResultStore(store.path, lock_timeout_s=30)
    b, hb = _run("b")
    assert _write_quietly(fresh, b) == []  # not reported as losses
    assert fresh.audit() == []
    aside = store.journal_path.with_name(f"{store.journal_path.name}.{old_id[:8]}.old")
    assert aside.is_file() and {e["config_hash"] for e in J.read_entries(aside)} == {ha}
    assert {e["config_hash"] for e in J.read_entries(store.journal_path)} == {hb}


def test_a_restored_older_copy_still_reports_the_writes_it_lacks(store: ResultStore, data_dir: Path) -> None:
    # Same database (same store_id), older state: the journal is ahead, the writes it lacks are named.
    a, _ha = _run("a")
    _write_quietly(store, a)
    backup = store.path.with_name("backup.duckdb")
    shutil.copyfile(store.path, backup)
    b, hb = _run("b")
    _write_quietly(store, b)
    shutil.copyfile(backup, store.path)
    assert {d.config_hash for d in store.audit()} == {hb}


def test_writes_go_on_when_write_sequence_was_emptied_by_hand(store: ResultStore, data_dir: Path) -> None:
    a, _ha = _run("a")
    _write_quietly(store, a)
    con = duckdb.connect(str(store.path))
    con.execute("DELETE FROM write_sequence")
    con.close()
    b, _hb = _run("b")
    assert _write_quietly(store, b) == []  # a new identity; the old journal is set aside
    assert store.query("SELECT count(*) AS n FROM write_sequence").column("n")[0].as_py() == 1
    assert store.audit() == []
