"""`llem sql`: read-only, parameters, formats, refusals, injection through options."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from llem_pipeline.cli import main
from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.storage import ResultStore
from llem_pipeline.storage.sql_cli import main_sql, parse_param
from llem_pipeline_tests.storage.record_factory import make_config, make_record


@pytest.fixture
def db(store: ResultStore) -> Path:
    for bs in (1, 8):
        config = make_config(batch_size=bs)
        h = compute_measurement_config_hash(config)
        store.upsert_configs("demo", {h: config})
        store.write_run(make_record(config))
    return store.path


def test_json_output_with_parameters(db: Path, capsys) -> None:
    rc = main_sql(["SELECT setting, total_tokens FROM experiment_results WHERE batch_size = ? ORDER BY setting",
                   "--db", str(db), "--format", "json", "--param", "8"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out) == [{"setting": "batch_size=8", "total_tokens": 1024}]


def test_csv_output_of_a_view(db: Path, capsys) -> None:
    assert main_sql(["SELECT setting, n_runs FROM efficiency ORDER BY setting", "--db", str(db),
                     "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == ["setting,n_runs", "batch_size=1,1", "batch_size=8,1"]


def test_table_output_through_the_llem_dispatcher(db: Path, capsys) -> None:
    assert main(["sql", "SELECT model, setting, j_per_token FROM efficiency", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "batch_size=8" in out and "j_per_token" in out and "2 row(s)" in out


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO experiment_configs SELECT * FROM experiment_configs",
        "DROP TABLE experiment_results",
        "DELETE FROM experiment_results",
        "UPDATE experiment_results SET study = 'x'",
        "SELECT 1; DROP TABLE experiment_results",
        "COPY experiment_results TO 'out.csv'",
        "ATTACH 'evil.duckdb'",
    ],
)
def test_writes_are_refused(db: Path, sql: str, capsys) -> None:
    before = ResultStore(db).row_counts()
    assert main_sql([sql, "--db", str(db)]) == 2
    assert "refused" in capsys.readouterr().err
    assert ResultStore(db).row_counts() == before


def test_parameters_are_bound_not_pasted(db: Path, capsys) -> None:
    evil = "demo' OR '1'='1"
    assert main_sql(["SELECT count(*) AS n FROM experiment_configs WHERE study = ?", "--db", str(db),
                     "--format", "json", "--param", evil]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 0}]
    assert main_sql(["SELECT count(*) AS n FROM experiment_configs WHERE study = ?", "--db", str(db),
                     "--format", "json", "--param", "demo"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 2}]


def test_db_option_is_a_path_not_sql(db: Path, tmp_path: Path, capsys) -> None:
    evil = str(tmp_path / "x.duckdb'; DROP TABLE experiment_results; --")
    assert main_sql(["SELECT 1", "--db", evil]) == 1
    assert "no DuckDB database" in capsys.readouterr().err
    assert not Path(evil).exists()
    assert ResultStore(db).row_counts()["experiment_results"] == 2


def test_sql_errors_are_reported_not_raised(db: Path, capsys) -> None:
    assert main_sql(["SELECT * FROM no_such_table", "--db", str(db)]) == 1
    assert "no_such_table" in capsys.readouterr().err


def test_reads_while_the_file_is_open_read_only_elsewhere(db: Path, capsys) -> None:
    # A plain `duckdb -readonly` style reader in the same process does not block `llem sql`.
    other = duckdb.connect(str(db), read_only=True, config={"enable_external_access": False})
    try:
        assert main_sql(["SELECT count(*) AS n FROM latest_results", "--db", str(db), "--format", "json"]) == 0
    finally:
        other.close()
    assert json.loads(capsys.readouterr().out) == [{"n": 2}]


def test_parse_param() -> None:
    assert parse_param("8") == 8 and parse_param("-3") == -3
    assert parse_param("0.5") == 0.5 and parse_param("1e-3") == 0.001
    assert parse_param("abc") == "abc" and parse_param("2026-11-01") == "2026-11-01"


def test_audit_reports_a_clean_file_and_then_a_lost_run(db: Path, capsys) -> None:
    assert main_sql(["--audit", "--db", str(db)]) == 0
    assert "every run the store wrote" in capsys.readouterr().err
    con = duckdb.connect(str(db))
    h = con.execute("SELECT min(config_hash) FROM experiment_results").fetchone()[0]
    con.execute("DELETE FROM experiment_results WHERE config_hash = ?", [h])
    con.close()
    assert main_sql(["--audit", "--db", str(db), "--format", "json"]) == 1
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert [(r["table"], r["config_hash"], r["hardware_id"], r["expected_rows"], r["found_rows"], r["per"])
            for r in rows] == [("experiment_results", h, "simulated:Fabricated-GPU:x1", 1, 0, "manifest")]
    assert "1 discrepancy" in out.err


def test_audit_and_a_query_are_exclusive(db: Path, capsys) -> None:
    assert main_sql(["SELECT 1", "--audit", "--db", str(db)]) == 2
    assert main_sql(["--db", str(db)]) == 2
