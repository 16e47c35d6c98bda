"""study_registry registers each unique config hash as a partition and upserts experiment_configs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from llem_pipeline.defs.automation.study_runs import measurement_keys
from llem_pipeline.defs.experiments.partitions import MEASUREMENTS_PARTITIONS_NAME as CONFIG_PARTITIONS_NAME
from llem_pipeline.defs.experiments.sensors import study_registry
from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocator
from llem_pipeline.defs.settings import LlemPaths, LlemStore
from llem_pipeline.paths import PROJECT_ROOT
from llem_pipeline.storage import ResultStore
from llem_pipeline.studies import load_study


@pytest.fixture
def studies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llem_env: Path) -> Path:
    folder = tmp_path / "studies"
    folder.mkdir()
    for name in ("demo.yaml", "nightly.yaml"):
        shutil.copy(PROJECT_ROOT / "studies" / name, folder / name)
    (folder / "broken.yaml").write_text("name: broken\nbase: {model: x, n: -3}\n", encoding="utf-8")
    monkeypatch.setenv("LLEM_STUDIES_DIR", str(folder))
    return folder


def _tick(instance: dg.DagsterInstance, cursor: str | None = None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "llem_store": LlemStore(duckdb=DuckDBResource(database=os.environ["LLEM_DUCKDB"])),
        "llem_paths": LlemPaths(data_dir=os.environ["LLEM_DATA_DIR"], studies_dir=os.environ["LLEM_STUDIES_DIR"]),
        "gpu_allocator": GpuAllocator(devices="simulated"),
    }) as ctx:
        return study_registry.evaluate_tick(ctx)


def test_sensor_registers_partitions_and_configs(instance: dg.DagsterInstance, studies: Path, llem_env: Path) -> None:
    demo = load_study(studies / "demo.yaml").expand()
    nightly = load_study(studies / "nightly.yaml").expand()
    tick = _tick(instance)
    [request] = tick.dynamic_partitions_requests
    assert request.partitions_def_name == CONFIG_PARTITIONS_NAME
    assert set(request.partition_keys) == set(measurement_keys(demo, "sim")) | set(measurement_keys(nightly, "sim"))
    assert all(k.endswith(h) for k, h in zip(measurement_keys(demo, "sim"), demo.config_hashes, strict=True))
    assert "broken.yaml" in tick.skip_message and "n" in tick.skip_message
    rows = ResultStore(llem_env / "llem.duckdb").query(
        "SELECT study, config_hash FROM experiment_configs ORDER BY study, config_hash"
    ).to_pylist()
    assert {(r["study"], r["config_hash"]) for r in rows} == (
        {("demo", h) for h in demo.config_hashes} | {("nightly", h) for h in nightly.config_hashes}
    )
    assert (llem_env / "configs" / f"{demo.config_hashes[0]}.json").is_file()


def test_sensor_skips_when_nothing_changed(instance: dg.DagsterInstance, studies: Path) -> None:
    first = _tick(instance)
    instance.add_dynamic_partitions(CONFIG_PARTITIONS_NAME, list(first.dynamic_partitions_requests[0].partition_keys))
    second = _tick(instance, cursor=first.cursor)
    assert not second.dynamic_partitions_requests
    assert "unchanged" in second.skip_message
    assert "broken.yaml" in second.skip_message


def test_sensor_registers_a_new_study_point(instance: dg.DagsterInstance, studies: Path) -> None:
    first = _tick(instance)
    instance.add_dynamic_partitions(CONFIG_PARTITIONS_NAME, list(first.dynamic_partitions_requests[0].partition_keys))
    text = (studies / "demo.yaml").read_text(encoding="utf-8").replace("[1, 4, 8]", "[1, 4, 8, 16]")
    (studies / "demo.yaml").write_text(text, encoding="utf-8")
    new_keys = set(measurement_keys(load_study(studies / "demo.yaml").expand(), "sim"))
    second = _tick(instance, cursor=first.cursor)
    [request] = second.dynamic_partitions_requests
    assert request.partition_keys == ["demo~batch_size=16~sim~" + request.partition_keys[0].rsplit("~", 1)[1]]
    assert request.partition_keys[0] in new_keys


def test_hostile_study_files_are_reported_and_the_good_ones_registered(
        instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llem_env: Path, capsys) -> None:
    from llem_pipeline_tests.test_study_files import hostile_folder

    folder = hostile_folder(tmp_path)
    monkeypatch.setenv("LLEM_STUDIES_DIR", str(folder))
    demo = load_study(folder / "demo.yaml").expand()
    tick = _tick(instance)
    [request] = tick.dynamic_partitions_requests
    assert set(measurement_keys(demo, "sim")) <= set(request.partition_keys)
    for name in ("bomb.yaml", "million.yaml", "huge.yaml", "latin1.yaml", "recursive.yaml", "inf.yaml", "fifo.yaml"):
        assert name in tick.skip_message, name
    assert "1 sweep point(s) skipped" in tick.skip_message
    err = capsys.readouterr().err
    assert "skipping.yaml: skipped sweep point {'pytorch.batch_size': 0}: pytorch.batch_size = 0" in err
    assert "invalid study file huge.yaml (skipped)" in err and "over the limit of 1,048,576 bytes" in err
    studies = {r["study"] for r in ResultStore(llem_env / "llem.duckdb").query(
        "SELECT DISTINCT study FROM experiment_configs").to_pylist()}
    assert studies == {"demo", "nightly", "skipping"}


def test_configs_of_a_deleted_study_file_are_retired_and_kept(instance: dg.DagsterInstance, studies: Path,
                                                               llem_env: Path) -> None:
    def state() -> dict[str, set[bool]]:
        table = ResultStore(llem_env / "llem.duckdb").query(
            "SELECT study, retired_at IS NOT NULL AS retired FROM experiment_configs")
        out: dict[str, set[bool]] = {}
        for r in table.to_pylist():
            out.setdefault(r["study"], set()).add(r["retired"])
        return out

    first = _tick(instance)
    assert state() == {"demo": {False}, "nightly": {False}}
    instance.add_dynamic_partitions(CONFIG_PARTITIONS_NAME, list(first.dynamic_partitions_requests[0].partition_keys))
    nightly = (studies / "nightly.yaml").read_text(encoding="utf-8")
    (studies / "nightly.yaml").unlink()
    second = _tick(instance, cursor=first.cursor)
    assert state() == {"demo": {False}, "nightly": {True}}  # kept for history, shown as retired
    assert "config row(s) retired" in second.skip_message
    # a broken demo.yaml is not a deleted one: its rows stay current
    demo = (studies / "demo.yaml").read_text(encoding="utf-8")
    (studies / "demo.yaml").write_text("name: demo\nbase: {model: m, n: -1}\n", encoding="utf-8")
    third = _tick(instance, cursor=second.cursor)
    assert state() == {"demo": {False}, "nightly": {True}}
    (studies / "demo.yaml").write_text(demo, encoding="utf-8")
    (studies / "nightly.yaml").write_text(nightly, encoding="utf-8")
    _tick(instance, cursor=third.cursor)
    assert state() == {"demo": {False}, "nightly": {False}}
