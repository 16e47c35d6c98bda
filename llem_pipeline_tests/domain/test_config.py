"""ExperimentConfig: defaults, the engine section rule, and every rejected case naming its field."""

import pytest

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.errors import ConfigError
from llem_pipeline.domain.experiment import compute_measurement_config_hash
from llem_pipeline.domain.study import parse_experiment_config

BASE = {"model": "llem:tiny"}

# (overrides, field path that the message must name, a fragment of the value or rule)
REJECTED = [
    ({"model": ""}, "model", "at least 1"),
    ({"backend": "onnx"}, "backend", "'onnx'"),
    ({"n": 0}, "n", "0"),
    ({"max_output_tokens": 0}, "max_output_tokens", "0"),
    ({"max_input_tokens": -5}, "max_input_tokens", "-5"),
    ({"precision": "fp8"}, "precision", "'fp8'"),
    ({"dataset": "prompts.csv"}, "dataset", "prompts.csv"),
    ({"dataset": {"input_len": 0}}, "dataset.input_len", "0"),
    ({"dataset": {"input_len": 600}}, "dataset.input_len", "600"),
    ({"dataset": {"input_len": 16, "output_len": 99}}, "dataset.output_len", "99"),
    ({"decoder": {"temperature": 3.0}}, "decoder.temperature", "3.0"),
    ({"decoder": {"do_sample": True, "temperature": 0.0}}, "decoder.do_sample", "temperature"),
    ({"decoder": {"temperature": 0.7}}, "decoder.temperature", "0.7"),
    ({"decoder": {"top_p": 0.0}}, "decoder.top_p", "0.0"),
    ({"warmup": {"n_warmup": 0}}, "warmup.n_warmup", "0"),
    ({"warmup": {"mode": "cv", "window": 30, "max_prompts": 10}}, "warmup.window", "30"),
    ({"warmup": {"thermal_floor_seconds": -1}}, "warmup.thermal_floor_seconds", "-1"),
    ({"baseline": {"duration_seconds": 0}}, "baseline.duration_seconds", "0"),
    ({"energy": {"sample_interval_ms": 0.5}}, "energy.sample_interval_ms", "0.5"),
    ({"energy": {"methodology": "windowed"}}, "energy.window", "required"),
    ({"energy": {"methodology": "windowed", "window": [5, 2]}}, "energy.window", "[5.0, 2.0]"),
    ({"energy": {"window": [0, 2]}}, "energy.window", "windowed"),
    ({"energy": {"methodology": "peak"}}, "energy.methodology", "'peak'"),
    ({"pytorch": {"batch_size": 0}}, "pytorch.batch_size", "0"),
    ({"pytorch": {"load_in_4bit": True, "load_in_8bit": True}, "precision": "bf16"}, "pytorch.load_in_4bit", "exclusive"),
    ({"pytorch": {"torch_compile_mode": "max-autotune"}}, "pytorch.torch_compile_mode", "max-autotune"),
    ({"pytorch": {"bnb_4bit_quant_type": "nf4"}}, "pytorch.bnb_4bit_quant_type", "nf4"),
    ({"pytorch": {"load_in_8bit": True}, "precision": "fp32"}, "precision", "fp32"),
    ({"pytorch": {"batchsize": 8}}, "pytorch.batchsize", "unknown field"),
    ({"output_dir": "/tmp/x"}, "output_dir", "unknown field"),
    ({"duckdb_path": "x.duckdb"}, "duckdb_path", "unknown field"),
    ({"gpu_indices": [0]}, "gpu_indices", "unknown field"),
    ({"backend": "vllm", "pytorch": {"batch_size": 2}}, "pytorch", "backend='vllm'"),
    ({"backend": "vllm", "vllm": {"gpu_memory_utilization": 1.5}}, "vllm.gpu_memory_utilization", "1.5"),
    ({"backend": "vllm", "vllm": {"tensor_parallel_size": 0}}, "vllm.tensor_parallel_size", "0"),
    ({"backend": "vllm", "vllm": {"kv_cache_dtype": "int3"}}, "vllm.kv_cache_dtype", "int3"),
    ({"backend": "vllm", "vllm": {"max_model_len": 100}}, "vllm.max_model_len", "100"),
    ({"backend": "tensorrt", "tensorrt": {"quantization": "int2"}}, "tensorrt.quantization", "int2"),
    ({"energy": {"methodology": "steady_state"}, "n": 1}, "n", "n=1"),
]


@pytest.mark.parametrize(("overrides", "field", "fragment"), REJECTED, ids=[r[1] + ":" + str(i) for i, r in enumerate(REJECTED)])
def test_rejected_config_names_field_and_value(overrides, field, fragment):
    with pytest.raises(ConfigError) as info:
        parse_experiment_config({**BASE, **overrides}, "cfg.json")
    message = str(info.value)
    assert message.startswith("cfg.json: ")
    assert field in message, message
    assert fragment in message, message


def test_default_engine_section_is_filled_and_hash_stable():
    implicit = ExperimentConfig(model="m")
    explicit = ExperimentConfig(model="m", pytorch={"batch_size": 1})
    assert implicit.pytorch is not None and implicit.vllm is None
    assert compute_measurement_config_hash(implicit) == compute_measurement_config_hash(explicit)
    vllm = ExperimentConfig(model="m", backend="vllm")
    assert vllm.vllm is not None and vllm.pytorch is None
    assert vllm.engine_section is vllm.vllm


def test_runtime_settings_are_not_config_fields():
    fields = set(ExperimentConfig.model_fields)
    for runtime in ("output_dir", "duckdb_path", "gpu_indices", "devices", "timeout", "timeout_s", "data_dir"):
        assert runtime not in fields


def test_parallelism_helpers():
    assert ExperimentConfig(model="m", pytorch={"num_processes": 4}).num_processes == 4
    assert ExperimentConfig(model="m", backend="vllm", vllm={"tensor_parallel_size": 2}).devices_per_process == 2


def test_config_is_valid_with_windowed_methodology():
    cfg = ExperimentConfig(model="m", energy={"methodology": "windowed", "window": [1, 4]})
    assert cfg.energy.window == (1.0, 4.0)
