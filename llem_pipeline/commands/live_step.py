"""The live line of ``llem run`` on a terminal: which run of the launch is active and what its step is doing.

A thread polls the instance about once a second for the launch's run in progress (tag ``llem/launch``) and
reads only the event records added since the last poll (a cursor), so it costs a few small SQLite reads per
second, outside the GPU step's process. The step comes from the Dagster events the pipeline emits anyway: the
GPU allocator's lines, the worker's milestones (plan, baseline, model load, warmup, each process done, result)
and the store step's start. On a pipe nothing of this runs: ``llem run`` prints plain lines only.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dagster as dg

from llem_pipeline.defs.constants import LABEL_TAG, LAUNCH_TAG, POSITION_TAG

# (text found in a log message, the step it means); the first match wins, so more specific texts come first.
_MESSAGE_STEPS: tuple[tuple[str, str], ...] = (
    ("GPU lease ends", "GPU released"),
    ("GPU lease:", "GPU acquired"),
    ("waits for", "waiting for the GPU"),
    ('"step": "model_load"', "loading the model"),
    ('"step": "warmup"', "warming up"),
    ("llem-measure: warmup", "measuring"),
    ("llem-measure: baseline", "idle baseline done"),
    ("llem-measure: plan", "starting the worker"),
    ("llem-measure: process_done", "process done"),
    ("llem-measure: result", "writing the run folder"),
)


def step_of(record: Any) -> str | None:
    """Return the step a run is in after the event log record ``record`` (an EventLogRecord), or None when the
    record says nothing about it."""
    entry = record.event_log_entry
    event = entry.dagster_event
    if event is not None:
        if event.event_type == dg.DagsterEventType.STEP_START:
            return "storing the result in DuckDB" if event.step_key == "store_results" else "GPU step started"
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            return "running the checks"
        return None
    message = entry.user_message or ""
    return next((step for text, step in _MESSAGE_STEPS if text in message), None)


class LiveStep:
    """Polls the instance for the launch's active run and its step; ``text()`` is the live line."""

    def __init__(self, instance: dg.DagsterInstance, launch: str, total: int) -> None:
        self.instance, self.launch, self.total = instance, launch, total
        self.run_id: str | None = None
        self.label = ""
        self.position = 0
        self.step = "starting the run (loading the code location)"
        self.step_since = time.monotonic()
        self.steps_seen: list[str] = []
        self._cursor: str | None = None

    def poll(self) -> None:
        """Update the active run and its step from the instance."""
        records = self.instance.get_run_records(
            dg.RunsFilter(tags={LAUNCH_TAG: self.launch}, statuses=[dg.DagsterRunStatus.STARTED]), limit=1)
        if not records:
            return
        self.follow(records[0].dagster_run)

    def follow(self, run: dg.DagsterRun) -> None:
        """Read the event records of ``run`` added since the last call and update the step."""
        if run.run_id != self.run_id:
            self.run_id, self._cursor = run.run_id, None
            self.label = run.tags.get(LABEL_TAG, run.run_id[:8])
            self.position = int(run.tags.get(POSITION_TAG, "0"))
            self._set("starting")
        while True:
            batch = self.instance.get_records_for_run(run.run_id, cursor=self._cursor, limit=200)
            for record in batch.records:
                step = step_of(record)
                if step is not None:
                    self._set(step)
            self._cursor = batch.cursor
            if not batch.has_more:
                break

    def _set(self, step: str) -> None:
        if step != self.step:
            self.step, self.step_since = step, time.monotonic()
            self.steps_seen.append(step)

    def text(self) -> str:
        """Return the live line: '[k/N] label · step · s in this step'."""
        if self.run_id is None:
            return self.step
        return (f"[{self.position + 1}/{self.total}] {self.label} · {self.step} · "
                f"{time.monotonic() - self.step_since:.0f} s")


class LiveDisplay:
    """A rich live line at the bottom of the terminal, redrawn from a polling thread; lines printed through
    ``print`` appear above it. Use as a context manager."""

    def __init__(self, console: Any, watcher: LiveStep, interval_s: float = 1.0) -> None:
        from rich.live import Live
        from rich.spinner import Spinner

        self.console, self.watcher, self.interval_s = console, watcher, interval_s
        self._spinner = Spinner("dots", text=watcher.text())
        self._live = Live(self._spinner, console=console, refresh_per_second=4, transient=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llem-live-step", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.watcher.poll()
            except Exception:  # a busy SQLite instance: the line keeps its last text until the next poll
                continue
            self._spinner.update(text=self.watcher.text())

    def print(self, line: str) -> None:
        """Print ``line`` above the live line (literally: no markup)."""
        self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def __enter__(self) -> LiveDisplay:
        self._live.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._live.__exit__(*exc)
