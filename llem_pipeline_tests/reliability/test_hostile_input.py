"""Hostile inputs (reliability suite: hostile input): study files built to hang or mislead the pipeline,
non-finite floats, `llem sql` output that data could corrupt, impossible result values, deleted studies.

Every case returns a CaseResult. Survival: a bad file is named with its reason and skipped while every good
study still loads and registers; a bad value is refused naming its field; `llem sql` prints data literally
and valid JSON and ends quietly on a closed pipe; configs of a deleted study stay (retired), never lost.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.experiment import ExperimentResult, compute_measurement_config_hash
from llem_pipeline.domain.study import parse_experiment_config
from llem_pipeline_tests.reliability.support import PROJECT_ROOT, CaseResult, count_tracebacks

DEMO = PROJECT_ROOT / "studies" / "demo.yaml"
NIGHTLY = PROJECT_ROOT / "studies" / "nightly.yaml"
# file name -> (content, or a size in bytes for a sparse file; a fragment the file's error must hold)
HOSTILE: dict[str, tuple[str | int, str]] = {
    "million.yaml": ("name: million\nbase: {model: m}\nsweep:\n" + "".join(
        f"  {k}: [{', '.join(str(v) for v in range(1, 11))}]\n"
        for k in ("pytorch.batch_size", "max_output_tokens", "n", "max_input_tokens", "random_seed",
                  "warmup.n_warmup")), "1,000,000 points"),
    "bomb.yaml": ("name: bomb\nbase:\n  model: x\n  a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)), "alias budget"),
    "huge.yaml": (50 * 1024 * 1024, "over the limit of 1,048,576 bytes"),
    "recursive.yaml": ("name: rec\nbase: &a {model: m, x: *a}\n", "recursive document"),
    "deep.yaml": ("name: deep\nbase: {model: m, x: " + "[" * 500 + "]" * 500 + "}\n", "nests deeper"),
    "latin1.yaml": ("name: caf\xe9\n", "not UTF-8"),
    "inf.yaml": ("name: inf\nbase: {model: m, baseline: {cache_ttl_seconds: .inf}}\n", "must be a finite number"),
    "hugeint.yaml": ("name: hugeint\nbase: {model: m}\nseed: " + "9" * 5000 + "\n", "more than 4300 digits"),
    "longkey.yaml": ("name: longkey\nbase: {model: m, " + "k" * 1000 + ": 1}\n", "unknown field"),
    "nodes.yaml": ("name: nodes\nbase: {model: m}\nsweep: {n: [" + ", ".join(["1"] * 100_000) + "]}\n",
                   "100,000 points"),
    "demo-copy.yaml": ("", "also declared by"),  # filled with demo.yaml's text: a duplicate study name
}


def hostile_studies_folder(root: Path) -> Path:
    """Return a studies folder holding demo.yaml, nightly.yaml, a study with a skipped point and HOSTILE."""
    folder = root / "studies"
    folder.mkdir(parents=True)
    shutil.copy(DEMO, folder / "demo.yaml")
    shutil.copy(NIGHTLY, folder / "nightly.yaml")
    (folder / "skipping.yaml").write_text("name: skipping\nbase: {model: m}\nsweep: {pytorch.batch_size: [0, 1]}\n")
    for name, (content, _) in HOSTILE.items():
        path = folder / name
        if isinstance(content, int):
            with path.open("wb") as fh:
                fh.truncate(content)  # sparse: its size is what counts, nothing is written
        elif name == "latin1.yaml":
            path.write_bytes(content.encode("latin-1"))
        elif name == "demo-copy.yaml":
            shutil.copy(DEMO, path)
        else:
            path.write_text(content, encoding="utf-8")
    os.mkfifo(folder / "fifo.yaml")  # opening it for reading would block forever
    return folder


def _expect_errors(res: CaseResult, errors: dict[str, str], extra: dict[str, str]) -> None:
    """Record one try per hostile file: its error exists, names the file and holds the expected fragment."""
    for name, fragment in {**{n: f for n, (_, f) in HOSTILE.items()}, **extra}.items():
        message = errors.get(name, "")
        res.record(bool(message) and name in message and fragment in message and len(message) < 5000,
                   f"{name}: error {message[:300]!r} (wanted {fragment!r})")


def hostile_study_files(work: Path) -> CaseResult:
    """Every hostile study file is reported with its reason and skipped; demo and nightly load exactly as from a
    clean folder (the same config hashes)."""
    from llem_pipeline.defs.experiments.registry import scan_report_lines, scan_studies

    res = CaseResult(f"hostile study files ({len(HOSTILE) + 1})")
    clean = scan_studies(PROJECT_ROOT / "studies")
    try:
        scan = scan_studies(hostile_studies_folder(work))
    except Exception as exc:
        res.record(False, f"scan_studies raised {type(exc).__name__}: {exc}", unhandled=1)
        return res
    _expect_errors(res, scan.errors, {"fifo.yaml": "not a regular file", "demo.yaml": "also declared by"})
    res.record(scan.plans["nightly"].config_hashes == clean.plans["nightly"].config_hashes and "demo" not in scan.plans,
               f"good studies {sorted(scan.plans)}")
    lines = scan_report_lines(scan)
    res.record(len(lines) == len(scan.errors) + 1 and all("\n" not in ln and len(ln) < 5000 for ln in lines),
               f"{len(lines)} report lines for {len(scan.errors)} bad files and 1 skipped point")
    return res


def skipped_points(work: Path, points: int) -> CaseResult:
    """A study whose sweep has ``points`` invalid points among valid ones: each skipped point is reported with the
    field and the reason (at most 20 lines per study, then a count), the valid ones expand."""
    from llem_pipeline.defs.experiments.registry import scan_report_lines, scan_studies

    res = CaseResult(f"skipped sweep points reported ({points})")
    folder = work / "skipped"
    folder.mkdir(parents=True)
    values = ", ".join([str(-i) for i in range(points)] + ["1", "2"])
    (folder / "s.yaml").write_text(f"name: s\nbase: {{model: m}}\nsweep: {{pytorch.batch_size: [{values}]}}\n")
    scan = scan_studies(folder)
    plan = scan.plans.get("s")
    res.record(plan is not None and len(plan.experiments) == 2 and len(plan.skipped) == points,
               f"plan {plan and (len(plan.experiments), len(plan.skipped))}")
    lines = scan_report_lines(scan)
    shown = min(points, 20)
    for i, line in enumerate(lines[:shown]):
        res.record(line.startswith(f"s.yaml: skipped sweep point {{'pytorch.batch_size': {-i}}}: pytorch.batch_size")
                   and "greater than or equal to 1" in line, f"line {i}: {line[:200]!r}")
    more = points - shown
    res.record(len(lines) == shown + (1 if more else 0) and (not more or f"{more:,} more skipped" in lines[-1]),
               f"{len(lines)} lines for {points} points")
    return res


def registry_sensor_with_hostile_files(work: Path) -> CaseResult:
    """The study_registry sensor with every hostile file present: it registers nightly (and the skipping study),
    names each bad file in its skip reason, and writes experiment_configs in one piece."""
    import dagster as dg
    from dagster_duckdb import DuckDBResource

    from llem_pipeline.defs.experiments.sensors import study_registry
    from llem_pipeline.defs.measurements.gpu_allocator import GpuAllocator
    from llem_pipeline.defs.settings import LlemPaths, LlemStore
    from llem_pipeline.storage import ResultStore

    res = CaseResult("study_registry sensor with hostile files")
    folder = hostile_studies_folder(work / "sensor")
    data, home = work / "sensor-data", work / "sensor-home"
    data.mkdir()
    home.mkdir()
    env = {"LLEM_STUDIES_DIR": str(folder), "LLEM_DATA_DIR": str(data), "LLEM_DUCKDB": str(data / "llem.duckdb")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    err = io.StringIO()
    try:
        resources = {
            "llem_store": LlemStore(duckdb=DuckDBResource(database=str(data / "llem.duckdb"))),
            "llem_paths": LlemPaths(data_dir=str(data), studies_dir=str(folder)),
            "gpu_allocator": GpuAllocator(devices="simulated"),
        }
        with dg.instance_for_test(temp_dir=str(home)) as instance, contextlib.redirect_stderr(err), \
                dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            tick = study_registry.evaluate_tick(ctx)
        message = tick.skip_message or ""
        for name in [*HOSTILE, "fifo.yaml", "demo.yaml"]:
            res.record(name in message, f"skip reason does not name {name}: {message[:300]!r}")
        rows = ResultStore(data / "llem.duckdb").query(
            "SELECT study, count(*) AS n FROM experiment_configs GROUP BY study ORDER BY study").to_pylist()
        res.record([r["study"] for r in rows] == ["nightly", "skipping"], f"registered {rows}")
        requested = set(tick.dynamic_partitions_requests[0].partition_keys) if tick.dynamic_partitions_requests else set()
        res.record(len(requested) == sum(r["n"] for r in rows), f"{len(requested)} partitions for {rows}")
    except Exception as exc:
        res.record(False, f"the sensor raised {type(exc).__name__}: {str(exc)[:300]}", unhandled=1)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    res.unhandled += count_tracebacks(err.getvalue())
    return res


def launch_with_hostile_files(work: Path) -> CaseResult:
    """`llem run nightly` (what `make demo` runs, for the smallest shipped study) with every hostile file in the
    studies folder: it completes, names each bad file with its reason, and stores every config of the study."""
    from llem_pipeline.studies import load_study

    res = CaseResult("launch with hostile study files")
    folder = hostile_studies_folder(work / "launch")
    home, data = work / "launch-home", work / "launch-data"
    home.mkdir()
    data.mkdir()
    shutil.copy(PROJECT_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "LLEM_STUDIES_DIR": str(folder), "DAGSTER_HOME": str(home), "LLEM_DATA_DIR": str(data),
           "LLEM_DUCKDB": str(data / "llem.duckdb"), "LLEM_DEVICES": "simulated", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "llem_pipeline.cli", "run", "nightly"],
                          capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=1800)
    res.record(proc.returncode == 0, f"llem run rc {proc.returncode}: {proc.stderr[-600:]!r}")
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("llem run: warning: invalid study file")]
    for name, fragment in {**{n: f for n, (_, f) in HOSTILE.items()}, "fifo.yaml": "not a regular file"}.items():
        res.record(any(name in ln and fragment in ln for ln in warnings), f"no warning line names {name}")
    expected = set(load_study(NIGHTLY).expand().config_hashes)
    try:
        from llem_pipeline.storage import ResultStore

        stored = set(ResultStore(data / "llem.duckdb").query(
            "SELECT DISTINCT config_hash FROM experiment_results").column("config_hash").to_pylist())
    except Exception as exc:
        stored = set()
        res.record(False, f"results unreadable: {type(exc).__name__}: {exc}")
    res.record(stored == expected, f"stored {sorted(stored)} of {sorted(expected)}",
               rows_lost=len(expected - stored), unhandled=count_tracebacks(proc.stderr))
    return res


def _float_paths() -> list[str]:
    from llem_pipeline_tests.domain.test_config_finite import FLOAT_FIELDS

    return FLOAT_FIELDS


def non_finite_floats() -> CaseResult:
    """Every float field of ExperimentConfig (and the study's gap) given NaN, inf and -inf: one ConfigError naming
    the field; never a config whose JSON holds NaN or Infinity."""
    from llem_pipeline.domain.study import parse_study
    from llem_pipeline_tests.domain.test_config_finite import _config_with

    res = CaseResult("NaN and ±inf in every float field")
    for path in _float_paths():
        for value in (math.nan, math.inf, -math.inf):
            data, expected = _config_with(path, value)
            try:
                cfg = parse_experiment_config(data, "c.json")
                res.record(False, f"{path}={value} accepted: {cfg.model_dump_json()[:200]}")
            except ConfigError as err:
                res.record(f"c.json: {expected} = " in str(err) and "finite" in str(err), f"{path}={value}: {err}")
            except Exception as err:
                res.record(False, f"{path}={value}: {type(err).__name__}: {err}", unhandled=1)
    for value in (math.nan, math.inf, -math.inf):
        try:
            parse_study({"name": "s", "base": {"model": "m"}, "gap_seconds": value}, "s.yaml")
            res.record(False, f"gap_seconds={value} accepted")
        except ConfigError as err:
            res.record("gap_seconds" in str(err), f"gap_seconds={value}: {err}")
    return res


def config_round_trips(examples: int) -> CaseResult:
    """Configs with extreme finite floats in the unbounded fields: stored JSON (experiment_configs, a result's
    effective_config) validates back to the same hash."""
    res = CaseResult(f"stored configs round-trip ({examples})")
    finite = st.floats(min_value=0.0, max_value=1.7e308, allow_nan=False, allow_infinity=False)

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(ttl=finite, swap=finite, start=st.floats(0.0, 1e300), extra=st.floats(1e-300, 1e300))
    def run(ttl: float, swap: float, start: float, extra: float) -> None:
        window = [start, start + extra] if start + extra > start else None
        energy = {"methodology": "windowed", "window": window} if window else {}
        for data in ({"model": "m", "baseline": {"cache_ttl_seconds": ttl}, "energy": energy},
                     {"model": "m", "backend": "vllm", "vllm": {"swap_space": swap}}):
            try:
                cfg = ExperimentConfig.model_validate(data)
                stored = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
                again = ExperimentConfig.model_validate(json.loads(stored))
                same = compute_measurement_config_hash(again) == compute_measurement_config_hash(cfg)
                res.record(same and "Infinity" not in stored and "NaN" not in stored, f"{data} -> {stored[:200]}")
            except Exception as err:
                res.record(False, f"{data}: {type(err).__name__}: {err}", unhandled=1)

    run()
    return res


def _sql_db(work: Path) -> Path:
    import duckdb

    db = work / "sql.duckdb"
    duckdb.connect(str(db)).close()
    return db


SQL_CASES: list[tuple[list[str], str]] = [
    # (argv after the statement, what the output must hold literally)
    (["SELECT '[/x]' AS v"], "[/x]"),
    (["SELECT '[bold]hidden[/bold] text' AS v"], "[bold]hidden[/bold] text"),
    (["SELECT 1 AS \"[red]col\""], "[red]col"),
    (["SELECT chr(27) || '[2J' AS v"], "\\x1b[2J"),
    (["SELECT 'a' || chr(10) || chr(13) || chr(7) AS v"], "a\\n\\r\\x07"),
    (["SELECT 'x' || chr(8238) || 'y' AS v"], "x\\u202ey"),
]


def sql_output(work: Path) -> CaseResult:
    """`llem sql` with data that looks like markup or terminal controls, NaN/inf in JSON, typed and untyped
    parameters, and a closed pipe: literal output, valid JSON, '007' stays a string, no traceback."""
    from llem_pipeline.storage.sql_cli import main_sql

    res = CaseResult("llem sql output and parameters")
    db = _sql_db(work)

    def run(argv: list[str]) -> tuple[int | None, str, str]:
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main_sql([*argv, "--db", str(db)])
        except Exception as exc:
            return None, out.getvalue(), f"{type(exc).__name__}: {exc}"
        return rc, out.getvalue(), err.getvalue()

    for argv, shown in SQL_CASES:
        rc, out, err = run(argv)
        clean = not any(ord(c) < 32 and c != "\n" for c in out) and "\u202e" not in out
        res.record(rc == 0 and shown in out and clean, f"{argv}: rc {rc}, out {out[-200:]!r}, err {err[-200:]!r}",
                   unhandled=int(rc is None))
    rc, out, err = run(["SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, ['-inf'::DOUBLE] AS c", "--format", "json"])
    try:
        parsed = json.loads(out, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except ValueError:
        parsed = None
    res.record(rc == 0 and parsed == [{"a": None, "b": None, "c": [None]}], f"json: {out!r} {err!r}")
    rc, out, err = run(["SELECT ? AS s, ? AS i, typeof(?) AS t", "--format", "json", "--param", "007",
                        "--param", "int:007", "--param", "007"])
    res.record(rc == 0 and json.loads(out) == [{"s": "007", "i": 7, "t": "VARCHAR"}], f"params: {out!r} {err!r}")
    rc, out, err = run(["SELECT ?", "--param", "int:seven"])
    res.record(rc == 2 and "not a valid int" in err and "Traceback" not in err, f"bad typed param: rc {rc} {err!r}")
    for argv in (["-h"], ["sql", "SELECT * FROM range(20000)", "--db", str(db)]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before the first write
        try:
            proc = subprocess.run([sys.executable, "-m", "llem_pipeline.cli", *argv], stdout=write_end,
                                  stderr=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, timeout=300)
        finally:
            os.close(write_end)
        res.record(proc.returncode == 141 and proc.stderr == "", f"closed pipe {argv}: rc {proc.returncode} "
                   f"{proc.stderr[-300:]!r}", unhandled=count_tracebacks(proc.stderr))
    return res


GOOD_RESULT: dict[str, Any] = dict(
    experiment_id="e", measurement_config_hash="abcdef0123456789", measurement_methodology="total",
    total_tokens=1000, total_energy_j=50.0, total_inference_time_sec=10.0, avg_tokens_per_second=100.0,
    avg_energy_per_token_j=0.05, total_flops=1e12, start_time="2026-11-01T12:00:00+00:00",
    end_time="2026-11-01T12:00:10+00:00",
)
IMPOSSIBLE: list[dict[str, Any]] = [
    {"total_tokens": -1}, {"total_energy_j": -50.0}, {"total_inference_time_sec": -1.0}, {"input_tokens": -3},
    {"energy_adjusted_j": -1.0}, {"baseline_power_w": -5.0}, {"energy_per_device_j": [60.0, -10.0]},
    {"energy_trace_agreement": -0.5}, {"schema_version": "3.0"}, {"schema_version": "2.0.0"},
    {"avg_energy_per_token_j": 0.5}, {"avg_tokens_per_second": -1.0}, {"warmup_excluded_samples": -1},
]


def impossible_results() -> CaseResult:
    """Results with values that can never be true are refused (ValidationError naming the field); the possible
    edge values (no tokens, no energy, agreement above 1) are accepted and round-trip."""
    res = CaseResult(f"impossible result values ({len(IMPOSSIBLE)})")
    for bad in IMPOSSIBLE:
        field = next(iter(bad))
        try:
            ExperimentResult(**{**GOOD_RESULT, **bad})
            res.record(False, f"accepted {bad}")
        except ValidationError as err:
            res.record(field in str(err), f"{bad}: error does not name {field}: {err}")
        except Exception as err:
            res.record(False, f"{bad}: {type(err).__name__}: {err}", unhandled=1)
    for fine in ({}, {"total_tokens": 0, "avg_energy_per_token_j": 0.0, "avg_tokens_per_second": 0.0},
                 {"total_energy_j": 0.0}, {"energy_trace_agreement": 5.0}):
        try:
            r = ExperimentResult(**{**GOOD_RESULT, **fine})
            res.record(ExperimentResult.model_validate_json(r.model_dump_json()) == r, f"{fine} does not round-trip")
        except Exception as err:
            res.record(False, f"{fine} refused: {type(err).__name__}: {err}")
    return res


def retired_configs(work: Path) -> CaseResult:
    """Deleting a study file retires its configs (kept, with retired_at); bringing it back makes them current; a
    broken file retires nothing. No experiment_configs row is ever lost."""
    from dagster_duckdb import DuckDBResource

    from llem_pipeline.defs.experiments.registry import scan_studies
    from llem_pipeline.defs.experiments.sensors import register_and_retire
    from llem_pipeline.defs.settings import LlemPaths, LlemStore

    res = CaseResult("configs of deleted studies retired, not lost")
    folder = work / "retire" / "studies"
    folder.mkdir(parents=True)
    shutil.copy(DEMO, folder / "demo.yaml")
    shutil.copy(NIGHTLY, folder / "nightly.yaml")
    data = work / "retire" / "data"
    data.mkdir()
    saved = os.environ.get("LLEM_DATA_DIR")
    os.environ["LLEM_DATA_DIR"] = str(data)
    store = LlemStore(duckdb=DuckDBResource(database=str(data / "llem.duckdb")))
    paths = LlemPaths(data_dir=str(data), studies_dir=str(folder))
    try:
        result_store = store.store()
        total = None

        def state() -> dict[str, set[bool]]:
            out: dict[str, set[bool]] = {}
            for r in result_store.query("SELECT study, retired_at IS NOT NULL AS r FROM experiment_configs").to_pylist():
                out.setdefault(r["study"], set()).add(r["r"])
            return out

        def count() -> int:
            return result_store.query("SELECT count(*) AS n FROM experiment_configs").column("n")[0].as_py()

        steps: list[tuple[str, Any, dict[str, set[bool]]]] = [
            ("register", None, {"demo": {False}, "nightly": {False}}),
            ("delete nightly.yaml", lambda: (folder / "nightly.yaml").unlink(), {"demo": {False}, "nightly": {True}}),
            ("break demo.yaml", lambda: (folder / "demo.yaml").write_text("name: demo\nbase: {model: m, n: -1}\n"),
             {"demo": {False}, "nightly": {True}}),
            ("restore both", lambda: (shutil.copy(DEMO, folder / "demo.yaml"), shutil.copy(NIGHTLY, folder / "nightly.yaml")),
             {"demo": {False}, "nightly": {False}}),
        ]
        for label, action, want in steps:
            if action is not None:
                action()
            register_and_retire(scan_studies(folder), store, paths, "sim", set())
            got = state()
            n = count()
            total = n if total is None else total
            res.record(got == want, f"{label}: {got} (wanted {want})", rows_lost=max(0, total - n))
    except Exception as exc:
        res.record(False, f"{type(exc).__name__}: {exc}", unhandled=1)
    finally:
        if saved is None:
            os.environ.pop("LLEM_DATA_DIR", None)
        else:
            os.environ["LLEM_DATA_DIR"] = saved
    return res


# -- tests (scaled down) ----------------------------------------------------------------------------
def test_hostile_study_files(tmp_path):
    res = hostile_study_files(tmp_path)
    assert res.ok, res.explain()


def test_skipped_points_are_reported(tmp_path):
    for points in (3, 25):
        res = skipped_points(tmp_path / str(points), points)
        assert res.ok, res.explain()


def test_registry_sensor_with_hostile_files(tmp_path):
    res = registry_sensor_with_hostile_files(tmp_path)
    assert res.ok, res.explain()


@pytest.mark.slow
def test_launch_with_hostile_files(tmp_path):
    res = launch_with_hostile_files(tmp_path)
    assert res.ok, res.explain()


def test_non_finite_floats():
    res = non_finite_floats()
    assert res.ok, res.explain()


def test_config_round_trips():
    res = config_round_trips(50)
    assert res.ok, res.explain()


def test_sql_output(tmp_path):
    res = sql_output(tmp_path)
    assert res.ok, res.explain()


def test_impossible_results():
    res = impossible_results()
    assert res.ok, res.explain()


def test_retired_configs(tmp_path):
    res = retired_configs(tmp_path)
    assert res.ok, res.explain()
