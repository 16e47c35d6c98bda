"""journal.py: the write journal next to the database (append, last write number, torn lines)."""

from __future__ import annotations

from pathlib import Path

from llem_pipeline.storage.journal import append, journal_path, last_seq, read_entries


def test_journal_path_sits_next_to_the_database(tmp_path: Path) -> None:
    assert journal_path(tmp_path / "llem.duckdb") == tmp_path / "llem.duckdb.writes.jsonl"


def test_an_absent_journal_has_write_number_0(tmp_path: Path) -> None:
    path = tmp_path / "x.writes.jsonl"
    assert last_seq(path) == 0 and read_entries(path) == []


def _e(seq: int, table: str = "requests", rows: int = 3, **extra) -> dict:
    return {"seq": seq, "table": table, "run_date": "2026-11-01", "config_hash": "00000000000000aa", "run_id": "r",
            "rows": rows, **extra}


def test_append_then_read_back_in_order(tmp_path: Path) -> None:
    path = tmp_path / "x.writes.jsonl"
    assert append(path, []) == 0 and not path.exists()
    append(path, [_e(1), _e(1, "baselines", 1)])
    append(path, [_e(2, rows=0)])
    assert last_seq(path) == 2
    assert [(e["seq"], e["table"]) for e in read_entries(path)] == [(1, "requests"), (1, "baselines"), (2, "requests")]
    assert [e["seq"] for e in read_entries(path, after_seq=1)] == [2]


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "x.writes.jsonl"
    append(path, [_e(1)])
    with open(path, "ab") as f:
        f.write(b'{"seq": 2, "table": "req')  # a crash in the middle of an append
    assert last_seq(path) == 1
    assert [e["seq"] for e in read_entries(path)] == [1]
    append(path, [_e(2)])  # the next append starts on a line of its own
    assert last_seq(path) == 2
    assert [e["seq"] for e in read_entries(path)] == [1, 2]


def test_last_seq_reads_only_the_tail_of_a_long_journal(tmp_path: Path) -> None:
    path = tmp_path / "x.writes.jsonl"
    append(path, [_e(i // 10 + 1, "power_samples", i, pad="x" * 100) for i in range(5000)])
    assert path.stat().st_size > 65536
    assert last_seq(path) == 500


def test_foreign_or_mistyped_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "x.writes.jsonl"
    append(path, [_e(1), {**_e(2), "rows": "many"}, {**_e(3), "run_date": "yesterday"}, {"seq": 4}])
    assert [e["seq"] for e in read_entries(path)] == [1] and last_seq(path) == 1
