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

-- Energy per request and per phase (requests.energy_j, docs/methodology-attribution.md), per config x hardware
-- and day: percentiles over every request of the day's runs (pooled as raw values, never averaged percentiles).
CREATE OR REPLACE VIEW request_energy AS
SELECT
    e.config_hash,
    e.hardware_id,
    e.run_date,
    any_value(e.model)                                   AS model,
    any_value(e.backend)                                 AS backend,
    any_value(e.setting)                                 AS setting,
    any_value(e.workload_hash)                           AS workload_hash,
    bool_or(e.is_simulated)                              AS is_simulated,
    count(DISTINCT e.run_id)                             AS n_runs,
    count(*)                                             AS n_requests,
    quantile_cont(q.energy_j, 0.5)                       AS j_per_request_p50,
    quantile_cont(q.energy_j, 0.9)                       AS j_per_request_p90,
    quantile_cont(q.energy_j, 0.99)                      AS j_per_request_p99,
    avg(q.energy_j)                                      AS j_per_request_mean,
    sum(q.prefill_energy_j)                              AS prefill_energy_j,
    sum(q.decode_energy_j)                               AS decode_energy_j,
    sum(q.prefill_energy_j) / nullif(sum(q.energy_j), 0) AS prefill_share,
    sum(q.decode_energy_j) / nullif(sum(q.energy_j), 0)  AS decode_share,
    sum(q.baseline_energy_j) / nullif(sum(q.energy_j), 0) AS baseline_share,
    sum(q.energy_uncertainty_j)                          AS energy_uncertainty_j,
    list(DISTINCT e.attribution_method)                  AS attribution_methods,
    max(e.run_date) OVER (PARTITION BY e.config_hash, e.hardware_id) = e.run_date AS is_latest_day
FROM requests AS q
JOIN experiment_results AS e USING (config_hash, hardware_id, run_id)
WHERE q.energy_j IS NOT NULL
GROUP BY e.config_hash, e.hardware_id, e.run_date;
COMMENT ON VIEW request_energy IS 'Per config_hash x hardware_id x run_date: energy per request (requests.energy_j) p50 / p90 / p99 / mean over every request of the day''s runs, J; prefill and decode energy (J) and their shares of the attributed energy (fractions), the baseline share, the summed ± of the split, the attribution method(s), and is_latest_day. Runs without attribution are left out.';

-- J/token against latency per config x hardware over its latest day: the points of the Pareto chart and what
-- energy_at_target chooses from. Latency is the worst run of the day (a target must hold on every run).
CREATE OR REPLACE VIEW energy_latency AS
SELECT
    e.config_hash,
    e.hardware_id,
    e.run_date,
    any_value(e.model)         AS model,
    any_value(e.backend)       AS backend,
    any_value(e.setting)       AS setting,
    any_value(e.workload_hash) AS workload_hash,
    bool_or(e.is_simulated)    AS is_simulated,
    count(*)                   AS n_runs,
    avg(e.j_per_token)         AS j_per_token,
    avg(e.tokens_per_s)        AS tokens_per_s,
    max(e.ttft_p99_ms)         AS ttft_p99_ms,
    max(e.tpot_p99_ms)         AS tpot_p99_ms,
    avg(e.prefill_share)       AS prefill_share
FROM experiment_results AS e
JOIN config_day_stats AS s USING (config_hash, hardware_id, run_date)
WHERE s.next_run_date IS NULL
GROUP BY e.config_hash, e.hardware_id, e.run_date;
COMMENT ON VIEW energy_latency IS 'Per config_hash x hardware_id over its latest run_date: mean J per output token and tokens/s of the day''s runs, and the worst TTFT p99 and TPOT p99 (ms) among them; the points of the J/token vs latency Pareto chart.';

-- The lowest-J/token config meeting each latency target, per model x backend x hardware x workload (never
-- pooled: hardware_id names the device kind, so a simulated run never competes with a real one). Groups in
-- which no config meets a target are listed with NULL config_hash.
CREATE OR REPLACE VIEW energy_at_target AS
WITH judged AS (
    SELECT t.target, t.ttft_p99_ms AS target_ttft_p99_ms, t.tpot_p99_ms AS target_tpot_p99_ms, l.*,
           coalesce((t.ttft_p99_ms IS NULL OR l.ttft_p99_ms <= t.ttft_p99_ms)
                    AND (t.tpot_p99_ms IS NULL OR l.tpot_p99_ms <= t.tpot_p99_ms), false) AS meets
    FROM energy_latency AS l CROSS JOIN latency_targets AS t
)
SELECT
    target,
    model,
    backend,
    hardware_id,
    workload_hash,
    is_simulated,
    any_value(target_ttft_p99_ms)                                                   AS target_ttft_p99_ms,
    any_value(target_tpot_p99_ms)                                                   AS target_tpot_p99_ms,
    count(*)                                                                        AS n_configs,
    count(*) FILTER (WHERE meets)                                                   AS n_meeting,
    arg_min(config_hash, j_per_token) FILTER (WHERE meets)                          AS config_hash,
    arg_min(setting, j_per_token) FILTER (WHERE meets)                              AS setting,
    min(j_per_token) FILTER (WHERE meets)                                           AS j_per_token,
    arg_min(ttft_p99_ms, j_per_token) FILTER (WHERE meets)                          AS ttft_p99_ms,
    arg_min(tpot_p99_ms, j_per_token) FILTER (WHERE meets)                          AS tpot_p99_ms,
    min(j_per_token)                                                                AS best_j_per_token_any_latency
FROM judged
GROUP BY target, model, backend, hardware_id, workload_hash, is_simulated;
COMMENT ON VIEW energy_at_target IS 'Per latency_targets row x model x backend x hardware_id x workload_hash: the config with the lowest J per output token whose TTFT p99 and TPOT p99 (worst run of its latest day, ms) meet the target (NULL config_hash when none does), how many configs were considered and met it, and the lowest J/token regardless of latency.';

-- gCO2e and cost per 1,000 requests of every run, from the factors valid at the run's start (joined at query
-- time: editing factors re-prices old runs; nothing of it is in a config hash). Energy: the run's window
-- energy (total_energy_j) per request, x PUE.
CREATE OR REPLACE VIEW carbon_cost AS
WITH runs AS (
    SELECT e.run_date, e.config_hash, e.hardware_id, e.run_id, e.model, e.backend, e.setting, e.workload_hash,
           e.is_simulated, e.start_time, e.total_energy_j, p.n_requests
    FROM experiment_results AS e
    JOIN (SELECT config_hash, hardware_id, run_id, sum(num_requests)::BIGINT AS n_requests
          FROM process_results GROUP BY ALL) AS p USING (config_hash, hardware_id, run_id)
),
valid AS (
    SELECT r.config_hash, r.hardware_id, r.run_id, f.name,
           arg_max(f.value, f.recorded_at) AS value, arg_max(f.unit, f.recorded_at) AS unit,
           arg_max(f.source, f.recorded_at) AS source
    FROM runs AS r JOIN factors AS f
      ON f.valid_from <= r.start_time AND (f.valid_to IS NULL OR r.start_time < f.valid_to)
    GROUP BY ALL
),
priced AS (
    SELECT r.*,
           1000.0 * r.total_energy_j / nullif(r.n_requests, 0) / 3.6e6 AS kwh_per_1k_requests,
           max(v.value) FILTER (WHERE v.name = 'grid_gco2_per_kwh') AS grid_gco2_per_kwh,
           max(v.value) FILTER (WHERE v.name = 'pue')               AS pue,
           max(v.value) FILTER (WHERE v.name = 'price_per_kwh')     AS price_per_kwh,
           max(v.unit) FILTER (WHERE v.name = 'price_per_kwh')      AS price_unit,
           list(v.name || ': ' || v.source ORDER BY v.name) FILTER (WHERE v.name IS NOT NULL) AS factor_sources
    FROM runs AS r LEFT JOIN valid AS v USING (config_hash, hardware_id, run_id)
    GROUP BY ALL
)
SELECT
    run_date, config_hash, hardware_id, run_id, model, backend, setting, workload_hash, is_simulated, start_time,
    n_requests,
    kwh_per_1k_requests,
    coalesce(pue, 1.0)                                              AS pue,
    pue IS NULL                                                     AS pue_missing,
    grid_gco2_per_kwh,
    kwh_per_1k_requests * coalesce(pue, 1.0) * grid_gco2_per_kwh    AS gco2_per_1k_requests,
    price_per_kwh,
    replace(price_unit, '/kWh', '')                                 AS currency,
    kwh_per_1k_requests * coalesce(pue, 1.0) * price_per_kwh        AS cost_per_1k_requests,
    factor_sources
FROM priced;
COMMENT ON VIEW carbon_cost IS 'Per run: kWh per 1,000 requests (window energy / requests), and with the factors valid at the run''s start_time (latest recorded wins) gCO2e and cost per 1,000 requests = kWh x PUE x grid_gco2_per_kwh | price_per_kwh; PUE 1.0 when none is set (pue_missing), NULL carbon / cost when their factor is missing; factor_sources names each factor''s source.';

-- Our real-GPU runs next to published measurements of the same model, engine, GPU and concurrency.
CREATE OR REPLACE VIEW published_comparison AS
SELECT
    e.config_hash, e.hardware_id, e.run_id, e.run_date, e.model, e.backend, e.setting, e.max_num_seqs,
    e.j_per_token, p.j_per_token AS published_j_per_token, e.j_per_token / p.j_per_token AS ratio_to_published,
    p.source, p.citation, p.task, p.note
FROM experiment_results AS e
JOIN published_results AS p
  ON NOT e.is_simulated
 AND lower(e.model) LIKE '%' || lower(split_part(p.model, '/', -1)) || '%'
 AND e.backend = p.backend
 AND e.max_num_seqs IS NOT DISTINCT FROM p.max_num_seqs
 AND len(e.gpu_names) = p.num_gpus
 AND list_bool_and(list_transform(e.gpu_names, lambda g: contains(g, p.gpu_name)));
COMMENT ON VIEW published_comparison IS 'Real-GPU runs (never simulated) whose model, backend, GPU (name and count) and max_num_seqs match a published_results row: our J/token, the published one and their ratio, with the source. Information, not a pass or fail: the workloads differ.';
