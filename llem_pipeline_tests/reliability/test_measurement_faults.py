"""Measurement faults through the real code paths with injected hardware (reliability suite: measurement).

NVMLErrors at random calls (the fake pynvml's seeded error injection into NvmlDevice, inside the sampler,
the energy monitor's boundary polls and the harness), a GPU lost mid-window, counter resets and wraps,
the sampler thread dying, and the worker command SIGKILLed, timed out, or writing into an unwritable
folder or a full disk. Survival: a result whose energy lies within its stated uncertainty of the exact
energy and that carries the warning for what happened, or one clear error with nothing written.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.experiment import compute_measurement_config_hash
from llem_pipeline.domain.warnings import warning_code
from llem_pipeline.engines.protocol import PromptSet
from llem_pipeline.measure.devices.fake_pynvml import ErrorInjection, FakePynvml
from llem_pipeline.measure.devices.nvml import close_devices, open_nvml_devices
from llem_pipeline.measure.devices.simulated import Constant, ReasonSpan, SimulatedDevice
from llem_pipeline.measure.harness import ProcessOutcome, measure_process
from llem_pipeline_tests.engine_doubles import PacedEngine
from llem_pipeline_tests.reliability.support import (
    SLOW_CONFIG,
    TINY_CONFIG,
    CaseResult,
    count_tracebacks,
    leftovers,
    one_line_error,
    run_worker,
    small_filesystem,
    unwritable_dir,
    worker_cmd,
    worker_env,
    write_config,
)

GPU_IS_LOST = 15
POWER_W = 150.0
WRAP_MJ = int(POWER_W * 0.25 * 1000)  # the counter wraps every 0.25 s
CONFIG = ExperimentConfig.model_validate({
    "model": "llem:tiny", "n": 4, "max_output_tokens": 5, "precision": "fp32",
    "warmup": {"n_warmup": 1, "thermal_floor_seconds": 0}, "energy": {"sample_interval_ms": 10},
    "baseline": {"enabled": False},
})


# -- in-process helpers -----------------------------------------------------------------------------
@contextlib.contextmanager
def thread_crashes() -> Iterator[list[str]]:
    """Collect exceptions that kill threads (what would print 'Exception in thread ...')."""
    seen: list[str] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: seen.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}")
    try:
        yield seen
    finally:
        threading.excepthook = previous


def _measure(devices, engine: PacedEngine, config: ExperimentConfig = CONFIG,
             sampler_mode: str = "thread") -> ProcessOutcome:
    """Measure with the sampler in a thread by default: most cases change the devices of this process
    mid-run (a lost GPU, a counter reset), which a sampler process, reading its own copy, would not see."""
    prompts = PromptSet(token_ids=[[1, 2, 3, 4]] * config.n, source="test")
    return measure_process(config, devices, engine_loader=lambda c, idx: engine, tokenizer_loader=lambda c: None,
                           prompt_builder=lambda c, tok: prompts, device_indices=[], experiment_id="reliability",
                           sampler_mode=sampler_mode)


def _sims(n: int = 1, **kw) -> list[SimulatedDevice]:
    kw = {"counter_period_s": 0.02, **kw}
    return [SimulatedDevice(Constant(POWER_W), index=i, **kw) for i in range(n)]


# Warnings that tell the reader the energy is doubtful: the counter and the power trace disagree, or the
# sampler stopped (no trace to cross-check the counter).
DOUBT_WARNINGS = {"counter_trace_disagreement", "sampler_error"}


def _energy_problem(out: ProcessOutcome, sims: list[SimulatedDevice], expect: set[str] = frozenset()) -> str | None:
    """Return why a result is wrong, else None: a non-finite or unusable value (± inf, ± > 25 %), energy
    outside its stated uncertainty of the exact value without a doubt warning, or a missing expected warning."""
    raw = out.raw
    a, b = out.window_mono_s
    truth = sum(s.true_energy_j(a, b) for s in sims)
    codes = {warning_code(w) for w in raw.measurement_warnings}
    if not math.isfinite(raw.energy_j) or raw.energy_j < 0:
        return f"energy {raw.energy_j} J is not a finite non-negative number"
    if not math.isfinite(raw.energy_uncertainty_j) or raw.energy_uncertainty_j > 0.25 * truth:
        return (f"energy {raw.energy_j:.4f} J ± {raw.energy_uncertainty_j} J (exact {truth:.4f} J): "
                f"no usable value (warnings {sorted(codes)})")
    if abs(raw.energy_j - truth) > raw.energy_uncertainty_j + 0.01 * truth + 1e-3 and not codes & DOUBT_WARNINGS:
        return (f"energy {raw.energy_j:.4f} J vs exact {truth:.4f} J: off by more than the stated "
                f"± {raw.energy_uncertainty_j:.4f} J and not flagged (warnings {sorted(codes)})")
    if not expect <= codes:
        return f"warnings {sorted(codes)} lack {sorted(expect - codes)}"
    return None


def _sampler_threads_alive() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "llem-sampler" and t.is_alive())


# -- cases ------------------------------------------------------------------------------------------
def nvml_error_seeds(seeds: range, probability: float = 0.01) -> CaseResult:
    """NVMLError_Unknown at random NVML calls (seeded, ``probability`` per call) during a whole harness run;
    odd seeds sample from a sampler process (errors then also hit its reads and its window-start polls)."""
    res = CaseResult("NVMLError at random calls")
    for seed in seeds:
        mode = "process" if seed % 2 else "thread"
        sims = _sims()
        fake = FakePynvml(sims, errors=[ErrorInjection(probability=probability, seed=seed)])
        try:
            devices = open_nvml_devices(None, nvml=fake, env={})
        except fake.NVMLError:
            res.record(True)  # failing to open is a clear NVML error before anything was measured
            continue
        engine = PacedEngine()
        with thread_crashes() as crashes:
            try:
                problem = _energy_problem(_measure(devices, engine, sampler_mode=mode), sims)
                res.record(problem is None, f"seed {seed} ({mode}): {problem}")
            except fake.NVMLError as err:  # clear, but a 1 % transient error must not cost the measurement
                res.record(False, f"seed {seed} ({mode}): a transient {err!r} aborted the measurement "
                                  f"(engine cleaned up: {engine.cleaned == 1})")
            except Exception as err:
                res.record(False, f"seed {seed} ({mode}): {type(err).__name__}: {err}", unhandled=1)
            finally:
                close_devices(devices)
        if crashes:
            res.unhandled += len(crashes)
            res.notes.append(f"seed {seed}: thread died: {crashes}")
    return res


def device_lost_mid_window(trials: int) -> CaseResult:
    """The GPU falls off the bus half-way through the run: every later NVML call fails with GPU_IS_LOST."""
    res = CaseResult("device lost mid-window")
    for _ in range(trials):
        sims = _sims(2)
        fake = FakePynvml(sims)
        devices = open_nvml_devices(None, nvml=fake, env={})
        engine = PacedEngine(on_run=lambda e, f=fake: f.errors.append(
            ErrorInjection(device_index=1, after_calls=0, error_code=GPU_IS_LOST)))
        with thread_crashes() as crashes:
            try:
                _measure(devices, engine)
                res.record(False, "a result was produced although GPU 1 was lost mid-window")
            except fake.NVMLError as err:
                ok = "GPU is lost" in str(err) and engine.cleaned == 1 and _sampler_threads_alive() == 0
                res.record(ok, f"error {err!r}, cleaned {engine.cleaned}, sampler threads {_sampler_threads_alive()}")
            except Exception as err:
                res.record(False, f"{type(err).__name__}: {err}", unhandled=1)
            finally:
                close_devices(devices)
        res.unhandled += len(crashes)
    return res


def counter_reset_and_wrap(trials: int) -> CaseResult:
    """The energy counter resets to 0 mid-run (driver reload), or wraps every 0.25 s (unknown modulus through
    NVML; known modulus on the simulated device), in windows of about 0.7 s: energy within its uncertainty,
    resets reported."""
    res = CaseResult("counter reset and wrap")
    for _ in range(trials):
        def nvml_reset():
            sims = _sims()
            fake = FakePynvml(sims)
            devs = open_nvml_devices(None, nvml=fake, env={})
            eng = PacedEngine(40, on_run=lambda e: setattr(sims[0], "counter_reset_at_s", sims[0].elapsed_s()))
            return devs, sims, eng, lambda: close_devices(devs)

        def nvml_wrap():
            sims = _sims(counter_modulus_mj=WRAP_MJ)
            fake = FakePynvml(sims)
            devs = open_nvml_devices(None, nvml=fake, env={})
            return devs, sims, PacedEngine(40), lambda: close_devices(devs)

        def simulated_wrap():
            sims = _sims(counter_modulus_mj=WRAP_MJ)
            return sims, sims, PacedEngine(40), lambda: None

        variants: list[tuple[str, Callable[[], tuple], set[str]]] = [("reset via NVML", nvml_reset, {"counter_reset"}),
                    ("wrap via NVML (modulus unknown)", nvml_wrap, {"counter_reset"}),
                    ("wrap on the simulated device (modulus known)", simulated_wrap, set())]
        for name, make, expect in variants:
            devices, sims, engine, close = make()
            with thread_crashes() as crashes:
                try:
                    problem = _energy_problem(_measure(devices, engine), sims, expect)
                    res.record(problem is None, f"{name}: {problem}")
                except Exception as err:
                    res.record(False, f"{name}: {type(err).__name__}: {err}", unhandled=1)
                finally:
                    close()
            res.unhandled += len(crashes)
    return res


class FailingSensor(SimulatedDevice):
    """A simulated GPU whose full read (the sampler's) fails after ``good_reads``; counter and power still answer."""

    def __init__(self, *args, good_reads: int = 5, **kw) -> None:
        super().__init__(*args, **kw)
        self.good_reads = good_reads

    def read(self):
        self.good_reads -= 1
        if self.good_reads < 0:
            raise RuntimeError("sensor bus error")
        return super().read()


def _kill_sampler_process(_engine: PacedEngine) -> None:
    """SIGKILL every sampler process of this process (the engine's on_run hook)."""
    import multiprocessing as mp

    for p in mp.active_children():
        if p.name == "llem-sampler":
            os.kill(p.pid, signal.SIGKILL)
            p.join(5)


def sampler_thread_dying(trials: int) -> CaseResult:
    """The sampler dies: an NVMLError on a quantity only it reads (mid-run, or at its first read, before
    the window), a device read raising, a reading the buffers cannot store (clock-event bit 63), and the
    sampler process SIGKILLed mid-run. The window is still measured from the counter and the boundary
    polls, and flagged."""
    res = CaseResult("sampler dying (thread, process)")
    for _ in range(trials):
        def nvml_util(after: int = 5):
            sims = _sims()
            fake = FakePynvml(sims, errors=[ErrorInjection(function="nvmlDeviceGetUtilizationRates",
                                                           after_calls=after)])
            devs = open_nvml_devices(None, nvml=fake, env={})
            return devs, sims, lambda: close_devices(devs)

        def failing_read():
            sims = [FailingSensor(Constant(POWER_W), counter_period_s=0.02)]
            return sims, sims, lambda: None

        def unstorable():
            sims = _sims(reason_spans=[ReasonSpan(0.0, 1e9, 1 << 63)])
            fake = FakePynvml(sims)
            devs = open_nvml_devices(None, nvml=fake, env={})
            return devs, sims, lambda: close_devices(devs)

        def nvml_process_killed():
            sims = _sims()
            devs = open_nvml_devices(None, nvml=FakePynvml(sims), env={})
            return devs, sims, lambda: close_devices(devs)

        for name, make, mode, hook in (
                ("NVMLError on utilisation", nvml_util, "thread", None),
                ("dies at its first read", lambda: nvml_util(0), "thread", None),
                ("read() raises", failing_read, "thread", None),
                ("unstorable reading", unstorable, "thread", None),
                ("NVMLError on utilisation in the sampler process", nvml_util, "process", None),
                ("sampler process SIGKILLed mid-run", nvml_process_killed, "process", _kill_sampler_process)):
            devices, sims, close = make()
            with thread_crashes() as crashes:
                try:
                    # a kill lands half-way through a 0.64 s run, after the start's polls (≤ 0.1 s) were answered
                    engine = PacedEngine(40 if hook else 5, on_run=hook)
                    problem = _energy_problem(_measure(devices, engine, sampler_mode=mode), sims, {"sampler_error"})
                    res.record(problem is None and not crashes, f"{name}: {problem or crashes}")
                except Exception as err:
                    res.record(False, f"{name}: {type(err).__name__}: {err}", unhandled=1)
                finally:
                    close()
            res.unhandled += len(crashes)
    return res


# -- the worker command ----------------------------------------------------------------------------
def _children_alive(pids: list[int], wait_s: float = 120.0) -> list[int]:
    """Return the processes of ``pids`` still running (zombies count as gone) once all are gone or ``wait_s`` s
    passed. It returns as soon as they are gone; the 120 s bound only decides a process that never ends, so a
    slow exit on a loaded machine is never taken for an orphan."""
    import psutil

    deadline = time.monotonic() + wait_s
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _kill_tree(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _run_and_kill(data_dir: Path, config: dict, out: Path, kill_at: str) -> tuple[int, str, list[int]]:
    """Start the worker, SIGKILL it when its progress shows ``kill_at`` (an event or step name); returns
    (return code, stderr, engine processes that never ended: see _children_alive)."""
    import psutil

    cfg = write_config(data_dir, config)
    argv = [a for a in worker_cmd(cfg, out) if a != "--quiet"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=worker_env(data_dir))
    assert proc.stderr is not None
    lines: list[str] = []
    children: list[int] = []
    for line in proc.stderr:
        lines.append(line)
        with contextlib.suppress(psutil.NoSuchProcess):
            children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)] or children
        if f'"step": "{kill_at}"' in line or line.startswith(f"llem-measure: {kill_at} "):
            break
    proc.kill()
    rest = proc.stderr.read()
    proc.wait(120)  # SIGKILL ends it at once; the bound only turns a hang into a failure
    alive = _children_alive(children)
    _kill_tree(alive)  # never leave them behind, even when the case fails
    return proc.returncode, "".join(lines) + rest, alive


def worker_sigkill(data_dir: Path, kill_points: list[str]) -> CaseResult:
    """SIGKILL the worker at each of ``kill_points`` (progress events: 'plan', or steps: 'model_load', 'run'):
    no run folder, no rows, no orphaned engine process; then a normal run to the same place succeeds and lands."""
    from llem_pipeline.measure.run_folder import RunFolderError
    from llem_pipeline.storage import ResultStore
    from llem_pipeline_tests.storage.record_factory import record_from_run_folder

    res = CaseResult("worker SIGKILLed mid-run")
    day = datetime.now(UTC).date().isoformat()
    store = ResultStore(data_dir / "llem.duckdb", lock_timeout_s=60)
    slow_hash = compute_measurement_config_hash(ExperimentConfig.model_validate(SLOW_CONFIG))
    for i, point in enumerate(kill_points):
        out = data_dir / "runs" / day / slow_hash / f"killed-{i}"
        rc, _stderr, alive = _run_and_kill(data_dir, SLOW_CONFIG, out, point)
        try:
            store.write_run(record_from_run_folder(out, run_date=day))
            wrote = True
        except RunFolderError:  # no run folder (or an incomplete one): nothing to store
            wrote = False
        ok = rc == -signal.SIGKILL and not out.exists() and not alive and not wrote
        res.record(ok, f"kill at {point}: rc {rc}, folder exists {out.exists()}, orphans {alive}, rows written {wrote}",
                   rows_lost=int(wrote))
    # a retry of the last killed run (same config, same run folder) succeeds, lands, and removes the dead
    # worker's temp folder
    config = {**SLOW_CONFIG, "n": 4, "max_output_tokens": 6}
    h = compute_measurement_config_hash(ExperimentConfig.model_validate(config))
    out = data_dir / "runs" / day / h / f"killed-{len(kill_points) - 1}"
    out.parent.mkdir(parents=True, exist_ok=True)
    for dead in (data_dir / "runs" / day / slow_hash).glob(f".{out.name}.tmp-*"):
        dead.rename(out.parent / dead.name)  # the same run retried with a shorter config: its temp folder is beside it
    proc = run_worker(data_dir, config, out)
    ok = proc.returncode == 0 and (out / "result.json").is_file()
    landed = 0
    if ok:
        landed = store.write_run(record_from_run_folder(out, run_date=day))["experiment_results"]
    stale = [p.name for p in out.parent.glob(f".{out.name}.tmp-*")]
    res.record(ok and landed == 1 and not stale,
               f"next run: rc {proc.returncode} {proc.stderr.strip()[-300:]}; rows {landed}; stale temp folders {stale}",
               unhandled=count_tracebacks(proc.stderr), rows_lost=int(landed != 1))
    return res


def worker_timeout(data_dir: Path, timeouts: list[float]) -> CaseResult:
    """--timeout shorter than the run: exit 124, one line, no folder, no engine process left."""
    res = CaseResult("worker timing out")
    for t in timeouts:
        out = data_dir / "timeouts" / f"t{t}"
        proc = run_worker(data_dir, SLOW_CONFIG, out, "--timeout", str(t))
        line = one_line_error(proc)
        ok = proc.returncode == 124 and line is not None and "ran past --timeout" in line and not leftovers(out)
        res.record(ok, f"--timeout {t}: rc {proc.returncode}, stderr {proc.stderr.strip()[-300:]!r}, left {leftovers(out)}",
                   unhandled=count_tracebacks(proc.stderr))
    return res


def run_folder_unwritable(data_dir: Path, work: Path) -> CaseResult:
    """--out under a folder nothing can be created in: exit 1, one line naming the place, nothing written."""
    res = CaseResult("run folder unwritable")
    with unwritable_dir(work / "readonly") as how:
        out = work / "readonly" / "runs" / "run"
        proc = run_worker(data_dir, TINY_CONFIG, out)
        line = one_line_error(proc)
        ok = proc.returncode == 1 and line is not None and str(work / "readonly") in line and not out.exists()
        res.record(ok, f"{how}: rc {proc.returncode}, stderr {proc.stderr.strip()[-400:]!r}",
                   unhandled=count_tracebacks(proc.stderr))
    return res


def disk_full(data_dir: Path, work: Path, sizes: list[int]) -> CaseResult:
    """The run folder's filesystem fills up (a tiny tmpfs, or RLIMIT_FSIZE where mounting is not allowed):
    at ``sizes`` bytes the worker's own writes or the engine process's Parquet writes fail. Exit 1 with one
    line saying the disk is full, and nothing left behind."""
    res = CaseResult("disk full")
    for size in sizes:
        where = work / f"full-{size}"
        with small_filesystem(where, size) as how:
            out = where / "run"
            proc = run_worker(data_dir, TINY_CONFIG, out, fsize_limit=size if how == "rlimit" else None)
            line = one_line_error(proc) or ""
            clear = any(s in line for s in ("No space left on device", "File too large"))
            left = leftovers(out)
            res.record(proc.returncode == 1 and clear and not left,
                       f"{how} {size} B: rc {proc.returncode}, left {left}, stderr {proc.stderr.strip()[-400:]!r}",
                       unhandled=count_tracebacks(proc.stderr))
    return res


# -- tests (scaled down) ----------------------------------------------------------------------------
def test_nvml_errors_at_random_calls():
    res = nvml_error_seeds(range(6))
    assert res.ok, res.explain()


def test_device_lost_mid_window_is_one_clear_error():
    res = device_lost_mid_window(1)
    assert res.ok, res.explain()


def test_counter_reset_and_wrap_keep_the_energy():
    res = counter_reset_and_wrap(1)
    assert res.ok, res.explain()


def test_sampler_thread_dying_is_flagged_not_fatal():
    res = sampler_thread_dying(1)
    assert res.ok, res.explain()


@pytest.fixture(scope="module")
def worker_data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability-data")


@pytest.mark.slow
def test_worker_sigkilled_mid_run_writes_nothing_and_the_next_run_lands(worker_data):
    res = worker_sigkill(worker_data, ["run"])
    assert res.ok, res.explain()


@pytest.mark.slow
def test_worker_timeout(worker_data):
    res = worker_timeout(worker_data, [3.0])
    assert res.ok, res.explain()


@pytest.mark.slow
def test_run_folder_unwritable(worker_data, tmp_path):
    res = run_folder_unwritable(worker_data, tmp_path)
    assert res.ok, res.explain()


@pytest.mark.slow
def test_disk_full(worker_data, tmp_path):
    res = disk_full(worker_data, tmp_path, [4096, 12288])
    assert res.ok, res.explain()
