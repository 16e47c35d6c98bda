"""Names shared by the domains under defs/: groups, owners, tags, code versions."""

from __future__ import annotations

from llem_pipeline import __version__

OWNERS = ["team:llem"]
GPU_POOL = "gpu"
GPU_STEP_KEY = "gpu_measurement"  # the GPU step (op) of every measurement run
# Op tag counted by the multiprocess executor's tag_concurrency_limits (see definitions.py).
GPU_OP_TAG = {"llem/resource": "gpu"}
MEASUREMENT_GROUP = "measurement"
RESULTS_GROUP = "results"
REPORTS_GROUP = "reports"
# Bump when the measurement harness changes what it measures: Dagster marks downstream results stale.
HARNESS_CODE_VERSION = f"harness-{__version__}"
RESULTS_CODE_VERSION = f"results-{__version__}"
