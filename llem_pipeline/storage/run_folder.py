"""Read and validate a worker's run folder (contract: .llem_briefs/RUN_FOLDER.md) into table rows.

Nothing here writes: ``load_run_folder`` either returns every table of the run as pyarrow tables
or raises RunFolderError naming the file, the field and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ValidationError

from llem_pipeline.domain import (
    EnvironmentSnapshot,
    ExperimentConfig,
    ExperimentResult,
    RawProcessResult,
    compute_measurement_config_hash,
)
from llem_pipeline.domain.errors import describe_validation_error
from llem_pipeline.storage import rows as R
from llem_pipeline.storage.errors import RunFolderError, StorageError

TIMESERIES_COLUMNS: tuple[str, ...] = (
    "process_index", "device_index", "device_uuid", "t_mono_s", "t_rel_s", "utc", "power_w", "energy_mj",
    "temperature_c", "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct", "mem_used_mb", "clock_event_reasons", "phase",
)
REQUESTS_COLUMNS: tuple[str, ...] = (
    "process_index", "request_index", "input_tokens", "output_tokens", "submit_s", "first_token_s", "done_s",
    "ttft_ms", "e2e_ms", "tpot_ms", "finish_reason", "token_times_s",
)
_PROCESS_FILE = re.compile(r"process_(\d{1,4})\.json")


@dataclass(frozen=True)
class RunFolder:
    """A validated run folder: the models and the row tables it yields (one entry per llem table)."""

    path: Path
    result: ExperimentResult
    tables: dict[str, pa.Table]


def _inside(path: Path, root: Path, what: str) -> Path:
    resolved = path.expanduser().resolve()
    root = root.expanduser().resolve()
    if not resolved.is_relative_to(root):
        raise RunFolderError(
            f"{what} {str(path)!r} resolves to {str(resolved)!r}, outside the data dir {str(root)!r}: "
            "run folders must live under <data_dir>/runs (set LLEM_DATA_DIR to change the data dir)"
        )
    return resolved


def _model(cls: type[BaseModel], path: Path) -> Any:
    try:
        return cls.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise RunFolderError(
            f"{path}: not a valid {cls.__name__}:\n{describe_validation_error(exc)}"
        ) from exc


def _parquet(path: Path, allowed: tuple[str, ...]) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise RunFolderError(f"{path}: not a readable Parquet file ({exc})") from exc
    unknown = [c for c in table.column_names if c not in allowed]
    if unknown:
        raise RunFolderError(
            f"{path}: unknown column(s) {unknown}; the contract allows {list(allowed)}"
        )
    return table


def load_run_folder(
    run_dir: str | Path,
    *,
    data_dir: Path,
    run_date: date | str,
    config_hash: str,
    run_id: str,
    study: str | None = None,
) -> RunFolder:
    """Validate ``run_dir`` and return its rows for every partitioned table (RunFolder).

    Checks: the folder (and every file in it) lies inside ``data_dir``; run_id / config_hash /
    run_date are well formed; the folder is named after run_id; result.json parses as
    ExperimentResult v2.0 with measurement_config_hash == config_hash; config.json (when present)
    hashes to config_hash; process_<k>.json, environment.json, baseline.json and the two Parquet
    files follow the contract. Raises RunFolderError otherwise.
    """
    try:
        day = R.as_run_date(run_date)
        R.check_config_hash(config_hash)
        R.check_run_id(run_id)
    except StorageError as exc:
        raise RunFolderError(str(exc)) from exc
    folder = _inside(Path(run_dir), data_dir, "run folder")
    if not folder.is_dir():
        raise RunFolderError(f"run folder {str(folder)!r} does not exist (or is not a directory)")
    if folder.name != run_id:
        raise RunFolderError(
            f"run folder {str(folder)!r} is named {folder.name!r} but run_id={run_id!r}: "
            "the contract path is <data_dir>/runs/<run_date>/<config_hash>/<run_id>"
        )
    files = {p.name: _inside(p, data_dir, "file") for p in folder.iterdir() if p.is_file()}

    if "result.json" not in files:
        raise RunFolderError(f"{folder}: result.json is missing (an incomplete or foreign folder)")
    result: ExperimentResult = _model(ExperimentResult, files["result.json"])
    if result.schema_version != "2.0":
        raise RunFolderError(f"{files['result.json']}: schema_version={result.schema_version!r}, expected '2.0'")
    if result.measurement_config_hash != config_hash:
        raise RunFolderError(
            f"{files['result.json']}: measurement_config_hash={result.measurement_config_hash!r} "
            f"differs from config_hash={config_hash!r} (wrong folder or wrong partition)"
        )
    if "config.json" in files:
        config: ExperimentConfig = _model(ExperimentConfig, files["config.json"])
        actual = compute_measurement_config_hash(config)
        if actual != config_hash:
            raise RunFolderError(f"{files['config.json']}: hashes to {actual!r}, not config_hash={config_hash!r}")

    process_files = sorted(
        ((int(m.group(1)), p) for name, p in files.items() if (m := _PROCESS_FILE.fullmatch(name))),
        key=lambda kp: kp[0],
    )
    processes = [_model(RawProcessResult, p) for _, p in process_files] or list(result.process_results)
    for (k, path), proc in zip(process_files, processes, strict=False):
        if proc.process_index != k:
            raise RunFolderError(f"{path}: process_index={proc.process_index} but the file is process_{k}.json")

    environment = (
        _model(EnvironmentSnapshot, files["environment.json"]) if "environment.json" in files
        else result.environment_snapshot
    )
    baseline: dict[str, Any] | None = None
    if "baseline.json" in files:
        try:
            baseline = json.loads(files["baseline.json"].read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RunFolderError(f"{files['baseline.json']}: not valid JSON ({exc})") from exc
        if not isinstance(baseline, dict):
            raise RunFolderError(f"{files['baseline.json']}: must be a JSON object, got {type(baseline).__name__}")

    try:
        tables: dict[str, pa.Table] = {
            "experiment_results": R.rows_to_table([R.experiment_result_row(result, day, run_id, study)]),
            "process_results": R.rows_to_table(R.process_result_rows(processes, day, config_hash, run_id)),
            "environment_snapshots": R.rows_to_table(
                [R.environment_row(environment, day, config_hash, run_id)] if environment else []
            ),
            "baselines": R.rows_to_table(R.baseline_rows(baseline, day, config_hash, run_id) if baseline else []),
        }
    except StorageError as exc:
        raise RunFolderError(f"{folder}: {exc}") from exc
    tables["power_samples"] = (
        _parquet(files["timeseries.parquet"], TIMESERIES_COLUMNS) if "timeseries.parquet" in files else pa.table({})
    )
    tables["requests"] = (
        _parquet(files["requests.parquet"], REQUESTS_COLUMNS) if "requests.parquet" in files else pa.table({})
    )
    return RunFolder(path=folder, result=result, tables=tables)
