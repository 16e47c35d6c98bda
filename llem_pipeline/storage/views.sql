-- llem_pipeline views: the common questions over the stored runs, in plain DuckDB SQL.
-- Re-applied (CREATE OR REPLACE) by ResultStore.ensure_schema(); runnable in the duckdb shell after
-- schema.sql and migrations/*.sql.
--
-- A measurement is identified by (config_hash, hardware_id, run_id); every run is kept. No view pools
-- runs of different configs, hardware (GPU model, count, simulated or real) or workloads: every row is
-- one config on one hardware_id (one workload per config). Repeats of a config on one hardware and day
-- (cycles, re-runs) are summarised in config_day_stats, which ResultStore recomputes in each write
-- transaction for the groups it touched (llem_pipeline/storage/stats.py: the bootstrap interval needs
-- resampling, done once per write instead of on every read); config_stats, efficiency and nightly_trend
-- project it.

-- Latest run of every config x hardware (by run_date, then end_time, then run_id). The pick runs on the
-- key columns only (arg_max over rowid), then fetches the chosen rows: ~5x faster than a window over
-- all columns on 100k results.
CREATE OR REPLACE VIEW latest_results AS
SELECT * EXCLUDE (result_json)
FROM experiment_results
WHERE rowid IN (
    SELECT arg_max(rowid, (run_date, end_time, run_id))
    FROM experiment_results
    GROUP BY config_hash, hardware_id
);
COMMENT ON VIEW latest_results IS 'The latest run of every config_hash x hardware_id (by run_date, end_time, run_id): experiment_results columns without result_json. A simulated run never shadows a real one (their hardware_id differs).';

-- Statistics over the runs of one config on one hardware on one day.
CREATE OR REPLACE VIEW config_stats AS
SELECT
    config_hash,
    hardware_id,
    run_date,
    workload_hash,
    studies,
    model,
    backend,
    precision,
    setting,
    is_simulated,
    n_runs,
    run_ids,
    j_per_token_median,
    j_per_token_mean,
    j_per_token_std,
    j_per_token_std / nullif(j_per_token_mean, 0)   AS j_per_token_cv,
    j_per_token_ci_low,
    j_per_token_ci_high,
    tokens_per_s_median,
    tokens_per_s_mean,
    tokens_per_s_std,
    tokens_per_s_std / nullif(tokens_per_s_mean, 0) AS tokens_per_s_cv,
    tokens_per_s_ci_low,
    tokens_per_s_ci_high
FROM config_day_stats;
COMMENT ON VIEW config_stats IS 'Per config_hash x hardware_id x run_date: n_runs, median / mean / sample std / CV (std / mean, a fraction: 0.05 = 5 %) of j_per_token (J per output token) and tokens_per_s, and the 95 % percentile-bootstrap interval of each mean (_ci_low, _ci_high: 2000 resamples, fixed seed, so the same runs give the same interval; NULL with one run). From config_day_stats.';

-- J/token, tok/s, W and TTFT of every config on every hardware, over its latest day.
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
    hardware_id,
    workload_hash,
    studies,
    config_hash,
    run_date,
    n_runs,
    j_per_token_mean                                AS j_per_token,
    j_per_token_ci_low,
    j_per_token_ci_high,
    j_per_token_std / nullif(j_per_token_mean, 0)   AS j_per_token_cv,
    adjusted_j_per_token,
    tokens_per_s_mean                               AS tokens_per_s,
    tokens_per_s_ci_low,
    tokens_per_s_ci_high,
    avg_power_w,
    ttft_p50_ms,
    any_throttled,
    n_warnings
FROM config_day_stats
WHERE next_run_date IS NULL;
COMMENT ON VIEW efficiency IS 'One row per config_hash x hardware_id, over the runs of its latest run_date (every repeat of that day; earlier days are in config_stats and nightly_trend): j_per_token = mean J per output token over those runs with its 95 % bootstrap interval, tokens_per_s likewise, mean W and TTFT p50 (ms), n_runs, and the hardware_id, workload_hash and studies that identify the row. Never pools hardware, workloads or simulated with real.';

-- Per config x hardware and day: the mean J/token and tok/s of the day against the previous day of the
-- same config on the same hardware_id (a real night is never compared with a simulated one).
CREATE OR REPLACE VIEW nightly_trend AS
SELECT
    config_hash,
    hardware_id,
    run_date,
    studies,
    model,
    backend,
    precision,
    setting,
    is_simulated,
    workload_hash,
    n_runs,
    run_ids,
    j_per_token_mean  AS j_per_token,
    tokens_per_s_mean AS tokens_per_s,
    avg_power_w,
    ttft_p50_ms,
    n_warnings,
    any_throttled,
    prev_run_date,
    prev_j_per_token,
    prev_tokens_per_s,
    100.0 * (j_per_token_mean / nullif(prev_j_per_token, 0) - 1.0)   AS j_per_token_change_pct,
    100.0 * (tokens_per_s_mean / nullif(prev_tokens_per_s, 0) - 1.0) AS tokens_per_s_change_pct
FROM config_day_stats;
COMMENT ON VIEW nightly_trend IS 'Per config_hash x hardware_id and run_date: mean J per output token, tokens/s, W and TTFT p50 of the day''s runs, and the % change of J/token and tokens/s against the previous run_date of the same config_hash on the same hardware_id (like with like; NULL for the first day).';
