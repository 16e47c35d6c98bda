"""Several writer processes at once: every run lands exactly once, none replaces another."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date, timedelta

import pytest

from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.storage.record_factory import make_config, make_record

# CI size; the stress size is 8 writers x 50 runs: LLEM_WRITERS=8 LLEM_PARTITIONS=50.
WRITERS = int(os.environ.get("LLEM_WRITERS", "4"))
PARTITIONS = int(os.environ.get("LLEM_PARTITIONS", "10"))
SHARED_DAY = "2026-12-31"


@pytest.mark.slow
def test_four_writers_times_ten_runs(store: ResultStore) -> None:
    store.ensure_schema()
    jobs: list[list[tuple[int, str, str, int]]] = []  # (batch size, run_date, run_id, samples)
    for w in range(WRITERS):
        job = [(w + 1, (date(2026, 1, 1) + timedelta(days=p)).isoformat(), f"w{w}-d{p}", 50 + p) for p in range(PARTITIONS)]
        # Every writer also writes a run of the same shared config and day under its own run id.
        job.insert(PARTITIONS // 2, (0, SHARED_DAY, f"shared-w{w}", 30))
        jobs.append(job)
    code = textwrap.dedent(
        """
        import json, sys
        from llem_pipeline.storage import ResultStore
        from llem_pipeline_tests.storage.record_factory import make_config, make_record
        db, job = sys.argv[1], json.loads(sys.argv[2])
        store = ResultStore(db, lock_timeout_s=120)
        for batch_size, day, run_id, n in job:
            config = make_config(model="shared") if batch_size == 0 else make_config(batch_size=batch_size)
            store.write_run(make_record(config, run_date=day, run_id=run_id, n_samples=n, seed=n))
        print("done", len(job))
        """
    )
    import json

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(store.path), json.dumps(job)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for job in jobs
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert out.strip() == f"done {PARTITIONS + 1}"

    expected_results = WRITERS * (PARTITIONS + 1)
    counts = store.row_counts()
    assert counts["experiment_results"] == expected_results
    assert counts["process_results"] == expected_results
    assert counts["environment_snapshots"] == expected_results
    assert counts["baselines"] == expected_results
    assert counts["requests"] == expected_results * 8
    assert counts["power_samples"] == WRITERS * (sum(50 + p for p in range(PARTITIONS)) + 30)
    dupes = store.query(
        "SELECT config_hash, hardware_id, run_id, count(*) AS n FROM experiment_results GROUP BY ALL HAVING n > 1"
    )
    assert dupes.num_rows == 0
    # The shared config and day holds every writer's run, each whole, in every table.
    shared_hash = compute_measurement_config_hash(make_config(model="shared"))
    for table in ("experiment_results", "power_samples", "requests", "baselines", "process_results"):
        ids = store.query(
            f"SELECT DISTINCT run_id FROM {table} WHERE run_date = ? AND config_hash = ? ORDER BY 1", [SHARED_DAY, shared_hash]
        ).column("run_id").to_pylist()
        assert ids == sorted(f"shared-w{w}" for w in range(WRITERS)), (table, ids)
    assert store.query(
        "SELECT DISTINCT count(*) AS n FROM power_samples WHERE config_hash = ? GROUP BY run_id", [shared_hash]
    ).column("n").to_pylist() == [30]
    assert store.query("SELECT n_runs FROM config_stats WHERE config_hash = ?", [shared_hash]).column(0).to_pylist() == [
        WRITERS]
    assert store.audit() == []


def test_threads_of_one_process_write_concurrently(store: ResultStore) -> None:
    # Dagster's in-process executor: one DuckDB instance shared by threads; conflicts are retried.
    from concurrent.futures import ThreadPoolExecutor

    store.ensure_schema()
    records = [make_record(make_config(batch_size=1 + i % 5), run_id=f"t{i % 10}", n_samples=200, n_requests=5)
               for i in range(20)]

    def write(i: int) -> dict[str, int]:
        return ResultStore(store.path, lock_timeout_s=60).write_run(records[i])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(write, range(20)))
    assert all(r["power_samples"] == 200 and r["requests"] == 5 for r in results)
    # 10 runs (5 configs x 2 run ids), each written twice: each run's rows once.
    assert store.row_counts()["power_samples"] == 10 * 200
    per_config = store.query(
        "SELECT config_hash, count(DISTINCT run_id) AS runs, count(*) AS n FROM requests GROUP BY ALL"
    ).to_pylist()
    assert sorted((r["runs"], r["n"]) for r in per_config) == [(2, 10)] * 5


def test_in_process_reader_with_other_settings_delays_the_write(store: ResultStore) -> None:
    import threading

    import duckdb

    store.ensure_schema()
    reader = duckdb.connect(str(store.path), read_only=True)
    released = threading.Event()

    def release() -> None:
        released.set()
        reader.close()

    timer = threading.Timer(0.5, release)
    timer.start()
    counts = store.write_run(make_record(n_samples=10))
    landed_after_release = released.is_set()  # read before join(): the write returned only once the reader left
    timer.join()
    assert landed_after_release and counts["power_samples"] == 10
