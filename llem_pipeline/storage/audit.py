"""Run audit: compare what the store wrote (partition_manifest, the write journal) with what the file holds.

Two checks, both on an open connection (read-only, or the writer's transaction):

- ``manifest_discrepancies``: per measurement table, every run (run_date, config_hash, hardware_id,
  run_id) whose row count differs from its manifest row (rows deleted or added behind the store's
  back, a partial loss), and runs present without a manifest row. One GROUP BY per table: an explicit
  audit, or a write whose cheap check (``quick_totals``: one count per table against the manifest's
  sums) found a difference.
- ``journal_discrepancies``: every (table, run) whose latest journal entry is newer than the manifest
  row the file holds (or has none): a committed write that vanished from the file together with its
  manifest rows (another process checkpointed an older database state; locking.py explains how). Lines
  written before migration 6 carry no hardware_id: they name a (run_date, config_hash) partition, which
  then held one run, and are checked per partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb
import pyarrow as pa

from llem_pipeline.storage.schema import PARTITIONED_TABLES, checked_table

# One count per measurement table (names from the allow-list) against the manifest's sums, and the
# file's write number and store_id, in one statement (each statement costs ~1 ms on a small file).
_QUICK_TOTALS_SQL = (
    "WITH c AS (" + " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in PARTITIONED_TABLES) + "), "
    "m AS (SELECT table_name AS t, sum(row_count) AS n FROM partition_manifest GROUP BY 1), "
    "w AS (SELECT seq, store_id FROM write_sequence ORDER BY seq DESC LIMIT 1) "
    "SELECT c.t, c.n - coalesce(m.n, 0), (SELECT seq FROM w), (SELECT store_id FROM w) FROM c LEFT JOIN m USING (t)"
)


@dataclass(frozen=True)
class Discrepancy:
    """The rows of one run in one table that differ from what the store wrote.

    ``expected``/``found`` are row counts; ``source`` is 'manifest' (the partition_manifest row in the
    file) or 'journal' (the write journal next to it); ``detail`` says who wrote it and when.
    ``hardware_id`` is None for journal lines written before migration 6.
    """

    table: str
    run_date: date
    config_hash: str
    run_id: str | None
    expected: int
    found: int
    source: str
    detail: str = ""
    hardware_id: str | None = None

    def __str__(self) -> str:
        what = "missing" if self.found == 0 and self.expected > 0 else "differs"
        extra = f"; {self.detail}" if self.detail else ""
        return (f"{self.table} rows of run (config_hash={self.config_hash}, hardware_id={self.hardware_id}, "
                f"run_id={self.run_id}, run_date={self.run_date}) "
                f"{what}: expected {self.expected} row(s), found {self.found} [per the {self.source}{extra}]")


def has_manifest(con: duckdb.DuckDBPyConnection) -> bool:
    """Return True when the file has the manifest tables (schema version >= 4)."""
    rows = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'main' "
        "AND table_name IN ('partition_manifest', 'write_sequence')"
    ).fetchall()
    return bool(rows and rows[0][0] == 2)


def store_identity(con: duckdb.DuckDBPyConnection) -> tuple[int, str]:
    """Return (last committed write number, this database's store_id) from write_sequence ((0, '') when it is empty)."""
    rows = con.execute("SELECT seq, store_id FROM write_sequence ORDER BY seq DESC LIMIT 1").fetchall()
    return (int(rows[0][0]), str(rows[0][1])) if rows else (0, "")


def quick_totals(con: duckdb.DuckDBPyConnection) -> tuple[int, str, dict[str, int]]:
    """Return (last committed write number, store_id, {table: rows in the table - rows the manifest accounts for}).

    The differences are all 0 when nothing is lost; (0, '') stand for an empty write_sequence. One
    count per table and one aggregate over the manifest: cheap enough to run before every write
    (about 5 ms with 14 M samples and 500k manifest rows).
    """
    rows = con.execute(_QUICK_TOTALS_SQL).fetchall()
    seq, store_id = (rows[0][2], rows[0][3]) if rows else (None, None)
    return int(seq or 0), str(store_id or ""), {str(t): int(d) for t, d, _, _ in rows}


def manifest_discrepancies(con: duckdb.DuckDBPyConnection, limit: int = 10_000) -> list[Discrepancy]:
    """Return the runs whose rows differ from partition_manifest (at most ``limit`` per table), table by table."""
    out: list[Discrepancy] = []
    for name in PARTITIONED_TABLES:
        rows = con.execute(
            "WITH m AS (SELECT run_date, config_hash, hardware_id, run_id, row_count, writer_pid, written_at, write_seq "
            "           FROM partition_manifest WHERE table_name = ?), "
            f"a AS (SELECT run_date, config_hash, hardware_id, run_id, count(*) AS n FROM {name} GROUP BY ALL) "
            "SELECT coalesce(m.run_date, a.run_date), coalesce(m.config_hash, a.config_hash), "
            "       coalesce(m.hardware_id, a.hardware_id), coalesce(m.run_id, a.run_id), m.row_count, coalesce(a.n, 0), "
            "       m.writer_pid, m.written_at, m.write_seq "
            "FROM m FULL OUTER JOIN a ON m.run_date = a.run_date AND m.config_hash = a.config_hash "
            "  AND m.hardware_id = a.hardware_id AND m.run_id = a.run_id "
            "WHERE coalesce(m.row_count, -1) <> coalesce(a.n, 0) ORDER BY 1, 2, 3, 4 LIMIT ?",
            [name, limit],
        ).fetchall()
        for day, h, hw, run_id, expected, found, pid, at, seq in rows:
            if expected is None:
                detail = "rows the store did not write (no manifest row: written outside ResultStore?)"
            else:
                detail = f"write #{seq} by pid {pid} at {at}" if seq is not None else "manifest row backfilled by migration 4"
            out.append(Discrepancy(name, day, h, run_id, int(expected or 0), int(found), "manifest", detail, hw))
    return out


def journal_discrepancies(
    con: duckdb.DuckDBPyConnection, entries: Sequence[dict[str, Any]], limit: int = 10_000
) -> list[Discrepancy]:
    """Return the journal entries (latest per table and run) the file does not hold (at most ``limit``).

    An entry is missing when the file's manifest row for its (table, run) is absent or older (lower
    write number); ``found`` is the rows the table now holds for that run. Entries without a
    hardware_id (written before migration 6) are checked per (table, run_date, config_hash), the
    partition their write replaced.
    """
    if not entries:
        return []
    fields = (("table_name", "table", pa.string()), ("run_date", "run_date", pa.string()),
              ("config_hash", "config_hash", pa.string()), ("hardware_id", "hardware_id", pa.string()),
              ("run_id", "run_id", pa.string()), ("rows", "rows", pa.int64()), ("seq", "seq", pa.int64()),
              ("pid", "pid", pa.int64()), ("written_at", "at", pa.string()))
    journal = pa.table({
        name: pa.array([(str(e[src]) if kind == pa.string() else e[src]) if e.get(src) is not None else None
                        for e in entries], kind)
        for name, src, kind in fields
    })
    con.register("_llem_audit_journal", journal)
    try:
        missing = con.execute(
            "WITH j AS (SELECT table_name, run_date::DATE AS run_date, config_hash, hardware_id, run_id, rows, seq, pid, "
            "                  written_at FROM _llem_audit_journal), "
            # runs (lines with a hardware_id): the latest line per (table, run) against that run's manifest row
            "runs AS (SELECT * FROM j WHERE hardware_id IS NOT NULL "
            "         QUALIFY row_number() OVER (PARTITION BY table_name, config_hash, hardware_id, run_id ORDER BY seq DESC) = 1), "
            # partitions (lines from before migration 6): the latest line per (table, run_date, config_hash)
            "parts AS (SELECT * FROM j WHERE hardware_id IS NULL "
            "          QUALIFY row_number() OVER (PARTITION BY table_name, run_date, config_hash ORDER BY seq DESC) = 1) "
            "SELECT r.* FROM runs r LEFT JOIN partition_manifest m ON m.table_name = r.table_name "
            "  AND m.config_hash = r.config_hash AND m.hardware_id = r.hardware_id AND m.run_id = r.run_id "
            "WHERE m.write_seq IS NULL OR m.write_seq < r.seq "
            "UNION ALL "
            "SELECT p.* FROM parts p WHERE NOT EXISTS (SELECT 1 FROM partition_manifest m WHERE m.table_name = p.table_name "
            "  AND m.run_date = p.run_date AND m.config_hash = p.config_hash AND m.write_seq >= p.seq) "
            "ORDER BY seq, table_name LIMIT ?",
            [limit],
        ).fetchall()
    finally:
        con.unregister("_llem_audit_journal")
    out: list[Discrepancy] = []
    for table, day, h, hw, run_id, rows, seq, pid, at in missing:
        if table not in PARTITIONED_TABLES:
            continue
        name = checked_table(table, PARTITIONED_TABLES)
        if hw is not None:
            counted = con.execute(f"SELECT count(*) FROM {name} WHERE config_hash = ? AND hardware_id = ? AND run_id = ?",
                                  [h, hw, run_id]).fetchall()
        else:
            counted = con.execute(f"SELECT count(*) FROM {name} WHERE run_date = ? AND config_hash = ?", [day, h]).fetchall()
        found = int(counted[0][0]) if counted else 0
        if rows == 0 and found == 0:
            continue  # a write that left this table without rows of the run; it has none: nothing to recover
        out.append(Discrepancy(
            table, day, h, run_id, int(rows), found, "journal",
            f"write #{seq} by pid {pid} at {at} was committed and verified, but the file no longer holds it", hw,
        ))
    return out
