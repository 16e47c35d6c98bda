"""StudyConfig: a base ExperimentConfig, a sweep over dotted keys, cycles, order and gaps.

``StudyConfig.expand()`` returns the unique ExperimentConfigs (one per config hash), the sweep points
that were skipped with the reason, and the schedule of repeats. ``study_design_hash`` identifies the design.
Expansion is bounded by ``StudyLimits`` (points and schedule length are computed before anything is
built) and, when given a ``Deadline``, by time.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
import re
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.errors import ConfigError, describe_validation_error, short, short_key
from llem_pipeline.domain.experiment import SkippedExperiment, compute_measurement_config_hash
from llem_pipeline.domain.study_limits import ENV_MAX_POINTS, Deadline, StudyLimits

STUDY_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_LISTED_POINTS = 20  # a study with no valid point lists this many points' reasons, then a count
_CHECK_EVERY = 256  # sweep points between two deadline checks
# A hardware target names a kind of GPU host of a fleet ('h100', 'a100-40gb'); it is part of every
# measurement key and decides the Celery queue 'gpu-<target>' (docs/fleet.md).
HARDWARE_TARGET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
MAX_HARDWARE_TARGETS = 16


class ScheduledRun(BaseModel):
    """One entry of a study's execution schedule."""

    position: int = Field(..., description="0-based position in the schedule")
    cycle: int = Field(..., description="0-based cycle (repeat) number")
    config_hash: str = Field(..., description="measurement_config_hash of the experiment to run")


class StudyPlan(BaseModel):
    """A study expanded: unique experiments, skipped points, the schedule of repeats and the design hash."""

    name: str = Field(..., description="Study name")
    experiments: list[ExperimentConfig] = Field(..., description="Unique ExperimentConfigs, in sweep order")
    config_hashes: list[str] = Field(..., description="Hash of each experiment (same order)")
    skipped: list[SkippedExperiment] = Field(default_factory=list, description="Invalid sweep points and why")
    schedule: list[ScheduledRun] = Field(..., description="Execution order of all repeats")
    gap_seconds: float = Field(..., description="Pause between consecutive experiments, s")
    hardware: list[str] | None = Field(
        default=None, description="Hardware targets the study is measured on; None = the host's own target"
    )
    study_design_hash: str = Field(..., description="SHA-256[:16] of configs, cycles, order, seed and gap")

    def config_by_hash(self) -> dict[str, ExperimentConfig]:
        """Return {config_hash: ExperimentConfig}."""
        return dict(zip(self.config_hashes, self.experiments, strict=True))


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _known_path(dotted: str) -> bool:
    """True when every segment of ``dotted`` names a field of ExperimentConfig or its sub-models."""
    model: Any = ExperimentConfig
    for part in dotted.split("."):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return False
        ann = fields[part].annotation
        nested = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = nested[0] if nested else None
    return True


class StudyConfig(BaseModel):
    """A study file (``studies/<name>.yaml``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(..., pattern=STUDY_NAME_PATTERN, description="Study name: lowercase letters, digits, '-', '_'")
    description: str | None = Field(default=None, description="What the study is for")
    base: dict[str, Any] = Field(..., description="ExperimentConfig fields shared by every experiment")
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description="Dotted key → values; the Cartesian product of all keys"
    )
    experiments: list[dict[str, Any]] = Field(
        default_factory=list, description="Extra explicit points (dotted or nested keys) merged onto base"
    )
    cycles: int = Field(default=1, ge=1, le=1000, description="Repeats of every experiment")
    order: Literal["sequential", "interleaved", "shuffled"] = Field(
        default="sequential",
        description="sequential: A A B B; interleaved: A B A B; shuffled: each cycle in a seeded random order",
    )
    seed: int | None = Field(default=None, description="Shuffle seed (shuffled order); default derived from the configs")
    gap_seconds: float = Field(default=0.0, ge=0.0, le=86400.0, description="Pause between experiments, s")
    hardware: list[str] | None = Field(
        default=None,
        description="Hardware targets of a fleet to measure every experiment on, e.g. [h100, a100]; "
        "omitted = the target of the host that runs the study",
    )

    @field_validator("hardware")
    @classmethod
    def _hardware_targets(cls, hardware: list[str] | None) -> list[str] | None:
        if hardware is None:
            return None
        if not hardware:
            raise ValueError("hardware is an empty list: name at least one target, e.g. [h100], or omit the field")
        if len(hardware) > MAX_HARDWARE_TARGETS:
            raise ValueError(f"hardware lists {len(hardware)} targets, over the limit of {MAX_HARDWARE_TARGETS}: "
                             "split the study")
        for name in hardware:
            if not isinstance(name, str) or not HARDWARE_TARGET_PATTERN.match(name):
                raise ValueError(
                    f"hardware target {short(name)} is not a target name: use lowercase letters, digits and '-' "
                    "(at most 32 characters, starting with a letter or digit), e.g. 'h100' or 'a100-40gb'"
                )
        if len(set(hardware)) != len(hardware):
            twice = sorted({h for h in hardware if hardware.count(h) > 1})
            raise ValueError(f"hardware lists {', '.join(repr(t) for t in twice)} more than once: list each target once")
        return hardware

    @field_validator("sweep")
    @classmethod
    def _sweep_keys(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in sweep.items():
            if not _known_path(key):
                raise ValueError(
                    f"sweep key {short_key(key)!r} is not an ExperimentConfig field path "
                    "(use dotted keys such as 'pytorch.batch_size' or 'max_output_tokens')"
                )
            if not values:
                raise ValueError(f"sweep key {short_key(key)!r} has an empty list of values: give at least one value")
        return sweep

    @model_validator(mode="after")
    def _order_seed(self) -> StudyConfig:
        if self.seed is not None and self.order != "shuffled":
            raise ValueError(f"seed={short(self.seed)} is only used with order: shuffled (got order={self.order!r})")
        return self

    def point_count(self) -> int:
        """Return how many points ``expand`` would validate: the product of the sweep list lengths (0 without a
        sweep) plus the explicit experiments, or 1 (the base alone) when neither is given. Nothing is expanded."""
        if not self.sweep:
            return len(self.experiments) or 1
        product = 1
        for values in self.sweep.values():
            product *= len(values)
        return product + len(self.experiments)

    def _check_point_count(self, source: str, limits: StudyLimits) -> None:
        count = self.point_count()
        if count <= limits.max_points:
            return
        factors = " × ".join(f"{short_key(k)} ({len(v):,})" for k, v in list(self.sweep.items())[:8])
        if len(self.sweep) > 8:
            factors += f" × ... ({len(self.sweep) - 8} more keys)"
        extra = f" + {len(self.experiments):,} explicit experiments" if self.experiments else ""
        raise ConfigError(
            f"{source}: the study expands to {count:,} points ({factors or 'no sweep'}{extra}), over the limit of "
            f"{limits.max_points:,} points per study: shorten the sweep lists or split the study into several files "
            f"(the limit is set by {ENV_MAX_POINTS})"
        )

    def _points(self) -> Iterator[dict[str, Any]]:
        """Yield the sweep points (Cartesian product) and then the explicit points; just the base when neither is given."""
        keys = list(self.sweep)
        if keys:
            for combo in itertools.product(*(self.sweep[k] for k in keys)):
                yield dict(zip(keys, combo, strict=True))
        elif not self.experiments:
            yield {}
        for p in self.experiments:
            yield dict(p)

    def expand(self, source: str | None = None, *, limits: StudyLimits | None = None,
               deadline: Deadline | None = None) -> StudyPlan:
        """Expand the sweep into unique ExperimentConfigs and a schedule; return the StudyPlan.

        The number of points is computed from the list lengths first: more than ``limits.max_points`` is a
        ConfigError before any point is built. Duplicate points (same config hash) collapse to one config
        (a set of hashes: linear in the points). Raises ConfigError when no point is valid (the message
        lists the first points' reasons and how many more there were), when the schedule would exceed
        ``limits.max_runs`` entries, or when ``deadline`` passes.
        """
        limits = limits or StudyLimits()
        where = source or self.name
        self._check_point_count(where, limits)
        configs: list[ExperimentConfig] = []
        hashes: list[str] = []
        seen: set[str] = set()
        skipped: list[SkippedExperiment] = []
        for i, point in enumerate(self._points()):
            if deadline is not None and i % _CHECK_EVERY == 0:
                deadline.check(f"expanding sweep point {i + 1:,} of {self.point_count():,}")
            data = copy.deepcopy(self.base)  # YAML may hold dates, bytes or anchors: validation names them
            for key, value in point.items():
                _set_dotted(data, key, value)
            try:
                cfg = ExperimentConfig.model_validate(data)
            except ValidationError as err:
                skipped.append(SkippedExperiment(overrides=point, reason=describe_validation_error(err, prefix="")))
                continue
            h = compute_measurement_config_hash(cfg)
            if h not in seen:
                seen.add(h)
                configs.append(cfg)
                hashes.append(h)
        if not configs:
            shown = [f"  {short(s.overrides, 200) if s.overrides else 'base'}: {s.reason}" for s in skipped[:MAX_LISTED_POINTS]]
            if len(skipped) > MAX_LISTED_POINTS:
                shown.append(f"  ... and {len(skipped) - MAX_LISTED_POINTS:,} more invalid point(s)")
            reasons = "\n".join(shown)
            raise ConfigError(f"{where}: study has no valid experiment:\n{reasons}")
        runs = len(hashes) * self.cycles
        if runs > limits.max_runs:
            raise ConfigError(
                f"{where}: {len(hashes):,} configs × {self.cycles} cycles = {runs:,} scheduled runs, over the limit of "
                f"{limits.max_runs:,} per study: lower cycles or split the study"
            )
        design = self.design_hash(hashes)
        schedule = self._schedule(hashes, design)
        return StudyPlan(
            name=self.name,
            experiments=configs,
            config_hashes=hashes,
            skipped=skipped,
            schedule=schedule,
            gap_seconds=self.gap_seconds,
            hardware=self.hardware,
            study_design_hash=design,
        )

    def design_hash(self, config_hashes: list[str]) -> str:
        """SHA-256[:16] over the sorted config hashes, cycles, order, seed, gap and hardware targets (the name is a label, not design)."""
        payload = {
            "configs": sorted(config_hashes),
            "cycles": self.cycles,
            "order": self.order,
            "seed": self.seed,
            "gap_seconds": self.gap_seconds,
        }
        if self.hardware is not None:  # studies without targets keep the hash they always had
            payload["hardware"] = sorted(self.hardware)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def _schedule(self, hashes: list[str], design: str) -> list[ScheduledRun]:
        order: list[tuple[int, str]] = []
        if self.order == "sequential":
            order = [(c, h) for h in hashes for c in range(self.cycles)]
        elif self.order == "interleaved":
            order = [(c, h) for c in range(self.cycles) for h in hashes]
        else:
            seed = self.seed if self.seed is not None else int(design, 16)
            rng = random.Random(seed)
            for c in range(self.cycles):
                cycle = list(hashes)
                rng.shuffle(cycle)
                order.extend((c, h) for h in cycle)
        return [ScheduledRun(position=i, cycle=c, config_hash=h) for i, (c, h) in enumerate(order)]


def parse_study(data: Any, source: str) -> StudyConfig:
    """Validate a parsed study mapping; raises ConfigError naming ``source``, the field, the value and the fix."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a study must be a mapping with name, base and sweep (got {type(data).__name__})")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source=source)) from None


def parse_study_yaml(text: str, source: str, *, limits: StudyLimits | None = None,
                     deadline: Deadline | None = None) -> StudyConfig:
    """Parse study YAML text (safe tags only, aliases within ``limits``) and validate it; return the StudyConfig.

    Raises ConfigError with the source name, the field, the (truncated) value and the fix.
    """
    from llem_pipeline.domain.yaml_bounded import load_yaml_bounded

    data = load_yaml_bounded(text, source, limits, deadline)
    if deadline is not None:
        deadline.check("building the study")
    study = parse_study(data, source)
    if deadline is not None:
        deadline.check("validating the study")
    return study


def parse_experiment_config(data: Any, source: str) -> ExperimentConfig:
    """Validate an ExperimentConfig mapping; raises ConfigError naming the source, field path and value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: an experiment config must be a mapping (got {type(data).__name__})")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source=source)) from None
