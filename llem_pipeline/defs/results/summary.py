"""What the Dagster UI shows for an ExperimentResult: numeric metadata (plotted as trends) and a markdown summary."""

from __future__ import annotations

from typing import Any

import dagster as dg

from llem_pipeline.defs.results.quality import CheckOutcome
from llem_pipeline.domain.experiment import ExperimentResult


def is_simulated(result: ExperimentResult) -> bool:
    """Return True unless the energy came from a live NVIDIA GPU (NVML)."""
    return result.device_kind != "nvml" or result.energy_method == "simulated"


def device_metadata(result: ExperimentResult, hardware: str) -> dict[str, Any]:
    """Return the metadata that says, without a click, what measured the result: 'device' (SIMULATED or real
    GPU with the hardware id) and, for a simulated result, a short markdown banner the UI shows inline."""
    if is_simulated(result):
        return {
            "device": dg.MetadataValue.text(f"SIMULATED · {hardware}"),
            "simulated": dg.MetadataValue.md(
                f"**SIMULATED** — energy from a {result.device_kind or 'non-NVML'} device ({hardware}), a software "
                "model, not a GPU measurement: use it to test the pipeline, never to compare hardware."),
        }
    return {"device": dg.MetadataValue.text(f"real GPU · {hardware}")}


def _num(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def headline_metadata(result: ExperimentResult) -> dict[str, Any]:
    """Return numeric metadata (Dagster plots each key over materialisations) plus device_kind/is_simulated.

    Units: j_per_token J, tokens_per_s tokens/s, avg_power_w W, ttft_*_ms ms, energy J, window s.
    """
    ext = result.extended_metrics
    avg_w = ext.avg_power_w if ext and ext.avg_power_w is not None else (
        result.total_energy_j / result.total_inference_time_sec if result.total_inference_time_sec > 0 else None
    )
    ttft = result.latency_stats.ttft if result.latency_stats else None
    values: dict[str, Any] = {
        "j_per_token": result.avg_energy_per_token_j,
        "tokens_per_s": result.avg_tokens_per_second,
        "avg_power_w": _num(avg_w),
        "ttft_p50_ms": _num(ttft.p50_ms if ttft else None),
        "ttft_p99_ms": _num(ttft.p99_ms if ttft else None),
        "total_energy_j": result.total_energy_j,
        "energy_adjusted_j": _num(result.energy_adjusted_j),
        "total_tokens": result.total_tokens,
        "window_s": result.total_inference_time_sec,
        "n_warnings": len(result.measurement_warnings),
    }
    meta: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
    meta["device_kind"] = dg.MetadataValue.text(result.device_kind or "unknown")
    meta["is_simulated"] = dg.MetadataValue.bool(is_simulated(result))
    return meta


def _fmt(value: float | None, spec: str = ".4g", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def summary_markdown(result: ExperimentResult, outcomes: list[CheckOutcome], run_date: str, label: str) -> str:
    """Return the markdown summary: a SIMULATED banner when simulated, headline table, warnings, checks."""
    meta = headline_metadata(result)
    lines: list[str] = []
    if is_simulated(result):
        lines += [
            f"> **SIMULATED** — energy comes from a {result.device_kind or 'non-NVML'} device, not a real GPU. "
            "Use these numbers to test the pipeline, never to compare hardware.",
            "",
        ]
    cfg = result.effective_config
    lines += [
        f"### {label} · {run_date}",
        "",
        f"{cfg.get('model', '?')} · {result.backend} · config `{result.measurement_config_hash}`",
        "",
        "| metric | value |",
        "|---|---|",
        f"| J per output token | {_fmt(result.avg_energy_per_token_j, '.6g', ' J')} |",
        f"| output tokens/s | {_fmt(result.avg_tokens_per_second, '.4g')} |",
        f"| average power | {_fmt(meta.get('avg_power_w'), '.4g', ' W')} |",
        f"| TTFT p50 / p99 | {_fmt(meta.get('ttft_p50_ms'), '.4g')} / {_fmt(meta.get('ttft_p99_ms'), '.4g', ' ms')} |",
        f"| energy raw / adjusted | {_fmt(result.total_energy_j, '.4g')} / {_fmt(result.energy_adjusted_j, '.4g', ' J')} |",
        f"| window | {_fmt(result.total_inference_time_sec, '.3f', ' s')} ({result.measurement_methodology}) |",
        f"| tokens out / in | {result.total_tokens} / {result.input_tokens if result.input_tokens is not None else 'n/a'} |",
        f"| device | {result.device_kind or 'unknown'} · energy via {result.energy_method or 'n/a'} |",
        "",
    ]
    warnings = result.measurement_warnings
    lines += ["**Warnings**", ""] + ([f"- `{w}`" for w in warnings] if warnings else ["- none"]) + [""]
    lines += ["**Checks**", "", "| check | result | detail |", "|---|---|---|"]
    for o in outcomes:
        status = "pass" if o.passed else ("**WARN**" if o.severity == "WARN" else "**FAIL**")
        lines.append(f"| {o.name} | {status} | {o.description} |")
    return "\n".join(lines)
