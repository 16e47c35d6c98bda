"""Fabricate VALID RunRecords (everything one measurement run stores) for tests.

The numbers are FABRICATED (deterministic from a seed), not measured: they are internally consistent
(J/token = energy / tokens, tok/s = tokens / window, samples inside the window) so storage, views and
Dagster wiring can be tested without a GPU or a model. Never use them as measurements.

Reusable by any test: ``make_config``, ``make_result``, ``make_environment``, ``make_baseline``,
``timeseries_table``, ``requests_table``, ``make_record`` (a RunRecord), ``record_from_run_folder`` (a
RunRecord of a real worker's run folder, for tests that run the worker) and ``insert_pre_006_run`` (a run
as the store wrote it before migration 6, for migration tests).
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

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
from llem_pipeline.storage import RunRecord
from llem_pipeline.storage import rows as R

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
    gpu_name: str = "Fabricated GPU",
    devices_per_process: int = 1,
) -> tuple[ExperimentResult, list[RawProcessResult]]:
    """Return a fabricated, self-consistent (ExperimentResult v2.0, its RawProcessResults); energy in J.

    Each process measures ``devices_per_process`` devices named ``gpu_name`` (UUIDs GPU-fab-<k><d>), each
    drawing ``power_w`` (W, +-5 % by seed) over ``window_s`` s.
    """
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
        per_device = [power * window_s] * devices_per_process
        energy = sum(per_device)
        procs.append(
            RawProcessResult(
                experiment_id=experiment_id,
                process_index=k,
                backend=config.backend,
                backend_version="4.0-fabricated",
                device_kind=device_kind,  # type: ignore[arg-type]
                device_uuids=_uuids(k, devices_per_process),
                gpu_names=[gpu_name] * devices_per_process,
                timestamps=Timestamps(start=start, end=start + timedelta(seconds=window_s), duration_sec=window_s),
                num_requests=config.n,
                input_tokens=config.n * 32,
                output_tokens=tokens_per_process,
                inference_time_sec=window_s,
                energy_j=energy,
                energy_per_device_j=per_device,
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
    baseline_total = baseline_w * n_processes * devices_per_process
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
        energy_per_device_j=[e for p in procs for e in p.energy_per_device_j],
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


def _uuids(process_index: int, n_devices: int) -> list[str]:
    """Return the fabricated UUIDs of a process's devices (GPU-fab-0000 for one device per process)."""
    if n_devices == 1:
        return [f"GPU-fab-{process_index:04d}"]
    return [f"GPU-fab-{process_index:02d}{d:02d}" for d in range(n_devices)]


def make_environment(device_kind: str = "simulated", n_devices: int = 1, gpu_name: str = "Fabricated GPU",
                     devices_per_process: int = 1) -> EnvironmentSnapshot:
    """Return a fabricated EnvironmentSnapshot of ``n_devices`` processes' devices (VRAM MB, power limits W)."""
    uuids = [u for k in range(n_devices) for u in _uuids(k, devices_per_process)]
    return EnvironmentSnapshot(
        python_version="3.11.7",
        gpu_names=[gpu_name] * len(uuids),
        gpu_vram_mb=[81920] * len(uuids),
        gpu_uuids=uuids,
        gpu_power_limits_w=[700.0] * len(uuids),
        gpu_persistence_mode=[True] * len(uuids),
        pip_freeze=["duckdb==2.0.1"],
        tool_version="0.1.0",
        platform="Linux-fabricated",
        device_kind=device_kind,
        relevant_env={"CUDA_VISIBLE_DEVICES": "0"},
        collected_at=datetime(2026, 11, 1, 1, 59, tzinfo=UTC),
    )


def timeseries_table(
    n_samples: int, *, n_processes: int = 1, start: datetime | None = None, power_w: float = 200.0, seed: int = 0,
    devices_per_process: int = 1, interval_s: float = 0.1,
) -> pa.Table:
    """Return fabricated power samples in the contract's timeseries schema (W, mJ, s): ``n_samples`` sampler
    ticks ``interval_s`` s apart per process, one row per tick and device (``devices_per_process``), each
    device drawing about ``power_w`` W. Within a tick the devices are read 1 ms apart, as one sampler
    thread reads them."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    per_process = n_samples * devices_per_process
    tick = np.repeat(np.arange(n_samples, dtype=np.float64) * interval_s, devices_per_process)
    dev = np.tile(np.arange(devices_per_process, dtype=np.int16), n_samples)
    t = np.tile(tick + dev * 0.001, n_processes)
    dev = np.tile(dev, n_processes)
    proc = np.repeat(np.arange(n_processes, dtype=np.int16), per_process)
    power = (power_w + rng.normal(0, 5, size=t.size)).astype(np.float32)
    energy = np.zeros(t.size)
    for i in range(n_processes):
        for d in range(devices_per_process):
            mask = (proc == i) & (dev == d)
            energy[mask] = np.cumsum(power[mask] * interval_s * 1000.0)
    utc_ns = np.int64(start.timestamp() * 1e9) + (t * 1e9).astype(np.int64)
    uuids = {(k, d): u for k in range(n_processes) for d, u in enumerate(_uuids(k, devices_per_process))}
    cols = {
        "process_index": proc,
        "device_index": dev,
        "device_uuid": pa.array([uuids[(k, d)] for k, d in zip(proc.tolist(), dev.tolist(), strict=True)], pa.string()),
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


def make_baseline(device_kind: str = "simulated", n_processes: int = 1, start: datetime | None = None,
                  devices_per_process: int = 1, power_w: float = 50.0) -> dict[str, Any]:
    """Return a fabricated baseline.json object: ``power_w`` W idle per device, 1 s, fresh."""
    start = start or datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    uuids = [u for k in range(n_processes) for u in _uuids(k, devices_per_process)]
    return {
        "devices": [{"uuid": u, "power_w": power_w} for u in uuids],
        "total_power_w": power_w * len(uuids),
        "duration_s": 1.0,
        "sample_count": 10,
        "measured_at": start.isoformat(),
        "provenance": "fresh",
        "cache_age_s": None,
        "device_kind": device_kind,
    }


def make_record(
    config: ExperimentConfig | None = None,
    *,
    run_date: date | str = "2026-11-01",
    run_id: str = "run-0001",
    n_samples: int = 100,
    n_requests: int = 8,
    n_processes: int = 1,
    devices_per_process: int = 1,
    interval_s: float = 0.1,
    with_baseline: bool = True,
    with_environment: bool = True,
    seed: int = 0,
    power_w: float = 200.0,
    device_kind: str = "simulated",
    gpu_name: str = "Fabricated GPU",
    start: datetime | None = None,
    study: str | None = None,
    cycle: int | None = None,
    measurement_key: str | None = None,
    label: str | None = None,
    tokens_per_process: int = 1024,
    window_s: float = 10.0,
) -> RunRecord:
    """Return a complete fabricated RunRecord (result, processes, environment, baseline, samples, requests).

    The run starts at 02:00 UTC of ``run_date`` unless ``start`` says otherwise; its hardware_id follows
    from ``device_kind``, ``gpu_name`` and the device count (e.g. 'simulated:Fabricated-GPU:x1').
    """
    config = config or make_config()
    day = run_date if isinstance(run_date, str) else run_date.isoformat()
    start = start or datetime.fromisoformat(day).replace(hour=2, tzinfo=UTC)
    result, procs = make_result(
        config, start=start, n_processes=n_processes, power_w=power_w, seed=seed, device_kind=device_kind,
        gpu_name=gpu_name, devices_per_process=devices_per_process, tokens_per_process=tokens_per_process,
        window_s=window_s,
    )
    environment = (make_environment(device_kind, n_processes, gpu_name, devices_per_process)
                   if with_environment else None)
    return RunRecord.build(
        result,
        run_date=day,
        run_id=run_id,
        processes=procs,
        environment=environment,
        baseline=make_baseline(device_kind, n_processes, start, devices_per_process) if with_baseline else None,
        power_samples=timeseries_table(n_samples, n_processes=n_processes, start=start, power_w=power_w, seed=seed,
                                       devices_per_process=devices_per_process, interval_s=interval_s),
        requests=requests_table(n_requests, n_processes=n_processes, seed=seed),
        study=study,
        cycle=cycle,
        measurement_key=measurement_key,
        label=label,
    )


def with_result(record: RunRecord, **update: Any) -> RunRecord:
    """Return ``record`` with its result's fields replaced by ``update`` (e.g. avg_energy_per_token_j=...), kept
    self-consistent: a new J/token rescales total_energy_j (and the adjusted energy) to J/token × tokens, so the
    result still validates (ExperimentResult refuses a J/token that is not energy / tokens)."""
    fields = {f: getattr(record, f) for f in record.__dataclass_fields__}
    result = record.result
    if "avg_energy_per_token_j" in update and "total_energy_j" not in update and result.total_tokens:
        scale = update["avg_energy_per_token_j"] * result.total_tokens / result.total_energy_j
        update = {"total_energy_j": result.total_energy_j * scale, **update}
        if result.energy_adjusted_j is not None and "energy_adjusted_j" not in update:
            update["energy_adjusted_j"] = result.energy_adjusted_j * scale
    fields["result"] = type(result).model_validate({**result.model_dump(), **update})
    return RunRecord(**fields)


def record_from_run_folder(folder: Path, *, run_date: date | str, study: str | None = None) -> RunRecord:
    """Return the RunRecord of a worker's run folder (validated by the run-folder reader), for tests that run
    the real worker. Raises RunFolderError when the folder breaks the contract."""
    from llem_pipeline.defs.results.records import run_record
    from llem_pipeline.measure.run_folder import RunFolder

    return run_record(RunFolder.at(Path(folder), str(run_date)), study=study)


# Column names the store used before migration 6 for the renamed experiment_results columns.
PRE_006_NAMES = {"j_per_token": "avg_energy_per_token_j", "tokens_per_s": "avg_tokens_per_second"}
# Columns that migration 6 added (absent before it).
ADDED_IN_006 = ("hardware_id", "workload_hash", "cycle", "measurement_key", "label")
# Columns that migration 7 added to experiment_results and requests (absent before it).
ADDED_IN_007 = ("tpot_p99_ms", "request_energy_p50_j", "request_energy_p90_j", "request_energy_p99_j", "prefill_energy_j",
                "decode_energy_j", "prefill_share", "prefill_uncertainty_j", "idle_energy_j", "attribution_method",
                "prefill_decode_ratio", "energy_j", "baseline_energy_j", "energy_uncertainty_j",
                "prefill_direct_energy_j", "prefill_direct_coverage")


def insert_pre_006_run(con: duckdb.DuckDBPyConnection, record: RunRecord, *, write_seq: int | None = None) -> dict[str, int]:
    """Insert ``record`` into a database at schema version 5 as the store wrote runs then: the pre-6 column
    names, no identity columns, and one partition_manifest row per (table, run_date, config_hash); return
    the rows per table. ``write_seq`` (default: none) is the write number recorded in the manifest."""
    key = record.key_columns()
    tables = {
        "experiment_results": [R.experiment_result_row(record)],
        "process_results": R.process_result_rows(record.processes, key),
        "environment_snapshots": [R.environment_row(record.environment, key)] if record.environment else [],
        "baselines": R.baseline_rows(record.baseline, key) if record.baseline else [],
    }
    counts: dict[str, int] = {}
    for name, rows in tables.items():
        old = [{PRE_006_NAMES.get(k, k): v for k, v in r.items() if k not in ADDED_IN_006 + ADDED_IN_007} for r in rows]
        counts[name] = len(old)
        if old:
            con.register("_old_rows", R.rows_to_table(old))
            con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _old_rows")
            con.unregister("_old_rows")
    for name in ("power_samples", "requests"):
        table = getattr(record, name)
        table = table.drop_columns([c for c in ADDED_IN_007 if c in table.column_names])
        counts[name] = table.num_rows
        if table.num_rows:
            con.register("_old_rows", table)
            con.execute(f"INSERT INTO {name} BY NAME SELECT ?::DATE AS run_date, ? AS config_hash, ? AS run_id, * "
                        "FROM _old_rows", [record.run_date, record.config_hash, record.run_id])
            con.unregister("_old_rows")
    for name, n in counts.items():
        con.execute("DELETE FROM partition_manifest WHERE table_name = ? AND run_date = ? AND config_hash = ?",
                    [name, record.run_date, record.config_hash])
        con.execute("INSERT INTO partition_manifest VALUES (?, ?, ?, ?, ?, now(), 1, ?)",
                    [name, record.run_date, record.config_hash, record.run_id, n, write_seq])
    return counts
