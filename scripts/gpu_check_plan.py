"""Plan and summarise the measurements of scripts/gpu_check.sh (steps 2 and 4).

``plan``: write one ExperimentConfig JSON per (model preset, batch size) and the time budget. Each
config's workload is sized so that its measured window lasts about ``window_s`` seconds: fixed output
length, ``rounds`` generate() calls of ``batch`` requests, rounds = ceil(window_s / (output tokens ×
estimated decode-step time)). ``window_s`` is what the budget leaves after the fixed costs (start-up,
model builds and loads, baseline), capped at the window that spans 330 updates of the energy counter
period measured by the probe (the project warns below 300). Prints the budget table; writes
``plan.tsv`` (name, model, batch, config path, estimated s) and ``budget.md``.

``summary``: read every run folder's result.json and write ``summary.md`` and ``summary.csv``
(model, batch, J/token, tok/s, avg W, counter/trace agreement, uncertainty J, warnings); prints the
markdown table. Exit 0 when every planned run produced a result whose counter/trace agreement is
within the project's limit (5 %), else 1.

    python scripts/gpu_check_plan.py plan --work DIR --out OUT --budget-s 480 [--dry-run] [--probe probe.json]
    python scripts/gpu_check_plan.py summary --work DIR --out OUT
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BATCHES = (1, 8, 32, 128)
MIN_COUNTER_UPDATES_TARGET = 330  # the project warns below 300 (llem_pipeline.measure.quality)


@dataclass(frozen=True)
class Workload:
    """One model's workload shape and cost estimates (s) on the target machine."""

    preset: str
    precision: str
    input_len: int
    output_len: int
    step_s: float  # estimated decode step, s (batch 1)
    step_s_per_seq: float  # extra per sequence in the batch, s
    build_s: float  # estimated model build (init on device + save), s
    run_fixed_s: float  # estimated worker start-up: interpreter, CUDA init, model load, s


GPU_WORKLOADS = (
    # H200, transformers generate() in bf16 with SDPA: decode steps are launch/Python bound at small batch.
    Workload("1b", "bf16", 128, 128, 0.012, 0.00004, 30.0, 20.0),
    Workload("8b", "bf16", 128, 128, 0.026, 0.00012, 75.0, 35.0),
)
DRY_WORKLOADS = (Workload("tiny", "fp32", 16, 16, 0.005, 0.00005, 2.0, 12.0),)
PROBE_S = 8.0
BASELINE_S = {"gpu": 5.0, "dry": 1.0}
MARGIN_S = {"gpu": 40.0, "dry": 10.0}  # summary, tarball, jitter


def rounds_for(w: Workload, batch: int, window_s: float) -> int:
    """Return the generate() calls needed for a window of about ``window_s`` s (≥ 2)."""
    per_round = w.output_len * (w.step_s + w.step_s_per_seq * batch)
    return max(2, math.ceil(window_s / per_round))


def window_estimate_s(w: Workload, batch: int, rounds: int) -> float:
    """Return the estimated window of ``rounds`` calls at ``batch``, s."""
    return rounds * w.output_len * (w.step_s + w.step_s_per_seq * batch)


def make_config(w: Workload, batch: int, rounds: int, dry: bool) -> dict[str, Any]:
    """Return the ExperimentConfig (JSON form, validated) of one measurement."""
    from llem_pipeline.domain.config import ExperimentConfig

    cfg = ExperimentConfig.model_validate({
        "model": f"llem:{w.preset}",
        "backend": "pytorch",
        "n": rounds * batch,
        "dataset": {"input_len": w.input_len, "output_len": w.output_len, "seed": 0},
        "max_input_tokens": w.input_len,
        "max_output_tokens": w.output_len,
        "fixed_output_length": True,
        "precision": w.precision,
        "random_seed": 42,
        "warmup": {"mode": "fixed", "n_warmup": batch, "thermal_floor_seconds": 0},
        "baseline": {"duration_seconds": BASELINE_S["dry" if dry else "gpu"], "cache_ttl_seconds": 3600},
        "energy": {"sample_interval_ms": 50 if dry else 100, "methodology": "total"},
        "pytorch": {"batch_size": batch},
    })
    return cfg.model_dump(mode="json")


def plan(work: Path, out: Path, budget_s: float, dry: bool, probe: Path | None) -> int:
    """Write the configs, plan.tsv and budget.md; print the budget; returns 0 (1 when nothing fits)."""
    kind = "dry" if dry else "gpu"
    workloads = DRY_WORKLOADS if dry else GPU_WORKLOADS
    period_s = None
    if probe is not None and probe.is_file():
        devices = json.loads(probe.read_text()).get("devices") or []
        periods = [d["energy_counter"]["period_ms"] for d in devices if (d.get("energy_counter") or {}).get("period_ms")]
        period_s = max(periods) / 1e3 if periods else None
    configs = [(w, b) for w in workloads for b in BATCHES]
    fixed = PROBE_S + BASELINE_S[kind] + sum(w.build_s for w in workloads) + sum(w.run_fixed_s for w, _ in configs)
    available = budget_s - MARGIN_S[kind] - fixed
    # warmup = one round per config (n_warmup = batch), so each config costs about window + one round.
    per_config = available / len(configs)
    window_s = per_config * 0.8
    counter_window = MIN_COUNTER_UPDATES_TARGET * period_s if period_s else None
    if counter_window is not None:
        window_s = min(window_s, counter_window)
    window_s = 1.0 if dry else max(window_s, 3.0)
    builds = sum(w.build_s for w in workloads)

    def size(window: float) -> list[tuple[str, Workload, int, int, float, float]]:
        rows = []
        for w, b in configs:
            r = rounds_for(w, b, window)
            est_window = window_estimate_s(w, b, r)
            rows.append((f"{w.preset}-b{b}", w, b, r, est_window, w.run_fixed_s + est_window * (1 + 1 / r)))
        return rows

    def total_of(rows: list) -> float:
        return PROBE_S + BASELINE_S[kind] + builds + sum(r[5] for r in rows)

    sized = size(window_s)
    while not dry and total_of(sized) > budget_s - MARGIN_S[kind] and window_s > 3.0:
        window_s = max(3.0, window_s * 0.9)
        sized = size(window_s)
    cfg_dir = work / "configs"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, w, b, r, est_window, est_total in sized:
        path = cfg_dir / f"{name}.json"
        path.write_text(json.dumps(make_config(w, b, r, dry), indent=2) + "\n", encoding="utf-8")
        rows.append((name, w, b, r, path, est_window, est_total))
    with (work / "plan.tsv").open("w", encoding="utf-8") as f:
        for name, w, b, _r, path, _ew, est_total in rows:
            f.write(f"{name}\t{w.preset}\t{b}\t{path}\t{est_total:.0f}\n")
    total = total_of(sized)
    lines = [
        f"# gpu_check budget ({'DRY RUN: CPU, simulated device, tiny model' if dry else 'GPU: NVML device'})",
        "",
        f"Budget {budget_s:.0f} s (incl. {MARGIN_S[kind]:.0f} s margin); fixed costs (estimates): probe {PROBE_S:.0f} s, "
        f"baseline {BASELINE_S[kind]:.0f} s once (cached), model builds "
        + ", ".join(f"{w.preset} {w.build_s:.0f} s" for w in workloads)
        + ", worker start-up + model load per run " + ", ".join(f"{w.preset} {w.run_fixed_s:.0f} s" for w in workloads) + ".",
        f"Energy counter period from the probe: {f'{period_s * 1e3:.1f} ms' if period_s else 'unknown'}; "
        f"{MIN_COUNTER_UPDATES_TARGET} updates = {f'{counter_window:.1f} s' if counter_window else 'n/a'}; "
        f"window target per config {window_s:.1f} s.",
        "",
        "| run | model | batch | prompts | output tokens | rounds | est. window s | est. run s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, w, b, r, _p, est_window, est_total in rows:
        lines.append(f"| {name} | {w.preset} | {b} | {r * b} | {w.output_len} | {r} | {est_window:.1f} | {est_total:.0f} |")
    lines += ["", f"Estimated total: {total:.0f} s of {budget_s:.0f} s. Runs that no longer fit the remaining budget "
              "are skipped (and reported as skipped); each run's --timeout is the remaining budget."]
    text = "\n".join(lines) + "\n"
    (out / "budget.md").write_text(text, encoding="utf-8")
    print(text, flush=True)
    return 0 if rows else 1


def _warn_codes(warnings: list[str]) -> str:
    return "; ".join(w.split(":", 1)[0] for w in warnings)


def summarise_result(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Return one summary row of a result.json (J/token J, tok/s, W, agreement as a fraction, uncertainty J)."""
    from llem_pipeline.measure.quality import MAX_COUNTER_TRACE_DISAGREEMENT

    cfg = result.get("effective_config") or {}
    breakdown = result.get("energy_breakdown") or {}
    agreement = result.get("energy_trace_agreement")
    ext = result.get("extended_metrics") or {}
    return {
        "run": name,
        "model": cfg.get("model"),
        "batch": (cfg.get("pytorch") or {}).get("batch_size"),
        "device_kind": result.get("device_kind"),
        "output_tokens": result.get("total_tokens"),
        "window_s": result.get("total_inference_time_sec"),
        "j_per_token": result.get("avg_energy_per_token_j"),
        "tok_per_s": result.get("avg_tokens_per_second"),
        "avg_w": ext.get("avg_power_w"),
        "energy_j": result.get("total_energy_j"),
        "trace_energy_j": breakdown.get("trace_energy_j"),
        "agreement": agreement,
        "agreement_ok": agreement is not None and agreement <= MAX_COUNTER_TRACE_DISAGREEMENT,
        "uncertainty_j": breakdown.get("uncertainty_j"),
        "baseline_w": result.get("baseline_power_w"),
        "warnings": _warn_codes(result.get("measurement_warnings") or []),
        "status": "ok",
    }


def _fmt(v: Any, spec: str) -> str:
    return "" if v is None else format(v, spec)


def summary(work: Path, out: Path) -> int:
    """Write summary.md/summary.csv from the run folders under ``work``/runs; print the table; returns the exit code."""
    plan_rows = [ln.split("\t") for ln in (work / "plan.tsv").read_text(encoding="utf-8").splitlines() if ln.strip()]
    rows: list[dict[str, Any]] = []
    for name, preset, batch, *_ in plan_rows:
        result_path = work / "runs" / name / "result.json"
        status_path = work / "runs" / f"{name}.status"
        if result_path.is_file():
            rows.append(summarise_result(name, json.loads(result_path.read_text(encoding="utf-8"))))
        else:
            status = status_path.read_text(encoding="utf-8").strip() if status_path.is_file() else "not run"
            rows.append({"run": name, "model": f"llem:{preset}", "batch": int(batch), "status": status,
                         "agreement_ok": False})
    fields = ["run", "model", "batch", "device_kind", "output_tokens", "window_s", "j_per_token", "tok_per_s", "avg_w",
              "energy_j", "trace_energy_j", "agreement", "agreement_ok", "uncertainty_j", "baseline_w", "warnings",
              "status"]
    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in fields})
    lines = ["| model | batch | device | window s | J/token | tok/s | avg W | counter vs trace | uncertainty J | warnings | status |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        agree = "" if r.get("agreement") is None else f"{r['agreement']:.2%} {'ok' if r['agreement_ok'] else 'OVER 5 %'}"
        lines.append(
            f"| {r.get('model')} | {r.get('batch')} | {r.get('device_kind') or ''} | {_fmt(r.get('window_s'), '.1f')} | "
            f"{_fmt(r.get('j_per_token'), '.4g')} | {_fmt(r.get('tok_per_s'), '.1f')} | {_fmt(r.get('avg_w'), '.1f')} | "
            f"{agree} | {_fmt(r.get('uncertainty_j'), '.3g')} | {r.get('warnings') or ''} | {r['status']} |")
    ok = sum(1 for r in rows if r["status"] == "ok")
    agree_ok = sum(1 for r in rows if r.get("agreement_ok"))
    real = [r for r in rows if r.get("device_kind") == "nvml"]
    real_ok = all(r.get("agreement_ok") for r in real)
    verdict = (f"{ok}/{len(rows)} runs produced a result; counter/trace agreement within 5 %: {agree_ok}/{len(rows)} "
               "(required on NVML devices; on the simulated device short windows of a fast-changing load are "
               "reported, not failed)")
    text = "# gpu_check summary\n\n" + "\n".join(lines) + f"\n\n{verdict}\n"
    (out / "summary.md").write_text(text, encoding="utf-8")
    print(text, flush=True)
    print(f"GPU_CHECK runs={len(rows)} ok={ok} agreement_ok={agree_ok}")
    return 0 if rows and ok == len(rows) and real_ok else 1


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``plan`` / ``summary``; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--budget-s", type=float, required=True)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--probe", type=Path, default=None)
    s = sub.add_parser("summary")
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cmd == "plan":
        return plan(args.work, args.out, args.budget_s, args.dry_run, args.probe)
    return summary(args.work, args.out)


if __name__ == "__main__":
    sys.exit(main())
