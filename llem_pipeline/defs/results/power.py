"""Power-trace figures from timeseries.parquet: series for the chart and W metadata for the UI."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def trace_series(table: pa.Table) -> tuple[list[float], list[float], list[str], tuple[float, float] | None]:
    """Return (t_rel_s, power_w, series label 'p<process>/d<device>', window (start, end) s or None) of a
    timeseries.parquet table."""
    rows = table.select(["process_index", "device_index", "t_rel_s", "power_w", "phase"]).to_pydict()
    labels = [f"p{p}/d{d}" for p, d in zip(rows["process_index"], rows["device_index"], strict=True)]
    in_window = [t for t, ph in zip(rows["t_rel_s"], rows["phase"], strict=True) if ph == "window"]
    window = (min(in_window), max(in_window)) if in_window else None
    return list(rows["t_rel_s"]), [float(p) for p in rows["power_w"]], labels, window


def power_metadata(table: pa.Table) -> dict[str, Any]:
    """Return sample count and mean/peak power in the window, W (per-sample, all devices pooled)."""
    meta: dict[str, Any] = {"samples": table.num_rows}
    if table.num_rows == 0 or "power_w" not in table.column_names:
        return meta
    window = table.filter(pc.equal(table["phase"], "window")) if "phase" in table.column_names else table
    power = pc.drop_null(window["power_w"])
    power = power.filter(pc.invert(pc.is_nan(power))) if len(power) else power
    if len(power):
        meta["window_mean_power_w"] = float(pc.mean(power).as_py())
        meta["window_peak_power_w"] = float(pc.max(power).as_py())
    meta["window_samples"] = window.num_rows
    return meta
