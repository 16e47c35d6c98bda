"""DuckDB storage: schema and views (.sql), RunRecord and the transactional ResultStore, the Dagster I/O
manager, `llem sql`.

Imports dagster only in ``io_manager``; never imports ``llem_pipeline.measure``; never reads run folders
(the measurement layer hands a run over as a RunRecord).
"""

from llem_pipeline.storage.audit import Discrepancy
from llem_pipeline.storage.errors import (
    LockTimeoutError,
    PartitionLostWarning,
    ReadOnlyViolation,
    StorageError,
    WriteVerificationError,
    WriteVerificationWarning,
)
from llem_pipeline.storage.records import POWER_SAMPLE_COLUMNS, REQUEST_COLUMNS, RunRecord
from llem_pipeline.storage.schema import PARTITIONED_TABLES, TABLES, VIEWS
from llem_pipeline.storage.store import ResultStore

__all__ = [
    "PARTITIONED_TABLES",
    "POWER_SAMPLE_COLUMNS",
    "REQUEST_COLUMNS",
    "TABLES",
    "VIEWS",
    "Discrepancy",
    "LockTimeoutError",
    "PartitionLostWarning",
    "ReadOnlyViolation",
    "ResultStore",
    "RunRecord",
    "StorageError",
    "WriteVerificationError",
    "WriteVerificationWarning",
]
