"""LlemDuckDBIOManager: the Dagster I/O manager of the llem result assets, on dagster-duckdb's DuckDBResource.

What it stores, per measurement run, in ONE transaction (ResultStore.write_runs):

- ``experiment_results`` — its value is the run's ``RunRecord``: the ExperimentResult with its processes,
  environment and baseline, and the run's power samples and requests. All six tables of the run commit
  together, so a crash leaves the run's rows entirely or not at all.
- ``power_timeseries`` and ``request_latencies`` — their values are the run's power samples and requests
  (pyarrow Tables), the same rows that committed with the record; handling them confirms that and records
  their row counts (a value that did not commit with its record fails the step). Their output metadata
  ``measurement_run_id`` names the record's run when it is not the current one (results stored again).

Loading: a partitioned downstream asset gets the ExperimentResult of the partition's latest run; an
unpartitioned one declares which view it reads, ``dg.AssetIn("experiment_results", metadata={"view":
"efficiency"})``, and gets that view's rows as a pyarrow Table. Reads open the file read-only, so loading
inputs never blocks a writer.

The DuckDBResource gives the file (``database``) and the connection options; writes go through ResultStore
(its writer lock, transaction, verification and write journal) rather than
``DuckDBResource.get_connection()``, which opens read-write for reads too and runs no transaction.
"""

from __future__ import annotations

from typing import Any, ClassVar

import dagster as dg
import pyarrow as pa
from dagster_duckdb import DuckDBResource
from pydantic import Field

from llem_pipeline.storage.errors import StorageError
from llem_pipeline.storage.locking import DEFAULT_LOCK_TIMEOUT_S
from llem_pipeline.storage.records import RunRecord
from llem_pipeline.storage.schema import VIEWS
from llem_pipeline.storage.store import ResultStore

RESULTS, POWER, LATENCIES = "experiment_results", "power_timeseries", "request_latencies"
# The table each output's value lands in, beside the record's own tables.
_SIDE_TABLES = {POWER: "power_samples", LATENCIES: "requests"}


class LlemDuckDBIOManager(dg.ConfigurableIOManager):
    """Stores a measurement run's outputs in the llem DuckDB file in one transaction; loads results and views."""

    duckdb: DuckDBResource = Field(description="dagster-duckdb resource naming the DuckDB file (database=...)")
    lock_timeout_s: int = Field(
        default=int(DEFAULT_LOCK_TIMEOUT_S), ge=0, description="Longest wait for the file's writer lock per call, s"
    )
    # Rows committed per run in this process: {(run_id, table): rows}. The side outputs of a run are handled
    # right after its record, by the same step process.
    _committed: ClassVar[dict[tuple[str, str], int]] = {}

    def store(self) -> ResultStore:
        """Return the ResultStore of the configured file."""
        return ResultStore(self.duckdb.database or None, lock_timeout_s=self.lock_timeout_s,
                           connection_config=self.duckdb.connection_config)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Write a RunRecord (experiment_results) in one transaction, or confirm a side table of a written run."""
        name = context.asset_key.path[-1]
        if name == RESULTS:
            if not isinstance(obj, RunRecord):
                raise StorageError(f"{RESULTS} must be a RunRecord, got {type(obj).__name__}")
            counts = self.store().write_runs([obj])
            for table, rows in counts.items():
                self._committed[(obj.run_id, table)] = rows
            context.add_output_metadata({
                "dagster/partition_row_count": counts.get("experiment_results", 0),
                "dagster/table_name": "main.experiment_results",
                "rows_written": dg.MetadataValue.json(counts),
                "database": dg.MetadataValue.path(str(self.store().path)),
            })
            return
        table = _SIDE_TABLES.get(name)
        if table is None:
            raise StorageError(
                f"asset {context.asset_key.to_user_string()} is not stored by LlemDuckDBIOManager "
                f"(it stores {RESULTS}, {POWER} and {LATENCIES})"
            )
        if not isinstance(obj, pa.Table):
            raise StorageError(f"{name} must be a pyarrow.Table, got {type(obj).__name__}")
        # the run whose record holds these rows: the measuring run (output metadata), which is not this run when
        # results are stored again from an earlier measurement
        marked = (context.output_metadata or {}).get("measurement_run_id")
        run_id = str(getattr(marked, "value", marked)) if marked is not None else context.run_id
        committed = self._committed.get((run_id, table))
        if committed is None:
            committed = self.store().read_run(table, run_id).num_rows
        if committed != obj.num_rows:
            raise StorageError(
                f"{name} of run {run_id} has {obj.num_rows} row(s) but {committed} committed to {table} with "
                f"the run's {RESULTS}: the outputs of one run must come from one RunRecord"
            )
        context.add_output_metadata({
            "dagster/partition_row_count": committed,
            "dagster/table_name": f"main.{table}",
        })

    def load_input(self, context: dg.InputContext) -> Any:
        """Return the partition's latest ExperimentResult, or (``metadata={'view': ...}``) a view as a pyarrow Table."""
        view = (context.definition_metadata or {}).get("view")
        if view is not None:
            if view not in VIEWS:
                raise StorageError(f"AssetIn metadata view={view!r} is not one of the llem views {list(VIEWS)}")
            store = self.store()
            if not store.path.is_file():
                return pa.table({})
            return store.query(f"SELECT * FROM {view}")
        upstream = context.upstream_output
        if upstream is None or upstream.asset_key.path[-1] != RESULTS or not context.has_asset_partitions:
            raise StorageError(
                "LlemDuckDBIOManager loads experiment_results of one partition (a partitioned downstream asset) "
                "or a view (dg.AssetIn(metadata={'view': 'efficiency'}))"
            )
        dims = getattr(context.asset_partition_key, "keys_by_dimension", None) or {}
        if "date" not in dims or "measurement" not in dims:
            raise StorageError(
                f"partition {str(context.asset_partition_key)!r} is not a (date × measurement) partition of the llem assets"
            )
        return self.store().measurement_result(dims["measurement"], dims["date"])
