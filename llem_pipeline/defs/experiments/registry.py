"""What the study files ask for: every unique experiment config, the studies it belongs to, and invalid files.

Pure functions over ``studies/*.yaml`` (no Dagster, no DuckDB): the registration sensor, the schedule and
the GPU step (which must not open DuckDB) all resolve a config hash through here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.study import StudyPlan
from llem_pipeline.paths import data_dir
from llem_pipeline.studies import discover_studies


@dataclass(frozen=True)
class StudyScan:
    """The outcome of reading a studies folder."""

    plans: dict[str, StudyPlan] = field(default_factory=dict)
    """Valid studies: {study name: expanded plan}."""
    errors: dict[str, str] = field(default_factory=dict)
    """Invalid study files: {file name: the ConfigError message}."""
    fingerprint: str = ""
    """SHA-256[:16] of the file names and contents: changes whenever a study file changes."""

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
        """Return one line per invalid study file ('' when every file is valid)."""
        return "\n".join(f"{name}: {msg}" for name, msg in sorted(self.errors.items()))


def scan_studies(folder: Path | None = None) -> StudyScan:
    """Read every ``*.yaml`` under ``folder`` (default: llem_pipeline.paths.studies_dir()); never raises on a bad file."""
    found = discover_studies(folder)
    plans: dict[str, StudyPlan] = {}
    errors: dict[str, str] = {}
    digest = hashlib.sha256()
    for name, (path, plan) in sorted(found.items()):
        digest.update(path.name.encode())
        try:
            digest.update(path.read_bytes())
        except OSError:
            pass
        if isinstance(plan, ConfigError):
            errors[path.name] = str(plan)
        else:
            plans[name] = plan
    return StudyScan(plans=plans, errors=errors, fingerprint=digest.hexdigest()[:16])


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


def resolve_config(config_hash: str, folder: Path | None = None, data: Path | None = None) -> ExperimentConfig:
    """Return the ExperimentConfig of ``config_hash``: from the study files, else from its registered copy.

    Raises ConfigError naming the hash, the folder searched and the fix when neither has it.
    """
    scan = scan_studies(folder)
    cfg = scan.configs.get(config_hash)
    if cfg is not None:
        return cfg
    cached = config_cache_path(config_hash, data)
    if cached.is_file():
        return ExperimentConfig.model_validate_json(cached.read_text(encoding="utf-8"))
    known = ", ".join(sorted(scan.configs)) or "none"
    raise ConfigError(
        f"config hash {config_hash!r} is in no study file and was never registered (known hashes: {known}); "
        "add the experiment to a studies/*.yaml file and let the study_registry sensor register it"
    )
