"""Study files on disk: load and discover ``studies/*.yaml``."""

from __future__ import annotations

from pathlib import Path

from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.study import StudyConfig, StudyPlan, parse_study_yaml
from llem_pipeline.paths import studies_dir


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate one study YAML file; raises ConfigError naming the file, field path, value and fix."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{p}: cannot read study file: {err.strerror or err}") from None
    return parse_study_yaml(text, source=str(p))


def discover_studies(folder: str | Path | None = None) -> dict[str, tuple[Path, StudyPlan | ConfigError]]:
    """Return {study name or file stem: (path, expanded plan or the error)} for every ``*.yaml`` in the folder."""
    root = Path(folder) if folder is not None else studies_dir()
    found: dict[str, tuple[Path, StudyPlan | ConfigError]] = {}
    for path in sorted(root.glob("*.yaml")):
        try:
            study = load_study(path)
            found[study.name] = (path, study.expand(source=str(path)))
        except ConfigError as err:
            found[path.stem] = (path, err)
    return found
