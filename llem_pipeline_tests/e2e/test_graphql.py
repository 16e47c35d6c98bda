"""Launch the nightly job for one partition through Dagster's GraphQL client against `dagster dev`."""

from __future__ import annotations

import time

import pytest
from dagster_graphql import DagsterGraphQLClient

from llem_pipeline.defs.experiments.partitions import MeasurementKey, measurement_partitions, partition_key
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.e2e.conftest import study_keys, today
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
    measurement = MeasurementKey.parse(study_keys("nightly")[0])
    config_hash = measurement.config_hash
    key = partition_key(today(), measurement)
    run_id = client.submit_job_execution(
        "nightly_benchmark_job",
        repository_location_name=LOCATION,
        repository_name="__repository__",
        tags={**measurement_partitions.get_tags_for_partition_key(key), "llem/test": "graphql"},
    )
    status = wait_for_run(client, run_id)
    assert status == "SUCCESS", dagster_server.log_tail()
    rows = ResultStore(dagster_server.data_dir / "llem.duckdb").query(
        "SELECT config_hash, CAST(run_date AS VARCHAR) AS d, study, is_simulated, j_per_token "
        "FROM experiment_results WHERE run_id = ?",
        [run_id],
    ).to_pylist()
    assert len(rows) == 1
    assert rows[0]["config_hash"] == config_hash and rows[0]["d"] == today()
    assert rows[0]["study"] == "nightly" and rows[0]["is_simulated"] is True  # the partition names the study
    assert rows[0]["j_per_token"] > 0


def test_a_job_launched_without_a_partition_fails_at_once_with_the_format(dagster_server: DagsterDevServer) -> None:
    client = DagsterGraphQLClient("127.0.0.1", port_number=dagster_server.port)
    run_id = client.submit_job_execution("nightly_benchmark_job", repository_location_name=LOCATION,
                                         repository_name="__repository__")
    assert wait_for_run(client, run_id) == "FAILURE"
    data = dagster_server.graphql(
        "query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { __typename "
        "... on ExecutionStepFailureEvent { stepKey error { message } } } } } }", {"id": run_id})
    failures = [e for e in data["logsForRun"]["events"] if e["__typename"] == "ExecutionStepFailureEvent"]
    assert failures and failures[0]["stepKey"] == "gpu_measurement"
    assert "this run has no partition" in failures[0]["error"]["message"]
