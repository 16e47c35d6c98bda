"""ResultStore: one write path keyed by run (write_runs), atomic failure, validation, reads, injection inertness."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import duckdb
import pyarrow as pa
import pytest

from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.storage import ReadOnlyViolation, ResultStore, RunRecord, StorageError
from llem_pipeline.storage.rows import rows_to_table
from llem_pipeline_tests.storage.record_factory import make_config, make_record, requests_table, with_result

DAY = "2026-11-01"
ALL_TABLES = ("experiment_results", "process_results", "environment_snapshots", "baselines", "power_samples", "requests")


def _rebuilt(record: RunRecord, **fields) -> RunRecord:
    """Return ``record`` with some fields replaced (through the constructor, so validation runs)."""
    return RunRecord(**{**{f: getattr(record, f) for f in record.__dataclass_fields__}, **fields})


def _runs(store: ResultStore, table: str = "experiment_results") -> list[tuple]:
    return [tuple(r.values()) for r in store.query(
        f"SELECT run_date, hardware_id, run_id, count(*) AS n FROM {table} GROUP BY ALL ORDER BY ALL").to_pylist()]


def test_write_run_counts_rows_per_table(store: ResultStore, record: RunRecord) -> None:
    counts = store.write_run(record)
    assert counts == {"experiment_results": 1, "process_results": 1, "environment_snapshots": 1,
                      "baselines": 1, "power_samples": 100, "requests": 8}
    assert {k: v for k, v in store.row_counts().items() if k in counts} == counts
    keys = store.query("SELECT DISTINCT run_date, config_hash, hardware_id, run_id FROM power_samples").to_pylist()
    assert keys == [{"run_date": date(2026, 11, 1), "config_hash": record.config_hash,
                     "hardware_id": "simulated:Fabricated-GPU:x1", "run_id": "run-0001"}]


def test_writing_the_same_run_twice_leaves_row_counts_unchanged(store, record) -> None:
    store.write_run(record)
    before = store.row_counts()
    store.write_run(record)
    assert store.row_counts() == before


def test_a_second_run_of_the_same_config_and_day_is_kept(store) -> None:
    config = make_config()
    store.write_run(make_record(config, run_id="first", n_samples=50))
    store.write_run(make_record(config, run_id="second", n_samples=70, seed=1))
    assert _runs(store) == [(date(2026, 11, 1), "simulated:Fabricated-GPU:x1", "first", 1),
                            (date(2026, 11, 1), "simulated:Fabricated-GPU:x1", "second", 1)]
    assert store.row_counts()["power_samples"] == 120


def test_a_retry_replaces_only_its_own_run(store) -> None:
    config = make_config()
    store.write_runs([make_record(config, run_id="a", n_samples=50), make_record(config, run_id="b", n_samples=30)])
    store.write_run(make_record(config, run_id="a", n_samples=10, n_requests=2))  # retry of run a
    assert [tuple(r.values()) for r in store.query(
        "SELECT run_id, count(*) AS n FROM power_samples GROUP BY ALL ORDER BY ALL").to_pylist()] == [("a", 10), ("b", 30)]
    assert store.row_counts()["requests"] == 2 + 8
    assert store.row_counts()["experiment_results"] == 2


def test_a_retry_with_another_run_date_moves_the_run(store) -> None:
    config = make_config()
    store.write_run(make_record(config, run_id="a", run_date="2026-11-01"))
    store.write_run(make_record(config, run_id="a", run_date="2026-11-02"))
    for table in ALL_TABLES:
        days = store.query(f"SELECT DISTINCT run_date FROM {table}").column("run_date").to_pylist()
        assert days == [date(2026, 11, 2)], table
    assert store.query("SELECT run_date FROM config_stats").column("run_date").to_pylist() == [date(2026, 11, 2)]
    assert store.audit() == []


def test_simulated_and_real_runs_of_one_config_and_day_never_replace_each_other(store) -> None:
    config = make_config()
    store.write_run(make_record(config, run_id="same-id", device_kind="nvml", gpu_name="NVIDIA H100 80GB HBM3"))
    store.write_run(make_record(config, run_id="same-id", device_kind="simulated"))  # same run id, other hardware
    assert _runs(store) == [(date(2026, 11, 1), "nvml:H100-80GB-HBM3:x1", "same-id", 1),
                            (date(2026, 11, 1), "simulated:Fabricated-GPU:x1", "same-id", 1)]
    assert _runs(store, "power_samples") == [(date(2026, 11, 1), "nvml:H100-80GB-HBM3:x1", "same-id", 100),
                                             (date(2026, 11, 1), "simulated:Fabricated-GPU:x1", "same-id", 100)]


def test_write_runs_writes_a_batch_in_one_transaction(store) -> None:
    records = [make_record(make_config(batch_size=b), run_id=f"r{b}", n_samples=5 + b, seed=b) for b in range(1, 6)]
    counts = store.write_runs(records)
    assert counts["experiment_results"] == 5 and counts["power_samples"] == sum(5 + b for b in range(1, 6))
    assert store.query("SELECT max(write_seq) AS s FROM partition_manifest").column("s").to_pylist() == [1]


def test_failure_mid_transaction_keeps_previous_rows(store, record) -> None:
    store.write_run(record)
    before = store.row_counts()
    requests = requests_table(3)
    bad = requests.set_column(requests.schema.get_field_index("submit_s"), "submit_s",
                              pa.array(["not-a-number"] * 3, pa.string()))
    # The requests INSERT fails inside the transaction (submit_s cannot be cast to DOUBLE) after the DELETEs
    # and the other tables' INSERTs already ran.
    with pytest.raises(duckdb.ConversionException, match="not-a-number"):
        store.write_runs([_rebuilt(record, requests=bad),
                          make_record(make_config(batch_size=2), run_id="other", n_requests=0)])
    assert store.row_counts() == before
    assert store.query("SELECT DISTINCT run_id FROM requests").column("run_id").to_pylist() == ["run-0001"]


def test_column_types_that_do_not_combine_are_refused_before_the_transaction(store, record) -> None:
    requests = requests_table(3)
    text = requests.set_column(requests.schema.get_field_index("submit_s"), "submit_s", pa.array(["1"] * 3))
    with pytest.raises(StorageError, match=r"RunRecord.requests: the records' columns have types that do not combine"):
        store.write_runs([_rebuilt(record, requests=text), make_record(make_config(batch_size=2), run_id="other")])
    assert not store.path.exists() or store.row_counts()["experiment_results"] == 0


def test_unknown_or_duplicate_columns_are_refused(record) -> None:
    with pytest.raises(StorageError, match=r"RunRecord.requests=\['bogus'\]: unknown column"):
        _rebuilt(record, requests=pa.table({"request_index": [1], "bogus": [2]}))
    with pytest.raises(StorageError, match=r"RunRecord.power_samples=\['run_id'\]: unknown column.*the store adds the keys"):
        _rebuilt(record, power_samples=pa.table({"run_id": ["x"]}))
    dup = pa.table([pa.array([1]), pa.array([2])], names=["request_index", "request_index"])
    with pytest.raises(StorageError, match="duplicate column"):
        _rebuilt(record, requests=dup)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"run_id": "../../etc"}, r"RunRecord.run_id='../../etc'"),
        ({"run_id": "a b"}, "run_id"),
        ({"run_id": "x" * 65}, "run_id"),
        ({"config_hash": "0123456789ABCDEF"}, "config_hash"),
        ({"config_hash": "0123456789abcdef\n"}, "config_hash"),
        ({"run_date": "2026-13-01"}, r"RunRecord.run_date='2026-13-01'.*YYYY-MM-DD"),
        ({"run_date": "2026-11-01; DROP TABLE requests"}, "run_date"),
        ({"run_date": datetime(2026, 11, 1, tzinfo=UTC)}, "run_date"),
        ({"hardware_id": "H100"}, r"RunRecord.hardware_id='H100'.*identity.hardware_id"),
        ({"hardware_id": "nvml:H100;DROP:x1"}, "hardware_id"),
        ({"workload_hash": "abc"}, "workload_hash"),
        ({"workload_hash": "0" * 16}, r"workload_hash.*effective_config has workload hash"),
        ({"cycle": -1}, "cycle"),
        ({"cycle": True}, "cycle"),
        ({"label": "two\nlines"}, "label"),
        ({"measurement_key": ""}, "measurement_key"),
        ({"study": "x" * 300}, "study"),
        ({"result": "not a result"}, "result"),
        ({"processes": ["not a process"]}, "processes"),
        ({"environment": {"python_version": "3"}}, "environment"),
        ({"baseline": {"devices": "none"}}, r"RunRecord.baseline: baseline 'devices'"),
        ({"power_samples": [1, 2]}, "power_samples"),
    ],
)
def test_bad_fields_are_refused_naming_field_and_value(record, fields, match) -> None:
    with pytest.raises(StorageError, match=match):
        _rebuilt(record, **fields)


def test_result_of_another_config_is_refused(record) -> None:
    other = make_record(make_config(batch_size=4))
    with pytest.raises(StorageError, match=r"result.measurement_config_hash=.*must equal config_hash"):
        _rebuilt(record, result=other.result)


def test_a_simulated_result_cannot_be_stored_as_real_hardware(record) -> None:
    with pytest.raises(StorageError, match=r"hardware_id='nvml:H100:x1'.*contradicts.*simulated"):
        _rebuilt(record, hardware_id="nvml:H100:x1")


def test_write_runs_refuses_empty_foreign_and_repeated_runs(store, record) -> None:
    with pytest.raises(StorageError, match="at least one RunRecord"):
        store.write_runs([])
    with pytest.raises(StorageError, match=r"records\[0\] is a dict"):
        store.write_runs([{"run_id": "x"}])  # type: ignore[list-item]
    with pytest.raises(StorageError, match=r"records\[1\] repeats the run"):
        store.write_runs([record, record])
    with pytest.raises(StorageError, match="write_run takes one"):
        store.write_runs(record)  # type: ignore[arg-type]
    assert not store.path.exists() or store.row_counts()["experiment_results"] == 0


def test_read_run_rejects_tables_outside_the_allow_list(store, record) -> None:
    store.write_run(record)
    with pytest.raises(StorageError, match="not one of"):
        store.read_run("requests; DROP TABLE baselines", "run-0001")
    with pytest.raises(StorageError, match="not one of"):
        store.read_run("experiment_configs", "run-0001")
    with pytest.raises(StorageError, match="run_id"):
        store.read_run("requests", "x'; --")


def test_missing_optional_parts_write_zero_rows(store) -> None:
    record = make_record(with_baseline=False, with_environment=False, n_requests=0)
    counts = store.write_run(_rebuilt(record, requests=pa.table({})))
    assert counts["baselines"] == 0 and counts["requests"] == 0 and counts["environment_snapshots"] == 0


def test_read_result_and_read_run_round_trip(store) -> None:
    config = make_config()
    first, second = make_record(config, run_id="r1", seed=1), make_record(config, run_id="r2", run_date="2026-11-02", seed=2)
    store.write_runs([first, second])
    assert store.read_result("r2") == second.result
    assert store.read_result("r1", config_hash=first.config_hash, hardware_id=first.hardware_id) == first.result
    with pytest.raises(LookupError, match="no experiment result"):
        store.read_result("r3")
    samples = store.read_run("power_samples", "r1")
    assert samples.num_rows == 100 and samples.column("t_mono_s").to_pylist() == sorted(samples.column("t_mono_s").to_pylist())
    assert store.read_run("requests", "r2").column("request_index").to_pylist() == list(range(8))


def test_read_result_of_a_run_id_shared_by_two_measurements_asks_which(store) -> None:
    config = make_config()
    store.write_run(make_record(config, run_id="shared"))
    store.write_run(make_record(config, run_id="shared", device_kind="nvml", gpu_name="NVIDIA A100-SXM4-80GB"))
    with pytest.raises(StorageError, match="several measurements"):
        store.read_result("shared")
    assert store.read_result("shared", hardware_id="nvml:A100-SXM4-80GB:x1").device_kind == "nvml"


def test_headline_columns_use_the_shared_vocabulary(store, record) -> None:
    store.write_run(_rebuilt(record, cycle=1, measurement_key="demo~batch_size=1~sim~4b4d87c9",
                             label="demo · batch_size=1 · simulated"))
    row = store.query("SELECT * FROM experiment_results").to_pylist()[0]
    res = record.result
    assert "avg_energy_per_token_j" not in row and "avg_tokens_per_second" not in row
    assert row["j_per_token"] == pytest.approx(res.avg_energy_per_token_j)
    assert row["tokens_per_s"] == pytest.approx(res.avg_tokens_per_second)
    assert row["total_energy_j"] == res.total_energy_j and row["total_tokens"] == res.total_tokens
    assert row["ttft_p50_ms"] == res.latency_stats.ttft.p50_ms
    assert row["is_simulated"] is True and row["device_kind"] == "simulated"
    assert row["batch_size"] == 1 and row["setting"] == "batch_size=1"
    assert row["start_time"] == res.start_time
    assert row["warnings"] == list(res.measurement_warnings)
    assert (row["hardware_id"], row["workload_hash"], row["cycle"]) == (record.hardware_id, record.workload_hash, 1)
    assert row["measurement_key"] == "demo~batch_size=1~sim~4b4d87c9" and row["label"] == "demo · batch_size=1 · simulated"


def test_study_is_filled_from_experiment_configs(store) -> None:
    config = make_config()
    h = compute_measurement_config_hash(config)
    assert store.upsert_configs("demo", {h: config}) == 1
    store.write_run(make_record(config))
    assert store.query("SELECT study FROM experiment_results").column("study").to_pylist() == ["demo"]
    store.write_run(make_record(config, run_id="r2", study="explicit"))
    rows = store.query("SELECT run_id, study FROM experiment_results").to_pylist()
    assert {r["run_id"]: r["study"] for r in rows} == {"run-0001": "demo", "r2": "explicit"}


def test_upsert_configs_is_idempotent_and_checks_hashes(store) -> None:
    a, b = make_config(batch_size=1), make_config(batch_size=8)
    configs = {compute_measurement_config_hash(c): c for c in (a, b)}
    store.upsert_configs("demo", configs)
    store.upsert_configs("demo", configs)
    store.upsert_configs("nightly", {compute_measurement_config_hash(a): a})
    assert store.row_counts()["experiment_configs"] == 3
    with pytest.raises(StorageError, match="hashes to"):
        store.upsert_configs("demo", {"0123456789abcdef": a})


def test_injection_through_study_names_labels_and_config_fields_is_inert(store) -> None:
    evil_model = "x'); DROP TABLE experiment_results; --"
    config = make_config(model=evil_model)
    h = compute_measurement_config_hash(config)
    evil_study = "demo'; DELETE FROM experiment_configs; --"
    store.upsert_configs(evil_study, {h: config})
    store.upsert_configs("other", {compute_measurement_config_hash(make_config()): make_config()})
    store.write_run(make_record(config, study=evil_study, label="'); DROP TABLE requests; --"))
    counts = store.row_counts()
    assert counts["experiment_configs"] == 2 and counts["experiment_results"] == 1 and counts["requests"] == 8
    row = store.query("SELECT model, study, label FROM experiment_results").to_pylist()[0]
    assert row == {"model": evil_model, "study": evil_study, "label": "'); DROP TABLE requests; --"}
    got = store.query("SELECT config_hash FROM experiment_configs WHERE study = ?", [evil_study])
    assert got.column("config_hash").to_pylist() == [h]


def test_previous_result_compares_like_with_like(store) -> None:
    config = make_config()
    h = compute_measurement_config_hash(config)
    h100, a100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"
    day1 = datetime(2026, 11, 1, 2, tzinfo=UTC)
    store.write_runs([
        make_record(config, run_id="h-1", device_kind="nvml", gpu_name=h100, start=day1, power_w=100.0),
        make_record(config, run_id="a-1", device_kind="nvml", gpu_name=a100, start=day1 + timedelta(hours=1)),
        make_record(config, run_id="s-1", start=day1 + timedelta(hours=2)),  # simulated, later
        make_record(config, run_id="h-2", device_kind="nvml", gpu_name=h100, start=day1 + timedelta(days=1),
                    run_date="2026-11-02", power_w=300.0),
    ])
    h100_id = "nvml:H100-80GB-HBM3:x1"
    j, day, run = store.previous_result(h, h100_id, day1 + timedelta(days=1, hours=5), "h-2")
    assert (day, run) == (date(2026, 11, 1), "h-1") and j == pytest.approx(store.read_result("h-1").avg_energy_per_token_j)
    j2, _, run2 = store.previous_result(h, h100_id, day1 + timedelta(days=2), None)
    assert run2 == "h-2" and j2 > j
    assert store.previous_result(h, h100_id, day1, None) is None  # nothing ended before the first run
    assert store.previous_result(h, "nvml:H200:x1", day1 + timedelta(days=3), None) is None
    with pytest.raises(StorageError, match="naive"):
        store.previous_result(h, h100_id, datetime(2026, 11, 3), None)
    assert ResultStore(store.path.with_name("none.duckdb")).previous_result(h, h100_id, day1, None) is None


def test_config_stats_of_repeats_and_their_cv(store) -> None:
    config = make_config()
    base = make_record(config, run_id="c0")
    records = [with_result(_rebuilt(base, run_id=f"c{i}", cycle=i), avg_energy_per_token_j=j)
               for i, j in enumerate((1.00, 1.02, 0.98, 1.30))]
    store.write_runs(records)
    row = store.config_stats(base.config_hash, base.hardware_id, DAY)
    assert row is not None and row["n_runs"] == 4 and row["run_ids"] == ["c0", "c1", "c2", "c3"]
    values = [1.00, 1.02, 0.98, 1.30]
    mean = sum(values) / 4
    std = (sum((v - mean) ** 2 for v in values) / 3) ** 0.5
    assert row["j_per_token_mean"] == pytest.approx(mean) and row["j_per_token_median"] == pytest.approx(1.01)
    assert row["j_per_token_std"] == pytest.approx(std) and row["j_per_token_cv"] == pytest.approx(std / mean)
    assert row["j_per_token_cv"] > 0.05  # what the repeatability check flags
    assert 0.98 <= row["j_per_token_ci_low"] < mean < row["j_per_token_ci_high"] <= 1.30
    assert store.config_stats(base.config_hash, base.hardware_id, "2026-11-02") is None


def test_query_refuses_non_reads(store) -> None:
    store.ensure_schema()
    for sql in ("INSERT INTO requests (run_date, config_hash, run_id) VALUES ('2026-01-01', 'a', 'b')",
                "DROP TABLE experiment_results", "DELETE FROM experiment_results", "SELECT 1; DROP TABLE experiment_results",
                "COPY experiment_results TO '/tmp/x.csv'", "ATTACH '/tmp/other.duckdb' AS o", "CREATE TABLE x AS SELECT 1",
                "SET threads = 1", "INSTALL httpfs"):
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


PROGRESS_PROBE = """
import sys
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.storage.record_factory import make_record
seen = []
class Recording(ResultStore):
    def _insert(self, con, name, table, sql, params=()):
        seen.append(con.execute("SELECT current_setting('enable_progress_bar')").fetchall()[0][0])
        super()._insert(con, name, table, sql, params)
store = Recording(sys.argv[1], lock_timeout_s=5)
store.write_run(make_record(n_samples=5))
read = store.query("SELECT current_setting('enable_progress_bar') AS v").column("v").to_pylist()
print("write", sorted(set(seen)), "read", read)
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
