"""Measurement partitions: run date (UTC day) × measurement (a study's config on a hardware target).

A measurement key is stable and readable at once, so the Dagster UI (partition pickers, run lists, plots)
shows what was measured without a lookup::

    demo~batch_size=8~sim~2de5716c3fd98f72
    <study>~<swept values>~<hardware target>~<config hash>

The swept values are the settings in which the study's configs differ (``swept_settings``); a study with
one config has none (``nightly~sim~<hash>``). The config hash keeps the key unique and stable: the same
config of the same study on the same target always gets the same key. Keys use only characters that are
safe in partition keys and URLs (letters, digits, ``. _ - = ~``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from llem_pipeline.domain.config import ExperimentConfig

MEASUREMENTS_PARTITIONS_NAME = "llem_measurements"
FIRST_RUN_DATE = "2026-11-01"
KEY_FORMAT = "<YYYY-MM-DD>|<study>~<swept values>~<hardware target>~<config hash>"
_SEP = "~"
_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")
_TARGET = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
_HASH = re.compile(r"^[0-9a-f]{16}$")
_STUDY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_MAX_SWEPT = 80

measurements = dg.DynamicPartitionsDefinition(name=MEASUREMENTS_PARTITIONS_NAME)
# end_offset=1: today's partition exists, so a measurement run today lands in today's partition.
dates = dg.DailyPartitionsDefinition(start_date=FIRST_RUN_DATE, end_offset=1, timezone="UTC")
measurement_partitions = dg.MultiPartitionsDefinition({"date": dates, "measurement": measurements})


@dataclass(frozen=True)
class MeasurementKey:
    """One measurement partition (without its date): the study, swept values, hardware target and config hash."""

    study: str
    swept: str  # 'batch_size=8.precision=bf16', '' when the study sweeps nothing
    target: str
    config_hash: str

    def __post_init__(self) -> None:
        if not _STUDY.match(self.study):
            raise ValueError(f"study={self.study!r} is not a study name (lowercase letters, digits, '-', '_')")
        if not _TARGET.match(self.target):
            raise ValueError(f"target={self.target!r} must be lowercase letters, digits and '-' (at most 32)")
        if not _HASH.match(self.config_hash):
            raise ValueError(f"config_hash={self.config_hash!r} must be 16 lowercase hex characters")
        if _SEP in self.swept or len(self.swept) > _MAX_SWEPT:
            raise ValueError(f"swept={self.swept!r} must hold no '~' and at most {_MAX_SWEPT} characters")

    @property
    def key(self) -> str:
        """Return the partition key string, e.g. 'demo~batch_size=8~sim~2de5716c3fd98f72'."""
        parts = [self.study, self.swept, self.target, self.config_hash] if self.swept else [
            self.study, self.target, self.config_hash]
        return _SEP.join(parts)

    @property
    def label(self) -> str:
        """Return the human label, e.g. 'demo · batch_size=8 · sim'."""
        return " · ".join(p for p in (self.study, self.swept.replace(".", ", ") if self.swept else "", self.target) if p)

    @classmethod
    def parse(cls, key: str) -> MeasurementKey:
        """Return the MeasurementKey of a key string; raises ValueError naming the format."""
        parts = key.split(_SEP)
        if len(parts) not in (3, 4):
            raise ValueError(f"measurement key {key!r} is not of the form <study>~<swept values>~<target>~<config hash>")
        study, target, config_hash = parts[0], parts[-2], parts[-1]
        return cls(study=study, swept=parts[1] if len(parts) == 4 else "", target=target, config_hash=config_hash)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Return {dotted path: leaf value} of nested dicts (lists and scalars are leaves)."""
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def _value_text(value: Any) -> str:
    """Return a swept value as key-safe text (path-like values keep their last part)."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str) and "/" in value:
        text = value.rstrip("/").rsplit("/", 1)[-1]
    else:
        text = str(value)
    return _VALUE_UNSAFE.sub("-", text).strip("-")[:24] or "none"


def swept_settings(configs: Sequence[ExperimentConfig]) -> list[str]:
    """Return, per config, its swept values as 'name=value.name=value' ('' when all configs are alike).

    A setting is swept when its value differs among ``configs``; its name is the last part of its dotted
    path ('pytorch.batch_size' → 'batch_size'), or the whole path when two swept settings share a last part.
    """
    flat = [_flatten(c.model_dump(mode="json")) for c in configs]
    paths = sorted({p for f in flat for p in f})
    varying = [p for p in paths if len({repr(f.get(p)) for f in flat}) > 1]
    leaves = [p.rsplit(".", 1)[-1] for p in varying]
    names = [leaf if leaves.count(leaf) == 1 else p for p, leaf in zip(varying, leaves, strict=True)]
    out = []
    for f in flat:
        text = ".".join(f"{name}={_value_text(f.get(p))}" for name, p in zip(names, varying, strict=True))
        out.append(text[:_MAX_SWEPT].rstrip(".="))
    return out


def study_measurement_keys(study: str, configs: Sequence[ExperimentConfig], hashes: Sequence[str],
                           target: str) -> list[MeasurementKey]:
    """Return the MeasurementKey of each config of ``study`` on hardware target ``target`` (same order)."""
    return [MeasurementKey(study=study, swept=s, target=target, config_hash=h)
            for s, h in zip(swept_settings(configs), hashes, strict=True)]


def partition_key(run_date: str, measurement: MeasurementKey | str) -> dg.MultiPartitionKey:
    """Return the partition key of (run date 'YYYY-MM-DD', measurement key)."""
    key = measurement.key if isinstance(measurement, MeasurementKey) else measurement
    return dg.MultiPartitionKey({"date": run_date, "measurement": key})


def split_partition_key(key: str | dg.MultiPartitionKey) -> tuple[str, MeasurementKey]:
    """Return (run_date, MeasurementKey) of a partition key (the string form 'YYYY-MM-DD|<measurement>' too).

    Raises ValueError naming the expected format.
    """
    if not isinstance(key, dg.MultiPartitionKey):
        parts = str(key).split("|")
        dims = dict(zip(("date", "measurement"), parts, strict=False)) if len(parts) == 2 else {}
        if not dims or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", dims["date"]):
            raise ValueError(f"partition key {str(key)!r} is not of the form {KEY_FORMAT}")
    else:
        dims = key.keys_by_dimension
    return dims["date"], MeasurementKey.parse(dims["measurement"])
