"""Study files on disk: load and discover ``studies/*.yaml``, each file on its own and within StudyLimits.

Every file is read independently: its size is checked before it is read, its YAML within the alias
budget, its sweep size from the list lengths before expansion, all of it within a time budget. A file
that breaks a limit, or cannot be read for any other reason, becomes a ConfigError for that file
alone; every other study is still loaded. Two files declaring the same study name are both errors,
each naming the other file (neither silently replaces the other).
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llem_pipeline.domain.errors import ConfigError, short, truncate_message
from llem_pipeline.domain.study import StudyConfig, StudyPlan, parse_study_yaml
from llem_pipeline.domain.study_limits import (
    ENV_MAX_BYTES,
    ENV_MAX_POINTS,
    ENV_TIME_BUDGET_S,
    Deadline,
    StudyLimits,
)
from llem_pipeline.paths import studies_dir

Clock = Callable[[], float]


def _env_number(env: Mapping[str, str], var: str, kind: type[int] | type[float], default: object) -> object:
    """Return the value of ``var`` as ``kind``, ``default`` when unset; raise ConfigError when it is not usable."""
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < 0 or (kind is int and value == 0):
        what = "positive integer" if kind is int else "number of seconds (0 = no time limit)"
        raise ConfigError(f"{var}={short(raw)} is not a {what}: unset it to use the default ({default})")
    return value


def study_limits(env: Mapping[str, str] | None = None) -> StudyLimits:
    """Return the StudyLimits set by LLEM_STUDY_MAX_BYTES, LLEM_STUDY_MAX_POINTS and LLEM_STUDY_TIME_BUDGET_S
    (the defaults for those unset; a time budget of 0 means none).

    Raises ConfigError naming the variable when one is not a usable number.
    """
    env = os.environ if env is None else env
    d = StudyLimits()
    budget = _env_number(env, ENV_TIME_BUDGET_S, float, d.time_budget_s)
    return StudyLimits(
        max_file_bytes=_env_number(env, ENV_MAX_BYTES, int, d.max_file_bytes),  # type: ignore[arg-type]
        max_points=_env_number(env, ENV_MAX_POINTS, int, d.max_points),  # type: ignore[arg-type]
        time_budget_s=None if budget == 0 else budget,  # type: ignore[arg-type]
    )


def read_study_bytes(path: Path, limits: StudyLimits) -> bytes:
    """Return the bytes of one study file, read only when it is a regular file within ``limits.max_file_bytes``.

    Raises ConfigError naming the file (and the size and the limit when it is too large).
    """
    try:
        info = path.stat()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read study file: {err.strerror or err}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path}: not a regular file (a study must be a plain YAML file): remove it or rename it")
    limit = limits.max_file_bytes
    if info.st_size > limit:
        raise ConfigError(
            f"{path}: the file is {info.st_size:,} bytes, over the limit of {limit:,} bytes per study file: "
            f"a study is a few kB of YAML; shorten it, split it, or raise {ENV_MAX_BYTES}"
        )
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)  # never more than the limit, even when the file grows meanwhile
    except OSError as err:
        raise ConfigError(f"{path}: cannot read study file: {err.strerror or err}") from None
    if len(data) > limit:
        raise ConfigError(f"{path}: the file grew past the limit of {limit:,} bytes per study file while it was read; "
                          f"shorten it or raise {ENV_MAX_BYTES}")
    return data


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}): save the study as UTF-8") from None


def load_study(path: str | Path, limits: StudyLimits | None = None, deadline: Deadline | None = None) -> StudyConfig:
    """Read and validate one study YAML file within ``limits`` (default: study_limits()); return the StudyConfig.

    Raises ConfigError naming the file, field path, value and fix.
    """
    p = Path(path)
    limits = limits or study_limits()
    return parse_study_yaml(_decode(p, read_study_bytes(p, limits)), source=str(p), limits=limits, deadline=deadline)


@dataclass(frozen=True)
class StudyFile:
    """One study file as read: its study name and plan, or the error that makes it unusable."""

    path: Path
    """The file."""
    outcome: StudyPlan | ConfigError
    """The expanded plan, or why the file cannot be used."""
    fingerprint: str
    """SHA-256 of the content when it was read, else '<size>:<mtime_ns>' (changes whenever the file does)."""

    @property
    def plan(self) -> StudyPlan | None:
        """Return the plan, or None when the file is invalid."""
        return self.outcome if isinstance(self.outcome, StudyPlan) else None


def load_study_file(path: Path, limits: StudyLimits | None = None, clock: Clock = time.monotonic) -> StudyFile:
    """Read, validate and expand one study file with its own time budget; return a StudyFile (never raises).

    Any failure (a limit, invalid YAML or fields, or an unexpected error while reading) becomes the
    file's ConfigError; the message names the file and is truncated.
    """
    limits = limits or study_limits()
    deadline = Deadline(limits.time_budget_s, str(path), clock)
    fingerprint = ""
    try:
        try:
            info = path.stat()
            fingerprint = f"{info.st_size}:{info.st_mtime_ns}"
        except OSError:
            pass
        data = read_study_bytes(path, limits)
        fingerprint = hashlib.sha256(data).hexdigest()
        study = parse_study_yaml(_decode(path, data), source=str(path), limits=limits, deadline=deadline)
        outcome: StudyPlan | ConfigError = study.expand(source=str(path), limits=limits, deadline=deadline)
    except ConfigError as err:
        outcome = ConfigError(truncate_message(str(err), 4000))
    except Exception as err:  # any other failure is this file's problem; the other studies still load
        outcome = ConfigError(f"{path}: cannot be read as a study ({type(err).__name__}: {truncate_message(str(err), 300)})")
    return StudyFile(path=path, outcome=outcome, fingerprint=fingerprint)


def read_studies(folder: str | Path | None = None, limits: StudyLimits | None = None,
                 clock: Clock = time.monotonic) -> list[StudyFile]:
    """Return one StudyFile per ``*.yaml`` in ``folder`` (default: studies_dir()), sorted by file name.

    Each file is loaded on its own (load_study_file). Files that declare the same study name are all
    turned into ConfigErrors naming the other files: no study silently replaces another.
    """
    root = Path(folder) if folder is not None else studies_dir()
    limits = limits or study_limits()
    files = [load_study_file(path, limits, clock) for path in sorted(root.glob("*.yaml"))]
    by_name: dict[str, list[StudyFile]] = {}
    for f in files:
        if f.plan is not None:
            by_name.setdefault(f.plan.name, []).append(f)
    out: list[StudyFile] = []
    for f in files:
        same = by_name.get(f.plan.name, []) if f.plan is not None else []
        if len(same) > 1:
            others = ", ".join(str(o.path) for o in same if o is not f)
            err = ConfigError(
                f"{f.path}: study name {f.plan.name!r} is also declared by {others}: "  # type: ignore[union-attr]
                "each study file needs its own name; rename one of them (neither is registered until then)"
            )
            f = StudyFile(path=f.path, outcome=err, fingerprint=f.fingerprint)
        out.append(f)
    return out


def discover_studies(folder: str | Path | None = None) -> dict[str, tuple[Path, StudyPlan | ConfigError]]:
    """Return {study name: (path, plan)} for the valid files and {file name: (path, error)} for the others.

    Keys of invalid files are file names (``x.yaml``): a '.' is never part of a study name, so an
    invalid file never hides a valid study. Duplicate study names are errors of every file involved.
    """
    found: dict[str, tuple[Path, StudyPlan | ConfigError]] = {}
    for f in read_studies(folder):
        found[f.plan.name if f.plan is not None else f.path.name] = (f.path, f.outcome)
    return found
