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
    RUN_KEY_COLUMNS,
    USER_TABLES,
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
    assert set(TABLES) | set(BOOKKEEPING_TABLES) | set(USER_TABLES) | {"schema_version", "schema_views"} == tables
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


def test_measurement_tables_carry_the_run_key(store: ResultStore) -> None:
    store.ensure_schema()
    for table in (*PARTITIONED_TABLES, "partition_manifest"):
        cols = store.query(
            "SELECT column_name, is_nullable FROM duckdb_columns() WHERE table_name = ? ORDER BY column_index", [table]
        ).to_pylist()
        nullable = {c["column_name"]: c["is_nullable"] for c in cols}
        assert {k: nullable.get(k) for k in RUN_KEY_COLUMNS} == dict.fromkeys(RUN_KEY_COLUMNS, False), table
    identity = store.query("SELECT column_name FROM duckdb_columns() WHERE table_name = 'experiment_results'")
    assert {"workload_hash", "cycle", "measurement_key", "label", "j_per_token", "tokens_per_s"} <= set(
        identity.column(0).to_pylist())


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


def test_a_migration_missing_below_the_highest_applied_one_is_applied(tmp_path: Path) -> None:
    # Migrations merged from parallel branches: a database that recorded 1-4 and 6 still gets the others.
    con = duckdb.connect(str(tmp_path / "gap.duckdb"))
    con.execute("BEGIN")
    apply_schema(con)
    con.execute("DELETE FROM schema_version WHERE version = 3")
    con.execute("DROP TABLE schema_views")
    con.execute("COMMIT")
    con.execute("BEGIN")
    assert apply_schema(con) == LATEST_VERSION
    con.execute("COMMIT")
    versions = [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()]
    assert versions == sorted(n for n, _, _ in MIGRATIONS)
    assert con.execute("SELECT count(*) FROM schema_views").fetchone() == (1,)
    con.close()


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
