"""Launch the nightly job for one partition through Dagster's GraphQL client against `dagster dev`."""

from __future__ import annotations

import time

import pytest
from dagster_graphql import DagsterGraphQLClient

from llem_pipeline.defs.experiments.partitions import measurement_key, measurement_partitions
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.e2e.conftest import study_hashes, today
from llem_pipeline_tests.e2e.dagster_server import LOCATION, DagsterDevServer

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def wait_for_run(client: DagsterGraphQLClient, run_id: str, timeout_s: float = 420) -> str:
    """Return the run's final status name (SUCCESS / FAILURE / CANCELED) or raise TimeoutError.

    Returns when the run ends (a demo run takes well under a minute); ``timeout_s`` only bounds a run that
    never ends, far above what a loaded machine adds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in {"SUCCESS", "FAILURE", "CANCELED"}:
            return status
        time.sleep(1)
    raise TimeoutError(f"run {run_id} still {status} after {timeout_s:.0f} s")


def test_graphql_client_launches_the_nightly_job(dagster_server: DagsterDevServer) -> None:
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_server.port)
    config_hash = study_hashes("nightly")[0]
    key = measurement_key(today(), config_hash)
    run_id = client.submit_job_execution(
        "nightly_benchmark_job",
        repository_location_name=LOCATION,
        repository_name="__repository__",
        tags={**measurement_partitions.get_tags_for_partition_key(key), "llem/test": "graphql"},
    )
    status = wait_for_run(client, run_id)
    assert status == "SUCCESS", dagster_server.log_tail()
    rows = ResultStore(dagster_server.data_dir / "llem.duckdb").query(
        "SELECT config_hash, CAST(run_date AS VARCHAR) AS d, study, is_simulated, avg_energy_per_token_j "
        "FROM experiment_results WHERE run_id = ?",
        [run_id],
    ).to_pylist()
    assert len(rows) == 1
    assert rows[0]["config_hash"] == config_hash and rows[0]["d"] == today()
    assert rows[0]["study"] == "nightly" and rows[0]["is_simulated"] is True
    assert rows[0]["avg_energy_per_token_j"] > 0
