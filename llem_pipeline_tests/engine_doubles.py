"""Engine-protocol test doubles shared by the harness tests and the fault-injection suite."""

from __future__ import annotations

import time

from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.engines.protocol import EngineInfo


class PacedEngine:
    """An Engine-protocol double: ``out_tokens`` tokens per request at ``step_s`` each, one request at a time.

    ``on_run(engine)`` is called half-way through ``run()`` (the injection point for hardware faults).
    """

    def __init__(self, out_tokens: int = 5, step_s: float = 0.004, on_run=None, on_warmup=None) -> None:
        self.out_tokens = out_tokens
        self.step_s = step_s
        self.on_run = on_run
        self.on_warmup = on_warmup
        self.info = EngineInfo(backend="pytorch", backend_version="test", model_memory_mb=1.0)
        self.cleaned = 0

    def _one(self, i: int, prompt: list[int]) -> RequestRecord:
        submit = time.perf_counter()
        times = []
        for _ in range(self.out_tokens):
            time.sleep(self.step_s)
            times.append(time.perf_counter())
        return RequestRecord(request_index=i, input_tokens=len(prompt), output_tokens=self.out_tokens,
                             submit_time_s=submit, first_token_time_s=times[0], token_times_s=times,
                             done_time_s=times[-1], finish_reason="length")

    def warmup(self, prompts):
        if self.on_warmup is not None:
            self.on_warmup(self)
        return [self._one(i, p) for i, p in enumerate(prompts)]

    def run(self, prompts):
        out = []
        for i, p in enumerate(prompts):
            if i == len(prompts) // 2 and self.on_run is not None:
                self.on_run(self)
            out.append(self._one(i, p))
        return out

    def peak_memory_mb(self):
        return None

    def cleanup(self):
        self.cleaned += 1
