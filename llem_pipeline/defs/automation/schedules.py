"""nightly_benchmark: at 01:00 UTC, one run per config of the nightly study for that day (running by default)."""


import dagster as dg

from llem_pipeline.defs.automation.jobs import nightly_benchmark_job
from llem_pipeline.defs.experiments.partitions import CONFIG_PARTITIONS_NAME, measurement_key
from llem_pipeline.defs.experiments.registry import scan_studies

NIGHTLY_STUDY = "nightly"


def nightly_run_requests(instance: dg.DagsterInstance, run_date: str) -> list[dg.RunRequest] | dg.SkipReason:
    """Return one RunRequest per config of the nightly study for ``run_date`` (registering missing partitions),
    or a SkipReason naming the problem when the study file is missing or invalid.
    """
    scan = scan_studies()
    plan = scan.plans.get(NIGHTLY_STUDY)
    if plan is None:
        problem = scan.errors.get(f"{NIGHTLY_STUDY}.yaml", "no study named 'nightly' under the studies folder")
        return dg.SkipReason(f"nightly benchmark skipped: {problem}")
    known = set(instance.get_dynamic_partitions(CONFIG_PARTITIONS_NAME))
    missing = [h for h in plan.config_hashes if h not in known]
    if missing:
        instance.add_dynamic_partitions(CONFIG_PARTITIONS_NAME, missing)
    return [
        dg.RunRequest(
            run_key=f"{NIGHTLY_STUDY}|{run_date}|{h}",
            partition_key=measurement_key(run_date, h),
            tags={"llem/study": NIGHTLY_STUDY, "llem/config_hash": h},
        )
        for h in plan.config_hashes
    ]


@dg.schedule(
    name="nightly_benchmark",
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    job=nightly_benchmark_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="01:00 UTC: measure every config of studies/nightly.yaml for the day (partition date = that day).",
)
def nightly_benchmark(context: dg.ScheduleEvaluationContext):
    """Return the nightly RunRequests for the tick's UTC date (see nightly_run_requests)."""
    return nightly_run_requests(context.instance, context.scheduled_execution_time.date().isoformat())
