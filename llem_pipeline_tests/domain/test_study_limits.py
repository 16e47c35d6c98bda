"""Bounded study reading: sweep size before expansion, linear de-duplication, the YAML alias budget,
nesting depth, the time budget (fake clock) and truncated error messages."""

from __future__ import annotations

import itertools

import pytest

import llem_pipeline.domain.study as study_module
from llem_pipeline.domain.errors import ConfigError, describe_validation_error, short
from llem_pipeline.domain.study import parse_study, parse_study_yaml
from llem_pipeline.domain.study_limits import Deadline, StudyLimits
from llem_pipeline.domain.yaml_bounded import load_yaml_bounded


def _sweep(n_keys: int, n_values: int) -> str:
    keys = ["pytorch.batch_size", "max_output_tokens", "n", "max_input_tokens", "random_seed", "warmup.n_warmup"]
    lines = [f"  {k}: [{', '.join(str(v) for v in range(1, n_values + 1))}]" for k in keys[:n_keys]]
    return "name: big\nbase: {model: m}\nsweep:\n" + "\n".join(lines) + "\n"


MILLION = _sweep(6, 10)  # 10^6 points in about 300 bytes


def test_sweep_size_is_refused_from_the_list_lengths_before_anything_is_expanded(monkeypatch):
    study = parse_study_yaml(MILLION, "million.yaml")
    assert study.point_count() == 1_000_000
    built: list[object] = []
    monkeypatch.setattr(study_module, "_set_dotted", lambda *a: built.append(a))
    with pytest.raises(ConfigError) as info:
        study.expand(source="million.yaml")
    text = str(info.value)
    assert "million.yaml" in text and "1,000,000 points" in text and "10,000" in text
    assert "LLEM_STUDY_MAX_POINTS" in text and "pytorch.batch_size (10)" in text
    assert built == []  # not one point was built


def test_the_point_limit_is_configurable_and_counts_explicit_experiments():
    text = "name: s\nbase: {model: m}\nsweep: {pytorch.batch_size: [1, 2, 3]}\nexperiments: [{n: 5}, {n: 6}]\n"
    study = parse_study_yaml(text, "s.yaml")
    assert study.point_count() == 5
    assert len(study.expand(limits=StudyLimits(max_points=5)).experiments) == 5
    with pytest.raises(ConfigError, match=r"5 points .* over the limit of 4 points"):
        study.expand(source="s.yaml", limits=StudyLimits(max_points=4))


def test_schedule_length_is_bounded():
    study = parse_study_yaml("name: s\nbase: {model: m}\nsweep: {pytorch.batch_size: [1, 2, 3]}\ncycles: 10\n", "s.yaml")
    with pytest.raises(ConfigError, match="3 configs × 10 cycles = 30 scheduled runs, over the limit of 20"):
        study.expand(source="s.yaml", limits=StudyLimits(max_runs=20))


class _CountingHash(str):
    """A config hash that counts equality comparisons (a list search compares with every earlier hash)."""

    comparisons = 0

    def __eq__(self, other: object) -> bool:
        _CountingHash.comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_deduplication_is_linear_in_the_points(monkeypatch):
    real = study_module.compute_measurement_config_hash
    monkeypatch.setattr(study_module, "compute_measurement_config_hash", lambda c: _CountingHash(real(c)))
    _CountingHash.comparisons = 0
    values = list(range(1, 401))
    text = f"name: s\nbase: {{model: m}}\nsweep: {{pytorch.batch_size: {values + values}}}\n"
    plan = parse_study_yaml(text, "s.yaml").expand()
    assert len(plan.experiments) == 400 and len(plan.config_hashes) == 400
    # A set compares a hash only with equal-hash entries: about one comparison per duplicate point.
    # The list it replaces compared each new hash with every earlier one: 400 * 399 / 2 = 79,800.
    assert _CountingHash.comparisons <= 2 * 800


BOMB = "name: bomb\nbase:\n  model: x\n  a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


def test_yaml_alias_bomb_is_refused_before_it_is_built():
    assert len(BOMB) < 700
    with pytest.raises(ConfigError) as info:
        parse_study_yaml(BOMB, "bomb.yaml")
    text = str(info.value)
    assert text.startswith("bomb.yaml: YAML aliases") and "alias budget of 10,000" in text
    assert "490,329,070 nodes" in text and len(text) < 400


def test_a_few_reused_anchors_are_fine():
    text = (
        "name: s\nbase: {model: m, warmup: &w {n_warmup: 2, thermal_floor_seconds: 0}}\n"
        "experiments:\n  - {precision: fp16, warmup: *w}\n  - {precision: bf16, warmup: *w}\n"
    )
    plan = parse_study_yaml(text, "s.yaml").expand()
    assert [c.warmup.n_warmup for c in plan.experiments] == [2, 2]


def test_alias_budget_is_exact():
    # [*a, *a, *a] where a is a list of 10 scalars: each alias adds its 11 nodes again (3 x 11 = 33 added).
    text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: [*a, *a, *a]\n"
    assert load_yaml_bounded(text, "t.yaml", StudyLimits(max_alias_nodes=33))["b"][2][9] == 10
    with pytest.raises(ConfigError, match="alias budget of 32 added nodes"):
        load_yaml_bounded(text, "t.yaml", StudyLimits(max_alias_nodes=32))


def test_recursive_alias_and_deep_nesting_are_refused():
    with pytest.raises(ConfigError, match=r"rec\.yaml: a YAML alias .* contains it"):
        parse_study_yaml("name: rec\nbase: &a {model: m, x: *a}\n", "rec.yaml")
    deep = "name: d\nbase: {model: m, x: " + "[" * 100 + "]" * 100 + "}\n"
    with pytest.raises(ConfigError, match=r"d\.yaml: the YAML document nests deeper than 64 levels"):
        parse_study_yaml(deep, "d.yaml")


def test_huge_integers_and_strings_give_short_errors():
    with pytest.raises(ConfigError) as info:
        parse_study_yaml("name: s\nbase: {model: m}\nseed: " + "9" * 5000 + "\n", "s.yaml")
    assert "s.yaml" in str(info.value) and len(str(info.value)) < 1000
    huge = "x" * 1_000_000
    with pytest.raises(ConfigError) as info:
        parse_study_yaml(f"name: s\nbase: {{model: m, dataset: {huge}}}\n", "s.yaml").expand(source="s.yaml")
    assert "dataset" in str(info.value) and len(str(info.value)) < 2000
    with pytest.raises(ConfigError) as info:
        parse_study({"name": "s", "base": {"model": "m"}, "sweep": {huge: [1]}}, "s.yaml")
    assert "is not an ExperimentConfig field path" in str(info.value) and len(str(info.value)) < 2000


def test_short_never_walks_a_shared_structure_in_full():
    level: list = ["x"] * 9
    for _ in range(30):  # 9^31 leaves when expanded; reprlib looks 3 levels deep, 8 items each
        level = [level] * 9
    assert len(short(level)) <= 80
    assert short(10**5000).startswith("<integer of about 500")


def test_validation_errors_are_capped():
    from pydantic import ValidationError

    with pytest.raises(ConfigError) as err:
        parse_study({"name": "s", "base": {"model": "m"}, **{f"junk{i}": i for i in range(500)}}, "s.yaml")
    lines = str(err.value).splitlines()
    assert len(lines) == 21 and lines[-1] == "s.yaml: ... and 480 more problem(s)"
    with pytest.raises(ValidationError) as info:
        study_module.StudyConfig.model_validate({"name": "s", "base": {}, **{f"k{i}": 1 for i in range(30)}})
    assert describe_validation_error(info.value).count("\n") == 20


class FakeClock:
    """A monotonic clock that advances ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_the_time_budget_stops_an_expansion_on_a_fake_clock():
    text = _sweep(2, 40)  # 1,600 points: the deadline is checked every 256 points
    study = parse_study_yaml(text, "slow.yaml")
    with pytest.raises(ConfigError) as info:
        study.expand(source="slow.yaml", deadline=Deadline(3.0, "slow.yaml", FakeClock(1.0)))
    text_ = str(info.value)
    assert text_.startswith("slow.yaml: reading this study took") and "time budget of 3 s" in text_
    assert "expanding sweep point" in text_ and "LLEM_STUDY_TIME_BUDGET_S" in text_
    # the same study on a clock that does not move, or with no budget, expands in full
    assert len(study.expand(deadline=Deadline(3.0, "slow.yaml", FakeClock(0.0))).experiments) == 1600
    assert len(study.expand(deadline=Deadline(None, "slow.yaml", FakeClock(1.0))).experiments) == 1600


def test_the_time_budget_covers_parsing():
    with pytest.raises(ConfigError, match="stopped while parsing the YAML"):
        parse_study_yaml("name: s\nbase: {model: m}\n", "s.yaml", deadline=Deadline(0.5, "s.yaml", FakeClock(1.0)))


@pytest.mark.parametrize("bad", [{"max_points": 0}, {"max_file_bytes": -1}, {"time_budget_s": float("inf")},
                                 {"time_budget_s": 0}, {"max_depth": True}])
def test_study_limits_reject_nonsense(bad):
    with pytest.raises(ValueError, match="StudyLimits"):
        StudyLimits(**bad)


def test_sweep_points_are_generated_lazily():
    study = parse_study_yaml(_sweep(2, 3), "s.yaml")
    first = list(itertools.islice(study._points(), 2))
    assert first == [{"pytorch.batch_size": 1, "max_output_tokens": 1}, {"pytorch.batch_size": 1, "max_output_tokens": 2}]
