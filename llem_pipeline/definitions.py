"""The Dagster code location: everything under ``llem_pipeline/defs/`` with the in-process executor.

Steps run in their run's process: the GPU work runs in the worker command (a fresh interpreter through
Dagster Pipes), so step processes would only add start-up time. GPU steps are limited across runs by the
instance's pool "gpu" (``dagster instance concurrency set gpu N`` for N GPUs; default limit 1 in
.dagster_home/dagster.yaml) and pinned to a GPU by the GPU allocator's per-GPU lock.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dagster as dg

# Two preview features are used on purpose and their per-run warnings would only clutter the user's terminal:
# partitioned asset checks (each check's history is per measurement partition) and the Pipes message reader's
# writer count (used by dg.PipesSubprocessClient itself, not by this code).
warnings.filterwarnings("ignore", message=r".*partitions_def on an AssetCheckSpec.*", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", message=r".*PipesMessageReader\.expected_writer_count.*", category=dg.PreviewWarning)


@dg.definitions
def defs() -> dg.Definitions:
    """Return the Definitions of llem_pipeline: the defs/ folder with the in-process executor."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        dg.Definitions(executor=dg.in_process_executor),
    )
