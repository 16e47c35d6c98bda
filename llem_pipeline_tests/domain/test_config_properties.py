"""Hypothesis: valid configs round-trip through JSON and hash identically in a fresh process;
invalid dicts raise ValidationError and nothing else."""

import json
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.experiment import compute_measurement_config_hash

pytorch_section = st.fixed_dictionaries(
    {},
    optional={
        "batch_size": st.integers(1, 512),
        "attn_implementation": st.sampled_from(["sdpa", "eager", None]),
        "torch_compile": st.booleans(),
        "num_processes": st.integers(1, 8),
        "use_cache": st.booleans(),
    },
)
vllm_section = st.fixed_dictionaries(
    {},
    optional={
        "tensor_parallel_size": st.integers(1, 8),
        "max_num_seqs": st.one_of(st.none(), st.integers(1, 1024)),
        "gpu_memory_utilization": st.floats(0.05, 1.0),
        "enforce_eager": st.booleans(),
        "kv_cache_dtype": st.sampled_from(["auto", "fp8"]),
        "enable_prefix_caching": st.one_of(st.none(), st.booleans()),
    },
)
sampling = st.one_of(
    st.just({"temperature": 0.0, "do_sample": False}),
    st.fixed_dictionaries({"temperature": st.floats(0.01, 2.0), "do_sample": st.just(True),
                           "top_p": st.floats(0.01, 1.0), "top_k": st.integers(0, 100)}),
)


@st.composite
def valid_configs(draw):
    backend = draw(st.sampled_from(["pytorch", "vllm"]))
    data = {
        "model": draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)),
        "backend": backend,
        "n": draw(st.integers(1, 5000)),
        "max_input_tokens": draw(st.integers(64, 4096)),
        "max_output_tokens": draw(st.integers(1, 2048)),
        "precision": draw(st.sampled_from(["fp32", "fp16", "bf16"])),
        "random_seed": draw(st.integers(-(2**31), 2**31)),
        "decoder": draw(sampling),
        "warmup": {"n_warmup": draw(st.integers(1, 20)), "thermal_floor_seconds": draw(st.floats(0, 120))},
        "energy": {"sample_interval_ms": draw(st.floats(1, 1000))},
    }
    data[backend] = draw(pytorch_section if backend == "pytorch" else vllm_section)
    if draw(st.booleans()):
        data["dataset"] = {"input_len": draw(st.integers(1, 64)), "seed": draw(st.integers(0, 100))}
    return ExperimentConfig.model_validate(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(valid_configs(), min_size=1, max_size=1))
def test_valid_configs_round_trip_json(cfgs):
    cfg = cfgs[0]
    again = ExperimentConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    assert compute_measurement_config_hash(again) == compute_measurement_config_hash(cfg)


def test_hash_identical_in_fresh_process():
    cfgs = [
        ExperimentConfig(model="m"),
        ExperimentConfig(model="ü/model", backend="vllm", vllm={"max_num_seqs": 64}, precision="fp16"),
        ExperimentConfig(model="m", dataset={"input_len": 16, "seed": 3}, decoder={"temperature": 0.7, "do_sample": True}),
    ]
    payload = json.dumps([c.model_dump(mode="json") for c in cfgs])
    code = (
        "import json,sys\n"
        "from llem_pipeline.domain.config import ExperimentConfig\n"
        "from llem_pipeline.domain.experiment import compute_measurement_config_hash\n"
        "print(json.dumps([compute_measurement_config_hash(ExperimentConfig.model_validate(d)) "
        "for d in json.loads(sys.stdin.read())]))"
    )
    out = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [compute_measurement_config_hash(c) for c in cfgs]


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)),
    max_leaves=10,
)
field_names = st.sampled_from([*list(ExperimentConfig.model_fields), "bogus", "output_dir"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(field_names, json_values, max_size=8))
def test_arbitrary_dicts_raise_validation_error_only(data):
    try:
        ExperimentConfig.model_validate(data)
    except ValidationError:
        pass
