"""A study's hardware targets: validated with clear errors, part of the design, one measurement key per target."""

import pytest

from llem_pipeline.defs.automation.study_runs import measurement_keys, planned_runs, study_targets
from llem_pipeline.defs.experiments.partitions import MeasurementKey
from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.study import parse_study_yaml

BASE = """
name: fleet-s
base:
  model: "llem:tiny"
  precision: fp32
sweep:
  pytorch.batch_size: [1, 4]
cycles: 2
order: interleaved
"""


def _plan(extra: str = ""):
    return parse_study_yaml(BASE + extra, "fleet-s.yaml").expand()


def test_without_hardware_the_host_target_is_used_and_the_design_hash_is_unchanged():
    plan = _plan()
    assert plan.hardware is None
    assert study_targets(plan, "sim") == ["sim"]
    assert _plan("hardware: [h100]\n").study_design_hash != plan.study_design_hash
    runs = planned_runs(plan, "2026-12-06", "sim")
    assert [r.position for r in runs] == [0, 1, 2, 3]
    assert {r.measurement.target for r in runs} == {"sim"}


def test_each_target_is_part_of_the_key_and_every_schedule_entry_runs_on_each_target():
    plan = _plan("hardware: [h100, a100]\n")
    assert plan.hardware == ["h100", "a100"]
    keys = measurement_keys(plan, "sim")
    assert len(keys) == 4
    assert {MeasurementKey.parse(k).target for k in keys} == {"h100", "a100"}
    runs = planned_runs(plan, "2026-12-06", "sim")
    assert len(runs) == 8  # 2 configs × 2 cycles × 2 targets
    assert [r.position for r in runs] == list(range(8))
    assert [r.measurement.target for r in runs[:2]] == ["h100", "a100"]
    # the same config on two targets: same config hash, different keys (never the same measurement)
    assert runs[0].measurement.config_hash == runs[1].measurement.config_hash
    assert runs[0].measurement.key != runs[1].measurement.key
    tags = runs[0].tags("launch-1")
    assert tags["llem/target"] == "h100"
    assert "llem/simulated" not in tags  # a fleet target may be real or simulated: the measurement says


@pytest.mark.parametrize(("hardware", "needle"), [
    ("[]", "hardware is an empty list"),
    ("[H100]", "hardware target 'H100' is not a target name"),
    ("[h100, h100]", "'h100' more than once"),
    ("[h100_x]", "lowercase letters, digits and '-'"),
    ("h100", "hardware"),
])
def test_bad_hardware_lists_are_refused_naming_the_field_and_the_fix(hardware, needle):
    with pytest.raises(ConfigError) as err:
        parse_study_yaml(BASE + f"hardware: {hardware}\n", "fleet-s.yaml")
    assert "hardware" in str(err.value)
    assert needle in str(err.value)
    assert "fleet-s.yaml" in str(err.value)
