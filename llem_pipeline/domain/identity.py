"""What makes two measurements comparable: the hardware they ran on and the workload they served.

A measurement is identified by (config hash, hardware, run). The config hash
(``compute_measurement_config_hash``) says what was measured and never depends on the devices, so the
hardware is a separate key: ``hardware_id`` = device kind + GPU model + GPU count, e.g.
``nvml:H100-80GB-HBM3:x1`` or ``simulated:Simulated-GPU:x1``. Simulated and real devices, and two GPU
models, never share a hardware id, so they are never replaced by, nor pooled with, each other.

The workload (``compute_workload_hash``) is the part of a config that decides the work done: prompts,
how many, their lengths, sampling. Two configs with the same workload hash differ only in how the
work is executed (engine, precision, batch size, ...), which is what a study sweeps.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llem_pipeline.domain.config import ExperimentConfig

HARDWARE_ID_PATTERN = re.compile(r"^(nvml|simulated|replay|unknown):[A-Za-z0-9._+-]{1,80}:x\d{1,3}$")
# ExperimentConfig fields that define the workload (what is asked of the engine), not how it runs.
WORKLOAD_FIELDS: tuple[str, ...] = (
    "dataset", "n", "max_input_tokens", "max_output_tokens", "fixed_output_length", "random_seed", "decoder",
)


def gpu_model_label(name: str) -> str:
    """Return a GPU product name as a hardware-id token: 'NVIDIA H100 80GB HBM3' -> 'H100-80GB-HBM3'."""
    text = re.sub(r"^\s*NVIDIA\s+", "", name or "", flags=re.IGNORECASE)
    token = re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.")
    return token[:60] or "unknown-gpu"


def hardware_id(device_kind: str | None, gpu_names: Sequence[str]) -> str:
    """Return the hardware identity ``<kind>:<model>:x<count>`` of the devices a run measured.

    ``device_kind`` is 'nvml', 'simulated' or 'replay' (None → 'unknown'); ``gpu_names`` the product names,
    one per device. Several models in one run are joined by '+' in sorted order (count per model omitted:
    the total count follows 'x').
    """
    kind = device_kind if device_kind in ("nvml", "simulated", "replay") else "unknown"
    models = sorted(Counter(gpu_model_label(n) for n in gpu_names)) or ["no-gpu"]
    return f"{kind}:{'+'.join(models)[:80]}:x{len(gpu_names)}"


def is_simulated_hardware(hardware: str) -> bool:
    """Return True unless ``hardware`` (a hardware_id) names live NVML devices."""
    return not hardware.startswith("nvml:")


def workload_of(config: ExperimentConfig) -> dict:
    """Return the workload part of ``config`` as JSON-ready data (the WORKLOAD_FIELDS)."""
    dumped = config.model_dump(mode="json")
    return {k: dumped[k] for k in WORKLOAD_FIELDS}


def compute_workload_hash(config: ExperimentConfig) -> str:
    """Return SHA-256[:16] (hex) of the config's workload: dataset (name, file path or synthetic lengths and
    seed), n, max input/output tokens, fixed output length, prompt seed and decoding settings."""
    canonical = json.dumps(workload_of(config), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
