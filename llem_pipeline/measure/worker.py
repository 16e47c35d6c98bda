"""The worker: one measurement as a plain command (what Dagster launches through Pipes, what a pod runs).

``run_measurement()`` opens the devices, snapshots the environment (in the background), measures
the idle baseline (cached per GPU UUID) before any model loads, then runs one engine process per
data-parallel rank (``pytorch.num_processes``) — each a fresh spawned process with its own CUDA
context and sampler — under a hard timeout, aggregates their raw results and writes the run folder
atomically (a folder that exists is complete). No dagster import, no DuckDB.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.experiment import (
    ExperimentResult,
    RawProcessResult,
    compute_measurement_config_hash,
)
from llem_pipeline.measure.aggregation import aggregate
from llem_pipeline.measure.baseline import BaselineCache, BaselineResult, measure_baseline
from llem_pipeline.measure.environment import collect_environment
from llem_pipeline.measure.run_folder import (
    read_request_records,
    remove_dead_staging,
    runs_root_of,
    staged_run_folder,
    write_json,
)

EXIT_TIMEOUT = 124
SIM_IDLE_W = 60.0
SIM_PEAK_W = 300.0
# The simulated GPU's product name: its hardware_id is "simulated:sim-gpu:x<count>".
SIM_GPU_NAME = "sim-gpu"
ProgressFn = Callable[[str, dict[str, Any]], None]


class WorkerError(RuntimeError):
    """A measurement that could not be made; the message is one line saying why and what to do."""


class WorkerTimeout(WorkerError):
    """The engine processes ran past --timeout and were killed."""


@dataclass(frozen=True)
class DevicePlan:
    """Which devices each engine process measures: 'simulated' or NVML UUIDs, grouped per process."""

    kind: str  # "nvml" | "simulated"
    groups: list[list[str]]  # per process: NVML UUIDs, or simulated device indices as strings


def resolve_model_ref(model: str) -> str:
    """Return a loadable model reference: ``llem:<preset>`` → the project's offline model directory
    (built on first use, deterministic), anything else unchanged."""
    if not model.startswith("llem:"):
        return model
    from llem_pipeline.engines.tiny_model import make_model
    from llem_pipeline.paths import models_dir

    preset = model.split(":", 1)[1]
    return str(make_model(models_dir() / f"{preset}-seed0", size=preset, seed=0))


def plan_devices(config: ExperimentConfig, devices: str) -> DevicePlan:
    """Return the per-process device groups for ``--devices`` ('simulated', 'auto' or a comma list).

    Raises WorkerError when there are too few devices or NVML is unavailable (never falls back to
    the simulated device silently).
    """
    need = config.num_processes * config.devices_per_process
    per = config.devices_per_process
    if devices == "simulated":
        ids = [str(i) for i in range(need)]
        return DevicePlan("simulated", [ids[k * per:(k + 1) * per] for k in range(config.num_processes)])
    from llem_pipeline.measure.devices.nvml import NvmlUnavailableError, close_devices, open_nvml_devices

    try:
        opened = open_nvml_devices(None if devices == "auto" else devices)
    except NvmlUnavailableError as err:
        raise WorkerError(f"{err} (asked for --devices {devices})") from None
    except ValueError as err:
        raise WorkerError(f"--devices {devices}: {err}") from None
    try:
        uuids = [d.uuid for d in opened]
    finally:
        close_devices(opened)
    if len(uuids) < need:
        raise WorkerError(
            f"config needs {need} device(s) ({config.num_processes} process(es) × {per}) but --devices {devices} "
            f"gives {len(uuids)}: pass more devices or lower pytorch.num_processes / tensor_parallel_size"
        )
    uuids = uuids[:need]
    return DevicePlan("nvml", [uuids[k * per:(k + 1) * per] for k in range(config.num_processes)])


def open_devices(kind: str, ids: list[str]) -> list[Any]:
    """Open the devices of one group: simulated devices (activity-driven, labelled simulated) or NVML by UUID."""
    if kind == "simulated":
        from llem_pipeline.measure.devices.simulated import ActivityDriven, SimulatedDevice

        return [SimulatedDevice(ActivityDriven(SIM_IDLE_W, SIM_PEAK_W), index=int(i), idle_w=SIM_IDLE_W,
                                name=SIM_GPU_NAME) for i in ids]
    from llem_pipeline.measure.devices.nvml import open_nvml_devices

    return open_nvml_devices(ids)


# -- the engine process ---------------------------------------------------------------------------
def _process_main(payload: dict[str, Any], events: Any) -> None:
    """Entry point of one spawned engine process: measure and write process_<k>.json + parquet files."""
    _die_with_parent(payload.get("parent_pid"))
    k = payload["process_index"]
    out = Path(payload["staging"])
    if payload["kind"] == "nvml":
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(payload["ids"])

    def emit(event: str, data: dict[str, Any]) -> None:
        events.put((k, event, data))

    try:
        from llem_pipeline.engines.model_files import load_tokenizer
        from llem_pipeline.engines.prompts import build_prompt_set
        from llem_pipeline.engines.registry import load_engine
        from llem_pipeline.measure.harness import measure_process
        from llem_pipeline.measure.latency import requests_table
        from llem_pipeline.measure.sampler import write_timeseries_parquet

        config = ExperimentConfig.model_validate(payload["config"])
        engine_config = config.model_copy(update={"model": payload["model_path"]})
        devices = open_devices(payload["kind"], payload["ids"])
        baseline = _baseline_for(payload.get("baseline"), [d.uuid for d in devices])
        try:
            outcome = measure_process(
                engine_config, devices,
                engine_loader=lambda c, idx: load_engine(c, idx),
                tokenizer_loader=lambda c: load_tokenizer(c.model, trust_remote_code=_trust(c)),
                prompt_builder=build_prompt_set,
                device_indices=list(range(len(devices))) if payload["kind"] == "nvml" else [],
                experiment_id=payload["experiment_id"], process_index=k, baseline=baseline, on_progress=emit,
                sampler_mode=payload.get("sampler", "auto"),
            )
        finally:
            for d in devices:
                close = getattr(d, "close", None)
                if close:
                    close()
        raw = outcome.raw.model_copy(update={"timeseries": "timeseries.parquet"})
        t0 = outcome.inference_start_mono_s
        t = outcome.samples["t_mono_s"]
        done = max(r.done_time_s for r in outcome.requests)
        phase = sample_phases(t, t0, outcome.window_mono_s, done)
        write_timeseries_parquet(outcome.samples, out / f"timeseries_{k}.parquet", t0,
                                 extra_columns={"process_index": k, "phase": phase})
        records = [r.model_copy(update={"process_index": k}) for r in outcome.requests]
        pq.write_table(requests_table(records, t0), out / f"requests_{k}.parquet")
        write_json(out / f"process_{k}.json", raw)
        emit("steps", outcome.step_seconds)
    except BaseException as err:  # report every failure as one line to the parent
        line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        try:
            (out / f"error_{k}.txt").write_text(f"{line}\n\n{traceback.format_exc()}", encoding="utf-8")
        except OSError:  # disk full or folder gone: the line still reaches the parent through the queue
            pass
        try:
            emit("error", {"message": line})
        except Exception:
            pass
        raise SystemExit(1) from None


def sample_phases(t_mono_s: Sequence[float], inference_start_s: float, window_mono_s: tuple[float, float],
                  last_done_s: float) -> list[str]:
    """Return one phase label per sample time (monotonic s): ``warmup`` before the first submission,
    ``ramp_up`` from it to the reported window, ``window`` inside the reported window (both ends included,
    as ``Samples.between``: exactly the samples counted in ``sample_count``), ``drain`` from the window's
    end to the last token, ``idle`` after it."""
    a, b = window_mono_s
    out = []
    for x in t_mono_s:
        if a <= x <= b:
            out.append("window")
        elif x < inference_start_s:
            out.append("warmup")
        elif x < a:
            out.append("ramp_up")
        elif x <= last_done_s:
            out.append("drain")
        else:
            out.append("idle")
    return out


def _die_with_parent(parent_pid: int | None) -> None:
    """Linux: have the kernel SIGKILL this engine process when the worker dies (even by SIGKILL), so no
    orphan keeps the GPU busy under the next measurement; exits at once if the worker is already gone."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def _trust(config: ExperimentConfig) -> bool:
    section = config.engine_section
    return bool(getattr(section, "trust_remote_code", False))


def _baseline_for(data: dict[str, Any] | None, uuids: list[str]) -> BaselineResult | None:
    """Return the baseline restricted to one process's devices (idle W summed over them)."""
    if not data:
        return None
    by_uuid = dict(zip(data["device_uuids"], data["idle_power_per_device_w"], strict=True))
    uuids = [u for u in uuids if u in by_uuid]
    powers = tuple(by_uuid[u] for u in uuids)
    return BaselineResult(
        device_uuids=tuple(uuids), idle_power_per_device_w=powers, total_idle_power_w=float(sum(powers)),
        duration_s=data["duration_s"], sample_count=data["sample_count"],
        measured_at=datetime.fromisoformat(data["measured_at"]), provenance=data["provenance"],
        cache_age_s=data.get("cache_age_s"), warnings=list(data.get("warnings", [])),
    )


# -- the parent -----------------------------------------------------------------------------------
def _kill_tree(proc: mp.Process) -> None:
    """Kill a spawned process and everything it started (vLLM engine cores, compile workers)."""
    import psutil

    try:
        parent = psutil.Process(proc.pid)
        for child in parent.children(recursive=True):
            child.kill()
        parent.kill()
    except psutil.NoSuchProcess:
        pass
    proc.join(5)


def _drain(events: Any, on_progress: ProgressFn, stop: threading.Event) -> None:
    while not stop.is_set() or not events.empty():
        try:
            k, event, data = events.get(timeout=0.1)
        except queue.Empty:
            continue
        except (EOFError, OSError):
            return
        on_progress(event, {"process_index": k, **data})


def run_measurement(
    config: ExperimentConfig,
    devices: str,
    out_dir: Path,
    *,
    timeout_s: float | None = None,
    run_id: str | None = None,
    experiment_id: str | None = None,
    baseline_cache: Path | None = None,
    sampler: str = "auto",
    on_progress: ProgressFn | None = None,
) -> Path:
    """Run one measurement and write its run folder atomically; returns ``out_dir``.

    ``devices``: 'simulated', 'auto' or a comma list of NVML UUIDs/indices. ``sampler``: where the power
    sampler runs ('auto' | 'process' | 'thread', see harness.make_sampler). ``timeout_s``: wall-clock
    limit for the engine processes, s (WorkerTimeout when exceeded). Raises WorkerError with a
    one-line reason on any failure; nothing is left in ``out_dir`` then.
    """
    emit = on_progress or (lambda _e, _d: None)
    from llem_pipeline.engines.model_files import EngineLoadError
    from llem_pipeline.engines.registry import check_backend

    try:
        check_backend(config)  # an unavailable backend fails before anything runs
    except EngineLoadError as err:
        raise WorkerError(str(err)) from None
    config_hash = compute_measurement_config_hash(config)
    started = datetime.now(UTC)
    experiment_id = experiment_id or f"{config_hash}-{started:%Y%m%dT%H%M%SZ}"
    plan = plan_devices(config, devices)
    emit("plan", {"kind": plan.kind, "groups": plan.groups, "run_id": run_id})
    model_path = resolve_model_ref(config.model)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    root = runs_root_of(Path(out_dir))
    if root is not None:
        for stale in remove_dead_staging(root):
            emit("removed_stale_staging", {"path": str(stale)})
    with staged_run_folder(Path(out_dir)) as staging:
        write_json(staging / "config.json", config.model_dump(mode="json"))
        all_ids = [i for g in plan.groups for i in g]
        parent_devices = open_devices(plan.kind, all_ids)
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                env_future = pool.submit(collect_environment, parent_devices, plan.kind)
                baseline = None
                if config.baseline.enabled:
                    emit("baseline", {"duration_s": config.baseline.duration_seconds})
                    cache = BaselineCache(baseline_cache) if baseline_cache is not None else None
                    baseline = measure_baseline(parent_devices, config.baseline.duration_seconds,
                                                interval_s=config.energy.sample_interval_ms / 1000.0,
                                                cache=cache, ttl_s=config.baseline.cache_ttl_seconds)
                environment = env_future.result()
        finally:
            for d in parent_devices:
                close = getattr(d, "close", None)
                if close:
                    close()
        write_json(staging / "environment.json", environment)
        baseline_payload = None
        if baseline is not None:
            baseline_payload = {
                "device_uuids": list(baseline.device_uuids),
                "idle_power_per_device_w": list(baseline.idle_power_per_device_w),
                "duration_s": baseline.duration_s, "sample_count": baseline.sample_count,
                "measured_at": baseline.measured_at.isoformat(), "provenance": baseline.provenance,
                "cache_age_s": baseline.cache_age_s, "warnings": baseline.warnings,
            }
            write_json(staging / "baseline.json", {
                "devices": [{"uuid": u, "power_w": p} for u, p in zip(baseline.device_uuids,
                                                                       baseline.idle_power_per_device_w, strict=True)],
                "total_power_w": baseline.total_idle_power_w, "duration_s": baseline.duration_s,
                "sample_count": baseline.sample_count, "measured_at": baseline.measured_at.isoformat(),
                "provenance": baseline.provenance, "cache_age_s": baseline.cache_age_s, "device_kind": plan.kind,
            })
        _run_processes(config, plan, model_path, staging, experiment_id, baseline_payload, deadline, emit, sampler)
        raws = [RawProcessResult.model_validate_json((staging / f"process_{k}.json").read_text())
                for k in range(len(plan.groups))]
        _merge_parquet(staging, "timeseries", len(plan.groups))
        _merge_parquet(staging, "requests", len(plan.groups))
        _attribute_energy(staging, raws)
        result = aggregate(raws, config=config, requests=read_request_records(staging / "requests.parquet"),
                           environment=environment, experiment_id=experiment_id, timeseries="timeseries.parquet")
        write_json(staging / "result.json", result)
        emit("result", headline(result))
    return Path(out_dir)


def _run_processes(config: ExperimentConfig, plan: DevicePlan, model_path: str, staging: Path, experiment_id: str,
                   baseline_payload: dict[str, Any] | None, deadline: float | None, emit: ProgressFn,
                   sampler: str = "auto") -> None:
    """Spawn one engine process per device group, wait (hard deadline), raise WorkerError on failure."""
    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    stop = threading.Event()
    child_errors: dict[int, str] = {}  # process index -> its one-line failure, sent through the queue

    def record(event: str, data: dict[str, Any]) -> None:
        if event == "error":
            child_errors[data["process_index"]] = str(data.get("message", ""))
        emit(event, data)

    drain = threading.Thread(target=_drain, args=(events, record, stop), daemon=True)
    drain.start()
    procs = []
    for k, ids in enumerate(plan.groups):
        payload = {"process_index": k, "staging": str(staging), "kind": plan.kind, "ids": ids,
                   "config": config.model_dump(mode="json"), "model_path": model_path,
                   "experiment_id": experiment_id, "baseline": baseline_payload, "parent_pid": os.getpid(),
                   "sampler": sampler}
        p = ctx.Process(target=_process_main, args=(payload, events), name=f"llem-engine-{k}")
        p.start()
        procs.append(p)
    try:
        for p in procs:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            p.join(remaining)
            if p.is_alive():
                for q in procs:
                    _kill_tree(q)
                raise WorkerTimeout("engine process(es) ran past --timeout and were killed; raise --timeout "
                                    "or lower n / max_output_tokens")
    finally:
        stop.set()
        drain.join(2)
    failures = []
    for k, p in enumerate(procs):
        line = _first_line(staging / f"error_{k}.txt") or child_errors.get(k)
        if line:
            failures.append(f"process {k}: {line}")
        elif p.exitcode != 0 or not (staging / f"process_{k}.json").exists():
            failures.append(f"process {k}: exited with code {p.exitcode} without a result (killed or crashed)")
    if failures:
        raise WorkerError("; ".join(failures))


def _attribute_energy(staging: Path, raws: list[RawProcessResult]) -> None:
    """Attribute the run's energy to its requests and phases (measure/attribution.py), once: add the energy
    columns to requests.parquet and write attribution.json; returns None."""
    import json

    from llem_pipeline.measure.attribution_run import attribute_tables

    baseline_path = staging / "baseline.json"
    baseline = json.loads(baseline_path.read_text(encoding="utf-8")) if baseline_path.is_file() else None
    requests, attribution = attribute_tables(pq.read_table(staging / "timeseries.parquet"),
                                             pq.read_table(staging / "requests.parquet"), raws, baseline)
    pq.write_table(requests, staging / "requests.parquet")
    write_json(staging / "attribution.json", attribution.summary())


def _first_line(path: Path) -> str | None:
    """Return the first line of an engine process's error file, or None when it is absent, empty or unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    return lines[0] if lines else None


def _merge_parquet(staging: Path, stem: str, n: int) -> None:
    """Concatenate ``<stem>_<k>.parquet`` into ``<stem>.parquet`` and remove the parts."""
    parts = [staging / f"{stem}_{k}.parquet" for k in range(n)]
    tables = [pq.read_table(p) for p in parts]
    pq.write_table(pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0],
                   staging / f"{stem}.parquet")
    for p in parts:
        p.unlink()


def headline(result: ExperimentResult) -> dict[str, Any]:
    """Return the headline figures of a result (J/token, tok/s, W, TTFT ms, device kind) for logs and UIs."""
    lat = result.latency_stats
    ext = result.extended_metrics
    return {
        "j_per_token": result.avg_energy_per_token_j,
        "tokens_per_s": result.avg_tokens_per_second,
        "output_tokens": result.total_tokens,
        "energy_j": result.total_energy_j,
        "avg_power_w": ext.avg_power_w if ext else None,
        "ttft_p50_ms": lat.ttft.p50_ms if lat and lat.ttft else None,
        "ttft_p99_ms": lat.ttft.p99_ms if lat and lat.ttft else None,
        "window_s": result.total_inference_time_sec,
        "device_kind": result.device_kind,
        "energy_method": result.energy_method,
        "warnings": len(result.measurement_warnings),
    }
