"""``llem sql "SELECT ..."``: read-only queries against the llem DuckDB file; ``llem sql --audit``: lost runs.

Opens the file read-only (waiting with jittered backoff while a write holds the lock), refuses
anything but one SELECT/EXPLAIN statement, disables file access from SQL, binds ``--param`` values as
parameters (``?`` placeholders, in order) and prints a table (rich), CSV or JSON. ``--audit`` prints
``ResultStore.audit()``'s discrepancies (runs the store wrote that the file does not hold as written)
in the same formats and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from llem_pipeline import paths
from llem_pipeline.storage.errors import ReadOnlyViolation, StorageError
from llem_pipeline.storage.locking import default_lock_timeout_s
from llem_pipeline.storage.store import ResultStore

_INT = re.compile(r"[+-]?\d{1,18}")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def parse_param(text: str) -> int | float | str:
    """Return a --param value as int or float when it looks like one, else the string itself."""
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llem sql",
        description="Run one read-only SELECT against the llem DuckDB file (tables: experiment_results, "
        "power_samples, requests, ...; views: latest_results, config_stats, efficiency, nightly_trend).",
    )
    p.add_argument("sql", nargs="?", default=None,
                   help="one SELECT (or EXPLAIN) statement; use ? placeholders with --param")
    p.add_argument("--audit", action="store_true",
                   help="instead of a query: list runs the store wrote that the file does not hold as written "
                   "(partition_manifest and the write journal vs the tables); exit 1 when there is any")
    p.add_argument("--db", type=Path, default=None, help="DuckDB file (default: LLEM_DUCKDB or <data_dir>/llem.duckdb)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    p.add_argument("--param", action="append", default=[], metavar="VALUE",
                   help="value for the next ? placeholder (repeatable; numbers are bound as numbers)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="wait at most S seconds while a writer holds the file (default 120)")
    return p


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def render(table: pa.Table, fmt: str, out: Any = None) -> None:
    """Write ``table`` to ``out`` (default stdout) as 'table' (rich), 'csv' or 'json' (a list of objects)."""
    out = out or sys.stdout
    rows = table.to_pylist()
    if fmt == "json":
        json.dump([{k: _jsonable(v) for k, v in r.items()} for r in rows], out, default=str, indent=1)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.column_names)
        writer.writerows([[_jsonable(r[c]) for c in table.column_names] for r in rows])
    else:
        from rich.console import Console
        from rich.table import Table

        t = Table(show_lines=False, header_style="bold")
        for name in table.column_names:
            t.add_column(name, overflow="fold")
        for r in rows:
            t.add_row(*["" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in r.values()])
        console = Console(file=out, width=max(80, min(240, 14 * max(1, len(table.column_names)))))
        console.print(t)
        console.print(f"{table.num_rows} row(s)", style="dim")


def main_sql(argv: list[str] | None = None) -> int:
    """Run ``llem sql``; return the exit code (0 ok, 1 database/SQL error, 2 refused or bad usage)."""
    args = _parser().parse_args(argv)
    db = args.db if args.db is not None else paths.duckdb_path()
    timeout = args.timeout if args.timeout is not None else default_lock_timeout_s()
    store = ResultStore(db, lock_timeout_s=timeout)
    if args.audit == (args.sql is not None):
        print("llem sql: give one SELECT statement, or --audit (not both)", file=sys.stderr)
        return 2
    if args.audit:
        return _audit(store, args.format)
    try:
        table = store.query(args.sql, [parse_param(v) for v in args.param] or None)
    except ReadOnlyViolation as exc:
        print(f"llem sql: refused: {exc}", file=sys.stderr)
        return 2
    except (StorageError, duckdb.Error) as exc:
        print(f"llem sql: {exc}", file=sys.stderr)
        return 1
    render(table, args.format)
    return 0


def _audit(store: ResultStore, fmt: str) -> int:
    """Print the store's audit; return 0 when nothing is lost, 1 on discrepancies or a database error."""
    try:
        found = store.audit()
    except (StorageError, duckdb.Error) as exc:
        print(f"llem sql --audit: {exc}", file=sys.stderr)
        return 1
    rows = [{"table": d.table, "run_date": d.run_date, "config_hash": d.config_hash, "hardware_id": d.hardware_id,
             "run_id": d.run_id, "expected_rows": d.expected, "found_rows": d.found, "per": d.source, "detail": d.detail}
            for d in found]
    if rows:
        render(pa.Table.from_pylist(rows), fmt)
    print(f"llem sql --audit: {len(found)} discrepancy(ies) in {store.path}" if found
          else f"llem sql --audit: every run the store wrote is in {store.path}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main_sql())
