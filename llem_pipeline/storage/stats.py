"""config_day_stats: per config x hardware x day statistics over repeated runs, kept current by the writer.

ResultStore calls ``refresh`` inside every write transaction with the (config_hash, hardware_id,
run_date) groups the write touched; it recomputes those groups from experiment_results (the SQL lives
in stats.sql) and re-links the neighbouring days of their config x hardware pairs. The views
(views.sql) are projections of the table, so reading them never resamples.

Means, medians and sample standard deviations (n - 1) are computed here from each group's per-run
values sorted ascending, with exactly rounded sums (math.fsum): the same runs give bit-identical
figures whatever order or batches wrote them (SQL's avg() adds in row order).

The 95 % confidence interval of the mean is a percentile bootstrap: 2000 resamples with replacement of
the group's per-run values, drawn by numpy's PCG64 seeded with ``BOOTSTRAP_SEED`` from the values
sorted ascending, then the 2.5th and 97.5th percentiles of the resampled means (numpy's linear
interpolation). The same values give the same interval, whatever order the runs were written in.
A group of one run has no interval (NULL).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from functools import cache

import duckdb
import numpy as np
import pyarrow as pa

from llem_pipeline.storage.schema import sql_text

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95
# The columns of config_day_stats computed here from the per-run values.
_COMPUTED = ("j_per_token_mean", "j_per_token_median", "j_per_token_std", "j_per_token_ci_low", "j_per_token_ci_high",
             "tokens_per_s_mean", "tokens_per_s_median", "tokens_per_s_std", "tokens_per_s_ci_low",
             "tokens_per_s_ci_high", "adjusted_j_per_token", "avg_power_w", "ttft_p50_ms")
_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def statements() -> dict[str, str]:
    """Return the named statements of stats.sql ({name: SQL text})."""
    text = sql_text("stats.sql")
    parts = _NAME.split(text)
    return {parts[i]: parts[i + 1].strip().rstrip(";") for i in range(1, len(parts), 2)}


def bootstrap_mean_ci(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Return the 95 % percentile-bootstrap interval (low, high) of the mean of ``values`` (units of the values).

    Non-finite values are ignored; (None, None) with fewer than two values left. Deterministic: the
    values are sorted and resampled with a fixed seed (module docstring).
    """
    v = np.sort(np.asarray([x for x in values if x is not None], dtype=np.float64))
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None, None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = v[rng.integers(0, v.size, size=(BOOTSTRAP_RESAMPLES, v.size))].mean(axis=1)
    tail = (1.0 - CI_LEVEL) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def _finite(values: Sequence[float | None] | None) -> list[float]:
    return sorted(float(v) for v in values or [] if v is not None and math.isfinite(v))


def mean(values: Sequence[float | None] | None) -> float | None:
    """Return the mean of the finite values (exactly rounded sum; order does not matter), None when there are none."""
    v = _finite(values)
    return math.fsum(v) / len(v) if v else None


def median(values: Sequence[float | None] | None) -> float | None:
    """Return the median of the finite values, None when there are none."""
    v = _finite(values)
    return float(statistics.median(v)) if v else None


def std(values: Sequence[float | None] | None) -> float | None:
    """Return the sample standard deviation (n - 1) of the finite values, None with fewer than two."""
    v = _finite(values)
    if len(v) < 2:
        return None
    m = math.fsum(v) / len(v)
    return math.sqrt(math.fsum((x - m) ** 2 for x in v) / (len(v) - 1))


def refresh(con: duckdb.DuckDBPyConnection, groups: pa.Table) -> int:
    """Recompute config_day_stats for ``groups`` (columns config_hash, hardware_id, run_date) in the caller's
    transaction; return the number of group rows written (a group whose runs are all gone is removed)."""
    if groups.num_rows == 0:
        return 0
    sql = statements()
    # Registrations die with the connection; no `finally` unregister (it would mask an error with
    # "transaction is aborted").
    con.register("_llem_groups", groups.select(["config_hash", "hardware_id", "run_date"]))
    table = con.sql(sql["group_aggregates"]).to_arrow_table()
    computed: dict[str, list[float | None]] = {name: [] for name in _COMPUTED}
    lists = {c: table.column(c).to_pylist() for c in table.column_names if c.endswith("_values")}
    for i in range(table.num_rows):
        j, t = lists["j_per_token_values"][i], lists["tokens_per_s_values"][i]
        j_low, j_high = bootstrap_mean_ci(j)
        t_low, t_high = bootstrap_mean_ci(t)
        for name, value in (
            ("j_per_token_mean", mean(j)), ("j_per_token_median", median(j)), ("j_per_token_std", std(j)),
            ("j_per_token_ci_low", j_low), ("j_per_token_ci_high", j_high),
            ("tokens_per_s_mean", mean(t)), ("tokens_per_s_median", median(t)), ("tokens_per_s_std", std(t)),
            ("tokens_per_s_ci_low", t_low), ("tokens_per_s_ci_high", t_high),
            ("adjusted_j_per_token", mean(lists["adjusted_j_per_token_values"][i])),
            ("avg_power_w", mean(lists["avg_power_w_values"][i])),
            ("ttft_p50_ms", mean(lists["ttft_p50_ms_values"][i])),
        ):
            computed[name].append(value)
    table = table.drop_columns(list(lists))
    for name in _COMPUTED:
        table = table.append_column(name, pa.array(computed[name], pa.float64()))
    con.execute(sql["delete_groups"])
    if table.num_rows:
        con.register("_llem_stats", table)
        con.execute(sql["insert_groups"])
        con.unregister("_llem_stats")
    con.execute(sql["link_days"])
    con.unregister("_llem_groups")
    return table.num_rows
