"""How many runs the launcher starts at once: the instance's GPU pool limit."""

from __future__ import annotations

import os
import queue
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


def test_a_prepared_run_waits_for_its_own_turn_and_drops_stale_ones() -> None:
    turns: queue.Queue[str] = queue.Queue()
    for token in ("failed-before-its-turn", "mine"):
        turns.put(token)
    assert _await_turn(turns, "mine", os.getppid(), check_s=0.01) is True
    assert turns.empty()


def test_a_prepared_run_gives_up_when_the_launcher_is_gone() -> None:
    # the runner's parent is no longer the launcher that started it (it was re-parented): no turn will come
    assert _await_turn(queue.Queue(), "mine", launcher_pid=-1, check_s=0.01) is False
