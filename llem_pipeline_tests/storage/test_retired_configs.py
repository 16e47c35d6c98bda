"""Migration 5 and ResultStore.register_studies: configs no study file defines any more are retired, kept
for history, and current again when a study defines them again; rows of an unreadable file are left alone."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.storage import ResultStore, StorageError
from llem_pipeline.storage.schema import MIGRATIONS, apply_schema, sql_text
from llem_pipeline_tests.storage.record_factory import make_config

A, B, C = (make_config(batch_size=bs) for bs in (1, 2, 4))
HA, HB, HC = (compute_measurement_config_hash(c) for c in (A, B, C))


def rows(store: ResultStore) -> dict[tuple[str, str], tuple[str | None, bool]]:
    """Return {(study, config_hash): (study_file, retired)}."""
    table = store.query("SELECT study, config_hash, study_file, retired_at IS NOT NULL AS retired FROM experiment_configs")
    return {(r["study"], r["config_hash"]): (r["study_file"], r["retired"]) for r in table.to_pylist()}


def test_a_config_is_retired_when_no_study_defines_it_and_current_again_when_one_does(store: ResultStore) -> None:
    assert store.register_studies({"demo": ("demo.yaml", {HA: A, HB: B}), "other": ("other.yaml", {HC: C})}) == (3, 0)
    assert rows(store) == {("demo", HA): ("demo.yaml", False), ("demo", HB): ("demo.yaml", False),
                           ("other", HC): ("other.yaml", False)}
    # other.yaml deleted, and B dropped from demo's sweep
    assert store.register_studies({"demo": ("demo.yaml", {HA: A})}) == (1, 2)
    assert rows(store) == {("demo", HA): ("demo.yaml", False), ("demo", HB): ("demo.yaml", True),
                           ("other", HC): ("other.yaml", True)}
    # retiring is done once: the time of retirement stays
    first = store.query("SELECT retired_at FROM experiment_configs WHERE study = 'other'").column(0).to_pylist()
    assert store.register_studies({"demo": ("demo.yaml", {HA: A})}) == (1, 0)
    assert store.query("SELECT retired_at FROM experiment_configs WHERE study = 'other'").column(0).to_pylist() == first
    # other.yaml is back, renamed to another file: current again, with its new file name
    assert store.register_studies({"demo": ("demo.yaml", {HA: A}), "other": ("renamed.yaml", {HC: C})}) == (2, 0)
    assert rows(store)[("other", HC)] == ("renamed.yaml", False)
    assert rows(store)[("demo", HB)] == ("demo.yaml", True)


def test_rows_of_a_file_that_is_present_but_invalid_are_left_alone(store: ResultStore) -> None:
    store.register_studies({"demo": ("demo.yaml", {HA: A}), "other": ("other.yaml", {HC: C})})
    assert store.register_studies({"demo": ("demo.yaml", {HA: A})}, unreadable_files={"other.yaml"}) == (1, 0)
    assert rows(store)[("other", HC)] == ("other.yaml", False)
    # an empty studies folder retires everything (nothing defines any config); nothing is deleted
    assert store.register_studies({}) == (0, 2)
    assert all(retired for _, retired in rows(store).values()) and len(rows(store)) == 2


def test_rows_registered_before_the_file_was_recorded_match_by_study_name(store: ResultStore) -> None:
    store.upsert_configs("old", {HA: A})  # the registration path that records no file
    assert rows(store) == {("old", HA): (None, False)}
    assert store.register_studies({}, unreadable_files={"old.yaml"}) == (0, 0)
    assert store.register_studies({}, unreadable_files={"else.yaml"}) == (0, 1)
    store.upsert_configs("old", {HA: A})  # registering it again makes it current again
    assert rows(store) == {("old", HA): (None, False)}


def test_a_bad_key_writes_nothing(store: ResultStore) -> None:
    store.register_studies({"demo": ("demo.yaml", {HA: A})})
    with pytest.raises(StorageError, match="keys must be config hashes"):
        store.register_studies({"demo": ("demo.yaml", {HB: A})})
    assert rows(store) == {("demo", HA): ("demo.yaml", False)}


def test_migration_5_keeps_the_rows_of_a_version_4_file(tmp_path: Path) -> None:
    db = tmp_path / "v4.duckdb"
    con = duckdb.connect(str(db))
    for number, filename, description in MIGRATIONS:
        if number > 4:
            break
        con.execute(sql_text(filename))
        con.execute("INSERT INTO schema_version VALUES (?, now(), ?)", [number, description])
    con.execute("INSERT INTO experiment_configs VALUES (?, 'demo', 'm', 'pytorch', 'bf16', '{}', now())", [HA])
    assert apply_schema(con) >= 5
    assert con.execute("SELECT max(version) FROM schema_version WHERE version = 5").fetchone() == (5,)
    assert con.execute("SELECT study, study_file, retired_at FROM experiment_configs").fetchall() == [("demo", None, None)]
    con.close()
