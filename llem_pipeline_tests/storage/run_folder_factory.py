"""Write fabricated run folders in the worker's format, for tests of the layers that read run folders.

The folder holds what a worker writes (config.json, environment.json, baseline.json, process_<k>.json,
result.json, timeseries.parquet, requests.parquet); the contents come from ``record_factory.make_record``
(FABRICATED numbers, never measurements). The storage layer itself never reads run folders: its tests
build RunRecords directly.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq

from llem_pipeline.domain import ExperimentConfig, compute_measurement_config_hash
from llem_pipeline_tests.storage.record_factory import (  # re-exported for the tests that import them from here
    make_config,
    make_environment,
    make_record,
    make_result,
    requests_table,
    timeseries_table,
)

__all__ = ["make_config", "make_environment", "make_result", "requests_table", "timeseries_table", "write_run_folder"]


def write_run_folder(
    data_dir: Path,
    *,
    run_date: date | str = "2026-11-01",
    config: ExperimentConfig | None = None,
    run_id: str = "run-0001",
    n_samples: int = 100,
    n_requests: int = 8,
    n_processes: int = 1,
    with_baseline: bool = True,
    with_environment: bool = True,
    seed: int = 0,
    power_w: float = 200.0,
    device_kind: str = "simulated",
) -> Path:
    """Write a complete fabricated run folder under ``data_dir/runs/<date>/<hash>/<run_id>``; return its path.

    Written into ``.<run_id>.tmp-<pid>`` and renamed into place, like the worker does.
    """
    config = config or make_config()
    config_hash = compute_measurement_config_hash(config)
    day = run_date if isinstance(run_date, str) else run_date.isoformat()
    record = make_record(config, run_date=day, run_id=run_id, n_samples=n_samples, n_requests=n_requests,
                         n_processes=n_processes, with_baseline=with_baseline, with_environment=with_environment,
                         seed=seed, power_w=power_w, device_kind=device_kind)
    final = Path(data_dir) / "runs" / day / config_hash / run_id
    tmp = final.parent / f".{run_id}.tmp-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=False)
    (tmp / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    if record.environment is not None:
        (tmp / "environment.json").write_text(record.environment.model_dump_json(indent=2))
    if record.baseline is not None:
        (tmp / "baseline.json").write_text(json.dumps(record.baseline, indent=2))
    for proc in record.processes:
        (tmp / f"process_{proc.process_index}.json").write_text(proc.model_dump_json(indent=2))
    (tmp / "result.json").write_text(record.result.model_dump_json(indent=2))
    pq.write_table(record.power_samples, tmp / "timeseries.parquet")
    pq.write_table(record.requests, tmp / "requests.parquet")
    if final.exists():  # replace an older folder of the same run, as the worker does
        old = final.parent / f".{run_id}.old-{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old)
    os.replace(tmp, final)
    return final
