"""Jobs: the measurement assets over chosen partitions, the nightly benchmark, the efficiency report.

By default every job runs its steps in the run's own process (the in-process executor): the GPU work already
runs in a process of its own (the worker command through Pipes: fresh CUDA context, hard timeout,
process-group kill), so a process per step would only add start-up time. The instance's pool "gpu" still
holds the GPU step back until a slot is free, and the GPU allocator's per-GPU lock says which GPU. In a fleet
(LLEM_EXECUTOR=celery, docs/fleet.md) the steps run as Celery tasks on the queues their op tags name.
"""

from __future__ import annotations

import dagster as dg

from llem_pipeline.defs.reports.assets import efficiency_report
from llem_pipeline.fleet.executor import measurement_executor

# The GPU step's three assets and the store step's three: one measurement run materialises all six.
MEASUREMENT_ASSETS = dg.AssetSelection.assets(
    "environment_snapshot", "baseline_power", "raw_process_results",
    "experiment_results", "power_timeseries", "request_latencies",
)
# A run that outlives this is failed by run monitoring (dagster.yaml enables it), freeing its GPU slot.
MAX_RUNTIME_S = 6 * 3600

measure_experiments = dg.define_asset_job(
    name="measure_experiments",
    selection=MEASUREMENT_ASSETS,
    executor_def=measurement_executor(),
    tags={"dagster/max_runtime": MAX_RUNTIME_S},
    description="Measure one (date × measurement) partition: the GPU step, then results, latencies and power "
    "samples into DuckDB. `llem run STUDY` launches one run per scheduled cycle of every config.",
)

nightly_benchmark_job = dg.define_asset_job(
    name="nightly_benchmark_job",
    selection=MEASUREMENT_ASSETS,
    executor_def=measurement_executor(),
    tags={"dagster/max_runtime": MAX_RUNTIME_S, "llem/study": "nightly"},
    description="The nightly benchmark: every run of studies/nightly.yaml (launched by the nightly_benchmark schedule).",
)

refresh_efficiency_report = dg.define_asset_job(
    name="refresh_efficiency_report",
    selection=dg.AssetSelection.assets(efficiency_report),
    executor_def=measurement_executor(),
    description="Redraw the efficiency table and chart from the efficiency view.",
)
