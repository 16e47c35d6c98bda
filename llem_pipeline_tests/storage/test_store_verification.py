"""ResultStore verifies every write: the rows of the runs written are counted back before and after COMMIT.

Faults are injected through the store's own insert hook (``ResultStore._insert``, the one place rows
enter a partitioned table) and verification step (``ResultStore._verify``), in subclasses: the real
DuckDB file, transaction and checks run unchanged.
"""

from __future__ import annotations

import duckdb
import pytest

from llem_pipeline.storage import (
    PartitionLostWarning,
    ResultStore,
    RunRecord,
    StorageError,
    WriteVerificationError,
    WriteVerificationWarning,
)
from llem_pipeline_tests.storage.record_factory import make_config, make_record

DAY = "2026-11-01"
CONFIG = make_config(model="verified")


class DroppingStore(ResultStore):
    """Inserts one row fewer than it was given into ``table`` (a silent short INSERT)."""

    table = "power_samples"

    def _insert(self, con, name, table, sql, params=()):
        super()._insert(con, name, table.slice(1) if name == self.table else table, sql, params)


class StaleRowStore(ResultStore):
    """Also leaves one extra row of the run in requests (as a DELETE that missed an old row would)."""

    def _insert(self, con, name, table, sql, params=()):
        super()._insert(con, name, table, sql, params)
        if name == "requests":
            con.execute("INSERT INTO requests SELECT * FROM requests WHERE run_id = 'run-1' LIMIT 1")


class SwallowingStore(ResultStore):
    """Swallows an error right before COMMIT: DuckDB 2.x then reports COMMIT as success, writing nothing."""

    def _verify(self, con, checks, *, committed):
        if not committed:
            try:
                con.execute("SELECT no_such_column FROM power_samples")
            except duckdb.BinderException:
                pass
        super()._verify(con, checks, committed=committed)


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


def _run(run_id: str = "run-1", n_samples: int = 40, n_requests: int = 3, config=CONFIG, day: str = DAY) -> RunRecord:
    return make_record(config, run_id=run_id, run_date=day, n_samples=n_samples, n_requests=n_requests)


def _as(cls, store: ResultStore, **kw) -> ResultStore:
    return cls(store.path, lock_timeout_s=5, **kw)


def _rows(store: ResultStore) -> dict[str, list[tuple[str, int]]]:
    """Return {table: [(run_id, rows)]} for power_samples and requests."""
    return {
        t: [tuple(r.values()) for r in store.query(
            f"SELECT run_id, count(*) AS n FROM {t} GROUP BY ALL ORDER BY ALL").to_pylist()]
        for t in ("power_samples", "requests")
    }


def test_a_correct_write_passes_both_checks(store: ResultStore) -> None:
    checked = _as(LosingAfterCommitStore, store, losses=0)
    counts = checked.write_run(_run())
    assert (counts["power_samples"], counts["requests"]) == (40, 3)
    assert checked.post_checks == 1
    assert _rows(store) == {"power_samples": [("run-1", 40)], "requests": [("run-1", 3)]}


def test_short_insert_raises_and_writes_nothing(store: ResultStore) -> None:
    store.write_run(_run("old-run", 30, 2))
    new = _run("new-run", 40, 3)
    with pytest.raises(WriteVerificationError) as info:
        _as(DroppingStore, store).write_run(new)
    err = info.value
    assert isinstance(err, StorageError) and not err.committed
    assert (err.table, err.expected, err.found) == ("power_samples", 40, 39)
    msg = str(err)
    assert "power_samples" in msg and DAY in msg and new.config_hash in msg and new.hardware_id in msg and "new-run" in msg
    assert "expected 40" in msg and "found 39" in msg and "nothing written" in msg
    # Rolled back: only the old run is stored, in every table.
    assert _rows(store) == {"power_samples": [("old-run", 30)], "requests": [("old-run", 2)]}
    assert store.row_counts()["experiment_results"] == 1


def test_rows_of_another_run_left_in_the_partition_raise(store: ResultStore) -> None:
    with pytest.raises(WriteVerificationError, match=r"requests: expected 3 row\(s\), found 4 \(4 on the run_date sent\)"):
        _as(StaleRowStore, store).write_run(_run())
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
    store.write_run(_run("old-run", 30, 2))
    with pytest.raises(WriteVerificationError, match="aborted by an earlier error"):
        _as(SwallowingStore, store).write_run(_run("new-run"))
    assert _rows(store) == {"power_samples": [("old-run", 30)], "requests": [("old-run", 2)]}


def test_a_loss_after_commit_is_rewritten_once_with_a_warning(store: ResultStore) -> None:
    losing = _as(LosingAfterCommitStore, store, losses=1)
    # the rewrite's own pre-write audit also names the partition the first attempt lost
    with pytest.warns(WriteVerificationWarning, match=r"power_samples: expected 40 row\(s\), found 39.*after COMMIT"), \
            pytest.warns(PartitionLostWarning, match="run-1"):
        counts = losing.write_run(_run())
    assert (counts["power_samples"], counts["requests"]) == (40, 3)
    assert losing.post_checks == 2  # the first write and its one rewrite
    assert _rows(store) == {"power_samples": [("run-1", 40)], "requests": [("run-1", 3)]}


def test_a_loss_after_commit_that_persists_raises_after_one_rewrite(store: ResultStore) -> None:
    losing = _as(LosingAfterCommitStore, store, losses=10)
    with pytest.warns(WriteVerificationWarning), pytest.raises(WriteVerificationError) as info:
        losing.write_run(_run())
    assert info.value.committed and info.value.table == "power_samples"
    assert "after COMMIT" in str(info.value)
    assert losing.post_checks == 2


def test_a_batch_short_insert_names_the_run_and_writes_nothing(store: ResultStore) -> None:
    c1, c2 = make_config(model="b1"), make_config(model="b2")
    store.write_runs([_run("old", 5, config=c1), _run("old", 6, config=c2)])
    # The dropped row is the first row of the batch's samples: the first run's.
    first, second = _run("new", 10, config=c1), _run("new", 12, config=c2)
    with pytest.raises(WriteVerificationError) as info:
        _as(DroppingStore, store).write_runs([first, second])
    err = info.value
    assert (err.table, err.expected, err.found, err.committed) == ("power_samples", 22, 21, False)
    msg = str(err)
    assert (f"1 run(s): (run_date={DAY}, config_hash={first.config_hash}, hardware_id={first.hardware_id}, run_id=new) "
            "expected 10 found 9") in msg
    assert second.config_hash not in msg
    rows = store.query("SELECT config_hash, run_id, count(*) AS n FROM power_samples GROUP BY ALL ORDER BY ALL")
    assert rows.to_pylist() == sorted([{"config_hash": first.config_hash, "run_id": "old", "n": 5},
                                       {"config_hash": second.config_hash, "run_id": "old", "n": 6}],
                                      key=lambda r: r["config_hash"])


def test_a_batch_loss_after_commit_is_rewritten_once(store: ResultStore) -> None:
    losing = _as(LosingAfterCommitStore, store, losses=1)
    # the rewrite's own pre-write audit also names the run the first attempt lost
    with pytest.warns(WriteVerificationWarning, match="expected 15 row"), pytest.warns(PartitionLostWarning, match="r2"):
        counts = losing.write_runs([_run("r1", 7), _run("r2", 8, day="2026-11-02")])
    assert counts["power_samples"] == 15
    assert losing.post_checks == 2
    assert store.row_counts()["power_samples"] == 15


def test_verified_write_over_a_large_existing_table_keeps_other_runs(store: ResultStore) -> None:
    # The count filters by run: rows of other runs (same day, same and other configs) are not counted.
    store.write_runs([_run(f"r{i}", 50, config=make_config(batch_size=1 + i % 4)) for i in range(20)])
    store.write_run(_run("r3", 11, config=make_config(batch_size=4)))
    assert store.row_counts()["power_samples"] == 19 * 50 + 11
    assert store.audit() == []
