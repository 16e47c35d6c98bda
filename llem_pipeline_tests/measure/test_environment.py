"""Environment snapshot with tiny protocol devices; secret filtering of environment variables."""

from __future__ import annotations

import json

import pytest

from llem_pipeline import __version__
from llem_pipeline.domain.environment import EnvironmentSnapshot
from llem_pipeline.measure.devices.protocol import Device, DeviceReading
from llem_pipeline.measure.environment import (
    collect_environment,
    name_looks_secret,
    pip_freeze,
    relevant_env,
    value_looks_secret,
)


class TinyDevice:
    """Implements the Device protocol with fixed answers."""

    def __init__(self, uuid, name, vram, limit, persistence, kind="nvml"):
        self._uuid, self._name, self._vram, self._limit, self._pm, self._kind = uuid, name, vram, limit, persistence, kind

    @property
    def uuid(self):
        return self._uuid

    @property
    def name(self):
        return self._name

    @property
    def kind(self):
        return self._kind

    def energy_mj(self):
        return 0

    def power_w(self):
        return 50.0

    def read(self):
        return DeviceReading(50.0, 0, 40.0, 1000.0, 1000.0, 0.0, 10.0, 0)

    def power_limit_w(self):
        return self._limit

    def persistence_mode(self):
        if self._pm == "raise":
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return self._pm

    def memory_total_mb(self):
        return self._vram


class TinyNvml:
    @staticmethod
    def nvmlSystemGetDriverVersion():
        return b"570.86.15"

    @staticmethod
    def nvmlSystemGetNVMLVersion():
        return "12.570.86.15"


DEVICES = [TinyDevice("GPU-aaaa", "NVIDIA H100 80GB HBM3", 81559.0, 700.0, True),
           TinyDevice("GPU-bbbb", "NVIDIA H100 80GB HBM3", None, None, "raise")]


def test_snapshot_fields_from_devices_nvml_and_host(tmp_path):
    assert isinstance(DEVICES[0], Device)
    osr = tmp_path / "os-release"
    osr.write_text('NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n')
    cpu = tmp_path / "cpuinfo"
    cpu.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\n")
    env = {"CUDA_VISIBLE_DEVICES": "GPU-8f3c1e2a-4b5d-6e7f-8091-a2b3c4d5e6f7,1", "HF_TOKEN": "hf_abcdefghijklmnop",
           "HOME": "/root", "OMP_NUM_THREADS": "8"}
    snap = collect_environment(DEVICES, "nvml", nvml=TinyNvml(), env=env, os_release=osr, cpuinfo=cpu)
    assert snap.cuda_driver_version == "570.86.15" and snap.nvml_version == "12.570.86.15"
    assert snap.gpu_names == ["NVIDIA H100 80GB HBM3"] * 2
    assert snap.gpu_uuids == ["GPU-aaaa", "GPU-bbbb"]
    assert snap.gpu_vram_mb == [81559, 0]
    assert snap.gpu_power_limits_w == [700.0, None]
    assert snap.gpu_persistence_mode == [True, None]
    assert snap.os_version == "Ubuntu 24.04.1 LTS" and snap.cpu_model == "AMD EPYC 9654 96-Core Processor"
    assert snap.relevant_env == {"CUDA_VISIBLE_DEVICES": env["CUDA_VISIBLE_DEVICES"], "OMP_NUM_THREADS": "8"}
    assert snap.tool_version == __version__ and snap.device_kind == "nvml"
    assert snap.python_version.count(".") == 2 and snap.platform and snap.hostname
    assert snap.torch_version and snap.transformers_version  # from package metadata
    import torch

    assert snap.cuda_version == torch.version.cuda  # None with the CPU build of the venv
    assert snap.collected_at.tzinfo is not None
    assert "pydantic==" in "\n".join(snap.pip_freeze)
    assert EnvironmentSnapshot.model_validate_json(snap.model_dump_json()) == snap
    assert "hf_" not in json.dumps(snap.model_dump(mode="json"))


def test_simulated_devices_need_no_nvml():
    sim = [TinyDevice("SIM-0", "Simulated GPU", 16000.0, 300.0, None, kind="simulated")]
    snap = collect_environment(sim, "simulated", env={})
    assert snap.cuda_driver_version is None and snap.nvml_version is None
    assert snap.device_kind == "simulated" and snap.gpu_uuids == ["SIM-0"] and snap.relevant_env == {}


def test_pip_freeze_is_sorted_name_eq_version():
    frz = pip_freeze()
    assert frz == sorted(frz, key=str.lower) and len(frz) == len(set(frz))
    assert all("==" in line for line in frz)


@pytest.mark.parametrize("name", ["HF_TOKEN", "VLLM_API_KEY", "NCCL_SECRET", "VLLM_PASSWORD", "NCCL_PASSWD",
                                  "VLLM_CREDENTIALS", "VLLM_AUTH_HEADER", "NCCL_COOKIE", "VLLM_SESSION_ID",
                                  "vllm_apikey"])
def test_secret_names(name):
    assert name_looks_secret(name)


@pytest.mark.parametrize("value", [
    "https://user:hunter2@proxy.example.com:8080", "postgres://admin@db/x", "hf_AbCdEfGhIjKlMnOp",
    "ghp_0123456789abcdefghij", "sk-proj-abcdefgh1234", "AKIAIOSFODNN7EXAMPLE",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "xoxb-1234567890-abc",
    "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA==", "a8F3kq9ZP2mW7vX1tB6nC4yR",
])
def test_secret_values(value):
    assert value_looks_secret(value)


@pytest.mark.parametrize("value", [
    "0,1", "GPU-8f3c1e2a-4b5d-6e7f-8091-a2b3c4d5e6f7", "MIG-8f3c1e2a-4b5d-6e7f-8091-a2b3c4d5e6f7",
    "expandable_segments:True,max_split_size_mb:128", "PCI_BUS_ID", "eth0", "FLASH_ATTN", "1", "false",
    "/home/user/.cache/vllm/torch_compile_cache_0123456789", "10.0.0.12", "INFO", "spawn",
])
def test_benign_values(value):
    assert not value_looks_secret(value)


def test_relevant_env_allow_list_and_filter():
    env = {
        "CUDA_VISIBLE_DEVICES": "0,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "OMP_NUM_THREADS": "4",
        "MKL_NUM_THREADS": "4", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "NCCL_DEBUG": "INFO",
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        # dropped: not allow-listed
        "PATH": "/usr/bin", "HOME": "/root", "AWS_REGION": "eu-west-1", "CUDA_HOME": "/usr/local/cuda",
        # dropped: secret names under allowed prefixes
        "VLLM_API_KEY": "x", "NCCL_IB_PASSWORD": "y",
        # dropped: secret-looking values under allowed names
        "VLLM_REMOTE_URL": "https://bob:pw@host/x", "NCCL_SOCKET_IFNAME": "hf_abcdefghijkl",
    }
    assert relevant_env(env) == {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0,1", "HF_HUB_OFFLINE": "1",
        "MKL_NUM_THREADS": "4", "NCCL_DEBUG": "INFO", "OMP_NUM_THREADS": "4",
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_OFFLINE": "1", "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    }
    assert list(relevant_env(env)) == sorted(relevant_env(env))
