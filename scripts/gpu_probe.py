"""Probe what NVML offers on this machine's GPUs (step 1 of scripts/gpu_check.sh).

Per visible GPU (CUDA_VISIBLE_DEVICES honoured): name, UUID, driver/NVML/CUDA versions, the energy
counter's update period (tight polling of nvmlDeviceGetTotalEnergyConsumption: the median time between
value changes), the energy step size, whether the instant-power and average-power fields
(NVML_FI_DEV_POWER_INSTANT / _AVERAGE) are supported and what they read, nvmlDeviceGetPowerUsage,
the clock-event (throttle) reasons now, enforced/default power limits and persistence mode.

    python scripts/gpu_probe.py [--fake] [--poll-s 2.0] [--json OUT.json]

``--fake`` probes a simulated GPU through the project's fake pynvml (the dry run on a CPU machine);
the output says so. Exit 0 when at least one GPU was probed, 2 when NVML is unavailable.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

# (bit, name) of NVML clock-event reasons (nvml.h nvmlClocksEventReason*).
CLOCK_EVENT_BITS = (
    (0x1, "gpu_idle"), (0x2, "applications_clocks_setting"), (0x4, "sw_power_cap"), (0x8, "hw_slowdown"),
    (0x10, "sync_boost"), (0x20, "sw_thermal_slowdown"), (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"), (0x100, "display_clock_setting"),
)


def decode_reasons(mask: int | None) -> list[str]:
    """Return the names of the clock-event reason bits set in ``mask`` (unknown bits as hex); [] for None/0."""
    if not mask:
        return []
    names = [name for bit, name in CLOCK_EVENT_BITS if mask & bit]
    rest = mask & ~sum(bit for bit, _ in CLOCK_EVENT_BITS)
    return names + ([hex(rest)] if rest else [])


def poll_energy_counter(read_mj, poll_s: float, clock=time.perf_counter) -> dict[str, Any]:
    """Poll ``read_mj()`` (cumulative energy, mJ) as fast as possible for ``poll_s`` s.

    Returns {'polls', 'poll_rate_hz', 'changes', 'period_ms' (median time between value changes, ms;
    None with < 2 changes), 'period_p10_ms', 'period_p90_ms', 'step_mj_median' (median value step, mJ),
    'power_from_counter_w' (energy / time between first and last change, W)}.
    """
    t_end = clock() + poll_s
    last = read_mj()
    polls = 1
    edges: list[tuple[float, int]] = []
    t_prev = clock()
    while True:
        value = read_mj()
        now = clock()
        polls += 1
        if value != last:
            edges.append((0.5 * (t_prev + now), value - last))
            last = value
        t_prev = now
        if now >= t_end:
            break
    out: dict[str, Any] = {"polls": polls, "poll_rate_hz": polls / poll_s, "changes": len(edges),
                           "period_ms": None, "period_p10_ms": None, "period_p90_ms": None,
                           "step_mj_median": None, "power_from_counter_w": None}
    if len(edges) >= 2:
        gaps = sorted(1e3 * (b[0] - a[0]) for a, b in itertools.pairwise(edges))
        out["period_ms"] = statistics.median(gaps)
        out["period_p10_ms"] = gaps[int(0.1 * (len(gaps) - 1))]
        out["period_p90_ms"] = gaps[int(0.9 * (len(gaps) - 1))]
        out["step_mj_median"] = statistics.median(d for _, d in edges)
        span = edges[-1][0] - edges[0][0]
        if span > 0:
            out["power_from_counter_w"] = sum(d for _, d in edges[1:]) / 1e3 / span
    return out


def _call(nvml: ModuleType, fn: str, *args: Any) -> tuple[Any, str | None]:
    """Call nvml.<fn>(*args); return (value, None) or (None, 'not supported' / the error text)."""
    f = getattr(nvml, fn, None)
    if f is None:
        return None, "function not in this nvidia-ml-py"
    try:
        return f(*args), None
    except nvml.NVMLError as exc:  # type: ignore[attr-defined]
        return None, str(exc)


def _field(nvml: ModuleType, handle: Any, name: str) -> dict[str, Any]:
    """Read one power field (NVML_FI_DEV_POWER_*): {'supported', 'value_w' (W), 'error'}."""
    fid = getattr(nvml, name, None)
    if fid is None:
        return {"supported": False, "value_w": None, "error": f"{name} not in this nvidia-ml-py"}
    values, err = _call(nvml, "nvmlDeviceGetFieldValues", handle, [fid])
    if err is not None:
        return {"supported": False, "value_w": None, "error": err}
    v = values[0]
    if getattr(v, "nvmlReturn", 0) != 0:
        return {"supported": False, "value_w": None, "error": f"nvmlReturn={v.nvmlReturn}"}
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}.get(
        int(getattr(v, "valueType", 1)), "uiVal")
    number = getattr(v.value, member)
    return {"supported": True, "value_w": float(number) / 1000.0, "error": None}


def probe_device(nvml: ModuleType, index: int, nvml_index: int, poll_s: float) -> dict[str, Any]:
    """Probe one GPU (NVML index ``nvml_index``, CUDA index ``index``); returns the JSON-able facts (W, ms, mJ)."""
    from llem_pipeline.measure.devices.nvml import NvmlDevice

    handle = nvml.nvmlDeviceGetHandleByIndex(nvml_index)
    dev = NvmlDevice(nvml, handle, index=index, nvml_index=nvml_index)
    try:
        facts: dict[str, Any] = {"index": index, "nvml_index": nvml_index, "uuid": dev.uuid, "name": dev.name}
        energy0 = dev.energy_mj()
        facts["energy_counter_supported"] = energy0 is not None
        facts["energy_counter"] = (poll_energy_counter(dev.energy_mj, poll_s) if energy0 is not None else None)
        facts["power_instant_field"] = _field(nvml, handle, "NVML_FI_DEV_POWER_INSTANT")
        facts["power_average_field"] = _field(nvml, handle, "NVML_FI_DEV_POWER_AVERAGE")
        usage, err = _call(nvml, "nvmlDeviceGetPowerUsage", handle)
        facts["power_usage_w"] = None if usage is None else usage / 1000.0
        facts["power_usage_error"] = err
        reasons = dev.clock_event_reasons()
        facts["clock_event_reasons"] = reasons
        facts["clock_event_reasons_decoded"] = decode_reasons(reasons)
        facts["clock_event_api"] = ("nvmlDeviceGetCurrentClocksEventReasons"
                                    if hasattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons")
                                    else "nvmlDeviceGetCurrentClocksThrottleReasons")
        facts["power_limit_w"] = dev.power_limit_w()
        default, _ = _call(nvml, "nvmlDeviceGetPowerManagementDefaultLimit", handle)
        facts["power_limit_default_w"] = None if default is None else default / 1000.0
        facts["persistence_mode"] = dev.persistence_mode()
        facts["temperature_c"] = dev.temperature_c()
        facts["sm_clock_mhz"] = dev.sm_clock_mhz()
        facts["memory_total_mb"] = dev.memory_total_mb()
        facts["memory_used_mb"] = dev.mem_used_mb()
        return facts
    finally:
        dev.close()


def probe(nvml: ModuleType, poll_s: float = 2.0, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Probe every GPU visible to CUDA; returns {'probed_at', 'driver_version', 'nvml_version', 'cuda_driver_version',
    'devices': [probe_device(...)]} (units: W, ms, mJ, MHz, MB)."""
    import os

    from llem_pipeline.measure.devices.nvml import nvml_acquire, nvml_release, visible_nvml_indices

    nvml_acquire(nvml)
    try:
        out: dict[str, Any] = {"probed_at": datetime.now(UTC).isoformat(), "pynvml": getattr(nvml, "__file__", None)}
        for key, fn in (("driver_version", "nvmlSystemGetDriverVersion"), ("nvml_version", "nvmlSystemGetNVMLVersion"),
                        ("cuda_driver_version", "nvmlSystemGetCudaDriverVersion")):
            value, _ = _call(nvml, fn)
            out[key] = value.decode() if isinstance(value, bytes) else value
        indices = visible_nvml_indices(nvml, os.environ if env is None else env)
        out["devices"] = [probe_device(nvml, i, n, poll_s) for i, n in enumerate(indices)]
        return out
    finally:
        nvml_release(nvml)


def fake_nvml() -> ModuleType:
    """Return the project's fake pynvml over one simulated GPU (100 ms counter, 75 W idle), for the dry run."""
    from llem_pipeline.measure.devices.fake_pynvml import FakePynvml
    from llem_pipeline.measure.devices.simulated import SimulatedDevice

    return FakePynvml([SimulatedDevice(75.0, name="Simulated GPU (dry run)", counter_period_s=0.1)])


def format_table(result: dict[str, Any]) -> str:
    """Return a human-readable summary of ``probe()``'s result (one block per GPU)."""
    lines = [f"NVML probe: driver {result.get('driver_version')}, NVML {result.get('nvml_version')}, "
             f"CUDA driver {result.get('cuda_driver_version')}"]
    for d in result["devices"]:
        ec = d["energy_counter"] or {}
        period = ec.get("period_ms")
        lines += [
            f"GPU {d['index']} (NVML {d['nvml_index']}): {d['name']} {d['uuid']}",
            f"  energy counter: {'supported' if d['energy_counter_supported'] else 'NOT supported'}"
            + (f", update period {period:.1f} ms (p10 {ec['period_p10_ms']:.1f}, p90 {ec['period_p90_ms']:.1f}), "
               f"{ec['changes']} changes in {ec['polls']} polls ({ec['poll_rate_hz']:.0f} Hz), "
               f"median step {ec['step_mj_median']} mJ, counter power {ec['power_from_counter_w']:.1f} W"
               if period is not None else f", {ec.get('changes', 0)} changes seen"),
            f"  instant power field: {_fmt_field(d['power_instant_field'])}; average field: "
            f"{_fmt_field(d['power_average_field'])}; nvmlDeviceGetPowerUsage: {d['power_usage_w']} W",
            f"  clock-event reasons: {d['clock_event_reasons']} {d['clock_event_reasons_decoded']} ({d['clock_event_api']})",
            f"  power limit {d['power_limit_w']} W (default {d['power_limit_default_w']} W), "
            f"persistence mode {d['persistence_mode']}, {d['temperature_c']} °C, SM {d['sm_clock_mhz']} MHz, "
            f"memory {d['memory_used_mb']} / {d['memory_total_mb']} MB",
        ]
    return "\n".join(lines)


def _fmt_field(f: dict[str, Any]) -> str:
    return f"{f['value_w']:.1f} W" if f["supported"] else f"not supported ({f['error']})"


def main(argv: list[str] | None = None) -> int:
    """Probe, print the summary, write the JSON; returns 0, or 2 when NVML is unavailable or sees no GPU."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fake", action="store_true", help="probe a simulated GPU through the fake pynvml (dry run)")
    ap.add_argument("--poll-s", type=float, default=2.0, help="tight-polling time per GPU, s")
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    args = ap.parse_args(argv)
    if args.fake:
        nvml = fake_nvml()
    else:
        from llem_pipeline.measure.devices.nvml import NvmlUnavailableError, load_nvml

        try:
            nvml = load_nvml()
        except NvmlUnavailableError as err:
            print(f"gpu_probe: error: {err}", file=sys.stderr)
            return 2
    try:
        result = probe(nvml, args.poll_s)
    except Exception as err:  # NVML init failures surface as NVMLError subclasses
        print(f"gpu_probe: error: NVML probe failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    result["fake"] = bool(args.fake)
    if not result["devices"]:
        print("gpu_probe: error: NVML sees no GPU (check CUDA_VISIBLE_DEVICES and the driver)", file=sys.stderr)
        return 2
    print(("[SIMULATED via fake pynvml] " if args.fake else "") + format_table(result), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
