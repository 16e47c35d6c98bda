"""The energy side of efficiency_report: the Pareto front of J/token against latency (energy_latency view), the
per-request and per-phase split (request_energy view) and the lowest-energy config per latency target
(energy_at_target view), as Dagster tables and chart points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dagster as dg

from llem_pipeline.defs.reports.efficiency import _cell

# (view column, UI column, type, description) of the per-phase table and the latency-target table.
PHASE_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("model", "model", "string", "model id or path"),
    ("backend", "backend", "string", "inference engine"),
    ("setting", "setting", "string", "the engine setting"),
    ("hardware_id", "hardware", "string", "device kind : GPU model : count"),
    ("is_simulated", "device", "string", "SIMULATED or real GPU"),
    ("n_requests", "requests", "int", "requests of the latest day's runs"),
    ("j_per_request_p50", "j_per_request_p50", "float", "energy per request, median, J"),
    ("j_per_request_p99", "j_per_request_p99", "float", "energy per request, 99th percentile, J"),
    ("prefill_share", "prefill_share", "float", "share of the attributed energy spent on prefill"),
    ("decode_share", "decode_share", "float", "share spent on decode"),
    ("baseline_share", "baseline_share", "float", "share drawn at the idle baseline"),
    ("attribution_methods", "method", "string", "how the energy was split"),
)
TARGET_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("target", "target", "string", "latency target (latency_targets table)"),
    ("model", "model", "string", "model id or path"),
    ("backend", "backend", "string", "inference engine"),
    ("hardware_id", "hardware", "string", "device kind : GPU model : count"),
    ("is_simulated", "device", "string", "SIMULATED or real GPU"),
    ("setting", "best_setting", "string", "lowest-J/token setting meeting the target (empty: none meets it)"),
    ("j_per_token", "j_per_token", "float", "its J per output token"),
    ("ttft_p99_ms", "ttft_p99_ms", "float", "its TTFT p99, ms"),
    ("tpot_p99_ms", "tpot_p99_ms", "float", "its TPOT p99, ms"),
    ("n_meeting", "configs_meeting", "int", "configs meeting the target"),
    ("n_configs", "configs", "int", "configs considered"),
    ("best_j_per_token_any_latency", "best_any_latency", "float", "lowest J/token regardless of latency"),
)


def table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str, str, str]]) -> dg.TableMetadataValue:
    """Return ``rows`` as a Dagster table of ``columns`` (the ones the rows have)."""
    present = [c for c in columns if not rows or c[0] in rows[0]]
    schema = dg.TableSchema(columns=[dg.TableColumn(ui, kind, description=text) for _, ui, kind, text in present])
    return dg.MetadataValue.table(records=[dg.TableRecord({ui: _cell(col, r.get(col)) for col, ui, _, _ in present})
                                           for r in rows], schema=schema)


def series_name(row: dict[str, Any]) -> str:
    """Return 'model · backend · hardware [SIMULATED]': one group that is never pooled with another."""
    name = f"{row.get('model')} · {row.get('backend')} · {row.get('hardware_id')}"
    if row.get("workload_hash"):
        name += f" · {str(row['workload_hash'])[:6]}"
    return name + (" [SIMULATED]" if row.get("is_simulated") else "")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Return the indexes of the points (latency ms, J/token) no other point beats on both (lower is better,
    ties kept), ordered by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best or (front and points[i] == points[front[-1]]):
            front.append(i)
            best = min(best, points[i][1])
    return front


def pareto_series(rows: list[dict[str, Any]], latency: str) -> dict[str, dict[str, Any]]:
    """Return per series (series_name) its points (latency ms, J/token, setting) and the indexes of its Pareto
    front, for the energy_latency rows that have both ``latency`` (a column, ms) and J/token."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r.get(latency) is None or r.get("j_per_token") is None:
            continue
        s = out.setdefault(series_name(r), {"points": [], "settings": []})
        s["points"].append((float(r[latency]), float(r["j_per_token"])))
        s["settings"].append(str(r.get("setting") or "default"))
    for s in out.values():
        s["front"] = pareto_front(s["points"])
    return out
