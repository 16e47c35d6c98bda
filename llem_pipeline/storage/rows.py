"""Row builders: domain models -> rows of the llem tables (plain dicts), and rows -> pyarrow tables.

Each builder returns dicts whose keys are column names of the table it names (schema.sql and the
migrations), including the key columns of the run (``key``: run_date as a datetime.date, config_hash,
hardware_id, run_id; ``RunRecord.key_columns()`` gives them).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from llem_pipeline.domain import EnvironmentSnapshot, ExperimentConfig, ExperimentResult, RawProcessResult
from llem_pipeline.domain.warnings import warning_code
from llem_pipeline.storage.errors import StorageError

if TYPE_CHECKING:
    from llem_pipeline.storage.records import RunRecord

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
CONFIG_HASH_PATTERN = re.compile(r"[0-9a-f]{16}")


def as_run_date(value: date | str) -> date:
    """Return ``value`` as a date; accepts a date or an ISO 'YYYY-MM-DD' string (else StorageError)."""
    if isinstance(value, datetime):
        raise StorageError(f"run_date={value!r} must be a date (YYYY-MM-DD), not a datetime")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise StorageError(f"run_date={value!r} is not a date: use YYYY-MM-DD, e.g. '2026-11-29'")


def check_config_hash(value: str) -> str:
    """Return ``value`` when it is 16 lowercase hex characters (else StorageError)."""
    if not isinstance(value, str) or not CONFIG_HASH_PATTERN.fullmatch(value):
        raise StorageError(f"config_hash={value!r} must be 16 lowercase hex characters (measurement_config_hash)")
    return value


def check_run_id(value: str) -> str:
    """Return ``value`` when it matches [A-Za-z0-9_-]{1,64} (else StorageError)."""
    if not isinstance(value, str) or not RUN_ID_PATTERN.fullmatch(value):
        raise StorageError(f"run_id={value!r} must match [A-Za-z0-9_-]{{1,64}} (a Dagster run id or a worker run id)")
    return value


def _utc(value: datetime | None, field: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise StorageError(f"{field}={value.isoformat()} is a naive datetime: results must carry UTC-aware times")
    return value.astimezone(UTC)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def swept_settings(effective_config: Mapping[str, Any], backend: str) -> dict[str, Any]:
    """Return the engine settings a study usually sweeps, read from a result's effective_config.

    Keys: batch_size, max_num_seqs, tensor_parallel_size, pipeline_parallel_size, num_processes,
    n_prompts, max_input_tokens, max_output_tokens, fixed_output_length, model, precision, and
    ``setting`` (a short label such as 'batch_size=8' or 'max_num_seqs=64,tp=1'). Missing values are None.
    """
    ec = effective_config or {}
    section = ec.get(backend) if isinstance(ec.get(backend), Mapping) else {}
    out: dict[str, Any] = {
        "model": ec.get("model"),
        "precision": ec.get("precision"),
        "batch_size": None,
        "max_num_seqs": None,
        "tensor_parallel_size": None,
        "pipeline_parallel_size": None,
        "num_processes": None,
        "n_prompts": _int_or_none(ec.get("n")),
        "max_input_tokens": _int_or_none(ec.get("max_input_tokens")),
        "max_output_tokens": _int_or_none(ec.get("max_output_tokens")),
        "fixed_output_length": ec.get("fixed_output_length") if isinstance(ec.get("fixed_output_length"), bool) else None,
        "setting": None,
    }
    if backend == "pytorch":
        out["batch_size"] = _int_or_none(section.get("batch_size"))
        out["num_processes"] = _int_or_none(section.get("num_processes"))
        label = f"batch_size={out['batch_size']}"
        if (out["num_processes"] or 1) > 1:
            label += f",processes={out['num_processes']}"
        out["setting"] = label
    elif backend == "vllm":
        out["max_num_seqs"] = _int_or_none(section.get("max_num_seqs"))
        out["tensor_parallel_size"] = _int_or_none(section.get("tensor_parallel_size"))
        out["pipeline_parallel_size"] = _int_or_none(section.get("pipeline_parallel_size"))
        out["num_processes"] = 1
        seqs = out["max_num_seqs"] if out["max_num_seqs"] is not None else "default"
        label = f"max_num_seqs={seqs},tp={out['tensor_parallel_size']}"
        if (out["pipeline_parallel_size"] or 1) > 1:
            label += f",pp={out['pipeline_parallel_size']}"
        out["setting"] = label
    elif backend == "tensorrt":
        out["batch_size"] = _int_or_none(section.get("max_batch_size"))
        out["tensor_parallel_size"] = _int_or_none(section.get("tp_size"))
        out["setting"] = f"max_batch_size={out['batch_size']},tp={out['tensor_parallel_size']}"
    return out


def result_is_simulated(result: ExperimentResult) -> bool:
    """Return True unless the result's energy came from a live NVIDIA GPU (device kind nvml, method not simulated)."""
    kinds = {result.device_kind} | {p.device_kind for p in result.process_results}
    kinds.discard(None)
    if kinds:
        return any(k != "nvml" for k in kinds)
    if result.energy_method is not None:
        return result.energy_method == "simulated"
    return any(warning_code(w) in {"simulated_device", "replay_device"} for w in result.measurement_warnings)


def experiment_result_row(record: RunRecord) -> dict[str, Any]:
    """Return the ``experiment_results`` row (dict) of a run: identity, headline columns and result_json.

    Energies in J, power in W, times in s, latencies in ms. ``j_per_token`` is the result's
    avg_energy_per_token_j and ``tokens_per_s`` its avg_tokens_per_second (schema.sql names them).
    """
    result = record.result
    row = record.key_columns()
    settings = swept_settings(result.effective_config, result.backend)
    procs = result.process_results
    gpu_names = [n for p in procs for n in p.gpu_names]
    if not gpu_names and result.environment_snapshot is not None:
        gpu_names = list(result.environment_snapshot.gpu_names)
    uuids = {u for p in procs for u in p.device_uuids}
    num_devices = len(uuids) or (len(result.energy_per_device_j) if result.energy_per_device_j else None)
    if settings["num_processes"] is None:
        settings["num_processes"] = len(procs) or 1
    input_tokens = result.input_tokens
    if input_tokens is None and procs:
        input_tokens = sum(p.input_tokens for p in procs)
    uncertainty = result.energy_breakdown.uncertainty_j if result.energy_breakdown else None
    if uncertainty is None and procs and all(p.energy_uncertainty_j is not None for p in procs):
        uncertainty = sum(p.energy_uncertainty_j for p in procs)  # type: ignore[misc]
    avg_power = result.extended_metrics.avg_power_w if result.extended_metrics else None
    if avg_power is None and result.total_inference_time_sec > 0:
        avg_power = result.total_energy_j / result.total_inference_time_sec
    throttle = result.thermal_throttle
    throttled: bool | None = throttle.detected if throttle is not None else None
    if throttled is None and any(p.thermal_throttle is not None for p in procs):
        throttled = any(p.thermal_throttle.detected for p in procs if p.thermal_throttle is not None)
    lat = result.latency_stats
    energy_method = result.energy_method
    if energy_method is None and result.energy_breakdown is not None:
        energy_method = result.energy_breakdown.energy_method
    device_kind = result.device_kind or next((p.device_kind for p in procs), None)
    row.update(
        workload_hash=record.workload_hash,
        cycle=record.cycle,
        measurement_key=record.measurement_key,
        label=record.label,
        experiment_id=result.experiment_id,
        study=record.study,
        model=settings["model"],
        backend=result.backend,
        backend_version=result.backend_version,
        precision=settings["precision"],
        batch_size=settings["batch_size"],
        max_num_seqs=settings["max_num_seqs"],
        tensor_parallel_size=settings["tensor_parallel_size"],
        pipeline_parallel_size=settings["pipeline_parallel_size"],
        num_processes=settings["num_processes"],
        n_prompts=settings["n_prompts"],
        max_input_tokens=settings["max_input_tokens"],
        max_output_tokens=settings["max_output_tokens"],
        fixed_output_length=settings["fixed_output_length"],
        setting=settings["setting"],
        device_kind=device_kind,
        is_simulated=record.is_simulated,
        gpu_names=gpu_names,
        num_devices=num_devices,
        energy_method=energy_method,
        measurement_methodology=result.measurement_methodology,
        total_tokens=result.total_tokens,
        input_tokens=input_tokens,
        total_inference_time_sec=result.total_inference_time_sec,
        tokens_per_s=result.avg_tokens_per_second,
        total_energy_j=result.total_energy_j,
        j_per_token=result.avg_energy_per_token_j,
        energy_adjusted_j=result.energy_adjusted_j,
        baseline_power_w=result.baseline_power_w,
        energy_trace_agreement=result.energy_trace_agreement,
        energy_uncertainty_j=uncertainty,
        avg_power_w=avg_power,
        total_flops=result.total_flops,
        ttft_p50_ms=lat.ttft.p50_ms if lat and lat.ttft else None,
        ttft_p99_ms=lat.ttft.p99_ms if lat and lat.ttft else None,
        itl_p50_ms=lat.itl.p50_ms if lat and lat.itl else None,
        tpot_mean_ms=lat.tpot.mean_ms if lat and lat.tpot else None,
        tpot_p99_ms=lat.tpot.p99_ms if lat and lat.tpot else None,
        e2e_p50_ms=lat.e2e.p50_ms if lat and lat.e2e else None,
        throttled=throttled,
        max_temperature_c=throttle.max_temperature_c if throttle else None,
        n_warnings=len(result.measurement_warnings),
        warnings=list(result.measurement_warnings),
        start_time=_utc(result.start_time, "start_time"),
        end_time=_utc(result.end_time, "end_time"),
        schema_version=result.schema_version,
        result_json=result.model_dump_json(),
        **attribution_columns(record.attribution),
    )
    return row


def attribution_columns(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the experiment_results attribution columns of an attribution summary (J, fractions; all None
    without one)."""
    s = summary or {}
    pct = s.get("request_energy") or {}
    weights = s.get("weights") or {}
    return {
        "request_energy_p50_j": _number(pct.get("p50_j")),
        "request_energy_p90_j": _number(pct.get("p90_j")),
        "request_energy_p99_j": _number(pct.get("p99_j")),
        "prefill_energy_j": _number(s.get("prefill_energy_j")),
        "decode_energy_j": _number(s.get("decode_energy_j")),
        "prefill_share": _number(s.get("prefill_share")),
        "prefill_uncertainty_j": _number(s.get("prefill_uncertainty_j")),
        "idle_energy_j": _number(s.get("idle_energy_j")),
        "prefill_direct_energy_j": _number(s.get("prefill_direct_energy_j")),
        "prefill_direct_coverage": _number(s.get("prefill_direct_coverage")),
        "attribution_method": s.get("method") if isinstance(s.get("method"), str) else None,
        "prefill_decode_ratio": _number(weights.get("ratio")),
    }


def _number(value: Any) -> float | None:
    """Return ``value`` as a finite float, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def process_result_rows(results: Sequence[RawProcessResult], key: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return one ``process_results`` row per RawProcessResult of the run ``key`` (energies J, power W, times s)."""
    base = dict(key)
    rows = []
    for p in results:
        rows.append(
            {
                **base,
                "process_index": p.process_index,
                "experiment_id": p.experiment_id,
                "backend": p.backend,
                "backend_version": p.backend_version,
                "device_kind": p.device_kind,
                "device_uuids": list(p.device_uuids),
                "gpu_names": list(p.gpu_names),
                "start_time": _utc(p.timestamps.start, f"process {p.process_index} timestamps.start"),
                "end_time": _utc(p.timestamps.end, f"process {p.process_index} timestamps.end"),
                "measurement_methodology": p.measurement_methodology,
                "num_requests": p.num_requests,
                "input_tokens": p.input_tokens,
                "output_tokens": p.output_tokens,
                "inference_time_sec": p.inference_time_sec,
                "energy_j": p.energy_j,
                "energy_per_device_j": [float(x) for x in p.energy_per_device_j],
                "energy_method": p.energy_method,
                "trace_energy_j": p.trace_energy_j,
                "energy_trace_agreement": p.energy_trace_agreement,
                "energy_uncertainty_j": p.energy_uncertainty_j,
                "baseline_power_w": p.baseline_power_w,
                "energy_adjusted_j": p.energy_adjusted_j,
                "sample_count": p.sample_count,
                "throttled": p.thermal_throttle.detected if p.thermal_throttle else None,
                "n_warnings": len(p.measurement_warnings),
                "warnings": list(p.measurement_warnings),
                "process_json": p.model_dump_json(),
            }
        )
    return rows


def environment_row(snapshot: EnvironmentSnapshot, key: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``environment_snapshots`` row of the run ``key`` for ``snapshot`` (VRAM MB, power limits W)."""
    return {
        **key,
        "collected_at": _utc(snapshot.collected_at, "environment collected_at"),
        "python_version": snapshot.python_version,
        "cuda_version": snapshot.cuda_version,
        "cuda_driver_version": snapshot.cuda_driver_version,
        "gpu_names": list(snapshot.gpu_names),
        "gpu_uuids": list(snapshot.gpu_uuids),
        "gpu_vram_mb": [int(x) for x in snapshot.gpu_vram_mb],
        "gpu_power_limits_w": [None if x is None else float(x) for x in snapshot.gpu_power_limits_w],
        "gpu_persistence_mode": list(snapshot.gpu_persistence_mode),
        "nvml_version": snapshot.nvml_version,
        "torch_version": snapshot.torch_version,
        "transformers_version": snapshot.transformers_version,
        "vllm_version": snapshot.vllm_version,
        "tool_version": snapshot.tool_version,
        "platform": snapshot.platform,
        "os_version": snapshot.os_version,
        "cpu_model": snapshot.cpu_model,
        "hostname": snapshot.hostname,
        "device_kind": snapshot.device_kind,
        "snapshot_json": snapshot.model_dump_json(),
    }


def _float(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StorageError(f"baseline {field}={value!r} must be a number")
    return float(value)


def baseline_rows(baseline: Mapping[str, Any], key: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return one ``baselines`` row per device of a baseline.json mapping of the run ``key`` (power W, duration s).

    Raises StorageError naming the field and the value when the mapping is malformed.
    """
    base = dict(key)
    devices = baseline.get("devices")
    if not isinstance(devices, list):
        raise StorageError(f"baseline 'devices'={devices!r} must be a list of {{uuid, power_w}}")
    measured_at = baseline.get("measured_at")
    if isinstance(measured_at, str):
        try:
            measured_at = datetime.fromisoformat(measured_at)
        except ValueError as exc:
            raise StorageError(f"baseline measured_at={measured_at!r} is not ISO-8601") from exc
    if measured_at is not None and not isinstance(measured_at, datetime):
        raise StorageError(f"baseline measured_at={measured_at!r} must be an ISO-8601 UTC string")
    measured_at = _utc(measured_at, "baseline measured_at")
    sample_count = baseline.get("sample_count")
    if sample_count is not None and (isinstance(sample_count, bool) or not isinstance(sample_count, int)):
        raise StorageError(f"baseline sample_count={sample_count!r} must be an integer")
    rows = []
    for i, dev in enumerate(devices):
        if not isinstance(dev, Mapping) or not isinstance(dev.get("uuid"), str):
            raise StorageError(f"baseline devices[{i}]={dev!r} must be {{'uuid': str, 'power_w': float}}")
        power = _float(dev.get("power_w"), f"devices[{i}].power_w")
        if power is None:
            raise StorageError(f"baseline devices[{i}].power_w is missing")
        rows.append(
            {
                **base,
                "device_uuid": dev["uuid"],
                "power_w": power,
                "total_power_w": _float(baseline.get("total_power_w"), "total_power_w"),
                "duration_s": _float(baseline.get("duration_s"), "duration_s"),
                "sample_count": sample_count,
                "measured_at": measured_at,
                "provenance": baseline.get("provenance"),
                "cache_age_s": _float(baseline.get("cache_age_s"), "cache_age_s"),
                "device_kind": baseline.get("device_kind"),
            }
        )
    return rows


def config_row(study: str, config_hash: str, config: ExperimentConfig, registered_at: datetime) -> dict[str, Any]:
    """Return one ``experiment_configs`` row (config_json = model_dump(mode='json'))."""
    return {
        "config_hash": check_config_hash(config_hash),
        "study": study,
        "model": config.model,
        "backend": config.backend,
        "precision": config.precision,
        "config_json": json.dumps(config.model_dump(mode="json"), sort_keys=True),
        "registered_at": _utc(registered_at, "registered_at"),
    }


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Return the rows as a pyarrow Table (types inferred; DuckDB casts them to the table's columns)."""
    if not rows:
        return pa.table({})
    keys = list(rows[0])
    if any(len(r) != len(keys) for r in rows) or any(list(r) != keys for r in rows):
        return pa.Table.from_pylist(list(rows))
    # Column by column is ~3x faster than from_pylist for wide rows (no per-row schema inference).
    return pa.table({k: pa.array([r[k] for r in rows]) for k in keys})
