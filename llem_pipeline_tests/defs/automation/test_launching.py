"""How many runs the launcher starts at once: the instance's GPU pool limit."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import dagster as dg

from llem_pipeline.defs.automation.launching import _await_turn, gpu_pool_limit


def test_gpu_pool_limit_follows_the_default_then_the_pools_own_limit(tmp_path: Path) -> None:
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 3}}}, temp_dir=str(tmp_path)) as inst:
        assert gpu_pool_limit(inst) == 3
        inst.event_log_storage.set_concurrency_slots("gpu", 2)  # dagster instance concurrency set gpu 2
        assert gpu_pool_limit(inst) == 2


def test_gpu_pool_limit_is_one_without_any_limit(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        assert gpu_pool_limit(inst) == 1


def test_a_prepared_run_starts_on_its_own_turn_only(tmp_path: Path) -> None:
    # two prepared runs can wait at once (one still being created when the other's turn is given): each
    # waits for its own turn file, so neither can take the other's turn
    mine, other = tmp_path / "mine", tmp_path / "other"
    other.touch()
    waiter = threading.Thread(target=lambda: results.append(_await_turn(mine, os.getppid(), poll_s=0.005)))
    results: list[bool] = []
    waiter.start()
    waiter.join(timeout=0.3)
    assert waiter.is_alive() and results == []  # the other run's turn did not start this one
    mine.touch()
    waiter.join(timeout=10)
    assert results == [True]


def test_a_prepared_run_gives_up_when_the_launcher_is_gone(tmp_path: Path) -> None:
    # the runner's parent is no longer the launcher that started it (it was re-parented): no turn will come
    assert _await_turn(tmp_path / "never", launcher_pid=-1, poll_s=0.005, check_s=0.01) is False
