-- Migration 2: previous-night columns on experiment_results, maintained by the writer.
-- (Migration 6 drops them: they compared a config's nights across hardware. The previous day of the same
-- config on the same hardware now lives in config_day_stats, see migrations/006_run_identity.sql.)
--
-- ResultStore recomputes these for every config it writes, inside the write transaction, so
-- nightly_trend is a plain projection (a window over 100k results on every read was ~3x slower).
-- They equal, for each row:
--   lag(run_date | avg_energy_per_token_j | avg_tokens_per_second)
--       OVER (PARTITION BY config_hash ORDER BY run_date)
-- (one run per (run_date, config_hash) is guaranteed by the partition writes). Rows written
-- without ResultStore (e.g. by hand in the duckdb shell) must refresh them with the UPDATE below.

ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS prev_run_date DATE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS prev_j_per_token DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS prev_tokens_per_s DOUBLE;
COMMENT ON COLUMN experiment_results.prev_run_date IS 'run_date of the previous stored night of the same config_hash (NULL for the first); maintained by the writer.';
COMMENT ON COLUMN experiment_results.prev_j_per_token IS 'avg_energy_per_token_j of that previous night, J/token; maintained by the writer.';
COMMENT ON COLUMN experiment_results.prev_tokens_per_s IS 'avg_tokens_per_second of that previous night, tokens/s; maintained by the writer.';

UPDATE experiment_results AS e
SET prev_run_date = p.prev_run_date, prev_j_per_token = p.prev_j_per_token, prev_tokens_per_s = p.prev_tokens_per_s
FROM (
    SELECT rowid AS rid,
           lag(run_date)               OVER w AS prev_run_date,
           lag(avg_energy_per_token_j) OVER w AS prev_j_per_token,
           lag(avg_tokens_per_second)  OVER w AS prev_tokens_per_s
    FROM experiment_results
    WINDOW w AS (PARTITION BY config_hash ORDER BY run_date)
) AS p
WHERE e.rowid = p.rid;
