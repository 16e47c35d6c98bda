"""Latency statistics on scripted request records; requests.parquet table format."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llem_pipeline.domain.requests import RequestRecord
from llem_pipeline.measure.latency import latency_statistics, percentiles, requests_table, tpot_ms


def rec(i, submit, token_times, in_tok=10, reason="length", proc=0):
    return RequestRecord(request_index=i, input_tokens=in_tok, output_tokens=len(token_times), submit_time_s=submit,
                         first_token_time_s=token_times[0] if token_times else None, token_times_s=token_times,
                         done_time_s=token_times[-1] if token_times else submit + 0.05, finish_reason=reason,
                         process_index=proc)


RECS = [
    rec(0, 10.0, [10.1, 10.12, 10.15, 10.19]),   # ttft 100, gaps 20 30 40, tpot 30, e2e 190
    rec(1, 10.0, [10.3, 10.31]),                 # ttft 300, gap 10, tpot 10, e2e 310
    rec(2, 10.5, [10.7]),                        # ttft 200, no gap, no tpot, e2e 200
    rec(3, 10.5, [], reason="eos"),              # no token: e2e 50 only
]


def test_statistics_known_answers():
    s = latency_statistics(RECS)
    assert s.num_requests == 4 and s.timing_source == "per_token_timestamps"
    assert s.ttft.count == 3 and s.ttft.mean_ms == pytest.approx(200) and s.ttft.p50_ms == pytest.approx(200)
    assert (s.ttft.min_ms, s.ttft.max_ms) == pytest.approx((100, 300))
    assert s.ttft.p90_ms == pytest.approx(280)      # linear: 200 + 0.8*(300-200)
    assert s.itl.count == 4 and s.itl.mean_ms == pytest.approx(25)
    assert s.itl.p50_ms == pytest.approx(25) and s.itl.p99_ms == pytest.approx(np.percentile([10, 20, 30, 40], 99))
    assert s.tpot.count == 2 and s.tpot.mean_ms == pytest.approx(20)
    assert s.e2e.count == 4 and s.e2e.mean_ms == pytest.approx((190 + 310 + 200 + 50) / 4)
    assert s.e2e.p95_ms == pytest.approx(np.percentile([190, 310, 200, 50], 95))


def test_edge_cases():
    assert latency_statistics([]) is None
    only_empty = latency_statistics([RECS[3]])
    assert only_empty.ttft is None and only_empty.itl is None and only_empty.tpot is None
    assert only_empty.e2e.count == 1
    assert percentiles([]) is None and percentiles([np.nan]) is None
    p = percentiles([5.0])
    assert (p.p50_ms, p.p99_ms, p.min_ms, p.max_ms) == (5.0, 5.0, 5.0, 5.0)
    assert tpot_ms(RECS[2]) is None
    assert latency_statistics(RECS, timing_source="engine_metrics").timing_source == "engine_metrics"


def test_pooling_is_over_raw_values_not_percentiles():
    a = [rec(i, 0.0, [0.1]) for i in range(9)]
    b = [rec(9, 0.0, [1.0])]
    pooled = latency_statistics(a + b)
    assert pooled.ttft.mean_ms == pytest.approx((9 * 100 + 1000) / 10)   # not the mean of process means (550)


def test_requests_table_schema_and_relative_times(tmp_path):
    t = requests_table(RECS, t0_mono_s=10.0)
    assert t.schema.names == ["process_index", "request_index", "input_tokens", "output_tokens", "submit_s",
                              "first_token_s", "done_s", "ttft_ms", "e2e_ms", "tpot_ms", "finish_reason",
                              "token_times_s"]
    assert t.schema.field("process_index").type == pa.int16()
    assert t.schema.field("request_index").type == pa.int32()
    assert t.schema.field("token_times_s").type == pa.list_(pa.float64())
    rows = t.to_pylist()
    assert rows[0]["submit_s"] == 0.0 and rows[0]["first_token_s"] == pytest.approx(0.1)
    assert rows[0]["token_times_s"] == pytest.approx([0.1, 0.12, 0.15, 0.19])
    assert rows[0]["tpot_ms"] == pytest.approx(30) and rows[0]["ttft_ms"] == pytest.approx(100)
    assert rows[3]["first_token_s"] is None and rows[3]["ttft_ms"] is None and rows[3]["tpot_ms"] is None
    assert rows[3]["finish_reason"] == "eos" and rows[3]["e2e_ms"] == pytest.approx(50)
    pq.write_table(t, tmp_path / "requests.parquet")
    assert pq.read_table(tmp_path / "requests.parquet").equals(t)
    assert requests_table([], 0.0).num_rows == 0
