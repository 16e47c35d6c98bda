-- The statements that maintain config_day_stats (migration 6), run by ResultStore inside each write
-- transaction (llem_pipeline/storage/stats.py) for the groups the write touched. The groups are registered
-- as _llem_groups (config_hash, hardware_id, run_date); the computed rows as _llem_stats.
-- Each statement starts with a line `-- name: <name>`.

-- name: group_aggregates
-- One row per touched group that still has runs: its identity and counts, and the per-run values of
-- every averaged figure, sorted ascending. stats.py computes mean, median, std and the bootstrap interval
-- from these lists (with exactly rounded sums, so the same runs give the same numbers in any row order).
SELECT r.config_hash,
       r.hardware_id,
       r.run_date,
       min(r.workload_hash)                                   AS workload_hash,
       string_agg(DISTINCT r.study, ', ' ORDER BY r.study)    AS studies,
       min(r.model)                                           AS model,
       min(r.backend)                                         AS backend,
       min(r.precision)                                       AS precision,
       min(r.setting)                                         AS setting,
       min(r.batch_size)                                      AS batch_size,
       min(r.max_num_seqs)                                    AS max_num_seqs,
       min(r.tensor_parallel_size)                            AS tensor_parallel_size,
       bool_or(r.is_simulated)                                AS is_simulated,
       count(*)::INTEGER                                      AS n_runs,
       list(r.run_id ORDER BY r.run_id)                       AS run_ids,
       sum(r.n_warnings)::BIGINT                              AS n_warnings,
       bool_or(coalesce(r.throttled, false))                  AS any_throttled,
       max(r.end_time)                                        AS last_end_time,
       list(r.j_per_token ORDER BY r.j_per_token)             AS j_per_token_values,
       list(r.tokens_per_s ORDER BY r.tokens_per_s)           AS tokens_per_s_values,
       list(r.energy_adjusted_j / nullif(r.total_tokens, 0) ORDER BY r.energy_adjusted_j / nullif(r.total_tokens, 0))
                                                              AS adjusted_j_per_token_values,
       list(r.avg_power_w ORDER BY r.avg_power_w)             AS avg_power_w_values,
       list(r.ttft_p50_ms ORDER BY r.ttft_p50_ms)             AS ttft_p50_ms_values
FROM experiment_results AS r
WHERE (r.config_hash, r.hardware_id, r.run_date) IN (SELECT config_hash, hardware_id, run_date FROM _llem_groups)
GROUP BY r.config_hash, r.hardware_id, r.run_date;

-- name: delete_groups
DELETE FROM config_day_stats
WHERE (config_hash, hardware_id, run_date) IN (SELECT config_hash, hardware_id, run_date FROM _llem_groups);

-- name: insert_groups
INSERT INTO config_day_stats BY NAME SELECT * FROM _llem_stats;

-- name: link_days
-- prev_* / next_run_date of every day of the touched config x hardware pairs: the neighbouring days of the
-- same config_hash on the same hardware_id only (like with like).
UPDATE config_day_stats AS s
SET prev_run_date = w.prev_run_date,
    prev_j_per_token = w.prev_j_per_token,
    prev_tokens_per_s = w.prev_tokens_per_s,
    next_run_date = w.next_run_date
FROM (
    SELECT rowid                          AS rid,
           lag(run_date)          OVER d  AS prev_run_date,
           lag(j_per_token_mean)  OVER d  AS prev_j_per_token,
           lag(tokens_per_s_mean) OVER d  AS prev_tokens_per_s,
           lead(run_date)         OVER d  AS next_run_date
    FROM config_day_stats
    WHERE (config_hash, hardware_id) IN (SELECT config_hash, hardware_id FROM _llem_groups)
    WINDOW d AS (PARTITION BY config_hash, hardware_id ORDER BY run_date)
) AS w
WHERE s.rowid = w.rid;
