"""The sampler in its own process: it reopens the same (fake-NVML) GPUs, samples on the shared monotonic
clock, polls the window's start while the caller goes on, and its death is flagged, not fatal.

These run on the real clock (a child process cannot share a test clock), so nothing here asserts how long
something took: tests wait for events (rows, a reply), check what was done rather than how fast, and
compare estimates with the error bounds the code states; the few fixed bounds left say why next to them.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.warnings import warning_code
from llem_pipeline.engines.protocol import PromptSet
from llem_pipeline.measure.devices.fake_pynvml import ErrorInjection, FakePynvml
from llem_pipeline.measure.devices.nvml import close_devices, open_nvml_devices
from llem_pipeline.measure.devices.simulated import Constant, FakeClock, SimulatedDevice
from llem_pipeline.measure.energy import EnergyMonitor
from llem_pipeline.measure.harness import make_sampler, measure_process
from llem_pipeline.measure.sampler_process import (
    ProcessSampler,
    SamplerProcessError,
    _open_nvml_in_child,
    child_opener,
)
from llem_pipeline_tests.engine_doubles import PacedEngine

CONFIG = ExperimentConfig.model_validate({
    "model": "llem:tiny", "n": 8, "max_output_tokens": 5, "precision": "fp32",
    "warmup": {"n_warmup": 1, "thermal_floor_seconds": 0}, "energy": {"sample_interval_ms": 20},
    "baseline": {"enabled": False},
})


def _nvml(*watts: float, **sim_kw):
    sims = [SimulatedDevice(Constant(w), index=i, **sim_kw) for i, w in enumerate(watts)]
    fake = FakePynvml(sims)
    return sims, fake, open_nvml_devices(None, nvml=fake, env={})


def _sampler_children() -> list:
    return [p for p in mp.active_children() if p.name == "llem-sampler"]


def _wait_for_rows(sampler: ProcessSampler, rows: int) -> None:
    """Return once the sampler's snapshot holds ``rows`` rows. The 120 s bound only turns a sampler that never
    samples into a failure instead of a hang (at 20 ms per tick the rows come within a second)."""
    deadline = time.monotonic() + 120
    while len(sampler.snapshot()) < rows:
        assert time.monotonic() < deadline, f"the sampler process took fewer than {rows} rows in 120 s"
        time.sleep(0.02)


def _memoized(pending):
    """Return ``pending`` (a PendingPolls) with a ``result()`` that may be called more than once: the child's reply
    is read once and kept, so a test can wait for it without taking it from the code under test."""
    first, memo = pending.result, []

    def result():
        if not memo:
            memo.append(first())
        return memo[0]

    pending.result = result
    return pending


def _record_start_polls(monkeypatch) -> list:
    """Make every ProcessSampler keep the PendingPolls its ``poll_edges_async`` returns (memoized); returns the
    list they are appended to, in call order (the first is the window start's)."""
    pendings: list = []
    real = ProcessSampler.poll_edges_async

    def recorded(self, *args, **kwargs):
        pendings.append(_memoized(real(self, *args, **kwargs)))
        return pendings[-1]

    monkeypatch.setattr(ProcessSampler, "poll_edges_async", recorded)
    return pendings


def _measure(devices, engine, sampler_mode=None):
    prompts = PromptSet(token_ids=[[1, 2, 3, 4]] * CONFIG.n, source="test")
    return measure_process(CONFIG, devices, engine_loader=lambda c, idx: engine, tokenizer_loader=lambda c: None,
                           prompt_builder=lambda c, tok: prompts, device_indices=[], experiment_id="proc",
                           sampler_mode=sampler_mode)


def test_only_devices_another_process_can_read_alike_get_a_sampler_process():
    _sims, _fake, devices = _nvml(200.0)
    try:
        opener, why = child_opener(devices)
        assert opener is not None and why == ""
        reopened = pickle.loads(pickle.dumps(opener))()  # what the child runs: same GPU, same readings
        try:
            assert [d.uuid for d in reopened] == [d.uuid for d in devices]
            assert abs(reopened[0].power_w() - 200.0) < 1e-6
        finally:
            close_devices(reopened)
        assert make_sampler(devices, 0.1, "auto")[1] == "process"
        assert make_sampler(devices, 0.1, "thread")[1] == "thread"
    finally:
        for s in _sampler_children():
            s.kill()
        close_devices(devices)
    # in-process simulated GPUs and fake clocks cannot be read from another process: thread, and 'process' says why
    direct = [SimulatedDevice(Constant(100.0))]
    assert child_opener(direct)[0] is None and "nvml" in child_opener(direct)[1].lower()
    assert make_sampler(direct, 0.1, "auto")[1] == "thread"
    with pytest.raises(ValueError, match="'thread' or 'auto'"):
        make_sampler(direct, 0.1, "process")
    fake_clock = FakePynvml([SimulatedDevice(Constant(100.0), clock=FakeClock())])
    on_test_clock = open_nvml_devices(None, nvml=fake_clock, env={})
    try:
        opener, why = child_opener(on_test_clock)
        assert opener is None and "test clock" in why
    finally:
        close_devices(on_test_clock)
    with pytest.raises(ValueError, match="LLEM_SAMPLER"):
        make_sampler(direct, 0.1, "fibre")


def test_the_process_sampler_samples_the_same_gpus_from_another_process():
    _sims, _fake, devices = _nvml(200.0, 80.0)
    opener, _ = child_opener(devices)
    sampler = ProcessSampler(opener, [d.uuid for d in devices], interval_s=0.02)
    try:
        sampler.start()
        assert sampler.pid not in (None, os.getpid()) and sampler.running
        _wait_for_rows(sampler, 2 * 12)  # 12 ticks of 2 devices
        mid = sampler.snapshot()
        parent_counter = devices[0].energy_mj()
        samples = sampler.stop()
    finally:
        close_devices(devices)
    assert not sampler.running and not _sampler_children() and sampler.error is None
    assert len(samples) >= len(mid) > 0 and sampler.ticks >= 10
    assert set(samples["device_index"].tolist()) == {0, 1}
    assert samples.device_uuids == tuple(d.uuid for d in devices)
    t = samples["t_mono_s"]
    assert sampler.started_at_s <= t.min() and t.max() <= sampler.stopped_at_s  # one monotonic clock for both
    dev0 = samples.for_device(0)
    np.testing.assert_allclose(dev0["power_w"], 200.0)
    np.testing.assert_allclose(samples.for_device(1)["power_w"], 80.0)
    # the child's counter is the parent's counter: the parent's read lies between the child's before and after it
    mid0 = mid.for_device(0)["energy_mj"]
    assert mid0.max() <= parent_counter <= dev0["energy_mj"].max()
    # the sampler thread sleeps between ticks: its CPU time is a small part of the time it ran (a thread's CPU
    # time can never exceed its run time, so half of it is a real bound on any machine)
    assert 0.0 < sampler.thread_cpu_s < 0.5 * (sampler.stopped_at_s - sampler.started_at_s)


def test_the_window_start_is_polled_in_the_child_while_the_caller_goes_on(monkeypatch):
    # a slow counter (0.3 s between updates): polling the start here would hold the caller ~0.15 s on average
    sims, _fake, devices = _nvml(250.0, counter_period_s=0.3)
    opener, _ = child_opener(devices)
    sampler = ProcessSampler(opener, [d.uuid for d in devices], interval_s=0.05)
    start_polls = _record_start_polls(monkeypatch)
    try:
        sampler.start()
        monitor = EnergyMonitor(devices, sampler)
        monitor.calibrate()  # as the harness does, before warmup (here polled in this process)
        timing = monitor.counter_timing[0]
        polled_here: list[tuple] = []
        real_poll = monitor.poll_edges
        monitor.poll_edges = lambda *a, **k: polled_here.append(a) or real_poll(*a, **k)
        start = monitor.begin_window()
        assert polled_here == [] and start.pending is not None  # the caller polled nothing: the child does it
        monitor.poll_edges = real_poll
        time.sleep(0.7)  # a window of a few counter steps (its length is not asserted)
        window = monitor.end_window(start)
        sampler.stop()
    finally:
        close_devices(devices)
    # the child polled from the window's start (after begin_window returned) up to the counter's next step
    _t_boundary, rows = start_polls[0].result()
    t = np.array([r[0] for r in rows[0]])
    e = np.array([r[1] for r in rows[0]])
    ok = np.isfinite(e)
    assert ok.sum() >= 2 and t[ok].min() >= start.t_mono_s
    assert len(np.unique(e[ok])) == 2
    truth = sims[0].true_energy_j(window.start_mono_s, window.end_mono_s)
    assert abs(window.total_energy_j - truth) <= window.uncertainty_j + 1e-3
    # Uncorrected, each boundary could be off by a whole counter step (250 W × 0.3 s = 75 J, most of the ~175 J
    # window); the corrected boundaries are a few J wide on a quiet machine. 25 % tells the two apart even when
    # a loaded machine delays the child's polls by tens of ms (the exact bound is the uncertainty, checked above).
    assert window.uncertainty_j < 0.25 * truth
    # the calibration's estimate holds the true period within the error it states
    assert timing is not None and abs(timing.period_s - 0.3) <= timing.period_err_s + 1e-9, timing


def test_measure_process_samples_nvml_gpus_from_a_process_and_measures_right():
    sims, _fake, devices = _nvml(150.0, 90.0)
    try:
        out = _measure(devices, PacedEngine())
    finally:
        close_devices(devices)
    assert out.sampler_mode == "process"
    assert not _sampler_children()
    assert not [t for t in threading.enumerate() if t.name == "llem-sampler"]  # nothing samples in this process
    raw = out.raw
    a, b = out.window_mono_s
    truth = sum(s.true_energy_j(a, b) for s in sims)
    assert abs(raw.energy_j - truth) <= raw.energy_uncertainty_j + 1e-3
    assert raw.sample_count > 0 and raw.energy_trace_agreement is not None and raw.energy_trace_agreement < 0.05
    assert "sampler_error" not in {warning_code(w) for w in raw.measurement_warnings}


def test_the_window_start_is_not_polled_by_the_caller_in_measure_process(monkeypatch):
    # what keeps window_begin short: with the process sampler the start's polls run in the child (the caller
    # polls nothing between warmup and run), whatever the time that step took on this machine
    inside_begin: list[bool] = []
    polled_in_begin: list[tuple] = []
    real_begin, real_poll, real_calibrate = EnergyMonitor.begin_window, EnergyMonitor.poll_edges, EnergyMonitor.calibrate

    def begin(self):
        inside_begin.append(True)
        try:
            return real_begin(self)
        finally:
            inside_begin.pop()

    def calibrate(self, *a, **k):  # a re-calibration (no timing learned before warmup) polls here by design
        inside_begin.append(False)
        try:
            return real_calibrate(self, *a, **k)
        finally:
            inside_begin.pop()

    def poll(self, *a, **k):
        if inside_begin and inside_begin[-1]:
            polled_in_begin.append(a)
        return real_poll(self, *a, **k)

    monkeypatch.setattr(EnergyMonitor, "begin_window", begin)
    monkeypatch.setattr(EnergyMonitor, "calibrate", calibrate)
    monkeypatch.setattr(EnergyMonitor, "poll_edges", poll)
    _sims, _fake, devices = _nvml(150.0)
    try:
        out = _measure(devices, PacedEngine())
    finally:
        close_devices(devices)
    assert out.sampler_mode == "process" and "window_begin" in out.step_seconds
    assert polled_in_begin == []


def test_a_sampler_process_that_dies_mid_run_is_flagged_and_the_window_still_measured(monkeypatch):
    sims, _fake, devices = _nvml(150.0)
    start_polls = _record_start_polls(monkeypatch)

    def kill_sampler(_engine):
        start_polls[0].result()  # wait for the child's answer to the window start's polls: an event, not a time
        for p in _sampler_children():
            os.kill(p.pid, signal.SIGKILL)
            p.join(5)

    try:  # killed half-way through the run, after the child answered the window start's polls
        out = _measure(devices, PacedEngine(out_tokens=10, step_s=0.01, on_run=kill_sampler))
    finally:
        close_devices(devices)
    raw = out.raw
    codes = {warning_code(w) for w in raw.measurement_warnings}
    assert out.sampler_mode == "process" and "sampler_error" in codes
    assert any("sampler process" in w and "exited unexpectedly" in w for w in raw.measurement_warnings)
    a, b = out.window_mono_s
    truth = sims[0].true_energy_j(a, b)
    assert abs(raw.energy_j - truth) <= raw.energy_uncertainty_j + 1e-3 and raw.energy_uncertainty_j < 0.1 * truth


def test_an_nvml_error_in_the_child_ends_sampling_with_a_warning_not_the_measurement():
    sims = [SimulatedDevice(Constant(150.0))]
    fake = FakePynvml(sims, errors=[ErrorInjection(function="nvmlDeviceGetUtilizationRates", after_calls=3)])
    devices = open_nvml_devices(None, nvml=fake, env={})
    try:
        out = _measure(devices, PacedEngine())
    finally:
        close_devices(devices)
    warnings = out.raw.measurement_warnings
    assert out.sampler_mode == "process"
    assert any(warning_code(w) == "sampler_error" and "NVMLError" in w for w in warnings), warnings
    # the child outlived its sampler thread's error: the rows taken before it came back
    assert len(out.samples) >= 3 and out.samples["t_mono_s"].max() < out.window_mono_s[1]
    a, b = out.window_mono_s
    assert abs(out.raw.energy_j - sims[0].true_energy_j(a, b)) <= out.raw.energy_uncertainty_j + 1e-3


def test_a_child_that_cannot_open_the_gpus_is_one_clear_error_and_no_process_is_left():
    sims, _fake, devices = _nvml(100.0)
    uuid = devices[0].uuid
    close_devices(devices)
    missing = FakePynvml(sims, library_missing=True)  # the child's NVML fails to load
    broken = ProcessSampler(functools.partial(_open_nvml_in_child, missing, [uuid]), [uuid], 0.1)
    with pytest.raises(SamplerProcessError, match=r"opening the devices in the sampler process failed.*NVML"):
        broken.start()
    assert not broken.running and not _sampler_children()
