"""Run a study through the Dagster instance, with or without a daemon (what ``llem run`` does).

- Registration: every study's configs go into ``experiment_configs`` (configs no study defines any more are
  retired) and their measurement keys become partitions of ``llem_measurements``, as the ``study_registry``
  sensor does.
- With a daemon (``make ui`` or a deployment): the runs are handed to the ``study_launches`` sensor as one
  launch file; the sensor returns them as RunRequests and the instance's run queue starts them under the
  ``gpu`` pool, in the study's order. ``llem run`` then follows them by their ``llem/launch`` tag.
- Without a daemon (``make demo``): the same runs execute in this process, one after another, with
  ``dg.execute_job`` of the code location's job on the same instance (pools are claimed there too).

Either way the runs are those of the nightly schedule and of a UI backfill: the same job, partitions and
tags (study_runs.py). Public Dagster API only.
"""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from llem_pipeline.defs.automation.study_runs import PlannedRun
from llem_pipeline.defs.constants import LAUNCH_TAG
from llem_pipeline.defs.experiments.partitions import MEASUREMENTS_PARTITIONS_NAME, measurement_partitions
from llem_pipeline.defs.experiments.registry import StudyScan
from llem_pipeline.defs.settings import LlemPaths, LlemStore
from llem_pipeline.paths import duckdb_path

MEASURE_JOB = "measure_experiments"
REPORT_JOB = "refresh_efficiency_report"
LAUNCHES_DIR = "launches"
# A daemon is taken to be running when its last heartbeat is this recent, s (its heartbeat interval is 30 s).
DAEMON_FRESH_S = 90.0
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@functools.cache
def _job(name: str) -> dg.JobDefinition:
    """Return job ``name`` of the code location, resolved once per process."""
    from llem_pipeline.definitions import defs

    return defs().resolve_job_def(name)


def measure_job() -> dg.JobDefinition:
    """Return the resolved ``measure_experiments`` job (a reconstructable target)."""
    return _job(MEASURE_JOB)


def report_job() -> dg.JobDefinition:
    """Return the resolved ``refresh_efficiency_report`` job (a reconstructable target)."""
    return _job(REPORT_JOB)


def register_scan(instance: dg.DagsterInstance, scan: StudyScan, target: str,
                  paths: LlemPaths | None = None, store: LlemStore | None = None) -> list[str]:
    """Register what the study files define as the study_registry sensor does (experiment_configs upserted and
    retired, config copies kept, measurement partitions on ``target`` added); return the new partition keys.

    ``paths`` and ``store`` default to the environment's configuration (LLEM_DATA_DIR, LLEM_DUCKDB)."""
    from llem_pipeline.defs.experiments.sensors import register_and_retire

    paths = paths or LlemPaths()
    store = store or LlemStore(duckdb=DuckDBResource(database=str(duckdb_path())))
    known = set(instance.get_dynamic_partitions(MEASUREMENTS_PARTITIONS_NAME))
    new, _, _ = register_and_retire(scan, store, paths, target, known)
    if new:
        instance.add_dynamic_partitions(MEASUREMENTS_PARTITIONS_NAME, new)
    return new


def daemon_running(instance: dg.DagsterInstance, now: float | None = None) -> bool:
    """Return True when the instance's sensor daemon and run queue have sent a heartbeat in the last
    DAEMON_FRESH_S seconds (then a sensor can hand runs to the queue)."""
    try:
        beats = instance.get_daemon_heartbeats()
    except Exception:  # an instance whose storage has no daemon table yet
        return False
    now = time.time() if now is None else now
    fresh = {name for name, beat in beats.items() if now - beat.timestamp <= DAEMON_FRESH_S}
    return {"SENSOR", "QUEUED_RUN_COORDINATOR"} <= fresh


@dataclass(frozen=True)
class RunOutcome:
    """One run of a launch: its place in the study, its Dagster run id and final status."""

    run: PlannedRun
    run_id: str
    status: str

    @property
    def success(self) -> bool:
        """True when the run succeeded."""
        return self.status == dg.DagsterRunStatus.SUCCESS.value


def new_launch_id(study: str) -> str:
    """Return a launch id, '<study>-<UTC time>-<random>' (a run tag value: letters, digits, '-')."""
    return f"{study}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def run_tags(run: PlannedRun, launch: str) -> dict[str, str]:
    """Return every tag of ``run``'s Dagster run: the study's tags and the partition's tags."""
    return {**run.tags(launch), **measurement_partitions.get_tags_for_partition_key(run.partition)}


def _console(log_level: str) -> dict:
    """Return run config setting the console logger's level ('DEBUG' | 'INFO' | 'WARNING' | 'ERROR')."""
    return {"loggers": {"console": {"config": {"log_level": log_level}}}}


def execute_in_process(
    instance: dg.DagsterInstance,
    runs: Sequence[PlannedRun],
    launch: str,
    *,
    log_level: str = "WARNING",
    on_start: Callable[[int, PlannedRun], None] | None = None,
) -> Iterator[RunOutcome]:
    """Execute ``runs`` one after another in this process on ``instance``; yield each outcome as it ends."""
    recon = dg.reconstructable(measure_job)
    for i, run in enumerate(runs):
        if on_start is not None:
            on_start(i, run)
        result = dg.execute_job(recon, instance=instance, tags=run_tags(run, launch), run_config=_console(log_level))
        status = instance.get_run_by_id(result.run_id).status.value
        yield RunOutcome(run=run, run_id=result.run_id, status=status)


def refresh_report(instance: dg.DagsterInstance, log_level: str = "WARNING") -> bool:
    """Materialise efficiency_report in this process; returns True on success."""
    return dg.execute_job(dg.reconstructable(report_job), instance=instance, run_config=_console(log_level)).success


def launch_file(data_dir: Path, launch: str) -> Path:
    """Return the launch file of ``launch``: ``<data_dir>/launches/<launch>.json``."""
    return data_dir / LAUNCHES_DIR / f"{launch}.json"


def submit_to_queue(data_dir: Path, runs: Sequence[PlannedRun], launch: str) -> Path:
    """Write the launch file the ``study_launches`` sensor turns into RunRequests; return its path."""
    path = launch_file(data_dir, launch)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "launch": launch,
        "created_at": datetime.now(UTC).isoformat(),
        "partitions": sorted({r.measurement.key for r in runs}),
        "runs": [{"position": r.position, "partition": str(r.partition), "tags": r.tags(launch)} for r in runs],
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path


def read_launches(data_dir: Path) -> list[dict]:
    """Return the pending launch files' contents (oldest first); unreadable files are skipped."""
    folder = data_dir / LAUNCHES_DIR
    out = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("runs"), list) and data.get("launch") == path.stem:
            out.append(data)
    return out


def follow_queue(
    instance: dg.DagsterInstance,
    runs: Sequence[PlannedRun],
    launch: str,
    *,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    on_change: Callable[[PlannedRun, str, str], None] | None = None,
) -> list[RunOutcome]:
    """Wait until every run of ``launch`` has finished (found by its ``llem/launch`` tag); return the outcomes in
    study order. ``on_change(run, run_id, status)`` is called on every status change. Raises TimeoutError after
    ``timeout_s`` s."""
    by_position = {r.position: r for r in runs}
    seen: dict[int, tuple[str, str]] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        for record in instance.get_runs(filters=dg.RunsFilter(tags={LAUNCH_TAG: launch})):
            position = int(record.tags.get("llem/position", -1))
            run = by_position.get(position)
            if run is None:
                continue
            state = (record.run_id, record.status.value)
            if seen.get(position) != state:
                seen[position] = state
                if on_change is not None:
                    on_change(run, *state)
        done = [p for p, (_, status) in seen.items() if dg.DagsterRunStatus(status) in FINISHED]
        if len(done) == len(by_position):
            return [RunOutcome(run=by_position[p], run_id=seen[p][0], status=seen[p][1]) for p in sorted(by_position)]
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{len(by_position) - len(done)} run(s) of launch {launch} still running")
        time.sleep(poll_s)
