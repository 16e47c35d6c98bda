"""LlemDuckDBIOManager: Dagster outputs <-> llem tables, one transaction per partition, jittered lock retries.

Built on dagster-duckdb's ``DuckDBResource``: the I/O manager takes one (``duckdb=DuckDBResource(
database=...)``) and uses its ``database`` and ``connection_config``. It does not call
``DuckDBResource.get_connection()`` because that retries with fixed, un-jittered delays, always opens
read-write (so every ``load_input`` would block writers) and runs no transaction (dagster-duckdb's own
I/O manager deletes and inserts in autocommit, so a crash between the two loses the slice). Instead
writes go through ``ResultStore.write_tables`` (BEGIN; DELETE partition; INSERT; COMMIT, retried with
jitter) and reads through a read-only connection.

Table: the asset key's last element, mapped through ``ASSET_TABLES`` (e.g. ``raw_process_results`` ->
``process_results``), or ``metadata={"llem_table": ...}`` on the asset; either must name a table of
the allow-list. Partition: the MultiPartitionKey dimensions ``date`` (run_date) and ``config``
(config_hash); run_id: the Dagster run id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import dagster as dg
import pyarrow as pa
from dagster_duckdb import DuckDBResource
from pydantic import Field

from llem_pipeline.domain import EnvironmentSnapshot, ExperimentResult, RawProcessResult
from llem_pipeline.storage import rows as R
from llem_pipeline.storage.errors import StorageError
from llem_pipeline.storage.locking import DEFAULT_LOCK_TIMEOUT_S
from llem_pipeline.storage.schema import PARTITION_COLUMNS, PARTITIONED_TABLES, checked_table
from llem_pipeline.storage.store import ResultStore

ASSET_TABLES: dict[str, str] = {
    **{t: t for t in PARTITIONED_TABLES},
    "raw_process_results": "process_results",
    "environment_snapshot": "environment_snapshots",
    "baseline_power": "baselines",
    "baseline": "baselines",
    "power_timeseries": "power_samples",
    "request_latencies": "requests",
}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def table_for(asset_name: str, metadata: Mapping[str, Any] | None = None) -> str:
    """Return the llem table an asset is stored in (metadata 'llem_table' wins); StorageError if none."""
    override = (metadata or {}).get("llem_table")
    if override is not None:
        return checked_table(str(getattr(override, "value", override)), PARTITIONED_TABLES)
    if asset_name not in ASSET_TABLES:
        raise StorageError(
            f"asset {asset_name!r} has no llem table: name it one of {sorted(ASSET_TABLES)} "
            "or set metadata={'llem_table': <table>}"
        )
    return ASSET_TABLES[asset_name]


def split_partition_key(key: Any, date_dim: str = "date", config_dim: str = "config") -> tuple[date, str]:
    """Return (run_date, config_hash) from a MultiPartitionKey (or its 'a|b' string form).

    Raises StorageError naming the key when it lacks a date or a config hash.
    """
    by_dim = getattr(key, "keys_by_dimension", None)
    if by_dim:
        if date_dim not in by_dim or config_dim not in by_dim:
            raise StorageError(
                f"partition key {str(key)!r} has dimensions {sorted(by_dim)}; expected {date_dim!r} and {config_dim!r}"
            )
        raw_date, raw_hash = by_dim[date_dim], by_dim[config_dim]
    else:
        parts = str(key).split("|")
        dates = [p for p in parts if _DATE.fullmatch(p)]
        others = [p for p in parts if not _DATE.fullmatch(p)]
        if len(parts) != 2 or len(dates) != 1:
            raise StorageError(
                f"partition key {str(key)!r} is not a date x config multi-partition key "
                f"(dimensions {date_dim!r}: YYYY-MM-DD and {config_dim!r}: config hash)"
            )
        raw_date, raw_hash = dates[0], others[0]
    return R.as_run_date(raw_date), R.check_config_hash(raw_hash)


def _baseline_dict(table: pa.Table) -> dict[str, Any] | None:
    rows = table.to_pylist()
    if not rows:
        return None
    first = rows[0]
    measured = first.get("measured_at")
    return {
        "devices": [{"uuid": r["device_uuid"], "power_w": r["power_w"]} for r in rows],
        "total_power_w": first.get("total_power_w"),
        "duration_s": first.get("duration_s"),
        "sample_count": first.get("sample_count"),
        "measured_at": measured.isoformat() if measured is not None else None,
        "provenance": first.get("provenance"),
        "cache_age_s": first.get("cache_age_s"),
        "device_kind": first.get("device_kind"),
    }


class LlemDuckDBIOManager(dg.ConfigurableIOManager):
    """Stores llem asset outputs in the llem DuckDB tables, idempotently per (date, config) partition.

    Accepts ExperimentResult (experiment_results), RawProcessResult or a list of them
    (process_results), EnvironmentSnapshot (environment_snapshots), a baseline.json dict or None
    (baselines), and pyarrow.Table for any table (power_samples, requests in the run-folder format).
    Loads the same types back (pyarrow.Table without the partition columns for samples/requests).
    """

    duckdb: DuckDBResource = Field(description="dagster-duckdb resource naming the DuckDB file (database=...)")
    lock_timeout_s: float = Field(
        default=DEFAULT_LOCK_TIMEOUT_S, description="Total wait for the file lock per call, s (jittered backoff)"
    )
    date_dimension: str = Field(default="date", description="MultiPartitionsDefinition dimension holding run_date")
    config_dimension: str = Field(default="config", description="Dimension holding the config hash")

    def _store(self) -> ResultStore:
        return ResultStore(
            self.duckdb.database, lock_timeout_s=self.lock_timeout_s, connection_config=self.duckdb.connection_config
        )

    def _partition(self, context: dg.OutputContext | dg.InputContext) -> tuple[date, str]:
        if not context.has_asset_partitions:
            raise StorageError(
                f"asset {context.asset_key.to_user_string()} is not partitioned: llem tables are keyed by "
                f"({self.date_dimension} x {self.config_dimension}) multi-partitions"
            )
        return split_partition_key(context.asset_partition_key, self.date_dimension, self.config_dimension)

    def _rows(self, table: str, obj: Any, run_date: date, config_hash: str, run_id: str, study: str | None) -> pa.Table:
        if isinstance(obj, pa.Table):
            return obj
        if table == "experiment_results" and isinstance(obj, ExperimentResult):
            if obj.measurement_config_hash != config_hash:
                raise StorageError(
                    f"ExperimentResult.measurement_config_hash={obj.measurement_config_hash!r} differs from the "
                    f"partition's config {config_hash!r}"
                )
            return R.rows_to_table([R.experiment_result_row(obj, run_date, run_id, study)])
        if table == "process_results" and isinstance(obj, RawProcessResult):
            obj = [obj]
        if table == "process_results" and isinstance(obj, Sequence) and all(isinstance(p, RawProcessResult) for p in obj):
            return R.rows_to_table(R.process_result_rows(list(obj), run_date, config_hash, run_id))
        if table == "environment_snapshots" and isinstance(obj, EnvironmentSnapshot):
            return R.rows_to_table([R.environment_row(obj, run_date, config_hash, run_id)])
        if table == "baselines" and (obj is None or isinstance(obj, Mapping)):
            return R.rows_to_table(R.baseline_rows(obj, run_date, config_hash, run_id) if obj else [])
        raise StorageError(
            f"cannot store a {type(obj).__name__} in table {table!r}: expected "
            + {
                "experiment_results": "ExperimentResult",
                "process_results": "list[RawProcessResult]",
                "environment_snapshots": "EnvironmentSnapshot",
                "baselines": "a baseline.json dict (or None)",
            }.get(table, "pyarrow.Table")
            + " or pyarrow.Table"
        )

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Replace this partition's rows of the asset's table with ``obj`` (one transaction); add row metadata."""
        metadata = context.definition_metadata or {}
        table = table_for(context.asset_key.path[-1], metadata)
        run_date, config_hash = self._partition(context)
        run_id = R.check_run_id(context.run_id)
        study = metadata.get("study")
        study = str(getattr(study, "value", study)) if study is not None else None
        rows = self._rows(table, obj, run_date, config_hash, run_id, study)
        store = self._store()
        counts = store.write_tables(run_date, config_hash, run_id, {table: rows})
        context.add_output_metadata(
            {
                "dagster/partition_row_count": counts[table],
                "dagster/table_name": f"main.{table}",
                "table": table,
                "database": str(store.path),
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        """Return the upstream asset's rows of this partition (model, list of models, dict or pyarrow.Table)."""
        upstream = context.upstream_output
        if upstream is None or upstream.asset_key is None:
            raise StorageError("LlemDuckDBIOManager loads only asset inputs (no upstream asset given)")
        table = table_for(upstream.asset_key.path[-1], upstream.definition_metadata)
        run_date, config_hash = self._partition(context)
        store = self._store()
        if table == "experiment_results":
            return store.read_result(config_hash, run_date)
        rows = store.read_partition(table, run_date, config_hash)
        if table == "process_results":
            return [RawProcessResult.model_validate_json(j) for j in rows.column("process_json").to_pylist()]
        if table == "environment_snapshots":
            blobs = rows.column("snapshot_json").to_pylist()
            return EnvironmentSnapshot.model_validate_json(blobs[-1]) if blobs else None
        if table == "baselines":
            return _baseline_dict(rows)
        return rows.drop_columns(list(PARTITION_COLUMNS))
