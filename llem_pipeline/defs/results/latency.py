"""Latency metadata from requests.parquet: TTFT / end-to-end percentiles (ms) for the Dagster UI."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


def _pct(values: list[float | None], q: float) -> float | None:
    data = np.array([v for v in values if v is not None and v == v], dtype=float)
    return float(np.percentile(data, q)) if data.size else None


def latency_metadata(table: pa.Table) -> dict[str, Any]:
    """Return request count, output tokens and TTFT/E2E p50/p99 in ms (keys absent when not computable)."""
    cols = table.to_pydict()
    meta: dict[str, Any] = {"requests": table.num_rows}
    if table.num_rows == 0:
        return meta
    meta["output_tokens"] = int(sum(cols.get("output_tokens", [0])))
    for name, col in (("ttft", "ttft_ms"), ("e2e", "e2e_ms")):
        if col in cols:
            for q in (50, 99):
                value = _pct(cols[col], q)
                if value is not None:
                    meta[f"{name}_p{q}_ms"] = value
    return meta
