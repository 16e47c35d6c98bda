"""DuckDB at scale: run ingest, the views on 100k results, and the same questions over JSON files.

What it does (all data FABRICATED by llem_pipeline_tests/storage/record_factory.py; the numbers are
storage timings, not measurements):

1. Ingest 10 M power samples (contract timeseries columns) as 2000 runs of 5k samples through
   ``ResultStore.write_runs`` (200 whole runs per transaction — result, processes, environment,
   baseline, samples — DELETE those runs, INSERT from pyarrow, statistics of the days touched, COMMIT):
   the bulk path; then, for comparison, ``write_run`` with one 500k-sample run per transaction, and 100
   run-sized (5k) writes to show the fixed cost of a transaction. The bulk batches alternate with a
   plain-DuckDB reference (the same samples as one Arrow table: connect, INSERT, COMMIT, close, no
   validation, no other table) so the store's overhead shows as a ratio that machine load cannot fake.
2. Ingest 100k ExperimentResults (1000 configs x 100 nights, one hardware per config) with
   ``ResultStore.write_runs`` (10k runs per transaction).
3. Time ``latest_results``, ``efficiency``, ``nightly_trend`` and ``config_stats`` (each fully fetched as
   Arrow on an open read-only connection; median of 5) and answer the first three questions by scanning
   one JSON file per run (the original tool's layout: ``<root>/<date>/<config_hash>.json``, the
   ExperimentResult JSON), all three answered in ONE pass (generous to the JSON side). View runs and
   JSON scans alternate (interleaved) for ``--reps`` rounds; both sides run with a warm page cache.
   The answers are cross-checked (J/token per config in efficiency, row counts, every trend %); a
   mismatch exits 1. ``json_scan_speedup`` is the smallest per-question ratio (scan time / that
   view's time: with JSON files each question needs a full scan); ``json_scan_speedup_all3`` is the
   conservative one-scan-answers-all-three ratio (scan / sum of the three views).

    .venv/bin/python bench/storage.py            # full: 10 M samples, 100k results, 100k JSON files
    .venv/bin/python bench/storage.py --quick    # CI-sized: 1 M samples, 10k results

``--json-files N`` scans only the first N JSON files and extrapolates the scan time linearly to all
results (said in the output). Targets: ingest >= 2 M samples/s; each view <= 50 ms on 100k results;
views >= 100x faster than the JSON scan. Ends with ``RESULT ingest_samples_per_s=... efficiency_view_ms=...
trend_view_ms=... latest_view_ms=... config_stats_view_ms=... results_per_s=... json_scan_speedup=...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build_configs(n_configs: int):
    """Return up to n_configs distinct ExperimentConfigs (models x precision x engine setting x output length)."""
    from llem_pipeline_tests.storage.record_factory import make_config

    models = ["llama-1b", "llama-8b", "qwen-7b", "mistral-7b", "phi-3"]
    settings = [("pytorch", b) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)] + [
        ("vllm", s) for s in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
    ]
    out = []
    for out_len in (64, 128, 256, 512, 1024):
        for model in models:
            for precision in ("bf16", "fp16"):
                for backend, value in settings:
                    out.append(make_config(model=model, backend=backend, batch_size=value, precision=precision,
                                           max_output_tokens=out_len))
                    if len(out) == n_configs:
                        return out
    return out


def build_results(configs, nights: int, seed: int = 0):
    """Yield (run_date, run_id, ExperimentResult) for every config and night; energies drift per night (J)."""
    from llem_pipeline_tests.storage.record_factory import make_result

    rng = random.Random(seed)
    first = date(2026, 1, 1)
    for ci, config in enumerate(configs):
        template, _ = make_result(config, seed=ci, device_kind="simulated" if ci % 10 == 0 else "nvml")
        for d in range(nights):
            day = first + timedelta(days=d)
            start = datetime(day.year, day.month, day.day, 2, tzinfo=UTC)
            energy = template.total_energy_j * (1 + rng.uniform(-0.05, 0.05))
            tps = template.avg_tokens_per_second * (1 + rng.uniform(-0.03, 0.03))
            window = template.total_tokens / tps
            result = template.model_copy(
                update={
                    "experiment_id": f"exp-{ci}-{d}",
                    "start_time": start,
                    "end_time": start + timedelta(seconds=window),
                    "total_energy_j": energy,
                    "avg_energy_per_token_j": energy / template.total_tokens,
                    "avg_tokens_per_second": tps,
                    "total_inference_time_sec": window,
                }
            )
            yield day, f"run-{ci}-{d}", result


def json_scan(root: Path, limit: int | None):
    """Answer the three questions from one JSON file per run; return (answers, files_read).

    answers = {"latest": {hash: (run_date, J/token)}, "efficiency": {hash: J/token of its latest night},
    "trend": rows (hash, night, J/token, % change against the previous night)}. Every config runs on one
    hardware here, so a config hash stands for config x hardware.
    """
    per_config: dict[str, list[tuple[str, str, float, int]]] = defaultdict(list)
    n = 0
    for day_dir in sorted(os.scandir(root), key=lambda e: e.name):
        for entry in os.scandir(day_dir.path):
            if limit is not None and n >= limit:
                break
            with open(entry.path, encoding="utf-8") as fh:
                r = json.load(fh)
            n += 1
            per_config[r["measurement_config_hash"]].append(
                (day_dir.name, r["end_time"], r["total_energy_j"], r["total_tokens"])
            )
    latest: dict[str, tuple[str, float]] = {}
    efficiency: dict[str, float] = {}
    trend: list[tuple[str, str, float, float | None]] = []
    for h, runs in per_config.items():
        runs.sort()
        last = runs[-1]
        latest[h] = (last[0], last[2] / last[3])
        efficiency[h] = last[2] / last[3]
        prev = None
        for run in runs:
            jpt = run[2] / run[3]
            trend.append((h, run[0], jpt, None if prev is None else 100.0 * (jpt / prev - 1.0)))
            prev = jpt
    return {"latest": latest, "efficiency": efficiency, "trend": trend}, n


def main() -> int:
    """Run the bench; print the tables and the RESULT line; return 0, or 1 when it could not measure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI size: 1 M samples, 10k results (100 configs x 100 nights)")
    ap.add_argument("--samples", type=int, default=None, help="power samples to ingest (default 10 M, quick 1 M)")
    ap.add_argument("--configs", type=int, default=None, help="configs (default 1000, quick 100)")
    ap.add_argument("--nights", type=int, default=100, help="nights per config")
    ap.add_argument("--json-files", type=int, default=None, help="scan only N JSON files and extrapolate")
    ap.add_argument("--reps", type=int, default=3, help="interleaved rounds (views then JSON scan)")
    ap.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir, removed at the end)")
    args = ap.parse_args()

    import duckdb
    import pyarrow as pa

    from llem_pipeline.storage import ResultStore, RunRecord
    from llem_pipeline.storage.schema import apply_schema
    from llem_pipeline_tests.storage.record_factory import make_config, make_record

    n_samples = args.samples or (1_000_000 if args.quick else 10_000_000)
    n_configs = args.configs or (100 if args.quick else 1000)
    work = args.dir or Path(tempfile.mkdtemp(prefix="llem-bench-storage-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "bench.duckdb"
    if db.exists():
        db.unlink()
    store = ResultStore(db, lock_timeout_s=60)
    store.ensure_schema()

    def runs_like(template: RunRecord, keys: list[tuple[date, str]]) -> list[RunRecord]:
        """Return copies of ``template`` under the given (run_date, run_id) keys (samples shared, validated)."""
        fields = {f: getattr(template, f) for f in template.__dataclass_fields__}
        return [RunRecord(**{**fields, "run_date": d, "run_id": r}) for d, r in keys]

    def keyed_samples(records: list[RunRecord]) -> pa.Table:
        """The records' samples as one Arrow table with the key columns, for the plain-DuckDB reference."""
        tables = []
        for r in records:
            t = r.power_samples
            n = t.num_rows
            for pos, (name, value) in enumerate(r.key_columns().items()):
                t = t.add_column(pos, name, pa.array([value] * n))
            tables.append(t)
        return pa.concat_tables(tables)

    try:
        # ---- 1. samples -------------------------------------------------------------------------
        # (a) bulk: runs of 5k samples (8 processes x 625 ticks), 200 runs per write_runs transaction, one
        # night per transaction (a nightly batch).
        per_run, runs_per_txn = 5_000, 200
        template = make_record(make_config(model="bench-samples"), n_samples=per_run // 8, n_processes=8, seed=1,
                               device_kind="nvml", gpu_name="NVIDIA H100 80GB HBM3", n_requests=0)
        template = RunRecord(**{**{f: getattr(template, f) for f in template.__dataclass_fields__},
                                "requests": pa.table({})})
        n_txn = max(1, n_samples // (per_run * runs_per_txn))
        written = 0
        t_ingest = 0.0
        t_raw = 0.0
        raw_db = work / "raw_reference.duckdb"
        raw = duckdb.connect(str(raw_db))
        raw.execute("BEGIN")
        apply_schema(raw)
        raw.execute("COMMIT")
        raw.close()
        # Warm-up (untimed): first-call imports and DuckDB caches.
        warm = runs_like(template, [(date(2026, 2, 1), "warmup")])
        store.write_runs(warm)
        raw = duckdb.connect(str(raw_db))
        raw.register("_in", keyed_samples(warm))
        raw.execute("INSERT INTO power_samples BY NAME SELECT * FROM _in")
        raw.close()
        for b in range(n_txn):
            day = date(2026, 6, 1) + timedelta(days=b)
            batch = runs_like(template, [(day, f"run-{b}-{i}") for i in range(runs_per_txn)])
            reference = keyed_samples(batch)
            # Reference, interleaved (order alternating): plain DuckDB, the same samples, no checks.
            for side in ((0, 1) if b % 2 == 0 else (1, 0)):
                t0 = time.perf_counter()
                if side == 0:
                    written += store.write_runs(batch)["power_samples"]
                    t_ingest += time.perf_counter() - t0
                else:
                    raw = duckdb.connect(str(raw_db))
                    raw.register("_in", reference)
                    raw.execute("BEGIN")
                    raw.execute("INSERT INTO power_samples BY NAME SELECT * FROM _in")
                    raw.execute("COMMIT")
                    raw.close()
                    t_raw += time.perf_counter() - t0
        ingest_rate = written / t_ingest
        raw_rate = written / t_raw
        # (b) one run per transaction (write_run), 500k samples each.
        big = make_record(make_config(model="bench-big"), n_samples=62_500, n_processes=8, seed=3, n_requests=0,
                          device_kind="nvml", gpu_name="NVIDIA H100 80GB HBM3")
        n_big = 2 if args.quick else 4
        t_big = 0.0
        for p in range(n_big):
            record = runs_like(big, [(date(2026, 6, 2), f"big-{p}")])[0]
            t0 = time.perf_counter()
            store.write_run(record)
            t_big += time.perf_counter() - t0
        big_rate = n_big * big.power_samples.num_rows / t_big
        # (c) one run-sized run per transaction: the fixed cost of a write.
        small_runs = 20 if args.quick else 100
        small_times = []
        for record in runs_like(template, [(date(2026, 6, 3), f"small-{p}") for p in range(small_runs)]):
            t0 = time.perf_counter()
            store.write_run(record)
            small_times.append(time.perf_counter() - t0)
        small_ms = 1000 * statistics.median(small_times)
        if store.row_counts()["power_samples"] != per_run + written + n_big * big.power_samples.num_rows + small_runs * per_run:
            print("ERROR: power_samples row count mismatch", file=sys.stderr)
            return 1

        # ---- 2. results -------------------------------------------------------------------------
        configs = build_configs(n_configs)
        json_root = work / "json"
        t_build = t_rows = t_write_json = t_results = 0.0
        n_results = 0
        made: set[Path] = set()
        batch_records: list[RunRecord] = []
        t0 = time.perf_counter()
        for day, run_id, result in build_results(configs, args.nights):
            t1 = time.perf_counter()
            t_build += t1 - t0
            record = RunRecord.build(result, run_date=day, run_id=run_id)
            t2 = time.perf_counter()
            t_rows += t2 - t1
            folder = json_root / day.isoformat()
            if folder not in made:
                folder.mkdir(parents=True, exist_ok=True)
                made.add(folder)
            (folder / f"{result.measurement_config_hash}.json").write_text(result.model_dump_json(), encoding="utf-8")
            t0 = time.perf_counter()
            t_write_json += t0 - t2
            batch_records.append(record)
            n_results += 1
            if len(batch_records) == 10_000:
                t3 = time.perf_counter()
                store.write_runs(batch_records)
                t_results += time.perf_counter() - t3
                batch_records = []
                t0 = time.perf_counter()
        if batch_records:
            t3 = time.perf_counter()
            store.write_runs(batch_records)
            t_results += time.perf_counter() - t3
        results_in_table = store.query(
            "SELECT count(*) AS n FROM experiment_results WHERE model <> 'bench-samples' AND model <> 'bench-big'"
        ).column("n")[0].as_py()
        if results_in_table != n_results:
            print("ERROR: experiment_results row count mismatch", file=sys.stderr)
            return 1
        json_bytes = sum(f.stat().st_size for d in json_root.iterdir() for f in d.iterdir())  # all files

        # ---- 3. views vs JSON scan, interleaved ---------------------------------------------------
        only = "WHERE model NOT IN ('bench-samples', 'bench-big')"  # the runs of step 1 are not part of the questions
        views = {"latest": f"SELECT * FROM latest_results {only}", "efficiency": f"SELECT * FROM efficiency {only}",
                 "trend": f"SELECT * FROM nightly_trend {only}", "stats": f"SELECT * FROM config_stats {only}"}
        view_ms: dict[str, list[float]] = {k: [] for k in views}
        scan_s: list[float] = []
        tables: dict[str, pa.Table] = {}
        answers = None
        files_read = 0
        con = duckdb.connect(str(db), read_only=True)
        try:
            for _ in range(args.reps):
                for name, sql in views.items():
                    for _ in range(5):
                        t0 = time.perf_counter()
                        tables[name] = con.sql(sql).to_arrow_table()
                        view_ms[name].append(1000 * (time.perf_counter() - t0))
                t0 = time.perf_counter()
                answers, files_read = json_scan(json_root, args.json_files)
                scan_s.append(time.perf_counter() - t0)
        finally:
            con.close()
        t0 = time.perf_counter()
        via_store = store.query(views["efficiency"])
        store_ms = 1000 * (time.perf_counter() - t0)

        # ---- cross-check the answers ----------------------------------------------------------------
        ok = True
        if args.json_files is None:
            eff = {r["config_hash"]: r["j_per_token"] for r in tables["efficiency"].to_pylist()}
            ok &= tables["efficiency"].num_rows == len(eff) == len(configs)  # one hardware per config
            ok &= set(eff) == set(answers["efficiency"]) and all(
                math.isclose(eff[h], answers["efficiency"][h], rel_tol=1e-9) for h in eff)
            ok &= tables["latest"].num_rows == len(answers["latest"]) == len(configs)
            ok &= tables["trend"].num_rows == len(answers["trend"]) == n_results == tables["stats"].num_rows
            trend_sql = {(r["config_hash"], r["run_date"].isoformat()): r["j_per_token_change_pct"]
                         for r in tables["trend"].select(["config_hash", "run_date", "j_per_token_change_pct"]).to_pylist()}
            ok &= all(
                (c is None and trend_sql[(h, d)] is None) or math.isclose(trend_sql[(h, d)], c, rel_tol=1e-6, abs_tol=1e-9)
                for h, d, _, c in answers["trend"]
            )
            ok &= via_store.num_rows == tables["efficiency"].num_rows
        if not ok:
            print("ERROR: the views and the JSON scan disagree", file=sys.stderr)
            return 1

        med = {k: statistics.median(v) for k, v in view_ms.items()}
        scan = statistics.median(scan_s)
        extrapolated = files_read < n_results
        scan_all = scan * n_results / files_read if extrapolated else scan
        # Per question: a JSON user must read every file to answer any one question, so each question
        # costs one scan; the view answers it in view_ms. The all-three ratio (one scan vs the sum of
        # the three views) is printed too, as the conservative figure.
        per_question = {k: scan_all / (med[k] / 1000) for k in ("latest", "efficiency", "trend")}
        speedup = min(per_question.values())
        speedup_all3 = scan_all / (sum(med[k] for k in per_question) / 1000)

        print(f"\nstorage bench ({'quick' if args.quick else 'full'}); work dir {work}; duckdb {duckdb.__version__}; "
              f"{os.cpu_count()} CPUs; data fabricated\n")
        print(f"{'step':<60}{'value':>16}  target")
        rows = [
            (f"ingest samples, bulk ({written:,}: {n_txn * runs_per_txn} runs, write_runs {runs_per_txn}/txn)",
             f"{ingest_rate / 1e6:.2f} M/s", ">= 2 M/s"),
            ("  same samples, plain DuckDB INSERT (interleaved)", f"{raw_rate / 1e6:.2f} M/s", ""),
            ("  store / plain DuckDB", f"{ingest_rate / raw_rate:.2f}", ""),
            (f"  one 500k-sample run per txn ({n_big}x)", f"{big_rate / 1e6:.2f} M/s", ""),
            ("  one 5k-sample run per txn, median", f"{small_ms:.1f} ms", ""),
            (f"ingest results ({n_results:,}, write_runs 10k/txn)", f"{n_results / t_results:,.0f} runs/s", ""),
            ("  build RunRecords (python, per result)", f"{1e6 * t_rows / n_results:.0f} us", ""),
            (f"view latest_results ({tables['latest'].num_rows:,} rows), median", f"{med['latest']:.1f} ms", "<= 50 ms"),
            (f"view efficiency ({tables['efficiency'].num_rows:,} rows), median", f"{med['efficiency']:.1f} ms", "<= 50 ms"),
            (f"view nightly_trend ({tables['trend'].num_rows:,} rows), median", f"{med['trend']:.1f} ms", "<= 50 ms"),
            (f"view config_stats ({tables['stats'].num_rows:,} rows), median", f"{med['stats']:.1f} ms", "<= 50 ms"),
            ("  efficiency via store.query (incl. connect)", f"{store_ms:.1f} ms", ""),
            (f"JSON scan, 3 answers/pass ({files_read:,}/{n_results:,} files, {json_bytes / 1e6:.0f} MB)", f"{scan:.2f} s", ""),
        ]
        if extrapolated:
            rows.append((f"  extrapolated linearly to {n_results:,} files", f"{scan_all:.2f} s", ""))
        for k in ("latest", "efficiency", "trend"):
            rows.append((f"speedup {k}: JSON scan / view", f"{per_question[k]:,.0f}x", ">= 100x"))
        rows.append(("  conservative: one scan / sum of the three views", f"{speedup_all3:,.0f}x", ""))
        for step, value, target in rows:
            print(f"{step:<60}{value:>16}  {target}")
        holds = {
            "ingest": ingest_rate >= 2e6,
            "views": all(v <= 50 for v in med.values()),
            "speedup": speedup >= 100,
        }
        print("\ntargets: " + ", ".join(f"{k} {'holds' if v else 'MISSED'}" for k, v in holds.items()))
        print(
            f"RESULT ingest_samples_per_s={ingest_rate:.0f} raw_duckdb_samples_per_s={raw_rate:.0f} "
            f"store_vs_raw={ingest_rate / raw_rate:.2f} partition_ingest_samples_per_s={big_rate:.0f} "
            f"run_write_ms={small_ms:.1f} efficiency_view_ms={med['efficiency']:.1f} "
            f"trend_view_ms={med['trend']:.1f} latest_view_ms={med['latest']:.1f} config_stats_view_ms={med['stats']:.1f} "
            f"results_per_s={n_results / t_results:.0f} json_scan_speedup={speedup:.0f} "
            f"json_scan_speedup_all3={speedup_all3:.0f}"
        )
        return 0
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # could not measure
        print(f"ERROR: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise
