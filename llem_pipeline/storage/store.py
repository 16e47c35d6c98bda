"""ResultStore: the transactional DuckDB store of llem results.

A measurement is identified by (config_hash, hardware_id, run_id), with run_date beside it; every
run is kept. ``write_runs`` writes a batch of RunRecords (records.py) in ONE transaction: it DELETEs
the rows of exactly those runs from every measurement table (a retry of a run replaces that run and
nothing else; no other run is ever deleted or changed), INSERTs the new rows from pyarrow tables,
refreshes the statistics of the (config, hardware, day) groups it touched (stats.py) and COMMITs, so a
failure or a crash leaves the old rows or the new ones, never half. Connections are short (open, one
transaction, close) because DuckDB lets one process write a file and a reader also blocks writers.
Lock conflicts are retried with jittered exponential backoff (locking.py). All values travel as
parameters; table names come from the allow-list in schema.py.

Every write verifies its rows twice:

- before COMMIT, inside the transaction: per table, the rows of the written runs must equal the rows
  sent, all of them on the run_date sent. A mismatch rolls back (nothing written) and raises
  WriteVerificationError naming table, runs, expected and found. This also catches a transaction
  that an error invalidated without propagating: DuckDB >= 2.0 then reports COMMIT as success and
  discards everything (duckdb/duckdb#22674, #25300).
- after COMMIT: ``CHECKPOINT`` (the file's durable state; closing the connection would checkpoint
  anyway, so this costs nothing extra) and the same counts read again on the same connection in a
  new transaction. A mismatch here means committed rows are not what was sent. The write is
  idempotent (it replaces its runs), so it is retried ONCE whole, with a WriteVerificationWarning
  naming the mismatch (a recovered loss is reported, never silent); a second mismatch raises
  WriteVerificationError (``committed=True``).

Store writes to one file are serialized within a process (a lock per path) and across processes
(``locking.write_lock``: an exclusive flock on ``<db>.write.lock`` held from before
``duckdb.connect`` until after ``close``), so no other store write can land between a COMMIT and its
check, and no writer can open the file while another one is between its open and its close. The
checks cost one count per table over the written runs' rows (bounded by their run_dates, so DuckDB
skips the row groups of other days).

Loss after the writer closed (reproduced once in 51 runs of 8 writers x 50 runs: a run whose write had
passed both checks was missing at the end). Cause: DuckDB 2.0.1 reads the database header before it
takes its file lock, so a second writer could open the file with the header from before the first
writer's last commit and checkpoint over it (locking.py explains and the writer lock closes it). So
that any such loss is impossible to miss, every write also:

- records, in its transaction, one ``partition_manifest`` row per (table, run) written (rows, writer
  pid, time, write number) and bumps ``write_sequence``;
- appends the same rows to the write journal ``<db>.writes.jsonl`` after COMMIT + CHECKPOINT +
  verification, still under the writer lock (journal.py): it survives a loss of the whole
  transaction, which the manifest inside the file does not;
- starts with a cheap audit (audit.quick_totals: one count per table against the manifest's sums,
  and the file's write number against the journal's last one); a difference runs the full audit and
  issues a PartitionLostWarning naming each run (table, run, expected and found rows) after the
  write. The write itself goes ahead: a loss never blocks new results.

``ResultStore.audit()`` (and ``llem sql --audit``) runs the full audit on demand.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa

from llem_pipeline import paths
from llem_pipeline.domain import ExperimentConfig, ExperimentResult, compute_measurement_config_hash
from llem_pipeline.storage import audit as A
from llem_pipeline.storage import journal, locking, stats
from llem_pipeline.storage import rows as R
from llem_pipeline.storage.audit import Discrepancy
from llem_pipeline.storage.errors import (
    LockTimeoutError,
    PartitionLostWarning,
    StorageError,
    WriteVerificationError,
    WriteVerificationWarning,
)
from llem_pipeline.storage.records import RunRecord
from llem_pipeline.storage.schema import (
    PARTITIONED_TABLES,
    RUN_KEY_COLUMNS,
    TABLES,
    apply_schema,
    checked_table,
)
from llem_pipeline.storage.sql_guard import check_read_only

T = TypeVar("T")
# Records the manifest rows of one write: (connection, write number, time, pid) -> the rows recorded,
# as (table_name, run_date, config_hash, hardware_id, run_id, row_count).
ManifestWriter = Callable[[duckdb.DuckDBPyConnection, int, datetime, int], list[tuple[Any, ...]]]
_STAGING = "_llem_rows"  # the one name under which incoming arrow tables are registered
READ_CONFIG: dict[str, Any] = {"enable_external_access": False}
_PATH_LOCKS: dict[Path, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()
# Row order of read_run per table (samples by process, device and time; requests by their index).
_READ_ORDER: dict[str, str] = {
    "power_samples": "process_index, device_index, t_mono_s",
    "requests": "process_index, request_index",
    "process_results": "process_index",
    "baselines": "device_uuid",
}


def _path_lock(path: Path) -> threading.Lock:
    """Return the process-wide lock serializing store writes to ``path``."""
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(path, threading.Lock())


@dataclass(frozen=True)
class _Check:
    """What one table must hold after a write: ``sql`` (with the parameters ``params()`` returns) gives one
    row (rows of the written runs, rows of them on the run_date sent); both must equal ``expected``.
    ``detail`` explains a mismatch."""

    table: str
    sql: str
    params: Callable[[], Sequence[Any]]
    expected: int
    detail: Callable[[duckdb.DuckDBPyConnection], str]


class ResultStore:
    """The llem DuckDB file: schema, transactional writes of whole runs, read-only queries.

    ``path`` defaults to ``llem_pipeline.paths.duckdb_path()`` (``LLEM_DUCKDB`` or
    ``<data_dir>/llem.duckdb``); ``lock_timeout_s`` is the total time, s, a call waits for the file
    lock (default 120 s or ``LLEM_DUCKDB_LOCK_TIMEOUT_S``); ``connection_config`` is passed to
    ``duckdb.connect`` for writes (e.g. a DuckDBResource's connection_config).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        lock_timeout_s: float | None = None,
        connection_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path).expanduser().resolve() if path is not None else paths.duckdb_path()
        self.lock_timeout_s = locking.default_lock_timeout_s() if lock_timeout_s is None else float(lock_timeout_s)
        self.connection_config = dict(connection_config or {})
        self._schema_ready = False
        self._reported: set[tuple[Any, ...]] = set()  # audit findings already warned about by this store

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    @property
    def journal_path(self) -> Path:
        """The write journal next to the database: ``<db>.writes.jsonl`` (journal.py)."""
        return journal.journal_path(self.path)

    @property
    def write_lock_path(self) -> Path:
        """The cross-process writer lock next to the database: ``<db>.write.lock`` (locking.write_lock)."""
        return locking.write_lock_path(self.path)

    # ------------------------------------------------------------------ connections
    def _write(
        self,
        work: Callable[[duckdb.DuckDBPyConnection], T],
        checks: Sequence[_Check] = (),
        manifest: ManifestWriter | None = None,
    ) -> T:
        """Run ``work(con)`` in one read-write transaction (retried whole on lock/conflict); return its value.

        The whole attempt (connect ... close) holds the process's path lock and the cross-process
        writer lock, both waited for within ``lock_timeout_s`` s in total. ``checks`` are verified
        before COMMIT (a mismatch rolls back) and after it (a mismatch retries the whole write once,
        with a WriteVerificationWarning, then raises); see the module docstring. ``manifest`` (run
        writes) records the manifest rows in the transaction; the write is then audited first and
        journaled after (a PartitionLostWarning, issued after the write, names what the audit found).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        findings: list[Discrepancy] = []

        def attempt() -> T:
            lines: list[dict[str, Any]] = []
            with locking.write_lock(self.path, timeout_s=max(deadline - time.monotonic(), 0.0)):
                con = duckdb.connect(str(self.path), read_only=False, config=self.connection_config)
                try:
                    _quiet(con)
                    con.execute("BEGIN TRANSACTION")
                    try:
                        seq, store_id = 0, ""
                        if manifest is not None:
                            seq, store_id, found = self._precheck(con)
                            findings[:] = found
                        out = work(con)
                        self._verify(con, checks, committed=False)
                        if manifest is not None:
                            lines = _record_write(con, manifest, seq, store_id)
                        con.execute("COMMIT")
                    except BaseException:
                        try:
                            con.execute("ROLLBACK")
                        except duckdb.Error:
                            pass
                        raise
                    if checks:
                        con.execute("CHECKPOINT")
                        self._verify(con, checks, committed=True)
                finally:
                    con.close()
                if lines:
                    try:
                        journal.append(self.journal_path, lines)
                    except OSError as exc:
                        warnings.warn(PartitionLostWarning(
                            f"the write is committed but the write journal {str(self.journal_path)!r} could not be "
                            f"appended ({exc}): the audit cannot vouch for this write. Free disk space / fix permissions."
                        ), stacklevel=4)
                return out

        def serialized_attempt() -> T:
            # Held for one attempt, not across backoff sleeps: no other store write of this process
            # lands between this COMMIT and its check.
            lock = _path_lock(self.path)
            if not lock.acquire(timeout=max(deadline - time.monotonic(), 0.001)):
                raise LockTimeoutError(
                    f"another thread of this process kept writing {str(self.path)!r} for more than "
                    f"{self.lock_timeout_s:.1f} s: raise ResultStore(lock_timeout_s=...) / LLEM_DUCKDB_LOCK_TIMEOUT_S"
                )
            try:
                return attempt()
            finally:
                lock.release()

        def run() -> T:
            return locking.retry_locked(
                serialized_attempt,
                path=self.path,
                timeout_s=self.lock_timeout_s,
                retry_on=lambda e: locking.is_lock_error(e) or locking.is_conflict_error(e),
            )

        try:
            out = run()
        except WriteVerificationError as exc:
            if not exc.committed:
                raise
            warnings.warn(WriteVerificationWarning(f"{exc} Writing the run(s) once more."), stacklevel=3)
            out = run()
        if findings:
            shown = "\n  ".join(str(f) for f in findings[:20])
            more = f"\n  ... and {len(findings) - 20} more" if len(findings) > 20 else ""
            warnings.warn(PartitionLostWarning(
                f"{str(self.path)!r} does not hold {len(findings)} run write(s) the store made "
                f"(found by the audit before this write, which went ahead):\n  {shown}{more}\n"
                "Write those runs again (write_runs, from their run folders) and keep the file, its .wal and "
                f"{self.journal_path.name} for the report; `llem sql --audit` lists what is still missing."
            ), stacklevel=3)
        return out

    def _precheck(self, con: duckdb.DuckDBPyConnection) -> tuple[int, str, list[Discrepancy]]:
        """Audit cheaply before a run write; return (this write's number, store_id, discrepancies to warn about).

        Full audits run only when the cheap check differs, and each distinct difference is reported
        once per ResultStore (a known loss does not re-run the full audit on every later write). A
        journal of another database (this file was deleted and created again) is set aside.
        """
        db_seq, store_id, diffs = A.quick_totals(con)
        if not store_id:  # write_sequence emptied by hand: a new identity, numbered on from the manifest
            made = con.execute(
                "INSERT INTO write_sequence SELECT coalesce((SELECT max(write_seq) FROM partition_manifest), 0), now(), "
                "NULL, uuid()::VARCHAR RETURNING seq, store_id"
            ).fetchall()
            db_seq, store_id = int(made[0][0]), str(made[0][1])
        tail = journal.last_entry(self.journal_path)
        if tail is not None and tail.get("store") != store_id:
            journal.set_aside(self.journal_path, str(tail.get("store") or "unknown"))
            tail = None
        journal_seq = int(tail["seq"]) if tail is not None else 0
        found: list[Discrepancy] = []
        if journal_seq > db_seq:
            entries = journal.read_entries(self.journal_path, after_seq=db_seq, store_id=store_id)
            found += A.journal_discrepancies(con, entries)
        if any(diffs.values()):
            signature = ("totals", *sorted(diffs.items()))
            if signature not in self._reported:
                self._reported.add(signature)
                found += A.manifest_discrepancies(con)
        return max(db_seq, journal_seq) + 1, store_id, found

    def _verify(self, con: duckdb.DuckDBPyConnection, checks: Sequence[_Check], *, committed: bool) -> None:
        """Raise WriteVerificationError unless every check's table holds exactly the rows sent; return None.

        All checks run as one statement (one round trip: each statement costs about 2 ms).
        """
        if not checks:
            return
        sql = " UNION ALL ".join(f"SELECT {i} AS i, * FROM ({check.sql})" for i, check in enumerate(checks))
        try:
            counted = {int(r[0]): (int(r[1]), int(r[2])) for r in
                       con.execute(sql, [p for check in checks for p in check.params()]).fetchall()}
        except duckdb.TransactionException as exc:
            if committed or "aborted" not in str(exc):
                raise
            # DuckDB >= 2.0 invalidates a transaction on ANY error and then reports COMMIT as
            # success while discarding everything: an error swallowed during the write would
            # otherwise be a silent loss.
            raise WriteVerificationError(
                f"{checks[0].table}: the transaction was aborted by an earlier error that did not propagate "
                f"(DuckDB: {exc}); COMMIT would have reported success and written nothing. Rolled back, "
                "nothing written: write again.",
                table=checks[0].table, expected=checks[0].expected, found=0, committed=False,
            ) from exc
        for i, check in enumerate(checks):
            found, of_run = counted.get(i, (0, 0))
            if found == check.expected and of_run == check.expected:
                continue
            when = (
                "after COMMIT: the committed rows differ from the rows sent"
                if committed else "before COMMIT: rolled back, nothing written"
            )
            raise WriteVerificationError(
                f"{check.table}: expected {check.expected} row(s), found {found} ({of_run} on the run_date sent) "
                f"in {check.detail(con)} ({when}). This is a storage fault, not bad input: keep "
                f"{str(self.path)!r} and its .wal for the report, then write again.",
                table=check.table, expected=check.expected, found=found, committed=committed,
            )

    def _insert(self, con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, sql: str,
                params: Sequence[Any] = ()) -> None:
        """Register ``table`` as the staging view and run ``sql`` (an INSERT INTO ``name``); return None.

        The one place rows enter a measurement table (the verification counts what this inserted).
        """
        # The registration dies with the connection; unregistering in a `finally` would mask the
        # real error with "transaction is aborted".
        con.register(_STAGING, table)
        con.execute(sql, list(params))
        con.unregister(_STAGING)

    def _write_table(self, name: str, table: pa.Table, sql: str) -> int:
        """Insert ``table`` into ``name`` with ``sql`` (reading the staging view) in one transaction; return rows written."""
        self._ready()

        def work(con: duckdb.DuckDBPyConnection) -> int:
            self._insert(con, name, table, sql)
            return table.num_rows

        return self._write(work)

    @contextmanager
    def _read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = locking.connect(self.path, read_only=True, timeout_s=self.lock_timeout_s, config=READ_CONFIG)
        try:
            _quiet(con)
            yield con
        finally:
            con.close()

    # ------------------------------------------------------------------ schema
    def ensure_schema(self) -> int:
        """Create or migrate the tables and (re)create the views; return the schema version (int)."""
        version = self._write(apply_schema)
        self._schema_ready = True
        return version

    def _ready(self) -> None:
        if not self._schema_ready:
            self.ensure_schema()

    def audit(self) -> list[Discrepancy]:
        """Compare the file with what the store wrote; return every discrepancy (empty list: nothing lost).

        Checks every run of every measurement table against partition_manifest (rows changed behind
        the store's back), and the write journal (``<db>.writes.jsonl``) against the manifest
        (committed writes that vanished from the file with their manifest rows). Each Discrepancy names
        the table, the run, the rows expected and found, and who wrote it when. Read-only; one
        GROUP BY per table plus a pass over the journal (seconds at 100k results).
        """
        if not self.path.is_file():
            return []
        with self._read() as con:
            if not A.has_manifest(con):
                return []
            found = A.manifest_discrepancies(con)
            _, store_id = A.store_identity(con)
            found += A.journal_discrepancies(con, journal.read_entries(self.journal_path, store_id=store_id))
        return found

    # ------------------------------------------------------------------ writes
    def upsert_configs(self, study: str, configs: Mapping[str, ExperimentConfig]) -> int:
        """Register a study's experiments in ``experiment_configs`` (insert or replace); return rows written.

        Each key must be the measurement_config_hash of its config (else StorageError). A retired row
        registered again is current again (retired_at cleared); study_file is left as it was.
        """
        if not isinstance(study, str) or not study.strip() or len(study) > 200:
            raise StorageError(f"study={study!r} must be a non-empty name of at most 200 characters")
        now = datetime.now(UTC)
        rows = []
        for config_hash, config in configs.items():
            actual = compute_measurement_config_hash(config)
            if actual != config_hash:
                raise StorageError(f"configs[{config_hash!r}] hashes to {actual!r}: keys must be config hashes")
            rows.append({**R.config_row(study, config_hash, config, now), "retired_at": None})
        if not rows:
            return 0
        return self._write_table("experiment_configs", R.rows_to_table(rows),
                                 f"INSERT OR REPLACE INTO experiment_configs BY NAME SELECT * FROM {_STAGING}")

    def write_factors(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append ``factors`` rows (storage/factors.py builds and validates them) in one transaction; return rows written."""
        if not rows:
            raise StorageError("rows=[]: give at least one factor")
        return self._write_table("factors", R.rows_to_table(rows), f"INSERT INTO factors BY NAME SELECT * FROM {_STAGING}")

    def write_run(self, record: RunRecord) -> dict[str, int]:
        """Write one measurement run in one transaction (``write_runs([record])``); return {table: rows written}."""
        return self.write_runs([record])

    def register_studies(
        self,
        studies: Mapping[str, tuple[str, Mapping[str, ExperimentConfig]]],
        unreadable_files: Collection[str] = (),
    ) -> tuple[int, int]:
        """Register what the study files define now and retire what they no longer define, in one transaction.

        ``studies``: {study name: (study file name, {config hash: config})}, every valid study of the
        studies folder. Their rows of ``experiment_configs`` are inserted or replaced (study_file set,
        retired_at cleared). Every other row not yet retired gets retired_at = now, except rows of
        ``unreadable_files`` (file names present but invalid right now: their file is not gone), matched by
        study_file, or by ``<study>.yaml`` for rows registered before study_file was recorded. Retired rows
        are kept. Returns (rows upserted, rows newly retired). Raises StorageError when a key is not the
        hash of its config.
        """
        now = datetime.now(UTC)
        rows = []
        for study, (study_file, configs) in studies.items():
            if not isinstance(study, str) or not study.strip() or len(study) > 200:
                raise StorageError(f"study={study!r} must be a non-empty name of at most 200 characters")
            for config_hash, config in configs.items():
                actual = compute_measurement_config_hash(config)
                if actual != config_hash:
                    raise StorageError(f"configs[{config_hash!r}] hashes to {actual!r}: keys must be config hashes")
                rows.append({**R.config_row(study, config_hash, config, now), "study_file": study_file,
                             "retired_at": None})
        table = R.rows_to_table(rows) if rows else None
        keep = sorted(set(unreadable_files))
        self._ready()

        def work(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
            if table is not None:
                self._insert(con, "experiment_configs", table,
                             f"INSERT OR REPLACE INTO experiment_configs BY NAME SELECT * FROM {_STAGING}")
            retired = con.execute(
                "UPDATE experiment_configs AS c SET retired_at = ? "
                "WHERE c.retired_at IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM (SELECT unnest(?::VARCHAR[]) AS h, unnest(?::VARCHAR[]) AS s) AS cur "
                "                WHERE cur.h = c.config_hash AND cur.s = c.study) "
                "AND coalesce(c.study_file, c.study || '.yaml') NOT IN (SELECT unnest(?::VARCHAR[])) "
                "RETURNING c.config_hash",
                [now, [r["config_hash"] for r in rows], [r["study"] for r in rows], keep],
            ).fetchall()
            return len(rows), len(retired)

        return self._write(work)


    def write_runs(self, records: Sequence[RunRecord]) -> dict[str, int]:
        """Write the rows of ``records`` to every measurement table in ONE transaction; return {table: rows written}.

        Each record is one run, identified by (config_hash, hardware_id, run_id). A run already stored
        (a retry) has its old rows replaced, wherever its run_date was; no other run is deleted or
        changed. An experiment_results row without a study takes the study from experiment_configs
        when exactly one study registered the config. The statistics of the (config_hash,
        hardware_id, run_date) groups touched are recomputed in the same transaction (stats.py).

        Raises StorageError (nothing written) when ``records`` is empty, holds something else than
        RunRecords, or repeats a run; WriteVerificationError when the rows counted back differ.
        """
        batch = _Batch.of(records)
        self._ready()
        scope: dict[str, Any] = {}  # the run_dates the write covers, found inside the transaction

        def bounds() -> tuple[date, date]:
            return scope["low"], scope["high"]

        checks = [
            _Check(name,
                   f"SELECT count(*), count(*) FILTER (WHERE t.run_date = k.run_date) FROM {name} AS t "
                   "JOIN _llem_keys AS k ON t.config_hash = k.config_hash AND t.hardware_id = k.hardware_id "
                   "AND t.run_id = k.run_id WHERE t.run_date BETWEEN ? AND ?",
                   bounds, batch.tables[name].num_rows, batch.detail(name))
            for name in PARTITIONED_TABLES
        ]

        def work(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
            # Stays registered until the connection closes: the checks after COMMIT join on it.
            con.register("_llem_keys", batch.keys)
            # Days on which these runs already have rows (a retry may carry another run_date): their rows
            # are replaced too, and their statistics recomputed.
            earlier = con.sql(
                "SELECT DISTINCT m.config_hash, m.hardware_id, m.run_date FROM partition_manifest AS m "
                "JOIN _llem_keys AS k ON m.config_hash = k.config_hash AND m.hardware_id = k.hardware_id "
                "AND m.run_id = k.run_id"
            ).to_arrow_table()
            groups = pa.concat_tables([
                batch.keys.select(["config_hash", "hardware_id", "run_date"]),
                earlier.cast(pa.schema([("config_hash", pa.string()), ("hardware_id", pa.string()),
                                        ("run_date", pa.date32())])),
            ]).group_by(["config_hash", "hardware_id", "run_date"]).aggregate([])
            days = groups.column("run_date").to_pylist()
            scope["low"], scope["high"] = min(days), max(days)
            # The run_date bounds are redundant with the key join but let DuckDB skip row groups by their
            # min/max (zone maps): the DELETE and the checks read only the row groups of those days.
            for name in PARTITIONED_TABLES:
                con.execute(
                    f"DELETE FROM {name} WHERE run_date BETWEEN ? AND ? AND (config_hash, hardware_id, run_id) IN "
                    "(SELECT config_hash, hardware_id, run_id FROM _llem_keys)",
                    list(bounds()),
                )
            counts: dict[str, int] = {}
            _check_columns(con, {name: t for name, t in batch.tables.items() if t.num_rows})
            for name in PARTITIONED_TABLES:
                table = batch.tables[name]
                counts[name] = table.num_rows
                if table.num_rows == 0:
                    continue
                self._insert(con, name, table, f"INSERT INTO {name} BY NAME SELECT * FROM {_STAGING}")
            if any(r.study is None for r in batch.records):
                con.execute(
                    "UPDATE experiment_results AS r SET study = c.study FROM ("
                    "  SELECT config_hash, min(study) AS study FROM experiment_configs GROUP BY config_hash "
                    "  HAVING count(DISTINCT study) = 1"
                    ") AS c WHERE r.config_hash = c.config_hash AND r.study IS NULL "
                    "AND (r.config_hash, r.hardware_id, r.run_id) IN (SELECT config_hash, hardware_id, run_id FROM _llem_keys)"
                )
            stats.refresh(con, groups)
            return counts

        def manifest(con: duckdb.DuckDBPyConnection, seq: int, now: datetime, pid: int) -> list[tuple[Any, ...]]:
            con.execute(
                "DELETE FROM partition_manifest WHERE (config_hash, hardware_id, run_id) IN "
                "(SELECT config_hash, hardware_id, run_id FROM _llem_keys)"
            )
            rows = batch.manifest_rows()
            n = len(rows)
            con.register("_llem_manifest", pa.table({
                "table_name": pa.array([r[0] for r in rows], pa.string()),
                "run_date": pa.array([r[1] for r in rows], pa.date32()),
                "config_hash": pa.array([r[2] for r in rows], pa.string()),
                "hardware_id": pa.array([r[3] for r in rows], pa.string()),
                "run_id": pa.array([r[4] for r in rows], pa.string()),
                "row_count": pa.array([r[5] for r in rows], pa.int64()),
                "written_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
                "writer_pid": pa.array([pid] * n, pa.int32()),
                "write_seq": pa.array([seq] * n, pa.int64()),
            }))
            con.execute("INSERT INTO partition_manifest BY NAME SELECT * FROM _llem_manifest")
            con.unregister("_llem_manifest")
            return rows

        return self._write(work, checks, manifest)

    # ------------------------------------------------------------------ reads
    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        """Run one read-only SELECT/EXPLAIN with parameters; return the rows as a pyarrow Table.

        Waits (jittered backoff) while a writer holds the file; raises ReadOnlyViolation for any
        other statement and StorageError when the database does not exist. File access from SQL
        (read_csv, COPY, ATTACH) is disabled on this connection.
        """
        check_read_only(sql)
        with self._read() as con:
            return con.sql(sql, params=params).to_arrow_table() if params else con.sql(sql).to_arrow_table()

    # Selects the rows of one run; config_hash / hardware_id narrow it when not NULL (parameters of _run_params).
    _RUN_WHERE = "run_id = ? AND (?::VARCHAR IS NULL OR config_hash = ?) AND (?::VARCHAR IS NULL OR hardware_id = ?)"

    @staticmethod
    def _run_params(run_id: str, config_hash: str | None, hardware_id: str | None) -> list[Any]:
        """Return the parameters of ``_RUN_WHERE`` for run ``run_id`` (narrowed by the others when given)."""
        R.check_run_id(run_id)
        if config_hash is not None:
            R.check_config_hash(config_hash)
        hw = None if hardware_id is None else str(hardware_id)
        return [run_id, config_hash, config_hash, hw, hw]

    def read_result(self, run_id: str, *, config_hash: str | None = None, hardware_id: str | None = None) -> ExperimentResult:
        """Return the stored ExperimentResult of run ``run_id`` (narrowed by config_hash / hardware_id when given).

        Raises LookupError when no result of that run is stored, StorageError when the run id names
        results of several configs or hardware (pass config_hash / hardware_id).
        """
        table = self.query("SELECT config_hash, hardware_id, result_json FROM experiment_results WHERE "
                           + self._RUN_WHERE + " ORDER BY config_hash, hardware_id LIMIT 2",
                           self._run_params(run_id, config_hash, hardware_id))
        if table.num_rows == 0:
            raise LookupError(f"no experiment result stored for run_id={run_id!r} "
                              f"(config_hash={config_hash!r}, hardware_id={hardware_id!r}) in {self.path}")
        if table.num_rows > 1:
            keys = list(zip(table.column("config_hash").to_pylist(), table.column("hardware_id").to_pylist(), strict=True))
            raise StorageError(f"run_id={run_id!r} holds results of several measurements {keys}: pass config_hash= "
                               "and hardware_id= to pick one")
        return ExperimentResult.model_validate_json(table.column("result_json")[0].as_py())

    def measurement_result(self, measurement_key: str, run_date: date | str) -> ExperimentResult:
        """Return the ExperimentResult of the latest run (by end time) of one measurement partition: the runs
        stored with ``measurement_key`` (the Dagster partition's measurement key) on ``run_date``.

        Raises LookupError when that partition has no stored run.
        """
        day = R.as_run_date(run_date)
        table = self.query(
            "SELECT result_json FROM experiment_results WHERE measurement_key = ? AND run_date = ? "
            "ORDER BY end_time DESC, run_id DESC LIMIT 1",
            [str(measurement_key), day],
        ) if self.path.is_file() else pa.table({})
        if table.num_rows == 0:
            raise LookupError(f"no stored run of measurement {measurement_key!r} on {day} in {self.path}")
        return ExperimentResult.model_validate_json(table.column("result_json")[0].as_py())

    def read_run(self, table: str, run_id: str, *, config_hash: str | None = None,
                 hardware_id: str | None = None) -> pa.Table:
        """Return the rows of ``table`` (a measurement table) of run ``run_id`` as a pyarrow Table.

        Samples come ordered by process, device and time; requests by process and request index;
        process results by process; baselines by device UUID. Raises StorageError for a table outside
        the allow-list or a malformed id.
        """
        name = checked_table(table, PARTITIONED_TABLES)
        order = _READ_ORDER.get(name, "run_date")
        return self.query(f"SELECT * FROM {name} WHERE " + self._RUN_WHERE + f" ORDER BY config_hash, hardware_id, {order}",
                          self._run_params(run_id, config_hash, hardware_id))

    def previous_result(self, config_hash: str, hardware_id: str, before_utc: datetime,
                        exclude_run_id: str | None = None) -> tuple[float, date, str] | None:
        """Return (j_per_token in J per output token, run_date, run_id) of the latest stored run of
        ``config_hash`` on ``hardware_id`` that ended before ``before_utc`` (an aware datetime), other
        than ``exclude_run_id``; None when there is none (or no database yet). Like with like: runs of
        other hardware (another GPU model, simulated vs real) never count."""
        R.check_config_hash(config_hash)
        if before_utc.tzinfo is None:
            raise StorageError(f"before_utc={before_utc.isoformat()} is naive: pass a timezone-aware UTC datetime")
        if not self.path.is_file():
            return None
        table = self.query(
            "SELECT j_per_token, run_date, run_id FROM experiment_results WHERE config_hash = ? AND hardware_id = ? "
            "AND run_id IS DISTINCT FROM ? AND end_time < ? ORDER BY end_time DESC, run_id DESC LIMIT 1",
            [config_hash, str(hardware_id), exclude_run_id, before_utc],
        ).to_pylist()
        if not table:
            return None
        row = table[0]
        return float(row["j_per_token"]), row["run_date"], str(row["run_id"])

    def config_stats(self, config_hash: str, hardware_id: str, run_date: date | str) -> dict[str, Any] | None:
        """Return the ``config_stats`` row of (config_hash, hardware_id, run_date) as a dict, or None when no run
        of it is stored: n_runs, j_per_token_{median,mean,std,cv,ci_low,ci_high} (J per output token; cv a
        fraction), the same for tokens_per_s (tokens/s), and the descriptive columns of the view."""
        R.check_config_hash(config_hash)
        day = R.as_run_date(run_date)
        if not self.path.is_file():
            return None
        rows = self.query("SELECT * FROM config_stats WHERE config_hash = ? AND hardware_id = ? AND run_date = ?",
                          [config_hash, str(hardware_id), day]).to_pylist()
        return rows[0] if rows else None

    def row_counts(self) -> dict[str, int]:
        """Return {table: row count} for every llem table (0 for all when the file does not exist yet)."""
        if not self.path.is_file():
            return dict.fromkeys(TABLES, 0)
        with self._read() as con:
            present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
            return {
                t: (con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] if t in present else 0)  # type: ignore[index]
                for t in TABLES
            }


class _Batch:
    """The rows of a batch of runs, ready to insert: one pyarrow table per measurement table, each row
    carrying its run's key columns, plus the keys (one row per run) and each run's row counts."""

    def __init__(self, records: list[RunRecord], tables: dict[str, pa.Table], counts: dict[str, list[int]]) -> None:
        self.records = records
        self.tables = tables
        self.counts = counts
        self.keys = pa.table({
            "run_date": pa.array([r.run_date for r in records], pa.date32()),
            "config_hash": pa.array([r.config_hash for r in records], pa.string()),
            "hardware_id": pa.array([r.hardware_id for r in records], pa.string()),
            "run_id": pa.array([r.run_id for r in records], pa.string()),
        })

    @classmethod
    def of(cls, records: Sequence[RunRecord]) -> _Batch:
        """Return the batch of ``records``; raise StorageError when it is empty, not RunRecords or repeats a run."""
        if isinstance(records, RunRecord) or not isinstance(records, Sequence):
            raise StorageError(f"records={type(records).__name__}: pass a sequence of RunRecord (write_run takes one)")
        records = list(records)
        if not records:
            raise StorageError("records=[]: write_runs needs at least one RunRecord")
        seen: dict[tuple[str, str, str], int] = {}
        for i, r in enumerate(records):
            if not isinstance(r, RunRecord):
                raise StorageError(f"records[{i}] is a {type(r).__name__}: build a RunRecord (RunRecord.build(result, ...))")
            if r.key in seen:
                raise StorageError(f"records[{i}] repeats the run (config_hash, hardware_id, run_id)={r.key} of "
                                   f"records[{seen[r.key]}]: one record per run in a write")
            seen[r.key] = i
        rows: dict[str, list[dict[str, Any]]] = {t: [] for t in
                                                 ("experiment_results", "process_results", "environment_snapshots", "baselines")}
        counts: dict[str, list[int]] = {t: [] for t in PARTITIONED_TABLES}
        for r in records:
            key = r.key_columns()
            made = {
                "experiment_results": [R.experiment_result_row(r)],
                "process_results": R.process_result_rows(r.processes, key),
                "environment_snapshots": [R.environment_row(r.environment, key)] if r.environment is not None else [],
                "baselines": R.baseline_rows(r.baseline, key) if r.baseline else [],
            }
            for name, made_rows in made.items():
                rows[name] += made_rows
                counts[name].append(len(made_rows))
            counts["power_samples"].append(r.power_samples.num_rows)
            counts["requests"].append(r.requests.num_rows)
        tables = {name: R.rows_to_table(found) for name, found in rows.items()}
        tables["power_samples"] = _keyed(records, "power_samples")
        tables["requests"] = _keyed(records, "requests")
        return cls(records, tables, counts)

    def manifest_rows(self) -> list[tuple[Any, ...]]:
        """Return (table_name, run_date, config_hash, hardware_id, run_id, rows) per table and run."""
        return [(name, r.run_date, r.config_hash, r.hardware_id, r.run_id, self.counts[name][i])
                for name in PARTITIONED_TABLES for i, r in enumerate(self.records)]

    def detail(self, name: str) -> Callable[[duckdb.DuckDBPyConnection], str]:
        """Return a function naming the runs whose rows in table ``name`` differ from the rows sent.

        Runs only after a failed check (one grouped count), so the happy path pays nothing.
        """
        sent = self.keys.append_column("n", pa.array(self.counts[name], pa.int64()))

        def detail(con: duckdb.DuckDBPyConnection) -> str:
            con.register("_llem_sent", sent)
            try:
                rows = con.execute(
                    "WITH found AS (SELECT t.config_hash, t.hardware_id, t.run_id, count(*) AS n, "
                    "  count(*) FILTER (WHERE t.run_date = s.run_date) AS same_day "
                    f"  FROM {name} AS t JOIN _llem_sent AS s ON t.config_hash = s.config_hash "
                    "  AND t.hardware_id = s.hardware_id AND t.run_id = s.run_id GROUP BY ALL) "
                    "SELECT s.run_date, s.config_hash, s.hardware_id, s.run_id, s.n, coalesce(f.n, 0), "
                    "       coalesce(f.same_day, 0) "
                    "FROM _llem_sent AS s LEFT JOIN found AS f USING (config_hash, hardware_id, run_id) "
                    "WHERE s.n <> coalesce(f.n, 0) OR s.n <> coalesce(f.same_day, 0) ORDER BY ALL"
                ).fetchall()
            finally:
                con.unregister("_llem_sent")
            shown = "; ".join(
                f"(run_date={d}, config_hash={h}, hardware_id={hw}, run_id={r}) expected {e} found {f}"
                + (f" ({m} on that run_date)" if m != f else "")
                for d, h, hw, r, e, f, m in rows[:5]
            )
            more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
            return f"{len(rows)} run(s): {shown}{more}" if rows else "the runs written"

        return detail


def _keyed(records: list[RunRecord], field: str) -> pa.Table:
    """Return the ``field`` tables (power_samples or requests) of ``records`` concatenated, each row with its
    run's key columns; an empty table when no record has rows. Raises StorageError naming the field when
    the records' column types cannot be unified."""
    parts = [(i, getattr(r, field)) for i, r in enumerate(records) if getattr(r, field).num_rows]
    if not parts:
        return pa.table({})
    try:
        combined = pa.concat_tables([t for _, t in parts], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise StorageError(f"RunRecord.{field}: the records' columns have types that do not combine ({exc}): "
                           "give every record the same column types") from exc
    owners = [records[i] for i, _ in parts]
    # One index per row into the owning record: the key columns are dictionary-encoded (no string per row).
    idx = pa.array(np.repeat(np.arange(len(parts), dtype=np.int32), [t.num_rows for _, t in parts]))
    keys = {
        "run_date": pa.array([r.run_date for r in owners], pa.date32()).take(idx),
        "config_hash": pa.DictionaryArray.from_arrays(idx, pa.array([r.config_hash for r in owners], pa.string())),
        "hardware_id": pa.DictionaryArray.from_arrays(idx, pa.array([r.hardware_id for r in owners], pa.string())),
        "run_id": pa.DictionaryArray.from_arrays(idx, pa.array([r.run_id for r in owners], pa.string())),
    }
    for pos, name in enumerate(RUN_KEY_COLUMNS):
        combined = combined.add_column(pos, name, keys[name])
    return combined


def _record_write(con: duckdb.DuckDBPyConnection, manifest: ManifestWriter, seq: int, store_id: str) -> list[dict[str, Any]]:
    """Record write number ``seq`` in the transaction (manifest rows, write_sequence); return its journal lines.

    The journal lines are the manifest rows of this write (journal.py gives the format).
    """
    now = datetime.now(UTC)
    pid = os.getpid()
    rows = manifest(con, seq, now, pid)
    con.execute("UPDATE write_sequence SET seq = ?, written_at = ?, writer_pid = ?", [seq, now, pid])
    at = now.isoformat()
    return [{"seq": seq, "store": store_id, "table": t, "run_date": d.isoformat(), "config_hash": h, "hardware_id": hw,
             "run_id": r, "rows": int(n), "pid": pid, "at": at} for t, d, h, hw, r, n in rows]


def _quiet(con: duckdb.DuckDBPyConnection) -> None:
    """Turn off DuckDB's progress bar on ``con`` (per connection); return None.

    DuckDB prints it to the process's stdout for any statement over 2 s, even when stdout is not a
    terminal: a store must not write into its caller's output (a loaded machine made a writer's
    "done" line unreadable in the reliability case).
    """
    con.execute("SET enable_progress_bar = false")


def _check_columns(con: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table]) -> None:
    """Raise StorageError when a table to insert has duplicate columns or columns its llem table lacks; return None."""
    known: dict[str, set[str]] = {name: set() for name in tables}
    for table_name, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE schema_name = 'main' "
        "AND table_name IN (SELECT unnest(?::VARCHAR[]))", [list(tables)]
    ).fetchall():
        known[table_name].add(column)
    for name, table in tables.items():
        dupes = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
        if dupes:
            raise StorageError(f"tables[{name!r}] has duplicate column(s) {dupes}")
        unknown = [c for c in table.column_names if c not in known[name]]
        if unknown:
            raise StorageError(f"tables[{name!r}] has unknown column(s) {unknown}; {name} has {sorted(known[name])}")
