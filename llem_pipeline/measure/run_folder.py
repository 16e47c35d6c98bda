"""Writing a run folder atomically: everything goes into a hidden temp folder renamed into place on success.

A run folder that exists is complete (see the worker contract in the README: config.json,
environment.json, baseline.json, process_<k>.json, result.json, timeseries.parquet, requests.parquet).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from llem_pipeline.domain.requests import RequestRecord


def write_json(path: Path, obj: BaseModel | dict[str, Any] | list[Any]) -> Path:
    """Write ``obj`` (a pydantic model or JSON-able data) to ``path`` atomically (tmp + os.replace); returns path."""
    text = obj.model_dump_json(indent=2) if isinstance(obj, BaseModel) else json.dumps(obj, indent=2, default=str)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


@contextmanager
def staged_run_folder(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on normal exit rename it to ``final`` (replacing an older
    folder of the same name), on error remove it. Raises OSError with the path when the parent is not writable.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(final)
        staging = final.parent / f".{final.name}.tmp-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
    except OSError as err:
        raise OSError(err.errno, f"cannot create the run folder under {final.parent}: {err.strerror}") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_staging(final: Path) -> None:
    """Remove temp folders of ``final`` left by workers that died (SIGKILL, OOM) before a retry of the same
    run writes it; a live worker's folder is kept."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[1]
        if not tmp.is_dir() or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def read_request_records(path: Path) -> list[RequestRecord]:
    """Return the rows of a ``requests.parquet`` as RequestRecords (times in s from each process's
    inference start, so differences — TTFT, ITL, E2E — are exact)."""
    import pyarrow.parquet as pq

    return [
        RequestRecord(
            request_index=r["request_index"], input_tokens=r["input_tokens"], output_tokens=r["output_tokens"],
            submit_time_s=r["submit_s"], first_token_time_s=r["first_token_s"],
            token_times_s=list(r.get("token_times_s") or []), done_time_s=r["done_s"],
            finish_reason=r.get("finish_reason"), process_index=r["process_index"],
        )
        for r in pq.read_table(path).to_pylist()
    ]
