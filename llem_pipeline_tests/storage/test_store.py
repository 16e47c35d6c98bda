"""ResultStore: idempotent partition writes, atomic failure, validation, reads, injection inertness."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.storage import ReadOnlyViolation, ResultStore, RunFolderError, StorageError
from llem_pipeline.storage.rows import rows_to_table
from llem_pipeline_tests.storage.run_folder_factory import (
    make_config,
    requests_table,
    timeseries_table,
    write_run_folder,
)

DAY = "2026-11-01"


def _write(store: ResultStore, folder: Path, config_hash: str, run_id: str = "run-0001", day: str = DAY, **kw):
    return store.write_run_folder(folder, run_date=day, config_hash=config_hash, run_id=run_id, **kw)


def test_write_run_folder_counts_rows_per_table(store: ResultStore, run_folder: tuple[Path, str]) -> None:
    folder, h = run_folder
    counts = _write(store, folder, h)
    assert counts == {
        "experiment_results": 1, "process_results": 1, "environment_snapshots": 1,
        "baselines": 1, "power_samples": 100, "requests": 8,
    }
    assert {k: v for k, v in store.row_counts().items() if k in counts} == counts


def test_writing_the_same_run_twice_leaves_row_counts_unchanged(store, run_folder) -> None:
    folder, h = run_folder
    _write(store, folder, h)
    before = store.row_counts()
    _write(store, folder, h)
    assert store.row_counts() == before


def test_rewrite_with_new_run_id_replaces_the_partition(store, data_dir) -> None:
    config = make_config()
    h = compute_measurement_config_hash(config)
    _write(store, write_run_folder(data_dir, config=config, run_id="first", n_samples=50), h, "first")
    _write(store, write_run_folder(data_dir, config=config, run_id="second", n_samples=70), h, "second")
    ids = store.query("SELECT DISTINCT run_id FROM power_samples").column("run_id").to_pylist()
    assert ids == ["second"]
    assert store.row_counts()["power_samples"] == 70
    assert store.row_counts()["experiment_results"] == 1


def test_other_partitions_are_untouched(store, data_dir) -> None:
    config = make_config()
    h = compute_measurement_config_hash(config)
    _write(store, write_run_folder(data_dir, config=config, run_date="2026-11-01"), h, day="2026-11-01")
    _write(store, write_run_folder(data_dir, config=config, run_date="2026-11-02"), h, day="2026-11-02")
    _write(store, write_run_folder(data_dir, config=config, run_date="2026-11-02"), h, day="2026-11-02")
    assert store.row_counts()["experiment_results"] == 2
    assert store.row_counts()["power_samples"] == 200


def test_failure_mid_transaction_keeps_previous_rows(store, run_folder) -> None:
    folder, h = run_folder
    _write(store, folder, h)
    before = store.row_counts()
    good = timeseries_table(500)
    # The last insert fails inside the transaction (submit_s cannot be cast to DOUBLE) after the
    # DELETEs and the samples INSERT already ran.
    requests = requests_table(3)
    bad_requests = requests.set_column(
        requests.schema.get_field_index("submit_s"), "submit_s", pa.array(["not-a-number"] * 3, pa.string())
    )
    with pytest.raises(duckdb.ConversionException, match="not-a-number"):
        store.write_tables(DAY, h, "run-0002", {"power_samples": good, "requests": bad_requests})
    assert store.row_counts() == before
    assert store.query("SELECT DISTINCT run_id FROM requests").column("run_id").to_pylist() == ["run-0001"]


def test_unknown_column_is_refused_and_nothing_changes(store, run_folder) -> None:
    folder, h = run_folder
    _write(store, folder, h)
    before = store.row_counts()
    with pytest.raises(StorageError, match="unknown column"):
        store.write_tables(DAY, h, "run-0002", {"requests": pa.table({"request_index": [1], "bogus": [2]})})
    assert store.row_counts() == before


def test_duplicate_columns_are_refused(store) -> None:
    t = pa.table([pa.array([1]), pa.array([2])], names=["request_index", "request_index"])
    with pytest.raises(StorageError, match="duplicate column"):
        store.write_tables(DAY, "0123456789abcdef", "r1", {"requests": t})


def test_partition_columns_must_match(store) -> None:
    h = "0123456789abcdef"
    t = pa.table({"run_date": [date(2026, 11, 2)], "request_index": [1]})
    with pytest.raises(StorageError, match="run_date differs"):
        store.write_tables(DAY, h, "r1", {"requests": t})
    t = pa.table({"config_hash": ["fedcba9876543210"], "request_index": [1]})
    with pytest.raises(StorageError, match="config_hash differs"):
        store.write_tables(DAY, h, "r1", {"requests": t})
    ok = pa.table({"run_date": [DAY], "config_hash": [h], "run_id": ["r1"], "request_index": [1]})
    assert store.write_tables(DAY, h, "r1", {"requests": ok}) == {"requests": 1}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"run_id": "../../etc"}, "run_id"),
        ({"run_id": "a b"}, "run_id"),
        ({"run_id": "x" * 65}, "run_id"),
        ({"config_hash": "0123456789ABCDEF"}, "config_hash"),
        ({"config_hash": "0123456789abcdef\n"}, "config_hash"),
        ({"run_date": "2026-13-01"}, "run_date"),
        ({"run_date": "2026-11-01; DROP TABLE requests"}, "run_date"),
    ],
)
def test_bad_partition_ids_are_rejected(store, kwargs, match) -> None:
    args = {"run_date": DAY, "config_hash": "0123456789abcdef", "run_id": "r1", **kwargs}
    with pytest.raises(StorageError, match=match):
        store.write_tables(args["run_date"], args["config_hash"], args["run_id"], {"requests": requests_table(1)})


def test_unknown_table_is_rejected(store) -> None:
    with pytest.raises(StorageError, match="not one of"):
        store.write_tables(DAY, "0123456789abcdef", "r1", {"requests; DROP TABLE baselines": requests_table(1)})
    with pytest.raises(StorageError, match="not one of"):
        store.write_tables(DAY, "0123456789abcdef", "r1", {"experiment_configs": requests_table(1)})


def test_run_folder_outside_data_dir_is_refused(store, tmp_path) -> None:
    outside = tmp_path / "elsewhere"
    config = make_config()
    folder = write_run_folder(outside, config=config)
    with pytest.raises(RunFolderError, match="outside the data dir"):
        _write(store, folder, compute_measurement_config_hash(config))
    assert not store.path.exists() or store.row_counts()["experiment_results"] == 0


def test_run_folder_escaping_through_dotdot_or_symlink_is_refused(store, data_dir, tmp_path) -> None:
    config = make_config()
    h = compute_measurement_config_hash(config)
    folder = write_run_folder(tmp_path / "elsewhere", config=config)
    with pytest.raises(RunFolderError, match="outside the data dir"):
        _write(store, data_dir / ".." / "elsewhere" / folder.relative_to(tmp_path / "elsewhere"), h)
    link = data_dir / "runs" / DAY / h
    link.mkdir(parents=True)
    (link / "run-0001").symlink_to(folder)
    with pytest.raises(RunFolderError, match="outside the data dir"):
        _write(store, link / "run-0001", h)


def test_hash_mismatch_is_refused(store, data_dir) -> None:
    folder = write_run_folder(data_dir, config=make_config())
    with pytest.raises(RunFolderError, match="differs from config_hash"):
        _write(store, folder, "0123456789abcdef")


def test_invalid_result_json_names_the_file(store, run_folder) -> None:
    folder, h = run_folder
    data = json.loads((folder / "result.json").read_text())
    del data["total_tokens"]
    (folder / "result.json").write_text(json.dumps(data))
    with pytest.raises(RunFolderError, match=r"result\.json: not a valid ExperimentResult[\s\S]*total_tokens"):
        _write(store, folder, h)


def test_folder_name_must_be_the_run_id(store, run_folder) -> None:
    folder, h = run_folder
    with pytest.raises(RunFolderError, match="named 'run-0001' but run_id='other'"):
        _write(store, folder, h, run_id="other")


def test_missing_optional_files_write_zero_rows(store, data_dir) -> None:
    config = make_config()
    folder = write_run_folder(data_dir, config=config, with_baseline=False, with_environment=False)
    (folder / "requests.parquet").unlink()
    counts = _write(store, folder, compute_measurement_config_hash(config))
    assert counts["baselines"] == 0 and counts["requests"] == 0
    assert counts["environment_snapshots"] == 0  # fabricated results carry no embedded snapshot


def test_extra_parquet_column_is_refused(store, run_folder) -> None:
    import pyarrow.parquet as pq

    folder, h = run_folder
    t = pq.read_table(folder / "timeseries.parquet").append_column("secret", pa.array(["x"] * 100))
    pq.write_table(t, folder / "timeseries.parquet")
    with pytest.raises(RunFolderError, match="unknown column"):
        _write(store, folder, h)


def test_read_result_round_trips(store, data_dir) -> None:
    config = make_config()
    h = compute_measurement_config_hash(config)
    f1 = write_run_folder(data_dir, config=config, run_date="2026-11-01", seed=1)
    f2 = write_run_folder(data_dir, config=config, run_date="2026-11-02", seed=2)
    _write(store, f1, h, day="2026-11-01")
    _write(store, f2, h, day="2026-11-02")
    from llem_pipeline.domain import ExperimentResult

    original = ExperimentResult.model_validate_json((f2 / "result.json").read_text())
    assert store.read_result(h) == original
    assert store.read_result(h, "2026-11-01").start_time.date() == date(2026, 11, 1)
    with pytest.raises(LookupError, match="no experiment result"):
        store.read_result(h, "2026-10-01")


def test_headline_columns_match_the_result(store, run_folder) -> None:
    folder, h = run_folder
    _write(store, folder, h)
    row = store.query("SELECT * FROM experiment_results").to_pylist()[0]
    res = store.read_result(h)
    assert row["total_energy_j"] == res.total_energy_j
    assert row["avg_energy_per_token_j"] == pytest.approx(res.total_energy_j / res.total_tokens)
    assert row["total_tokens"] == res.total_tokens
    assert row["ttft_p50_ms"] == res.latency_stats.ttft.p50_ms
    assert row["is_simulated"] is True and row["device_kind"] == "simulated"
    assert row["batch_size"] == 1 and row["setting"] == "batch_size=1"
    assert row["start_time"] == res.start_time
    assert row["warnings"] == list(res.measurement_warnings)


def test_study_is_filled_from_experiment_configs(store, data_dir) -> None:
    config = make_config()
    h = compute_measurement_config_hash(config)
    assert store.upsert_configs("demo", {h: config}) == 1
    _write(store, write_run_folder(data_dir, config=config), h)
    assert store.query("SELECT study FROM experiment_results").column("study").to_pylist() == ["demo"]
    _write(store, write_run_folder(data_dir, config=config, run_id="r2"), h, run_id="r2", study="explicit")
    assert store.query("SELECT study FROM experiment_results").column("study").to_pylist() == ["explicit"]


def test_upsert_configs_is_idempotent_and_checks_hashes(store) -> None:
    a, b = make_config(batch_size=1), make_config(batch_size=8)
    configs = {compute_measurement_config_hash(c): c for c in (a, b)}
    store.upsert_configs("demo", configs)
    store.upsert_configs("demo", configs)
    store.upsert_configs("nightly", {compute_measurement_config_hash(a): a})
    assert store.row_counts()["experiment_configs"] == 3
    with pytest.raises(StorageError, match="hashes to"):
        store.upsert_configs("demo", {"0123456789abcdef": a})


def test_injection_through_study_names_and_config_fields_is_inert(store, data_dir) -> None:
    evil_model = "x'); DROP TABLE experiment_results; --"
    config = make_config(model=evil_model)
    h = compute_measurement_config_hash(config)
    evil_study = "demo'; DELETE FROM experiment_configs; --"
    store.upsert_configs(evil_study, {h: config})
    store.upsert_configs("other", {compute_measurement_config_hash(make_config()): make_config()})
    _write(store, write_run_folder(data_dir, config=config), h, study=evil_study)
    counts = store.row_counts()
    assert counts["experiment_configs"] == 2 and counts["experiment_results"] == 1
    row = store.query("SELECT model, study FROM experiment_results").to_pylist()[0]
    assert row == {"model": evil_model, "study": evil_study}
    got = store.query("SELECT config_hash FROM experiment_configs WHERE study = ?", [evil_study])
    assert got.column("config_hash").to_pylist() == [h]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO requests (run_date, config_hash, run_id) VALUES ('2026-01-01', 'a', 'b')",
        "DROP TABLE experiment_results",
        "DELETE FROM experiment_results",
        "SELECT 1; DROP TABLE experiment_results",
        "COPY experiment_results TO '/tmp/x.csv'",
        "ATTACH '/tmp/other.duckdb' AS o",
        "CREATE TABLE x AS SELECT 1",
        "SET threads = 1",
        "INSTALL httpfs",
    ],
)
def test_query_refuses_non_reads(store, sql) -> None:
    store.ensure_schema()
    with pytest.raises(ReadOnlyViolation):
        store.query(sql)
    assert store.row_counts()["experiment_results"] == 0


def test_query_cannot_read_files(store, tmp_path) -> None:
    store.ensure_schema()
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
        store.query("SELECT * FROM read_csv(?)", [str(secret)])


def test_query_on_missing_database_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(StorageError, match="no DuckDB database"):
        ResultStore(tmp_path / "none.duckdb").query("SELECT 1")


def test_rows_to_table_of_nothing_is_empty() -> None:
    assert rows_to_table([]).num_rows == 0


def _batch_rows(n_parts: int, run_id: str = "bulk", samples_per_part: int = 5) -> dict[str, pa.Table]:
    tables = []
    for p in range(n_parts):
        t = timeseries_table(samples_per_part, seed=p)
        n = t.num_rows
        t = t.add_column(0, "run_id", pa.array([run_id] * n))
        t = t.add_column(0, "config_hash", pa.array([f"{p:016x}"] * n))
        t = t.add_column(0, "run_date", pa.array([date(2026, 11, 1)] * n, pa.date32()))
        tables.append(t)
    return {"power_samples": pa.concat_tables(tables)}


def test_write_batch_replaces_many_partitions_at_once(store) -> None:
    assert store.write_batch(_batch_rows(10)) == {"power_samples": 50}
    assert store.write_batch(_batch_rows(10, run_id="again", samples_per_part=3)) == {"power_samples": 30}
    assert store.row_counts()["power_samples"] == 30
    assert store.query("SELECT DISTINCT run_id FROM power_samples").column("run_id").to_pylist() == ["again"]
    # A single-partition write next to the batch touches only its partition.
    store.write_tables(DAY, f"{3:016x}", "single", {"power_samples": timeseries_table(7)})
    assert store.row_counts()["power_samples"] == 30 - 3 + 7



def test_write_batch_replaces_only_its_partitions_inside_their_key_ranges(store) -> None:
    # The DELETE carries min/max of the keys (row-group skipping); (d1, h2) and (d2, h1) lie inside both
    # ranges but are not written, so they must survive.
    def part(day: date, h: str, run_id: str, n: int) -> pa.Table:
        t = timeseries_table(n)
        t = t.add_column(0, "run_id", pa.array([run_id] * n))
        t = t.add_column(0, "config_hash", pa.array([h] * n))
        return t.add_column(0, "run_date", pa.array([day] * n, pa.date32()))

    d1, d2, h1, h2 = date(2026, 11, 1), date(2026, 11, 3), "00000000000000a1", "00000000000000a9"
    old = [part(d, h, "old", 4) for d in (d1, d2) for h in (h1, h2)]
    store.write_batch({"power_samples": pa.concat_tables(old)})
    store.write_batch({"power_samples": pa.concat_tables([part(d1, h1, "new", 6), part(d2, h2, "new", 7)])})
    rows = store.query("SELECT run_date, config_hash, run_id, count(*) AS n FROM power_samples GROUP BY ALL ORDER BY ALL")
    assert [tuple(r.values()) for r in rows.to_pylist()] == [
        (d1, h1, "new", 6), (d1, h2, "old", 4), (d2, h1, "old", 4), (d2, h2, "new", 7)
    ]

def test_write_batch_validates_ids_and_run_ids(store) -> None:
    rows = _batch_rows(2)["power_samples"]
    bad_hash = rows.set_column(1, "config_hash", pa.array(["x'; DROP TABLE requests"] * rows.num_rows))
    with pytest.raises(StorageError, match="config_hash has malformed"):
        store.write_batch({"power_samples": bad_hash})
    mixed = rows.set_column(2, "run_id", pa.array([f"r{i}" for i in range(rows.num_rows)]))
    with pytest.raises(StorageError, match="more than one run_id"):
        store.write_batch({"power_samples": mixed})
    with pytest.raises(StorageError, match="lacks partition column"):
        store.write_batch({"power_samples": rows.drop_columns(["run_id"])})
    assert store.row_counts()["power_samples"] == 0



PROGRESS_PROBE = """
import sys
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.storage.run_folder_factory import timeseries_table
seen = []
class Recording(ResultStore):
    def _insert(self, con, name, table, sql, params=()):
        seen.append(con.execute("SELECT current_setting('enable_progress_bar')").fetchall()[0][0])
        super()._insert(con, name, table, sql, params)
store = Recording(sys.argv[1], lock_timeout_s=5)
store.write_tables("2026-11-01", "00000000000000dd", "r", {"power_samples": timeseries_table(5)})
read = store.query("SELECT current_setting('enable_progress_bar') AS v").column("v").to_pylist()
print("write", seen, "read", read)
"""


def test_store_connections_never_print_a_progress_bar(store: ResultStore) -> None:
    # DuckDB prints its progress bar to stdout for any statement over 2 s, also into a pipe (it is on by
    # default in a plain process; pytest's captured stdout turns it off, hence the subprocess).
    import subprocess
    import sys

    from llem_pipeline_tests.reliability.support import PROJECT_ROOT

    out = subprocess.run([sys.executable, "-c", PROGRESS_PROBE, str(store.path)], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "write [False] read [False]"
