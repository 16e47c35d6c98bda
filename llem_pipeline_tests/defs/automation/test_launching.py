"""How many runs the launcher starts at once: the instance's GPU pool limit."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

import llem_pipeline.defs.automation.launching as launching
from llem_pipeline.defs.automation.launching import _await_turn, gpu_pool_limit


def test_gpu_pool_limit_follows_the_default_then_the_pools_own_limit(tmp_path: Path) -> None:
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 3}}}, temp_dir=str(tmp_path)) as inst:
        assert gpu_pool_limit(inst) == 3
        inst.event_log_storage.set_concurrency_slots("gpu", 2)  # dagster instance concurrency set gpu 2
        assert gpu_pool_limit(inst) == 2


def test_gpu_pool_limit_is_one_without_any_limit(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        assert gpu_pool_limit(inst) == 1


class FakeTime:
    """Stands in for launching's ``time``: ``monotonic()`` only moves when ``sleep`` is called; each sleep
    runs ``on_sleep(n)`` (n = sleeps so far), so a test acts at an exact poll instead of after some wall time."""

    def __init__(self, on_sleep=lambda n: None) -> None:
        self.now, self.sleeps, self.on_sleep = 0.0, 0, on_sleep

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        self.on_sleep(self.sleeps)


def test_a_prepared_run_starts_on_its_own_turn_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # two prepared runs can wait at once (one still being created when the other's turn is given): each
    # waits for its own turn file, so neither can take the other's turn
    mine, other = tmp_path / "mine", tmp_path / "other"
    other.touch()
    fake = FakeTime(on_sleep=lambda n: mine.touch() if n == 50 else None)  # this run's turn comes at poll 50
    monkeypatch.setattr(launching, "time", fake)
    assert _await_turn(mine, os.getppid(), poll_s=0.005) is True
    assert fake.sleeps == 50  # 50 polls saw only the other run's turn file and kept waiting


def test_a_prepared_run_gives_up_when_the_launcher_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the runner's parent is no longer the launcher that started it (it was re-parented): no turn will come
    fake = FakeTime()
    monkeypatch.setattr(launching, "time", fake)
    assert _await_turn(tmp_path / "never", launcher_pid=-1, poll_s=0.005, check_s=0.01) is False
    assert fake.sleeps == 2  # the parent is checked once check_s has passed (on the fake clock)
