"""Bounds on reading one study file: its size, its YAML, its sweep and the time it may take.

A study file is user input that every launch, sensor tick and schedule reads. These limits keep the
work of reading any one file proportional to numbers a person chose, so a hostile or mistaken file
(a sweep of a million points, a YAML alias bomb, a 50 MB list) is refused in well under a second with
a message naming the limit, instead of stalling everything that reads the studies folder.
``llem_pipeline.studies.study_limits()`` builds them from the environment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from llem_pipeline.domain.errors import ConfigError

ENV_MAX_BYTES = "LLEM_STUDY_MAX_BYTES"
ENV_MAX_POINTS = "LLEM_STUDY_MAX_POINTS"
ENV_TIME_BUDGET_S = "LLEM_STUDY_TIME_BUDGET_S"


@dataclass(frozen=True)
class StudyLimits:
    """What one study file may cost to read. Each bound is checked before the work it bounds is done."""

    max_file_bytes: int = 1_048_576
    """Largest study file read, bytes (env LLEM_STUDY_MAX_BYTES). Real studies are a few kB."""
    max_points: int = 10_000
    """Most sweep points (product of the sweep list lengths, plus explicit experiments) one study may
    expand to, checked from the list lengths before anything is expanded (env LLEM_STUDY_MAX_POINTS)."""
    max_runs: int = 100_000
    """Most schedule entries (unique configs × cycles) one study may ask for."""
    max_alias_nodes: int = 10_000
    """Most YAML nodes that aliases (``*name``) may add when the document is expanded: an anchor reused
    a few times costs little; a billion-laughs document is refused before it is built."""
    max_depth: int = 64
    """Deepest nesting of the expanded YAML document (real studies nest 3 to 4 levels)."""
    time_budget_s: float | None = 30.0
    """Seconds one file may take from reading to its expanded plan (env LLEM_STUDY_TIME_BUDGET_S);
    None = no time limit. Checked between steps and every few thousand nodes or points, so it stops a
    file whose cost the bounds above did not catch; it is a backstop, far above any real study's cost."""

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_points", "max_runs", "max_alias_nodes", "max_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StudyLimits.{name}={value!r} must be a positive integer")
        budget = self.time_budget_s
        if budget is not None and not (isinstance(budget, int | float) and 0 < budget < float("inf")):
            raise ValueError(f"StudyLimits.time_budget_s={budget!r} must be a positive finite number of seconds or None")


class Deadline:
    """The time budget of reading one study file, on a monotonic clock (injectable for tests)."""

    def __init__(self, budget_s: float | None, source: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_s = budget_s
        self.source = source
        self._clock = clock
        self._start = clock()

    def elapsed_s(self) -> float:
        """Return the seconds spent since the deadline was created."""
        return self._clock() - self._start

    def check(self, doing: str) -> None:
        """Raise ConfigError naming the file, the budget and the step when the budget is spent; else return None."""
        if self.budget_s is None:
            return
        spent = self.elapsed_s()
        if spent > self.budget_s:
            raise ConfigError(
                f"{self.source}: reading this study took {spent:.1f} s, over the time budget of {self.budget_s:g} s "
                f"per study file (stopped while {doing}): make the study smaller, or raise {ENV_TIME_BUDGET_S}"
            )
