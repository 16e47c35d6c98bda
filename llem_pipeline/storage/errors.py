"""Errors raised by the result store; every message names the value, what was expected and the fix."""

from __future__ import annotations


class StorageError(RuntimeError):
    """A store operation that cannot proceed (bad input, missing database, newer schema, ...)."""


class LockTimeoutError(StorageError, TimeoutError):
    """The DuckDB file stayed locked by another process for longer than the configured wait."""


class ReadOnlyViolation(StorageError, ValueError):
    """A statement other than a read (SELECT / EXPLAIN) was given to a read-only entry point."""


class WriteVerificationError(StorageError):
    """A write whose rows, counted back, differ from the rows sent (a storage fault, not bad input).

    ``table`` is the table checked, ``expected`` and ``found`` are row counts, and ``committed`` says
    whether the mismatch was seen after COMMIT (the file holds it) or before (rolled back, nothing written).
    """

    def __init__(self, message: str, *, table: str, expected: int, found: int, committed: bool) -> None:
        super().__init__(message)
        self.table = table
        self.expected = expected
        self.found = found
        self.committed = committed


class WriteVerificationWarning(UserWarning):
    """A committed write counted back wrong and was rewritten once (the rewrite verified): report it."""


class PartitionLostWarning(UserWarning):
    """Runs the store wrote (per its manifest or its write journal) are missing or changed in the file.

    Issued by the next write when its cheap audit finds a discrepancy (the write itself goes ahead);
    ``ResultStore.audit()`` / ``llem sql --audit`` list every discrepancy. Each message names the table,
    the run, the rows expected and the rows found.
    """
