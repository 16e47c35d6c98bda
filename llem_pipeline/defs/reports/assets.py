"""efficiency_report: refresh and validate the SQL views, show J/token across the swept setting."""


import dagster as dg

from llem_pipeline.defs.charts import embed_png, j_per_token_png, save_png
from llem_pipeline.defs.constants import OWNERS, REPORTS_GROUP, RESULTS_CODE_VERSION
from llem_pipeline.defs.reports.efficiency import chart_rows, efficiency_markdown
from llem_pipeline.defs.results.assets import RESULTS
from llem_pipeline.defs.store_resource import LlemStore
from llem_pipeline.storage import VIEWS


@dg.asset(
    deps=[RESULTS],
    group_name=REPORTS_GROUP,
    owners=OWNERS,
    kinds={"duckdb", "sql"},
    code_version=RESULTS_CODE_VERSION,
    description=(
        "The SQL views (latest_results, efficiency, nightly_trend) re-applied and validated; the efficiency "
        "view as a table and a chart of J per output token across the swept setting."
    ),
)
def efficiency_report(context: dg.AssetExecutionContext, llem_store: LlemStore) -> dg.MaterializeResult:
    """Re-apply views.sql, query every view once, return the efficiency table, chart and row counts."""
    store = llem_store.store()
    version = store.ensure_schema()
    view_rows = {view: store.query(f"SELECT count(*) AS n FROM {view}").column("n")[0].as_py() for view in VIEWS}
    rows = store.query(
        "SELECT * FROM efficiency ORDER BY model, backend, precision, is_simulated, batch_size NULLS LAST, setting"
    ).to_pylist()
    metadata: dict = {
        "schema_version": version,
        "view_rows": dg.MetadataValue.json(view_rows),
        "efficiency": dg.MetadataValue.md(efficiency_markdown(rows)),
        "dagster/row_count": len(rows),
    }
    points = chart_rows(rows)
    if points:
        png = j_per_token_png(points, "J per output token by setting (latest run of each config)")
        path = save_png(png, store.path.parent / "reports" / "efficiency_j_per_token.png")
        metadata["j_per_token_chart"] = dg.MetadataValue.md(embed_png(png, "J per output token by setting"))
        metadata["j_per_token_png"] = dg.MetadataValue.path(str(path))
        metadata["best_j_per_token"] = min(v for _, _, v in points)
    return dg.MaterializeResult(metadata=metadata)
