"""One `dagster dev` server per test session (127.0.0.1, temp DAGSTER_HOME and data dir) for the
GraphQL and browser tests; the study_registry sensor registers the config partitions."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pytest

from llem_pipeline.defs.experiments.partitions import CONFIG_PARTITIONS_NAME
from llem_pipeline.paths import PROJECT_ROOT
from llem_pipeline.studies import load_study
from llem_pipeline_tests.e2e.dagster_server import DagsterDevServer


def today() -> str:
    """Return today's UTC date (the latest date partition)."""
    return datetime.now(UTC).date().isoformat()


def study_hashes(name: str) -> list[str]:
    """Return the config hashes of studies/<name>.yaml."""
    return load_study(PROJECT_ROOT / "studies" / f"{name}.yaml").expand().config_hashes


@pytest.fixture(scope="session")
def dagster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDevServer]:
    root = tmp_path_factory.mktemp("e2e")
    server = DagsterDevServer(home=root / "dagster_home", data_dir=root / "data")
    server.start()
    try:
        wanted = set(study_hashes("demo")) | set(study_hashes("nightly"))
        # the sensor ticks every 30 s once the daemon runs: registration comes within a minute; the bound only
        # turns a sensor that never registers into an error (a loaded machine slows the daemon's start)
        deadline = time.monotonic() + 300
        instance = dg.DagsterInstance.from_config(str(server.home))
        while not wanted <= set(instance.get_dynamic_partitions(CONFIG_PARTITIONS_NAME)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"study_registry did not register {sorted(wanted)}:\n{server.log_tail()}")
            time.sleep(1)
        yield server
    finally:
        server.stop()
