"""efficiency_report: the efficiency view as a table and a chart of J per output token across the swept setting."""

import dagster as dg
import pyarrow as pa

from llem_pipeline.defs.charts import embed_png, j_per_token_png, save_png
from llem_pipeline.defs.constants import (
    ASSET_GROUP,
    DUCKDB_IO_MANAGER,
    OWNERS,
    RESULTS_CODE_VERSION,
    STORAGE_OP_TAG,
)
from llem_pipeline.defs.reports.efficiency import chart_rows, efficiency_table
from llem_pipeline.defs.settings import LlemPaths
from llem_pipeline.storage.io_manager import RESULTS


@dg.asset(
    ins={"efficiency": dg.AssetIn(RESULTS, metadata={"view": "efficiency"}, input_manager_key=DUCKDB_IO_MANAGER)},
    group_name=ASSET_GROUP,
    owners=OWNERS,
    kinds={"duckdb", "sql"},
    code_version=RESULTS_CODE_VERSION,
    op_tags=STORAGE_OP_TAG,
    description=(
        "The efficiency view over every stored run (J per output token with its 95 % CI, tok/s, W, TTFT) per "
        "model × backend × setting × hardware × workload, as a table and a chart across the swept setting. "
        "Simulated rows are marked SIMULATED and never pooled with real ones."
    ),
)
def efficiency_report(context: dg.AssetExecutionContext, efficiency: pa.Table, llem_paths: LlemPaths) -> dg.MaterializeResult:
    """Return the efficiency table, the chart and the row count as materialisation metadata."""
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
    context.log.info(f"efficiency: {len(rows)} row(s), {metadata['simulated_rows']} simulated")
    return dg.MaterializeResult(metadata=metadata)
