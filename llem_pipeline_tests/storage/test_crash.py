"""SIGKILL in the middle of writes: the database reopens with every run whole (old or new rows), never half."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llem_pipeline.storage import ResultStore
from llem_pipeline_tests.storage.record_factory import make_config, make_record
from llem_pipeline_tests.storage.rewriting_writer import SIZES, WRITER

KILLS = int(os.environ.get("LLEM_CRASH_KILLS", "3"))  # a longer soak: LLEM_CRASH_KILLS=20

DAY = "2026-11-01"


def runs_are_whole(store: ResultStore) -> set[str]:
    """Assert every stored run holds exactly its own rows in every table; return the run ids stored."""
    counts = {
        t: {r["run_id"]: r["n"] for r in store.query(f"SELECT run_id, count(*) AS n FROM {t} GROUP BY ALL").to_pylist()}
        for t in ("experiment_results", "power_samples", "requests")
    }
    runs = set(counts["experiment_results"])
    assert set(counts["power_samples"]) == set(counts["requests"]) == runs, counts
    for run in runs:
        assert counts["experiment_results"][run] == 1, (run, counts)
        assert (counts["power_samples"][run], counts["requests"][run]) == SIZES[run], (run, counts)
    assert "old" in runs
    return runs


@pytest.mark.slow
def test_sigkill_during_writes_leaves_every_run_whole(store: ResultStore) -> None:
    store.write_run(make_record(make_config(model="crash"), run_date=DAY, run_id="old", n_samples=1000, n_requests=4))
    rng = random.Random(0)
    seen: set[str] = set()
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store.path), DAY], stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        seen |= runs_are_whole(store)
    assert seen <= set(SIZES)
