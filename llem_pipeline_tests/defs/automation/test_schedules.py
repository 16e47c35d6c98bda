"""nightly_benchmark requests every run of studies/nightly.yaml for the tick's day (cycles, order, partitions)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from llem_pipeline.definitions import defs
from llem_pipeline.defs.automation.schedules import nightly_benchmark
from llem_pipeline.defs.experiments.partitions import MEASUREMENTS_PARTITIONS_NAME, split_partition_key
from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocator
from llem_pipeline.defs.settings import LlemPaths
from llem_pipeline.paths import PROJECT_ROOT
from llem_pipeline.studies import load_study


def _context(instance: dg.DagsterInstance, studies: Path, tick: datetime) -> dg.ScheduleEvaluationContext:
    return dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, repository_def=defs().get_repository_def(),
        resources={"llem_paths": LlemPaths(studies_dir=str(studies)), "gpu_allocator": GpuAllocator(devices="simulated")},
    )


def test_nightly_schedule_requests_each_run_for_the_day(instance: dg.DagsterInstance, llem_env: Path) -> None:
    plan = load_study(PROJECT_ROOT / "studies" / "nightly.yaml").expand()
    tick = _context(instance, PROJECT_ROOT / "studies", datetime(2026, 11, 29, 1, 0, tzinfo=UTC))
    requests = nightly_benchmark.evaluate_tick(tick).run_requests
    assert len(requests) == len(plan.schedule) == 2
    keys = [split_partition_key(r.partition_key) for r in requests]
    assert [k.config_hash for _, k in keys] == plan.config_hashes
    assert {day for day, _ in keys} == {"2026-11-29"}
    assert [k.target for _, k in keys] == ["sim", "sim"]
    assert len({r.run_key for r in requests}) == 2
    assert all(r.tags["llem/study"] == "nightly" and r.tags["llem/launch"] == "nightly-2026-11-29" for r in requests)
    # the partitions exist, so the run requests are launchable
    assert {k.key for _, k in keys} <= set(instance.get_dynamic_partitions(MEASUREMENTS_PARTITIONS_NAME))


def test_nightly_schedule_skips_without_a_valid_nightly_study(instance: dg.DagsterInstance, llem_env: Path,
                                                               tmp_path: Path) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "nightly.yaml").write_text("name: nightly\nbase: {model: m, backend: nope}\n", encoding="utf-8")
    data = nightly_benchmark.evaluate_tick(_context(instance, folder, datetime(2026, 11, 29, 1, tzinfo=UTC)))
    assert not data.run_requests
    assert "backend" in data.skip_message


@pytest.mark.parametrize("devices,target", [("simulated", "sim"), ("0", "gpu")])
def test_the_target_follows_the_devices(instance: dg.DagsterInstance, llem_env: Path, devices: str, target: str) -> None:
    ctx = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 11, 29, 1, tzinfo=UTC),
        repository_def=defs().get_repository_def(),
        resources={"llem_paths": LlemPaths(studies_dir=str(PROJECT_ROOT / "studies")),
                   "gpu_allocator": GpuAllocator(devices=devices)},
    )
    requests = nightly_benchmark.evaluate_tick(ctx).run_requests
    assert {split_partition_key(r.partition_key)[1].target for r in requests} == {target}
