"""Run folders through a pyarrow.fs URL: published manifest last, fetched staged and verified before use."""

import pyarrow.fs as pafs
import pytest

from llem_pipeline.measure.run_folder import MANIFEST, RunFolderError, run_folder_path, write_manifest
from llem_pipeline.measure.run_store import fetch_run_folder, upload_run_folder

DATE, HASH, RUN = "2026-12-06", "2de5716c3fd98f72", "9637c701-f96d-4db3-a9c0-d1a262d771a3"


@pytest.fixture
def published(tmp_path):
    """A complete local run folder on a GPU host, published to a file:// run store; returns (store url, root)."""
    gpu_root = tmp_path / "gpu-host" / "runs"
    folder = run_folder_path(gpu_root, DATE, HASH, RUN)
    folder.mkdir(parents=True)
    (folder / "result.json").write_text('{"j_per_token": 1.5}')
    (folder / "timeseries.parquet").write_bytes(bytes(range(256)) * 40)
    write_manifest(folder)
    url = (tmp_path / "store").as_uri()
    remote = upload_run_folder(folder, url, DATE, HASH, RUN)
    assert remote.endswith(f"{DATE}/{HASH}/{RUN}")
    return url, tmp_path / "storage-host" / "runs"


def test_fetch_verifies_and_places_the_folder_under_the_local_runs_root(published):
    url, root = published
    path = fetch_run_folder(url, root, DATE, HASH, RUN)
    assert path == run_folder_path(root, DATE, HASH, RUN)
    assert sorted(p.name for p in path.iterdir()) == [MANIFEST, "result.json", "timeseries.parquet"]
    assert (path / "timeseries.parquet").read_bytes() == bytes(range(256)) * 40
    assert [p.name for p in path.parent.iterdir()] == [RUN]  # no staging folder left


def test_an_altered_remote_file_is_refused_and_nothing_reaches_the_runs_root(published):
    url, root = published
    fs, base = pafs.FileSystem.from_uri(url)
    with fs.open_output_stream(f"{base}/{DATE}/{HASH}/{RUN}/result.json") as out:
        out.write(b'{"j_per_token": 9.9}')  # same size, different bytes
    with pytest.raises(RunFolderError, match="SHA-256 differs"):
        fetch_run_folder(url, root, DATE, HASH, RUN)
    assert not run_folder_path(root, DATE, HASH, RUN).exists()
    assert list(run_folder_path(root, DATE, HASH, RUN).parent.iterdir()) == []


def test_an_upload_without_its_manifest_is_an_incomplete_folder(published):
    url, root = published
    fs, base = pafs.FileSystem.from_uri(url)
    fs.delete_file(f"{base}/{DATE}/{HASH}/{RUN}/{MANIFEST}")
    with pytest.raises(RunFolderError, match="incomplete upload"):
        fetch_run_folder(url, root, DATE, HASH, RUN)
    with pytest.raises(RunFolderError, match="not in the run store"):
        fetch_run_folder(url, root, DATE, HASH, "00000000-0000-0000-0000-000000000000")


def test_a_folder_without_manifest_is_not_published(tmp_path):
    folder = tmp_path / "runs" / DATE / HASH / RUN
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("{}")
    with pytest.raises(RunFolderError, match="only a complete run folder"):
        upload_run_folder(folder, (tmp_path / "store").as_uri(), DATE, HASH, RUN)
