"""The run-folder contract: atomic publish, removal of dead workers' staging folders, the validating reader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llem_pipeline.measure.run_folder import (
    MANIFEST,
    RESULT,
    TIMESERIES,
    RunFolder,
    RunFolderError,
    remove_dead_staging,
    run_folder_path,
    runs_root_of,
    staged_run_folder,
    write_manifest,
)
from llem_pipeline_tests.conftest import MEASURED_DATE, MEASURED_RUN_ID


@pytest.fixture
def runs(measured_run_folder: Path, tmp_path: Path) -> tuple[Path, str]:
    """(a fresh runs root holding a copy of the measured folder, its config hash)."""
    root = tmp_path / "runs"
    config_hash = measured_run_folder.parent.name
    shutil.copytree(measured_run_folder, run_folder_path(root, MEASURED_DATE, config_hash, MEASURED_RUN_ID))
    return root, config_hash


def _open(root: Path, config_hash: str) -> RunFolder:
    return RunFolder.open(root, MEASURED_DATE, config_hash, MEASURED_RUN_ID)


def test_the_worker_folder_reads_back_whole(runs) -> None:
    root, h = runs
    folder = _open(root, h)
    assert folder.result.measurement_config_hash == h and folder.result.schema_version == "2.0"
    assert len(folder.processes) == 1 and folder.processes[0].process_index == 0
    assert folder.environment.device_kind == "simulated"
    assert folder.baseline is not None and folder.baseline["devices"]
    assert folder.requests.num_rows == 8 and folder.power_samples.num_rows > 0
    assert sum(r.output_tokens for r in folder.request_records()) == folder.result.total_tokens
    assert runs_root_of(folder.path) == root.resolve()


@pytest.mark.parametrize("damage", ["missing_result", "other_config", "bad_json", "extra_column", "renumbered"])
def test_a_damaged_folder_is_refused_naming_the_file(runs, damage: str) -> None:
    root, h = runs
    path = run_folder_path(root, MEASURED_DATE, h, MEASURED_RUN_ID)
    if damage == "missing_result":
        (path / RESULT).unlink()
        expected = "missing result.json"
    elif damage == "other_config":
        data = json.loads((path / RESULT).read_text())
        data["measurement_config_hash"] = "0" * 16
        (path / RESULT).write_text(json.dumps(data))
        expected = "measurement_config_hash"
    elif damage == "bad_json":
        (path / "process_0.json").write_text("{not json")
        expected = "process_0.json: not a valid RawProcessResult"
    elif damage == "extra_column":
        table = pq.read_table(path / TIMESERIES)
        pq.write_table(table.append_column("secret", pa.array([1] * table.num_rows)), path / TIMESERIES)
        expected = "unknown column"
    else:
        (path / "process_0.json").rename(path / "process_1.json")
        expected = "not numbered 0..n-1"
    write_manifest(path)  # as if the worker itself had written the bad file: the content checks catch it
    with pytest.raises(RunFolderError, match=expected):
        _open(root, h)


@pytest.mark.parametrize("change", ["altered", "truncated", "extra", "no_manifest"])
def test_a_copy_that_differs_from_its_manifest_is_refused(runs, change: str) -> None:
    root, h = runs
    path = run_folder_path(root, MEASURED_DATE, h, MEASURED_RUN_ID)
    data = (path / RESULT).read_bytes()
    if change == "altered":
        (path / RESULT).write_bytes(data.replace(b'"schema_version": "2.0"', b'"schema_version": "2.1"'))  # same size
        expected = "SHA-256 differs"
    elif change == "truncated":
        (path / TIMESERIES).write_bytes((path / TIMESERIES).read_bytes()[:100])
        expected = "an incomplete or altered copy"
    elif change == "extra":
        (path / "notes.txt").write_text("added later")
        expected = "not in the manifest"
    else:
        (path / MANIFEST).unlink()
        expected = "missing manifest.json"
    with pytest.raises(RunFolderError, match=expected):
        _open(root, h)


def test_a_file_linked_from_outside_the_runs_root_is_refused(runs, tmp_path: Path) -> None:
    root, h = runs
    path = run_folder_path(root, MEASURED_DATE, h, MEASURED_RUN_ID)
    outside = tmp_path / "elsewhere.parquet"
    shutil.copy(path / TIMESERIES, outside)
    (path / TIMESERIES).unlink()
    (path / TIMESERIES).symlink_to(outside)
    with pytest.raises(RunFolderError, match="outside the runs folder"):
        _open(root, h)


@pytest.mark.parametrize("part", [("2026-1-01", "0" * 16, "r"), ("2026-12-01", "../" * 3, "r"),
                                  ("2026-12-01", "0" * 16, "a/../../b")])
def test_path_parts_that_could_escape_are_refused(tmp_path: Path, part: tuple[str, str, str]) -> None:
    with pytest.raises(RunFolderError):
        run_folder_path(tmp_path, *part)


def test_staging_is_renamed_into_place_only_when_complete(tmp_path: Path) -> None:
    final = tmp_path / "runs" / MEASURED_DATE / ("a" * 16) / "run-1"
    with pytest.raises(RuntimeError), staged_run_folder(final) as staging:
        (staging / "result.json").write_text("{}")
        raise RuntimeError("the measurement failed")
    assert not final.exists() and list(final.parent.iterdir()) == []
    with staged_run_folder(final) as staging:
        (staging / "result.json").write_text("{}")
    assert (final / "result.json").is_file() and [p.name for p in final.parent.iterdir()] == ["run-1"]
    assert (final / MANIFEST).is_file()  # written last, over everything else


def test_staging_folders_of_dead_workers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    config = root / MEASURED_DATE / ("b" * 16)
    config.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited: its pid is no longer alive
    (config / f".run-x.tmp-{dead_pid}").mkdir()
    (config / f".run-y.old-{dead_pid}").mkdir()
    live = config / f".run-z.tmp-{os.getppid()}"
    live.mkdir()
    (config / "run-done").mkdir()
    removed = remove_dead_staging(root)
    assert sorted(p.name for p in removed) == sorted([f".run-x.tmp-{dead_pid}", f".run-y.old-{dead_pid}"])
    assert sorted(p.name for p in config.iterdir()) == sorted([live.name, "run-done"])
