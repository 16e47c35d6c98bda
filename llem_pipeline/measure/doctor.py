"""``llem doctor``'s checks: is this host ready to make valid energy measurements?

Plain functions over an injected NVML module (``pynvml`` by default, ``FakePynvml`` in tests) that return
``Finding`` records: OK / WARN / FAIL, the check's name, the device, what was found and, for WARN and
FAIL, the fix. The GPUs are opened the way a measurement opens them (``open_nvml_devices``: the GPUs
visible to CUDA, in CUDA's order) and read through ``NvmlDevice``, so a check sees what the sampler
will see. No Dagster and no storage here: llem_pipeline/commands/doctor.py renders the findings.

Without NVML (no driver, no GPU) the checks say why NVML could not be loaded and that ``make demo``
uses the simulated GPU instead; that is a WARN, not a FAIL, unless an NVIDIA driver is present.
"""

from __future__ import annotations

import importlib
import itertools
import os
import shutil
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from llem_pipeline.measure.devices.nvml import (
    NvmlDevice,
    NvmlUnavailableError,
    close_devices,
    load_nvml,
    nvml_acquire,
    nvml_release,
    open_nvml_devices,
)
from llem_pipeline.measure.devices.protocol import (
    CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING,
    CLOCK_EVENT_DISPLAY_CLOCK_SETTING,
    CLOCK_EVENT_GPU_IDLE,
    CLOCK_EVENT_HW_POWER_BRAKE,
    CLOCK_EVENT_HW_SLOWDOWN,
    CLOCK_EVENT_HW_THERMAL,
    CLOCK_EVENT_SW_POWER_CAP,
    CLOCK_EVENT_SW_THERMAL,
    CLOCK_EVENT_SYNC_BOOST,
    THROTTLE_MASK,
)

Status = Literal["OK", "WARN", "FAIL"]
STATUSES: tuple[Status, ...] = ("OK", "WARN", "FAIL")

DISK_WARN_GIB = 10.0  # below this much free space under the data dir: WARN (a 1b/8b model alone is 2-16 GiB)
DISK_FAIL_GIB = 1.0  # below this: FAIL (run folders and parquet power traces would not fit)
HOT_C = 80.0  # a GPU at or above this before any load of ours reaches thermal slowdown sooner: WARN
POWER_LIMIT_TOLERANCE_W = 1.0  # enforced vs default limit closer than this counts as equal, W
DEFAULT_COUNTER_POLL_S = 1.0  # how long the energy-counter probe polls (all GPUs at once), s
COUNTER_POLL_INTERVAL_S = 0.001  # pause between two polls of the counters, s
# Files that exist when an NVIDIA kernel driver is installed: NVML failing there is a broken setup (FAIL),
# while without them this is simply a machine without an NVIDIA GPU (WARN, the demo runs simulated).
DRIVER_PATHS: tuple[Path, ...] = (Path("/proc/driver/nvidia/version"), Path("/dev/nvidiactl"), Path("/dev/nvidia0"))

# NVML clock-event reason bits (protocol.py) and the names doctor prints for them.
CLOCK_EVENT_NAMES: tuple[tuple[int, str], ...] = (
    (CLOCK_EVENT_GPU_IDLE, "gpu_idle"),
    (CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING, "applications_clocks_setting"),
    (CLOCK_EVENT_SW_POWER_CAP, "sw_power_cap"),
    (CLOCK_EVENT_HW_SLOWDOWN, "hw_slowdown"),
    (CLOCK_EVENT_SYNC_BOOST, "sync_boost"),
    (CLOCK_EVENT_SW_THERMAL, "sw_thermal_slowdown"),
    (CLOCK_EVENT_HW_THERMAL, "hw_thermal_slowdown"),
    (CLOCK_EVENT_HW_POWER_BRAKE, "hw_power_brake_slowdown"),
    (CLOCK_EVENT_DISPLAY_CLOCK_SETTING, "display_clock_setting"),
)

SIMULATED_FALLBACK = (
    "`make demo` (LLEM_DEVICES=simulated) uses the simulated GPU instead: its power is modelled from this "
    "machine's CPU activity and every result is labelled simulated (is_simulated=true, device_kind "
    "'simulated', warning 'simulated_device')"
)


@dataclass(frozen=True)
class Finding:
    """One line of ``llem doctor``: ``status`` OK/WARN/FAIL, ``check`` (a stable name such as
    'power_limit'), ``found`` (what the host has), ``fix`` (what to run or change; required for WARN and
    FAIL, None for OK) and ``device`` ('GPU 0'; None for host-wide checks)."""

    status: Status
    check: str
    found: str
    fix: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Finding: status={self.status!r} must be one of {STATUSES}")
        if self.status != "OK" and not self.fix:
            raise ValueError(f"Finding {self.check!r}: a {self.status} needs a fix")

    def as_dict(self) -> dict[str, str | None]:
        """Returns {status, check, device, found, fix} (the JSON form)."""
        return {"status": self.status, "check": self.check, "device": self.device, "found": self.found,
                "fix": self.fix}


def exit_code(findings: Sequence[Finding]) -> int:
    """Returns the process exit code: 1 when any finding is FAIL, else 0."""
    return 1 if any(f.status == "FAIL" for f in findings) else 0


def summary(findings: Sequence[Finding]) -> str:
    """Returns the one-line verdict: counts per status and what they mean for measuring on this host."""
    n = {s: sum(f.status == s for f in findings) for s in STATUSES}
    counts = f"{n['OK']} OK, {n['WARN']} WARN, {n['FAIL']} FAIL"
    if n["FAIL"]:
        return f"{counts}: not ready to measure; fix the FAIL lines first"
    if any(f.check == "simulated_fallback" for f in findings):
        return f"{counts}: no usable NVIDIA GPU here; `make demo` runs on the simulated GPU (results labelled simulated)"
    if n["WARN"]:
        return f"{counts}: measurements will run, but fix the WARN lines for valid, comparable numbers"
    return f"{counts}: ready to measure"


def decode_clock_events(mask: int | None) -> list[str]:
    """Returns the names of the clock-event reason bits set in ``mask`` (unknown bits as hex); [] for None/0."""
    if not mask:
        return []
    names = [name for bit, name in CLOCK_EVENT_NAMES if mask & bit]
    rest = mask & ~sum(bit for bit, _ in CLOCK_EVENT_NAMES)
    return names + ([hex(rest)] if rest else [])


# -- NVML reads -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Read:
    """The outcome of one NVML call: its value, or unsupported (NOT_SUPPORTED / function missing), or an error text."""

    value: Any = None
    unsupported: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.unsupported and self.error is None


def _read(nvml: ModuleType, fn_name: str, *args: Any) -> _Read:
    """Calls ``nvml.<fn_name>(*args)``; NOT_SUPPORTED, FUNCTION_NOT_FOUND or a binding without the
    function give ``unsupported``, any other NVMLError its text."""
    fn = getattr(nvml, fn_name, None)
    if fn is None:
        return _Read(unsupported=True)
    try:
        return _Read(fn(*args))
    except nvml.NVMLError as exc:
        if getattr(exc, "value", None) in (nvml.NVML_ERROR_NOT_SUPPORTED, getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", 13)):
            return _Read(unsupported=True)
        return _Read(error=f"{fn_name}: {exc}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _w(watts: float) -> str:
    """Returns watts without a needless decimal ('700', '612.5')."""
    return f"{watts:.0f}" if abs(watts - round(watts)) < 0.05 else f"{watts:.1f}"


def cuda_version_text(version: int | None) -> str | None:
    """Returns NVML's CUDA driver version int as 'major.minor' (13000 -> '13.0'); None stays None."""
    if version is None:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"


# -- energy counter update period ---------------------------------------------------------------------
@dataclass(frozen=True)
class CounterProbe:
    """What polling one energy counter showed: ``polls`` reads, ``changes`` value changes, over
    ``duration_s`` s; ``period_s`` the median time between changes, s (None with fewer than two changes);
    ``error`` the text of a read that raised (polling that device stopped there)."""

    polls: int
    changes: int
    duration_s: float
    period_s: float | None
    error: str | None = None


def probe_counter_periods(
    readers: Mapping[str, Callable[[], int | None]],
    duration_s: float,
    *,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    interval_s: float = COUNTER_POLL_INTERVAL_S,
) -> dict[str, CounterProbe]:
    """Polls every counter in ``readers`` (key -> read energy, mJ) together for ``duration_s`` s, pausing
    ``interval_s`` s between rounds; returns a CounterProbe per key.

    A change is dated at the midpoint of the two polls around it, so the period is known to about
    ``interval_s``. ``clock``/``sleep`` are injectable (a FakeClock in tests: no real waiting).
    """
    start = clock()
    last: dict[str, Any] = {}
    t_prev: dict[str, float] = {}
    edges: dict[str, list[float]] = {k: [] for k in readers}
    polls = dict.fromkeys(readers, 0)
    errors: dict[str, str] = {}

    def poll(key: str) -> None:
        try:
            value = readers[key]()
        except Exception as exc:  # an NVMLError mid-probe: report it, stop polling this device
            errors[key] = f"{type(exc).__name__}: {exc}"
            return
        now = clock()
        polls[key] += 1
        if key in last and value != last[key]:
            edges[key].append(0.5 * (t_prev[key] + now))
        last[key], t_prev[key] = value, now

    for key in readers:
        poll(key)
    while len(errors) < len(readers) and clock() - start < duration_s:
        sleep(interval_s)
        for key in readers:
            if key not in errors:
                poll(key)
    elapsed = clock() - start
    out: dict[str, CounterProbe] = {}
    for key in readers:
        gaps = [b - a for a, b in itertools.pairwise(edges[key])]
        out[key] = CounterProbe(polls=polls[key], changes=len(edges[key]), duration_s=elapsed,
                                period_s=statistics.median(gaps) if gaps else None, error=errors.get(key))
    return out


# -- per-GPU checks -----------------------------------------------------------------------------------
@dataclass
class GpuContext:
    """One GPU under check: the NVML module, the NvmlDevice (as a measurement opens it), its label
    ('GPU 0') and the clock-event reasons read once for the clocks and clock_events checks
    (``reasons_error``: the text when that read failed)."""

    nvml: ModuleType
    device: NvmlDevice
    label: str
    reasons: int | None = None
    reasons_error: str | None = None

    @property
    def smi(self) -> str:
        """Returns the ``nvidia-smi -i <NVML index>`` prefix of this GPU's fix commands."""
        return f"sudo nvidia-smi -i {self.device.nvml_index}"


def _finding(gpu: GpuContext, status: Status, check: str, found: str, fix: str | None = None) -> Finding:
    return Finding(status, check, found, fix, gpu.label)


def check_identity(gpu: GpuContext) -> Finding:
    """Returns the GPU's name, UUID, NVML index and memory (MiB): always OK."""
    d = gpu.device
    memory = d.memory_total_mb()
    parts = [d.name, d.uuid, f"NVML index {d.nvml_index}"] + ([f"{memory:.0f} MiB"] if memory is not None else [])
    return _finding(gpu, "OK", "gpu", ", ".join(parts))


def check_persistence(gpu: GpuContext) -> Finding:
    """Returns OK when persistence mode is on, WARN (fix: nvidia-smi -pm 1) when off."""
    mode = gpu.device.persistence_mode()
    if mode is None:
        return _finding(gpu, "OK", "persistence_mode", "not reported by this GPU/driver")
    if mode:
        return _finding(gpu, "OK", "persistence_mode", "on")
    return _finding(
        gpu, "WARN", "persistence_mode",
        "off: the driver may tear the GPU down between runs, so each run starts with re-initialisation "
        "and power-state changes that are not the workload's",
        f"{gpu.smi} -pm 1 (or enable the nvidia-persistenced service)")


def check_power_limit(gpu: GpuContext) -> Finding:
    """Returns OK when the enforced power limit equals the default (W), WARN with the nvidia-smi -pl fix otherwise."""
    enforced = gpu.device.power_limit_w()
    default = _read(gpu.nvml, "nvmlDeviceGetPowerManagementDefaultLimit", gpu.device.handle)
    if enforced is None:
        return _finding(gpu, "WARN", "power_limit", "the enforced power limit is not reported",
                        "check `nvidia-smi -q -d POWER`; results will carry no power limit")
    if not default.ok:
        return _finding(gpu, "OK", "power_limit", f"enforced {_w(enforced)} W (default limit not reported)")
    default_w = default.value / 1000.0
    if abs(enforced - default_w) <= POWER_LIMIT_TOLERANCE_W:
        return _finding(gpu, "OK", "power_limit", f"enforced {_w(enforced)} W = the default")
    side = "below" if enforced < default_w else "above"
    return _finding(
        gpu, "WARN", "power_limit",
        f"enforced {_w(enforced)} W is {side} the default {_w(default_w)} W: energy and speed would be those "
        "of a GPU with a non-default power cap",
        f"{gpu.smi} -pl {_w(default_w)}")


def check_clocks(gpu: GpuContext) -> Finding:
    """Returns the SM clock now and its max, MHz, and the application clocks vs their defaults; WARN (fix:
    -rac / -rgc / -rmc) when application clocks differ from the default or the clock-event reason
    'applications_clocks_setting' shows clocks held by an application-clocks or locked-clocks setting.

    NVML has no getter for locked clocks (nvidia-smi -lgc / -lmc); the reason bit is how NVML shows them.
    """
    nvml, h = gpu.nvml, gpu.device.handle
    graphics, mem, sm = nvml.NVML_CLOCK_GRAPHICS, nvml.NVML_CLOCK_MEM, nvml.NVML_CLOCK_SM
    app = [_read(nvml, "nvmlDeviceGetApplicationsClock", h, c) for c in (graphics, mem)]
    default = [_read(nvml, "nvmlDeviceGetDefaultApplicationsClock", h, c) for c in (graphics, mem)]
    max_sm = _read(nvml, "nvmlDeviceGetMaxClockInfo", h, sm)
    now_sm = gpu.device.sm_clock_mhz()
    facts = []
    if now_sm is not None:
        facts.append(f"SM {now_sm:.0f} MHz now" + (f", max {max_sm.value} MHz" if max_sm.ok else ""))
    if all(r.ok for r in app + default):
        facts.append(f"application clocks {app[0].value}/{app[1].value} MHz graphics/memory "
                     f"(default {default[0].value}/{default[1].value})")
    problems, fixes = [], []
    if all(r.ok for r in app + default) and any(a.value != d.value for a, d in zip(app, default, strict=True)):
        problems.append("application clocks differ from the default")
        fixes.append(f"{gpu.smi} -rac")
    if gpu.reasons is not None and gpu.reasons & CLOCK_EVENT_APPLICATIONS_CLOCKS_SETTING:
        below = now_sm is not None and max_sm.ok and now_sm < max_sm.value - 1
        problems.append("clocks are held by an application-clocks or locked-clocks setting"
                        + (" below the max" if below else "") + " (clock event applications_clocks_setting)")
        fixes += [f"{gpu.smi} -rgc", f"{gpu.smi} -rmc"] + ([] if f"{gpu.smi} -rac" in fixes else [f"{gpu.smi} -rac"])
    found = "; ".join(facts) or "clocks not reported"
    if problems:
        return _finding(gpu, "WARN", "clocks", "; ".join(problems) + f": {found}",
                        " && ".join(fixes) + " (if you lock clocks on purpose, every result of the study must share it)")
    return _finding(gpu, "OK", "clocks", found + ("; no clock lock" if gpu.reasons is not None else ""))


def check_ecc(gpu: GpuContext) -> Finding:
    """Returns OK when ECC is on (or not supported), WARN when off or when a change is pending a reset."""
    r = _read(gpu.nvml, "nvmlDeviceGetEccMode", gpu.device.handle)
    if r.unsupported:
        return _finding(gpu, "OK", "ecc", "not supported by this GPU")
    if r.error:
        return _finding(gpu, "WARN", "ecc", f"could not read: {r.error}", "check `nvidia-smi -q -d ECC`")
    current, pending = (int(v) for v in r.value)
    enabled = gpu.nvml.NVML_FEATURE_ENABLED
    if current == enabled and pending == enabled:
        return _finding(gpu, "OK", "ecc", "enabled")
    if current == enabled:
        return _finding(gpu, "WARN", "ecc", "enabled now, but disabled after the next reboot or GPU reset",
                        f"{gpu.smi} -e 1 (keeps ECC on)")
    return _finding(
        gpu, "WARN", "ecc",
        "disabled" + (" (enabled after the next reboot or GPU reset)" if pending == enabled else "")
        + ": memory then runs differently from the ECC-on default, so results do not compare with ECC-on hosts",
        f"{gpu.smi} -e 1, then reboot (or reset the GPU: {gpu.smi} -r)")


def check_mig(gpu: GpuContext) -> Finding:
    """Returns OK when MIG is off or not supported, FAIL when on (energy is whole-GPU), WARN when pending."""
    r = _read(gpu.nvml, "nvmlDeviceGetMigMode", gpu.device.handle)
    if r.unsupported:
        return _finding(gpu, "OK", "mig", "not supported by this GPU")
    if r.error:
        return _finding(gpu, "WARN", "mig", f"could not read: {r.error}", "check `nvidia-smi -q -d MIG`")
    current, pending = (int(v) for v in r.value)
    enabled = getattr(gpu.nvml, "NVML_DEVICE_MIG_ENABLE", 1)
    off_fix = f"{gpu.smi} -mig 0 (stop every process on the GPU first; some GPUs then need {gpu.smi} -r)"
    if current == enabled:
        return _finding(gpu, "FAIL", "mig",
                        "enabled: NVML reads energy and power for the whole GPU, not per MIG instance, so a "
                        "run's energy cannot be attributed to it", off_fix)
    if pending == enabled:
        return _finding(gpu, "WARN", "mig", "disabled now, but enabled after the next GPU reset", off_fix)
    return _finding(gpu, "OK", "mig", "disabled")


def check_processes(gpu: GpuContext, own_pid: int | None = None) -> Finding:
    """Returns OK when no other process uses the GPU, WARN listing each (pid, name, compute/graphics,
    memory in MiB) otherwise. ``own_pid`` (default: this process) is not counted."""
    own_pid = os.getpid() if own_pid is None else own_pid
    nvml, h = gpu.nvml, gpu.device.handle
    lists = {"compute": "nvmlDeviceGetComputeRunningProcesses", "mps": "nvmlDeviceGetMPSComputeRunningProcesses",
             "graphics": "nvmlDeviceGetGraphicsRunningProcesses"}
    seen: dict[int, tuple[list[str], int | None]] = {}  # pid -> (kinds, used memory bytes)
    errors = []
    for kind, fn_name in lists.items():
        r = _read(nvml, fn_name, h)
        if r.error:
            errors.append(r.error)
        if not r.ok:
            continue
        for p in r.value or []:
            kinds, used = seen.get(int(p.pid), ([], None))
            memory = getattr(p, "usedGpuMemory", None)  # bytes; None when NVML cannot tell
            seen[int(p.pid)] = ([*kinds, kind], memory if used is None else used)
    seen.pop(own_pid, None)
    if errors and not seen:
        return _finding(gpu, "WARN", "processes", f"could not list the processes on the GPU: {'; '.join(errors)}",
                        "run `nvidia-smi` to see them (in a container the host's processes may be hidden)")
    if not seen:
        used_mb, total_mb = gpu.device.mem_used_mb(), gpu.device.memory_total_mb()
        memory = f" (memory used: {used_mb:.0f} of {total_mb:.0f} MiB)" if used_mb is not None and total_mb else ""
        return _finding(gpu, "OK", "processes", "no other process on this GPU" + memory)
    items = []
    for pid, (kinds, used) in sorted(seen.items()):
        name = _read(nvml, "nvmlSystemGetProcessName", pid)
        mem = "memory n/a" if used is None else f"{used / 2**20:.0f} MiB"
        items.append(f"pid {pid} {_text(name.value) if name.ok else '?'} ({'+'.join(kinds)}, {mem})")
    pids = " ".join(str(pid) for pid in sorted(seen))
    return _finding(gpu, "WARN", "processes",
                    f"{len(seen)} other process(es) on this GPU, whose energy a measurement would count: "
                    + "; ".join(items),
                    f"stop them before measuring (kill {pids}), or measure on a GPU nobody else uses "
                    "(CUDA_VISIBLE_DEVICES / LLEM_DEVICES)")


def check_energy_counter(gpu: GpuContext, probe: CounterProbe | None) -> Finding:
    """Returns whether nvmlDeviceGetTotalEnergyConsumption works and its update period (ms) from
    ``probe`` (None: not measured). WARN when unsupported (energy falls back to the power integral) or
    when it did not change during the probe; FAIL when reading it failed mid-probe."""
    if probe is not None and probe.error:
        return _finding(gpu, "FAIL", "energy_counter", f"reading the counter failed while polling it: {probe.error}",
                        "check `nvidia-smi -q`; the sampler stops on the same error")
    if gpu.device.energy_mj() is None:
        return _finding(gpu, "WARN", "energy_counter",
                        "not supported: energy would be the integral of sampled power, with a larger "
                        "uncertainty (warning 'energy_counter_unsupported')",
                        "measure on a Volta-or-newer GPU with a current driver, where "
                        "nvmlDeviceGetTotalEnergyConsumption works")
    if probe is None:
        return _finding(gpu, "OK", "energy_counter", "supported (update period not measured: --quick)")
    if probe.period_s is None:
        return _finding(gpu, "WARN", "energy_counter",
                        f"supported, but it changed {probe.changes} time(s) in {probe.duration_s:.1f} s: the "
                        "update period is unknown",
                        f"re-run `llem doctor`; if the counter stays still, reset the GPU ({gpu.smi} -r) or "
                        "update the driver")
    return _finding(gpu, "OK", "energy_counter",
                    f"supported, updates every {probe.period_s * 1000:.0f} ms "
                    f"({probe.changes} updates in {probe.duration_s:.1f} s)")


def check_power_instant(gpu: GpuContext) -> Finding:
    """Returns OK with the instant power (W) when NVML_FI_DEV_POWER_INSTANT works, WARN otherwise."""
    watts = gpu.device.instant_power_w()
    if watts is None:
        return _finding(gpu, "WARN", "power_instant",
                        "NVML_FI_DEV_POWER_INSTANT not supported: the power trace falls back to "
                        "nvmlDeviceGetPowerUsage, a ~1 s moving average on Ampere and newer (energy still "
                        "comes from the counter)",
                        "update the NVIDIA driver and nvidia-ml-py (pip install -U nvidia-ml-py)")
    return _finding(gpu, "OK", "power_instant", f"supported ({watts:.1f} W now)")


def check_temperature(gpu: GpuContext) -> Finding:
    """Returns the GPU temperature, °C: WARN at or above HOT_C (a run would reach thermal slowdown sooner)."""
    celsius = gpu.device.temperature_c()
    if celsius is None:
        return _finding(gpu, "OK", "temperature", "not reported by this GPU")
    if celsius >= HOT_C:
        return _finding(gpu, "WARN", "temperature",
                        f"{celsius:.0f} °C before any load of ours: a run would reach thermal slowdown sooner",
                        "let the GPU cool down (check fans, airflow and other load), then re-run `llem doctor`")
    return _finding(gpu, "OK", "temperature", f"{celsius:.0f} °C")


def check_clock_events(gpu: GpuContext) -> Finding:
    """Returns the active clock-event (throttle) reasons; WARN when one slows the GPU (THROTTLE_MASK)."""
    reasons = gpu.reasons
    if gpu.reasons_error:
        return _finding(gpu, "FAIL", "clock_events", f"reading them failed: {gpu.reasons_error}",
                        "run `nvidia-smi -q`; a measurement's sampler would stop on the same NVML error")
    if reasons is None:
        return _finding(gpu, "OK", "clock_events", "not reported by this driver")
    names = ", ".join(decode_clock_events(reasons)) or "none"
    slowing = reasons & THROTTLE_MASK
    if not slowing:
        return _finding(gpu, "OK", "clock_events", f"nothing slows the GPU now (active: {names})")
    fixes = []
    if slowing & (CLOCK_EVENT_SW_THERMAL | CLOCK_EVENT_HW_THERMAL):
        fixes.append("let the GPU cool down (fans, airflow)")
    if slowing & CLOCK_EVENT_SW_POWER_CAP:
        fixes.append("stop the load that drives it to its power limit (see processes) or restore the default limit")
    if slowing & (CLOCK_EVENT_HW_SLOWDOWN | CLOCK_EVENT_HW_POWER_BRAKE):
        fixes.append("check power supply and cooling (`nvidia-smi -q -d PERFORMANCE`)")
    return _finding(gpu, "WARN", "clock_events", f"slowed down now by: {names}",
                    "; ".join(fixes) + "; then re-run `llem doctor`")


_GPU_CHECKS: tuple[tuple[str, Callable[[GpuContext], Finding]], ...] = (
    ("gpu", check_identity),
    ("persistence_mode", check_persistence),
    ("power_limit", check_power_limit),
    ("clocks", check_clocks),
    ("ecc", check_ecc),
    ("mig", check_mig),
)
_GPU_CHECKS_AFTER: tuple[tuple[str, Callable[[GpuContext], Finding]], ...] = (
    ("power_instant", check_power_instant),
    ("temperature", check_temperature),
    ("clock_events", check_clock_events),
)


def _guarded(check: str, device: str | None, fn: Callable[..., Finding], *args: Any) -> Finding:
    """Runs one check; an unexpected error (an NVMLError other than NOT_SUPPORTED) becomes a FAIL line."""
    try:
        return fn(*args)
    except Exception as exc:
        return Finding("FAIL", check, f"reading it failed: {type(exc).__name__}: {exc}",
                       "run `nvidia-smi -q`; a measurement's sampler would stop on the same NVML error", device)


def check_gpu(gpu: GpuContext, probe: CounterProbe | None, own_pid: int | None = None) -> list[Finding]:
    """Returns every per-GPU finding for one GPU, in display order."""
    try:
        gpu.reasons = gpu.device.clock_event_reasons()
    except Exception as exc:  # an NVMLError other than NOT_SUPPORTED: check_clock_events reports it
        gpu.reasons, gpu.reasons_error = None, f"{type(exc).__name__}: {exc}"
    out = [_guarded(name, gpu.label, fn, gpu) for name, fn in _GPU_CHECKS]
    out.append(_guarded("processes", gpu.label, check_processes, gpu, own_pid))
    out.append(_guarded("energy_counter", gpu.label, check_energy_counter, gpu, probe))
    out += [_guarded(name, gpu.label, fn, gpu) for name, fn in _GPU_CHECKS_AFTER]
    return out


# -- host-wide checks ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class NvmlFacts:
    """What the NVML checks learnt that later checks need: ``gpus`` visible to CUDA and the CUDA driver
    version (NVML's int, 13000 = 13.0; None when unknown)."""

    gpus: int = 0
    cuda_driver_version: int | None = None


def _no_nvml(reason: str, driver_paths: Sequence[Path]) -> list[Finding]:
    present = [str(p) for p in driver_paths if p.exists()]
    if present:
        nvml = Finding("FAIL", "nvml",
                       f"NVML could not be loaded: {reason}, although an NVIDIA driver is installed "
                       f"({', '.join(present)})",
                       "make `nvidia-smi` work (install or repair the NVIDIA driver; reboot after a driver "
                       "update) and `pip install nvidia-ml-py`, then re-run `llem doctor`")
    else:
        looked = f" (none of {', '.join(str(p) for p in driver_paths)} exists)" if driver_paths else ""
        nvml = Finding("WARN", "nvml",
                       f"NVML could not be loaded: {reason}; this machine has no NVIDIA driver{looked}, so there "
                       "is no GPU to measure",
                       "nothing to do for `make demo`; to measure real energy, run on a host with an NVIDIA "
                       "GPU and driver (`nvidia-smi` must work)")
    return [nvml, Finding("OK", "simulated_fallback", SIMULATED_FALLBACK)]


def check_nvml(
    nvml: ModuleType | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    counter_poll_s: float | None = DEFAULT_COUNTER_POLL_S,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    driver_paths: Sequence[Path] = DRIVER_PATHS,
    own_pid: int | None = None,
) -> tuple[list[Finding], NvmlFacts]:
    """Returns the NVML findings (library, driver and CUDA driver versions, the GPUs visible to CUDA, then
    every per-GPU check) and the facts later checks need.

    ``nvml``: the NVML module (default ``import pynvml``). ``counter_poll_s``: how long to poll the energy
    counters for their update period, s (None or 0: skip). ``clock``/``sleep``: the probe's time source.
    ``driver_paths``: files whose presence means an NVIDIA driver is installed. ``own_pid``: the process
    not to report as a foreign GPU user (default: this one).
    """
    try:
        module = load_nvml(nvml)
        nvml_acquire(module)
    except NvmlUnavailableError as exc:
        return _no_nvml(exc.reason or str(exc), driver_paths), NvmlFacts()
    findings: list[Finding] = []
    devices: list[NvmlDevice] = []
    try:
        version = _read(module, "nvmlSystemGetNVMLVersion")
        findings.append(Finding("OK", "nvml", f"loaded, NVML {_text(version.value) if version.ok else 'version unknown'}"))
        driver = _read(module, "nvmlSystemGetDriverVersion")
        cuda = _read(module, "nvmlSystemGetCudaDriverVersion")
        cuda_version = int(cuda.value) if cuda.ok else None
        if driver.ok:
            findings.append(Finding("OK", "driver", f"NVIDIA driver {_text(driver.value)}, CUDA driver API "
                                    f"{cuda_version_text(cuda_version) or 'unknown'}"))
        else:
            findings.append(Finding("WARN", "driver", f"driver version not readable ({driver.error or 'not supported'})",
                                    "check that `nvidia-smi` works"))
        facts = NvmlFacts(0, cuda_version)
        count = _read(module, "nvmlDeviceGetCount")
        if not count.ok:
            findings.append(Finding("FAIL", "gpus", f"NVML cannot count the GPUs ({count.error or 'not supported'})",
                                    "check that `nvidia-smi` lists the GPUs"))
            return findings, facts
        cvd = env.get("CUDA_VISIBLE_DEVICES")
        cvd_text = "CUDA_VISIBLE_DEVICES unset" if cvd is None else f"CUDA_VISIBLE_DEVICES={cvd!r}"
        try:
            devices = open_nvml_devices(None, module, env)
        except (ValueError, NvmlUnavailableError, module.NVMLError) as exc:
            findings.append(Finding("FAIL", "gpus", f"cannot open the GPUs visible to CUDA: {exc}",
                                    "set CUDA_VISIBLE_DEVICES to GPU indices or full GPU UUIDs, or unset it"))
            return findings, facts
        if not devices:
            why = (f"NVML sees {count.value} GPU(s) but {cvd_text} hides them all" if int(count.value)
                   else "NVML sees no GPU")
            findings.append(Finding("WARN", "gpus", why,
                                    "unset CUDA_VISIBLE_DEVICES" if int(count.value) else
                                    "check that `nvidia-smi` lists the GPUs"))
            findings.append(Finding("OK", "simulated_fallback", SIMULATED_FALLBACK))
            return findings, facts
        labels = [f"GPU {d.index}" + (f" (NVML {d.nvml_index})" if d.nvml_index != d.index else "") for d in devices]
        findings.append(Finding("OK", "gpus", f"{len(devices)} GPU(s) to measure on, of {count.value} NVML sees "
                                f"({cvd_text})"))
        probes: dict[str, CounterProbe] = {}
        if counter_poll_s:
            readers = {label: d.energy_mj for label, d in zip(labels, devices, strict=True)
                       if _counter_readable(d)}
            probes = probe_counter_periods(readers, counter_poll_s, clock=clock, sleep=sleep)
        for label, d in zip(labels, devices, strict=True):
            findings += check_gpu(GpuContext(module, d, label), probes.get(label), own_pid)
        return findings, NvmlFacts(len(devices), cuda_version)
    finally:
        close_devices(devices)
        nvml_release(module)


def _counter_readable(device: NvmlDevice) -> bool:
    """Returns True when the energy counter reads now (unsupported or failing counters are not probed)."""
    try:
        return device.energy_mj() is not None
    except Exception:
        return False


def check_disk(data_dir: Path | Callable[[], Path], *, disk_usage: Callable[[Path], Any] = shutil.disk_usage) -> Finding:
    """Returns the free space under the data dir, GiB: FAIL below DISK_FAIL_GIB or when not writable,
    WARN below DISK_WARN_GIB. ``data_dir``: the folder, or a function that returns (and creates) it."""
    try:
        path = data_dir() if callable(data_dir) else data_dir
    except OSError as exc:
        return Finding("FAIL", "disk", f"cannot create the data dir: {exc}",
                       "set LLEM_DATA_DIR to a folder you can write to")
    try:
        usage = disk_usage(path)
    except OSError as exc:
        return Finding("FAIL", "disk", f"cannot read the free space under {path}: {exc}",
                       "create the folder or set LLEM_DATA_DIR to an existing, writable one")
    free_gib, total_gib = usage.free / 2**30, usage.total / 2**30
    found = f"{free_gib:.1f} GiB free of {total_gib:.0f} GiB under the data dir {path}"
    fix = "free some space, or set LLEM_DATA_DIR to a folder on a larger disk"
    if not os.access(path, os.W_OK):
        return Finding("FAIL", "disk", f"{found}, which is not writable", "set LLEM_DATA_DIR to a folder you can write to")
    if free_gib < DISK_FAIL_GIB:
        return Finding("FAIL", "disk", f"{found}: too little for run folders and power traces", fix)
    if free_gib < DISK_WARN_GIB:
        return Finding("WARN", "disk", f"{found}: tight for models and run folders", fix)
    return Finding("OK", "disk", found)


def _import_torch() -> ModuleType:
    return importlib.import_module("torch")


def _major_minor(text: str | None) -> tuple[int, int] | None:
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def check_torch(
    import_torch: Callable[[], Any] | None = None,
    *,
    gpus: int = 0,
    cuda_driver_version: int | None = None,
) -> Finding:
    """Returns torch's version, CUDA build and whether it sees CUDA. torch is imported only here (lazily);
    a missing or broken torch is a WARN, never an exception. With ``gpus`` visible to NVML, a torch
    that cannot use CUDA is a FAIL and a torch built for a newer CUDA than ``cuda_driver_version``
    (NVML's int, 13000 = 13.0) a WARN."""
    try:
        torch = (import_torch or _import_torch)()
    except ImportError as exc:
        return Finding("WARN", "torch", f"torch is not installed ({exc}): the transformers engine cannot run",
                       "`make setup` (CPU wheel) or install a CUDA build of torch on a GPU host")
    except Exception as exc:
        return Finding("WARN", "torch", f"torch failed to import: {type(exc).__name__}: {exc}",
                       "reinstall torch (`make setup` on a CPU machine)")
    version = str(getattr(torch, "__version__", "unknown"))
    built = getattr(getattr(torch, "version", None), "cuda", None)
    build = f"CUDA {built} build" if built else "CPU build"
    try:
        available = bool(torch.cuda.is_available())
        seen = int(torch.cuda.device_count()) if available else 0
    except Exception as exc:
        available, seen = False, 0
        build += f"; torch.cuda failed: {type(exc).__name__}: {exc}"
    driver = cuda_version_text(cuda_driver_version)
    if not gpus:
        return Finding("OK", "torch", f"torch {version} ({build}); no GPU to use here, so models run on the CPU")
    if not available:
        return Finding("FAIL", "torch",
                       f"torch {version} ({build}) cannot use the {gpus} GPU(s) NVML sees: torch.cuda.is_available() is False",
                       "install a CUDA build of torch"
                       + (f" for CUDA {driver} or older (what the driver supports)" if driver else "")
                       + ", and check CUDA_VISIBLE_DEVICES")
    found = f"torch {version} ({build}), sees {seen} CUDA device(s)"
    want, have = _major_minor(built), _major_minor(driver)
    if want and have and want > have:
        return Finding("WARN", "torch", f"{found}, but the driver supports CUDA {driver} only",
                       f"update the NVIDIA driver to one for CUDA {built}, or install a torch build for CUDA {driver}")
    if seen != gpus:
        return Finding("WARN", "torch", f"{found}, while NVML shows {gpus} visible GPU(s)",
                       "check CUDA_VISIBLE_DEVICES (NVML and CUDA must see the same GPUs)")
    return Finding("OK", "torch", found)


def run_checks(
    *,
    data_dir: Path | Callable[[], Path],
    nvml: ModuleType | None = None,
    env: Mapping[str, str] = os.environ,
    counter_poll_s: float | None = DEFAULT_COUNTER_POLL_S,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
    import_torch: Callable[[], Any] | None = None,
    driver_paths: Sequence[Path] = DRIVER_PATHS,
    own_pid: int | None = None,
) -> list[Finding]:
    """Returns every finding of ``llem doctor``: NVML and the GPUs (see ``check_nvml``), then the free
    disk space under ``data_dir`` and torch. Arguments as in ``check_nvml``, ``check_disk`` and
    ``check_torch`` (``import_torch``: returns the torch module; default imports it)."""
    findings, facts = check_nvml(nvml, env=env, counter_poll_s=counter_poll_s, clock=clock, sleep=sleep,
                                 driver_paths=driver_paths, own_pid=own_pid)
    findings.append(check_disk(data_dir))
    findings.append(check_torch(import_torch, gpus=facts.gpus, cuda_driver_version=facts.cuda_driver_version))
    return findings
