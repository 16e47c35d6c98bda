"""Latency statistics (docs/methodology.md §3.9) and the ``requests.parquet`` table (docs/run-folder.md).

Definitions, per measured request (warmup excluded), all in ms:
- TTFT = first token − submit (requests that produced a token);
- ITL  = every gap between consecutive output-token timestamps, pooled over all requests (no trimming);
- TPOT = (done − first token) / (output tokens − 1), one value per request with ≥ 2 output tokens;
- E2E  = done − submit.
Percentiles are numpy's linear interpolation; pooling across processes is done on the raw values,
never by averaging percentiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from llem_pipeline.domain.metrics import LatencyStatistics, Percentiles
from llem_pipeline.domain.requests import RequestRecord

if TYPE_CHECKING:
    import pyarrow as pa


def percentiles(values_ms: Sequence[float] | np.ndarray) -> Percentiles | None:
    """Return count, mean, p50/p90/p95/p99, min, max of ``values_ms`` (ms); None when empty."""
    v = np.asarray(values_ms, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    p50, p90, p95, p99 = np.percentile(v, [50, 90, 95, 99])
    return Percentiles(count=int(v.size), mean_ms=float(v.mean()), p50_ms=float(p50), p90_ms=float(p90),
                       p95_ms=float(p95), p99_ms=float(p99), min_ms=float(v.min()), max_ms=float(v.max()))


def tpot_ms(record: RequestRecord) -> float | None:
    """Return (done − first token) / (output tokens − 1) in ms; None with < 2 tokens or no first token."""
    if record.first_token_time_s is None or record.output_tokens < 2:
        return None
    return (record.done_time_s - record.first_token_time_s) / (record.output_tokens - 1) * 1000.0


def latency_statistics(
    records: Sequence[RequestRecord], timing_source: str = "per_token_timestamps"
) -> LatencyStatistics | None:
    """Return TTFT / ITL / TPOT / E2E statistics (ms) pooled over ``records``; None for no records.

    ``timing_source``: 'per_token_timestamps' (streamer / logits hook) or 'engine_metrics' (vLLM).
    """
    if not records:
        return None
    ttft = [r.ttft_s * 1000.0 for r in records if r.ttft_s is not None]
    itl = np.concatenate([np.diff(np.asarray(r.token_times_s, dtype=np.float64)) * 1000.0
                          for r in records if len(r.token_times_s) >= 2] or [np.empty(0)])
    tpot = [x for x in (tpot_ms(r) for r in records) if x is not None]
    e2e = [r.e2e_s * 1000.0 for r in records]
    return LatencyStatistics(
        num_requests=len(records),
        ttft=percentiles(ttft),
        itl=percentiles(itl),
        tpot=percentiles(tpot),
        e2e=percentiles(e2e),
        timing_source=timing_source,
    )


def requests_schema() -> pa.Schema:
    """Return the Arrow schema of ``requests.parquet`` (docs/run-folder.md)."""
    import pyarrow as pa

    return pa.schema([
        ("process_index", pa.int16()),
        ("request_index", pa.int32()),
        ("input_tokens", pa.int32()),
        ("output_tokens", pa.int32()),
        ("submit_s", pa.float64()),
        ("first_token_s", pa.float64()),
        ("done_s", pa.float64()),
        ("ttft_ms", pa.float64()),
        ("e2e_ms", pa.float64()),
        ("tpot_ms", pa.float64()),
        ("finish_reason", pa.string()),
        ("token_times_s", pa.list_(pa.float64())),
    ])


def requests_table(records: Sequence[RequestRecord], t0_mono_s: float) -> pa.Table:
    """Return one row per request in the ``requests.parquet`` format; times in s from ``t0_mono_s``.

    ``t0_mono_s``: inference start on the records' monotonic clock, s. ``first_token_s``, ``ttft_ms``
    and ``tpot_ms`` are null where undefined; ms columns are ms, ``*_s`` columns s from inference start.
    """
    import pyarrow as pa

    cols: dict[str, list] = {name: [] for name in requests_schema().names}
    for r in records:
        cols["process_index"].append(r.process_index)
        cols["request_index"].append(r.request_index)
        cols["input_tokens"].append(r.input_tokens)
        cols["output_tokens"].append(r.output_tokens)
        cols["submit_s"].append(r.submit_time_s - t0_mono_s)
        cols["first_token_s"].append(None if r.first_token_time_s is None else r.first_token_time_s - t0_mono_s)
        cols["done_s"].append(r.done_time_s - t0_mono_s)
        cols["ttft_ms"].append(None if r.ttft_s is None else r.ttft_s * 1000.0)
        cols["e2e_ms"].append(r.e2e_s * 1000.0)
        cols["tpot_ms"].append(tpot_ms(r))
        cols["finish_reason"].append(r.finish_reason)
        cols["token_times_s"].append([t - t0_mono_s for t in r.token_times_s])
    return pa.table(cols, schema=requests_schema())
