"""Jobs: the measurement assets over chosen partitions, the nightly benchmark, the efficiency report."""

from __future__ import annotations

import dagster as dg

from llem_pipeline.defs.constants import MEASUREMENT_GROUP, RESULTS_GROUP
from llem_pipeline.defs.reports.assets import efficiency_report

MEASUREMENT_ASSETS = dg.AssetSelection.groups(MEASUREMENT_GROUP, RESULTS_GROUP)
# A run that outlives this is failed by run monitoring (dagster.yaml enables it), freeing its GPU slot.
MAX_RUNTIME_S = 6 * 3600
# Measurement runs execute their two steps in the run worker: the GPU work already runs in its own
# process (the worker command through Pipes: fresh CUDA context, hard timeout, process-group kill), so
# a process per step would only add start-up and events. The instance's pool "gpu" holds the GPU step
# back exactly as with the multiprocess executor (InstanceConcurrencyContext), and steps of one run
# run one at a time. The one-step report job runs in process as well. Ad-hoc UI materialisations use
# the code location's multiprocess executor.
MEASUREMENT_EXECUTOR = dg.in_process_executor

measure_experiments = dg.define_asset_job(
    name="measure_experiments",
    selection=MEASUREMENT_ASSETS,
    executor_def=MEASUREMENT_EXECUTOR,
    tags={"dagster/max_runtime": MAX_RUNTIME_S},
    description="Measure the selected (date × config) partitions: GPU step, then results, latencies, power samples.",
)

nightly_benchmark_job = dg.define_asset_job(
    name="nightly_benchmark_job",
    selection=MEASUREMENT_ASSETS,
    executor_def=MEASUREMENT_EXECUTOR,
    tags={"dagster/max_runtime": MAX_RUNTIME_S, "llem/study": "nightly"},
    description="The nightly benchmark: one run per config of studies/nightly.yaml (launched by nightly_benchmark).",
)

refresh_efficiency_report = dg.define_asset_job(
    name="refresh_efficiency_report",
    selection=dg.AssetSelection.assets(efficiency_report),
    executor_def=MEASUREMENT_EXECUTOR,
    description="Re-apply the SQL views and redraw the J/token table and chart.",
)
