"""LlemDuckDBIOManager: Dagster outputs <-> llem tables, one transaction per run, jittered lock retries.

Built on dagster-duckdb's ``DuckDBResource``: the I/O manager takes one (``duckdb=DuckDBResource(
database=...)``) and uses its ``database`` and ``connection_config``. It does not call
``DuckDBResource.get_connection()`` because that retries with fixed, un-jittered delays, always opens
read-write (so every ``load_input`` would block writers) and runs no transaction (dagster-duckdb's own
I/O manager deletes and inserts in autocommit, so a crash between the two loses the slice). Instead
writes go through ``ResultStore.write_run`` (one transaction for every table of the run, retried with
jitter) and reads through a read-only connection.

An output is a RunRecord (records.py): everything one measurement run stores. Its table: the asset
key's last element, mapped through ``ASSET_TABLES`` (e.g. ``power_timeseries`` -> ``power_samples``),
or ``metadata={"llem_table": ...}`` on the asset; the table decides what ``load_input`` returns. The
partition (MultiPartitionKey dimensions ``date`` and ``config``) must match the record's run_date and
config_hash. Loading returns the latest stored run of the partition (by end time).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

import dagster as dg
import pyarrow as pa
from dagster_duckdb import DuckDBResource
from pydantic import Field

from llem_pipeline.domain import EnvironmentSnapshot, RawProcessResult
from llem_pipeline.storage import rows as R
from llem_pipeline.storage.errors import StorageError
from llem_pipeline.storage.locking import DEFAULT_LOCK_TIMEOUT_S
from llem_pipeline.storage.records import RunRecord
from llem_pipeline.storage.schema import PARTITIONED_TABLES, RUN_KEY_COLUMNS, checked_table
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
    """Stores llem asset outputs (RunRecord: one measurement run, every table) in the llem DuckDB file.

    Loads back, for the partition's latest run: an ExperimentResult (experiment_results), a list of
    RawProcessResult (process_results), an EnvironmentSnapshot (environment_snapshots), a baseline.json
    dict or None (baselines), or a pyarrow.Table without the key columns (power_samples, requests).
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

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Write the run ``obj`` (a RunRecord) in one transaction (replacing that run only); add row metadata."""
        metadata = context.definition_metadata or {}
        table = table_for(context.asset_key.path[-1], metadata)
        run_date, config_hash = self._partition(context)
        if not isinstance(obj, RunRecord):
            raise StorageError(
                f"cannot store a {type(obj).__name__} from asset {context.asset_key.to_user_string()}: "
                "return a RunRecord (llem_pipeline.storage.RunRecord.build(result, ...)), one measurement run"
            )
        if (obj.run_date, obj.config_hash) != (run_date, config_hash):
            raise StorageError(
                f"RunRecord (run_date={obj.run_date}, config_hash={obj.config_hash}) differs from the partition "
                f"({run_date}, {config_hash}): return the record of this partition's run"
            )
        store = self._store()
        counts = store.write_run(obj)
        context.add_output_metadata(
            {
                "dagster/partition_row_count": counts[table],
                "dagster/table_name": f"main.{table}",
                "table": table,
                "database": str(store.path),
                "hardware_id": obj.hardware_id,
                "run_id": obj.run_id,
            }
        )

    def load_input(self, context: dg.InputContext) -> Any:
        """Return the upstream asset's rows of the partition's latest run (model, list of models, dict or pyarrow.Table)."""
        upstream = context.upstream_output
        if upstream is None or upstream.asset_key is None:
            raise StorageError("LlemDuckDBIOManager loads only asset inputs (no upstream asset given)")
        table = table_for(upstream.asset_key.path[-1], upstream.definition_metadata)
        run_date, config_hash = self._partition(context)
        store = self._store()
        latest = store.query(
            "SELECT hardware_id, run_id FROM experiment_results WHERE run_date = ? AND config_hash = ? "
            "ORDER BY end_time DESC, run_id DESC LIMIT 1", [run_date, config_hash]).to_pylist()
        if not latest:
            raise StorageError(f"no run of partition ({run_date}, {config_hash}) is stored in {store.path}")
        run = {"run_id": latest[0]["run_id"], "config_hash": config_hash, "hardware_id": latest[0]["hardware_id"]}
        if table == "experiment_results":
            return store.read_result(**run)
        rows = store.read_run(table, **run)
        if table == "process_results":
            return [RawProcessResult.model_validate_json(j) for j in rows.column("process_json").to_pylist()]
        if table == "environment_snapshots":
            blobs = rows.column("snapshot_json").to_pylist()
            return EnvironmentSnapshot.model_validate_json(blobs[-1]) if blobs else None
        if table == "baselines":
            return _baseline_dict(rows)
        return rows.drop_columns(list(RUN_KEY_COLUMNS))
