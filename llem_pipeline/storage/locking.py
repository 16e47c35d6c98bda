"""Short DuckDB connections with lock retries: exponential backoff with full jitter.

DuckDB allows one read-write process per file, or many read-only processes; a process that cannot
get the file lock fails at once with ``duckdb.IOException: ... Could not set lock on file ...``.
dagster-duckdb retries that on connect with fixed 0.1·2^i s delays (no jitter, ~102 s), so writers
that collide once keep colliding. Here every attempt sleeps ``uniform(0, min(cap, base·2^i))``
until ``timeout_s`` has passed in total.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import duckdb

from llem_pipeline.storage.errors import LockTimeoutError, StorageError

DEFAULT_LOCK_TIMEOUT_S = 120.0
BASE_DELAY_S = 0.02
MAX_DELAY_S = 2.0

T = TypeVar("T")


def default_lock_timeout_s() -> float:
    """Return the total lock wait, s: ``LLEM_DUCKDB_LOCK_TIMEOUT_S`` or 120 s."""
    raw = os.environ.get("LLEM_DUCKDB_LOCK_TIMEOUT_S")
    if raw is None:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError as exc:
        raise StorageError(f"LLEM_DUCKDB_LOCK_TIMEOUT_S={raw!r} is not a number of seconds: set e.g. 120") from exc
    if value < 0:
        raise StorageError(f"LLEM_DUCKDB_LOCK_TIMEOUT_S={raw!r} must be >= 0 s")
    return value


def is_lock_error(exc: BaseException) -> bool:
    """Return True when ``exc`` means "another connection holds the file; try again later"."""
    msg = str(exc)
    if isinstance(exc, duckdb.IOException):
        return "Could not set lock" in msg or "Conflicting lock" in msg
    if isinstance(exc, duckdb.ConnectionException):
        # Same process, same file, other read_only/config flags still open (e.g. another thread).
        return "different configuration" in msg
    return False


def is_conflict_error(exc: BaseException) -> bool:
    """Return True when ``exc`` is a DuckDB transaction conflict (two connections of one process).

    Also True for the spurious "python_arrow_scan does not exist" catalog error DuckDB 2.0.1 raises
    when a thread binds a registered Arrow table while another thread of the process changes the
    catalog; the whole transaction is retried.
    """
    if isinstance(exc, duckdb.TransactionException):
        return "onflict" in str(exc)
    return isinstance(exc, duckdb.CatalogException) and "python_arrow_scan" in str(exc)


def backoff_delays(timeout_s: float, rng: random.Random | None = None):
    """Yield sleep lengths, s: full jitter over min(MAX_DELAY_S, BASE_DELAY_S·2^i), summing to <= timeout_s."""
    rng = rng or random.Random()
    spent = 0.0
    attempt = 0
    while spent < timeout_s:
        ceiling = min(MAX_DELAY_S, BASE_DELAY_S * (2**attempt))
        delay = min(rng.uniform(0.0, ceiling) + 0.001, timeout_s - spent)
        spent += delay
        attempt += 1
        yield delay


def retry_locked(
    fn: Callable[[], T],
    *,
    path: Path | str,
    timeout_s: float,
    retry_on: Callable[[BaseException], bool] = is_lock_error,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it stops raising a retryable error; return its value.

    Raises LockTimeoutError (naming the file, the wait in s and the holder DuckDB reported) once
    ``timeout_s`` s of backoff are spent; other exceptions propagate at once.
    """
    started = time.monotonic()
    delays = backoff_delays(timeout_s)
    while True:
        try:
            return fn()
        except Exception as exc:
            if not retry_on(exc):
                raise
            delay = next(delays, None)
            if delay is None:
                waited = time.monotonic() - started
                raise LockTimeoutError(
                    f"DuckDB file {str(path)!r} stayed locked for {waited:.1f} s (limit {timeout_s:.1f} s): {exc}. "
                    "Close the program holding it (a duckdb shell, a notebook, a long `llem sql`), or raise the "
                    "limit (ResultStore(lock_timeout_s=...) / LLEM_DUCKDB_LOCK_TIMEOUT_S)."
                ) from exc
            sleep(delay)


def connect(
    path: Path | str,
    *,
    read_only: bool,
    timeout_s: float,
    config: Mapping[str, object] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB connection, retrying while another process holds the lock; return it.

    A read-only open of a file that does not exist raises StorageError (DuckDB would refuse; a
    read-write open creates the file and its parent folder).
    """
    path = Path(path)
    if read_only and not path.is_file():
        raise StorageError(
            f"no DuckDB database at {str(path)!r}: write a result first (or pass --db / LLEM_DUCKDB to an existing file)"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    cfg = dict(config or {})
    return retry_locked(
        lambda: duckdb.connect(str(path), read_only=read_only, config=cfg),
        path=path,
        timeout_s=timeout_s,
    )
