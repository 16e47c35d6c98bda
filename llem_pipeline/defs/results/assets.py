"""The CPU step: a measurement run's results into DuckDB (one transaction, through the DuckDB I/O manager).

``store_results`` loads the GPU step's outputs from the run folder (RunFolderIOManager) and returns three
assets whose values LlemDuckDBIOManager writes: ``experiment_results`` (the run's RunRecord: result,
processes, environment, baseline, power samples and requests, committed together), ``power_timeseries``
and ``request_latencies`` (the same run's samples and requests, confirmed against that commit). Every run
is kept: a new measurement adds rows, it never replaces another run's. Then the asset checks.
"""

from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import pyarrow as pa

from llem_pipeline.defs.charts import embed_png, inline_sparkline, power_trace_png, save_png
from llem_pipeline.defs.constants import (
    ASSET_GROUP,
    CYCLE_TAG,
    DUCKDB_IO_MANAGER,
    OWNERS,
    RESULTS_CODE_VERSION,
    STORE_STEP_KEY,
    STUDY_TAG,
)
from llem_pipeline.defs.experiments.partitions import measurement_partitions
from llem_pipeline.defs.measurements.assets import require_partition
from llem_pipeline.defs.measurements.io_manager import BASELINE, ENVIRONMENT, RAW
from llem_pipeline.defs.results.latency import latency_metadata
from llem_pipeline.defs.results.power import power_metadata, trace_series
from llem_pipeline.defs.results.quality import (
    CHECK_DESCRIPTIONS,
    CheckOutcome,
    check_repeatability,
    run_checks,
)
from llem_pipeline.defs.results.records import run_record
from llem_pipeline.defs.results.reference import DESCRIPTION as REFERENCE_DESCRIPTION
from llem_pipeline.defs.results.reference import NAME as REFERENCE_CHECK
from llem_pipeline.defs.results.reference import check_published_reference
from llem_pipeline.defs.results.summary import device_metadata, headline_metadata, summary_markdown
from llem_pipeline.defs.settings import LlemPaths, LlemStore
from llem_pipeline.domain.environment import EnvironmentSnapshot
from llem_pipeline.measure.run_folder import RunFolder
from llem_pipeline.storage.io_manager import LATENCIES, POWER, RESULTS

CHECK_SPECS = [
    dg.AssetCheckSpec(name=name, asset=RESULTS, description=text, partitions_def=measurement_partitions)
    for name, text in {**CHECK_DESCRIPTIONS, REFERENCE_CHECK: REFERENCE_DESCRIPTION}.items()
]
_SEVERITY = {"ERROR": dg.AssetCheckSeverity.ERROR, "WARN": dg.AssetCheckSeverity.WARN}


def _out(description: str, kinds: set[str]) -> dg.AssetOut:
    return dg.AssetOut(
        description=description, group_name=ASSET_GROUP, owners=OWNERS, code_version=RESULTS_CODE_VERSION,
        kinds=kinds, io_manager_key=DUCKDB_IO_MANAGER, is_required=True,
    )


@dg.multi_asset(
    name=STORE_STEP_KEY,
    ins={
        RAW: dg.AssetIn(RAW),
        ENVIRONMENT: dg.AssetIn(ENVIRONMENT),
        BASELINE: dg.AssetIn(BASELINE),
    },
    outs={
        RESULTS: _out(
            "ExperimentResult v2.0 of each measurement run (J per output token, tok/s, latency, energy with its ±), "
            "stored with its processes, environment and baseline in DuckDB (experiment_results, process_results, "
            "environment_snapshots, baselines). Every run is kept.",
            {"duckdb", "python"},
        ),
        POWER: _out("Every power sample of the run at native resolution → power_samples.", {"duckdb", "parquet"}),
        LATENCIES: _out("One row per measured request (tokens, TTFT, TPOT, end-to-end) → requests.",
                        {"duckdb", "parquet"}),
    },
    internal_asset_deps={
        RESULTS: {dg.AssetKey(RAW), dg.AssetKey(ENVIRONMENT), dg.AssetKey(BASELINE)},
        POWER: {dg.AssetKey(RAW)},
        LATENCIES: {dg.AssetKey(RAW)},
    },
    check_specs=CHECK_SPECS,
    partitions_def=measurement_partitions,
    description="CPU step: the run folder's result, power samples and requests into DuckDB in one transaction; "
    "then the quality checks.",
)
def store_results(
    context: dg.AssetExecutionContext,
    raw_process_results: RunFolder,
    environment_snapshot: EnvironmentSnapshot,
    baseline_power: dict | None,
    llem_store: LlemStore,
    llem_paths: LlemPaths,
):
    """Yield the run's RunRecord and its two tables (stored by the DuckDB I/O manager), then the check results."""
    _, key = require_partition(context)
    folder = raw_process_results
    result = folder.result
    measured_tags = _measuring_run_tags(context, folder.run_id)
    cycle = measured_tags.get(CYCLE_TAG)
    record = run_record(folder, environment=environment_snapshot, baseline=baseline_power,
                        study=measured_tags.get(STUDY_TAG) or key.study, cycle=int(cycle) if cycle is not None else None,
                        measurement_key=key.key, label=key.label)
    hardware = record.hardware_id
    store = llem_store.store()
    previous = store.previous_result(folder.config_hash, hardware, result.start_time, folder.run_id) \
        if store.path.is_file() else None
    outcomes = run_checks(result, previous)
    # the chart is drawn while DuckDB writes (the write releases the GIL); a drawing error still fails the step
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llem-chart") as drawing:
        chart = drawing.submit(_power_trace_png, folder.power_samples, key.label, folder.run_date)
        common = {"run_id": folder.run_id, "label": key.label, "hardware_id": hardware}
        yield dg.Output(record, RESULTS, metadata={
            **device_metadata(result, hardware),
            "power_trace": dg.MetadataValue.md(inline_sparkline(*trace_series(folder.power_samples), "power trace")),
            **headline_metadata(result), **common, "workload_hash": record.workload_hash,
            "summary": dg.MetadataValue.md(summary_markdown(result, outcomes, folder.run_date, key.label)),
        })
        png = chart.result()
    path = save_png(png, llem_paths.charts() / folder.run_date / folder.config_hash / folder.run_id / "power_trace.png")
    outcomes.append(check_repeatability(store.config_stats(folder.config_hash, hardware, folder.run_date)))
    outcomes.append(check_published_reference(store.query(
        "SELECT * FROM published_comparison WHERE config_hash = ? AND hardware_id = ? AND run_id = ? "
        "ORDER BY ratio_to_published", [folder.config_hash, hardware, folder.run_id]).to_pylist(), record.is_simulated))
    image = embed_png(png, "power trace")
    for o in outcomes:
        yield _check_result(o)
    yield dg.Output(folder.power_samples, POWER, metadata={
        **power_metadata(folder.power_samples), **common, "measurement_run_id": folder.run_id,
        "power_trace": dg.MetadataValue.md(image), "power_trace_png": dg.MetadataValue.path(str(path)),
    })
    yield dg.Output(folder.requests, LATENCIES, metadata={
        **latency_metadata(folder.requests), **common, "measurement_run_id": folder.run_id,
    })


def _measuring_run_tags(context: dg.AssetExecutionContext, run_id: str) -> dict[str, str]:
    """Return the tags of the run that measured (this run, or the one whose run folder is stored again)."""
    if run_id == context.run.run_id:
        return dict(context.run.tags)
    run = context.instance.get_run_by_id(run_id)
    return dict(run.tags) if run is not None else {}


def _check_result(o: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(asset_key=RESULTS, check_name=o.name, passed=o.passed, severity=_SEVERITY[o.severity],
                               description=o.description, metadata=o.metadata)


def _power_trace_png(samples: pa.Table, label: str, run_date: str) -> bytes:
    """Return the PNG bytes of the run's power trace (W over s from inference start)."""
    t, p, series, window = trace_series(samples)
    return power_trace_png(t, p, series, window, f"power · {label} · {run_date}")
