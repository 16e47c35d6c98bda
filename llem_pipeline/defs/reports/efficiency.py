"""The efficiency table as markdown and chart rows, from the rows of the ``efficiency`` view."""

from __future__ import annotations

from typing import Any

COLUMNS = ("model", "backend", "precision", "setting", "is_simulated", "j_per_token", "tokens_per_s",
           "avg_power_w", "ttft_p50_ms", "n_warnings", "latest_run_date")


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "SIMULATED" if value else "real GPU"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def efficiency_markdown(rows: list[dict[str, Any]]) -> str:
    """Return a markdown table of the efficiency view (J per output token, tokens/s, W, TTFT ms)."""
    if not rows:
        return "_No results in DuckDB yet: materialise the measurement assets for some partitions first._"
    header = ["model", "backend", "precision", "setting", "device", "J/token", "tok/s", "W", "TTFT p50 ms",
              "warnings", "latest"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    if any(r.get("is_simulated") for r in rows):
        lines = ["> **SIMULATED** rows come from the simulated GPU: pipeline tests, not hardware numbers.", "", *lines]
    return "\n".join(lines)


def chart_rows(rows: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """Return (series 'model · backend · precision [SIMULATED]', setting, J/token) for rows with a J/token."""
    out = []
    for r in rows:
        if r.get("j_per_token") is None:
            continue
        series = f"{r.get('model')} · {r.get('backend')} · {r.get('precision')}"
        if r.get("is_simulated"):
            series += " [SIMULATED]"
        out.append((series, str(r.get("setting") or "default"), float(r["j_per_token"])))
    return out
