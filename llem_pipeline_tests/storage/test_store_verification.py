"""ResultStore verifies every partition write (issue 7): rows counted back before and after COMMIT.

Faults are injected through the store's own insert hook (``ResultStore._insert``, the one place rows
enter a partitioned table) and verification step (``ResultStore._verify``), in subclasses: the real
DuckDB file, transaction and checks run unchanged.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from llem_pipeline.storage import (
    PartitionLostWarning,
    ResultStore,
    StorageError,
    WriteVerificationError,
    WriteVerificationWarning,
)
from llem_pipeline_tests.storage.run_folder_factory import partition_batch, requests_table, timeseries_table

DAY = "2026-11-01"
HASH = "00000000000000aa"


class DroppingStore(ResultStore):
    """Inserts one row fewer than it was given into ``table`` (a silent short INSERT)."""

    table = "power_samples"

    def _insert(self, con, name, table, sql, params=()):
        super()._insert(con, name, table.slice(1) if name == self.table else table, sql, params)


class StaleRowStore(ResultStore):
    """Also leaves one row of another run in the partition (as a DELETE that missed a row would)."""

    def _insert(self, con, name, table, sql, params=()):
        super()._insert(con, name, table, sql, params)
        if name == "requests":
            con.execute(f"INSERT INTO requests BY NAME SELECT run_date, config_hash, 'other-run' AS run_id, "
                        f"* EXCLUDE (run_date, config_hash, run_id) FROM requests WHERE config_hash = '{HASH}' LIMIT 1")


class SwallowingStore(ResultStore):
    """Swallows an error after the last insert: DuckDB 2.x then reports COMMIT as success, writing nothing."""

    def _insert(self, con, name, table, sql, params=()):
        super()._insert(con, name, table, sql, params)
        if name != "requests":  # the last table written: no statement of the store's own follows
            return
        try:
            con.execute("SELECT no_such_column FROM power_samples")
        except duckdb.BinderException:
            pass


class LosingAfterCommitStore(ResultStore):
    """Deletes one committed row before the after-COMMIT check, ``losses`` times (a loss at/after COMMIT)."""

    def __init__(self, *args, losses: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.losses = losses
        self.post_checks = 0

    def _verify(self, con, checks, *, committed):
        if committed:
            self.post_checks += 1
            if self.losses > 0:
                self.losses -= 1
                con.execute("DELETE FROM power_samples WHERE rowid = (SELECT max(rowid) FROM power_samples)")
        super()._verify(con, checks, committed=committed)


def _tables(n_samples: int = 40, n_requests: int = 3) -> dict[str, pa.Table]:
    return {"power_samples": timeseries_table(n_samples), "requests": requests_table(n_requests)}


def _as(cls, store: ResultStore, **kw) -> ResultStore:
    return cls(store.path, data_dir=store.data_dir, lock_timeout_s=5, **kw)


def _partition_rows(store: ResultStore, day: str = DAY, config_hash: str = HASH) -> dict[str, list[tuple[str, int]]]:
    return {
        t: [tuple(r.values()) for r in store.query(
            f"SELECT run_id, count(*) AS n FROM {t} WHERE run_date = ? AND config_hash = ? GROUP BY ALL ORDER BY ALL",
            [day, config_hash]).to_pylist()]
        for t in ("power_samples", "requests")
    }


def test_a_correct_write_passes_both_checks(store: ResultStore) -> None:
    checked = _as(LosingAfterCommitStore, store, losses=0)
    assert checked.write_tables(DAY, HASH, "run-1", _tables()) == {"power_samples": 40, "requests": 3}
    assert checked.post_checks == 1
    assert _partition_rows(store) == {"power_samples": [("run-1", 40)], "requests": [("run-1", 3)]}


def test_short_insert_raises_and_writes_nothing(store: ResultStore) -> None:
    store.write_tables(DAY, HASH, "old-run", _tables(30, 2))
    with pytest.raises(WriteVerificationError) as info:
        _as(DroppingStore, store).write_tables(DAY, HASH, "new-run", _tables(40, 3))
    err = info.value
    assert isinstance(err, StorageError) and not err.committed
    assert (err.table, err.expected, err.found) == ("power_samples", 40, 39)
    msg = str(err)
    assert "power_samples" in msg and DAY in msg and HASH in msg and "new-run" in msg
    assert "expected 40" in msg and "found 39" in msg and "nothing written" in msg
    # Rolled back: the old run is still the partition, in every table.
    assert _partition_rows(store) == {"power_samples": [("old-run", 30)], "requests": [("old-run", 2)]}


def test_rows_of_another_run_left_in_the_partition_raise(store: ResultStore) -> None:
    with pytest.raises(WriteVerificationError, match=r"requests: expected 3 row\(s\), found 4 \(3 of the run_id sent\)"):
        _as(StaleRowStore, store).write_tables(DAY, HASH, "run-1", _tables())
    assert store.row_counts()["requests"] == 0 and store.row_counts()["power_samples"] == 0


def test_an_error_swallowed_inside_the_transaction_is_not_a_silent_commit(store: ResultStore) -> None:
    # DuckDB 2.x: after any error in a transaction, COMMIT reports success and discards the writes.
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER); BEGIN; INSERT INTO t VALUES (1)")
    with pytest.raises(duckdb.BinderException):
        con.execute("SELECT nope FROM t")
    con.execute("COMMIT")
    assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)  # the hazard the check guards against
    con.close()
    store.write_tables(DAY, HASH, "old-run", _tables(30, 2))
    with pytest.raises(WriteVerificationError, match="aborted by an earlier error"):
        _as(SwallowingStore, store).write_tables(DAY, HASH, "new-run", _tables())
    assert _partition_rows(store) == {"power_samples": [("old-run", 30)], "requests": [("old-run", 2)]}


def test_a_loss_after_commit_is_rewritten_once_with_a_warning(store: ResultStore) -> None:
    losing = _as(LosingAfterCommitStore, store, losses=1)
    # the rewrite's own pre-write audit also names the partition the first attempt lost
    with pytest.warns(WriteVerificationWarning, match=r"power_samples: expected 40 row\(s\), found 39.*after COMMIT"), \
            pytest.warns(PartitionLostWarning, match="run-1"):
        counts = losing.write_tables(DAY, HASH, "run-1", _tables())
    assert counts == {"power_samples": 40, "requests": 3}
    assert losing.post_checks == 2  # the first write and its one rewrite
    assert _partition_rows(store) == {"power_samples": [("run-1", 40)], "requests": [("run-1", 3)]}


def test_a_loss_after_commit_that_persists_raises_after_one_rewrite(store: ResultStore) -> None:
    losing = _as(LosingAfterCommitStore, store, losses=10)
    with pytest.warns(WriteVerificationWarning), pytest.raises(WriteVerificationError) as info:
        losing.write_tables(DAY, HASH, "run-1", _tables())
    assert info.value.committed and info.value.table == "power_samples"
    assert "after COMMIT" in str(info.value)
    assert losing.post_checks == 2


def test_write_batch_short_insert_names_the_partition_and_writes_nothing(store: ResultStore) -> None:
    h1, h2 = "00000000000000b1", "00000000000000b2"
    store.write_batch({"power_samples": partition_batch([(DAY, h1, "old", 5), (DAY, h2, "old", 6)])})
    # The dropped row is the first row of the table: partition h1's.
    with pytest.raises(WriteVerificationError) as info:
        _as(DroppingStore, store).write_batch({"power_samples": partition_batch([(DAY, h1, "new", 10), (DAY, h2, "new", 12)])})
    err = info.value
    assert (err.table, err.expected, err.found, err.committed) == ("power_samples", 22, 21, False)
    msg = str(err)
    assert f"1 partition(s): (run_date={DAY}, config_hash={h1}, run_id=new) expected 10 found 9" in msg
    assert h2 not in msg
    rows = store.query("SELECT config_hash, run_id, count(*) AS n FROM power_samples GROUP BY ALL ORDER BY ALL")
    assert rows.to_pylist() == [{"config_hash": h1, "run_id": "old", "n": 5}, {"config_hash": h2, "run_id": "old", "n": 6}]


def test_write_batch_loss_after_commit_is_rewritten_once(store: ResultStore) -> None:
    losing = _as(LosingAfterCommitStore, store, losses=1)
    table = partition_batch([(DAY, "00000000000000c1", "r1", 7), ("2026-11-02", "00000000000000c1", "r2", 8)])
    # the rewrite's own pre-write audit also names the partition the first attempt lost
    with pytest.warns(WriteVerificationWarning, match="expected 15 row"), pytest.warns(PartitionLostWarning, match="r2"):
        assert losing.write_batch({"power_samples": table}) == {"power_samples": 15}
    assert losing.post_checks == 2
    assert store.row_counts()["power_samples"] == 15


def test_verified_write_over_a_large_existing_table_keeps_other_partitions(store: ResultStore) -> None:
    # The count filters by partition: rows of other partitions (same day, other configs) are not counted.
    store.write_batch({"power_samples": partition_batch([(DAY, f"{i:016x}", f"r{i}", 50) for i in range(20)])})
    store.write_tables(DAY, f"{3:016x}", "again", {"power_samples": timeseries_table(11)})
    assert store.row_counts()["power_samples"] == 19 * 50 + 11
