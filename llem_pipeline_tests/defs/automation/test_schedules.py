"""nightly_benchmark requests one run per config of studies/nightly.yaml for the tick's day."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from llem_pipeline.definitions import defs
from llem_pipeline.defs.automation.schedules import nightly_benchmark
from llem_pipeline.defs.experiments.partitions import CONFIG_PARTITIONS_NAME, measurement_partitions
from llem_pipeline.paths import PROJECT_ROOT
from llem_pipeline.studies import load_study


def test_nightly_schedule_requests_each_config_for_the_day(instance: dg.DagsterInstance, llem_env: Path) -> None:
    hashes = load_study(PROJECT_ROOT / "studies" / "nightly.yaml").expand().config_hashes
    tick_time = datetime(2026, 11, 29, 1, 0, tzinfo=UTC)
    ctx = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick_time, repository_def=defs().get_repository_def()
    )
    requests = nightly_benchmark.evaluate_tick(ctx).run_requests
    assert len(requests) == len(hashes) == 2
    keys = [measurement_partitions.get_partition_key_from_str(r.partition_key) for r in requests]
    assert [k.keys_by_dimension["config"] for k in keys] == hashes
    assert {k.keys_by_dimension["date"] for k in keys} == {"2026-11-29"}
    assert len({r.run_key for r in requests}) == 2
    assert all(r.tags["llem/study"] == "nightly" for r in requests)
    # the partitions exist, so the run requests are launchable
    assert set(hashes) <= set(instance.get_dynamic_partitions(CONFIG_PARTITIONS_NAME))


def test_nightly_schedule_skips_without_a_nightly_study(
    instance: dg.DagsterInstance, llem_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "nightly.yaml").write_text("name: nightly\nbase: {model: m, backend: nope}\n", encoding="utf-8")
    monkeypatch.setenv("LLEM_STUDIES_DIR", str(folder))
    ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 11, 29, 1, tzinfo=UTC))
    data = nightly_benchmark.evaluate_tick(ctx)
    assert not data.run_requests
    assert "backend" in data.skip_message
