"""The CPU step: load a GPU run folder into DuckDB in ONE transaction, and check the result.

``store_results`` materialises three assets at once: experiment_results (experiment_results +
process_results + environment_snapshots + baselines), power_timeseries (power_samples) and
request_latencies (requests). One step and one transaction for the whole partition: a crash leaves
the partition's old rows or its new ones in every table, never a result without its samples, and a
measurement costs one CPU step (process start-up, DuckDB open, chart) instead of three. Rows are
keyed by the measurement run's id, so re-materialising replaces them.
"""


from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from llem_pipeline.defs.charts import embed_png, power_trace_png, save_png
from llem_pipeline.defs.constants import OWNERS, RESULTS_CODE_VERSION, RESULTS_GROUP
from llem_pipeline.defs.experiments.partitions import measurement_partitions
from llem_pipeline.defs.measurements.run_folder import RunFolder
from llem_pipeline.defs.measurements.run_lookup import BASELINE, ENVIRONMENT, RAW, run_folder_for
from llem_pipeline.defs.results.derive import derive_result, previous_j_per_token
from llem_pipeline.defs.results.latency import latency_metadata
from llem_pipeline.defs.results.power import chart_path, power_metadata, trace_series
from llem_pipeline.defs.results.quality import CHECK_DESCRIPTIONS, run_checks
from llem_pipeline.defs.results.summary import headline_metadata, summary_markdown
from llem_pipeline.defs.store_resource import LlemStore
from llem_pipeline.domain.environment import EnvironmentSnapshot
from llem_pipeline.domain.experiment import ExperimentResult
from llem_pipeline.storage import ResultStore, RunRecord

RESULTS, POWER, LATENCIES = "experiment_results", "power_timeseries", "request_latencies"
CHECK_SPECS = [dg.AssetCheckSpec(name=name, asset=RESULTS, description=text) for name, text in CHECK_DESCRIPTIONS.items()]
_SEVERITY = {"ERROR": dg.AssetCheckSeverity.ERROR, "WARN": dg.AssetCheckSeverity.WARN}


def _out(description: str, kinds: set[str]) -> dg.AssetOut:
    return dg.AssetOut(
        description=description, group_name=RESULTS_GROUP, owners=OWNERS, code_version=RESULTS_CODE_VERSION,
        kinds=kinds, is_required=True,
    )


@dg.multi_asset(
    name="store_results",
    outs={
        RESULTS: _out(
            "ExperimentResult v2.0 of the partition's measurement (J per output token, tok/s, latency, energy "
            "breakdown), stored with its processes, environment and baseline in DuckDB tables experiment_results, "
            "process_results, environment_snapshots and baselines.",
            {"duckdb", "python"},
        ),
        POWER: _out(
            "Raw power samples of the measurement at native resolution (timeseries.parquet) → power_samples.",
            {"duckdb", "parquet"},
        ),
        LATENCIES: _out(
            "One row per measured request (requests.parquet: tokens, TTFT, TPOT, end-to-end) → requests.",
            {"duckdb", "parquet"},
        ),
    },
    deps=[RAW, ENVIRONMENT, BASELINE],
    internal_asset_deps={
        RESULTS: {dg.AssetKey(RAW), dg.AssetKey(ENVIRONMENT), dg.AssetKey(BASELINE)},
        POWER: {dg.AssetKey(RAW)},
        LATENCIES: {dg.AssetKey(RAW)},
    },
    check_specs=CHECK_SPECS,
    partitions_def=measurement_partitions,
    description="CPU step: the run folder's result, power samples and requests into DuckDB in one transaction; "
    "the SPEC §3.11 checks.",
)
def store_results(context: dg.AssetExecutionContext, llem_store: LlemStore):
    """Store the run folder of this run's measurement (else the partition's latest one); yields what
    ``store_partition`` yields."""
    folder = run_folder_for(context.instance, context.partition_key, context.run.run_id)
    yield from store_partition(context, llem_store, folder)


def store_partition(context: dg.AssetExecutionContext, llem_store: LlemStore, folder: RunFolder):
    """Write every table of the partition from ``folder`` in one transaction; yields one MaterializeResult
    per asset (headline metadata on experiment_results; row counts, W and ms figures on the others) and the
    seven AssetCheckResults of experiment_results."""
    environment_snapshot = folder.environment()
    baseline_power = folder.baseline()
    result, agrees = derive_result(folder)
    if not agrees:
        context.log.warning("re-aggregated result differs from the worker's result.json (aggregation code changed?)")
    store = llem_store.store()
    prev, prev_label = previous_j_per_token(store, folder.config_hash, folder.run_id, result.start_time)
    outcomes = run_checks(result, prev, prev_label)
    day, run_id = folder.run_date, folder.run_id
    samples = pq.read_table(folder.timeseries_path)
    requests = pq.read_table(folder.requests_path)
    # the chart is drawn while DuckDB writes (its execution and fsync release the GIL), saved once the write
    # landed; a drawing error still fails the step
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llem-chart") as drawing:
        chart = drawing.submit(_power_trace_png, samples, folder)
        counts = _write_partition(store, folder, result, environment_snapshot, baseline_power, samples, requests)
        png = chart.result()
    path = save_png(png, chart_path(folder, "power_trace"))
    image = embed_png(png, "power trace")
    common = {"run_id": run_id, "run_dir": dg.MetadataValue.path(str(folder.path))}
    yield dg.MaterializeResult(
        asset_key=RESULTS,
        metadata={
            **headline_metadata(result),
            "summary": dg.MetadataValue.md(summary_markdown(result, outcomes, day, image)),
            **common,
            "matches_worker_result": agrees,
            "dagster/row_count": counts["experiment_results"],
            "rows_written": dg.MetadataValue.json(counts),
        },
    )
    for o in outcomes:
        yield dg.AssetCheckResult(
            asset_key=RESULTS, check_name=o.name, passed=o.passed, severity=_SEVERITY[o.severity],
            description=o.description, metadata=o.metadata,
        )
    yield dg.MaterializeResult(
        asset_key=POWER,
        metadata={
            **power_metadata(samples),
            **common,
            "dagster/row_count": counts["power_samples"],
            "power_trace": dg.MetadataValue.md(image),
            "power_trace_png": dg.MetadataValue.path(str(path)),
        },
    )
    yield dg.MaterializeResult(
        asset_key=LATENCIES,
        metadata={**latency_metadata(requests), **common, "dagster/row_count": counts["requests"]},
    )


def _power_trace_png(samples: pa.Table, folder: RunFolder) -> bytes:
    """Return the PNG bytes of the partition's power trace (W over s from inference start)."""
    t, p, series, window = trace_series(samples)
    return power_trace_png(t, p, series, window, f"power · {folder.config_hash} · {folder.run_date}")


def _write_partition(store: ResultStore, folder: RunFolder, result: ExperimentResult, environment: EnvironmentSnapshot,
                     baseline: dict[str, Any] | None, samples: pa.Table, requests: pa.Table) -> dict[str, int]:
    """Write the run's six tables in one transaction; returns the rows written per table."""
    # the study comes from experiment_configs inside the write (when exactly one study registered the config)
    return store.write_run(RunRecord.build(
        result, run_date=folder.run_date, run_id=folder.run_id, processes=folder.process_results(),
        environment=environment, baseline=baseline, power_samples=samples, requests=requests,
    ))
