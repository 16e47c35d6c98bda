"""Names shared by the domains under defs/: groups, owners, tags, resource keys, code versions."""

from __future__ import annotations

from llem_pipeline import __version__

OWNERS = ["team:llem"]
GPU_POOL = "gpu"
GPU_STEP_KEY = "gpu_measurement"  # the GPU step (op) of every measurement run
STORE_STEP_KEY = "store_results"  # the CPU step that writes the run to DuckDB
# Celery queues of a fleet (docs/fleet.md): a GPU step goes to 'gpu-<hardware target of its run>' (the fleet
# executor fills in {target} from the run's llem/target tag), the steps that touch DuckDB to the one
# 'storage' queue on the host that owns the file. The in-process executor ignores these tags.
CELERY_QUEUE_TAG = "dagster-celery/queue"
GPU_QUEUE_TEMPLATE = "gpu-{target}"
STORAGE_QUEUE = "storage"
GPU_OP_TAG = {"llem/resource": "gpu", CELERY_QUEUE_TAG: GPU_QUEUE_TEMPLATE}
STORAGE_OP_TAG = {"llem/resource": "storage", CELERY_QUEUE_TAG: STORAGE_QUEUE}
# One asset group: the UI then opens the lineage with every asset shown (several groups open collapsed).
# The layers are told apart by kinds and by the steps: gpu_measurement, store_results, efficiency_report.
ASSET_GROUP = "llem"
# I/O managers: the GPU step's outputs stay in the worker's run folder; results go to DuckDB.
RUN_FOLDER_IO_MANAGER = "run_folder_io_manager"
DUCKDB_IO_MANAGER = "duckdb_io_manager"
# Run tags of a study's runs (written by study_runs.planned_runs, read by the steps and `llem run`).
STUDY_TAG = "llem/study"
CYCLE_TAG = "llem/cycle"
POSITION_TAG = "llem/position"
GAP_TAG = "llem/gap_s"
LABEL_TAG = "llem/label"
TARGET_TAG = "llem/target"
CONFIG_TAG = "llem/config_hash"
LAUNCH_TAG = "llem/launch"
SIMULATED_TAG = "llem/simulated"
# Bump when the measurement harness changes what it measures: Dagster marks downstream results stale.
HARNESS_CODE_VERSION = f"harness-{__version__}"
RESULTS_CODE_VERSION = f"results-{__version__}"
