"""hardware_id and workload_hash: what makes two measurements comparable."""

from __future__ import annotations

from llem_pipeline.domain.config import ExperimentConfig
from llem_pipeline.domain.identity import (
    HARDWARE_ID_PATTERN,
    compute_workload_hash,
    gpu_model_label,
    hardware_id,
    is_simulated_hardware,
)


def test_hardware_id_names_kind_model_and_count() -> None:
    assert hardware_id("nvml", ["NVIDIA H100 80GB HBM3"]) == "nvml:H100-80GB-HBM3:x1"
    assert hardware_id("nvml", ["NVIDIA A100-SXM4-80GB"] * 4) == "nvml:A100-SXM4-80GB:x4"
    assert hardware_id("simulated", ["Simulated GPU"]) == "simulated:Simulated-GPU:x1"
    assert hardware_id(None, []) == "unknown:no-gpu:x0"
    mixed = hardware_id("nvml", ["NVIDIA L4", "NVIDIA A10G"])
    assert mixed == "nvml:A10G+L4:x2"
    for hid in ("nvml:H100-80GB-HBM3:x1", mixed, "simulated:Simulated-GPU:x1"):
        assert HARDWARE_ID_PATTERN.fullmatch(hid)


def test_simulated_and_real_never_share_a_hardware_id() -> None:
    real, sim = hardware_id("nvml", ["NVIDIA H100"]), hardware_id("simulated", ["NVIDIA H100"])
    assert real != sim
    assert not is_simulated_hardware(real) and is_simulated_hardware(sim)
    assert gpu_model_label("  NVIDIA  GeForce RTX 4090 ") == "GeForce-RTX-4090"


def test_workload_hash_ignores_how_the_work_runs_but_not_the_work() -> None:
    base = ExperimentConfig(model="m", n=8, max_output_tokens=16, pytorch={"batch_size": 1})
    other_engine_setting = ExperimentConfig(model="m", n=8, max_output_tokens=16, pytorch={"batch_size": 8},
                                            precision="fp32")
    assert compute_workload_hash(base) == compute_workload_hash(other_engine_setting)
    assert compute_workload_hash(base) != compute_workload_hash(base.model_copy(update={"n": 9}))
    assert compute_workload_hash(base) != compute_workload_hash(base.model_copy(update={"max_output_tokens": 32}))
    assert len(compute_workload_hash(base)) == 16
