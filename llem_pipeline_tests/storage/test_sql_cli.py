"""`llem sql`: read-only, parameters (strings unless typed), formats (literal table, valid JSON), refusals,
injection through options, a closed pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest

from llem_pipeline.cli import main
from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.paths import PROJECT_ROOT
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
    # untyped values are strings, whatever they look like
    assert parse_param("8") == "8" and parse_param("007") == "007" and parse_param("1e-3") == "1e-3"
    assert parse_param("abc") == "abc" and parse_param("2026-11-01") == "2026-11-01"
    assert parse_param("http://x") == "http://x" and parse_param("") == ""
    # typed values
    assert parse_param("int:8") == 8 and parse_param("int:-3") == -3 and parse_param("int:007") == 7
    assert parse_param("float:0.5") == 0.5 and parse_param("float:1e-3") == 0.001
    assert parse_param("bool:true") is True and parse_param("bool:0") is False
    assert parse_param("date:2026-11-01") == date(2026, 11, 1)
    assert parse_param("timestamp:2026-11-01T12:30:00") == datetime(2026, 11, 1, 12, 30)
    assert parse_param("null:") is None
    assert parse_param("str:int:7") == "int:7" and parse_param("str:") == ""


@pytest.mark.parametrize("bad", ["int:x", "int:", "float:nan", "float:inf", "bool:maybe", "date:2026-13-01",
                                 "timestamp:yesterday", "null:x"])
def test_a_typed_parameter_that_does_not_parse_is_a_usage_error(db: Path, bad: str, capsys) -> None:
    assert main_sql(["SELECT ? AS v", "--db", str(db), "--param", bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llem sql: --param ") and bad.split(":")[0] in err and "Traceback" not in err


def test_a_string_of_digits_stays_a_string(db: Path, capsys) -> None:
    assert main_sql(["SELECT ? AS s, typeof(?) AS t, ? AS i, typeof(?) AS ti, ? AS d, typeof(?) AS td", "--db", str(db),
                     "--format", "json", "--param", "007", "--param", "007", "--param", "int:7", "--param", "int:7",
                     "--param", "date:2026-11-01", "--param", "date:2026-11-01"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"s": "007", "t": "VARCHAR", "i": 7, "ti": "INTEGER", "d": "2026-11-01", "td": "DATE"}]


@pytest.mark.parametrize(("select", "shown"), [
    ("SELECT 1 AS \"[bold]col[/bold]\"", "[bold]col[/bold]"),
    ("SELECT '[/x]' AS v", "[/x]"),  # rich raised MarkupError on this
    ("SELECT '[bold]hidden[/bold] text' AS v", "[bold]hidden[/bold] text"),
    ("SELECT chr(27) || '[2J' || chr(27) || '[31mred' AS v", "\\x1b[2J\\x1b[31mred"),
    ("SELECT 'a' || chr(10) || 'b' || chr(13) || chr(7) AS v", "a\\nb\\r\\x07"),
    ("SELECT 'abc' || chr(8238) || 'txt.exe' AS v", "abc\\u202etxt.exe"),
    ("SELECT ':smile:' AS v", ":smile:"),
])
def test_table_output_is_literal_and_escapes_control_characters(db: Path, select: str, shown: str, capsys) -> None:
    assert main_sql([select, "--db", str(db)]) == 0
    captured = capsys.readouterr()
    assert shown in captured.out, captured.out
    assert not any(ord(ch) < 32 and ch != "\n" for ch in captured.out)
    assert "\u202e" not in captured.out and "\U0001f604" not in captured.out
    assert captured.err == ""


def test_csv_keeps_values_as_stored(db: Path, capsys) -> None:
    assert main_sql(["SELECT '[b]x[/b]' AS v, 'a' || chr(10) || 'b' AS nl", "--db", str(db), "--format", "csv"]) == 0
    assert capsys.readouterr().out == 'v,nl\n[b]x[/b],"a\nb"\n'


def test_json_output_is_valid_json_with_nan_and_inf_as_null(db: Path, capsys) -> None:
    sql = ("SELECT 'nan'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, '-inf'::DOUBLE AS ninf, 1.5::DOUBLE AS x, "
           "['nan'::DOUBLE, 2.0] AS l, {'a': 'inf'::DOUBLE} AS s, 2.50::DECIMAL(5, 2) AS d, DATE '2026-11-01' AS day, "
           "'[b]x' AS text")
    assert main_sql([sql, "--db", str(db), "--format", "json"]) == 0
    out = capsys.readouterr().out

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    assert json.loads(out, parse_constant=refuse) == [
        {"nan": None, "inf": None, "ninf": None, "x": 1.5, "l": [None, 2.0], "s": {"a": None}, "d": 2.5,
         "day": "2026-11-01", "text": "[b]x"}]


def test_help_documents_json_nulls_and_typed_parameters(capsys) -> None:
    with pytest.raises(SystemExit):
        main_sql(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "NaN, inf and -inf are written as null" in out
    assert "int:7" in out and "--param 007 binds the string '007'" in out


def _closed_pipe_run(argv: list[str], env: dict[str, str], module: str = "llem_pipeline.cli") -> subprocess.CompletedProcess:
    """Run ``python -m module argv`` with stdout a pipe whose reading end is already closed: its first write fails
    (EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", module, *argv], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=PROJECT_ROOT, timeout=120)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_a_closed_pipe_ends_quietly(db: Path, fmt: str) -> None:
    env = {**os.environ, "LLEM_DUCKDB": str(db)}
    for argv in (["-h"], ["sql", "SELECT * FROM range(20000)", "--format", fmt]):
        proc = _closed_pipe_run(argv, env)
        assert proc.returncode == 141, (argv, proc.returncode, proc.stderr)
        assert proc.stderr == "", (argv, proc.stderr)


def test_a_closed_pipe_ends_the_module_entry_quietly_too(db: Path) -> None:
    proc = _closed_pipe_run(["SELECT * FROM range(20000)", "--db", str(db)], dict(os.environ),
                            module="llem_pipeline.storage.sql_cli")
    assert (proc.returncode, proc.stderr) == (141, "")


def test_a_reader_that_stops_early_ends_the_command_quietly(db: Path) -> None:
    """What `llem sql ... | head -1` does: the reader takes one line and goes away while output is still coming."""
    env = {**os.environ, "LLEM_DUCKDB": str(db)}
    proc = subprocess.Popen([sys.executable, "-m", "llem_pipeline.cli", "sql", "SELECT * FROM range(200000)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=PROJECT_ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert first and err == b""


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
