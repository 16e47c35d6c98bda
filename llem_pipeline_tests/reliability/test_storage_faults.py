"""Storage faults against a real DuckDB file with real processes (reliability suite: storage).

A reader process holding the file while a result is written (the write waits and lands), many writer
processes at once (every run present, none twice, none replacing another), and SIGKILL in the middle of
writes (the file opens with every run whole: its old or its new rows, never half).
"""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llem_pipeline.domain import compute_measurement_config_hash
from llem_pipeline.storage import PARTITIONED_TABLES, ResultStore
from llem_pipeline_tests.reliability.support import PROJECT_ROOT, CaseResult, count_tracebacks
from llem_pipeline_tests.storage.record_factory import make_config, make_record
from llem_pipeline_tests.storage.rewriting_writer import SIZES
from llem_pipeline_tests.storage.rewriting_writer import WRITER as REWRITING_WRITER

DAY = "2026-11-01"

READER = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1], read_only=True)
    n = con.execute("SELECT count(*) FROM experiment_results").fetchone()[0]
    print("holding", n, flush=True)
    time.sleep(float(sys.argv[2]))
    print("closing", time.time(), flush=True)
    con.close()
    """
)


def reader_holds_file(data_dir: Path, hold_s: float) -> CaseResult:
    """A reader process holds the DuckDB file open for ``hold_s`` seconds while a result is written: the
    writer waits (jittered retries) and its rows land once the reader lets go (the write's end is compared
    with the time stamp the reader prints as it closes: an order, whatever the machine's load)."""
    res = CaseResult(f"reader holds the file {hold_s:g} s")
    store = ResultStore(data_dir / "llem.duckdb", lock_timeout_s=hold_s + 60)
    store.ensure_schema()
    config = make_config(model="held")
    h = compute_measurement_config_hash(config)
    record = make_record(config, run_date=DAY, run_id="held-run")
    reader = subprocess.Popen([sys.executable, "-c", READER, str(store.path), str(hold_s)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert reader.stdout is not None
    first = reader.stdout.readline().strip()
    try:
        counts = store.write_run(record)
        err = ""
    except Exception as exc:  # a LockTimeoutError would be a lost write
        counts, err = {}, f"{type(exc).__name__}: {exc}"
    done_at = time.time()
    out, reader_err = reader.communicate(timeout=hold_s + 120)  # bounds a reader that never ends
    said = out.split()
    closing = float(said[1]) if len(said) == 2 and said[0] == "closing" else math.inf
    landed = store.query("SELECT count(*) AS n FROM experiment_results WHERE config_hash = ?", [h]).column("n")[0].as_py()
    ok = first.startswith("holding") and counts.get("experiment_results") == 1 and landed == 1 and done_at >= closing
    res.record(ok, f"reader said {first!r} then {out.strip()!r}; write {counts or err} done at {done_at:.3f}; "
               f"rows {landed}", rows_lost=int(landed != 1), unhandled=count_tracebacks(reader_err))
    return res


WRITER = textwrap.dedent(
    """
    import json, sys
    from llem_pipeline.storage import ResultStore
    from llem_pipeline_tests.storage.record_factory import make_config, make_record
    db, job = sys.argv[1], json.loads(sys.argv[2])
    store = ResultStore(db, lock_timeout_s=600)
    for model, batch_size, day, run_id, n, seed in job:
        config = make_config(model=model, batch_size=batch_size)
        store.write_run(make_record(config, run_date=day, run_id=run_id, n_samples=n, seed=seed))
    print("done", len(job), flush=True)
    """
)


def concurrent_writers(data_dir: Path, writers: int, partitions: int) -> CaseResult:
    """``writers`` processes each write ``partitions`` runs of their own (one config, one run per day) plus one
    run of a config and day they all share, all at once: every run present exactly once and whole, the
    shared config and day holding every writer's run. A writer's WriteVerificationError (rows counted back
    wrong) fails it with the message; a WriteVerificationWarning (a committed write counted back wrong,
    rewritten) also fails the case, and so does any discrepancy the store's audit finds (partition_manifest
    sums vs the tables, the audit per run and against the write journal, a PartitionLostWarning in a writer)."""
    res = CaseResult(f"{writers} writers x {partitions} runs")
    store = ResultStore(data_dir / "llem.duckdb", lock_timeout_s=600)
    store.ensure_schema()
    shared_hash = compute_measurement_config_hash(make_config(model="shared"))
    shared_day = "2026-12-31"
    jobs: list[list[tuple[str, int, str, str, int, int]]] = []
    expected_samples = 0
    expected_runs = set()
    for w in range(writers):
        job = []
        for p in range(partitions):
            day = f"{2020 + p // 300}-{1 + (p // 28) % 12:02d}-{1 + p % 28:02d}"
            n = 20 + p % 7
            expected_samples += n
            expected_runs.add(f"w{w}-{p}")
            job.append(("concurrent", w + 1, day, f"w{w}-{p}", n, p))
        job.insert(len(job) // 2, ("shared", 1, shared_day, f"shared-w{w}", 30, 0))
        expected_runs.add(f"shared-w{w}")
        jobs.append(job)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(store.path), json.dumps(job)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
             for job in jobs]
    failed = []
    recovered = []  # WriteVerificationWarning: a committed write counted back wrong and was rewritten
    errs: list[str] = []
    tracebacks = 0
    for w, p in enumerate(procs):
        out, err = p.communicate(timeout=3600)
        errs.append(err)
        tracebacks += count_tracebacks(err)
        recovered += [f"writer {w}: {line.strip()[:600]}" for line in err.splitlines() if "WriteVerificationWarning" in line]
        if p.returncode != 0 or out.strip() != f"done {partitions + 1}":
            last = err.strip().splitlines()[-1] if err.strip() else ""
            failed.append(f"writer {w}: rc {p.returncode} stdout {out[-200:]!r} {last[:600]}")
    expected = writers * (partitions + 1)
    got = store.query("SELECT count(*) AS n, count(DISTINCT (config_hash, hardware_id, run_id)) AS k "
                      "FROM experiment_results").to_pylist()[0]
    dupes = store.query("SELECT count(*) AS n FROM (SELECT config_hash, hardware_id, run_id FROM experiment_results "
                        "GROUP BY ALL HAVING count(*) > 1)").column("n")[0].as_py()
    samples = store.query("SELECT count(*) AS n FROM power_samples WHERE run_id LIKE 'w%'").column("n")[0].as_py()
    shared_ids = {t: sorted(store.query(f"SELECT DISTINCT run_id FROM {t} WHERE run_date = ? AND config_hash = ?",
                                        [shared_day, shared_hash]).column("run_id").to_pylist())
                  for t in ("experiment_results", "power_samples", "requests", "baselines", "process_results")}
    every_writer = all(v == sorted(f"shared-w{w}" for w in range(writers)) for v in shared_ids.values())
    present = set(store.query("SELECT DISTINCT run_id FROM experiment_results").column("run_id").to_pylist())
    missing = sorted(expected_runs - present)
    lost = max(0, expected - got["k"]) + dupes + abs(expected_samples - samples)
    # The store's own account: the manifest sums equal the tables, the audit (manifest per run + write
    # journal) finds nothing, and no writer was warned of a lost run.
    manifest = {r["table_name"]: r["n"] for r in store.query(
        "SELECT table_name, sum(row_count)::BIGINT AS n FROM partition_manifest GROUP BY 1").to_pylist()}
    counts = store.row_counts()
    manifest_ok = all(manifest.get(t, 0) == counts[t] for t in PARTITIONED_TABLES)
    findings = store.audit()
    warned = [f"writer {w}: {line.strip()[:300]}" for w, e in enumerate(errs) for line in e.splitlines()
              if "PartitionLostWarning" in line]
    ok = (not failed and not recovered and got["n"] == expected and got["k"] == expected and dupes == 0
          and every_writer and lost == 0 and manifest_ok and not findings and not warned)
    res.record(ok, f"failed {failed}; verification recoveries {recovered[:3]}; results {got} of {expected}; "
                   f"missing {missing[:5]}; duplicated runs {dupes}; "
                   f"samples {samples} of {expected_samples}; shared config and day {shared_ids}; "
                   f"manifest {manifest} vs tables {counts}; audit {len(findings)} finding(s) "
                   f"{[str(f) for f in findings[:5]]}; lost-run warnings {warned[:3]}",
               rows_lost=lost, unhandled=tracebacks)
    return res


def sigkill_during_writes(data_dir: Path, kills: int, seed: int = 0) -> CaseResult:
    """SIGKILL a process that writes two runs of one config in a loop (each replacing its own rows), ``kills``
    times at random moments: after each kill the file opens and every run stored holds exactly its own rows
    in every table (old or new, never half), and a run written before is untouched."""
    res = CaseResult(f"SIGKILL during writes x{kills}")
    store = ResultStore(data_dir / "crash.duckdb", lock_timeout_s=60)
    config = make_config(model="crash")
    store.write_run(make_record(config, run_date=DAY, run_id="old", n_samples=1000, n_requests=4))
    rng = random.Random(seed)
    for k in range(kills):
        proc = subprocess.Popen([sys.executable, "-c", REWRITING_WRITER, str(store.path), DAY], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
        assert proc.stdout is not None
        ready = proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.8))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        try:
            counts = {t: {r["run_id"]: r["n"] for r in store.query(
                f"SELECT run_id, count(*) AS n FROM {t} GROUP BY ALL").to_pylist()}
                for t in ("experiment_results", "power_samples", "requests")}
            runs = set(counts["experiment_results"])
            whole = all(counts["experiment_results"][r] == 1 and r in SIZES
                        and (counts["power_samples"].get(r), counts["requests"].get(r)) == SIZES[r] for r in runs)
            ok = (ready and "old" in runs and whole
                  and set(counts["power_samples"]) == set(counts["requests"]) == runs)
            res.record(ok, f"kill {k}: rows per run {counts}", rows_lost=int(not ok), unhandled=count_tracebacks(err))
        except Exception as exc:
            res.record(False, f"kill {k}: the file does not open: {type(exc).__name__}: {exc}", rows_lost=1)
    # the file still takes writes afterwards
    try:
        store.write_run(make_record(config, run_date=DAY, run_id="after", n_samples=10, n_requests=2))
        ok = store.query("SELECT count(*) AS n FROM requests WHERE run_id = 'after'").column("n")[0].as_py() == 2
    except Exception as exc:
        ok = False
        res.notes.append(f"write after the kills failed: {exc}")
    res.record(ok, "write after the kills did not land", rows_lost=int(not ok))
    return res


# -- tests (scaled down) ----------------------------------------------------------------------------
@pytest.mark.slow
def test_reader_holding_the_file_delays_but_does_not_lose_a_write(tmp_path):
    res = reader_holds_file(tmp_path, 2.0)
    assert res.ok, res.explain()


@pytest.mark.slow
def test_concurrent_writer_processes_lose_and_duplicate_nothing(tmp_path):
    res = concurrent_writers(tmp_path, writers=3, partitions=5)
    assert res.ok, res.explain()


@pytest.mark.slow
def test_sigkill_during_writes_leaves_old_or_new_rows(tmp_path):
    res = sigkill_during_writes(tmp_path, kills=2)
    assert res.ok, res.explain()
