"""The worker command end to end on the tiny model with the activity-driven simulated device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from llem_pipeline.domain.experiment import ExperimentResult, RawProcessResult
from llem_pipeline.domain.warnings import warning_code

pytestmark = pytest.mark.slow

TINY = {
    "model": "llem:tiny", "n": 8, "max_input_tokens": 48, "max_output_tokens": 12, "precision": "fp32",
    "warmup": {"n_warmup": 1, "thermal_floor_seconds": 0}, "baseline": {"duration_seconds": 0.5},
    "energy": {"sample_interval_ms": 50}, "pytorch": {"batch_size": 4},
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("llem-data")


def run_worker(data_dir: Path, tmp: Path, config: dict, *extra: str, devices: str = "simulated",
               env_extra: dict | None = None) -> subprocess.CompletedProcess:
    cfg = tmp / "cfg.json"
    cfg.write_text(json.dumps(config))
    env = {**os.environ, "LLEM_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "llem_pipeline.measure", "--config", str(cfg), "--devices", devices,
         "--out", str(tmp / "run"), "--quiet", *extra],
        capture_output=True, text=True, env=env, timeout=600,
    )


def raw_sample_count(run: Path) -> int:
    """Return the in-window sample count the process result reports."""
    return RawProcessResult.model_validate_json((run / "process_0.json").read_text()).sample_count


def test_worker_writes_a_complete_labelled_run_folder(data_dir, tmp_path):
    proc = run_worker(data_dir, tmp_path, TINY, "--timeout", "300", "--run-id", "r1",
                      "--baseline-cache", str(data_dir / "baseline_cache.json"))
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == sorted([
        "attribution.json", "baseline.json", "config.json", "environment.json", "manifest.json", "process_0.json",
        "requests.parquet", "result.json", "timeseries.parquet"])
    result = ExperimentResult.model_validate_json((run / "result.json").read_text())
    assert result.schema_version == "2.0"
    assert result.total_tokens == 8 * 12  # fixed output length: exactly max_output_tokens per request
    assert result.input_tokens and result.input_tokens > 0
    assert result.avg_tokens_per_second == pytest.approx(result.total_tokens / result.total_inference_time_sec)
    assert result.avg_energy_per_token_j == pytest.approx(result.total_energy_j / result.total_tokens)
    # simulated everywhere: device_kind, warnings, reproducibility notes, environment
    assert result.device_kind == "simulated" and result.energy_method == "simulated"
    assert "simulated_device" in {warning_code(w) for w in result.measurement_warnings}
    assert "SIMULATED" in result.reproducibility_notes
    assert result.environment_snapshot.device_kind == "simulated"
    assert result.baseline_power_w and result.baseline_power_w > 0
    assert result.energy_adjusted_j is not None and 0 <= result.energy_adjusted_j <= result.total_energy_j
    assert result.warmup_result.iterations_completed == 1
    assert result.latency_stats.num_requests == 8 and result.latency_stats.itl.count == 8 * 11
    assert result.total_flops > 0 and result.extended_metrics.flops.n_params_nonembedding > 0
    assert result.aggregation.num_processes == 1 and result.aggregation.temporal_overlap_verified
    ts = pq.read_table(run / "timeseries.parquet")
    assert {"process_index", "device_uuid", "t_rel_s", "utc", "power_w", "energy_mj", "phase"} <= set(ts.column_names)
    phases = ts.column("phase").to_pylist()
    assert "warmup" in phases and set(phases) <= {"warmup", "ramp_up", "window", "drain", "idle"}
    # "window" labels exactly the samples the result counted (a short window under load may hold none:
    # then the result says so with too_few_samples instead of the trace claiming otherwise)
    assert phases.count("window") == raw_sample_count(run)
    if phases.count("window") == 0:
        assert "too_few_samples" in {warning_code(w) for w in result.measurement_warnings}
    req = pq.read_table(run / "requests.parquet")
    assert req.num_rows == 8 and set(req.column("output_tokens").to_pylist()) == {12}
    raw = RawProcessResult.model_validate_json((run / "process_0.json").read_text())
    assert raw.energy_j == pytest.approx(result.total_energy_j)
    assert json.loads((run / "baseline.json").read_text())["device_kind"] == "simulated"
    # energy per request and per phase, computed once by the worker: every joule of the window is attributed
    # to a request or stated as idle, each request's energy is its prefill plus its decode part
    att = json.loads((run / "attribution.json").read_text())
    energy = req.column("energy_j").to_pylist()
    assert all(e > 0 for e in energy)
    assert sum(energy) + att["idle_energy_j"] == pytest.approx(result.total_energy_j, rel=1e-6)
    for e, p, d in zip(energy, req.column("prefill_energy_j").to_pylist(), req.column("decode_energy_j").to_pylist(),
                       strict=True):
        assert e == pytest.approx(p + d) and p > 0 and d > 0
    assert att["weights"]["method"] in {"regression", "default"} and att["method"].startswith("interval_split:")
    assert att["request_energy"]["p50_j"] <= att["request_energy"]["p99_j"]
    assert all(b is not None and 0 < b <= e for b, e in zip(req.column("baseline_energy_j").to_pylist(), energy,
                                                            strict=True))
    assert not list(tmp_path.glob(".run.tmp-*"))


def test_data_parallel_processes_are_aggregated(data_dir, tmp_path):
    config = {**TINY, "n": 4, "pytorch": {"batch_size": 2, "num_processes": 2}, "baseline": {"enabled": False}}
    proc = run_worker(data_dir, tmp_path, config, "--timeout", "300")
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "run"
    result = ExperimentResult.model_validate_json((run / "result.json").read_text())
    assert len(result.process_results) == 2
    assert result.multi_gpu is not None and result.multi_gpu.num_gpus == 2
    assert len(result.energy_per_device_j) == 2
    assert result.total_energy_j == pytest.approx(sum(result.energy_per_device_j))
    assert result.total_tokens == 2 * 4 * 12
    assert result.aggregation.gpu_attribution_verified
    uuids = [r.device_uuids[0] for r in result.process_results]
    assert len(set(uuids)) == 2
    assert set(pq.read_table(run / "requests.parquet").column("process_index").to_pylist()) == {0, 1}


def test_timeout_kills_the_engine_and_leaves_no_folder(data_dir, tmp_path):
    slow = {**TINY, "n": 400, "max_output_tokens": 200, "max_input_tokens": 256, "baseline": {"enabled": False}}
    proc = run_worker(data_dir, tmp_path, slow, "--timeout", "8")
    assert proc.returncode == 124, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("llem-measure: error: engine process(es) ran past --timeout")
    assert not (tmp_path / "run").exists()
    assert not list(tmp_path.glob(".run.tmp-*"))


@pytest.mark.parametrize(
    ("config", "devices", "fragment"),
    [
        ({**TINY, "pytorch": {"batch_size": 0}}, "simulated", "pytorch.batch_size = 0"),
        ({**TINY, "model": str(Path("/nonexistent/model"))}, "simulated", "directory not found"),
        (TINY, "auto", "NVML"),
        ({**TINY, "backend": "tensorrt", "pytorch": None}, "simulated", "TensorRT-LLM is not available"),
    ],
)
def test_failures_are_one_clear_line_and_write_nothing(data_dir, tmp_path, config, devices, fragment):
    proc = run_worker(data_dir, tmp_path, config, devices=devices)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("llem-measure: error: ") and fragment in last, proc.stderr
    assert not (tmp_path / "run").exists()
