"""``llem factors``: the conversion factors the carbon and cost views use (grid gCO2e/kWh, PUE, price per kWh).

    llem factors set grid_gco2_per_kwh 380 --source "Ember 2025, Germany" [--from 2026-01-01] [--to 2027-01-01]
    llem factors set price_per_kwh 0.25 --unit EUR/kWh --source "site tariff 2026"
    llem factors import factors.csv      # header: name,value,unit,source,valid_from,valid_to
    llem factors list

A factor is valid from ``--from`` (default: always) until ``--to`` (default: open); where validities overlap the
latest recorded wins. Rows are appended (history is kept) in one transaction; a bad value is refused with the
field, the value and the fix, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llem_pipeline import paths
from llem_pipeline.storage.factors import FACTORS, FactorError, factor_rows, parse_factor, read_factors_csv
from llem_pipeline.storage.locking import default_lock_timeout_s
from llem_pipeline.storage.store import ResultStore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llem factors", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    s = sub.add_parser("set", help="record one factor")
    s.add_argument("name", help=f"one of {', '.join(FACTORS)}")
    s.add_argument("value", help="the value, in the factor's unit")
    s.add_argument("--unit", help="gCO2e/kWh (grid), ratio (pue), <CURRENCY>/kWh (price, required)")
    s.add_argument("--source", required=True, help="where the value comes from")
    s.add_argument("--from", dest="valid_from", help="first day / instant it applies (ISO 8601, UTC); default: always")
    s.add_argument("--to", dest="valid_to", help="first day / instant it no longer applies; default: open")
    i = sub.add_parser("import", help="record every factor of a CSV file")
    i.add_argument("csv", type=Path, help="CSV with the header name,value,unit,source,valid_from,valid_to")
    sub.add_parser("list", help="print every recorded factor")
    for p in (s, i, sub.choices["list"]):
        p.add_argument("--db", type=Path, default=None, help="DuckDB file (default: LLEM_DUCKDB or data/llem.duckdb)")
    return parser


def main_factors(argv: list[str] | None = None) -> int:
    """Run ``llem factors set|import|list``; return 0, 1 on a refused factor or storage error, 2 on usage errors."""
    args = _parser().parse_args(argv)
    db = args.db or paths.duckdb_path()
    store = ResultStore(db, lock_timeout_s=default_lock_timeout_s())
    try:
        if args.action == "list":
            if not Path(db).is_file():
                print(f"no database at {db}: nothing recorded yet")
                return 0
            rows = store.query("SELECT name, value, unit, source, valid_from, valid_to, recorded_at FROM factors "
                               "ORDER BY name, valid_from, recorded_at").to_pylist()
            for r in rows:
                until = r["valid_to"].isoformat() if r["valid_to"] else "open"
                print(f"{r['name']:18} {r['value']:>10g} {r['unit']:10} {r['valid_from'].isoformat()} → {until}  "
                      f"{r['source']}  (recorded {r['recorded_at'].isoformat()})")
            if not rows:
                print("no factors recorded: `llem factors set NAME VALUE --source ...`")
            return 0
        if args.action == "set":
            factors = [parse_factor(args.name, args.value, unit=args.unit, source=args.source,
                                    valid_from=args.valid_from, valid_to=args.valid_to)]
        else:
            factors = read_factors_csv(args.csv)
        n = store.write_factors(factor_rows(factors))
        print(f"recorded {n} factor(s) in {store.path}")
        return 0
    except FactorError as exc:
        print(f"llem factors: {exc}", file=sys.stderr)
        return 1
