"""ResultStore: the transactional DuckDB store of llem results.

Connections are short (open, one transaction, close) because DuckDB lets one process write a file
and a reader also blocks writers. Every write is one transaction that replaces a partition
(run_date, config_hash): DELETE it from every affected table, INSERT the new rows from pyarrow
tables, COMMIT — so writing the same run twice leaves the same rows, and a failure or a crash
leaves the old rows or the new ones, never half. Lock conflicts are retried with jittered
exponential backoff (locking.py). All values travel as parameters; table names come from the
allow-list in schema.py.

Every partition write verifies its rows twice (a partition once went missing although its writer
reported success):

- before COMMIT, inside the transaction: per written table, the rows now in the replaced
  partition(s) must equal the rows sent, all of them with the run_id sent. A mismatch rolls back
  (nothing written) and raises WriteVerificationError naming table, partition, expected and found.
  This also catches a transaction that an error invalidated without propagating: DuckDB >= 2.0
  then reports COMMIT as success and discards everything (duckdb/duckdb#22674, #25300).
- after COMMIT: ``CHECKPOINT`` (the file's durable state; closing the connection would checkpoint
  anyway, so this costs nothing extra) and the same counts read again on the same connection in a
  new transaction. A mismatch here means committed rows are not what was sent. The write is
  idempotent (it replaces the partition), so it is retried ONCE whole, with a
  WriteVerificationWarning naming the mismatch (a recovered loss is reported, never silent); a
  second mismatch raises WriteVerificationError (``committed=True``).

Store writes to one file are serialized within a process (a lock per path) and across processes
(``locking.write_lock``: an exclusive flock on ``<db>.write.lock`` held from before
``duckdb.connect`` until after ``close``), so no other store write can land between a COMMIT and its
check, and no writer can open the file while another one is between its open and its close. The
checks cost one count per table over the partition's rows (write_batch adds the keys' min/max so
DuckDB skips other row groups).

Loss after the writer closed (reproduced once in 51 runs of 8 writers x 50 partitions: a partition
whose write had passed both checks was missing at the end). Cause: DuckDB 2.0.1 reads the
database header before it takes its file lock, so a second writer could open the file with the
header from before the first writer's last commit and checkpoint over it (locking.py explains and
the writer lock closes it). So that any such loss is impossible to miss, every partition write also:

- records, in its transaction, one ``partition_manifest`` row per (table, partition) replaced (rows,
  run_id, writer pid, time, write number) and bumps ``write_sequence``;
- appends the same rows to the write journal ``<db>.writes.jsonl`` after COMMIT + CHECKPOINT +
  verification, still under the writer lock (journal.py): it survives a loss of the whole
  transaction, which the manifest inside the file does not;
- starts with a cheap audit (audit.quick_totals: one count per table against the manifest's sums,
  and the file's write number against the journal's last one); a difference runs the full audit and
  issues a PartitionLostWarning naming each partition (table, partition, expected and found rows)
  after the write. The write itself goes ahead: a loss never blocks new results.

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
import pyarrow as pa
import pyarrow.compute as pc

from llem_pipeline import paths
from llem_pipeline.domain import ExperimentConfig, ExperimentResult, compute_measurement_config_hash
from llem_pipeline.storage import audit as A
from llem_pipeline.storage import journal, locking
from llem_pipeline.storage import rows as R
from llem_pipeline.storage.audit import Discrepancy
from llem_pipeline.storage.errors import (
    LockTimeoutError,
    PartitionLostWarning,
    StorageError,
    WriteVerificationError,
    WriteVerificationWarning,
)
from llem_pipeline.storage.run_folder import load_run_folder
from llem_pipeline.storage.schema import (
    PARTITION_COLUMNS,
    PARTITIONED_TABLES,
    REFRESH_TREND_SQL,
    TABLES,
    apply_schema,
    checked_table,
)
from llem_pipeline.storage.sql_guard import check_read_only

T = TypeVar("T")
# Records the manifest rows of one write: (connection, write number, time, pid) -> the rows recorded,
# as (table_name, run_date, config_hash, run_id, row_count).
ManifestWriter = Callable[[duckdb.DuckDBPyConnection, int, datetime, int], list[tuple[Any, ...]]]
_STAGING = "_llem_rows"  # the one name under which incoming arrow tables are registered
READ_CONFIG: dict[str, Any] = {"enable_external_access": False}
_PATH_LOCKS: dict[Path, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _path_lock(path: Path) -> threading.Lock:
    """Return the process-wide lock serializing store writes to ``path``."""
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(path, threading.Lock())


@dataclass(frozen=True)
class _Check:
    """What one table must hold after a write: ``sql`` returns one row (rows in the partitions, rows
    of them with the run_id sent); both must equal ``expected``. ``detail`` explains a mismatch."""

    table: str
    sql: str
    params: tuple[Any, ...]
    expected: int
    detail: Callable[[duckdb.DuckDBPyConnection], str]


class ResultStore:
    """The llem DuckDB file: schema, idempotent partition writes, read-only queries.

    ``path`` defaults to ``llem_pipeline.paths.duckdb_path()`` (``LLEM_DUCKDB`` or
    ``<data_dir>/llem.duckdb``); ``data_dir`` (default ``paths.data_dir()``) bounds the run folders
    ``write_run_folder`` accepts; ``lock_timeout_s`` is the total time, s, a call waits for the file
    lock (default 120 s or ``LLEM_DUCKDB_LOCK_TIMEOUT_S``); ``connection_config`` is passed to
    ``duckdb.connect`` for writes (e.g. a DuckDBResource's connection_config).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        data_dir: str | Path | None = None,
        lock_timeout_s: float | None = None,
        connection_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path).expanduser().resolve() if path is not None else paths.duckdb_path()
        self._data_dir = Path(data_dir).expanduser().resolve() if data_dir is not None else None
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

    @property
    def data_dir(self) -> Path:
        """The folder run folders must live in (``data_dir`` argument or ``paths.data_dir()``)."""
        return self._data_dir if self._data_dir is not None else paths.data_dir()

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
        with a WriteVerificationWarning, then raises); see the module docstring. ``manifest`` (partition
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
            warnings.warn(WriteVerificationWarning(f"{exc} Rewriting the partition(s) once."), stacklevel=3)
            out = run()
        if findings:
            shown = "\n  ".join(str(f) for f in findings[:20])
            more = f"\n  ... and {len(findings) - 20} more" if len(findings) > 20 else ""
            warnings.warn(PartitionLostWarning(
                f"{str(self.path)!r} does not hold {len(findings)} partition write(s) the store made "
                f"(found by the audit before this write, which went ahead):\n  {shown}{more}\n"
                "Rewrite them from their run folders (write_run_folder) and keep the file, its .wal and "
                f"{self.journal_path.name} for the report; `llem sql --audit` lists what is still missing."
            ), stacklevel=3)
        return out

    def _precheck(self, con: duckdb.DuckDBPyConnection) -> tuple[int, str, list[Discrepancy]]:
        """Audit cheaply before a partition write; return (this write's number, store_id, discrepancies to warn about).

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
        """Raise WriteVerificationError unless every check's table holds exactly the rows sent; return None."""
        for check in checks:
            try:
                rows = con.execute(check.sql, list(check.params)).fetchall()
            except duckdb.TransactionException as exc:
                if committed or "aborted" not in str(exc):
                    raise
                # DuckDB >= 2.0 invalidates a transaction on ANY error and then reports COMMIT as
                # success while discarding everything: an error swallowed during the write would
                # otherwise be a silent loss.
                raise WriteVerificationError(
                    f"{check.table}: the transaction was aborted by an earlier error that did not propagate "
                    f"(DuckDB: {exc}); COMMIT would have reported success and written nothing. Rolled back, "
                    "nothing written: write again.",
                    table=check.table, expected=check.expected, found=0, committed=False,
                ) from exc
            found, of_run = (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)
            if found == check.expected and of_run == check.expected:
                continue
            when = (
                "after COMMIT: the committed rows differ from the rows sent"
                if committed else "before COMMIT: rolled back, nothing written"
            )
            raise WriteVerificationError(
                f"{check.table}: expected {check.expected} row(s), found {found} ({of_run} of the run_id sent) "
                f"in {check.detail(con)} ({when}). This is a storage fault, not bad input: keep "
                f"{str(self.path)!r} and its .wal for the report, then write again.",
                table=check.table, expected=check.expected, found=found, committed=committed,
            )

    def _insert(self, con: duckdb.DuckDBPyConnection, name: str, table: pa.Table, sql: str,
                params: Sequence[Any] = ()) -> None:
        """Register ``table`` as the staging view and run ``sql`` (an INSERT INTO ``name``); return None.

        The one place rows enter a partitioned table (the verification counts what this inserted).
        """
        # The registration dies with the connection; unregistering in a `finally` would mask the
        # real error with "transaction is aborted".
        con.register(_STAGING, table)
        con.execute(sql, list(params))
        con.unregister(_STAGING)

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

        Checks every partition of every partitioned table against partition_manifest (rows changed
        behind the store's back), and the write journal (``<db>.writes.jsonl``) against the manifest
        (committed writes that vanished from the file with their manifest rows). Each Discrepancy names
        the table, the partition, the rows expected and found, and who wrote it when. Read-only; one
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
        table = R.rows_to_table(rows)
        self._ready()

        def work(con: duckdb.DuckDBPyConnection) -> int:
            con.register(_STAGING, table)
            con.execute(f"INSERT OR REPLACE INTO experiment_configs BY NAME SELECT * FROM {_STAGING}")
            con.unregister(_STAGING)
            return table.num_rows

        return self._write(work)

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
                con.register(_STAGING, table)
                con.execute(f"INSERT OR REPLACE INTO experiment_configs BY NAME SELECT * FROM {_STAGING}")
                con.unregister(_STAGING)
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

    def write_run_folder(
        self,
        run_dir: str | Path,
        *,
        run_date: date | str,
        config_hash: str,
        run_id: str,
        study: str | None = None,
    ) -> dict[str, int]:
        """Validate a run folder and write all of it in one transaction; return {table: rows written}.

        Replaces the partition (run_date, config_hash) in every partitioned table (a table whose file
        is absent ends with 0 rows for it). Raises RunFolderError (nothing written) when the folder
        lies outside the data dir or breaks the contract.
        """
        folder = load_run_folder(
            run_dir, data_dir=self.data_dir, run_date=run_date, config_hash=config_hash, run_id=run_id, study=study
        )
        return self.write_tables(run_date, config_hash, run_id, folder.tables)

    def write_tables(
        self,
        run_date: date | str,
        config_hash: str,
        run_id: str,
        tables: Mapping[str, pa.Table],
    ) -> dict[str, int]:
        """Replace partition (run_date, config_hash) of the given tables in ONE transaction; return {table: rows}.

        ``tables`` maps names from the allow-list (experiment_results, process_results,
        environment_snapshots, baselines, power_samples, requests) to pyarrow tables whose columns are
        a subset of the table's columns; partition columns may be present (they must then equal the
        arguments) or absent (filled in). An experiment_results row without a study takes the study
        from experiment_configs when exactly one study registered the config.
        """
        day = R.as_run_date(run_date)
        R.check_config_hash(config_hash)
        R.check_run_id(run_id)
        if not tables:
            raise StorageError("write_tables got no tables: pass {table_name: pyarrow.Table, ...}")
        prepared: dict[str, pa.Table] = {}
        for name, table in tables.items():
            checked_table(name, PARTITIONED_TABLES)
            if not isinstance(table, pa.Table):
                raise StorageError(f"tables[{name!r}] is a {type(table).__name__}, expected a pyarrow.Table")
            prepared[name] = _strip_partition(name, table, day, config_hash, run_id)
        self._ready()
        params = [day, config_hash, run_id]
        where = f"partition (run_date={day}, config_hash={config_hash}, run_id={run_id})"
        checks = [
            _Check(name, f"SELECT count(*), count(*) FILTER (WHERE run_id = ?) FROM {name} "
                         "WHERE run_date = ? AND config_hash = ?",
                   (run_id, day, config_hash), table.num_rows, lambda _con: where)
            for name, table in prepared.items()
        ]

        def work(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
            counts: dict[str, int] = {}
            for name in prepared:
                con.execute(f"DELETE FROM {name} WHERE run_date = ? AND config_hash = ?", [day, config_hash])
            for name, table in prepared.items():
                counts[name] = table.num_rows
                if table.num_rows == 0:
                    continue
                _check_columns(con, name, table)
                self._insert(
                    con, name, table,
                    f"INSERT INTO {name} BY NAME SELECT ?::DATE AS run_date, ?::VARCHAR AS config_hash, "
                    f"?::VARCHAR AS run_id, * FROM {_STAGING}",
                    params,
                )
            if "experiment_results" in prepared:
                con.execute(REFRESH_TREND_SQL.format(where="config_hash = ?"), [config_hash])
            if counts.get("experiment_results"):
                con.execute(
                    "UPDATE experiment_results SET study = ("
                    "  SELECT min(study) FROM experiment_configs c WHERE c.config_hash = ? "
                    "  HAVING count(DISTINCT study) = 1"
                    ") WHERE run_date = ? AND config_hash = ? AND study IS NULL",
                    [config_hash, day, config_hash],
                )
            return counts

        names = list(prepared)
        sizes = [prepared[n].num_rows for n in names]

        def manifest(con: duckdb.DuckDBPyConnection, seq: int, now: datetime, pid: int) -> list[tuple[Any, ...]]:
            con.execute(
                "DELETE FROM partition_manifest WHERE run_date = ? AND config_hash = ? "
                "AND table_name IN (SELECT unnest(?::VARCHAR[]))", [day, config_hash, names],
            )
            con.execute(
                "INSERT INTO partition_manifest SELECT unnest(?::VARCHAR[]), ?::DATE, ?, ?, unnest(?::BIGINT[]), ?, ?, ?",
                [names, day, config_hash, run_id, sizes, now, pid, seq],
            )
            return [(n, day, config_hash, run_id, k) for n, k in zip(names, sizes, strict=True)]

        return self._write(work, checks, manifest)

    def write_batch(self, tables: Mapping[str, pa.Table]) -> dict[str, int]:
        """Replace MANY partitions in ONE transaction (bulk ingest / backfill); return {table: rows written}.

        Every table must carry the partition columns run_date, config_hash, run_id on every row. The
        partitions replaced are all (run_date, config_hash) pairs found in any of the tables: each is
        deleted from every given table, then all rows are inserted. Each partition must come from a
        single run_id. Raises StorageError (nothing written) on malformed ids or mixed run ids.
        """
        if not tables:
            raise StorageError("write_batch got no tables: pass {table_name: pyarrow.Table, ...}")
        keys: list[pa.Table] = []
        for name, table in tables.items():
            checked_table(name, PARTITIONED_TABLES)
            if not isinstance(table, pa.Table):
                raise StorageError(f"tables[{name!r}] is a {type(table).__name__}, expected a pyarrow.Table")
            missing = [c for c in PARTITION_COLUMNS if c not in table.column_names]
            if missing:
                raise StorageError(f"tables[{name!r}] lacks partition column(s) {missing}: write_batch needs them per row")
            keys.append(_partition_keys(name, table))
        key_table = pa.concat_tables(keys).group_by(list(PARTITION_COLUMNS)).aggregate([])
        runs = key_table.group_by(["run_date", "config_hash"]).aggregate([("run_id", "count")])
        mixed = pc.sum(pc.greater(runs.column("run_id_count"), 1)).as_py()
        if mixed:
            raise StorageError(f"{mixed} partition(s) carry rows of more than one run_id: one run per (run_date, config_hash)")
        self._ready()
        # The key ranges are redundant with the key join but let DuckDB skip row groups by their
        # min/max (zone maps): the DELETE and the checks read only the row groups that may hold the
        # partitions, not the whole table (on 9 M samples: 66 ms -> 18 ms per check).
        bounds = (pc.min(key_table.column("run_date")).as_py(), pc.max(key_table.column("run_date")).as_py(),
                  pc.min(key_table.column("config_hash")).as_py(), pc.max(key_table.column("config_hash")).as_py())
        checks = [
            _Check(name, f"SELECT count(*), count(*) FILTER (WHERE t.run_id = k.run_id) FROM {name} t "
                         "JOIN _llem_keys k ON t.run_date = k.run_date AND t.config_hash = k.config_hash "
                         "WHERE t.run_date BETWEEN ? AND ? AND t.config_hash BETWEEN ? AND ?",
                   bounds, table.num_rows, _batch_detail(name, table))
            for name, table in tables.items()
        ]

        def work(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
            # Stays registered until the connection closes: the checks after COMMIT join on it.
            con.register("_llem_keys", key_table)  # (run_date, config_hash, run_id) of the partitions replaced
            for name in tables:
                con.execute(
                    f"DELETE FROM {name} WHERE run_date BETWEEN ? AND ? AND config_hash BETWEEN ? AND ? "
                    "AND (run_date, config_hash) IN (SELECT run_date, config_hash FROM _llem_keys)",
                    list(bounds),
                )
            counts: dict[str, int] = {}
            for name, table in tables.items():
                counts[name] = table.num_rows
                if table.num_rows == 0:
                    continue
                _check_columns(con, name, table)
                self._insert(con, name, table, f"INSERT INTO {name} BY NAME SELECT * FROM {_STAGING}")
            if "experiment_results" in tables:
                con.execute(REFRESH_TREND_SQL.format(where="config_hash IN (SELECT config_hash FROM _llem_keys)"))
            if counts.get("experiment_results"):
                con.execute(
                    "UPDATE experiment_results r SET study = c.study FROM ("
                    "  SELECT config_hash, min(study) AS study FROM experiment_configs GROUP BY config_hash "
                    "  HAVING count(DISTINCT study) = 1"
                    ") c WHERE r.config_hash = c.config_hash AND r.study IS NULL "
                    "AND (r.run_date, r.config_hash) IN (SELECT run_date, config_hash FROM _llem_keys)"
                )
            return counts

        def manifest(con: duckdb.DuckDBPyConnection, seq: int, now: datetime, pid: int) -> list[tuple[Any, ...]]:
            con.execute(
                "DELETE FROM partition_manifest WHERE table_name IN (SELECT unnest(?::VARCHAR[])) "
                "AND run_date BETWEEN ? AND ? AND config_hash BETWEEN ? AND ? "
                "AND (run_date, config_hash) IN (SELECT run_date, config_hash FROM _llem_keys)",
                [list(tables), *bounds],
            )
            recorded: list[tuple[Any, ...]] = []
            for name, table in tables.items():
                # Rows per partition, counted by DuckDB from the Arrow table (0 for a partition this table lacks).
                con.register(_STAGING, table.select(["run_date", "config_hash"]))
                recorded += con.execute(
                    "INSERT INTO partition_manifest SELECT ?, k.run_date, k.config_hash, k.run_id, coalesce(s.n, 0), ?, ?, ? "
                    "FROM _llem_keys k LEFT JOIN (SELECT run_date::DATE AS run_date, config_hash::VARCHAR AS config_hash, "
                    f"count(*) AS n FROM {_STAGING} GROUP BY ALL) s "
                    "ON k.run_date = s.run_date AND k.config_hash = s.config_hash "
                    "RETURNING table_name, run_date, config_hash, run_id, row_count",
                    [name, now, pid, seq],
                ).fetchall()
                con.unregister(_STAGING)
            return recorded

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

    def read_result(self, config_hash: str, run_date: date | str | None = None) -> ExperimentResult:
        """Return the stored ExperimentResult of ``config_hash`` (latest run, or the latest of ``run_date``).

        Raises LookupError when no result is stored for it.
        """
        R.check_config_hash(config_hash)
        sql = "SELECT result_json FROM experiment_results WHERE config_hash = ?"
        params: list[Any] = [config_hash]
        if run_date is not None:
            sql += " AND run_date = ?"
            params.append(R.as_run_date(run_date))
        sql += " ORDER BY run_date DESC, end_time DESC, run_id DESC LIMIT 1"
        table = self.query(sql, params)
        if table.num_rows == 0:
            when = f" on {R.as_run_date(run_date)}" if run_date is not None else ""
            raise LookupError(f"no experiment result stored for config_hash={config_hash!r}{when} in {self.path}")
        return ExperimentResult.model_validate_json(table.column("result_json")[0].as_py())

    def read_partition(self, table: str, run_date: date | str, config_hash: str) -> pa.Table:
        """Return the rows of ``table`` for partition (run_date, config_hash) as a pyarrow Table.

        Samples come ordered by process, device and time; other tables by run_id and their index.
        """
        name = checked_table(table, PARTITIONED_TABLES)
        order = {
            "power_samples": "run_id, process_index, device_index, t_mono_s",
            "requests": "run_id, process_index, request_index",
            "process_results": "run_id, process_index",
            "baselines": "run_id, device_uuid",
        }.get(name, "run_id")
        return self.query(
            f"SELECT * FROM {name} WHERE run_date = ? AND config_hash = ? ORDER BY {order}",
            [R.as_run_date(run_date), R.check_config_hash(config_hash)],
        )

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


def _record_write(con: duckdb.DuckDBPyConnection, manifest: ManifestWriter, seq: int, store_id: str) -> list[dict[str, Any]]:
    """Record write number ``seq`` in the transaction (manifest rows, write_sequence); return its journal lines.

    The journal lines are the manifest rows of this write (journal.py gives the format).
    """
    now = datetime.now(UTC)
    pid = os.getpid()
    rows = manifest(con, seq, now, pid)
    con.execute("UPDATE write_sequence SET seq = ?, written_at = ?, writer_pid = ?", [seq, now, pid])
    at = now.isoformat()
    return [{"seq": seq, "store": store_id, "table": t, "run_date": d.isoformat(), "config_hash": h, "run_id": r,
             "rows": int(n), "pid": pid, "at": at} for t, d, h, r, n in rows]


def _quiet(con: duckdb.DuckDBPyConnection) -> None:
    """Turn off DuckDB's progress bar on ``con`` (per connection); return None.

    DuckDB prints it to the process's stdout for any statement over 2 s, even when stdout is not a
    terminal: a store must not write into its caller's output (a loaded machine made a writer's
    "done" line unreadable in the reliability case).
    """
    con.execute("SET enable_progress_bar = false")


def _batch_detail(name: str, table: pa.Table) -> Callable[[duckdb.DuckDBPyConnection], str]:
    """Return a function naming the partitions of ``table`` whose rows in ``name`` differ from the rows sent.

    Runs only after a failed check (it groups the sent rows per partition), so the happy path pays nothing.
    """

    def detail(con: duckdb.DuckDBPyConnection) -> str:
        con.register("_llem_sent", table.select(list(PARTITION_COLUMNS)))
        try:
            rows = con.execute(
                "WITH sent AS (SELECT run_date::DATE AS run_date, config_hash::VARCHAR AS config_hash, "
                "  count(*) AS n FROM _llem_sent GROUP BY ALL), "
                "found AS (SELECT t.run_date, t.config_hash, count(*) AS n, "
                f"  count(*) FILTER (WHERE t.run_id = k.run_id) AS mine FROM {name} t "
                "  JOIN _llem_keys k ON t.run_date = k.run_date AND t.config_hash = k.config_hash GROUP BY ALL) "
                "SELECT k.run_date, k.config_hash, k.run_id, coalesce(s.n, 0), coalesce(f.n, 0), coalesce(f.mine, 0) "
                "FROM _llem_keys k LEFT JOIN sent s USING (run_date, config_hash) "
                "LEFT JOIN found f USING (run_date, config_hash) "
                "WHERE coalesce(s.n, 0) <> coalesce(f.n, 0) OR coalesce(s.n, 0) <> coalesce(f.mine, 0) "
                "ORDER BY ALL"
            ).fetchall()
        finally:
            con.unregister("_llem_sent")
        shown = "; ".join(
            f"(run_date={d}, config_hash={h}, run_id={r}) expected {e} found {f} ({m} of that run)"
            for d, h, r, e, f, m in rows[:5]
        )
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        return f"{len(rows)} partition(s): {shown}{more}" if rows else "the partitions written"

    return detail


def _partition_keys(name: str, table: pa.Table) -> pa.Table:
    """Return the distinct (run_date date32, config_hash, run_id) of ``table`` after validating every id.

    Distinct keys are found first (cheap on dictionary-encoded columns), so validation touches one
    row per run, not one per sample.
    """
    keys = table.select(list(PARTITION_COLUMNS)).group_by(list(PARTITION_COLUMNS)).aggregate([])
    if keys.num_rows == 0:
        return pa.table({"run_date": pa.array([], pa.date32()), "config_hash": pa.array([], pa.string()),
                         "run_id": pa.array([], pa.string())})
    day = keys.column("run_date")
    if pa.types.is_dictionary(day.type):
        day = day.cast(day.type.value_type)
    if not pa.types.is_date32(day.type):
        try:
            day = day.cast(pa.date32())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise StorageError(f"tables[{name!r}].run_date cannot be read as dates (YYYY-MM-DD): {exc}") from exc
    if day.null_count:
        raise StorageError(f"tables[{name!r}].run_date has NULL values")
    columns = {"run_date": day}
    checks = {"config_hash": "^[0-9a-f]{16}$", "run_id": "^[A-Za-z0-9_-]{1,64}$"}
    for col, pattern in checks.items():
        values = keys.column(col)
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        values = values.cast(pa.string())
        ok = pc.fill_null(pc.match_substring_regex(values, pattern), False)
        bad = pc.filter(values, pc.invert(ok))
        if len(bad):
            raise StorageError(f"tables[{name!r}].{col} has malformed value(s), e.g. {bad[0].as_py()!r} (pattern {pattern})")
        columns[col] = values
    return pa.table(columns).group_by(list(PARTITION_COLUMNS)).aggregate([])

def _strip_partition(name: str, table: pa.Table, day: date, config_hash: str, run_id: str) -> pa.Table:
    """Return ``table`` without partition columns, after checking any present ones hold the given values."""
    expected = {"run_date": day, "config_hash": config_hash, "run_id": run_id}
    for col in PARTITION_COLUMNS:
        if col not in table.column_names:
            continue
        column = table.column(col)
        if table.num_rows:
            want = expected[col]
            if col == "run_date" and not pa.types.is_date(column.type):
                want = day.isoformat()
                column = column.cast(pa.string())
            bad = pc.sum(pc.invert(pc.fill_null(pc.equal(column, pa.scalar(want)), False))).as_py()
            if bad:
                raise StorageError(
                    f"tables[{name!r}] has {bad} row(s) whose {col} differs from {col}={expected[col]!s}: "
                    "a write covers exactly one partition"
                )
        table = table.drop_columns([col])
    return table


def _check_columns(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    known = {r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main'", [name]
    ).fetchall()}
    dupes = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if dupes:
        raise StorageError(f"tables[{name!r}] has duplicate column(s) {dupes}")
    unknown = [c for c in table.column_names if c not in known]
    if unknown:
        raise StorageError(f"tables[{name!r}] has unknown column(s) {unknown}; {name} has {sorted(known)}")
