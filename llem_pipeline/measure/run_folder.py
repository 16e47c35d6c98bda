"""The run folder: what one measurement leaves on disk (contract: docs/run-folder.md).

The worker writes it, the pipeline reads it; this module is both sides::

    <runs root>/<run_date>/<config_hash>/<run_id>/
        config.json         the ExperimentConfig (hashes to <config_hash>)
        environment.json    EnvironmentSnapshot
        baseline.json       idle power of the measured devices (absent when the baseline is disabled)
        process_<k>.json    RawProcessResult of engine process k = 0, 1, ...
        result.json         ExperimentResult v2.0, aggregated once, by the worker
        attribution.json    energy per request and per phase, the run's summary (absent in older folders)
        timeseries.parquet  every power sample (TIMESERIES_COLUMNS)
        requests.parquet    one row per measured request (REQUESTS_COLUMNS)
        manifest.json       every other file's size (bytes) and SHA-256, written last

Writing is atomic: everything goes into a hidden staging folder ``.<run_id>.tmp-<pid>`` beside the
final one and is renamed into place when complete, so a folder that exists is complete. Staging folders
of workers that died (SIGKILL, OOM) are removed by ``remove_dead_staging`` when the next worker starts.
Where a rename is not atomic (a copy to shared or object storage), the manifest is what marks the folder
complete: a reader verifies every file against it.

Reading goes through ``RunFolder.open``, which validates the whole folder (the manifest's sizes and hashes,
names, models, hashes, Parquet columns, and that nothing resolves outside the runs root) and raises
``RunFolderError`` naming the file, the problem and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.environment import EnvironmentSnapshot
from llem_pipeline.domain.errors import describe_validation_error
from llem_pipeline.domain.experiment import (
    ExperimentResult,
    RawProcessResult,
    compute_measurement_config_hash,
)
from llem_pipeline.domain.requests import RequestRecord

CONFIG, ENVIRONMENT, BASELINE, RESULT = "config.json", "environment.json", "baseline.json", "result.json"
ATTRIBUTION = "attribution.json"
TIMESERIES, REQUESTS, MANIFEST = "timeseries.parquet", "requests.parquet", "manifest.json"
REQUIRED_FILES = (CONFIG, ENVIRONMENT, RESULT, TIMESERIES, REQUESTS, MANIFEST)
TIMESERIES_COLUMNS: tuple[str, ...] = (
    "process_index", "device_index", "device_uuid", "t_mono_s", "t_rel_s", "utc", "power_w", "energy_mj",
    "temperature_c", "sm_clock_mhz", "mem_clock_mhz", "gpu_util_pct", "mem_used_mb", "clock_event_reasons", "phase",
)
REQUESTS_COLUMNS: tuple[str, ...] = (
    "process_index", "request_index", "input_tokens", "output_tokens", "submit_s", "first_token_s", "done_s",
    "ttft_ms", "e2e_ms", "tpot_ms", "finish_reason", "token_times_s",
    "energy_j", "prefill_energy_j", "decode_energy_j", "baseline_energy_j", "energy_uncertainty_j",
)
_PROCESS_FILE = re.compile(r"process_(\d{1,4})\.json")
_RUN_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CONFIG_HASH = re.compile(r"[0-9a-f]{16}")
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_STAGING = re.compile(r"\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)")


class RunFolderError(RuntimeError):
    """A run folder is missing, incomplete or breaks the contract; the message names the path and the fix."""


def run_folder_path(runs_root: Path, run_date: str, config_hash: str, run_id: str) -> Path:
    """Return ``<runs_root>/<run_date>/<config_hash>/<run_id>``; raises RunFolderError when a part could escape
    the root (wrong format, '..', separators)."""
    for name, value, pattern, form in (
        ("run_date", run_date, _RUN_DATE, "YYYY-MM-DD"),
        ("config_hash", config_hash, _CONFIG_HASH, "16 lowercase hex characters"),
        ("run_id", run_id, _RUN_ID, "[A-Za-z0-9_-]{1,64}"),
    ):
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise RunFolderError(f"{name}={value!r} must be {form}")
    return Path(runs_root) / run_date / config_hash / run_id


# -- writing --------------------------------------------------------------------------------------------
def write_json(path: Path, obj: BaseModel | dict[str, Any] | list[Any]) -> Path:
    """Write ``obj`` (a pydantic model or JSON-able data) to ``path`` atomically (tmp + os.replace); returns path."""
    text = obj.model_dump_json(indent=2) if isinstance(obj, BaseModel) else json.dumps(obj, indent=2, default=str)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def file_digest(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> Path:
    """Write ``manifest.json`` into ``folder``: {file name: {bytes, sha256}} of every other plain file; returns it."""
    files = {p.name: {"bytes": p.stat().st_size, "sha256": file_digest(p)}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    return write_json(folder / MANIFEST, {"files": files})


def verify_manifest(folder: Path) -> None:
    """Check every file listed in ``folder``'s manifest.json (present, size, SHA-256) and that no other plain
    file is there; raises RunFolderError naming the first file that differs."""
    path = folder / MANIFEST
    try:
        listed = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunFolderError(f"{path}: unreadable manifest ({exc}): the folder is incomplete; measure it again") from None
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")}
    extra = sorted(present - set(listed))
    if extra:
        raise RunFolderError(f"{folder}: {', '.join(extra)} not in the manifest (added after the worker finished)")
    for name, expected in listed.items():
        target = folder / name
        if not target.is_file():
            raise RunFolderError(f"{target} is listed in the manifest but missing: an incomplete copy")
        size = target.stat().st_size
        if size != expected.get("bytes"):
            raise RunFolderError(f"{target}: {size} bytes, the manifest says {expected.get('bytes')}: an incomplete "
                                 "or altered copy")
        if file_digest(target) != expected.get("sha256"):
            raise RunFolderError(f"{target}: SHA-256 differs from the manifest's: the file was altered after writing")


@contextmanager
def staged_run_folder(final: Path) -> Iterator[Path]:
    """Yield a staging folder beside ``final``; on normal exit write its manifest and rename it to ``final``
    (replacing an older folder of the same name), on error remove it. Raises OSError naming the parent when it
    is not writable.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".{final.name}.tmp-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
    except OSError as err:
        raise OSError(err.errno, f"cannot create the run folder under {final.parent}: {err.strerror}") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_manifest(staging)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """Return True unless no process ``pid`` exists (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def runs_root_of(run_folder: Path) -> Path | None:
    """Return the runs root of ``run_folder`` when it follows ``<root>/<run_date>/<config_hash>/<run_id>``, else None."""
    folder = Path(run_folder).expanduser().resolve()
    if len(folder.parents) >= 3 and _CONFIG_HASH.fullmatch(folder.parent.name) and _RUN_DATE.fullmatch(
            folder.parent.parent.name):
        return folder.parents[2]
    return None


def remove_dead_staging(runs_root: Path) -> list[Path]:
    """Remove the staging folders (``.<run_id>.tmp-<pid>``, ``.<run_id>.old-<pid>``) under ``runs_root`` whose
    writer process is gone; return the paths removed. A live writer's folder is kept."""
    removed: list[Path] = []
    root = Path(runs_root)
    if not root.is_dir():
        return removed
    for day in root.iterdir():
        if not (day.is_dir() and _RUN_DATE.fullmatch(day.name)):
            continue
        for config in day.iterdir():
            if not config.is_dir():
                continue
            for entry in config.iterdir():
                m = _STAGING.fullmatch(entry.name)
                if m and entry.is_dir() and int(m["pid"]) != os.getpid() and not _pid_alive(int(m["pid"])):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
    return removed


# -- reading --------------------------------------------------------------------------------------------
def _model(cls: type[BaseModel], path: Path) -> Any:
    try:
        return cls.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise RunFolderError(f"{path}: not a valid {cls.__name__}:\n{describe_validation_error(exc)}") from None
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _optional_json_object(path: Path) -> dict[str, Any] | None:
    """Return the JSON object in ``path``, or None when the file is absent; RunFolderError when it is unreadable,
    not JSON, or not an object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunFolderError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: must be a JSON object")
    return data


def _parquet(path: Path, allowed: tuple[str, ...]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise RunFolderError(f"{path}: not a readable Parquet file ({exc})") from None
    unknown = [c for c in table.column_names if c not in allowed]
    if unknown:
        raise RunFolderError(f"{path}: unknown column(s) {unknown}; the run-folder contract allows {list(allowed)}")
    return table


@dataclass(frozen=True)
class RunFolder:
    """A validated run folder (use ``RunFolder.open``); each file is parsed once, on first use."""

    path: Path
    run_date: str
    config_hash: str
    run_id: str

    @classmethod
    def open(cls, runs_root: Path, run_date: str, config_hash: str, run_id: str) -> RunFolder:
        """Return the run folder of (run_date, config_hash, run_id) under ``runs_root`` after validating it.

        Checks: the folder and every file in it resolve inside ``runs_root``; every required file is there;
        result.json is an ExperimentResult v2.0 of ``config_hash``; config.json hashes to ``config_hash``;
        process_<k>.json are numbered 0..n-1 and name their index; the Parquet files have the contract's
        columns. Raises RunFolderError otherwise.
        """
        root = Path(runs_root).expanduser().resolve()
        path = run_folder_path(root, run_date, config_hash, run_id)
        if not path.is_dir():
            raise RunFolderError(
                f"run folder {path} does not exist: the measurement of {config_hash} on {run_date} (run {run_id}) "
                "did not complete, or its folder was removed; measure the partition again"
            )
        return cls._validated(cls(path=path, run_date=run_date, config_hash=config_hash, run_id=run_id), root)

    @classmethod
    def at(cls, path: Path, run_date: str) -> RunFolder:
        """Return the run folder at ``path`` (any location; its name is the run id, its config.json gives the
        config hash) measured on ``run_date``, validated as ``open`` does with its parent as the root."""
        path = Path(path).expanduser().resolve()
        if not (path / CONFIG).is_file():
            raise RunFolderError(f"{path} is not a run folder: it has no {CONFIG}")
        config_hash = compute_measurement_config_hash(_model(ExperimentConfig, path / CONFIG))
        run_folder_path(path.parent, run_date, config_hash, path.name)  # the parts are well formed
        return cls._validated(cls(path=path, run_date=run_date, config_hash=config_hash, run_id=path.name), path.parent)

    @classmethod
    def _validated(cls, folder: RunFolder, root: Path) -> RunFolder:
        """Return ``folder`` after the checks ``open`` describes (files inside ``root``); raises RunFolderError."""
        path, config_hash = folder.path, folder.config_hash
        for entry in path.iterdir():
            resolved = entry.resolve()
            if not resolved.is_relative_to(root):
                raise RunFolderError(
                    f"{entry} resolves to {resolved}, outside the runs folder {root}: run folders hold plain files only"
                )
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if missing:
            raise RunFolderError(f"{path}: missing {', '.join(missing)} (an incomplete or foreign folder)")
        verify_manifest(path)
        result = folder.result
        if result.measurement_config_hash != config_hash:
            raise RunFolderError(
                f"{path / RESULT}: measurement_config_hash={result.measurement_config_hash!r} differs from the "
                f"folder's config hash {config_hash!r} (a folder moved by hand?)"
            )
        actual = compute_measurement_config_hash(folder.config)
        if actual != config_hash:
            raise RunFolderError(f"{path / CONFIG}: hashes to {actual!r}, not the folder's {config_hash!r}")
        _ = folder.processes, folder.environment, folder.baseline, folder.power_samples, folder.requests
        _ = folder.attribution
        return folder

    def file(self, name: str) -> Path:
        """Return the path of ``name`` inside the folder (it may not exist for optional files)."""
        return self.path / name

    @cached_property
    def config(self) -> ExperimentConfig:
        """The measured ExperimentConfig (config.json)."""
        return _model(ExperimentConfig, self.file(CONFIG))

    @cached_property
    def environment(self) -> EnvironmentSnapshot:
        """The EnvironmentSnapshot (environment.json)."""
        return _model(EnvironmentSnapshot, self.file(ENVIRONMENT))

    @cached_property
    def baseline(self) -> dict[str, Any] | None:
        """baseline.json (idle power per device in W, duration in s, provenance), or None when disabled."""
        data = _optional_json_object(self.file(BASELINE))
        if data is not None and not isinstance(data.get("devices"), list):
            raise RunFolderError(f"{self.file(BASELINE)}: must be a JSON object with a 'devices' list")
        return data

    @cached_property
    def processes(self) -> list[RawProcessResult]:
        """Every process_<k>.json in process order (RawProcessResult)."""
        numbered = sorted(
            (int(m.group(1)), p) for p in self.path.iterdir() if (m := _PROCESS_FILE.fullmatch(p.name))
        )
        if not numbered:
            raise RunFolderError(f"{self.path} has no process_<k>.json: the worker wrote no process result")
        if [k for k, _ in numbered] != list(range(len(numbered))):
            raise RunFolderError(f"{self.path}: process files {[p.name for _, p in numbered]} are not numbered 0..n-1")
        out = []
        for k, path in numbered:
            raw = _model(RawProcessResult, path)
            if raw.process_index != k:
                raise RunFolderError(f"{path}: process_index={raw.process_index} but the file is process_{k}.json")
            out.append(raw)
        return out

    @cached_property
    def attribution(self) -> dict[str, Any] | None:
        """attribution.json (the run's energy attribution summary, J; measure/attribution.py), or None when absent."""
        return _optional_json_object(self.file(ATTRIBUTION))

    @cached_property
    def result(self) -> ExperimentResult:
        """The worker's aggregated ExperimentResult v2.0 (result.json)."""
        return _model(ExperimentResult, self.file(RESULT))

    @cached_property
    def power_samples(self):
        """timeseries.parquet as a pyarrow Table (TIMESERIES_COLUMNS; W, mJ, °C, MHz, %, s)."""
        return _parquet(self.file(TIMESERIES), TIMESERIES_COLUMNS)

    @cached_property
    def requests(self):
        """requests.parquet as a pyarrow Table (REQUESTS_COLUMNS; *_s in s from inference start, *_ms in ms)."""
        return _parquet(self.file(REQUESTS), REQUESTS_COLUMNS)

    def request_records(self) -> list[RequestRecord]:
        """Return the rows of requests.parquet as RequestRecords (times in s from each process's inference start)."""
        return read_request_records(self.file(REQUESTS))


def read_request_records(path: Path) -> list[RequestRecord]:
    """Return the rows of a ``requests.parquet`` as RequestRecords (times in s from each process's
    inference start, so differences — TTFT, ITL, E2E — are exact)."""
    import pyarrow.parquet as pq

    return [
        RequestRecord(
            request_index=r["request_index"], input_tokens=r["input_tokens"], output_tokens=r["output_tokens"],
            submit_time_s=r["submit_s"], first_token_time_s=r["first_token_s"],
            token_times_s=list(r.get("token_times_s") or []), done_time_s=r["done_s"],
            finish_reason=r.get("finish_reason"), process_index=r["process_index"],
        )
        for r in pq.read_table(path).to_pylist()
    ]
