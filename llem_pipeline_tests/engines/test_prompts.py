"""Prompt sets: built-in, JSONL, synthetic; selection, truncation and warmup prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.engines import prompts as P
from llem_pipeline.engines.protocol import PromptSet


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from llem_pipeline.engines.model_files import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def _cfg(**kw) -> ExperimentConfig:
    base = {"model": "m", "n": 10, "max_input_tokens": 64, "max_output_tokens": 8, "precision": "fp32"}
    return ExperimentConfig(**{**base, **kw})


def test_builtin_set_is_large_varied_and_stable():
    texts = P.builtin_prompts()
    assert len(texts) == P.BUILTIN_SIZE >= 300
    words = sorted(len(t.split()) for t in texts)
    assert words[0] < 20 and words[-1] > 200  # short questions up to long multi-sentence prompts
    assert len(set(texts)) > 0.95 * len(texts)
    sections = P._parse_sections(
        (Path(P.__file__).parent / "prompt_data" / "builtin_prompts.txt").read_text(), "builtin_prompts.txt"
    )
    assert tuple(P.expand_templates(sections, P.BUILTIN_SIZE, P._BUILTIN_SEED)) == texts
    assert "{" not in "".join(texts)  # every placeholder filled


def test_template_file_errors_name_the_problem():
    with pytest.raises(P.PromptDataError, match=r"x\.txt:1: text before the first \[section\]"):
        P._parse_sections("orphan line\n[topics]\na\n", "x.txt")
    with pytest.raises(P.PromptDataError, match=r"section \[asks\] is missing"):
        P._parse_sections("[topics]\na\n[context]\nb\n", "x.txt")


def test_jsonl_loads_prompts_and_skips_blank_lines(tmp_path: Path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "first"}\n\n{"prompt": "second", "id": 2}\n')
    assert P.load_jsonl_prompts(f) == ["first", "second"]


@pytest.mark.parametrize(
    ("body", "lineno", "what"),
    [
        ('{"prompt": "ok"}\n{"prompt": "broken"\n', 2, "not valid JSON"),
        ('{"prompt": "ok"}\n\n{"text": "x"}\n', 3, 'with a "prompt" key'),
        ('["a list"]\n', 1, 'with a "prompt" key'),
        ('{"prompt": 7}\n', 1, "non-empty string"),
        ('{"prompt": "  "}\n', 1, "non-empty string"),
    ],
)
def test_bad_jsonl_line_reports_file_and_line(tmp_path: Path, body: str, lineno: int, what: str):
    f = tmp_path / "bad.jsonl"
    f.write_text(body)
    with pytest.raises(P.PromptDataError) as e:
        P.load_jsonl_prompts(f)
    assert f"{f}:{lineno}:" in str(e.value) and what in str(e.value)


def test_missing_and_empty_jsonl(tmp_path: Path):
    with pytest.raises(P.PromptDataError, match="file not found"):
        P.load_jsonl_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(P.PromptDataError, match="no prompts"):
        P.load_jsonl_prompts(tmp_path / "empty.jsonl")


def test_bad_jsonl_surfaces_through_build_prompt_set(tmp_path: Path, tokenizer):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "a"}\nnot json\n')
    with pytest.raises(P.PromptDataError, match=r"bad\.jsonl:2:"):
        P.build_prompt_set(_cfg(dataset=str(f)), tokenizer)


def test_select_indices_is_a_seeded_permutation_that_cycles():
    a = P.select_indices(5, 12, seed=3)
    assert a == P.select_indices(5, 12, seed=3)
    assert sorted(a[:5]) == [0, 1, 2, 3, 4] and a[5:10] == a[:5] and a[10:] == a[:2]
    assert P.select_indices(50, 10, seed=3) != P.select_indices(50, 10, seed=4)


def test_synthetic_prompts_have_exactly_input_len_non_special_tokens(tokenizer):
    cfg = _cfg(n=6, dataset={"input_len": 33, "output_len": 8, "seed": 5})
    ps = P.build_prompt_set(cfg, tokenizer)
    special = P.special_token_ids(tokenizer)
    assert special >= {0, 1, 2}  # <pad>, <s>, </s>
    assert ps.source == "synthetic(input_len=33, seed=5)" and ps.truncated == 0 and ps.texts is None
    assert [len(t) for t in ps.token_ids] == [33] * 6
    assert all(0 <= i < len(tokenizer) and i not in special for t in ps.token_ids for i in t)
    assert ps.token_ids == P.build_prompt_set(cfg, tokenizer).token_ids
    other = P.build_prompt_set(_cfg(n=6, dataset={"input_len": 33, "seed": 6}), tokenizer)
    assert other.token_ids != ps.token_ids
    assert ps.input_tokens == 6 * 33


def test_builtin_prompt_set_truncates_identically_and_counts(tokenizer):
    cfg = _cfg(n=40, max_input_tokens=48, random_seed=7)
    ps = P.build_prompt_set(cfg, tokenizer)
    assert ps.source == "builtin" and len(ps.token_ids) == 40 and ps.texts is not None
    full = [tokenizer(t)["input_ids"] for t in ps.texts]
    assert ps.token_ids == [f[:48] for f in full]
    assert ps.truncated == sum(len(f) > 48 for f in full) > 0
    assert max(len(t) for t in ps.token_ids) == 48
    again = P.build_prompt_set(cfg, tokenizer)
    assert again.token_ids == ps.token_ids
    assert P.build_prompt_set(_cfg(n=40, max_input_tokens=48, random_seed=8), tokenizer).texts != ps.texts


def test_jsonl_prompt_set_cycles_when_n_exceeds_the_file(tmp_path: Path, tokenizer):
    f = tmp_path / "three.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"prompt number {i}"}) + "\n" for i in range(3)))
    ps = P.build_prompt_set(_cfg(n=7, dataset=str(f)), tokenizer)
    assert ps.source == str(f) and len(ps.texts) == 7
    assert set(ps.texts) == {f"prompt number {i}" for i in range(3)}
    assert ps.texts[3:6] == ps.texts[:3] and ps.texts[6] == ps.texts[0]


def test_truncate_keeps_the_first_tokens():
    out, cut = P.truncate([[1, 2, 3, 4], [5, 6], [7, 8, 9]], 3)
    assert out == [[1, 2, 3], [5, 6], [7, 8, 9]] and cut == 1


def test_warmup_prompts_are_full_length_and_cycle():
    ps = PromptSet(token_ids=[[1, 2, 3], [4, 5]], source="x")
    assert P.warmup_prompts(ps, 3) == [[1, 2, 3], [4, 5], [1, 2, 3]]
    assert P.warmup_prompts(ps, 0) == []
