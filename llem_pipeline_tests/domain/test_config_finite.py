"""Every float field of ExperimentConfig and StudyConfig rejects NaN and ±inf naming the field; every
valid config round-trips through its stored JSON (and a result's effective_config) to the same hash."""

from __future__ import annotations

import json
import math
import re
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.experiment import ExperimentResult, compute_measurement_config_hash
from llem_pipeline.domain.study import StudyConfig, parse_experiment_config, parse_study
from llem_pipeline.measure.aggregation import aggregate
from llem_pipeline_tests.measure.test_aggregation import proc

NON_FINITE = [math.nan, math.inf, -math.inf]


def _is_float(annotation: Any) -> bool:
    args = typing.get_args(annotation)
    if annotation is float:
        return True
    return any(_is_float(a) for a in args) if args else False


def _models(annotation: Any) -> list[type[BaseModel]]:
    args = typing.get_args(annotation) or (annotation,)
    return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]


def float_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Return the dotted path of every field whose type holds a float (tuples of floats included)."""
    out: list[str] = []
    for name, info in model.model_fields.items():
        if _is_float(info.annotation):
            out.append(prefix + name)
        for sub in _models(info.annotation):
            out.extend(float_fields(sub, f"{prefix}{name}."))
    return out


FLOAT_FIELDS = float_fields(ExperimentConfig)


def test_the_float_fields_are_found() -> None:
    # the ones the issue names, and a section of each backend: the walk finds nested sections
    for path in ("baseline.cache_ttl_seconds", "vllm.swap_space", "energy.window", "decoder.temperature",
                 "vllm.gpu_memory_utilization", "warmup.thermal_floor_seconds", "energy.sample_interval_ms"):
        assert path in FLOAT_FIELDS
    assert len(FLOAT_FIELDS) >= 14


def _config_with(path: str, value: Any) -> tuple[dict[str, Any], str]:
    """Return a config mapping with ``value`` at ``path`` (and whatever makes the rest valid), and the path
    the error must name."""
    data: dict[str, Any] = {"model": "m"}
    section = path.split(".")[0]
    if section in ("vllm", "tensorrt"):
        data["backend"] = section
    expected = path
    if path == "energy.window":
        data["energy"] = {"methodology": "windowed", "window": [0.0, value]}
        return data, "energy.window[1]"
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    if path.startswith("decoder."):
        data["decoder"].update({"do_sample": True, "temperature": data["decoder"].get("temperature", 0.5)})
    return data, expected


@pytest.mark.parametrize("path", FLOAT_FIELDS)
@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_every_float_field_rejects_nan_and_inf(path: str, value: float) -> None:
    data, expected = _config_with(path, value)
    with pytest.raises(ConfigError) as info:
        parse_experiment_config(data, "c.json")
    text = str(info.value)
    assert f"c.json: {expected} = " in text, text
    assert "must be a finite number: NaN, inf and -inf are not allowed" in text, text


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_study_gap_rejects_nan_and_inf(value: float) -> None:
    with pytest.raises(ConfigError, match=r"s\.yaml: gap_seconds = "):
        parse_study({"name": "s", "base": {"model": "m"}, "gap_seconds": value}, "s.yaml")
    assert "gap_seconds" in float_fields(StudyConfig)


def test_the_fields_without_bounds_name_finiteness() -> None:
    # unbounded fields have no range to fail first: the finite-number message is what the user sees
    for path in ("baseline.cache_ttl_seconds", "vllm.swap_space", "energy.window"):
        data, expected = _config_with(path, math.inf)
        with pytest.raises(ConfigError, match=re.escape(f"{expected} = inf: must be a finite number")):
            parse_experiment_config(data, "c.json")


huge_finite = st.floats(min_value=0.0, max_value=1.7e308, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(ttl=huge_finite, swap=huge_finite, start=st.floats(0.0, 1e300), extra=st.floats(1e-300, 1e300))
def test_extreme_finite_values_round_trip_through_stored_json(ttl: float, swap: float, start: float,
                                                              extra: float) -> None:
    end = start + extra
    if not end > start:
        return  # float rounding made the window empty: not a valid window
    for data in ({"model": "m", "baseline": {"cache_ttl_seconds": ttl},
                  "energy": {"methodology": "windowed", "window": [start, end]}},
                 {"model": "m", "backend": "vllm", "vllm": {"swap_space": swap}}):
        cfg = ExperimentConfig.model_validate(data)
        stored = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)  # what experiment_configs holds
        assert "Infinity" not in stored and "NaN" not in stored
        again = ExperimentConfig.model_validate(json.loads(stored))
        assert compute_measurement_config_hash(again) == compute_measurement_config_hash(cfg)


def test_a_results_effective_config_revalidates_to_the_measured_hash() -> None:
    cfg = ExperimentConfig.model_validate({"model": "tiny", "n": 4, "max_output_tokens": 8,
                                           "baseline": {"cache_ttl_seconds": 1e308}})
    result = aggregate([proc()], config=cfg, requests=None, environment=None, experiment_id="e", timeseries=None)
    stored = ExperimentResult.model_validate_json(result.model_dump_json())  # what result_json holds
    again = ExperimentConfig.model_validate(stored.effective_config)
    assert compute_measurement_config_hash(again) == stored.measurement_config_hash == compute_measurement_config_hash(cfg)


def test_no_float_field_is_missed_by_the_config_setting() -> None:
    # allow_inf_nan=False is set once on the base of every section: each section model carries it
    for model in {ExperimentConfig, StudyConfig, *(m for f in ExperimentConfig.model_fields.values()
                                                    for m in _models(f.annotation))}:
        assert model.model_config.get("allow_inf_nan") is False, model.__name__
