"""What ``llem run`` prints: a line per run as it starts and ends (k of N, cycle, ETA) and a closing summary
naming each run's warnings and the checks that did not pass."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import dagster as dg

from llem_pipeline.defs.automation.study_runs import PlannedRun
from llem_pipeline.storage import ResultStore


@dataclass
class RunFacts:
    """What a finished run stored and how its checks ended."""

    j_per_token: float | None = None
    tokens_per_s: float | None = None
    warnings: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None


def run_facts(store: ResultStore, instance: dg.DagsterInstance, run_id: str) -> RunFacts:
    """Return the stored J/token, tok/s and warning codes of ``run_id`` and its checks that did not pass
    ('name (WARN)' / 'name (ERROR)'), or the failure message of a failed step."""
    facts = RunFacts()
    if store.path.is_file():
        rows = store.query("SELECT j_per_token, tokens_per_s, warnings FROM experiment_results WHERE run_id = ?",
                           [run_id]).to_pylist()
        if rows:
            facts.j_per_token, facts.tokens_per_s = rows[0]["j_per_token"], rows[0]["tokens_per_s"]
            facts.warnings = [w.split(":", 1)[0] for w in rows[0]["warnings"] or []]
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if not evaluation.passed:
            facts.failed_checks.append(f"{evaluation.check_name} ({evaluation.severity.value})")
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records:
        error = record.event_log_entry.dagster_event.event_specific_data.error
        facts.error = (error.message if error else "step failed").strip().splitlines()[0]
    return facts


class RunPrinter:
    """Prints progress lines for the runs of one launch: plain lines (they read well in a log and a pipe), or
    through ``display`` (a LiveDisplay: above its live line) on a terminal."""

    def __init__(self, total: int, cycles: int, store: ResultStore, instance: dg.DagsterInstance,
                 out: TextIO = sys.stdout, display: Any = None) -> None:
        self.total, self.cycles, self.store, self.instance, self.out = total, cycles, store, instance, out
        self.display = display
        self.started_at: dict[int, float] = {}
        self.durations: list[float] = []
        self.facts: dict[str, RunFacts] = {}

    def _emit(self, line: str) -> None:
        if self.display is not None:
            self.display.print(line)
        else:
            print(line, file=self.out, flush=True)

    def _eta(self, done: int) -> str:
        if not self.durations or done >= self.total:
            return ""
        per_run = sum(self.durations) / len(self.durations)
        return f", ETA {per_run * (self.total - done):.0f} s"

    def _head(self, run: PlannedRun) -> str:
        return f"[{run.position + 1}/{self.total}] {run.measurement.label} · cycle {run.cycle + 1}/{self.cycles}"

    def on_start(self, _index: int, run: PlannedRun) -> None:
        """Print that ``run`` starts (in-process runs)."""
        self.started_at[run.position] = time.monotonic()
        self._emit(f"{self._head(run)}: measuring…")

    def on_change(self, run: PlannedRun, run_id: str, status: str) -> None:
        """Print a queued run's status change; a finished run gets its result line."""
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            self.on_done(run, run_id, status)
        elif status == "STARTED":
            self.on_start(0, run)

    def on_done(self, run: PlannedRun, run_id: str, status: str) -> None:
        """Print the result line of a finished run."""
        started = self.started_at.get(run.position)
        took = time.monotonic() - started if started is not None else None
        if took is not None:
            self.durations.append(took)
        facts = self.facts[run_id] = run_facts(self.store, self.instance, run_id)
        parts = [status] + ([f"{took:.1f} s"] if took is not None else [])
        if facts.j_per_token is not None:
            parts.append(f"{facts.j_per_token:.4g} J/token, {facts.tokens_per_s:.4g} tok/s")
        if facts.error:
            parts.append(facts.error)
        self._emit(f"{self._head(run)}: {' · '.join(parts)}{self._eta(len(self.facts))}")

    def summary(self, outcomes: list[Any]) -> None:
        """Print one line per run with its named warnings and the checks that did not pass."""
        print("\nruns:", file=self.out)
        for o in outcomes:
            f = self.facts.get(o.run_id) or run_facts(self.store, self.instance, o.run_id)
            warned = ", ".join(f.warnings) or "none"
            checks = ", ".join(f.failed_checks) or "all passed"
            print(f"  {o.run.measurement.label} cycle {o.run.cycle + 1}: {o.status} (run {o.run_id[:8]}) · "
                  f"warnings: {warned} · checks: {checks}", file=self.out)
