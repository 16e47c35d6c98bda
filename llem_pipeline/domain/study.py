"""StudyConfig: a base ExperimentConfig, a sweep over dotted keys, cycles, order and gaps (SPEC §2).

``StudyConfig.expand()`` returns the unique ExperimentConfigs (one per config hash), the sweep points
that were skipped with the reason, and the schedule of repeats. ``study_design_hash`` identifies the design.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.errors import ConfigError, describe_validation_error
from llem_pipeline.domain.experiment import SkippedExperiment, compute_measurement_config_hash

STUDY_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


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

    model_config = ConfigDict(extra="forbid")

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

    @field_validator("sweep")
    @classmethod
    def _sweep_keys(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in sweep.items():
            if not _known_path(key):
                raise ValueError(
                    f"sweep key {key!r} is not an ExperimentConfig field path "
                    "(use dotted keys such as 'pytorch.batch_size' or 'max_output_tokens')"
                )
            if not values:
                raise ValueError(f"sweep key {key!r} has an empty list of values: give at least one value")
        return sweep

    @model_validator(mode="after")
    def _order_seed(self) -> StudyConfig:
        if self.seed is not None and self.order != "shuffled":
            raise ValueError(f"seed={self.seed} is only used with order: shuffled (got order={self.order!r})")
        return self

    def _points(self) -> list[dict[str, Any]]:
        """Sweep points (Cartesian product) followed by explicit points; just the base when neither is given."""
        keys = list(self.sweep)
        if keys:
            points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(self.sweep[k] for k in keys))]
        else:
            points = [] if self.experiments else [{}]
        return points + [dict(p) for p in self.experiments]

    def expand(self, source: str | None = None) -> StudyPlan:
        """Expand the sweep into unique ExperimentConfigs and a schedule.

        Raises ConfigError when no point is valid (the message lists each point's reason).
        """
        configs: list[ExperimentConfig] = []
        hashes: list[str] = []
        skipped: list[SkippedExperiment] = []
        for point in self._points():
            data = copy.deepcopy(self.base)  # YAML may hold dates, bytes or anchors: validation names them
            for key, value in point.items():
                _set_dotted(data, key, value)
            try:
                cfg = ExperimentConfig.model_validate(data)
            except ValidationError as err:
                skipped.append(SkippedExperiment(overrides=point, reason=describe_validation_error(err, prefix="")))
                continue
            h = compute_measurement_config_hash(cfg)
            if h not in hashes:
                configs.append(cfg)
                hashes.append(h)
        if not configs:
            reasons = "\n".join(f"  {s.overrides or 'base'}: {s.reason}" for s in skipped)
            raise ConfigError(f"{source or self.name}: study has no valid experiment:\n{reasons}")
        design = self.design_hash(hashes)
        schedule = self._schedule(hashes, design)
        return StudyPlan(
            name=self.name,
            experiments=configs,
            config_hashes=hashes,
            skipped=skipped,
            schedule=schedule,
            gap_seconds=self.gap_seconds,
            study_design_hash=design,
        )

    def design_hash(self, config_hashes: list[str]) -> str:
        """SHA-256[:16] over the sorted config hashes, cycles, order, seed and gap (the name is a label, not design)."""
        payload = {
            "configs": sorted(config_hashes),
            "cycles": self.cycles,
            "order": self.order,
            "seed": self.seed,
            "gap_seconds": self.gap_seconds,
        }
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


def parse_study_yaml(text: str, source: str) -> StudyConfig:
    """Parse study YAML text with ``yaml.safe_load`` and validate it; raises ConfigError with the source name."""
    import yaml  # lazy: domain/ imports with nothing but pydantic

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from None
    return parse_study(data, source)


def parse_experiment_config(data: Any, source: str) -> ExperimentConfig:
    """Validate an ExperimentConfig mapping; raises ConfigError naming the source, field path and value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: an experiment config must be a mapping (got {type(data).__name__})")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source=source)) from None
