"""Short DuckDB connections with lock retries (exponential backoff with full jitter), and the store's writer lock.

DuckDB allows one read-write process per file, or many read-only processes; a process that cannot
get the file lock fails at once with ``duckdb.IOException: ... Could not set lock on file ...``.
dagster-duckdb retries that on connect with fixed 0.1·2^i s delays (no jitter, ~102 s), so writers
that collide once keep colliding. Here every attempt sleeps ``uniform(0, min(cap, base·2^i))``
until ``timeout_s`` has passed in total.

Writer lock. DuckDB's own lock is not enough for writers in several processes: DuckDB
2.0.1 reads the database headers through a separate read-only descriptor BEFORE it takes its
``fcntl`` lock (strace of ``duckdb.connect``: open O_RDONLY + pread 12288 bytes at offset 0 + close,
then open O_RDWR + F_SETLK, then only the blocks after the headers are read). A process that reads
the headers while another process is committing, and gets the lock right after that process closes,
opens the file with the previous header: it does not see the other process's last commit, reuses
its blocks, and its checkpoint writes a header that drops that commit: a silent loss of a write
that had been verified and closed (reproduced deterministically by delaying the second process's
``fcntl`` with ``strace -e inject=fcntl:delay_enter=2s``; under CPU load it happened in 1 of 51
runs of 8 writers x 50 partitions). ``write_lock`` closes that window: every store write takes an
exclusive ``flock`` on ``<db>.write.lock`` BEFORE ``duckdb.connect`` and releases it only after the
connection is closed, so open -> write -> commit -> checkpoint -> close is one exclusive span across
processes, and a writer's header read cannot overlap another writer's commit. ``flock`` locks belong
to the open file description, not to the process (unlike ``fcntl`` locks, which a process loses
when it closes ANY descriptor of the file), so a second descriptor of the lock file in the same
process, or of the database file anywhere, cannot release it. Readers do not take it: a read-only
open that races a commit sees the previous committed state (blocks a commit does not reuse), which
is a consistent snapshot and never writes.
"""

from __future__ import annotations

import fcntl
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from llem_pipeline.storage.errors import LockTimeoutError, StorageError

DEFAULT_LOCK_TIMEOUT_S = 120.0
BASE_DELAY_S = 0.02
MAX_DELAY_S = 2.0
WRITE_LOCK_SUFFIX = ".write.lock"
WRITE_LOCK_MAX_POLL_S = 0.25  # a waiting writer re-tries the flock at least this often, s

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


def write_lock_path(db_path: Path | str) -> Path:
    """Return the writer lock file of ``db_path``: ``<db>.write.lock`` next to the database (never deleted)."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + WRITE_LOCK_SUFFIX)


def lock_holder(lock_path: Path | str) -> str:
    """Return the pid written into a writer lock file by its current holder ('unknown' when none is written)."""
    try:
        text = Path(lock_path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return "unknown"
    return text.split()[0] if text else "unknown"


@contextmanager
def write_lock(
    db_path: Path | str,
    *,
    timeout_s: float,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Path]:
    """Hold the exclusive cross-process writer lock of ``db_path`` for the ``with`` block; yield the lock file's path.

    Waits (polling ``flock(LOCK_EX | LOCK_NB)`` with jittered delays of at most WRITE_LOCK_MAX_POLL_S s)
    at most ``timeout_s`` s in total, then raises LockTimeoutError naming the lock file and the pid of
    its holder (written into the file while held). The lock file is created next to the database
    (with its folder) and never deleted: deleting it would let a waiter lock an unlinked file.
    """
    lock_path = write_lock_path(db_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        started = time.monotonic()
        rng = rng or random.Random()
        attempt = 0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= timeout_s:
                    raise LockTimeoutError(
                        f"the store writer lock {str(lock_path)!r} stayed held by pid {lock_holder(lock_path)} for "
                        f"{waited:.1f} s (limit {timeout_s:.1f} s): another process is writing {str(db_path)!r}. "
                        "Wait for it, or raise the limit (ResultStore(lock_timeout_s=...) / LLEM_DUCKDB_LOCK_TIMEOUT_S)."
                    ) from None
                ceiling = min(WRITE_LOCK_MAX_POLL_S, BASE_DELAY_S * (2**attempt))
                attempt += 1
                sleep(min(rng.uniform(0.0, ceiling) + 0.001, max(timeout_s - waited, 0.001)))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            yield lock_path
        finally:
            try:
                os.ftruncate(fd, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
