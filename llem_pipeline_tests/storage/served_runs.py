"""RunRecords of scripted serving runs: a continuous-batching workload (serving_sim.py) on the simulated
device's phase model, sampled like the sampler does, aggregated by the real aggregation and attributed by
the real attribution (attribute_tables), as the worker does it. The energies are the phase model's (known
exactly); the latencies the schedule's. ``device_kind='nvml'`` labels a run as a real GPU for tests of the
real-only paths (a FABRICATED real run: never a measurement)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from llem_pipeline.domain import ExperimentConfig, RawProcessResult, Timestamps
from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.measure.aggregation import aggregate
from llem_pipeline.measure.attribution_run import attribute_tables
from llem_pipeline.measure.devices.serving_sim import EngineTiming, mixed_workload, serve
from llem_pipeline.measure.devices.simulated import FakeClock, SimulatedDevice
from llem_pipeline.measure.latency import latency_statistics, requests_table
from llem_pipeline.storage import RunRecord
from llem_pipeline_tests.storage.record_factory import TIMESERIES_SCHEMA, make_baseline, make_environment

IDLE_W, STATIC_W = 60.0, 300.0  # W: the device idle, and busy before its work's own energy


def served_record(config: ExperimentConfig, max_num_seqs: int, *, run_id: str, run_date: str = "2026-11-01",
                  seed: int = 0, n: int = 80, device_kind: str = "simulated", gpu_name: str = "Simulated GPU",
                  start: datetime | None = None, interval_s: float = 0.05, cycle: int | None = None,
                  study: str | None = "demo", rate_per_s: float = 10.0) -> RunRecord:
    """Return the RunRecord of ``n`` mixed requests served with ``max_num_seqs`` slots (energies J, times s)."""
    work = serve(mixed_workload(n, seed=seed, rate_per_s=rate_per_s, prompt_range=(16, 2048), output_range=(16, 256)),
                 max_num_seqs=max_num_seqs, timing=EngineTiming(), idle_w=IDLE_W, static_w=STATIC_W)
    a, b = work.span_s
    start = start or datetime.fromisoformat(run_date).replace(hour=2, tzinfo=UTC)
    uuid = "GPU-fab-0000"
    clock = FakeClock(0.0)
    device = SimulatedDevice(work.model, clock=clock, start_s=0.0, idle_w=IDLE_W)
    ticks = np.arange(a - 1.0, b + 0.5, interval_s)
    power, energy = [], []
    for t in ticks:
        clock.set(float(t))
        reading = device.read()
        power.append(reading.power_w)
        energy.append(float(reading.energy_mj))
    rel = ticks - a
    phase = ["warmup" if t < 0 else "window" if t <= b - a else "idle" for t in rel]
    samples = pa.table({
        "process_index": np.zeros(ticks.size, np.int16), "device_index": np.zeros(ticks.size, np.int16),
        "device_uuid": [uuid] * ticks.size, "t_mono_s": ticks, "t_rel_s": rel,
        "utc": pa.array([start + timedelta(seconds=float(t)) for t in rel], pa.timestamp("ns", tz="UTC")),
        "power_w": np.asarray(power, np.float32), "energy_mj": np.asarray(energy),
        "temperature_c": np.full(ticks.size, 50.0, np.float32), "sm_clock_mhz": np.full(ticks.size, 1980.0, np.float32),
        "mem_clock_mhz": np.full(ticks.size, 2619.0, np.float32), "gpu_util_pct": np.full(ticks.size, 90.0, np.float32),
        "mem_used_mb": np.full(ticks.size, 4096.0, np.float32), "clock_event_reasons": np.zeros(ticks.size, np.int64),
        "phase": phase,
    }, schema=TIMESERIES_SCHEMA)
    records = [RequestRecord(request_index=r.index, input_tokens=r.input_tokens, output_tokens=r.output_tokens,
                             submit_time_s=r.submit_s, first_token_time_s=r.first_token_s,
                             token_times_s=list(r.token_times_s), done_time_s=r.token_times_s[-1],
                             finish_reason="length") for r in work.requests]
    requests = requests_table(records, a)
    window_j = work.model.cumulative_j(b) - work.model.cumulative_j(a)
    out_tokens = sum(r.output_tokens for r in work.requests)
    warnings = ["simulated_device: scripted serving workload on the phase model"] if device_kind == "simulated" else []
    raw = RawProcessResult(
        experiment_id=f"served-{run_id}", process_index=0, backend=config.backend, backend_version="scripted",
        device_kind=device_kind, device_uuids=[uuid], gpu_names=[gpu_name],  # type: ignore[arg-type]
        timestamps=Timestamps(start=start, end=start + timedelta(seconds=b - a), duration_sec=b - a),
        num_requests=len(records), input_tokens=sum(r.input_tokens for r in work.requests), output_tokens=out_tokens,
        inference_time_sec=b - a, energy_j=window_j, energy_per_device_j=[window_j],
        energy_method="simulated" if device_kind == "simulated" else "nvml_counter",
        baseline_power_w=IDLE_W, energy_adjusted_j=max(0.0, window_j - IDLE_W * (b - a)),
        latency_stats=latency_statistics(records), sample_count=phase.count("window"),
        measurement_warnings=warnings, timeseries="timeseries.parquet", requests_file="requests.parquet",
    )
    environment = make_environment(device_kind, gpu_name=gpu_name)
    result = aggregate([raw], config=config, requests=records, environment=environment,
                       experiment_id=raw.experiment_id, timeseries="timeseries.parquet")
    baseline = make_baseline(device_kind, start=start, power_w=IDLE_W)
    requests, attribution = attribute_tables(samples, requests, [raw], baseline)
    return RunRecord.build(result, run_date=run_date, run_id=run_id, processes=[raw], environment=environment,
                           baseline=baseline, power_samples=samples, requests=requests, study=study, cycle=cycle,
                           attribution=attribution.summary(), label=f"{study} · max_num_seqs={max_num_seqs}")
