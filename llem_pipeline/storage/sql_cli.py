"""``llem sql "SELECT ..."``: read-only queries against the llem DuckDB file; ``llem sql --audit``: lost runs.

Opens the file read-only (waiting with jittered backoff while a write holds the lock), refuses
anything but one SELECT/EXPLAIN statement, disables file access from SQL, binds ``--param`` values as
parameters (``?`` placeholders, in order) and prints a table (rich), CSV or JSON. ``--audit`` prints
``ResultStore.audit()``'s discrepancies (runs the store wrote that the file does not hold as written)
in the same formats and exits 1 when there is any.

Output is data, never markup: the table shows every value and column name literally (rich markup such as
``[bold]`` is not interpreted) with control characters escaped (``\x1b``, ``\n``), and JSON is always
valid JSON (NaN and ±inf become null). A ``--param`` is a string unless typed (``int:7``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from llem_pipeline import paths
from llem_pipeline.domain.errors import escape_control
from llem_pipeline.storage.errors import ReadOnlyViolation, StorageError
from llem_pipeline.storage.locking import default_lock_timeout_s
from llem_pipeline.storage.store import ResultStore

_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _bool(text: str) -> bool:
    try:
        return _BOOLS[text.strip().lower()]
    except KeyError:
        raise ValueError("expected true/false, 1/0 or yes/no") from None


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("NaN and ±inf are not accepted as parameters")
    return value


# --param TYPE:VALUE → the Python value bound to the placeholder (DuckDB binds int as INTEGER or BIGINT, float as
# DOUBLE, date as DATE, datetime as TIMESTAMP, None as NULL).
PARAM_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": _float,
    "bool": _bool,
    "date": date.fromisoformat,
    "timestamp": datetime.fromisoformat,
    "null": None,
}
PARAM_HELP = (
    "value for the next ? placeholder (repeatable). Bound as a string unless typed: int:7, float:0.5, "
    "bool:true, date:2026-11-01, timestamp:2026-11-01T12:00:00, null: (SQL NULL), str:int:7 (the text 'int:7'); "
    "--param 007 binds the string '007'"
)


def parse_param(text: str) -> Any:
    """Return the value a ``--param`` binds: the string itself, or, with a ``TYPE:`` prefix of PARAM_TYPES, that
    type (``int:7`` → 7, ``null:`` → None, ``str:x`` → 'x'). A string without a known prefix is bound as is.

    Raises ValueError naming the parameter, the type and the expected form when a typed value does not parse.
    """
    prefix, sep, rest = text.partition(":")
    if not sep or prefix not in PARAM_TYPES:
        return text
    convert = PARAM_TYPES[prefix]
    if convert is None:
        if rest:
            raise ValueError(f"--param {text!r}: null: takes no value (write 'null:' alone)")
        return None
    try:
        return convert(rest)
    except ValueError as exc:
        raise ValueError(f"--param {escape_control(text[:80])!r} is not a valid {prefix}: {exc}") from None


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
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="output format: table (values shown literally, control characters escaped as \\x1b, \\n), "
                   "csv (values as stored), json (a list of objects; NaN, inf and -inf are written as null, "
                   "JSON having no such numbers)")
    p.add_argument("--param", action="append", default=[], metavar="[TYPE:]VALUE", help=PARAM_HELP)
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="wait at most S seconds while a writer holds the file (default 120)")
    return p


def _jsonable(value: Any) -> Any:
    """Return ``value`` as what json.dump writes validly: NaN and ±inf → None, dates → ISO text, Decimal → float
    (or None when not finite), bytes → hex text, containers converted item by item."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _cell(value: Any) -> str:
    """Return the text of one table cell: '' for NULL, floats to 6 significant digits, control characters escaped."""
    if value is None:
        return ""
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return escape_control(text)


def render(table: pa.Table, fmt: str, out: Any = None) -> None:
    """Write ``table`` to ``out`` (default stdout) as 'table' (rich, values literal), 'csv' or 'json' (a list of
    objects, always valid JSON)."""
    out = out or sys.stdout
    rows = table.to_pylist()
    names = table.column_names
    if fmt == "json":
        # positional: two columns may share a name (SELECT 1 AS a, 2 AS a); the last one wins, as in DuckDB's JSON
        data = [{n: _jsonable(r[n]) for n in names} for r in rows]
        json.dump(data, out, default=str, indent=1, allow_nan=False)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([[_jsonable(r[c]) for c in names] for r in rows])
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        # Text objects are never parsed for markup, emoji codes or highlighting: '[bold]x[/bold]' prints as is.
        t = Table(show_lines=False, header_style="bold")
        for name in names:
            t.add_column(Text(escape_control(name)), overflow="fold")
        for row in _rows_by_position(table):
            t.add_row(*[Text(_cell(v)) for v in row])
        class _Console(Console):
            def on_broken_pipe(self) -> None:
                # rich would exit(1) itself; the llem command turns a closed pipe into a quiet exit 141
                self.quiet = True
                raise BrokenPipeError

        console = _Console(file=out, width=max(80, min(240, 14 * max(1, len(names)))), markup=False,
                           emoji=False, highlight=False)
        console.print(t)
        console.print(Text(f"{table.num_rows} row(s)", style="dim"))


def _rows_by_position(table: pa.Table) -> list[list[Any]]:
    """Return the rows as lists in column order (keeps columns that share a name apart)."""
    columns = [col.to_pylist() for col in table.columns]
    return [list(values) for values in zip(*columns, strict=True)]


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
        params = [parse_param(v) for v in args.param]
    except ValueError as exc:
        print(f"llem sql: {exc}", file=sys.stderr)
        return 2
    try:
        table = store.query(args.sql, params or None)
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
    from llem_pipeline.closed_pipe import quiet_on_closed_pipe

    sys.exit(quiet_on_closed_pipe(main_sql))
