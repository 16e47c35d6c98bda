"""RunRecord: everything one measurement run stores, validated before anything is written.

A measurement is identified by (config_hash, hardware_id, run_id), with run_date beside it:
``config_hash`` says what was measured (``compute_measurement_config_hash``), ``hardware_id`` where
(``llem_pipeline.domain.identity.hardware_id``: device kind + GPU model + GPU count) and ``run_id``
which run. ``ResultStore.write_runs`` writes a batch of records in one transaction; writing a record
again (same key) replaces that run's rows and nothing else.

The store never reads run folders: the measurement layer reads a worker's folder and hands its
contents over as a RunRecord (``RunRecord.build`` fills what can be derived from the result).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from llem_pipeline.domain import EnvironmentSnapshot, ExperimentConfig, ExperimentResult, RawProcessResult
from llem_pipeline.domain.identity import HARDWARE_ID_PATTERN, compute_workload_hash, hardware_id
from llem_pipeline.storage import rows as R
from llem_pipeline.storage.errors import StorageError

# Columns a record's power_samples table may carry (the worker's timeseries.parquet columns); the store
# adds the key columns (run_date, config_hash, hardware_id, run_id) itself.
POWER_SAMPLE_COLUMNS: tuple[str, ...] = (
    "process_index", "device_index", "device_uuid", "t_mono_s", "t_rel_s", "utc", "power_w", "energy_mj",
    "temperature_c", "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct", "mem_used_mb", "clock_event_reasons", "phase",
)
# Columns a record's requests table may carry (the worker's requests.parquet columns; the energy columns
# from migration 7 are absent in run folders written before it).
REQUEST_COLUMNS: tuple[str, ...] = (
    "process_index", "request_index", "input_tokens", "output_tokens", "submit_s", "first_token_s", "done_s",
    "ttft_ms", "e2e_ms", "tpot_ms", "finish_reason", "token_times_s",
    "energy_j", "prefill_energy_j", "decode_energy_j", "baseline_energy_j", "energy_uncertainty_j",
)
# The keys of an attribution summary (attribution.json, llem_pipeline.measure.attribution.Attribution.summary).
ATTRIBUTION_KEYS: tuple[str, ...] = ("method", "prefill_energy_j", "decode_energy_j", "prefill_share", "idle_energy_j",
                                     "prefill_uncertainty_j", "request_energy", "weights")
WORKLOAD_HASH_PATTERN = re.compile(r"[0-9a-f]{16}")
# Free-text fields (measurement_key, label, study): printable, no control characters.
_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
_EMPTY = pa.table({})
_WORKLOAD_CACHE: dict[tuple[str | None, str], str | None] = {}


def workload_hash_of(effective_config: Mapping[str, Any], config_hash: str | None = None) -> str | None:
    """Return ``compute_workload_hash`` of a result's effective_config (16 hex), or None when it is not a
    valid ExperimentConfig. Answers are memoised per (config_hash, effective_config): validating a config
    costs more than building the rows of a run."""
    ec = dict(effective_config or {})
    try:
        key: tuple[str | None, str] | None = (config_hash, json.dumps(ec, sort_keys=True, default=str))
    except (TypeError, ValueError):
        key = None
    if key is not None and key in _WORKLOAD_CACHE:
        return _WORKLOAD_CACHE[key]
    try:
        value: str | None = compute_workload_hash(ExperimentConfig.model_validate(ec))
    except (ValidationError, TypeError, ValueError):
        value = None
    if key is not None:
        if len(_WORKLOAD_CACHE) > 4096:
            _WORKLOAD_CACHE.clear()
        _WORKLOAD_CACHE[key] = value
    return value


def device_kinds(result: ExperimentResult, processes: Sequence[RawProcessResult]) -> set[str]:
    """Return the device kinds ('nvml', 'simulated', 'replay') a result and its processes name."""
    kinds = {result.device_kind, *(p.device_kind for p in processes), *(p.device_kind for p in result.process_results)}
    kinds.discard(None)
    return {str(k) for k in kinds}


def hardware_id_of(
    result: ExperimentResult, processes: Sequence[RawProcessResult], environment: EnvironmentSnapshot | None
) -> str:
    """Return the hardware_id of a run: its device kind and the GPU names of its processes (else of its
    environment snapshot), as ``llem_pipeline.domain.identity.hardware_id`` spells them."""
    kind = result.device_kind or next((p.device_kind for p in processes), None)
    names = [n for p in (processes or result.process_results) for n in p.gpu_names]
    if not names and environment is not None:
        names = list(environment.gpu_names)
    if not names and result.environment_snapshot is not None:
        names = list(result.environment_snapshot.gpu_names)
    return hardware_id(kind, names)


def _fail(field_name: str, value: Any, fix: str) -> StorageError:
    shown = repr(value)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    return StorageError(f"RunRecord.{field_name}={shown}: {fix}")


def _check_table(field_name: str, table: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(table, pa.Table):
        raise _fail(field_name, type(table).__name__, "must be a pyarrow.Table (use pyarrow.table({}) for none)")
    names = table.column_names
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise _fail(field_name, dupes, "duplicate column(s): each column once")
    unknown = [c for c in names if c not in allowed]
    if unknown:
        raise _fail(field_name, unknown, f"unknown column(s); allowed: {', '.join(allowed)} (the store adds the keys)")


@dataclass(frozen=True)
class RunRecord:
    """Everything one measurement run stores (one row of experiment_results plus its rows elsewhere).

    Key: (config_hash, hardware_id, run_id); ``run_date`` (the partition date) beside it.
    ``workload_hash``: ``compute_workload_hash`` of the config (prompts, n, lengths, sampling).
    ``study``: the study that ran it (None: filled from experiment_configs when exactly one study
    registered the config). ``cycle``: 0-based repeat of the study's schedule. ``measurement_key``: the
    Dagster partition key of the measurement; ``label``: its human label. ``result``: the aggregated
    ExperimentResult v2.0 (its measurement_config_hash must equal config_hash); ``processes``: one
    RawProcessResult per engine process; ``environment``: the EnvironmentSnapshot; ``baseline``: the
    baseline.json object (devices [{uuid, power_w (W)}], total_power_w (W), duration_s (s),
    sample_count, measured_at (ISO-8601 UTC), provenance, cache_age_s (s), device_kind) or None;
    ``power_samples``: the timeseries.parquet columns (POWER_SAMPLE_COLUMNS); ``requests``: the
    requests.parquet columns (REQUEST_COLUMNS); ``attribution``: the run's energy attribution summary
    (attribution.json: ``Attribution.summary()``, energies J) or None.

    Raises StorageError naming the field, the value and the fix when anything is malformed.
    """

    run_date: date
    config_hash: str
    run_id: str
    hardware_id: str
    workload_hash: str
    study: str | None
    cycle: int | None
    measurement_key: str | None
    label: str | None
    result: ExperimentResult
    processes: list[RawProcessResult] = field(default_factory=list)
    environment: EnvironmentSnapshot | None = None
    baseline: dict[str, Any] | None = None
    power_samples: pa.Table = field(default_factory=lambda: _EMPTY)
    requests: pa.Table = field(default_factory=lambda: _EMPTY)
    attribution: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "run_date", R.as_run_date(self.run_date))
        except StorageError as exc:
            raise _fail("run_date", self.run_date, "use a date or 'YYYY-MM-DD', e.g. '2026-11-29'") from exc
        if not isinstance(self.config_hash, str) or not R.CONFIG_HASH_PATTERN.fullmatch(self.config_hash):
            raise _fail("config_hash", self.config_hash, "16 lowercase hex characters (compute_measurement_config_hash)")
        if not isinstance(self.run_id, str) or not R.RUN_ID_PATTERN.fullmatch(self.run_id):
            raise _fail("run_id", self.run_id, "must match [A-Za-z0-9_-]{1,64} (a Dagster run id or a worker run id)")
        if not isinstance(self.hardware_id, str) or not HARDWARE_ID_PATTERN.fullmatch(self.hardware_id):
            raise _fail("hardware_id", self.hardware_id,
                        "use llem_pipeline.domain.identity.hardware_id(device_kind, gpu_names), e.g. 'nvml:H100-80GB-HBM3:x1'")
        if not isinstance(self.workload_hash, str) or not WORKLOAD_HASH_PATTERN.fullmatch(self.workload_hash):
            raise _fail("workload_hash", self.workload_hash,
                        "16 lowercase hex characters: llem_pipeline.domain.identity.compute_workload_hash(config)")
        for name in ("study", "measurement_key", "label"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _TEXT.fullmatch(value) or not value.strip()):
                raise _fail(name, value, "None or 1-256 printable characters (no control characters)")
        if self.cycle is not None and (isinstance(self.cycle, bool) or not isinstance(self.cycle, int) or self.cycle < 0):
            raise _fail("cycle", self.cycle, "None or the 0-based repeat of the study schedule (an int >= 0)")
        self._check_models()
        _check_table("power_samples", self.power_samples, POWER_SAMPLE_COLUMNS)
        _check_table("requests", self.requests, REQUEST_COLUMNS)
        if self.attribution is not None:
            if not isinstance(self.attribution, Mapping):
                raise _fail("attribution", type(self.attribution).__name__, "the attribution.json object (a dict) or None")
            missing = [k for k in ATTRIBUTION_KEYS if k not in self.attribution]
            if missing:
                raise _fail("attribution", sorted(self.attribution), f"missing {missing}: pass Attribution.summary()")
        if self.baseline is not None:
            if not isinstance(self.baseline, Mapping):
                raise _fail("baseline", type(self.baseline).__name__, "the baseline.json object (a dict) or None")
            try:
                R.baseline_rows(self.baseline, self.key_columns())
            except StorageError as exc:
                raise StorageError(f"RunRecord.baseline: {exc}") from exc

    def _check_models(self) -> None:
        result = self.result
        if not isinstance(result, ExperimentResult):
            raise _fail("result", type(result).__name__, "an ExperimentResult v2.0")
        if result.schema_version != "2.0":
            raise _fail("result.schema_version", result.schema_version, "the store takes ExperimentResult v2.0 ('2.0')")
        if result.measurement_config_hash != self.config_hash:
            raise _fail("result.measurement_config_hash", result.measurement_config_hash,
                        f"must equal config_hash={self.config_hash!r} (the result of another config?)")
        if not isinstance(self.processes, list) or not all(isinstance(p, RawProcessResult) for p in self.processes):
            raise _fail("processes", type(self.processes).__name__, "a list of RawProcessResult (one per engine process)")
        indexes = [p.process_index for p in self.processes]
        if len(set(indexes)) != len(indexes):
            raise _fail("processes", indexes, "process_index must be unique within a run")
        if self.environment is not None and not isinstance(self.environment, EnvironmentSnapshot):
            raise _fail("environment", type(self.environment).__name__, "an EnvironmentSnapshot or None")
        kinds = device_kinds(result, self.processes)
        kind = self.hardware_id.split(":", 1)[0]
        if kinds and kinds != {kind}:
            raise _fail("hardware_id", self.hardware_id,
                        f"its device kind {kind!r} contradicts the result's device kind(s) {sorted(kinds)}: a simulated "
                        "run must never be stored as a real one (or the reverse)")
        expected = workload_hash_of(result.effective_config, self.config_hash)
        if expected is not None and expected != self.workload_hash:
            raise _fail("workload_hash", self.workload_hash,
                        f"result.effective_config has workload hash {expected!r}: pass that one")

    # ------------------------------------------------------------------ helpers
    @property
    def key(self) -> tuple[str, str, str]:
        """The measurement's identity: (config_hash, hardware_id, run_id)."""
        return (self.config_hash, self.hardware_id, self.run_id)

    @property
    def is_simulated(self) -> bool:
        """True unless the energy came from a live NVIDIA GPU (hardware kind nvml and a real result)."""
        return not self.hardware_id.startswith("nvml:") or R.result_is_simulated(self.result)

    def key_columns(self) -> dict[str, Any]:
        """Return the key columns every row of this run carries: run_date, config_hash, hardware_id, run_id."""
        return {"run_date": self.run_date, "config_hash": self.config_hash, "hardware_id": self.hardware_id,
                "run_id": self.run_id}

    @classmethod
    def build(
        cls,
        result: ExperimentResult,
        *,
        run_date: date | str,
        run_id: str,
        processes: Sequence[RawProcessResult] | None = None,
        environment: EnvironmentSnapshot | None = None,
        baseline: Mapping[str, Any] | None = None,
        power_samples: pa.Table | None = None,
        requests: pa.Table | None = None,
        study: str | None = None,
        cycle: int | None = None,
        measurement_key: str | None = None,
        label: str | None = None,
        hardware: str | None = None,
        workload_hash: str | None = None,
        attribution: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """Return the RunRecord of ``result``, deriving what the result says.

        Defaults: config_hash = result.measurement_config_hash; processes = result.process_results;
        environment = result.environment_snapshot; ``hardware`` = ``hardware_id_of`` the result
        (device kind + GPU names); ``workload_hash`` = the workload hash of result.effective_config;
        no baseline, samples or requests. Raises StorageError as the constructor does, or when the
        workload hash cannot be derived (pass it).
        """
        procs = list(processes) if processes is not None else list(result.process_results)
        env = environment if environment is not None else result.environment_snapshot
        if workload_hash is None:
            workload_hash = workload_hash_of(result.effective_config, result.measurement_config_hash)
            if workload_hash is None:
                raise _fail("workload_hash", None, "result.effective_config is not a valid ExperimentConfig: pass "
                            "workload_hash=compute_workload_hash(config)")
        return cls(
            run_date=R.as_run_date(run_date),
            config_hash=result.measurement_config_hash,
            run_id=run_id,
            hardware_id=hardware if hardware is not None else hardware_id_of(result, procs, env),
            workload_hash=workload_hash,
            study=study,
            cycle=cycle,
            measurement_key=measurement_key,
            label=label,
            result=result,
            processes=procs,
            environment=env,
            baseline=dict(baseline) if baseline is not None else None,
            power_samples=power_samples if power_samples is not None else _EMPTY,
            requests=requests if requests is not None else _EMPTY,
            attribution=dict(attribution) if attribution is not None else None,
        )
