"""How many runs the launcher starts at once: the instance's GPU pool limit."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from llem_pipeline.defs.automation.launching import gpu_pool_limit


def test_gpu_pool_limit_follows_the_default_then_the_pools_own_limit(tmp_path: Path) -> None:
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 3}}}, temp_dir=str(tmp_path)) as inst:
        assert gpu_pool_limit(inst) == 3
        inst.event_log_storage.set_concurrency_slots("gpu", 2)  # dagster instance concurrency set gpu 2
        assert gpu_pool_limit(inst) == 2


def test_gpu_pool_limit_is_one_without_any_limit(tmp_path: Path) -> None:
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        assert gpu_pool_limit(inst) == 1
