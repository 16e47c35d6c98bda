"""A run's energy attribution from its run-folder tables: what the worker computes once, before aggregating.

``attribute_tables`` reads the merged ``timeseries.parquet`` and ``requests.parquet`` tables (times in s
from each process's inference start), the processes' RawProcessResults (their window and window energy)
and the baseline (idle W per device UUID), and returns the requests table with the energy columns
(``ENERGY_COLUMNS``, J) and the Attribution (measure/attribution.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from llem_pipeline.domain.experiment import RawProcessResult
from llem_pipeline.measure.attribution import Attribution, DeviceTrace, RequestTimes, attribute

ENERGY_COLUMNS: tuple[str, ...] = ("energy_j", "prefill_energy_j", "decode_energy_j", "baseline_energy_j",
                                   "energy_uncertainty_j")


def request_times(requests: pa.Table) -> list[RequestTimes]:
    """Return the rows of a requests.parquet table as RequestTimes (s from inference start)."""
    cols = {c: requests.column(c).to_pylist() for c in ("process_index", "request_index", "input_tokens",
                                                          "output_tokens", "submit_s", "first_token_s", "token_times_s")}
    return [RequestTimes(int(p), int(i), int(n_in), int(n_out), float(s), f, list(t or []))
            for p, i, n_in, n_out, s, f, t in zip(*cols.values(), strict=True)]


def device_traces(samples: pa.Table, baseline_w: Mapping[str, float] | None = None) -> list[DeviceTrace]:
    """Return one DeviceTrace per (process, device) of a timeseries.parquet table (t_rel_s s, power_w W), with
    the device's idle power from ``baseline_w`` (W by device UUID) when known."""
    if samples.num_rows == 0:
        return []
    proc = np.asarray(samples.column("process_index").to_numpy(zero_copy_only=False), dtype=np.int64)
    dev = np.asarray(samples.column("device_index").to_numpy(zero_copy_only=False), dtype=np.int64)
    t = np.asarray(samples.column("t_rel_s").to_numpy(zero_copy_only=False), dtype=np.float64)
    p = np.asarray(samples.column("power_w").to_numpy(zero_copy_only=False), dtype=np.float64)
    uuids = samples.column("device_uuid").to_pylist()
    out = []
    for k, d in sorted({(int(a), int(b)) for a, b in zip(proc, dev, strict=True)}):
        mask = (proc == k) & (dev == d)
        uuid = uuids[int(np.flatnonzero(mask)[0])]
        base = (baseline_w or {}).get(uuid)
        out.append(DeviceTrace(k, d, t[mask], p[mask], baseline_w=float(base) if base is not None else None))
    return out


def attribute_tables(samples: pa.Table, requests: pa.Table, processes: Sequence[RawProcessResult],
                     baseline: Mapping[str, Any] | None = None) -> tuple[pa.Table, Attribution]:
    """Return (``requests`` with ENERGY_COLUMNS appended, J; the run's Attribution).

    A process measured over its whole run ('total' methodology) has its intervals scaled to its window
    energy (``energy_j``, the energy counter's where it has one); a steady-state process is attributed over
    all of its requests from the power trace alone (its window energy covers part of them), and says so.
    ``baseline``: baseline.json (devices [{uuid, power_w}]) or None.
    """
    times = request_times(requests)
    base = {d["uuid"]: float(d["power_w"]) for d in (baseline or {}).get("devices", [])} if baseline else None
    traces = device_traces(samples, base)
    window_j: dict[int, float] = {}
    spans: dict[int, tuple[float, float]] = {}
    notes: list[str] = []
    for raw in processes:
        k = raw.process_index
        if raw.measurement_methodology == "total":
            spans[k] = (0.0, float(raw.inference_time_sec))
            window_j[k] = float(raw.energy_j)
        else:
            notes.append(f"attribution_trace_only: process {k} measured a {raw.measurement_methodology} window; its "
                         "requests are attributed over their whole run from the power trace (not scaled to the counter)")
    got = attribute(times, traces, window_energy_j=window_j or None, spans=spans or None)
    if notes:
        got.warnings.extend(notes)
    columns = {
        "energy_j": [r.energy_j for r in got.requests],
        "prefill_energy_j": [r.prefill_energy_j for r in got.requests],
        "decode_energy_j": [r.decode_energy_j for r in got.requests],
        "baseline_energy_j": [r.baseline_energy_j for r in got.requests],
        "energy_uncertainty_j": [r.uncertainty_j for r in got.requests],
    }
    table = requests.drop_columns([c for c in ENERGY_COLUMNS if c in requests.column_names])
    for name in ENERGY_COLUMNS:
        table = table.append_column(name, pa.array(columns[name], pa.float64()))
    return table, got
