"""CPU steps: load a GPU run folder into DuckDB, one transaction per asset, and check the result.

experiment_results writes experiment_results + process_results + environment_snapshots + baselines
(the run's JSON files) in one transaction; power_timeseries writes power_samples; request_latencies
writes requests. Rows are keyed by the measurement run's id, so re-materialising replaces them.
"""


from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from llem_pipeline.defs.charts import embed_png, power_trace_png, save_png
from llem_pipeline.defs.constants import OWNERS, RESULTS_CODE_VERSION, RESULTS_GROUP
from llem_pipeline.defs.experiments.partitions import measurement_partitions
from llem_pipeline.defs.experiments.registry import scan_studies
from llem_pipeline.defs.measurements.io_manager import BASELINE, ENVIRONMENT, RAW
from llem_pipeline.defs.measurements.run_folder import RunFolder
from llem_pipeline.defs.results.derive import derive_result, previous_j_per_token
from llem_pipeline.defs.results.latency import latency_metadata
from llem_pipeline.defs.results.power import power_metadata, trace_series
from llem_pipeline.defs.results.quality import CHECK_DESCRIPTIONS, run_checks
from llem_pipeline.defs.results.summary import headline_metadata, summary_markdown
from llem_pipeline.defs.store_resource import LlemStore
from llem_pipeline.domain.environment import EnvironmentSnapshot
from llem_pipeline.paths import data_dir
from llem_pipeline.storage import rows as R

_COMMON: dict[str, Any] = dict(
    partitions_def=measurement_partitions,
    group_name=RESULTS_GROUP,
    owners=OWNERS,
    code_version=RESULTS_CODE_VERSION,
)
CHECK_SPECS = [
    dg.AssetCheckSpec(name=name, asset="experiment_results", description=text)
    for name, text in CHECK_DESCRIPTIONS.items()
]
_SEVERITY = {"ERROR": dg.AssetCheckSeverity.ERROR, "WARN": dg.AssetCheckSeverity.WARN}


def chart_path(folder: RunFolder, name: str) -> Path:
    """Return ``<data_dir>/charts/<run_date>/<config_hash>/<run_id>/<name>.png`` (run folders stay as the worker wrote them)."""
    return data_dir() / "charts" / folder.run_date / folder.config_hash / folder.run_id / f"{name}.png"


def _study_of(config_hash: str) -> str | None:
    studies = scan_studies().studies_of(config_hash)
    return studies[0] if len(studies) == 1 else None


@dg.asset(
    **_COMMON,
    kinds={"duckdb", "python"},
    check_specs=CHECK_SPECS,
    ins={RAW: dg.AssetIn(), ENVIRONMENT: dg.AssetIn(), BASELINE: dg.AssetIn()},
    description=(
        "ExperimentResult v2.0 of the partition's measurement (J per output token, tok/s, latency, energy "
        "breakdown), stored with its processes, environment and baseline in DuckDB tables experiment_results, "
        "process_results, environment_snapshots and baselines."
    ),
)
def experiment_results(
    context: dg.AssetExecutionContext,
    llem_store: LlemStore,
    raw_process_results: RunFolder,
    environment_snapshot: EnvironmentSnapshot,
    baseline_power: dict[str, Any] | None,
) -> dg.MaterializeResult:
    """Write the run's result rows in one transaction; returns headline metadata and the check results."""
    folder = raw_process_results
    result, agrees = derive_result(folder)
    if not agrees:
        context.log.warning("re-aggregated result differs from the worker's result.json (aggregation code changed?)")
    store = llem_store.store()
    prev, prev_label = previous_j_per_token(store, folder.config_hash, folder.run_id, result.start_time)
    outcomes = run_checks(result, prev, prev_label)
    day, h, run_id = folder.run_date, folder.config_hash, folder.run_id
    tables = {
        "experiment_results": R.rows_to_table([R.experiment_result_row(result, day, run_id, _study_of(h))]),
        "process_results": R.rows_to_table(R.process_result_rows(folder.process_results(), day, h, run_id)),
        "environment_snapshots": R.rows_to_table([R.environment_row(environment_snapshot, day, h, run_id)]),
        "baselines": R.rows_to_table(R.baseline_rows(baseline_power, day, h, run_id) if baseline_power else []),
    }
    counts = store.write_tables(day, h, run_id, tables)
    image = ""
    if folder.path.joinpath("timeseries.parquet").is_file():
        t, p, s, window = trace_series(folder)
        png = power_trace_png(t, p, s, window, f"power · {h} · {day}")
        image = embed_png(png, "power trace")
    markdown = summary_markdown(result, outcomes, day, image)
    return dg.MaterializeResult(
        metadata={
            **headline_metadata(result),
            "summary": dg.MetadataValue.md(markdown),
            "run_id": run_id,
            "matches_worker_result": agrees,
            "run_dir": dg.MetadataValue.path(str(folder.path)),
            "dagster/row_count": counts["experiment_results"],
            "rows_written": dg.MetadataValue.json(counts),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=o.name, passed=o.passed, severity=_SEVERITY[o.severity],
                description=o.description, metadata=o.metadata,
            )
            for o in outcomes
        ],
    )


@dg.asset(
    **_COMMON,
    kinds={"duckdb", "parquet"},
    ins={RAW: dg.AssetIn()},
    description="Raw power samples of the measurement at native resolution (timeseries.parquet) → power_samples.",
)
def power_timeseries(
    context: dg.AssetExecutionContext, llem_store: LlemStore, raw_process_results: RunFolder
) -> dg.MaterializeResult:
    """Load timeseries.parquet into power_samples (one transaction); returns row count, W figures and the trace PNG."""
    folder = raw_process_results
    table = pq.read_table(folder.timeseries_path)
    counts = llem_store.store().write_tables(folder.run_date, folder.config_hash, folder.run_id, {"power_samples": table})
    t, p, s, window = trace_series(folder)
    png = power_trace_png(t, p, s, window, f"power · {folder.config_hash} · {folder.run_date}")
    path = save_png(png, chart_path(folder, "power_trace"))
    return dg.MaterializeResult(
        metadata={
            **power_metadata(table),
            "dagster/row_count": counts["power_samples"],
            "power_trace": dg.MetadataValue.md(embed_png(png, "power trace")),
            "power_trace_png": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    **_COMMON,
    kinds={"duckdb", "parquet"},
    ins={RAW: dg.AssetIn()},
    description="One row per measured request (requests.parquet: tokens, TTFT, TPOT, end-to-end) → requests.",
)
def request_latencies(
    context: dg.AssetExecutionContext, llem_store: LlemStore, raw_process_results: RunFolder
) -> dg.MaterializeResult:
    """Load requests.parquet into requests (one transaction); returns row count and latency percentiles (ms)."""
    folder = raw_process_results
    table = pq.read_table(folder.requests_path)
    counts = llem_store.store().write_tables(folder.run_date, folder.config_hash, folder.run_id, {"requests": table})
    return dg.MaterializeResult(metadata={**latency_metadata(table), "dagster/row_count": counts["requests"]})
