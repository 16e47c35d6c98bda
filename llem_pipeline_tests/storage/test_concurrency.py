"""Several writer processes at once: every partition lands exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date, timedelta
from pathlib import Path

import pytest

from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.storage.run_folder_factory import make_config, write_run_folder

# CI size; issue 7 asks 8 writers x 50 partitions: LLEM_WRITERS=8 LLEM_PARTITIONS=50.
WRITERS = int(os.environ.get("LLEM_WRITERS", "4"))
PARTITIONS = int(os.environ.get("LLEM_PARTITIONS", "10"))
SHARED_DAY = "2026-12-31"


@pytest.mark.slow
def test_four_writers_times_ten_partitions(store: ResultStore, data_dir: Path) -> None:
    store.ensure_schema()
    jobs: list[list[tuple[str, str, str, str]]] = []
    shared = make_config(model="shared")
    shared_hash = compute_measurement_config_hash(shared)
    for w in range(WRITERS):
        config = make_config(batch_size=w + 1)
        h = compute_measurement_config_hash(config)
        job = []
        for p in range(PARTITIONS):
            day = (date(2026, 1, 1) + timedelta(days=p)).isoformat()
            folder = write_run_folder(data_dir, config=config, run_date=day, run_id=f"w{w}", n_samples=50 + p, seed=p)
            job.append((str(folder), day, h, f"w{w}"))
        # Every writer also writes the same shared partition under its own run id.
        folder = write_run_folder(data_dir, config=shared, run_date=SHARED_DAY, run_id=f"shared-w{w}", n_samples=30)
        job.insert(PARTITIONS // 2, (str(folder), SHARED_DAY, shared_hash, f"shared-w{w}"))
        jobs.append(job)
    code = textwrap.dedent(
        """
        import json, sys
        from llem_pipeline.storage import ResultStore
        db, data_dir, job = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        store = ResultStore(db, data_dir=data_dir, lock_timeout_s=120)
        for folder, day, h, run_id in job:
            store.write_run_folder(folder, run_date=day, config_hash=h, run_id=run_id)
        print("done", len(job))
        """
    )
    import json

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(store.path), str(data_dir), json.dumps(job)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for job in jobs
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert out.strip() == f"done {PARTITIONS + 1}"

    expected_results = WRITERS * PARTITIONS + 1
    counts = store.row_counts()
    assert counts["experiment_results"] == expected_results
    assert counts["process_results"] == expected_results
    assert counts["environment_snapshots"] == expected_results
    assert counts["baselines"] == expected_results
    assert counts["requests"] == expected_results * 8
    assert counts["power_samples"] == WRITERS * sum(50 + p for p in range(PARTITIONS)) + 30
    dupes = store.query(
        "SELECT run_date, config_hash, count(*) AS n FROM experiment_results GROUP BY ALL HAVING n > 1"
    )
    assert dupes.num_rows == 0
    # The shared partition holds exactly one writer's run in every table.
    for table in ("experiment_results", "power_samples", "requests", "baselines", "process_results"):
        ids = store.query(
            f"SELECT DISTINCT run_id FROM {table} WHERE run_date = ? AND config_hash = ?", [SHARED_DAY, shared_hash]
        ).column("run_id").to_pylist()
        assert len(ids) == 1, (table, ids)
    winner = store.query(
        "SELECT run_id FROM experiment_results WHERE config_hash = ?", [shared_hash]
    ).column("run_id").to_pylist()
    assert store.query(
        "SELECT count(*) AS n FROM power_samples WHERE run_id = ?", winner
    ).column("n").to_pylist() == [30]
