"""Fault-injection suite, full size: every case of llem_pipeline_tests/reliability/ as one row.

    .venv/bin/python bench/reliability.py            # full: 100 NVMLError seeds, 8 writers x 50 partitions,
                                                     # 20 SIGKILLs during writes, 10k fuzz examples per target,
                                                     # a reader holding the DuckDB file 30 s, ...
    .venv/bin/python bench/reliability.py --quick    # the same cases, small (about 3 minutes)
    .venv/bin/python bench/reliability.py --only nvml,disk   # cases whose key or area contains a word

Prints the table (case, tried, survived, rows lost, unhandled tracebacks), the notes of every case
that did not fully survive, and ends with
``RESULT cases=… tried=… survived=… rows_lost=… unhandled_tracebacks=… failed_cases=… seconds=…``.
Exit status: 0 when every case ran and survived with nothing lost; 1 when a case ran but did not
fully survive; 2 when a case could not be measured (it crashed or its setup failed).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from llem_pipeline_tests.reliability import test_bad_input as bad  # noqa: E402
from llem_pipeline_tests.reliability import test_hostile_input as hostile  # noqa: E402
from llem_pipeline_tests.reliability import test_measurement_faults as mf  # noqa: E402
from llem_pipeline_tests.reliability import test_security as sec  # noqa: E402
from llem_pipeline_tests.reliability import test_storage_faults as sf  # noqa: E402
from llem_pipeline_tests.reliability.support import CaseResult  # noqa: E402

_TEMPS: list[Path] = []


def _tmp() -> Path:
    """Return a new temp folder (removed when the bench exits)."""
    _TEMPS.append(Path(tempfile.mkdtemp(prefix="llem-reliability-")))
    return _TEMPS[-1]


@atexit.register
def _cleanup() -> None:
    for path in _TEMPS:
        shutil.rmtree(path, ignore_errors=True)


def _shared_data() -> Path:
    """One data dir for the worker cases (the tiny model is built once in it)."""
    global _DATA
    if _DATA is None:
        _DATA = _tmp()
    return _DATA


_DATA: Path | None = None


def _tiny_model() -> Path:
    from llem_pipeline.engines.tiny_model import make_model

    return make_model(_tmp() / "tiny-llama", "tiny", 0)


def _paths_case(examples: int) -> CaseResult:
    work = _tmp()
    (work / "data").mkdir()
    (work / "outside").mkdir()
    return sec.paths_stay_inside(work / "data", work / "outside", examples)


def cases(quick: bool) -> list[tuple[str, str, Callable[[], CaseResult]]]:
    """Return (area, key, case runner) in table order; ``quick`` shrinks every size."""
    q = quick
    return [
        ("measurement", "nvml-errors", lambda: mf.nvml_error_seeds(range(10 if q else 100))),
        ("measurement", "device-lost", lambda: mf.device_lost_mid_window(2 if q else 10)),
        ("measurement", "counter", lambda: mf.counter_reset_and_wrap(1 if q else 5)),
        ("measurement", "sampler", lambda: mf.sampler_thread_dying(1 if q else 5)),
        ("measurement", "worker-sigkill", lambda: mf.worker_sigkill(_shared_data(), ["run"] if q else ["plan", "model_load", "run"])),
        ("measurement", "worker-timeout", lambda: mf.worker_timeout(_shared_data(), [3.0] if q else [2.0, 6.0])),
        ("measurement", "unwritable", lambda: mf.run_folder_unwritable(_shared_data(), _tmp())),
        ("measurement", "disk-full", lambda: mf.disk_full(_shared_data(), _tmp(), [4096, 12288] if q else [4096, 12288, 32768])),
        ("storage", "reader", lambda: sf.reader_holds_file(_tmp(), 3.0 if q else 30.0)),
        ("storage", "writers", lambda: sf.concurrent_writers(_tmp(), *((3, 5) if q else (8, 50)))),
        ("storage", "sigkill-writes", lambda: sf.sigkill_during_writes(_tmp(), 3 if q else 20)),
        ("bad input", "fuzz-config", lambda: bad.fuzz_experiment_configs(500 if q else 10_000)),
        ("bad input", "fuzz-study", lambda: bad.fuzz_study_dicts(200 if q else 10_000)),
        ("bad input", "fuzz-yaml", lambda: bad.fuzz_study_yaml(200 if q else 10_000)),
        ("bad input", "jsonl", lambda: bad.malformed_jsonl(_tmp())),
        ("bad input", "worker-input", lambda: bad.worker_bad_input(_shared_data(), _tmp())),
        ("bad input", "no-valid-point", lambda: bad.study_without_valid_point(_tmp())),
        ("hostile", "hostile-studies", lambda: hostile.hostile_study_files(_tmp())),
        ("hostile", "skipped-points", lambda: hostile.skipped_points(_tmp(), 25 if q else 5000)),
        ("hostile", "registry-sensor", lambda: hostile.registry_sensor_with_hostile_files(_tmp())),
        ("hostile", "launch-hostile", lambda: hostile.launch_with_hostile_files(_tmp())),
        ("hostile", "nan-inf", hostile.non_finite_floats),
        ("hostile", "config-round-trip", lambda: hostile.config_round_trips(200 if q else 5000)),
        ("hostile", "sql-output", lambda: hostile.sql_output(_tmp())),
        ("hostile", "impossible-results", hostile.impossible_results),
        ("hostile", "retired-configs", lambda: hostile.retired_configs(_tmp())),
        ("security", "webserver", lambda: sec.webserver_binds_loopback(live=True)),
        ("security", "sql", lambda: sec.no_sql_injection(_tmp())),
        ("security", "secrets", lambda: sec.snapshots_keep_no_secrets(_tmp())),
        ("security", "trust-remote-code", lambda: sec.trust_remote_code_off(_tiny_model(), _tmp())),
        ("security", "paths", lambda: _paths_case(300 if q else 5000)),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the cases, print the table and the RESULT line; returns the exit status (0, 1 or 2)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small version of every case")
    p.add_argument("--only", default="", help="comma list of words; run the cases whose key or area contains one "
                   "(keys: nvml-errors, device-lost, counter, sampler, worker-sigkill, worker-timeout, unwritable, "
                   "disk-full, reader, writers, sigkill-writes, fuzz-config, fuzz-study, fuzz-yaml, jsonl, "
                   "worker-input, no-valid-point, hostile-studies, skipped-points, registry-sensor, launch-hostile, "
                   "nan-inf, config-round-trip, sql-output, impossible-results, retired-configs, webserver, sql, "
                   "secrets, trust-remote-code, paths)")
    args = p.parse_args(argv)
    words = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    rows: list[tuple[str, CaseResult, float]] = []
    crashed: list[str] = []
    t_all = time.perf_counter()
    for area, key, run in cases(args.quick):
        if words and not any(w in key or w in area for w in words):
            continue
        t0 = time.perf_counter()
        try:
            res = run()
        except Exception as exc:  # the case could not be measured: report, keep going, exit 2
            crashed.append(f"{area}/{key}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            continue
        rows.append((area, res, time.perf_counter() - t0))
        print(f"  {area:<12} {res.case:<44} {res.survived}/{res.tried} survived  ({rows[-1][2]:.1f} s)", flush=True)
    width = max([len(r.case) for _, r, _ in rows] + [4])
    print()
    print(f"{'area':<12} {'case':<{width}} {'tried':>7} {'survived':>9} {'rows lost':>10} {'unhandled tracebacks':>21} {'s':>7}")
    print("-" * (width + 72))
    for area, r, s in rows:
        print(f"{area:<12} {r.case:<{width}} {r.tried:>7} {r.survived:>9} {r.rows_lost:>10} {r.unhandled:>21} {s:>7.1f}")
    tried = sum(r.tried for _, r, _ in rows)
    survived = sum(r.survived for _, r, _ in rows)
    lost = sum(r.rows_lost for _, r, _ in rows)
    unhandled = sum(r.unhandled for _, r, _ in rows)
    failed = [r for _, r, _ in rows if not r.ok]
    print("-" * (width + 72))
    print(f"{'total':<12} {'':<{width}} {tried:>7} {survived:>9} {lost:>10} {unhandled:>21}")
    for r in failed:
        print(f"\nNOT SURVIVED: {r.explain()}")
    for c in crashed:
        print(f"\nCOULD NOT MEASURE: {c}", file=sys.stderr)
    print(f"\nRESULT cases={len(rows)} tried={tried} survived={survived} rows_lost={lost} "
          f"unhandled_tracebacks={unhandled} failed_cases={len(failed)} could_not_measure={len(crashed)} "
          f"seconds={time.perf_counter() - t_all:.0f}")
    if crashed or not rows:
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
