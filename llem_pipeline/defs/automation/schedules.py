"""nightly_benchmark: at 01:00 UTC, every run of the nightly study for that day (running by default)."""

import dagster as dg

from llem_pipeline.defs.automation.jobs import nightly_benchmark_job
from llem_pipeline.defs.automation.study_runs import measurement_keys, planned_runs
from llem_pipeline.defs.experiments.partitions import measurements
from llem_pipeline.defs.experiments.registry import scan_studies
from llem_pipeline.defs.measurements.devices import host_target
from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocator
from llem_pipeline.defs.settings import LlemPaths

NIGHTLY_STUDY = "nightly"


def nightly_run_requests(instance: dg.DagsterInstance, run_date: str, paths: LlemPaths,
                         devices: str, host: str = "") -> list[dg.RunRequest] | dg.SkipReason:
    """Return the nightly study's runs for ``run_date`` (every cycle, in the study's order, with its gap),
    registering the partitions they need, or a SkipReason naming the problem when the study file is missing
    or invalid. ``host`` is the host's hardware target (LLEM_TARGET; '' = from ``devices``)."""
    scan = scan_studies(paths.studies())
    plan = scan.plans.get(NIGHTLY_STUDY)
    if plan is None:
        problem = scan.errors.get(f"{NIGHTLY_STUDY}.yaml", "no study named 'nightly' under the studies folder")
        return dg.SkipReason(f"nightly benchmark skipped: {problem}")
    target = host_target(devices, host)
    known = set(instance.get_dynamic_partitions(measurements.name))
    new = [k for k in measurement_keys(plan, target) if k not in known]
    if new:  # a schedule cannot return partition requests: the partitions must exist before its runs
        instance.add_dynamic_partitions(measurements.name, new)
    launch = f"{NIGHTLY_STUDY}-{run_date}"
    return [run.run_request(launch) for run in planned_runs(plan, run_date, target)]


@dg.schedule(
    name="nightly_benchmark",
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    job=nightly_benchmark_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="01:00 UTC: measure every config of studies/nightly.yaml for the day (partition date = that day), "
    "each cycle its own run, in the study's order.",
)
def nightly_benchmark(context: dg.ScheduleEvaluationContext, llem_paths: LlemPaths, gpu_allocator: GpuAllocator):
    """Return the nightly runs for the tick's UTC date (see nightly_run_requests)."""
    return nightly_run_requests(context.instance, context.scheduled_execution_time.date().isoformat(),
                                llem_paths, gpu_allocator.devices, gpu_allocator.target)
