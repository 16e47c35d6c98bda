"""Bad input (reliability suite: bad input): fuzzed ExperimentConfig / StudyConfig dicts and study YAML text, malformed
JSONL prompt files, a missing model path, a study with no valid point.

Every input either yields a usable object (a config that hashes and round-trips, a study plan) or ONE
error of the documented type (ConfigError, PromptDataError) naming the source and the cause; through
the worker and the launcher, a one-line error and nothing written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.experiment import compute_measurement_config_hash
from llem_pipeline.domain.study import parse_experiment_config, parse_study, parse_study_yaml
from llem_pipeline.engines.prompts import PromptDataError, load_jsonl_prompts
from llem_pipeline_tests.reliability.support import (
    PROJECT_ROOT,
    TINY_CONFIG,
    CaseResult,
    count_tracebacks,
    leftovers,
    one_line_error,
    run_worker,
)


# -- strategies ------------------------------------------------------------------------------------
def _field_paths(model: Any, prefix: str = "") -> list[str]:
    """Return every dotted field path of a pydantic model (nested sections included)."""
    out: list[str] = []
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        for arg in getattr(f.annotation, "__args__", (f.annotation,)):
            if isinstance(arg, type) and hasattr(arg, "model_fields"):
                out.extend(_field_paths(arg, path + "."))
    return out


FIELD_PATHS = _field_paths(ExperimentConfig)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["fp16", "bf16", "fp32", "pytorch", "vllm", "builtin", "x.jsonl",
                                           "total", "windowed", "steady_state", "fixed", "cv", "llem:tiny", ""]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=8)
keys = st.one_of(st.sampled_from(FIELD_PATHS), st.text(max_size=10))
BASE = {"model": "llem:tiny", "n": 4, "max_output_tokens": 8, "precision": "fp32", "pytorch": {"batch_size": 2}}


def _set_path(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[parts[-1]] = value


@st.composite
def config_dicts(draw) -> Any:
    """A valid base config with a few fields set to random JSON values, removed, or junk keys added; or junk."""
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)
    data = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(0, 4))):
        key = draw(keys)
        if draw(st.booleans()) and key in data:
            del data[key]
        else:
            _set_path(data, key, draw(json_values))
    return data


@st.composite
def study_dicts(draw) -> Any:
    """Study mappings: name, base, sweep over (mostly real) dotted keys, explicit points, cycles, order, seed, gap."""
    data: dict[str, Any] = {
        "name": draw(st.one_of(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}", fullmatch=True), st.text(max_size=10))),
        "base": draw(config_dicts()),
        "sweep": draw(st.dictionaries(keys, st.lists(json_values, max_size=3), max_size=3)),
        "experiments": draw(st.lists(st.dictionaries(keys, json_values, max_size=3), max_size=3)),
        "cycles": draw(st.one_of(st.integers(-2, 5), json_values)),
        "order": draw(st.one_of(st.sampled_from(["sequential", "interleaved", "shuffled"]), scalars)),
        "seed": draw(st.one_of(st.none(), st.integers(-(2**64), 2**64), scalars)),
        "gap_seconds": draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True), scalars)),
    }
    for k in list(data):
        if draw(st.integers(0, 4)) == 0:
            del data[k]
    return data


YAML_NOISE = [*"{}[]:,-&*!|>'\"#%@`?\n\t ", "!!python/object:os.system", "*a", "&a ", "---\n", "...\n", "\\x00", "é"]


@st.composite
def study_yaml(draw) -> str:
    """Study YAML: a dumped study mapping with random edits (YAML syntax characters, tags, anchors), or noise."""
    if draw(st.integers(0, 9)) == 0:
        return "".join(draw(st.lists(st.sampled_from([*YAML_NOISE, *"abcn0123"]), max_size=40)))
    text = yaml.safe_dump(draw(study_dicts()), allow_unicode=True, sort_keys=False)
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 3)))
        text = text[:i] + draw(st.sampled_from(YAML_NOISE)) + text[j:]
    return text


# -- checks ----------------------------------------------------------------------------------------
def _config_ok(cfg: ExperimentConfig) -> str | None:
    h = compute_measurement_config_hash(cfg)
    again = ExperimentConfig.model_validate_json(cfg.model_dump_json())
    if compute_measurement_config_hash(again) != h or len(h) != 16:
        return f"config does not round-trip: {h} vs {compute_measurement_config_hash(again)}"
    return None


def _classify(res: CaseResult, source: str, fn, shown: Any) -> None:
    """Run ``fn()``; a None return is survival, a string a problem; ConfigError naming ``source`` is survival."""
    try:
        problem = fn()
        res.record(problem is None, f"{problem}: {str(shown)[:160]}")
    except ConfigError as err:
        text = str(err)
        res.record(bool(text.strip()) and source in text, f"ConfigError without the source: {text[:160]!r}")
    except Exception as err:  # anything else escaped: an unhandled traceback for the user
        res.record(False, f"{type(err).__name__}: {str(err)[:120]} for {str(shown)[:160]}", unhandled=1)


def _fuzz(res: CaseResult, strategy, check, examples: int) -> CaseResult:
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value):
        check(value)

    run()
    return res


def fuzz_experiment_configs(examples: int) -> CaseResult:
    """Fuzzed ExperimentConfig dicts through parse_experiment_config (what the worker and studies use)."""
    res = CaseResult(f"fuzz ExperimentConfig dicts ({examples})")
    return _fuzz(res, config_dicts(), lambda d: _classify(
        res, "fuzz.json", lambda: _config_ok(parse_experiment_config(d, "fuzz.json")), d), examples)


def _expand(study) -> str | None:
    plan = study.expand(source="fuzz.yaml")
    for cfg in plan.experiments:
        problem = _config_ok(cfg)
        if problem:
            return problem
    return None if plan.experiments else "a plan without experiments"


def fuzz_study_dicts(examples: int) -> CaseResult:
    """Fuzzed study mappings through parse_study + expand."""
    res = CaseResult(f"fuzz StudyConfig dicts ({examples})")
    return _fuzz(res, study_dicts(), lambda d: _classify(
        res, "fuzz.yaml", lambda: _expand(parse_study(d, "fuzz.yaml")), d), examples)


def fuzz_study_yaml(examples: int) -> CaseResult:
    """Fuzzed study YAML text through parse_study_yaml + expand (safe_load: no tags execute)."""
    res = CaseResult(f"fuzz study YAML text ({examples})")
    return _fuzz(res, study_yaml(), lambda t: _classify(
        res, "fuzz.yaml", lambda: _expand(parse_study_yaml(t, "fuzz.yaml")), t), examples)


MALFORMED_JSONL: dict[str, bytes | None] = {
    "not JSON": b'{"prompt": "ok"}\n{"prompt": \n',
    "not an object": b"[1, 2]\n",
    "no prompt key": b'{"text": "hi"}\n',
    "empty prompt": b'{"prompt": "   "}\n',
    "prompt not a string": b'{"prompt": 42}\n',
    "empty file": b"\n\n",
    "not UTF-8": b'{"prompt": "ok"}\n\xff\xfe\xfa garbage\n',
    "nested too deeply": b"[" * 50_000 + b"]" * 50_000 + b"\n",
    "BOM": b'\xef\xbb\xbf{"prompt": "hi"}\n',
    "NUL byte": b'{"prompt": "a\x00b"}\n',
    "missing file": None,
}


def malformed_jsonl(work: Path) -> CaseResult:
    """Malformed JSONL prompt files: PromptDataError naming the file (and line), nothing else."""
    res = CaseResult("malformed JSONL")
    for i, (name, content) in enumerate(MALFORMED_JSONL.items()):
        path = work / f"bad-{i}.jsonl"
        if content is not None:
            path.write_bytes(content)
        try:
            load_jsonl_prompts(path)
            res.record(False, f"{name}: accepted")
        except PromptDataError as err:
            res.record(path.name in str(err), f"{name}: error does not name the file: {err}")
        except Exception as err:
            res.record(False, f"{name}: {type(err).__name__}: {err}", unhandled=1)
    return res


def worker_bad_input(data_dir: Path, work: Path) -> CaseResult:
    """Through the worker command: an invalid field, an unreadable config file, a missing model path and a
    malformed JSONL dataset each give exit 1, one line naming the cause, and no run folder."""
    res = CaseResult("bad input through the worker")
    bad_jsonl = work / "prompts.jsonl"
    bad_jsonl.write_bytes(b'{"prompt": "fine"}\n\xff\xfe not utf-8\n')
    cases: list[tuple[str, dict | str, str]] = [
        ("invalid field", {**TINY_CONFIG, "n": -3}, "n = -3"),
        ("missing model path", {**TINY_CONFIG, "model": str(work / "no-such-model")}, "no-such-model"),
        ("malformed JSONL dataset", {**TINY_CONFIG, "dataset": str(bad_jsonl)}, "prompts.jsonl:2: not UTF-8"),
        ("config file is not JSON", "{not json", "cannot read the config JSON"),
    ]
    for i, (name, config, fragment) in enumerate(cases):
        out = work / f"run-{i}"
        if isinstance(config, str):
            cfg = work / f"cfg-{i}.json"
            cfg.write_text(config)
            proc = subprocess.run([sys.executable, "-m", "llem_pipeline.measure", "--config", str(cfg), "--devices",
                                   "simulated", "--out", str(out), "--quiet"], capture_output=True, text=True,
                                  env={**os.environ, "LLEM_DATA_DIR": str(data_dir)}, cwd=PROJECT_ROOT, timeout=300)
        else:
            proc = run_worker(data_dir, config, out)
        line = one_line_error(proc) or ""
        res.record(proc.returncode == 1 and fragment in line and not leftovers(out),
                   f"{name}: rc {proc.returncode}, stderr {proc.stderr.strip()[-300:]!r}, left {leftovers(out)}",
                   unhandled=count_tracebacks(proc.stderr))
    return res


NO_VALID_POINT = """\
name: broken
base: {model: "llem:tiny", n: 4, precision: fp32}
sweep:
  pytorch.batch_size: [0, -1]
  max_output_tokens: [0]
"""


def study_without_valid_point(work: Path) -> CaseResult:
    """A study whose every point is invalid: ConfigError listing each point's reason (in-process), and the
    launcher (``llem run``) exits 2 naming the study and the file's error, measuring nothing."""
    res = CaseResult("study with no valid point")
    try:
        parse_study_yaml(NO_VALID_POINT, "broken.yaml").expand(source="broken.yaml")
        res.record(False, "expanded although no point is valid")
    except ConfigError as err:
        text = str(err)
        res.record("no valid experiment" in text and all(
            f in text for f in ("pytorch.batch_size = 0", "pytorch.batch_size = -1", "max_output_tokens = 0")),
                   f"error does not list every point: {text}")
    studies, home, data = work / "studies", work / "dagster_home", work / "data"
    for d in (studies, home, data):
        d.mkdir(parents=True, exist_ok=True)
    (studies / "broken.yaml").write_text(NO_VALID_POINT)
    env = {**os.environ, "LLEM_STUDIES_DIR": str(studies), "DAGSTER_HOME": str(home), "LLEM_DATA_DIR": str(data),
           "LLEM_DEVICES": "simulated"}
    env.pop("LLEM_DUCKDB", None)
    proc = subprocess.run([sys.executable, "-m", "llem_pipeline.cli", "run", "broken"], capture_output=True, text=True,
                          env=env, cwd=PROJECT_ROOT, timeout=300)
    written = sorted(p.name for p in data.iterdir())
    ok = (proc.returncode == 2 and "llem run: error:" in proc.stderr and "no valid experiment" in proc.stderr
          and "runs" not in written)
    res.record(ok, f"launch: rc {proc.returncode}, data dir holds {written}, stderr {proc.stderr.strip()[-300:]!r}",
               unhandled=count_tracebacks(proc.stderr))
    return res


# -- tests (scaled down) ----------------------------------------------------------------------------
def test_fuzzed_experiment_configs():
    res = fuzz_experiment_configs(300)
    assert res.ok, res.explain()


def test_fuzzed_study_dicts():
    res = fuzz_study_dicts(150)
    assert res.ok, res.explain()


def test_fuzzed_study_yaml():
    res = fuzz_study_yaml(150)
    assert res.ok, res.explain()


def test_yaml_alias_bomb_is_refused_before_it_is_built():
    """Regression: the error message used to repr() an exponentially aliased value (minutes, unbounded memory);
    now the alias budget refuses the document from its node graph, before any Python value is built."""
    bomb = "name: bomb\nbase:\n  model: x\n  a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))
    with pytest.raises(ConfigError, match=r"bomb\.yaml: YAML aliases") as info:
        parse_study_yaml(bomb, "bomb.yaml").expand(source="bomb.yaml")
    assert "alias budget" in str(info.value) and len(str(info.value)) < 5000


def test_yaml_dates_and_binary_in_a_study_are_config_errors():
    """Regression: YAML dates / !!binary in base raised TypeError from a JSON round trip in expand()."""
    for text, field in (("name: d\nbase: {model: 2020-01-01}\n", "model"),
                        ("name: d\nbase: {model: x, extra: !!binary aGVsbG8=}\n", "extra")):
        with pytest.raises(ConfigError, match=field):
            parse_study_yaml(text, "d.yaml").expand(source="d.yaml")


def test_malformed_jsonl(tmp_path):
    res = malformed_jsonl(tmp_path)
    assert res.ok, res.explain()


@pytest.mark.slow
def test_bad_input_through_the_worker(tmp_path_factory, tmp_path):
    res = worker_bad_input(tmp_path_factory.mktemp("bad-input-data"), tmp_path)
    assert res.ok, res.explain()


@pytest.mark.slow
def test_study_with_no_valid_point_writes_nothing(tmp_path):
    res = study_without_valid_point(tmp_path)
    assert res.ok, res.explain()
