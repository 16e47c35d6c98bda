"""Fabricate VALID run folders in the worker's contract format (.llem_briefs/RUN_FOLDER.md) for tests.

The numbers are FABRICATED (deterministic from a seed), not measured: they are internally consistent
(J/token = energy / tokens, tok/s = tokens / window, samples inside the window) so storage, views and
Dagster wiring can be tested without a GPU or a model. Never use them as measurements.

Reusable by any test: ``make_config``, ``make_result``, ``timeseries_table``, ``requests_table``,
``write_run_folder`` (returns the folder path under ``<data_dir>/runs/<date>/<hash>/<run_id>``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llem_pipeline.domain import (
    AggregationMetadata,
    EnergyBreakdown,
    EnvironmentSnapshot,
    ExperimentConfig,
    ExperimentResult,
    LatencyStatistics,
    Percentiles,
    RawProcessResult,
    ThermalThrottleInfo,
    Timestamps,
    compute_measurement_config_hash,
)

TIMESERIES_SCHEMA = pa.schema(
    [
        ("process_index", pa.int16()),
        ("device_index", pa.int16()),
        ("device_uuid", pa.string()),
        ("t_mono_s", pa.float64()),
        ("t_rel_s", pa.float64()),
        ("utc", pa.timestamp("ns", tz="UTC")),
        ("power_w", pa.float32()),
        ("energy_mj", pa.float64()),
        ("temperature_c", pa.float32()),
        ("sm_clock_mhz", pa.float32()),
        ("mem_clock_mhz", pa.float32()),
        ("gpu_util_pct", pa.float32()),
        ("mem_used_mb", pa.float32()),
        ("clock_event_reasons", pa.int64()),
        ("phase", pa.string()),
    ]
)
REQUESTS_SCHEMA = pa.schema(
    [
        ("process_index", pa.int16()),
        ("request_index", pa.int32()),
        ("input_tokens", pa.int32()),
        ("output_tokens", pa.int32()),
        ("submit_s", pa.float64()),
        ("first_token_s", pa.float64()),
        ("done_s", pa.float64()),
        ("ttft_ms", pa.float64()),
        ("e2e_ms", pa.float64()),
        ("tpot_ms", pa.float64()),
        ("finish_reason", pa.string()),
        ("token_times_s", pa.list_(pa.float64())),
    ]
)


def make_config(model: str = "tiny-llama", backend: str = "pytorch", batch_size: int = 1, **fields: Any) -> ExperimentConfig:
    """Return a valid ExperimentConfig (pytorch batch_size or vllm max_num_seqs=batch_size), short test settings."""
    section = {"batch_size": batch_size} if backend == "pytorch" else {"max_num_seqs": batch_size}
    data: dict[str, Any] = {
        "model": model,
        "backend": backend,
        "n": 8,
        "max_output_tokens": 16,
        "warmup": {"n_warmup": 1, "thermal_floor_seconds": 0},
        "baseline": {"duration_seconds": 1},
        backend: section,
    }
    data.update(fields)
    return ExperimentConfig.model_validate(data)


def _pct(values: np.ndarray) -> Percentiles:
    return Percentiles(
        count=int(values.size),
        mean_ms=float(values.mean()),
        p50_ms=float(np.percentile(values, 50)),
        p90_ms=float(np.percentile(values, 90)),
        p95_ms=float(np.percentile(values, 95)),
        p99_ms=float(np.percentile(values, 99)),
        min_ms=float(values.min()),
        max_ms=float(values.max()),
    )


def make_result(
    config: ExperimentConfig,
    *,
    start: datetime | None = None,
    n_processes: int = 1,
    window_s: float = 10.0,
    tokens_per_process: int = 1024,
    power_w: float = 200.0,
    baseline_w: float = 50.0,
    device_kind: str = "simulated",
    seed: int = 0,
    experiment_id: str | None = None,
) -> tuple[ExperimentResult, list[RawProcessResult]]:
    """Return a fabricated, self-consistent (ExperimentResult v2.0, its RawProcessResults); energy in J."""
    rng = random.Random(seed)
    start = start or datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    config_hash = compute_measurement_config_hash(config)
    experiment_id = experiment_id or f"exp-{config_hash[:8]}-{seed}"
    power = power_w * (1 + rng.uniform(-0.05, 0.05))
    lat_rng = np.random.default_rng(seed)
    ttft = lat_rng.uniform(5, 50, size=config.n)
    itl = lat_rng.uniform(1, 10, size=config.n * 4)
    procs = []
    for k in range(n_processes):
        energy = power * window_s
        procs.append(
            RawProcessResult(
                experiment_id=experiment_id,
                process_index=k,
                backend=config.backend,
                backend_version="4.0-fabricated",
                device_kind=device_kind,  # type: ignore[arg-type]
                device_uuids=[f"GPU-fab-{k:04d}"],
                gpu_names=["Fabricated GPU"],
                timestamps=Timestamps(start=start, end=start + timedelta(seconds=window_s), duration_sec=window_s),
                num_requests=config.n,
                input_tokens=config.n * 32,
                output_tokens=tokens_per_process,
                inference_time_sec=window_s,
                energy_j=energy,
                energy_per_device_j=[energy],
                energy_method="simulated" if device_kind == "simulated" else "nvml_counter",
                trace_energy_j=energy * 1.002,
                energy_trace_agreement=0.002,
                energy_uncertainty_j=0.5,
                baseline_power_w=baseline_w,
                energy_adjusted_j=max(0.0, energy - baseline_w * window_s),
                thermal_throttle=ThermalThrottleInfo(max_temperature_c=60.0, mean_temperature_c=55.0),
                sample_count=int(window_s * 10),
                measurement_warnings=["simulated_device: fabricated for storage tests"] if device_kind == "simulated" else [],
                timeseries="timeseries.parquet",
                requests_file="requests.parquet",
            )
        )
    total_e = sum(p.energy_j for p in procs)
    total_tokens = sum(p.output_tokens for p in procs)
    baseline_total = baseline_w * n_processes
    warnings = ["simulated_device: fabricated for storage tests"] if device_kind == "simulated" else []
    result = ExperimentResult(
        experiment_id=experiment_id,
        measurement_config_hash=config_hash,
        backend=config.backend,
        backend_version="4.0-fabricated",
        measurement_methodology="total",
        total_tokens=total_tokens,
        total_energy_j=total_e,
        total_inference_time_sec=window_s,
        avg_tokens_per_second=total_tokens / window_s,
        avg_energy_per_token_j=total_e / total_tokens,
        total_flops=2.0 * 1e6 * total_tokens,
        baseline_power_w=baseline_total,
        energy_adjusted_j=max(0.0, total_e - baseline_total * window_s),
        energy_per_device_j=[p.energy_j for p in procs],
        energy_breakdown=EnergyBreakdown(
            raw_energy_j=total_e,
            baseline_power_w=baseline_total,
            baseline_duration_sec=window_s,
            adjusted_energy_j=max(0.0, total_e - baseline_total * window_s),
            adjustment_method="subtract_idle_power_x_window",
            provenance="fresh",
            energy_method="simulated" if device_kind == "simulated" else "nvml_counter",
            uncertainty_j=0.5 * n_processes,
        ),
        measurement_warnings=warnings,
        timeseries="timeseries.parquet",
        start_time=start,
        end_time=start + timedelta(seconds=window_s),
        effective_config=config.model_dump(mode="json"),
        process_results=procs,
        aggregation=AggregationMetadata(num_processes=n_processes, temporal_overlap_verified=True),
        thermal_throttle=ThermalThrottleInfo(max_temperature_c=60.0, mean_temperature_c=55.0),
        latency_stats=LatencyStatistics(
            num_requests=config.n * n_processes, ttft=_pct(ttft), itl=_pct(itl), tpot=_pct(itl), e2e=_pct(ttft + 100)
        ),
        input_tokens=sum(p.input_tokens for p in procs),
        energy_method="simulated" if device_kind == "simulated" else "nvml_counter",
        energy_trace_agreement=0.002,
        device_kind=device_kind,  # type: ignore[arg-type]
    )
    return result, procs


def make_environment(device_kind: str = "simulated", n_devices: int = 1) -> EnvironmentSnapshot:
    """Return a fabricated EnvironmentSnapshot (VRAM MB, power limits W)."""
    return EnvironmentSnapshot(
        python_version="3.11.7",
        gpu_names=["Fabricated GPU"] * n_devices,
        gpu_vram_mb=[81920] * n_devices,
        gpu_uuids=[f"GPU-fab-{k:04d}" for k in range(n_devices)],
        gpu_power_limits_w=[700.0] * n_devices,
        gpu_persistence_mode=[True] * n_devices,
        pip_freeze=["duckdb==2.0.1"],
        tool_version="0.1.0",
        platform="Linux-fabricated",
        device_kind=device_kind,
        relevant_env={"CUDA_VISIBLE_DEVICES": "0"},
        collected_at=datetime(2026, 11, 1, 1, 59, tzinfo=UTC),
    )


def timeseries_table(
    n_samples: int, *, n_processes: int = 1, start: datetime | None = None, power_w: float = 200.0, seed: int = 0
) -> pa.Table:
    """Return ``n_samples`` fabricated power samples per process in the contract's timeseries schema (W, mJ, s)."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    t = np.tile(np.arange(n_samples, dtype=np.float64) * 0.1, n_processes)
    proc = np.repeat(np.arange(n_processes, dtype=np.int16), n_samples)
    power = (power_w + rng.normal(0, 5, size=t.size)).astype(np.float32)
    energy = np.concatenate([np.cumsum(power[i * n_samples:(i + 1) * n_samples] * 100.0) for i in range(n_processes)])
    utc_ns = np.int64(start.timestamp() * 1e9) + (t * 1e9).astype(np.int64)
    cols = {
        "process_index": proc,
        "device_index": np.zeros(t.size, dtype=np.int16),
        "device_uuid": pa.array([f"GPU-fab-{k:04d}" for k in proc.tolist()], pa.string()),
        "t_mono_s": 1000.0 + t,
        "t_rel_s": t,
        "utc": pa.array(utc_ns, pa.timestamp("ns", tz="UTC")),
        "power_w": power,
        "energy_mj": energy.astype(np.float64),
        "temperature_c": np.full(t.size, 55.0, np.float32),
        "sm_clock_mhz": np.full(t.size, 1980.0, np.float32),
        "mem_clock_mhz": np.full(t.size, 2619.0, np.float32),
        "gpu_util_pct": np.full(t.size, 97.0, np.float32),
        "mem_used_mb": np.full(t.size, 4096.0, np.float32),
        "clock_event_reasons": np.zeros(t.size, np.int64),
        "phase": pa.array(["window"] * t.size, pa.string()),
    }
    return pa.table(cols, schema=TIMESERIES_SCHEMA)


def partition_batch(partitions: list[tuple[str, str, str, int]], make: Any = None) -> pa.Table:
    """Return rows of ``make(n)`` (default: timeseries_table) for each (run_date, config_hash, run_id, n) partition,
    partition columns included: a table for ResultStore.write_batch."""
    make = make or timeseries_table
    parts = []
    for day, h, run_id, n in partitions:
        t = make(n)
        t = t.add_column(0, "run_id", pa.array([run_id] * n))
        t = t.add_column(0, "config_hash", pa.array([h] * n))
        parts.append(t.add_column(0, "run_date", pa.array([date.fromisoformat(day)] * n, pa.date32())))
    return pa.concat_tables(parts)


def requests_table(n_requests: int, *, n_processes: int = 1, output_tokens: int = 16, seed: int = 0) -> pa.Table:
    """Return fabricated per-request records in the contract's requests schema (s from inference start, ms)."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {name: [] for name in REQUESTS_SCHEMA.names}
    for k in range(n_processes):
        for i in range(n_requests):
            submit = float(i) * 0.05
            first = submit + float(rng.uniform(0.005, 0.05))
            times = [first + j * 0.004 for j in range(output_tokens)]
            done = times[-1]
            rows["process_index"].append(k)
            rows["request_index"].append(i)
            rows["input_tokens"].append(32)
            rows["output_tokens"].append(output_tokens)
            rows["submit_s"].append(submit)
            rows["first_token_s"].append(first)
            rows["done_s"].append(done)
            rows["ttft_ms"].append((first - submit) * 1000)
            rows["e2e_ms"].append((done - submit) * 1000)
            rows["tpot_ms"].append((done - first) / (output_tokens - 1) * 1000 if output_tokens > 1 else None)
            rows["finish_reason"].append("length")
            rows["token_times_s"].append(times)
    return pa.table(rows, schema=REQUESTS_SCHEMA)


def write_run_folder(
    data_dir: Path,
    *,
    run_date: date | str = "2026-11-01",
    config: ExperimentConfig | None = None,
    run_id: str = "run-0001",
    n_samples: int = 100,
    n_requests: int = 8,
    n_processes: int = 1,
    with_baseline: bool = True,
    with_environment: bool = True,
    seed: int = 0,
    power_w: float = 200.0,
    device_kind: str = "simulated",
) -> Path:
    """Write a complete fabricated run folder under ``data_dir/runs/<date>/<hash>/<run_id>``; return its path.

    Written into ``.<run_id>.tmp-<pid>`` and renamed into place, like the worker does.
    """
    config = config or make_config()
    config_hash = compute_measurement_config_hash(config)
    day = run_date if isinstance(run_date, str) else run_date.isoformat()
    start = datetime.fromisoformat(day).replace(hour=2, tzinfo=UTC)
    result, procs = make_result(
        config, start=start, n_processes=n_processes, power_w=power_w, seed=seed, device_kind=device_kind
    )
    final = Path(data_dir) / "runs" / day / config_hash / run_id
    tmp = final.parent / f".{run_id}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=False)
    (tmp / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    if with_environment:
        (tmp / "environment.json").write_text(make_environment(device_kind, n_processes).model_dump_json(indent=2))
    if with_baseline:
        baseline = {
            "devices": [{"uuid": f"GPU-fab-{k:04d}", "power_w": 50.0} for k in range(n_processes)],
            "total_power_w": 50.0 * n_processes,
            "duration_s": 1.0,
            "sample_count": 10,
            "measured_at": start.isoformat(),
            "provenance": "fresh",
            "cache_age_s": None,
            "device_kind": device_kind,
        }
        (tmp / "baseline.json").write_text(json.dumps(baseline, indent=2))
    for proc in procs:
        (tmp / f"process_{proc.process_index}.json").write_text(proc.model_dump_json(indent=2))
    (tmp / "result.json").write_text(result.model_dump_json(indent=2))
    pq.write_table(timeseries_table(n_samples, n_processes=n_processes, start=start, power_w=power_w, seed=seed),
                   tmp / "timeseries.parquet")
    pq.write_table(requests_table(n_requests, n_processes=n_processes, seed=seed), tmp / "requests.parquet")
    if final.exists():  # replace an older folder of the same run, as the worker does
        old = final.parent / f".{run_id}.old-{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old)
    os.replace(tmp, final)
    return final
