"""Environment snapshot: the software and hardware a measurement ran on."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class EnvironmentSnapshot(BaseModel):
    """Software + hardware environment of a measurement.

    Seed fields plus (optional, documented here): ``gpu_uuids``, ``gpu_power_limits_w``,
    ``gpu_persistence_mode``, ``nvml_version``, framework versions, ``cpu_model``, ``hostname``,
    ``collected_at`` and ``relevant_env`` — an allow-list of measurement-relevant environment
    variables (e.g. CUDA_VISIBLE_DEVICES) whose names and values never look like secrets.
    """

    python_version: str = Field(..., description="Python version, e.g. '3.11.7'")
    cuda_version: str | None = Field(default=None, description="CUDA runtime version (from torch), None without CUDA")
    cuda_driver_version: str | None = Field(default=None, description="NVIDIA driver version (from NVML)")
    gpu_names: list[str] = Field(default_factory=list, description="GPU product names, in device order")
    gpu_vram_mb: list[int] = Field(default_factory=list, description="GPU memory per device, MB")
    pip_freeze: list[str] = Field(default_factory=list, description="Installed distributions as 'name==version', sorted")
    tool_version: str = Field(..., description="llem_pipeline version")
    platform: str = Field(..., description="platform.platform() string")
    os_version: str | None = Field(default=None, description="OS release (e.g. from /etc/os-release)")
    gpu_uuids: list[str] = Field(default_factory=list, description="GPU UUIDs, in device order")
    gpu_power_limits_w: list[float | None] = Field(default_factory=list, description="Enforced power limit per device, W")
    gpu_persistence_mode: list[bool | None] = Field(default_factory=list, description="Persistence mode per device")
    nvml_version: str | None = Field(default=None, description="NVML library version")
    torch_version: str | None = Field(default=None, description="torch version")
    transformers_version: str | None = Field(default=None, description="transformers version")
    vllm_version: str | None = Field(default=None, description="vllm version, None when not installed")
    cpu_model: str | None = Field(default=None, description="CPU model name")
    hostname: str | None = Field(default=None, description="Host name")
    device_kind: str | None = Field(default=None, description="'nvml', 'simulated' or 'replay'")
    relevant_env: dict[str, str] = Field(
        default_factory=dict, description="Allow-listed, non-secret environment variables (CUDA_VISIBLE_DEVICES, ...)"
    )
    collected_at: datetime | None = Field(default=None, description="UTC time of collection")
