"""Sampler overhead: throughput of a CPU-bound Python workload with the sampler off / on, vs the peers.

The workload is a pure-Python loop (it holds the GIL, like a Python inference driver). Each round runs
every condition once in a shuffled order as an off/on/off triple of ``--trial-s`` s trials; the ratio
is on / mean(neighbouring offs), and the cost is 1 − median(ratio) over rounds (the 'off' row is the
off/off ratio: the noise floor of this machine). Conditions:

- ours@10Hz / ours@100Hz: our ``Sampler`` thread reading all quantities of ``--gpus`` NvmlDevices
  (9 NVML calls per device per tick) through the fake pynvml (simulated GPUs on the real clock);
  ``/full@…Hz``: power and counter every tick, the slow quantities every 10th tick (``full_read_every``);
- zeus@10Hz: Zeus's ``PowerMonitor(update_period=0.1)`` (one spawned process per power domain; the fake
  pynvml reaches the children through a ``pynvml`` shim on ``sys.path``); spawned once and suspended
  (SIGSTOP) outside its own trials;
- codecarbon@10Hz: CodeCarbon's ``OfflineEmissionsTracker(measure_power_secs=0.1)`` (its scheduler and
  1 s monitor threads, CPU and RAM estimates included as it always runs them; GPU tracking through the
  fake; a stub ``nvidia-smi`` on PATH lets it enable GPUs).

CPU cost: our thread's own CPU time per tick (``time.thread_time`` in the thread); CodeCarbon's
in-process threads = process CPU − main-thread CPU; Zeus's children via psutil. Both per second of
sampling and per nominal sample. Peers start before and stop after each trial (start-up not timed).

    .venv/bin/python bench/sampler_overhead.py [--rounds 21] [--trial-s 0.3] [--gpus 1] [--no-peers]

Targets: cost ≤ 0.5 % at 10 Hz; lower CPU per second of sampling than each peer. Ends with a ``RESULT``
line; exits 1 when it could not measure.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import pickle
import random
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import psutil  # noqa: E402

from llem_pipeline.measure.devices.fake_pynvml import FakePynvml  # noqa: E402
from llem_pipeline.measure.devices.nvml import close_devices, open_nvml_devices  # noqa: E402
from llem_pipeline.measure.devices.simulated import SimulatedDevice, SquareBursts  # noqa: E402
from llem_pipeline.measure.sampler import Sampler  # noqa: E402

SHIM = '''"""pynvml shim for spawned benchmark processes: a FakePynvml built from a pickled spec."""
import os, pickle, sys
from llem_pipeline.measure.devices.fake_pynvml import FakePynvml
with open(os.environ["LLEM_FAKE_PYNVML_SPEC"], "rb") as _fh:
    _spec = pickle.load(_fh)
_fake = FakePynvml(_spec["devices"], uuids=_spec["uuids"])
sys.modules[__name__] = _fake
'''


def work(n: int) -> int:
    """The CPU-bound workload: a pure-Python LCG loop of n steps; returns the final state."""
    x = 1
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
    return x


def calibrate_n(trial_s: float) -> int:
    """Returns the loop count that takes about trial_s seconds with nothing else running."""
    n = 200_000
    while True:
        t = time.perf_counter()
        work(n)
        dt = time.perf_counter() - t
        if dt > 0.2:
            return int(n * trial_s / dt)
        n *= 2


class Condition:
    """A sampler that can be started before and stopped after a trial; reports its CPU use."""

    name = "off"
    rate_hz = 0.0

    def start(self) -> None:
        """Starts sampling (start-up cost is not part of the trial)."""

    def stop(self) -> tuple[float, int]:
        """Stops sampling; returns (sampler CPU s during the trial, samples taken or nominal)."""
        return 0.0, 0


class Ours(Condition):
    def __init__(self, devices, rate_hz: float, full_every: int = 1) -> None:
        self.devices, self.rate_hz, self.full_every = devices, rate_hz, full_every
        self.name = f"ours@{rate_hz:g}Hz" + (f"/full@{rate_hz / full_every:g}Hz" if full_every > 1 else "")

    def start(self) -> None:
        self.s = Sampler(self.devices, 1.0 / self.rate_hz, full_read_every=self.full_every).start()

    def stop(self) -> tuple[float, int]:
        self.s.stop()
        return self.s.thread_cpu_s, self.s.ticks * len(self.devices)


class InProcessPeer(Condition):
    """Peer threads in this process: CPU = process CPU − main-thread CPU over the trial."""

    def begin_trial(self) -> None:
        self.p0, self.m0, self.t0 = time.process_time(), time.thread_time(), time.perf_counter()

    def end_trial(self) -> tuple[float, float]:
        cpu = (time.process_time() - self.p0) - (time.thread_time() - self.m0)
        return max(cpu, 0.0), time.perf_counter() - self.t0


class CodeCarbon(InProcessPeer):
    def __init__(self, n_gpus: int, rate_hz: float = 10.0) -> None:
        self.n_gpus, self.rate_hz, self.name = n_gpus, rate_hz, f"codecarbon@{rate_hz:g}Hz"

    def start(self) -> None:
        from codecarbon import OfflineEmissionsTracker

        self.tracker = OfflineEmissionsTracker(
            country_iso_code="USA", measure_power_secs=1.0 / self.rate_hz, save_to_file=False, log_level="error",
            tracking_mode="machine", gpu_ids=list(range(self.n_gpus)))
        self.tracker.start()
        self.begin_trial()

    def stop(self) -> tuple[float, int]:
        cpu, dt = self.end_trial()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.tracker.stop()
        return cpu, max(int(dt * self.rate_hz), 1) * self.n_gpus


class Zeus(Condition):
    """Zeus PowerMonitor, started once; between its trials its polling processes are suspended (SIGSTOP),
    so 'off' trials have no Zeus sampling, without paying the spawn start-up per trial."""

    name, rate_hz = "zeus@10Hz", 10.0

    def __init__(self, n_gpus: int) -> None:
        self.n_gpus = n_gpus
        self.pm = None

    def _children(self) -> list[psutil.Process]:
        return [psutil.Process(p.pid) for p in self.pm.processes.values() if p.pid is not None]

    def launch(self) -> None:
        """Spawns the monitor (once) and suspends it."""
        from zeus.monitor.power import PowerMonitor

        self.pm = PowerMonitor(gpu_indices=list(range(self.n_gpus)), update_period=0.1)
        time.sleep(0.5)
        for c in self._children():
            c.suspend()

    def start(self) -> None:
        self.kids = self._children()
        self.c0 = sum(sum(k.cpu_times()[:2]) for k in self.kids)
        self.t0 = time.perf_counter()
        for c in self.kids:
            c.resume()

    def stop(self) -> tuple[float, int]:
        for c in self.kids:
            c.suspend()
        dt = time.perf_counter() - self.t0
        cpu = sum(sum(k.cpu_times()[:2]) for k in self.kids) - self.c0
        return cpu, max(int(dt * self.rate_hz), 1) * self.n_gpus * len(self.kids)

    def shutdown(self) -> None:
        """Resumes and stops the monitor processes."""
        if self.pm is not None:
            for c in self._children():
                with contextlib.suppress(psutil.Error):
                    c.resume()
            self.pm.stop()


def setup_peers(fake: FakePynvml, sims, tmp: str) -> list[str]:
    """Makes the fake pynvml visible to this process, to spawned children, and CodeCarbon's GPU check."""
    notes = []
    spec = os.path.join(tmp, "fake_pynvml_spec.pkl")
    with open(spec, "wb") as fh:
        pickle.dump({"devices": sims, "uuids": fake.uuids}, fh)
    with open(os.path.join(tmp, "pynvml.py"), "w") as fh:
        fh.write(SHIM)
    smi = os.path.join(tmp, "nvidia-smi")
    with open(smi, "w") as fh:
        fh.write("#!/bin/sh\nexit 0\n")
    os.chmod(smi, 0o755)
    os.environ["LLEM_FAKE_PYNVML_SPEC"] = spec
    os.environ["PATH"] = tmp + os.pathsep + os.environ.get("PATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([tmp, ROOT, os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, tmp)
    sys.modules["pynvml"] = fake
    return notes


def main() -> int:
    """Runs the interleaved rounds; prints the tables and the RESULT line; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--trial-s", type=float, default=0.3)
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    wall0 = time.perf_counter()
    logging.disable(logging.CRITICAL)
    sims = [SimulatedDevice(SquareBursts(1.0, 0.5, 100.0, 400.0), index=i) for i in range(args.gpus)]
    fake = FakePynvml(sims)
    devices = open_nvml_devices(None, nvml=fake, env={})
    conditions: list[Condition] = [Condition(), Ours(devices, 10.0), Ours(devices, 10.0, 10),
                                   Ours(devices, 100.0), Ours(devices, 100.0, 10)]
    tmp = tempfile.mkdtemp(prefix="llem_bench_")
    notes: list[str] = []
    zeus: Zeus | None = None
    if not args.no_peers:
        setup_peers(fake, sims, tmp)
        try:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                zeus = Zeus(args.gpus)
                zeus.launch()
            conditions.append(zeus)
        except Exception as exc:
            notes.append(f"zeus unavailable: {type(exc).__name__}: {exc}")
            zeus = None
        cc = CodeCarbon(args.gpus)
        try:
            with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                cc.start()
                time.sleep(0.2)
                cc.stop()
            conditions.append(cc)
        except Exception as exc:
            notes.append(f"{cc.name} unavailable: {type(exc).__name__}: {exc}")
    n = calibrate_n(args.trial_s)
    rng = random.Random(args.seed)
    ratios: dict[str, list[float]] = {c.name: [] for c in conditions}
    cpu: dict[str, list[tuple[float, int, float]]] = {c.name: [] for c in conditions}
    off = conditions[0]
    work(n // 10)  # warm up

    def trial(c: Condition) -> float:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            c.start()
        t = time.perf_counter()
        work(n)
        dt = time.perf_counter() - t
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            c_cpu, c_samples = c.stop()
        cpu[c.name].append((c_cpu, c_samples, dt))
        return n / dt

    try:
        for _ in range(args.rounds):
            order = conditions[1:]
            rng.shuffle(order)
            for c in order:  # off, on, off: each 'on' trial is compared with its two neighbours
                a = trial(off)
                b = trial(c)
                d = trial(off)
                ratios[c.name].append(b / (0.5 * (a + d)))
                ratios[off.name].append(a / d)
    finally:
        if zeus is not None:
            zeus.shutdown()
    close_devices(devices)

    print(f"# sampler overhead: {args.rounds} interleaved rounds × {args.trial_s:g} s CPU-bound trials, "
          f"{args.gpus} simulated GPU(s) behind the fake pynvml; {os.cpu_count()} CPUs")
    for note in notes:
        print("# " + note)
    head = (f"{'condition':<16} {'median thr ratio':>16} {'cost %':>8} {'IQR of ratio':>14} "
            f"{'CPU ms/s':>9} {'CPU share %':>11} {'CPU µs/sample':>14}")
    print(head)
    print("-" * len(head))
    summary: dict[str, tuple[float, float, float]] = {}
    for c in conditions:
        r = ratios[c.name]
        med = statistics.median(r)
        q = statistics.quantiles(r, n=4) if len(r) >= 2 else [med, med, med]
        total_cpu = sum(x[0] for x in cpu[c.name])
        total_s = sum(x[2] for x in cpu[c.name])
        total_samples = sum(x[1] for x in cpu[c.name])
        ms_per_s = total_cpu / total_s * 1000 if total_s else 0.0
        us_per_sample = total_cpu / total_samples * 1e6 if total_samples else 0.0
        summary[c.name] = ((1 - med) * 100, ms_per_s, us_per_sample)
        print(f"{c.name:<16} {med:>16.4f} {(1 - med) * 100:>8.3f} {q[2] - q[0]:>14.4f} "
              f"{ms_per_s:>9.3f} {ms_per_s / 10:>11.3f} {us_per_sample if total_samples else float('nan'):>14.1f}")
    ours10 = summary["ours@10Hz"]
    peers = {k: v for k, v in summary.items() if not k.startswith(("ours", "off"))}
    cost_ok = ours10[0] <= 0.5
    lower_cpu = all(ours10[1] < v[1] for v in peers.values()) if peers else None
    print(f"\ntargets: cost at 10 Hz <= 0.5 %: {'MET' if cost_ok else 'NOT MET'} ({ours10[0]:.3f} %); "
          f"lower sampler CPU per second than each peer: "
          f"{'n/a' if lower_cpu is None else ('MET' if lower_cpu else 'NOT MET')} "
          f"(ours {ours10[1]:.3f} ms/s vs " + ", ".join(f"{k} {v[1]:.3f} ms/s" for k, v in peers.items()) + ")")
    print(f"ours@10Hz sampler CPU share of one core: {ours10[1] / 10:.3f} % (a GIL-holding thread costs a "
          "Python workload at least this share; target 0.5 %)")
    print("note: the 'off' row is off/off, the noise floor: throughput differences within the ratio IQR are "
          "noise on this shared machine; the CPU columns are the direct cost measure")
    print(f"runtime {time.perf_counter() - wall0:.1f} s")
    parts = [f"ours10hz_cost_pct={ours10[0]:.3f}", f"ours10hz_cpu_share_pct={ours10[1] / 10:.3f}",
             f"noise_iqr_pct={(statistics.quantiles(ratios['off'], n=4)[2] - statistics.quantiles(ratios['off'], n=4)[0]) * 100:.2f}", f"ours100hz_cost_pct={summary['ours@100Hz'][0]:.3f}",
             f"ours10hz_cpu_ms_per_s={ours10[1]:.3f}", f"ours10hz_cpu_us_per_sample={ours10[2]:.1f}",
             f"ours100hz_cpu_ms_per_s={summary['ours@100Hz'][1]:.3f}"]
    for k, v in peers.items():
        key = k.split("@")[0]
        parts += [f"{key}_cost_pct={v[0]:.3f}", f"{key}_cpu_ms_per_s={v[1]:.3f}", f"{key}_cpu_us_per_sample={v[2]:.1f}"]
    lite = summary["ours@10Hz/full@1Hz"]
    parts += [f"ours10hz_full1hz_cost_pct={lite[0]:.3f}", f"ours10hz_full1hz_cpu_share_pct={lite[1] / 10:.3f}",
              f"ours100hz_full10hz_cpu_ms_per_s={summary['ours@100Hz/full@10Hz'][1]:.3f}"]
    parts += [f"cost_target_met={int(cost_ok)}", f"lower_cpu_than_peers={'na' if lower_cpu is None else int(lower_cpu)}"]
    print("RESULT " + " ".join(parts))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        import traceback

        traceback.print_exc()
        sys.exit(1)
