"""schema.sql / views.sql / schema.py: tables and views on an empty file, comments, migrations, allow-list."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from llem_pipeline.storage import PARTITIONED_TABLES, TABLES, VIEWS, ResultStore, StorageError
from llem_pipeline.storage.schema import (
    BOOKKEEPING_TABLES,
    LATEST_VERSION,
    MIGRATIONS,
    apply_schema,
    checked_table,
    sql_text,
)


def test_sql_files_run_as_plain_sql_on_an_empty_file(tmp_path: Path) -> None:
    # What a user does in the duckdb shell: `.read schema.sql`, each `.read migrations/NNN_*.sql`, `.read views.sql`.
    con = duckdb.connect(str(tmp_path / "plain.duckdb"))
    for _, filename, _ in MIGRATIONS:
        con.execute(sql_text(filename))
    con.execute(sql_text("views.sql"))
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert set(TABLES) | set(BOOKKEEPING_TABLES) | {"schema_version", "schema_views"} == tables
    for view in VIEWS:
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
    con.close()


def test_ensure_schema_creates_everything_and_is_idempotent(store: ResultStore) -> None:
    assert store.ensure_schema() == LATEST_VERSION
    assert store.ensure_schema() == LATEST_VERSION
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        versions = con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert versions == [(n,) for n, _, _ in MIGRATIONS] and versions[-1] == (LATEST_VERSION,)
        for view in VIEWS:
            con.execute(f"SELECT * FROM {view}").fetchall()
    finally:
        con.close()
    assert store.row_counts() == dict.fromkeys(TABLES, 0)


def test_every_table_and_column_is_documented(store: ResultStore) -> None:
    store.ensure_schema()
    undocumented_tables = store.query(
        "SELECT table_name FROM duckdb_tables() WHERE comment IS NULL OR comment = ''"
    ).column("table_name").to_pylist()
    assert undocumented_tables == []
    undocumented_columns = store.query(
        "SELECT table_name || '.' || column_name AS c FROM duckdb_columns() "
        "WHERE schema_name = 'main' AND table_name IN (SELECT table_name FROM duckdb_tables()) "
        "AND (comment IS NULL OR comment = '')"
    ).column("c").to_pylist()
    assert undocumented_columns == []
    view_comments = store.query("SELECT view_name, comment FROM duckdb_views() WHERE NOT internal").to_pylist()
    assert {v["view_name"] for v in view_comments if v["comment"]} == set(VIEWS)


def test_partitioned_tables_have_partition_columns_first(store: ResultStore) -> None:
    store.ensure_schema()
    for table in PARTITIONED_TABLES:
        cols = store.query(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]
        ).column("column_name").to_pylist()
        assert cols[:3] == ["run_date", "config_hash", "run_id"], table


def test_newer_database_is_refused(store: ResultStore) -> None:
    store.ensure_schema()
    con = duckdb.connect(str(store.path))
    con.execute("INSERT INTO schema_version VALUES (?, now(), 'from the future')", [LATEST_VERSION + 1])
    con.close()
    with pytest.raises(StorageError, match="newer than this llem_pipeline"):
        ResultStore(store.path).ensure_schema()


def test_apply_schema_upgrades_a_version_0_database(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    con.execute("CREATE TABLE schema_version (version INTEGER, applied_at TIMESTAMPTZ, description VARCHAR)")
    assert apply_schema(con) == LATEST_VERSION
    con.close()


@pytest.mark.parametrize("name", ["requests; DROP TABLE experiment_results", "main.requests", "REQUESTS", "", "x"])
def test_table_names_outside_the_allow_list_are_rejected(name: str) -> None:
    with pytest.raises(StorageError, match="not one of the llem tables"):
        checked_table(name)


def test_allow_list_accepts_known_tables() -> None:
    for t in TABLES:
        assert checked_table(t) == t


def test_migration_2_backfills_previous_night_columns(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from llem_pipeline.storage.rows import experiment_result_row, rows_to_table
    from llem_pipeline_tests.storage.run_folder_factory import make_config, make_result

    db = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(db))
    con.execute(sql_text("schema.sql"))
    con.execute("INSERT INTO schema_version VALUES (1, now(), 'v1')")
    config = make_config()
    for day, energy in (("2026-11-01", 1000.0), ("2026-11-02", 1200.0)):
        result, _ = make_result(config, start=datetime.fromisoformat(day).replace(hour=2, tzinfo=UTC))
        result = result.model_copy(update={"avg_energy_per_token_j": energy / result.total_tokens})
        con.register("_r", rows_to_table([experiment_result_row(result, day, "r")]))
        con.execute("INSERT INTO experiment_results BY NAME SELECT * FROM _r")
    con.close()
    store = ResultStore(db)
    assert store.ensure_schema() == LATEST_VERSION
    pct = store.query("SELECT j_per_token_change_pct FROM nightly_trend ORDER BY run_date")
    assert pct.column(0).to_pylist()[0] is None
    assert pct.column(0).to_pylist()[1] == pytest.approx(20.0)


def test_views_are_recreated_only_when_views_sql_changed_or_a_view_is_missing(store: ResultStore) -> None:
    store.ensure_schema()
    con = duckdb.connect(str(store.path))
    first = con.execute("SELECT sha256, applied_at FROM schema_views").fetchall()
    con.close()
    ResultStore(store.path).ensure_schema()
    con = duckdb.connect(str(store.path))
    assert con.execute("SELECT sha256, applied_at FROM schema_views").fetchall() == first  # no DDL
    con.execute("DROP VIEW efficiency")
    con.close()
    ResultStore(store.path).ensure_schema()
    con = duckdb.connect(str(store.path))
    try:
        assert con.execute("SELECT count(*) FROM efficiency").fetchone() == (0,)
        con.execute("UPDATE schema_views SET sha256 = 'old'")
    finally:
        con.close()
    ResultStore(store.path).ensure_schema()
    assert store.query("SELECT sha256 FROM schema_views").column(0).to_pylist() == [first[0][0]]
