"""A study's runs for one date: one Dagster RunRequest per entry of its schedule (every cycle is its own run).

The nightly schedule, the ``study_launches`` sensor (``llem run`` with a daemon) and ``llem run`` without a
daemon all build their runs here, so they make the same runs: job ``measure_experiments`` (or the nightly
job), the partition (date × measurement key), and the tags below. The order is the study's (sequential,
interleaved or shuffled with its seed) and travels as ``dagster/priority`` (earlier = higher), so a run
queue starts the runs in that order; the study's ``gap_seconds`` travels as ``llem/gap_s`` and the GPU
step waits that long after the GPU's previous measurement (GpuAllocator cooldown).
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from llem_pipeline.defs.constants import (
    CONFIG_TAG,
    CYCLE_TAG,
    GAP_TAG,
    LABEL_TAG,
    LAUNCH_TAG,
    POSITION_TAG,
    SIMULATED_TAG,
    STUDY_TAG,
    TARGET_TAG,
)
from llem_pipeline.defs.experiments.partitions import MeasurementKey, partition_key, study_measurement_keys
from llem_pipeline.domain.study import StudyPlan

PRIORITY_TAG = "dagster/priority"


@dataclass(frozen=True)
class PlannedRun:
    """One run of a study: its place in the schedule, its partition and what the GPU step needs to know."""

    position: int
    cycle: int
    run_date: str
    measurement: MeasurementKey
    gap_s: float

    @property
    def partition(self) -> dg.MultiPartitionKey:
        """Return the run's partition key (date × measurement)."""
        return partition_key(self.run_date, self.measurement)

    def tags(self, launch: str) -> dict[str, str]:
        """Return the run's tags; ``launch`` names the launch (a `llem run` id, or 'nightly-<date>')."""
        m = self.measurement
        return {
            STUDY_TAG: m.study, CYCLE_TAG: str(self.cycle), POSITION_TAG: str(self.position),
            GAP_TAG: f"{self.gap_s:g}", LABEL_TAG: m.label, TARGET_TAG: m.target, CONFIG_TAG: m.config_hash,
            LAUNCH_TAG: launch, PRIORITY_TAG: str(-self.position),
            # a fleet target ('h100') may be served by real or simulated devices: the measurement says which
            **({SIMULATED_TAG: "true" if m.target == "sim" else "false"} if m.target in ("sim", "gpu") else {}),
        }

    def run_request(self, launch: str) -> dg.RunRequest:
        """Return the RunRequest of this run (run_key '<launch>|<position>': a launch never runs twice)."""
        return dg.RunRequest(run_key=f"{launch}|{self.position}", partition_key=self.partition, tags=self.tags(launch))


def study_targets(plan: StudyPlan, host_target: str) -> list[str]:
    """Return the hardware targets ``plan`` is measured on: the study's ``hardware`` list, else ``host_target``
    (the target of this host's devices, 'sim' or 'gpu')."""
    return list(plan.hardware) if plan.hardware else [host_target]


def planned_runs(plan: StudyPlan, run_date: str, target: str) -> list[PlannedRun]:
    """Return every run of ``plan`` for ``run_date``, in the study's order (cycles × configs), on each of its
    hardware targets (``study_targets``; ``target`` is the host's own target, used when the study names none).

    Each schedule entry runs once per target, the targets side by side (positions s×T … s×T+T-1), so every
    target's hosts get work from the start. A target's first run has no gap; each later one waits the
    study's ``gap_seconds`` after its GPU's previous measurement.
    """
    targets = study_targets(plan, target)
    keys = {t: dict(zip(plan.config_hashes,
                        study_measurement_keys(plan.name, plan.experiments, plan.config_hashes, t), strict=True))
            for t in targets}
    return [
        PlannedRun(position=s.position * len(targets) + i, cycle=s.cycle, run_date=run_date,
                   measurement=keys[t][s.config_hash], gap_s=plan.gap_seconds if s.position > 0 else 0.0)
        for s in plan.schedule
        for i, t in enumerate(targets)
    ]


def measurement_keys(plan: StudyPlan, target: str) -> list[str]:
    """Return the measurement partition keys of ``plan``'s configs on each of its hardware targets
    (``study_targets``; ``target`` is the host's own target)."""
    return [k.key for t in study_targets(plan, target)
            for k in study_measurement_keys(plan.name, plan.experiments, plan.config_hashes, t)]
