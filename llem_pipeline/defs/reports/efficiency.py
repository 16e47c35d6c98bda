"""The efficiency view's rows as a Dagster table (with a schema) and as chart points."""

from __future__ import annotations

import math
from typing import Any

import dagster as dg

# (view column, UI column, type, description): the columns the report shows, in order.
COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("model", "model", "string", "model id or path"),
    ("backend", "backend", "string", "inference engine"),
    ("setting", "setting", "string", "the engine setting, e.g. batch_size=8"),
    ("hardware_id", "hardware", "string", "device kind : GPU model : count"),
    ("is_simulated", "device", "string", "SIMULATED or real GPU"),
    ("studies", "studies", "string", "studies that measured it"),
    ("workload_hash", "workload", "string", "prompts, n, lengths, sampling (hash)"),
    ("n_runs", "n_runs", "int", "runs pooled (latest day)"),
    ("j_per_token", "j_per_token", "float", "J per output token"),
    ("j_per_token_ci_low", "ci_low", "float", "95 % CI low, J/token"),
    ("j_per_token_ci_high", "ci_high", "float", "95 % CI high, J/token"),
    ("tokens_per_s", "tokens_per_s", "float", "output tokens/s"),
    ("avg_power_w", "avg_power_w", "float", "mean power, W"),
    ("ttft_p50_ms", "ttft_p50_ms", "float", "time to first token, median, ms"),
    ("latest_run_date", "latest", "string", "run date"),
)


def _cell(column: str, value: Any) -> Any:
    """Return a table cell: SIMULATED / real GPU for the flag, rounded floats, text for everything else."""
    if column == "is_simulated":
        return "SIMULATED" if value else "real GPU"
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, float):
        return float(f"{value:.5g}")
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, int | bool):
        return value
    return str(value)


def efficiency_table(rows: list[dict[str, Any]]) -> dg.TableMetadataValue:
    """Return the efficiency view's rows as a Dagster table with a column schema (only columns the rows have)."""
    present = [c for c in COLUMNS if not rows or c[0] in rows[0]]
    schema = dg.TableSchema(columns=[dg.TableColumn(ui, kind, description=text) for _, ui, kind, text in present])
    records = [dg.TableRecord({ui: _cell(col, r.get(col)) for col, ui, _, _ in present}) for r in rows]
    return dg.MetadataValue.table(records=records, schema=schema)


def chart_rows(rows: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """Return (series 'model · backend · hardware [SIMULATED]', setting, J/token) for rows with a J/token."""
    out = []
    for r in rows:
        if r.get("j_per_token") is None:
            continue
        series = f"{r.get('model')} · {r.get('backend')} · {r.get('hardware_id', r.get('precision'))}"
        if r.get("is_simulated"):
            series += " [SIMULATED]"
        out.append((series, str(r.get("setting") or "default"), float(r["j_per_token"])))
    return out
