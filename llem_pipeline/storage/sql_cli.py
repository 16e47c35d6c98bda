"""``llem sql "SELECT ..."``: read-only queries against the llem DuckDB file.

Opens the file read-only (waiting with jittered backoff while a write holds the lock), refuses
anything but one SELECT/EXPLAIN statement, disables file access from SQL, binds ``--param`` values as
parameters (``?`` placeholders, in order) and prints a table (rich), CSV or JSON.
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
        "power_samples, requests, ...; views: latest_results, efficiency, nightly_trend).",
    )
    p.add_argument("sql", help="one SELECT (or EXPLAIN) statement; use ? placeholders with --param")
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


if __name__ == "__main__":
    sys.exit(main_sql())
