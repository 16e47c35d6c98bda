"""``llem report [--study S] [--model M] [--format table|csv|json]``: the efficiency view, one row per config × hardware.

Each row is the latest day's runs of one config on one ``hardware_id``: J per output token (mean over the runs
with its 95 % bootstrap interval), output tokens/s, mean power (W), TTFT p50 (ms), ``n_runs`` and the
workload/study that identify what was measured. Rows are never pooled across hardware, workload or simulated
and real; a simulated row is marked ``SIMULATED`` in the table and named in the footer.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb

from llem_pipeline import paths
from llem_pipeline.storage.errors import StorageError
from llem_pipeline.storage.locking import default_lock_timeout_s
from llem_pipeline.storage.sql_cli import render
from llem_pipeline.storage.store import ResultStore

# The columns a reader needs to trust and compare a row; every other column is one `llem sql` away.
REPORT_SQL = """
SELECT
    model, backend, precision, setting, hardware_id,
    CASE WHEN is_simulated THEN 'SIMULATED' ELSE 'real' END AS device,
    studies, workload_hash, run_date, n_runs,
    round(j_per_token, 5)           AS j_per_token,
    round(j_per_token_ci_low, 5)    AS j_per_token_ci_low,
    round(j_per_token_ci_high, 5)   AS j_per_token_ci_high,
    round(tokens_per_s, 1)          AS tokens_per_s,
    round(avg_power_w, 1)           AS avg_power_w,
    round(ttft_p50_ms, 1)           AS ttft_p50_ms,
    n_warnings
FROM efficiency
WHERE (? IS NULL OR list_contains(string_split(studies, ', '), ?))
  AND (? IS NULL OR model = ?)
ORDER BY model, backend, hardware_id, workload_hash, setting
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llem report", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", default=None, help="only configs measured by this study (its `name`)")
    p.add_argument("--model", default=None, help="only this model (as written in the study)")
    p.add_argument("--db", type=Path, default=None, help="DuckDB file (default: LLEM_DUCKDB or <data_dir>/llem.duckdb)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="table (a terminal table), csv or json (a list of objects)")
    return p


def main_report(argv: list[str] | None = None) -> int:
    """Print the efficiency report; return 0, 1 on a database error, 3 when the database holds no results yet."""
    args = _parser().parse_args(argv)
    db = args.db if args.db is not None else paths.duckdb_path()
    if not db.exists():
        print(f"llem report: no results yet ({db} does not exist): `llem run demo` measures the demo study",
              file=sys.stderr)
        return 3
    store = ResultStore(db, lock_timeout_s=default_lock_timeout_s())
    try:
        table = store.query(REPORT_SQL, [args.study, args.study, args.model, args.model])
    except (StorageError, duckdb.Error) as exc:
        print(f"llem report: {exc}", file=sys.stderr)
        return 1
    if table.num_rows == 0:
        which = " and ".join(f"{k} {v!r}" for k, v in (("study", args.study), ("model", args.model)) if v)
        print(f"llem report: no results{' for ' + which if which else ''} in {db}", file=sys.stderr)
        return 3
    render(table, args.format)
    if args.format == "table":
        simulated = sum(1 for d in table.column("device").to_pylist() if d == "SIMULATED")
        if simulated:
            print(f"{simulated} SIMULATED row(s): joules of the simulated GPU (a software model), not of a real GPU.")
        print("j_per_token: mean J per output token over the day's runs [95 % bootstrap CI]; "
              "a row never pools hardware, workloads or simulated with real.")
    return 0
