"""Environment snapshot (docs/methodology.md §3.10): the software and hardware a measurement ran on.

Fast enough for a background thread: the package list comes from ``importlib.metadata`` (no pip
subprocess), framework versions from package metadata (no import), GPU facts from the device objects
already open. torch is imported inside the function, only for the CUDA runtime version; pynvml is
never imported at module level (pass ``nvml``; it is imported only for NVML devices when not given).

Environment variables: only an allow-list of measurement-relevant names is recorded (``ALLOWED_ENV``
plus the ``NCCL_`` / ``VLLM_`` prefixes), and even those are dropped when the name contains a secret
word (TOKEN, KEY, SECRET, PASSWORD, PASS, CREDENTIAL, AUTH, COOKIE, SESSION; TOKENIZERS_PARALLELISM is
the one allow-listed exception, a tokenizer switch) or the value looks secret: a URL with credentials,
a known token prefix (hf_, ghp_, sk-, xox…, AKIA, JWT ``eyJ``, …) or a long random-looking string that
is not a GPU UUID or a path.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import re
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llem_pipeline.domain.environment import EnvironmentSnapshot

ALLOWED_ENV = frozenset({
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "PYTORCH_CUDA_ALLOC_CONF", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM",
})
ALLOWED_PREFIXES = ("NCCL_", "VLLM_")
SECRET_NAME_PARTS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "PASS", "CREDENTIAL", "AUTH", "COOKIE", "SESSION")
_BENIGN_SECRET_LOOKING_NAMES = frozenset({"TOKENIZERS_PARALLELISM"})

_URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s@]+@")
_TOKEN_PREFIX = re.compile(r"(?:^|[^A-Za-z0-9])(?:hf_|ghp_|gho_|ghs_|ghu_|github_pat_|glpat-|sk-|xox[abprs]-|AKIA|ASIA|eyJ)"
                           r"[A-Za-z0-9_\-]{6,}")
_UUID = re.compile(r"^(?:GPU-|MIG-)?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                   r"(?:/\d+/\d+)?$")
_TOKENISH = re.compile(r"^[A-Za-z0-9_\-+/=.]{24,}$")


def name_looks_secret(name: str) -> bool:
    """Return True when an environment variable name contains a secret word (case-insensitive)."""
    upper = name.upper()
    if upper in _BENIGN_SECRET_LOOKING_NAMES:
        return False
    return any(part in upper for part in SECRET_NAME_PARTS)


def value_looks_secret(value: str) -> bool:
    """Return True when a value looks like a credential: URL with user info, token prefix, long random string."""
    if _URL_CREDENTIALS.search(value) or _TOKEN_PREFIX.search(value):
        return True
    for piece in re.split(r"[,;:\s]+", value):
        if not _TOKENISH.match(piece) or _UUID.match(piece) or piece[0] in "/.~":
            continue
        if any(c.isdigit() for c in piece) and any(c.isalpha() for c in piece):
            return True
    return False


def relevant_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return the allow-listed, non-secret measurement-relevant variables of ``env`` (sorted by name)."""
    out: dict[str, str] = {}
    for name in sorted(env):
        if name not in ALLOWED_ENV and not name.startswith(ALLOWED_PREFIXES):
            continue
        value = env[name]
        if name_looks_secret(name) or value_looks_secret(value):
            continue
        out[name] = value
    return out


def pip_freeze() -> list[str]:
    """Return installed distributions as 'name==version', sorted case-insensitively, without duplicates."""
    seen: set[str] = set()
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name:
            seen.add(f"{name}=={dist.version}")
    return sorted(seen, key=str.lower)


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except Exception:  # a device or NVML call that is unsupported or fails: the field stays unknown
        return None


def _os_version(os_release: Path) -> str:
    try:
        for line in os_release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}".strip()


def _cpu_model(cpuinfo: Path) -> str | None:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _cuda_runtime() -> str | None:
    try:
        import torch
    except Exception:
        return None
    return getattr(torch.version, "cuda", None)


def collect_environment(
    devices: Sequence[Any],
    device_kind: str,
    *,
    nvml: Any | None = None,
    env: Mapping[str, str] | None = None,
    os_release: Path = Path("/etc/os-release"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> EnvironmentSnapshot:
    """Return the EnvironmentSnapshot of this host and ``devices`` (objects implementing the Device protocol).

    ``device_kind``: 'nvml', 'simulated' or 'replay'. ``nvml``: an initialised pynvml-like module for
    the driver and NVML versions (imported here only when ``device_kind == 'nvml'`` and not given);
    ``env``: environment mapping (default ``os.environ``). Per-device lists follow ``devices`` order:
    VRAM in MB (0 when unknown), power limits in W, persistence mode (None when unknown).
    """
    from llem_pipeline import __version__

    if nvml is None and device_kind == "nvml":
        try:
            import pynvml as nvml
        except Exception:
            nvml = None
    driver = nvml_version = None
    if nvml is not None:
        driver = _text(_safe(nvml.nvmlSystemGetDriverVersion))
        nvml_version = _text(_safe(nvml.nvmlSystemGetNVMLVersion))

    vram = [_safe(d.memory_total_mb) for d in devices]
    return EnvironmentSnapshot(
        python_version=platform.python_version(),
        cuda_version=_cuda_runtime(),
        cuda_driver_version=driver,
        gpu_names=[str(d.name) for d in devices],
        gpu_vram_mb=[round(float(v)) if v is not None else 0 for v in vram],
        pip_freeze=pip_freeze(),
        tool_version=__version__,
        platform=platform.platform(),
        os_version=_os_version(os_release),
        gpu_uuids=[str(d.uuid) for d in devices],
        gpu_power_limits_w=[_safe(d.power_limit_w) for d in devices],
        gpu_persistence_mode=[_safe(d.persistence_mode) for d in devices],
        nvml_version=nvml_version,
        torch_version=_version("torch"),
        transformers_version=_version("transformers"),
        vllm_version=_version("vllm"),
        cpu_model=_cpu_model(cpuinfo),
        hostname=socket.gethostname() or None,
        device_kind=device_kind,
        relevant_env=relevant_env(os.environ if env is None else env),
        collected_at=datetime.now(UTC),
    )
