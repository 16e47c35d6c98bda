-- llem_pipeline views: the common questions over experiment_results, in plain DuckDB SQL.
-- Re-applied (CREATE OR REPLACE) by ResultStore.ensure_schema(); runnable in the duckdb shell after
-- schema.sql and migrations/*.sql.
-- J/token is always energy-weighted: sum(total_energy_j) / sum(total_tokens) (output tokens).

-- Latest run of every config hash (by run_date, then end_time, then run_id). The pick runs on the
-- four key columns only (arg_max over rowid), then fetches the chosen rows: ~5x faster than a
-- window over all columns on 100k results.
CREATE OR REPLACE VIEW latest_results AS
SELECT * EXCLUDE (result_json)
FROM experiment_results
WHERE rowid IN (
    SELECT arg_max(rowid, (run_date, end_time, run_id))
    FROM experiment_results
    GROUP BY config_hash
);
COMMENT ON VIEW latest_results IS 'The latest run of every config_hash: experiment_results columns without result_json.';

-- J/token, tok/s, W and TTFT by model x backend x precision x setting, over the latest results.
-- Simulated (or replayed) and real-GPU measurements are never mixed: is_simulated is a group key.
CREATE OR REPLACE VIEW efficiency AS
SELECT
    model,
    backend,
    precision,
    setting,
    batch_size,
    max_num_seqs,
    tensor_parallel_size,
    is_simulated,
    count(*)                                          AS n_configs,
    sum(total_tokens)::BIGINT                         AS total_tokens,
    sum(total_energy_j) / nullif(sum(total_tokens), 0)    AS j_per_token,
    sum(energy_adjusted_j) / nullif(sum(total_tokens), 0) AS adjusted_j_per_token,
    sum(total_tokens) / nullif(sum(total_inference_time_sec), 0) AS tokens_per_s,
    sum(total_energy_j) / nullif(sum(total_inference_time_sec), 0) AS avg_power_w,
    avg(ttft_p50_ms)                                  AS ttft_p50_ms,
    max(ttft_p99_ms)                                  AS ttft_p99_ms,
    avg(itl_p50_ms)                                   AS itl_p50_ms,
    bool_or(coalesce(throttled, false))               AS any_throttled,
    sum(n_warnings)::BIGINT                           AS n_warnings,
    max(run_date)                                     AS latest_run_date
FROM latest_results
GROUP BY ALL;
COMMENT ON VIEW efficiency IS 'J per output token (energy-weighted), output tokens/s, average W and TTFT by model x backend x precision x setting over latest_results; simulated and real results are separate rows.';

-- Per config and night: J/token and tok/s with the change against the previous night of the same config.
-- The writer keeps one run per (run_date, config_hash) and maintains prev_* (migration 2) as
--   lag(...) OVER (PARTITION BY config_hash ORDER BY run_date)
-- in the same transaction, so this view is a projection (no window sort on every read).
CREATE OR REPLACE VIEW nightly_trend AS
SELECT
    config_hash, run_date, run_id, study, model, backend, precision, setting, is_simulated,
    avg_energy_per_token_j AS j_per_token,
    avg_tokens_per_second  AS tokens_per_s,
    avg_power_w,
    ttft_p50_ms,
    n_warnings,
    throttled,
    prev_run_date,
    prev_j_per_token,
    100.0 * (avg_energy_per_token_j / nullif(prev_j_per_token, 0) - 1.0) AS j_per_token_change_pct,
    100.0 * (avg_tokens_per_second / nullif(prev_tokens_per_s, 0) - 1.0)  AS tokens_per_s_change_pct
FROM experiment_results;
COMMENT ON VIEW nightly_trend IS 'Per config_hash and run_date: J/token, tokens/s, W, TTFT p50 and the % change of J/token and tokens/s against the previous night of the same config.';
