"""Launch measurements without the daemon: register a study and materialise its partitions on an instance.

Each partition is its own run (the job's in-process executor, pools enforced by the instance), started
when a GPU slot is free (pipelined: the next GPU step overlaps the previous run's CPU step; the next run
is created while the previous one measures and started on its turn), several at once, each in a spawned
partition-runner process (Dagster's run execution is not thread-safe: two runs in threads of one process
deadlock in logging setup); the pool "gpu" and the GPU allocator serialise the GPU steps. Used by
``python -m llem_pipeline.defs.launch`` (``make demo``) and the tests.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from llem_pipeline.defs.constants import GPU_POOL, GPU_STEP_KEY
from llem_pipeline.defs.experiments.partitions import (
    CONFIG_PARTITIONS_NAME,
    measurement_key,
    measurement_partitions,
)
from llem_pipeline.defs.experiments.registry import scan_studies
from llem_pipeline.defs.experiments.sensors import register_studies
from llem_pipeline.defs.store_resource import LlemStore
from llem_pipeline.domain.errors import ConfigError


@functools.cache
def _resolved_job(name: str) -> dg.JobDefinition:
    """Return job ``name`` of the code location, built once per process (a partition runner executes many runs)."""
    from llem_pipeline.definitions import defs

    return defs().resolve_job_def(name)


def measure_job() -> dg.JobDefinition:
    """Return the resolved ``measure_experiments`` job of the code location (reconstructable target)."""
    return _resolved_job("measure_experiments")


def report_job() -> dg.JobDefinition:
    """Return the resolved ``refresh_efficiency_report`` job (reconstructable target)."""
    return _resolved_job("refresh_efficiency_report")


@dataclass(frozen=True)
class LaunchOutcome:
    """One launched run: its partition, run id and success."""

    run_date: str
    config_hash: str
    run_id: str
    success: bool


def register_study(instance: dg.DagsterInstance, study: str, store: LlemStore | None = None) -> list[str]:
    """Register every study (experiment_configs + dynamic partitions) and return ``study``'s config hashes.

    Raises ConfigError when ``study`` is missing or invalid (the message lists the invalid files).
    """
    scan = scan_studies()
    plan = scan.plans.get(study)
    if plan is None:
        raise ConfigError(
            f"study {study!r} is not a valid study under the studies folder "
            f"(valid: {sorted(scan.plans) or 'none'}){'; invalid: ' + scan.error_summary() if scan.errors else ''}"
        )
    known = set(instance.get_dynamic_partitions(CONFIG_PARTITIONS_NAME))
    new, _ = register_studies(scan, store or LlemStore(), known)
    if new:
        instance.add_dynamic_partitions(CONFIG_PARTITIONS_NAME, new)
    return list(plan.config_hashes)


def gpu_pool_limit(instance: dg.DagsterInstance) -> int:
    """Return how many GPU steps the instance lets run at once: pool "gpu"'s own limit, else the pools'
    ``default_limit`` of dagster.yaml, else 1.

    ``materialize_partitions`` launches that many runs at once by default: a run launched beyond it
    would only wait on the pool, re-checking at Dagster's growing interval (1 s, ×1.1 per check, up to
    15 s), which leaves the GPU idle for up to that long after each measurement.
    """
    for pool in instance.event_log_storage.get_pool_limits():
        if pool.name == GPU_POOL:
            return max(1, int(pool.limit))
    default = instance.event_log_storage.get_pool_config().default_pool_limit
    return max(1, int(default)) if default else 1


def _console(log_level: str) -> dict:
    """Return run config setting the console logger's level ('DEBUG' | 'INFO' | 'WARNING' | 'ERROR')."""
    return {"loggers": {"console": {"config": {"log_level": log_level}}}}


def _run_one(run_date: str, config_hash: str, tags: dict[str, str], log_level: str = "INFO",
             turn_file: str | None = None) -> LaunchOutcome:
    """Execute one partition's run on the DAGSTER_HOME instance (in a spawned process); returns its outcome.

    With ``turn_file`` the run is created now and executed once the launcher creates that file (the run's turn
    on the GPU): creation (run record, execution plan, one planned event per asset and check, the run's
    event-log shard: ~0.25 s) then overlaps the previous run's measurement instead of delaying the next one.
    These are the two calls ``dg.execute_job`` makes (pinned Dagster). When the launcher goes away before the
    run's turn, the run is marked canceled (never left NOT_STARTED).
    """
    from dagster._core.execution.api import execute_run

    instance = _process_instance(os.environ.get("DAGSTER_HOME", ""))
    recon = dg.reconstructable(measure_job)
    job_def = measure_job()
    key = measurement_key(run_date, config_hash)
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=_console(log_level),
        tags={**job_def.run_tags, **measurement_partitions.get_tags_for_partition_key(key), **tags},
        job_code_origin=recon.get_python_origin(),
    )
    if turn_file is not None and not _await_turn(Path(turn_file), _LAUNCHER_PID):
        instance.report_run_canceled(run, message="the launcher stopped before this run's turn on the GPU")
        return LaunchOutcome(run_date, config_hash, run.run_id, False)
    result = execute_run(recon, run, instance, raise_on_error=False)
    return LaunchOutcome(run_date, config_hash, result.run_id, result.success)


_LAUNCHER_PID: int | None = None  # the process that started this runner


def _await_turn(turn_file: Path, launcher_pid: int | None, poll_s: float = 0.01, check_s: float = 1.0) -> bool:
    """Block until ``turn_file`` exists (the launcher creates it when the run's turn on the GPU comes; one file
    per run, so no run can take another's turn); return True then, or False once this process's parent is no
    longer ``launcher_pid`` (the launcher has gone). Polls every ``poll_s`` s (a stat: ~2 µs)."""
    next_check = time.monotonic() + check_s
    while not turn_file.exists():
        if time.monotonic() >= next_check:
            if launcher_pid is not None and os.getppid() != launcher_pid:
                return False
            next_check = time.monotonic() + check_s
        time.sleep(poll_s)
    return True


def _warm_runner() -> None:
    """Initialise a partition-runner process (returns None): note the launcher's pid, import the code location
    and resolve the measurement job, open the instance, and draw one chart (matplotlib's first figure loads its
    font cache, ~0.3 s) — so that none of it lands between a run's GPU step and the next. Best effort: a failure
    here (a broken code location, say) is left to the run, which reports it with the run's context."""
    global _LAUNCHER_PID
    _LAUNCHER_PID = os.getppid()
    try:
        measure_job()
        if os.environ.get("DAGSTER_HOME"):
            _process_instance(os.environ["DAGSTER_HOME"])
        from llem_pipeline.defs.charts import power_trace_png

        power_trace_png([0.0, 1.0], [1.0, 1.0], ["warm", "warm"], None, "warm-up")
    except Exception:
        pass


def _runner_pid(hold_s: float) -> int:
    """Return this runner's pid after ``hold_s`` s (so one warm runner cannot take every probe)."""
    time.sleep(hold_s)
    return os.getpid()


def _start_runners(pool: ProcessPoolExecutor, workers: int, timeout_s: float = 300.0) -> float:
    """Start ``workers`` runner processes and wait until each has warmed up (ran a probe task); returns the
    seconds it took. After ``timeout_s`` s it returns anyway (a slow runner then warms up during a run)."""
    t0 = time.perf_counter()
    seen: set[int] = set()
    pending = [pool.submit(_runner_pid, 0.05) for _ in range(workers)]
    while len(seen) < workers and time.perf_counter() - t0 < timeout_s:
        done = pending.pop(0)
        seen.add(done.result())
        if len(seen) + len(pending) < workers:
            pending.append(pool.submit(_runner_pid, 0.05))
    return time.perf_counter() - t0


@functools.cache
def _process_instance(dagster_home: str) -> dg.DagsterInstance:
    """Return this process's instance of ``dagster_home`` (DAGSTER_HOME), opened once: a partition runner
    executes many runs, and opening the instance (SQLite storages, schema revision checks) costs ~0.1 s."""
    if not dagster_home:
        raise dg.DagsterInvariantViolationError("DAGSTER_HOME is not set: the launcher needs a persistent instance")
    return dg.DagsterInstance.get()


def materialize_partitions(
    run_date: str,
    config_hashes: Sequence[str],
    *,
    parallel: int | None = None,
    tags: dict[str, str] | None = None,
    log_level: str = "INFO",
    poll_s: float = 0.1,
    stats: dict[str, float] | None = None,
) -> list[LaunchOutcome]:
    """Run ``measure_experiments`` once per config hash for ``run_date``; return the outcomes in
    ``config_hashes`` order. Runs use the instance of DAGSTER_HOME (persistent: pools need it).

    ``parallel=None`` (default) pipelines the study over the GPU pool: a run starts as soon as a GPU slot
    is free — its GPU step can begin while the previous run still stores its results (CPU step) — and
    never earlier, so no run waits on the pool's growing re-check interval (1 s, ×1.1 per check, up to
    15 s) while the GPU idles. Each run is created (run record, plan, planned events) while the previous one
    measures, and starts on its turn. The partition-runner processes start and warm up (code location,
    instance, first chart) before the first run: one started on demand later would import Dagster while a
    measurement runs, or while the GPU waits. ``parallel=N`` starts N runs at once instead (each waits on the pool).
    ``stats``, when given, receives ``runners_ready_s`` (s until every runner was warm: a per-study cost).
    """
    spawn = multiprocessing.get_context("spawn")
    base_tags = dict(tags or {})
    if parallel is not None:
        with ProcessPoolExecutor(max_workers=max(1, min(parallel, len(config_hashes))), mp_context=spawn,
                                 initializer=_warm_runner) as pool:
            futures = [pool.submit(_run_one, run_date, h, base_tags, log_level) for h in config_hashes]
            return [f.result() for f in futures]
    with dg.DagsterInstance.get() as instance:
        slots = gpu_pool_limit(instance)
        gate = _GpuGate(instance, slots)
        workers = max(1, min(2 * slots, len(config_hashes)))
        with (tempfile.TemporaryDirectory(prefix="llem-turns-") as turns,
              ProcessPoolExecutor(max_workers=workers, mp_context=spawn, initializer=_warm_runner) as pool):
            ready_s = _start_runners(pool, workers)
            if stats is not None:
                stats["runners_ready_s"] = ready_s
            futures = []
            for h in config_hashes:
                launch_id = uuid.uuid4().hex
                turn = Path(turns) / launch_id
                # the run is created now (while the previous one measures) and starts on its turn
                future = pool.submit(_run_one, run_date, h, {**base_tags, LAUNCH_TAG: launch_id}, log_level,
                                     str(turn))
                gate.wait_for_slot(poll_s)
                turn.touch()
                gate.launched(launch_id, future)
                futures.append(future)
            return [f.result() for f in futures]


LAUNCH_TAG = "llem/launch_id"
_GPU_STEP_END = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}


class _GpuGate:
    """Tracks the runs this launcher started until their GPU step has ended (by their event log)."""

    def __init__(self, instance: dg.DagsterInstance, slots: int) -> None:
        self.instance = instance
        self.slots = slots
        self.in_gpu_phase: dict[str, Future] = {}
        self.run_ids: dict[str, str] = {}

    def launched(self, launch_id: str, future: Future) -> None:
        """Record a run just submitted (it holds, or will hold, a GPU slot)."""
        self.in_gpu_phase[launch_id] = future

    def _gpu_done(self, launch_id: str, future: Future) -> bool:
        """Return True when the run's GPU step has ended (success or failure) or the run is over."""
        if future.done():
            return True
        run_id = self.run_ids.get(launch_id)
        if run_id is None:
            runs = self.instance.get_runs(filters=dg.RunsFilter(tags={LAUNCH_TAG: launch_id}), limit=1)
            if not runs:
                return False
            run_id = self.run_ids[launch_id] = runs[0].run_id
        records = self.instance.get_records_for_run(run_id, of_type=_GPU_STEP_END).records
        return any(r.event_log_entry.step_key == GPU_STEP_KEY for r in records)

    def _pool_has_free_slot(self) -> bool:
        """Return True when pool "gpu" has an unclaimed slot (or is not initialised yet)."""
        info = self.instance.event_log_storage.get_concurrency_info(GPU_POOL)
        return info.slot_count == 0 or info.active_slot_count < info.slot_count

    def wait_for_slot(self, poll_s: float) -> None:
        """Block until fewer than ``slots`` launched runs are before or in their GPU step and the pool has a
        free slot (re-checked every ``poll_s`` s)."""
        while True:
            for launch_id, future in list(self.in_gpu_phase.items()):
                if self._gpu_done(launch_id, future):
                    del self.in_gpu_phase[launch_id]
            if len(self.in_gpu_phase) < self.slots and self._pool_has_free_slot():
                return
            time.sleep(poll_s)


def refresh_report(instance: dg.DagsterInstance, log_level: str = "INFO") -> bool:
    """Materialise efficiency_report; returns True on success."""
    return dg.execute_job(dg.reconstructable(report_job), instance=instance, run_config=_console(log_level)).success
