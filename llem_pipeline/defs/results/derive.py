"""The v2.0 ExperimentResult of a run folder, and the previous result of the same config (read-only).

The CPU step re-aggregates the raw process results with ``llem_pipeline.measure.aggregation.aggregate``
(the same pure function the worker uses for result.json), so a change of the aggregation code
re-derives results without touching a GPU; result.json is the cross-check.
"""

from __future__ import annotations

from datetime import datetime

from llem_pipeline.defs.measurements.run_folder import RunFolder, RunFolderError
from llem_pipeline.domain.experiment import ExperimentResult
from llem_pipeline.measure.aggregation import aggregate
from llem_pipeline.measure.run_folder import read_request_records
from llem_pipeline.storage import ResultStore


def derive_result(folder: RunFolder) -> tuple[ExperimentResult, bool]:
    """Return (ExperimentResult v2.0 aggregated from the run folder's raw files, agrees with result.json).

    Agreement: same output tokens, and raw energy and J/token within 1e-9 relative of the worker's
    result.json. Raises RunFolderError when the folder's files are missing or inconsistent.
    """
    worker_result = folder.result()
    try:
        result = aggregate(
            folder.process_results(),
            config=folder.config(),
            requests=read_request_records(folder.requests_path),
            environment=folder.environment(),
            experiment_id=worker_result.experiment_id,
            timeseries=worker_result.timeseries,
        )
    except ValueError as err:
        raise RunFolderError(f"{folder.path}: cannot aggregate the process results: {err}") from None

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))

    agrees = (
        result.total_tokens == worker_result.total_tokens
        and close(result.total_energy_j, worker_result.total_energy_j)
        and close(result.avg_energy_per_token_j, worker_result.avg_energy_per_token_j)
    )
    return result, agrees


def previous_j_per_token(
    store: ResultStore, config_hash: str, run_id: str, before: datetime
) -> tuple[float | None, str]:
    """Return (J/token, 'run_date run run_id') of the latest stored run of ``config_hash`` that ended before
    ``before`` (another run than ``run_id``), or (None, '') when there is none or no database yet.
    """
    if not store.path.is_file():
        return None, ""
    table = store.query(
        "SELECT j_per_token, CAST(run_date AS VARCHAR) AS d, run_id FROM experiment_results "
        "WHERE config_hash = ? AND run_id <> ? AND end_time < ? ORDER BY end_time DESC LIMIT 1",
        [config_hash, run_id, before],
    )
    if table.num_rows == 0:
        return None, ""
    row = table.to_pylist()[0]
    return float(row["j_per_token"]), f"{row['d']} run {row['run_id'][:8]}"
