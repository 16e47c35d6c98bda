"""Read-only SQL: accept exactly one SELECT or EXPLAIN statement, refuse everything else.

Used by ``ResultStore.query`` and ``llem sql`` on top of DuckDB's read-only connection, so a write,
an ATTACH, a COPY ... TO, SET, INSTALL/LOAD or a second statement is refused before it runs.
"""

from __future__ import annotations

import duckdb

from llem_pipeline.storage.errors import ReadOnlyViolation

ALLOWED_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})


def check_read_only(sql: str) -> str:
    """Return ``sql`` when it is a single SELECT/EXPLAIN statement; raise ReadOnlyViolation otherwise."""
    if not isinstance(sql, str) or not sql.strip():
        raise ReadOnlyViolation("empty SQL: give one SELECT statement, e.g. SELECT * FROM efficiency")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise ReadOnlyViolation(f"cannot parse the SQL: {exc}") from exc
    if len(statements) != 1:
        raise ReadOnlyViolation(f"{len(statements)} statements given: run exactly one SELECT at a time")
    kind = statements[0].type
    if kind not in ALLOWED_STATEMENTS:
        name = getattr(kind, "name", str(kind))
        raise ReadOnlyViolation(
            f"{name} statements are refused: this entry point is read-only (SELECT / EXPLAIN only); "
            "results are written by the pipeline"
        )
    return sql
