"""Run folders through an object store or any ``pyarrow.fs`` URL (s3://, gs://, hdfs://, file://).

A GPU host publishes its verified run folder with ``upload_run_folder``: every file first, ``manifest.json``
last, so a remote folder without a manifest is an incomplete upload (an object store has no atomic folder
rename; the manifest is the commit marker, docs/run-folder.md). The storage host gets it back with
``fetch_run_folder``: downloaded into a hidden staging folder beside its place under the local runs root,
checked against the manifest (every file's size and SHA-256, nothing extra), and only then renamed into
place, where ``RunFolder.open`` reads it. A copy that fails the check never reaches the runs root.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from llem_pipeline.measure.run_folder import MANIFEST, RunFolderError, run_folder_path, verify_manifest

_CHUNK = 1 << 20


def _filesystem(url: str):
    """Return (pyarrow FileSystem, base path) of ``url``; raises RunFolderError naming the URL when unusable."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(url)
    except pa.ArrowException as err:  # an unknown scheme or a malformed URL (ArrowInvalid, ArrowNotImplementedError)
        raise RunFolderError(f"run store {url!r} is not a usable pyarrow.fs URL ({err}): use e.g. "
                             "s3://bucket/llem/runs or file:///shared/llem/runs (LLEM_RUN_STORE)") from None


def _remote_dir(url: str, run_date: str, config_hash: str, run_id: str) -> tuple[object, str]:
    fs, base = _filesystem(url)
    return fs, f"{base.rstrip('/')}/{run_date}/{config_hash}/{run_id}"


def upload_run_folder(folder: Path, url: str, run_date: str, config_hash: str, run_id: str) -> str:
    """Copy the local run folder ``folder`` to ``<url>/<run_date>/<config_hash>/<run_id>/``, manifest.json
    last; return the remote folder path. Raises RunFolderError when ``folder`` has no manifest."""
    if not (folder / MANIFEST).is_file():
        raise RunFolderError(f"{folder} has no {MANIFEST}: only a complete run folder is published")
    fs, remote = _remote_dir(url, run_date, config_hash, run_id)
    fs.create_dir(remote, recursive=True)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.startswith("."))
    for path in [*files, folder / MANIFEST]:
        with open(path, "rb") as src, fs.open_output_stream(f"{remote}/{path.name}") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    return remote


def fetch_run_folder(url: str, runs_root: Path, run_date: str, config_hash: str, run_id: str) -> Path:
    """Return the local run folder of (run_date, config_hash, run_id) under ``runs_root``, downloading it from
    ``url`` when it is not there yet: staged, verified against its manifest, then renamed into place.

    Raises RunFolderError when the remote folder is missing, has no manifest (an incomplete upload) or a
    file differs from the manifest; the runs root is then unchanged.
    """
    import pyarrow.fs as pafs

    final = run_folder_path(runs_root, run_date, config_hash, run_id)
    if final.is_dir():
        return final
    fs, remote = _remote_dir(url, run_date, config_hash, run_id)
    infos = fs.get_file_info(pafs.FileSelector(remote, allow_not_found=True))
    names = {Path(i.path).name for i in infos if i.type == pafs.FileType.File}
    if not names:
        raise RunFolderError(f"run folder {remote} is not in the run store {url}: was its GPU step published?")
    if MANIFEST not in names:
        raise RunFolderError(f"run folder {remote} in the run store has no {MANIFEST}: an incomplete upload "
                             "(its GPU step did not finish publishing); measure it again")
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.fetch-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for name in sorted(names):
            if name.startswith(".") or "/" in name:
                continue
            with fs.open_input_stream(f"{remote}/{name}") as src, open(staging / name, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        verify_manifest(staging)
        try:
            os.replace(staging, final)
        except OSError:
            if not final.is_dir():  # not a concurrent fetch that got there first
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
