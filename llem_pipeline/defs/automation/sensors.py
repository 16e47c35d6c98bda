"""Sensors of the measurement runs: hand `llem run` launches to the run queue; refresh the report after runs."""

import json

import dagster as dg

from llem_pipeline.defs.automation.jobs import (
    measure_experiments,
    nightly_benchmark_job,
    refresh_efficiency_report,
)
from llem_pipeline.defs.automation.launching import read_launches
from llem_pipeline.defs.experiments.partitions import measurements, split_partition_key
from llem_pipeline.defs.settings import LlemPaths

# Launch ids the cursor remembers (a launch file is removed by `llem run` once its runs have finished).
_CURSOR_KEEP = 500


@dg.sensor(
    name="study_launches",
    job=measure_experiments,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns each `llem run` launch (a file under <data dir>/launches) into its study's RunRequests, "
    "in the study's order; the run queue starts them under the gpu pool.",
)
def study_launches(context: dg.SensorEvaluationContext, llem_paths: LlemPaths) -> dg.SensorResult | dg.SkipReason:
    """Return the RunRequests of every launch not submitted yet (and the partitions they need), or a SkipReason."""
    submitted: list[str] = json.loads(context.cursor) if context.cursor else []
    pending = [launch for launch in read_launches(llem_paths.data()) if launch["launch"] not in submitted]
    if not pending:
        return dg.SkipReason("no new `llem run` launch")
    requests: list[dg.RunRequest] = []
    partitions: set[str] = set()
    for launch in pending:
        for run in sorted(launch["runs"], key=lambda r: r["position"]):
            _, key = split_partition_key(run["partition"])
            partitions.add(key.key)
            requests.append(dg.RunRequest(run_key=f"{launch['launch']}|{run['position']}",
                                          partition_key=run["partition"], tags=run["tags"]))
        context.log.info(f"launch {launch['launch']}: {len(launch['runs'])} run(s) queued")
    known = set(context.instance.get_dynamic_partitions(measurements.name))
    new = sorted(partitions - known)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[measurements.build_add_request(new)] if new else [],
        cursor=json.dumps((submitted + [launch["launch"] for launch in pending])[-_CURSOR_KEEP:]),
    )


@dg.run_status_sensor(
    name="refresh_after_measurement",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[measure_experiments, nightly_benchmark_job],
    request_job=refresh_efficiency_report,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a measurement run succeeds, refresh the efficiency report.",
)
def refresh_after_measurement(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    """Return a RunRequest for refresh_efficiency_report keyed by the finished run (one refresh per run)."""
    return dg.RunRequest(run_key=f"refresh-after-{context.dagster_run.run_id}")
