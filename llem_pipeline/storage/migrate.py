"""Python steps of migrations: the parts of a back-fill SQL cannot compute (schema.py PYTHON_STEPS runs them).

Each step runs in the migrating transaction, right after its migration's .sql file.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import duckdb
import pyarrow as pa

from llem_pipeline.domain.identity import hardware_id
from llem_pipeline.storage import stats
from llem_pipeline.storage.records import workload_hash_of

# The tables whose rows carry a run's hardware_id (the measurement tables and the store's manifest).
_RUN_TABLES = ("experiment_results", "process_results", "environment_snapshots", "baselines", "power_samples",
               "requests", "partition_manifest")

# Where a stored run names its devices, best source first: its result row, its process rows (in process
# order), its environment snapshot, its baseline rows (device kind only).
_RUN_DEVICES_SQL = """
WITH sources AS (
    SELECT run_date, config_hash, run_id, device_kind, gpu_names, 1 AS rank FROM experiment_results
    UNION ALL
    SELECT run_date, config_hash, run_id, arg_min(device_kind, process_index),
           flatten(list(coalesce(gpu_names, []::VARCHAR[]) ORDER BY process_index)), 2
    FROM process_results GROUP BY ALL
    UNION ALL
    SELECT run_date, config_hash, run_id, device_kind, gpu_names, 3 FROM environment_snapshots
    UNION ALL
    SELECT run_date, config_hash, run_id, min(device_kind), []::VARCHAR[], 4 FROM baselines GROUP BY ALL
)
SELECT run_date, config_hash, run_id, device_kind, coalesce(gpu_names, []::VARCHAR[]) AS gpu_names FROM sources
QUALIFY row_number() OVER (PARTITION BY run_date, config_hash, run_id ORDER BY rank) = 1
"""


def backfill_run_identity(con: duckdb.DuckDBPyConnection) -> None:
    """Migration 6: give stored runs their hardware_id and workload_hash and build config_day_stats; return None.

    hardware_id = ``llem_pipeline.domain.identity.hardware_id(device_kind, gpu_names)`` of each run
    (before migration 6 a run was the one run of its (run_date, config_hash)); runs that name no
    device keep 'unknown:no-gpu:x0'. workload_hash = ``compute_workload_hash`` of the effective_config
    in result_json (a config that no longer validates keeps its config_hash: a workload of its own).
    """
    runs = con.sql(_RUN_DEVICES_SQL).to_arrow_table()
    kinds = runs.column("device_kind").to_pylist()
    names = runs.column("gpu_names").to_pylist()
    ids = [hardware_id(k, n or []) for k, n in zip(kinds, names, strict=True)]
    con.register("_llem_run_hardware", runs.select(["run_date", "config_hash", "run_id"]).append_column(
        "hardware_id", pa.array(ids, pa.string())))
    for name in _RUN_TABLES:
        con.execute(
            f"UPDATE {name} AS t SET hardware_id = m.hardware_id FROM _llem_run_hardware AS m "
            "WHERE t.run_date = m.run_date AND t.config_hash = m.config_hash AND t.run_id = m.run_id"
        )
    con.unregister("_llem_run_hardware")

    configs = con.execute(
        "SELECT config_hash, any_value(json_extract(result_json, '$.effective_config'))::VARCHAR AS ec "
        "FROM experiment_results GROUP BY config_hash"
    ).fetchall()
    hashes, workloads = [], []
    for config_hash, text in configs:
        try:
            effective = json.loads(text) if text else {}
        except ValueError:
            effective = {}
        hashes.append(config_hash)
        workloads.append(workload_hash_of(effective if isinstance(effective, dict) else {}) or config_hash)
    if hashes:
        con.register("_llem_workloads", pa.table({"config_hash": hashes, "workload_hash": workloads}))
        con.execute("UPDATE experiment_results AS r SET workload_hash = w.workload_hash FROM _llem_workloads AS w "
                    "WHERE r.config_hash = w.config_hash")
        con.unregister("_llem_workloads")

    groups = con.sql("SELECT DISTINCT config_hash, hardware_id, run_date FROM experiment_results").to_arrow_table()
    stats.refresh(con, groups)


PYTHON_STEPS: dict[str, Callable[[duckdb.DuckDBPyConnection], None]] = {
    "backfill_run_identity": backfill_run_identity,
}
