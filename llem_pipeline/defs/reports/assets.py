"""efficiency_report: the efficiency view as a table and a chart of J per output token across the swept setting."""

import dagster as dg
import pyarrow as pa

from llem_pipeline.defs.charts import embed_png, j_per_token_png, pareto_png, save_png
from llem_pipeline.defs.constants import ASSET_GROUP, DUCKDB_IO_MANAGER, OWNERS, RESULTS_CODE_VERSION
from llem_pipeline.defs.reports.efficiency import chart_rows, efficiency_table
from llem_pipeline.defs.reports.energy import PHASE_COLUMNS, TARGET_COLUMNS, pareto_series, table
from llem_pipeline.defs.settings import LlemPaths, LlemStore
from llem_pipeline.storage.io_manager import RESULTS


@dg.asset(
    ins={"efficiency": dg.AssetIn(RESULTS, metadata={"view": "efficiency"}, input_manager_key=DUCKDB_IO_MANAGER)},
    group_name=ASSET_GROUP,
    owners=OWNERS,
    kinds={"duckdb", "sql"},
    code_version=RESULTS_CODE_VERSION,
    description=(
        "The efficiency view over every stored run (J per output token with its 95 % CI, tok/s, W, TTFT) per "
        "model × backend × setting × hardware × workload, as a table and a chart across the swept setting; energy "
        "per request and its prefill / decode split; the lowest-energy config meeting each latency target; the "
        "Pareto front of J/token against TTFT p99 and TPOT p99. Simulated rows are marked SIMULATED and never "
        "pooled with real ones."
    ),
)
def efficiency_report(context: dg.AssetExecutionContext, efficiency: pa.Table, llem_paths: LlemPaths,
                      llem_store: LlemStore) -> dg.MaterializeResult:
    """Return the efficiency table, the chart, the per-phase and latency-target tables and the Pareto chart as
    materialisation metadata."""
    rows = efficiency.to_pylist()
    metadata: dict = {
        "efficiency": efficiency_table(rows),
        "dagster/row_count": len(rows),
        "simulated_rows": sum(1 for r in rows if r.get("is_simulated")),
    }
    points = chart_rows(rows)
    if points:
        png = j_per_token_png(points, "J per output token by setting (latest day of each config × hardware)")
        path = save_png(png, llem_paths.data() / "reports" / "efficiency_j_per_token.png")
        metadata["j_per_token_chart"] = dg.MetadataValue.md(embed_png(png, "J per output token by setting"))
        metadata["j_per_token_png"] = dg.MetadataValue.path(str(path))
        metadata["best_j_per_token"] = min(v for _, _, v in points)
    metadata.update(_energy_metadata(llem_store, llem_paths))
    context.log.info(f"efficiency: {len(rows)} row(s), {metadata['simulated_rows']} simulated")
    return dg.MaterializeResult(metadata=metadata)


def _energy_metadata(llem_store: LlemStore, llem_paths: LlemPaths) -> dict:
    """Return the per-phase table, the latency-target table and the Pareto chart (views request_energy,
    energy_at_target, energy_latency); empty before anything is stored."""
    store = llem_store.store()
    if not store.path.is_file():
        return {}
    phases = store.query("SELECT * FROM request_energy WHERE is_latest_day ORDER BY model, backend, hardware_id, "
                         "workload_hash, j_per_request_p50").to_pylist()
    targets = store.query("SELECT * FROM energy_at_target ORDER BY target, model, backend, hardware_id, "
                          "workload_hash").to_pylist()
    points = store.query("SELECT * FROM energy_latency ORDER BY model, backend, hardware_id, setting").to_pylist()
    out: dict = {
        "energy_per_request_and_phase": table(phases, PHASE_COLUMNS),
        "energy_at_latency_target": table(targets, TARGET_COLUMNS),
    }
    panels = [(label, pareto_series(points, column)) for label, column in
              (("TTFT p99 (ms)", "ttft_p99_ms"), ("TPOT p99 (ms)", "tpot_p99_ms"))]
    if any(series for _, series in panels):
        png = pareto_png(panels, "J per output token against latency: each config, and each group's Pareto front")
        path = save_png(png, llem_paths.data() / "reports" / "pareto_j_per_token_latency.png")
        out["pareto_chart"] = dg.MetadataValue.md(embed_png(png, "Pareto front of J/token against latency"))
        out["pareto_png"] = dg.MetadataValue.path(str(path))
    return out
