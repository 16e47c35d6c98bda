"""DuckDB storage: schema and views (.sql), the transactional ResultStore, the Dagster I/O manager, `llem sql`.

Imports dagster only in ``io_manager``; never imports ``llem_pipeline.measure``.
"""

from llem_pipeline.storage.audit import Discrepancy
from llem_pipeline.storage.errors import (
    LockTimeoutError,
    PartitionLostWarning,
    ReadOnlyViolation,
    RunFolderError,
    StorageError,
    WriteVerificationError,
    WriteVerificationWarning,
)
from llem_pipeline.storage.rows import (
    baseline_rows,
    environment_row,
    experiment_result_row,
    process_result_rows,
)
from llem_pipeline.storage.schema import PARTITIONED_TABLES, TABLES, VIEWS
from llem_pipeline.storage.store import ResultStore

__all__ = [
    "PARTITIONED_TABLES",
    "TABLES",
    "VIEWS",
    "Discrepancy",
    "LockTimeoutError",
    "PartitionLostWarning",
    "ReadOnlyViolation",
    "ResultStore",
    "RunFolderError",
    "StorageError",
    "WriteVerificationError",
    "WriteVerificationWarning",
    "baseline_rows",
    "environment_row",
    "experiment_result_row",
    "process_result_rows",
]
