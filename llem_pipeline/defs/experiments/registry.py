"""What the study files ask for: every unique experiment config, the studies it belongs to, and invalid files.

Pure functions over ``studies/*.yaml`` (no Dagster, no DuckDB): the registration sensor, the schedule and
the GPU step (which must not open DuckDB) all resolve a config hash through here. Each file is read on
its own within llem_pipeline.studies' limits: a bad file is one entry of ``StudyScan.errors`` and every
other study is still there. ``scan_report_lines`` turns skipped sweep points and invalid files into the
lines a launcher prints and the sensor logs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.errors import ConfigError, escape_control, short
from llem_pipeline.domain.experiment import compute_measurement_config_hash
from llem_pipeline.domain.study import StudyPlan
from llem_pipeline.domain.study_limits import StudyLimits
from llem_pipeline.paths import data_dir
from llem_pipeline.studies import read_studies

MAX_SKIPPED_LINES = 20  # scan_report_lines lists this many skipped points per study, then a count


@dataclass(frozen=True)
class StudyScan:
    """The outcome of reading a studies folder."""

    plans: dict[str, StudyPlan] = field(default_factory=dict)
    """Valid studies: {study name: expanded plan}."""
    errors: dict[str, str] = field(default_factory=dict)
    """Invalid study files: {file name: the ConfigError message}."""
    fingerprint: str = ""
    """SHA-256[:16] of the file names and contents: changes whenever a study file changes."""
    files: dict[str, str] = field(default_factory=dict)
    """Valid studies: {study name: file name (``demo.yaml``)}."""

    @property
    def configs(self) -> dict[str, ExperimentConfig]:
        """Return {config hash: ExperimentConfig} over all valid studies (first study wins on a shared hash)."""
        found: dict[str, ExperimentConfig] = {}
        for plan in self.plans.values():
            for h, cfg in plan.config_by_hash().items():
                found.setdefault(h, cfg)
        return found

    def studies_of(self, config_hash: str) -> list[str]:
        """Return the names of the studies that contain ``config_hash`` (sorted)."""
        return sorted(name for name, plan in self.plans.items() if config_hash in plan.config_hashes)

    def error_summary(self) -> str:
        """Return one line per invalid study file, naming it and the reason ('' when every file is valid)."""
        return "\n".join(_error_line(name, msg) for name, msg in sorted(self.errors.items()))

    def skipped_count(self) -> int:
        """Return the number of skipped sweep points over all valid studies."""
        return sum(len(plan.skipped) for plan in self.plans.values())


def _one_line(text: str) -> str:
    """Return ``text`` on one line: its lines joined with ' | ', control characters escaped."""
    return escape_control(" | ".join(line.strip() for line in text.splitlines() if line.strip()))


def _error_line(name: str, message: str, label: str = "") -> str:
    """Return one line naming invalid file ``name`` (unless its message already does) and the message."""
    named = name in message.split("\n", 1)[0]  # messages start with the file's full path
    return _one_line(f"{label}{message}" if named else f"{name}: {label}{message}")


def scan_report_lines(scan: StudyScan, study: str | None = None, max_skipped: int = MAX_SKIPPED_LINES,
                      invalid_files: bool = True) -> list[str]:
    """Return the lines to show a person about a scan: skipped sweep points, then invalid study files.

    One line per skipped point of ``study`` (every valid study when None), naming the file, the point's
    values and the reason (at most ``max_skipped`` per study, then one line with the count left out),
    then (with ``invalid_files``) one line per invalid file with its reason. Lines hold no newline or
    control character. Empty list: nothing was skipped and every file is valid.
    """
    lines: list[str] = []
    for name, plan in sorted(scan.plans.items()):
        if study is not None and name != study:
            continue
        source = scan.files.get(name, name)
        for s in plan.skipped[:max_skipped]:
            point = short(s.overrides, 200) if s.overrides else "the base config"
            lines.append(_one_line(f"{source}: skipped sweep point {point}: {s.reason}"))
        if len(plan.skipped) > max_skipped:
            lines.append(f"{escape_control(source)}: ... and {len(plan.skipped) - max_skipped:,} more skipped sweep point(s)")
    for name, message in sorted(scan.errors.items()) if invalid_files else ():
        lines.append(_error_line(name, message, "invalid study file (skipped): "))
    return lines


def scan_studies(folder: Path | None = None, limits: StudyLimits | None = None) -> StudyScan:
    """Read every ``*.yaml`` under ``folder`` (default: llem_pipeline.paths.studies_dir()); return the StudyScan.

    Never raises on a bad file: each file is read on its own within ``limits`` (default: from the
    environment, llem_pipeline.studies.study_limits()), and a file that fails is an entry of ``errors``.
    """
    plans: dict[str, StudyPlan] = {}
    errors: dict[str, str] = {}
    files: dict[str, str] = {}
    digest = hashlib.sha256()
    for f in read_studies(folder, limits):
        digest.update(f.path.name.encode() + b"\0" + f.fingerprint.encode() + b"\0")
        if f.plan is None:
            errors[f.path.name] = str(f.outcome)
        else:
            plans[f.plan.name] = f.plan
            files[f.plan.name] = f.path.name
    return StudyScan(plans=plans, errors=errors, fingerprint=digest.hexdigest()[:16], files=files)


def config_cache_path(config_hash: str, data: Path | None = None) -> Path:
    """Return ``<data dir>/configs/<hash>.json``: the registered copy of a config (survives study edits)."""
    if len(config_hash) != 16 or any(c not in "0123456789abcdef" for c in config_hash):
        raise ValueError(f"config_hash={config_hash!r} must be 16 lowercase hex characters")
    return (data or data_dir()) / "configs" / f"{config_hash}.json"


def remember_config(config_hash: str, config: ExperimentConfig, data: Path | None = None) -> Path:
    """Write the registered copy of ``config`` atomically; returns its path."""
    path = config_cache_path(config_hash, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def _registered_copy(config_hash: str, data: Path | None = None) -> ExperimentConfig | None:
    """Return the registered copy of ``config_hash`` when it exists, validates and hashes to it; else None."""
    cached = config_cache_path(config_hash, data)
    try:
        config = ExperimentConfig.model_validate_json(cached.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if compute_measurement_config_hash(config) == config_hash else None


def resolve_config(config_hash: str, folder: Path | None = None, data: Path | None = None) -> ExperimentConfig:
    """Return the ExperimentConfig of ``config_hash``: its registered copy, else from the study files.

    The registered copy is used when it hashes to ``config_hash`` (the hash covers every field, so it is
    the same config the study defines), which spares reading every study file. Raises ConfigError
    naming the hash, the folder searched and the fix when neither has it.
    """
    cached = _registered_copy(config_hash, data)
    if cached is not None:
        return cached
    scan = scan_studies(folder)
    cfg = scan.configs.get(config_hash)
    if cfg is not None:
        return cfg
    known = ", ".join(sorted(scan.configs)[:20]) or "none"
    more = f" and {len(scan.configs) - 20} more" if len(scan.configs) > 20 else ""
    raise ConfigError(
        f"config hash {config_hash!r} is in no study file and was never registered (known hashes: {known}{more}); "
        "add the experiment to a studies/*.yaml file and let the study_registry sensor register it"
    )
