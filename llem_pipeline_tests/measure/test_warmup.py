"""Warmup: fixed count, CV convergence, batching, thermal floor (fake engine with scripted latencies)."""

from __future__ import annotations

import pytest

from llem_pipeline.domain.config import WarmupConfig
from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.measure.warmup import WarmupProgress, coefficient_of_variation, run_warmup


class ScriptedEngine:
    """Engine-protocol test double: request k takes latencies_s[k] seconds and yields out_tokens tokens."""

    def __init__(self, latencies_s: list[float], out_tokens: int = 8) -> None:
        self.latencies_s = latencies_s
        self.out_tokens = out_tokens
        self.calls: list[list[list[int]]] = []
        self.t = 100.0

    def warmup(self, prompts: list[list[int]]) -> list[RequestRecord]:
        self.calls.append(prompts)
        records = []
        for p in prompts:
            k = sum(len(c) for c in self.calls) - len(prompts) + len(records)
            lat = self.latencies_s[k]
            records.append(RequestRecord(
                request_index=k, input_tokens=len(p), output_tokens=self.out_tokens,
                submit_time_s=self.t, first_token_time_s=self.t + lat / 10, done_time_s=self.t + lat,
            ))
            self.t += lat
        return records


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


PROMPTS = [[1, 2, 3], [4, 5], [6]]


def test_fixed_mode_runs_exactly_n_and_reports_latencies_and_tokens():
    eng = ScriptedEngine([0.5, 0.2, 0.2, 0.2, 0.2, 9.9])
    clock = FakeClock()
    cfg = WarmupConfig(mode="fixed", n_warmup=5, window=4, thermal_floor_seconds=0)
    res = run_warmup(eng, PROMPTS, cfg, sleep=clock.sleep, clock=clock)
    assert res.iterations_completed == 5
    assert res.latencies_ms == pytest.approx([500, 200, 200, 200, 200])
    assert res.converged is True and res.mode == "fixed"
    assert res.final_cv == pytest.approx(0.0)  # last 4 latencies identical
    assert res.warmup_tokens == 40
    assert res.max_prompts == 5
    assert clock.slept == [] and res.thermal_floor_wait_s == 0.0
    # round-robin prompts, one per call
    assert [c[0] for c in eng.calls] == [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[0], PROMPTS[1]]


def test_fixed_mode_final_cv_is_informational():
    lat = [0.1, 0.3, 0.1, 0.3]
    eng = ScriptedEngine(lat)
    res = run_warmup(eng, PROMPTS, WarmupConfig(n_warmup=4, window=4, thermal_floor_seconds=0))
    # population std of [100,300,100,300] = 100, mean 200 -> CV 0.5; still "converged" in fixed mode
    assert res.final_cv == pytest.approx(0.5)
    assert res.converged is True


def test_cv_mode_stops_when_window_cv_meets_target():
    # first requests are slow (cold), then settle at 200 ms +- 1 ms
    lat = [1.0, 0.6, 0.4, 0.201, 0.199, 0.200, 0.201, 0.2, 0.2, 0.2, 0.2, 0.2]
    eng = ScriptedEngine(lat)
    cfg = WarmupConfig(mode="cv", window=3, cv_target=0.05, max_prompts=12, thermal_floor_seconds=0)
    res = run_warmup(eng, PROMPTS, cfg)
    # windows: [1,.6,.4] cv .38; [.6,.4,.201] .39; [.4,.201,.199] .34; [.201,.199,.2] ~.004 -> stop after 6
    assert res.converged is True
    assert res.iterations_completed == 6
    assert res.final_cv == pytest.approx(coefficient_of_variation([201, 199, 200]))
    assert res.final_cv <= 0.05
    assert res.max_prompts == 12 and res.mode == "cv"


def test_cv_mode_gives_up_at_max_prompts():
    lat = [0.1, 0.3] * 10
    eng = ScriptedEngine(lat)
    cfg = WarmupConfig(mode="cv", window=4, cv_target=0.05, max_prompts=7, thermal_floor_seconds=0)
    res = run_warmup(eng, PROMPTS, cfg)
    assert res.converged is False
    assert res.iterations_completed == 7
    assert res.final_cv == pytest.approx(coefficient_of_variation([300, 100, 300, 100]))
    assert res.final_cv > 0.05


def test_batched_calls_and_progress_events():
    eng = ScriptedEngine([0.2] * 10, out_tokens=4)
    events: list[WarmupProgress] = []
    clock = FakeClock()
    cfg = WarmupConfig(mode="fixed", n_warmup=5, window=2, thermal_floor_seconds=2.5)
    res = run_warmup(eng, PROMPTS, cfg, sleep=clock.sleep, on_progress=events.append, batch_size=2, clock=clock)
    assert [len(c) for c in eng.calls] == [2, 2, 1]  # last batch trimmed to n_warmup
    assert res.iterations_completed == 5 and res.warmup_tokens == 20
    assert clock.slept == [2.5] and res.thermal_floor_wait_s == pytest.approx(2.5)
    warm = [e for e in events if e.phase == "warmup"]
    assert [e.done for e in warm] == [2, 4, 5] and all(e.total == 5 for e in warm)
    floor = [e for e in events if e.phase == "thermal_floor"]
    assert len(floor) == 2 and floor[-1].wait_s == pytest.approx(2.5)


def test_cv_mode_with_batches_checks_after_each_call():
    eng = ScriptedEngine([0.9, 0.5, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2])
    cfg = WarmupConfig(mode="cv", window=2, cv_target=0.01, max_prompts=8, thermal_floor_seconds=0)
    res = run_warmup(eng, PROMPTS, cfg, batch_size=2)
    # after call 1: [900,500] cv .29; after call 2: [200,200] cv 0 -> stop at 4 requests
    assert res.iterations_completed == 4 and res.converged


def test_disabled_warmup_runs_nothing_and_waits_nothing():
    eng = ScriptedEngine([0.2])
    clock = FakeClock()
    res = run_warmup(eng, PROMPTS, WarmupConfig(enabled=False), sleep=clock.sleep, clock=clock)
    assert eng.calls == [] and clock.slept == []
    assert res.iterations_completed == 0 and res.thermal_floor_wait_s == 0.0 and res.warmup_tokens == 0


def test_errors_are_clear():
    with pytest.raises(ValueError, match="no prompts"):
        run_warmup(ScriptedEngine([0.1]), [], WarmupConfig(thermal_floor_seconds=0))
    with pytest.raises(ValueError, match="batch_size"):
        run_warmup(ScriptedEngine([0.1]), PROMPTS, WarmupConfig(thermal_floor_seconds=0), batch_size=0)

    class Short(ScriptedEngine):
        def warmup(self, prompts):
            return super().warmup(prompts)[:-1]

    with pytest.raises(RuntimeError, match="records for 2 prompts"):
        run_warmup(Short([0.1] * 4), PROMPTS, WarmupConfig(thermal_floor_seconds=0), batch_size=2)


def test_coefficient_of_variation_edge_cases():
    assert coefficient_of_variation([]) == 0.0
    assert coefficient_of_variation([5.0]) == 0.0
    assert coefficient_of_variation([0.0, 0.0]) == 0.0
    assert coefficient_of_variation([1.0, 3.0]) == pytest.approx(0.5)
