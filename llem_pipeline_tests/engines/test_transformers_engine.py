"""The transformers engine on the tiny model: exact token counts, per-token timing, batching, EOS, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.engines.model_files import EngineLoadError, load_tokenizer
from llem_pipeline.engines.prompts import build_prompt_set
from llem_pipeline.engines.transformers_engine import (
    TransformersEngine,
    count_output_tokens,
    load_transformers_engine,
)
from llem_pipeline_tests.engines.eos_variant import eos_variant, first_positions, pick_stop_token


def _cfg(model: Path | str, **kw) -> ExperimentConfig:
    pytorch = kw.pop("pytorch", {})
    base = {"model": str(model), "n": 6, "max_input_tokens": 48, "max_output_tokens": 12, "precision": "fp32"}
    return ExperimentConfig(**{**base, **kw}, pytorch=pytorch)


def _prompts(model: Path, cfg: ExperimentConfig) -> list[list[int]]:
    return build_prompt_set(cfg, load_tokenizer(str(model))).token_ids


def _run(cfg: ExperimentConfig, prompts: list[list[int]]) -> tuple[list[RequestRecord], list[list[int]], TransformersEngine]:
    with load_transformers_engine(cfg, []) as engine:
        records = engine.run(prompts)
        return records, engine.last_token_ids, engine


def check_timing(records: list[RequestRecord]) -> None:
    """Invariants every engine's records satisfy (shared with the vLLM tests)."""
    for r in records:
        assert len(r.token_times_s) == r.output_tokens
        gaps = [b - a for a, b in zip(r.token_times_s, r.token_times_s[1:], strict=False)]
        assert len(gaps) == r.output_tokens - 1
        assert all(g >= 0 for g in gaps)
        assert r.submit_time_s <= r.first_token_time_s == r.token_times_s[0]
        assert r.done_time_s == r.token_times_s[-1]
        assert 0 <= r.ttft_s <= r.e2e_s


def test_fixed_length_gives_exactly_max_output_tokens(tiny_model_dir: Path):
    cfg = _cfg(tiny_model_dir, n=5, max_output_tokens=17, pytorch={"batch_size": 2})
    prompts = _prompts(tiny_model_dir, cfg)
    records, token_ids, _ = _run(cfg, prompts)
    assert [r.request_index for r in records] == list(range(5))
    assert [r.output_tokens for r in records] == [17] * 5
    assert [len(t) for t in token_ids] == [17] * 5
    assert [r.input_tokens for r in records] == [len(p) for p in prompts]
    assert {r.finish_reason for r in records} == {"length"}
    check_timing(records)
    # requests of one batch share the submit time (the batch start) and the per-step clock
    assert records[0].submit_time_s == records[1].submit_time_s < records[2].submit_time_s
    assert records[0].token_times_s == records[1].token_times_s
    assert records[1].done_time_s <= records[2].submit_time_s


def test_batch_sizes_1_and_4_give_the_same_tokens(tiny_model_dir: Path):
    cfg1 = _cfg(tiny_model_dir, n=8, pytorch={"batch_size": 1})
    prompts = _prompts(tiny_model_dir, cfg1)
    assert len({len(p) for p in prompts}) > 1  # left padding is exercised
    rec1, ids1, _ = _run(cfg1, prompts)
    rec4, ids4, _ = _run(_cfg(tiny_model_dir, n=8, pytorch={"batch_size": 4}), prompts)
    assert [r.output_tokens for r in rec1] == [r.output_tokens for r in rec4] == [12] * 8
    assert ids1 == ids4


def test_eos_stop_counts_up_to_eos_and_never_padding(tiny_model_dir: Path, tmp_path: Path):
    cfg = _cfg(tiny_model_dir, n=8, max_output_tokens=16, fixed_output_length=False, pytorch={"batch_size": 4})
    prompts = _prompts(tiny_model_dir, cfg)
    _, free_run, _ = _run(cfg, prompts)
    stop = pick_stop_token(free_run)
    variant = eos_variant(tiny_model_dir, tmp_path / "eos", [stop])
    expected = [16 if p is None else p + 1 for p in first_positions(free_run, stop)]
    assert any(2 < e < 16 for e in expected) and 16 in expected  # some stop mid-way, some run to the limit
    for bs in (4, 1):
        eos_cfg = _cfg(variant, n=8, max_output_tokens=16, fixed_output_length=False, pytorch={"batch_size": bs})
        records, ids, _ = _run(eos_cfg, prompts)
        assert [r.output_tokens for r in records] == expected
        assert [r.finish_reason for r in records] == ["length" if e == 16 else "eos" for e in expected]
        for row, full, r in zip(ids, free_run, records, strict=True):
            assert row == full[: r.output_tokens]  # nothing after EOS, no padding
            assert stop not in row[:-1]
        check_timing(records)
    # fixed length on the same model ignores the extra EOS: every request runs to the limit
    fixed, _, _ = _run(_cfg(variant, n=8, max_output_tokens=16, pytorch={"batch_size": 4}), prompts)
    assert [r.output_tokens for r in fixed] == [16] * 8


def test_count_output_tokens():
    assert count_output_tokens([5, 6, 2, 0, 0], {2}, stop_at_eos=True) == (3, "eos")
    assert count_output_tokens([5, 6, 7], {2}, stop_at_eos=True) == (3, "length")
    assert count_output_tokens([5, 2, 7], {2}, stop_at_eos=False) == (3, "length")


def test_sampling_is_reproducible_from_random_seed(tiny_model_dir: Path):
    kw = {"decoder": {"do_sample": True, "temperature": 1.0, "top_k": 0}, "pytorch": {"batch_size": 3}}
    cfg = _cfg(tiny_model_dir, n=3, random_seed=11, **kw)
    prompts = _prompts(tiny_model_dir, cfg)
    with load_transformers_engine(cfg, []) as engine:
        engine.run(prompts)
        first = engine.last_token_ids
        engine.run(prompts)
        assert engine.last_token_ids == first
    _, other, _ = _run(_cfg(tiny_model_dir, n=3, random_seed=12, **kw), prompts)
    _, greedy, _ = _run(_cfg(tiny_model_dir, n=3), prompts)
    assert other != first and greedy != first


def test_precision_info_memory_and_cleanup(tiny_model_dir: Path):
    cfg = _cfg(tiny_model_dir, n=2, precision="bf16", max_output_tokens=4)
    engine = load_transformers_engine(cfg, [0])  # no CUDA here: falls back to the CPU
    assert engine.info.backend == "pytorch" and engine.info.extras["device"] == "cpu"
    assert engine.info.extras["dtype"] == "bfloat16" and str(next(engine.model.parameters()).dtype) == "torch.bfloat16"
    assert 0 < engine.info.model_memory_mb < 2
    assert engine.peak_memory_mb() is None
    warm = engine.warmup(_prompts(tiny_model_dir, cfg))
    assert [r.output_tokens for r in warm] == [4, 4]
    engine.cleanup()
    engine.cleanup()
    with pytest.raises(RuntimeError, match="cleaned up"):
        engine.run([[5, 6]])


def test_empty_prompt_is_rejected(tiny_model_dir: Path):
    with load_transformers_engine(_cfg(tiny_model_dir), []) as engine, pytest.raises(ValueError, match="no tokens"):
        engine.run([[5, 6], []])


def test_missing_model_path_gives_a_clear_error(tmp_path: Path):
    with pytest.raises(EngineLoadError, match=r"directory not found .*llem make-model"):
        load_transformers_engine(_cfg(tmp_path / "no-model-here"), [])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineLoadError, match="not a model directory"):
        load_transformers_engine(_cfg(tmp_path / "empty"), [])


def test_bitsandbytes_missing_is_named(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    cfg = _cfg(tiny_model_dir, precision="bf16", pytorch={"load_in_4bit": True})
    with pytest.raises(EngineLoadError, match=r"pytorch.load_in_4bit=true needs the bitsandbytes package.*pip install bitsandbytes"):
        load_transformers_engine(cfg, [])
