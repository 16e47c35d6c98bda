"""StudyConfig: sweep expansion, skipped points, schedule orders, design hash, readable YAML errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.study import parse_study_yaml
from llem_pipeline.studies import discover_studies, load_study

SWEEP_3X2 = """
name: sweep-3x2
base:
  model: "llem:tiny"
  precision: fp32
sweep:
  pytorch.batch_size: [1, 4, 8]
  max_output_tokens: [16, 32]
"""


def test_3x2_sweep_expands_to_6_distinct_hashes_identical_in_new_process(tmp_path):
    plan = parse_study_yaml(SWEEP_3X2, "s.yaml").expand()
    assert len(plan.experiments) == 6
    assert len(set(plan.config_hashes)) == 6
    assert {(c.pytorch.batch_size, c.max_output_tokens) for c in plan.experiments} == {
        (b, m) for b in (1, 4, 8) for m in (16, 32)
    }
    study = tmp_path / "s.yaml"
    study.write_text(SWEEP_3X2)
    code = (
        "import json,sys\nfrom llem_pipeline.studies import load_study\n"
        "p=load_study(sys.argv[1]).expand()\nprint(json.dumps([p.config_hashes, p.study_design_hash]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(study)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [plan.config_hashes, plan.study_design_hash]


def test_invalid_points_are_listed_as_skipped_with_reason():
    plan = parse_study_yaml(
        """
name: s
base: {model: m, precision: fp32}
sweep: {pytorch.batch_size: [0, 2], pytorch.load_in_8bit: [false, true]}
""",
        "s.yaml",
    ).expand()
    assert len(plan.experiments) == 1  # batch 2, no 8-bit
    reasons = {json.dumps(s.overrides, sort_keys=True): s.reason for s in plan.skipped}
    assert len(plan.skipped) == 3
    assert "pytorch.batch_size" in reasons[json.dumps({"pytorch.batch_size": 0, "pytorch.load_in_8bit": False}, sort_keys=True)]
    assert "fp32" in reasons[json.dumps({"pytorch.batch_size": 2, "pytorch.load_in_8bit": True}, sort_keys=True)]


def test_duplicate_points_collapse_to_one_config():
    plan = parse_study_yaml(
        "name: s\nbase: {model: m}\nsweep: {pytorch.batch_size: [1, 1, 2]}\n", "s.yaml"
    ).expand()
    assert len(plan.experiments) == 2


def test_explicit_experiments_merge_onto_base():
    plan = parse_study_yaml(
        "name: s\nbase: {model: m}\nexperiments:\n  - {precision: fp16}\n  - {backend: vllm, vllm: {max_num_seqs: 8}}\n",
        "s.yaml",
    ).expand()
    assert [c.backend for c in plan.experiments] == ["pytorch", "vllm"]
    assert plan.experiments[1].vllm.max_num_seqs == 8


@pytest.mark.parametrize(
    ("order", "expected"),
    [("sequential", ["A", "A", "B", "B"]), ("interleaved", ["A", "B", "A", "B"])],
)
def test_schedule_orders(order, expected):
    plan = parse_study_yaml(
        f"name: s\nbase: {{model: m}}\nsweep: {{pytorch.batch_size: [1, 2]}}\ncycles: 2\norder: {order}\n", "s.yaml"
    ).expand()
    names = {plan.config_hashes[0]: "A", plan.config_hashes[1]: "B"}
    assert [names[r.config_hash] for r in plan.schedule] == expected
    assert [r.cycle for r in plan.schedule] == ([0, 1, 0, 1] if order == "sequential" else [0, 0, 1, 1])


def test_shuffled_order_is_seeded_and_covers_every_cycle():
    text = "name: s\nbase: {model: m}\nsweep: {pytorch.batch_size: [1, 2, 3, 4, 5]}\ncycles: 3\norder: shuffled\nseed: 7\n"
    a = parse_study_yaml(text, "s.yaml").expand()
    b = parse_study_yaml(text, "s.yaml").expand()
    assert [r.config_hash for r in a.schedule] == [r.config_hash for r in b.schedule]
    for cycle in range(3):
        assert sorted(r.config_hash for r in a.schedule if r.cycle == cycle) == sorted(a.config_hashes)
    other = parse_study_yaml(text.replace("seed: 7", "seed: 8"), "s.yaml").expand()
    assert a.study_design_hash != other.study_design_hash


def test_design_hash_ignores_the_name_but_not_the_design():
    a = parse_study_yaml(SWEEP_3X2, "a.yaml").expand()
    b = parse_study_yaml(SWEEP_3X2.replace("sweep-3x2", "renamed"), "b.yaml").expand()
    c = parse_study_yaml(SWEEP_3X2 + "cycles: 2\n", "c.yaml").expand()
    assert a.study_design_hash == b.study_design_hash != c.study_design_hash


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("name: s\nbase: {model: m}\nsweep: {pytorch.batchsize: [1]}\n", ["bad.yaml", "sweep", "pytorch.batchsize"]),
        ("name: s\nbase: {model: m}\nsweep: {pytorch.batch_size: []}\n", ["bad.yaml", "sweep", "empty"]),
        ("name: 'Bad Name!'\nbase: {model: m}\n", ["bad.yaml", "name", "Bad Name!"]),
        ("name: s\nbase: {model: m}\ncycles: 0\n", ["bad.yaml", "cycles", "0"]),
        ("name: s\nbase: {model: m}\norder: random\n", ["bad.yaml", "order", "random"]),
        ("name: s\nbase: {model: m}\nseed: 3\n", ["bad.yaml", "seed", "shuffled"]),
        ("name: s\nbase: {model: m}\ngap_seconds: -1\n", ["bad.yaml", "gap_seconds", "-1"]),
        ("name: s\nbase: {model: m}\nextra_key: 1\n", ["bad.yaml", "extra_key", "unknown field"]),
        ("name: s\n", ["bad.yaml", "base", "missing"]),
        ("- just\n- a list\n", ["bad.yaml", "mapping"]),
        ("name: s\nbase: {model: m\n", ["bad.yaml", "not valid YAML"]),
        ("name: s\nbase: !!python/object/apply:os.system ['echo pwned']\n", ["bad.yaml", "not valid YAML"]),
    ],
)
def test_study_errors_name_file_field_and_value(text, fragments):
    with pytest.raises(ConfigError) as info:
        parse_study_yaml(text, "bad.yaml")
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_study_with_no_valid_point_is_an_error_listing_reasons():
    with pytest.raises(ConfigError) as info:
        parse_study_yaml("name: s\nbase: {model: m}\nsweep: {pytorch.batch_size: [0, -1]}\n", "s.yaml").expand()
    assert "no valid experiment" in str(info.value)
    assert "pytorch.batch_size" in str(info.value)


def test_shipped_studies_are_valid():
    root = Path(__file__).resolve().parents[2] / "studies"
    found = discover_studies(root)
    assert {"demo", "nightly"} <= set(found)
    for _path, plan in found.values():
        assert not isinstance(plan, ConfigError), plan
    demo = found["demo"][1]
    assert sorted(c.pytorch.batch_size for c in demo.experiments) == [1, 4, 8]
    assert load_study(root / "demo.yaml").name == "demo"


def test_missing_study_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read study file"):
        load_study(tmp_path / "nope.yaml")
