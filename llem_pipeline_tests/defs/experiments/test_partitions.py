"""Measurement keys: readable (study, swept values, target), stable, unique per config, parseable back."""

from __future__ import annotations

import dagster as dg
import pytest

from llem_pipeline.defs.experiments.partitions import (
    MeasurementKey,
    measurement_partitions,
    partition_key,
    split_partition_key,
    study_measurement_keys,
    swept_settings,
)
from llem_pipeline.domain import ExperimentConfig, compute_measurement_config_hash
from llem_pipeline.paths import PROJECT_ROOT
from llem_pipeline.studies import load_study


def _cfg(**kw) -> ExperimentConfig:
    return ExperimentConfig(model="llem:tiny", n=8, precision="fp32", **kw)


def test_the_demo_study_gets_readable_stable_keys() -> None:
    plan = load_study(PROJECT_ROOT / "studies" / "demo.yaml").expand()
    keys = study_measurement_keys(plan.name, plan.experiments, plan.config_hashes, "sim")
    assert [k.swept for k in keys] == ["batch_size=1", "batch_size=4", "batch_size=8"]
    assert keys[0].key == f"demo~batch_size=1~sim~{plan.config_hashes[0]}"
    assert keys[0].label == "demo · batch_size=1 · sim"
    # stable: expanding the same file again gives the same keys
    again = load_study(PROJECT_ROOT / "studies" / "demo.yaml").expand()
    assert [k.key for k in study_measurement_keys(again.name, again.experiments, again.config_hashes, "sim")] == [
        k.key for k in keys]


def test_swept_settings_name_only_what_differs_and_disambiguate_leaf_names() -> None:
    configs = [_cfg(max_output_tokens=t, pytorch={"batch_size": b}) for t in (16, 32) for b in (1, 8)]
    assert swept_settings(configs) == [
        "max_output_tokens=16.batch_size=1", "max_output_tokens=16.batch_size=8",
        "max_output_tokens=32.batch_size=1", "max_output_tokens=32.batch_size=8",
    ]
    assert swept_settings([_cfg()]) == [""]
    models = [ExperimentConfig(model=m, n=8) for m in ("/models/Llama-3.1-8B/", "org/name with space")]
    assert swept_settings(models) == ["model=Llama-3.1-8B", "model=name-with-space"]


def test_keys_round_trip_through_dagster_partition_keys() -> None:
    cfg = _cfg(pytorch={"batch_size": 8})
    h = compute_measurement_config_hash(cfg)
    key = MeasurementKey(study="demo", swept="batch_size=8", target="sim", config_hash=h)
    pk = partition_key("2026-12-06", key)
    assert isinstance(pk, dg.MultiPartitionKey)
    assert str(pk) == f"2026-12-06|demo~batch_size=8~sim~{h}"
    assert split_partition_key(pk) == ("2026-12-06", key)
    assert split_partition_key(str(pk)) == ("2026-12-06", key)
    bare = MeasurementKey(study="nightly", swept="", target="gpu", config_hash=h)
    assert MeasurementKey.parse(bare.key) == bare and bare.key == f"nightly~gpu~{h}"
    assert measurement_partitions.get_partition_key_from_str(str(pk)).keys_by_dimension["measurement"] == key.key


@pytest.mark.parametrize("bad", ["demo~sim", "Demo~sim~0123456789abcdef", "demo~SIM~0123456789abcdef",
                                 "demo~x~sim~0123", "a~b~c~d~e"])
def test_bad_keys_are_refused_with_the_format(bad: str) -> None:
    with pytest.raises(ValueError):
        MeasurementKey.parse(bad)
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        split_partition_key(f"yesterday|{bad}")
