"""Every SQL query of the README's "Energy per request, per phase, at a latency target; carbon and cost"
section runs on a demo database and returns what its caption says. The database holds scripted serving runs
of one model on the simulated device (its phase model: prefill and decode draw different power) at three
max_num_seqs, plus two FABRICATED real-GPU runs (labelled nvml H100, for the real-only paths), every run
attributed by the worker's attribution code; the factors are recorded with `llem factors import`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from llem_pipeline.commands.factors import main_factors
from llem_pipeline.paths import PROJECT_ROOT
from llem_pipeline.storage import ResultStore, RunRecord
from llem_pipeline_tests.storage.record_factory import make_config
from llem_pipeline_tests.storage.served_runs import served_record

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SIM, H100 = "simulated:Simulated-GPU:x1", "nvml:H100-80GB-HBM3:x1"
FACTORS_CSV = """name,value,unit,source,valid_from,valid_to
grid_gco2_per_kwh,500,gCO2e/kWh,old grid mix (test),2020-01-01,2026-01-01
grid_gco2_per_kwh,380,gCO2e/kWh,grid mix 2026 (test),2026-01-01,
pue,1.2,ratio,site survey (test),,
price_per_kwh,0.25,EUR/kWh,tariff 2026 (test),2026-01-01,
"""


def readme_queries() -> list[tuple[int, str, str]]:
    """Return (number, caption, SQL) of every query in the README's energy section, in order."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Energy per request, per phase, at a latency target; carbon and cost", 1)[1]
    section = section.split("\n## ", 1)[0]
    out = []
    for block in re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL):
        for stmt in block.split(";"):
            head = re.search(r"--\s*(\d+)\.\s*(.*)", stmt)
            if head:
                sql = "\n".join(line for line in stmt.splitlines() if line.strip() and not line.startswith("--"))
                out.append((int(head.group(1)), head.group(2), sql))
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResultStore, list[RunRecord]]:
    tmp = Path(tmp_path_factory.mktemp("energy-readme"))
    db = tmp / "llem.duckdb"
    records = [served_record(make_config(model=MODEL, backend="vllm", batch_size=s, n=80), s, run_id=f"sim-{s}",
                             seed=0) for s in (16, 32, 64)]
    records += [served_record(make_config(model=MODEL, backend="vllm", batch_size=s, n=80), s, run_id=f"h100-{s}",
                              seed=0, device_kind="nvml", gpu_name="NVIDIA H100 80GB HBM3") for s in (8, 64)]
    store = ResultStore(db)
    store.write_runs(records)
    csv_path = tmp / "factors.csv"
    csv_path.write_text(FACTORS_CSV, encoding="utf-8")
    assert main_factors(["import", str(csv_path), "--db", str(db)]) == 0
    return store, records


def _by_run(records: list[RunRecord]) -> dict[str, RunRecord]:
    return {r.run_id: r for r in records}


def check_1(rows: list[dict], records: list[RunRecord], store: ResultStore) -> None:
    assert len(rows) == 5 and {r["hardware_id"] for r in rows} == {SIM, H100}  # never pooled across hardware
    for row in rows:
        run = next(r for r in records if r.hardware_id == row["hardware_id"] and r.result.effective_config["vllm"][
            "max_num_seqs"] == int(row["setting"].split("=")[1].split(",")[0]))
        energy = np.array(run.requests.column("energy_j").to_pylist())
        assert row["n_requests"] == energy.size == 80
        assert row["j_per_request_p50"] == pytest.approx(float(np.percentile(energy, 50)))
        assert row["j_per_request_p99"] == pytest.approx(float(np.percentile(energy, 99)))
        assert row["j_per_request_p50"] < row["j_per_request_p99"]


def check_2(rows: list[dict], records: list[RunRecord], store: ResultStore) -> None:
    assert len(rows) == 5
    for row in rows:
        assert row["prefill_share"] + row["decode_share"] == pytest.approx(1.0)
        assert 0.05 < row["prefill_share"] < 0.6  # mixed prompts of 16-2048 tokens: prefill is a real part
        run = next(r for r in records if r.hardware_id == row["hardware_id"] and r.label.endswith(row["setting"].split(",")[0]))
        assert row["prefill_energy_j"] == pytest.approx(sum(run.requests.column("prefill_energy_j").to_pylist()))
        # every joule of the window is attributed to a request or stated as idle
        assert row["prefill_energy_j"] + row["decode_energy_j"] + run.attribution["idle_energy_j"] == pytest.approx(
            run.result.total_energy_j, rel=1e-6)
        assert all(m.startswith("interval_split:") for m in row["attribution_methods"])


def _choice(records: list[RunRecord], hardware: str, ttft: float | None, tpot: float | None) -> RunRecord | None:
    meeting = [r for r in records if r.hardware_id == hardware
               and (ttft is None or r.result.latency_stats.ttft.p99_ms <= ttft)
               and (tpot is None or r.result.latency_stats.tpot.p99_ms <= tpot)]
    return min(meeting, key=lambda r: r.result.avg_energy_per_token_j) if meeting else None


def check_3(rows: list[dict], records: list[RunRecord], store: ResultStore) -> None:
    assert {(r["target"], r["hardware_id"]) for r in rows} == {(t, h) for t in ("batch", "interactive") for h in (SIM, H100)}
    for row in rows:
        limits = {"batch": (None, None), "interactive": (500.0, 50.0)}[row["target"]]
        want = _choice(records, row["hardware_id"], *limits)
        assert row["n_configs"] == (3 if row["hardware_id"] == SIM else 2)
        if want is None:
            assert row["setting"] is None and row["n_meeting"] == 0
        else:
            assert row["j_per_token"] == pytest.approx(want.result.avg_energy_per_token_j)
            assert want.label.endswith(row["setting"].split(",")[0])
    batch_sim = next(r for r in rows if r["target"] == "batch" and r["hardware_id"] == SIM)
    assert batch_sim["setting"].startswith("max_num_seqs=64")  # no latency limit: the lowest J/token of all
    # the targets are the user's: relax the interactive TTFT limit and the choice follows at query time
    with duckdb.connect(str(store.path)) as con:
        con.execute("UPDATE latency_targets SET ttft_p99_ms = 1000 WHERE target = 'interactive'")
    try:
        relaxed = store.query("SELECT * FROM energy_at_target WHERE target = 'interactive' AND hardware_id = ?",
                              [SIM]).to_pylist()[0]
        want = _choice(records, SIM, 1000.0, 50.0)
        assert want is not None and relaxed["j_per_token"] == pytest.approx(want.result.avg_energy_per_token_j)
    finally:
        with duckdb.connect(str(store.path)) as con:
            con.execute("UPDATE latency_targets SET ttft_p99_ms = 500 WHERE target = 'interactive'")


def check_4(rows: list[dict], records: list[RunRecord], store: ResultStore) -> None:
    assert len(rows) == 5
    runs = _by_run(records)
    for row in rows:
        run = runs[row["run_id"]]
        kwh = run.result.total_energy_j / 80 * 1000 / 3.6e6
        assert row["kwh_per_1k_requests"] == pytest.approx(kwh)
        assert row["pue"] == 1.2 and row["grid_gco2_per_kwh"] == 380  # the 2026 factor: the runs are of 2026-11
        assert row["gco2_per_1k_requests"] == pytest.approx(kwh * 1.2 * 380)
        assert row["cost_per_1k_requests"] == pytest.approx(kwh * 1.2 * 0.25) and row["currency"] == "EUR"
        assert "grid_gco2_per_kwh: grid mix 2026 (test)" in row["factor_sources"]
    values = [r["gco2_per_1k_requests"] for r in rows]
    assert values == sorted(values)


def check_5(rows: list[dict], records: list[RunRecord], store: ResultStore) -> None:
    # the (fabricated) real H100 runs at max_num_seqs 8 and 64 match the published rows; simulated runs never do
    assert [r["run_id"] for r in rows] == ["h100-64", "h100-8"]
    published = {"h100-8": 0.455, "h100-64": 0.119}
    for row in rows:
        run = _by_run(records)[row["run_id"]]
        assert row["published_j_per_token"] == published[row["run_id"]]
        assert row["ratio_to_published"] == pytest.approx(run.result.avg_energy_per_token_j / published[row["run_id"]])
        assert row["source"].startswith("ML.ENERGY")


CHECKS: dict[int, Any] = {1: check_1, 2: check_2, 3: check_3, 4: check_4, 5: check_5}


def test_the_section_has_the_numbered_queries_this_test_checks() -> None:
    assert [n for n, _, _ in readme_queries()] == sorted(CHECKS)


@pytest.mark.parametrize(("number", "caption", "sql"), readme_queries(), ids=lambda v: str(v)[:40])
def test_energy_query_returns_what_its_caption_says(demo, number: int, caption: str, sql: str) -> None:
    store, records = demo
    CHECKS[number](store.query(sql).to_pylist(), records, store)
