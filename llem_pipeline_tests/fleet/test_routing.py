"""Fleet routing: the executor chosen by LLEM_EXECUTOR, each step's Celery queue from its op tag and its run."""

import pytest

from llem_pipeline.defs.constants import GPU_OP_TAG, STORAGE_OP_TAG
from llem_pipeline.defs.measurements.devices import DeviceSpecError, host_target
from llem_pipeline.fleet.executor import FleetConfigError, executor_name, measurement_executor, step_queue

pytestmark = pytest.mark.fleet


def test_gpu_steps_go_to_their_targets_queue_and_db_steps_to_storage():
    assert step_queue(GPU_OP_TAG, {"llem/target": "h100"}, "dagster") == "gpu-h100"
    # a run launched from the UI has no llem/target tag: the partition key names the target
    run_tags = {"dagster/partition/measurement": "demo~batch_size=8~a100~2de5716c3fd98f72"}
    assert step_queue(GPU_OP_TAG, run_tags, "dagster") == "gpu-a100"
    assert step_queue(STORAGE_OP_TAG, {"llem/target": "h100"}, "dagster") == "storage"
    assert step_queue({}, {}, "dagster") == "dagster"


def test_a_gpu_step_of_a_run_without_target_is_refused_with_the_fix():
    with pytest.raises(FleetConfigError, match="no llem/target tag"):
        step_queue(GPU_OP_TAG, {}, "dagster")


def test_executor_is_chosen_by_configuration(monkeypatch):
    monkeypatch.delenv("LLEM_EXECUTOR", raising=False)
    assert executor_name() == "in_process"
    assert measurement_executor().name == "in_process"
    monkeypatch.setenv("LLEM_EXECUTOR", "celery")
    monkeypatch.delenv("LLEM_CELERY_BROKER", raising=False)
    with pytest.raises(FleetConfigError, match="LLEM_CELERY_BROKER"):
        measurement_executor()
    monkeypatch.setenv("LLEM_CELERY_BROKER", "redis://127.0.0.1:1/0")
    assert measurement_executor().name == "llem_celery"
    monkeypatch.setenv("LLEM_EXECUTOR", "dask")
    with pytest.raises(FleetConfigError, match="'dask' is not an executor"):
        executor_name()


def test_host_target_comes_from_llem_target_else_from_the_devices():
    assert host_target("simulated") == "sim"
    assert host_target("0,1") == "gpu"
    assert host_target("simulated", "h100") == "h100"
    with pytest.raises(DeviceSpecError, match="LLEM_TARGET='H 100'"):
        host_target("simulated", "H 100")
