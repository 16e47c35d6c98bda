"""Errors raised by the result store; every message names the value, what was expected and the fix."""

from __future__ import annotations


class StorageError(RuntimeError):
    """A store operation that cannot proceed (bad input, missing database, newer schema, ...)."""


class RunFolderError(StorageError, ValueError):
    """A run folder that does not meet the contract (.llem_briefs/RUN_FOLDER.md); nothing was written."""


class LockTimeoutError(StorageError, TimeoutError):
    """The DuckDB file stayed locked by another process for longer than the configured wait."""


class ReadOnlyViolation(StorageError, ValueError):
    """A statement other than a read (SELECT / EXPLAIN) was given to a read-only entry point."""
