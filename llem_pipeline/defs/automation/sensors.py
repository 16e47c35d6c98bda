"""refresh_after_measurement: re-draw the efficiency report after each successful measurement run."""


import dagster as dg

from llem_pipeline.defs.automation.jobs import (
    measure_experiments,
    nightly_benchmark_job,
    refresh_efficiency_report,
)


@dg.run_status_sensor(
    name="refresh_after_measurement",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[measure_experiments, nightly_benchmark_job],
    request_job=refresh_efficiency_report,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a measurement run succeeds, refresh the efficiency views and chart.",
)
def refresh_after_measurement(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    """Return a RunRequest for refresh_efficiency_report keyed by the finished run (one refresh per run)."""
    return dg.RunRequest(run_key=f"refresh-after-{context.dagster_run.run_id}")
