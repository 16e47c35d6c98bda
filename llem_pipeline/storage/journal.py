"""The write journal: ``<db>.writes.jsonl``, one JSON line per (table, run) of every committed store write.

Why a file outside the database: the loss seen in the 8-writer stress runs dropped a whole committed
transaction (another process checkpointed a database state from before it; locking.py explains how),
and with it every row that transaction wrote INSIDE the file, the partition manifest included. The journal is
appended after COMMIT + CHECKPOINT + verification, while the writer still holds the store's writer
lock (locking.write_lock), and fsync'ed; each line carries the write number (``seq``) that the same
transaction stored in the ``write_sequence`` table. A database whose ``write_sequence`` is behind the
journal's last ``seq`` has lost committed writes, and the journal names them.

Line format: {"seq": int, "store": str, "table": str, "run_date": "YYYY-MM-DD", "config_hash": str,
"hardware_id": str, "run_id": str, "rows": int, "pid": int, "at": ISO-8601 UTC} (lines written before
migration 6 have no "hardware_id": they name the (run_date, config_hash) partition a write replaced,
audit.py checks them that way); ``store`` is the database's
``write_sequence.store_id``: a journal whose last line names another store belongs to a database that
was deleted and created again, and is set aside (``set_aside``), not read as losses. A torn last line
(crash during the append) is skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import Any

JOURNAL_SUFFIX = ".writes.jsonl"
_TAIL_BYTES = 65536


def journal_path(db_path: Path | str) -> Path:
    """Return the write journal of ``db_path``: ``<db>.writes.jsonl`` next to the database."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + JOURNAL_SUFFIX)


_TYPES: dict[str, type | tuple[type, ...]] = {
    "seq": int, "table": str, "run_date": str, "config_hash": str, "run_id": str, "rows": int,
}


def _parse(line: bytes) -> dict[str, Any] | None:
    """Return one journal entry, or None for a torn or foreign line (wrong keys, types or date)."""
    try:
        entry = json.loads(line)
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), t) for k, t in _TYPES.items()):
            return None
        date.fromisoformat(entry["run_date"])
    except (ValueError, UnicodeDecodeError):
        return None
    return entry


def last_entry(path: Path) -> dict[str, Any] | None:
    """Return the journal's last complete entry (None when the journal is absent or empty).

    Reads only the file's tail (lines are appended in write order).
    """
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _TAIL_BYTES))
            tail = f.read()
    except FileNotFoundError:
        return None
    for line in reversed(tail.splitlines()):
        entry = _parse(line)
        if entry is not None:
            return entry
    return None


def last_seq(path: Path) -> int:
    """Return the highest write number in the journal at ``path`` (0 when it is absent or empty)."""
    entry = last_entry(path)
    return int(entry["seq"]) if entry is not None else 0


def read_entries(path: Path, after_seq: int = 0, store_id: str | None = None) -> list[dict[str, Any]]:
    """Return the journal's entries with ``seq > after_seq`` (and of ``store_id`` when given), in file order.

    Torn or foreign lines are skipped.
    """
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        entry = _parse(line)
        if entry is not None and entry["seq"] > after_seq and (store_id is None or entry.get("store") == store_id):
            out.append(entry)
    return out


def set_aside(path: Path, store_id: str) -> Path | None:
    """Rename the journal at ``path`` to ``<journal>.<first 8 of store_id>.old`` (the journal of another
    database: the file was deleted and created again); return the new path (None when there was none)."""
    target = path.with_name(f"{path.name}.{store_id[:8]}.old")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    return target


def append(path: Path, entries: Iterable[Mapping[str, Any]]) -> int:
    """Append ``entries`` as JSON lines to the journal at ``path`` and fsync it; return the bytes written.

    The caller holds the writer lock, so appends of different writers never interleave.
    """
    data = "".join(json.dumps(dict(e), separators=(",", ":"), default=str) + "\n" for e in entries).encode()
    if not data:
        return 0
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # after a torn line (a crash mid-append): start on a line of our own
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(data)
