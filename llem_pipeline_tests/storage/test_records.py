"""RunRecord.build: what it derives from the result (hardware, workload, processes, environment) and when it asks."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest

from llem_pipeline.domain.identity import compute_workload_hash
from llem_pipeline.storage import RunRecord, StorageError
from llem_pipeline.storage.records import hardware_id_of, workload_hash_of
from llem_pipeline_tests.storage.record_factory import make_config, make_environment, make_result


def test_build_derives_identity_from_the_result() -> None:
    config = make_config(batch_size=4)
    result, procs = make_result(config, n_processes=2, devices_per_process=2, device_kind="nvml",
                                gpu_name="NVIDIA H100 80GB HBM3")
    record = RunRecord.build(result.model_copy(update={"process_results": procs}), run_date="2026-11-03", run_id="r1")
    assert record.run_date == date(2026, 11, 3) and record.config_hash == result.measurement_config_hash
    assert record.hardware_id == "nvml:H100-80GB-HBM3:x4"  # 2 processes x 2 devices
    assert record.workload_hash == compute_workload_hash(config)
    assert record.processes == procs and record.environment is None and record.baseline is None
    assert record.power_samples.num_rows == record.requests.num_rows == 0
    assert record.key == (result.measurement_config_hash, "nvml:H100-80GB-HBM3:x4", "r1")
    assert record.is_simulated is False


def test_hardware_falls_back_to_the_environment_and_workload_ignores_the_engine_setting() -> None:
    config = make_config()
    result, procs = make_result(config, device_kind="simulated")
    bare = [p.model_copy(update={"gpu_names": []}) for p in procs]
    env = make_environment("simulated", 1, gpu_name="Simulated GPU")
    assert hardware_id_of(result.model_copy(update={"process_results": bare}), bare, env) == "simulated:Simulated-GPU:x1"
    assert workload_hash_of(make_config(batch_size=1).model_dump(mode="json")) == workload_hash_of(
        make_config(batch_size=64).model_dump(mode="json"))
    assert workload_hash_of(make_config(n=16).model_dump(mode="json")) != workload_hash_of(config.model_dump(mode="json"))


def test_build_asks_for_the_workload_hash_when_the_config_cannot_be_read() -> None:
    result, _ = make_result(make_config())
    odd = result.model_copy(update={"effective_config": {"model": 42}})
    with pytest.raises(StorageError, match=r"RunRecord\.workload_hash=None: result\.effective_config is not a valid"):
        RunRecord.build(odd, run_date="2026-11-03", run_id="r1")
    given = RunRecord.build(odd, run_date="2026-11-03", run_id="r1", workload_hash="ab" * 8)
    assert given.workload_hash == "ab" * 8


def test_an_explicit_hardware_must_agree_with_the_device_kind() -> None:
    result, _ = make_result(make_config(), device_kind="nvml")
    with pytest.raises(StorageError, match="contradicts"):
        RunRecord.build(result, run_date="2026-11-03", run_id="r1", hardware="simulated:Simulated-GPU:x1")
    record = RunRecord.build(result, run_date="2026-11-03", run_id="r1", hardware="nvml:Fabricated-GPU:x1",
                             power_samples=pa.table({"power_w": [1.0]}))
    assert record.hardware_id == "nvml:Fabricated-GPU:x1" and record.power_samples.num_rows == 1
