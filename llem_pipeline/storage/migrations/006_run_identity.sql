-- Migration 6: a measurement is identified by (config_hash, hardware_id, run_id), with run_date beside it;
-- one vocabulary for the headline metrics; per-config statistics over repeats.
--
-- Before this migration a partition (run_date, config_hash) held one run: a second run of a config on the
-- same day (another cycle, or a simulated run after a real one) replaced the first, and the views pooled
-- GPU models and workloads. Now:
--   * hardware_id (device kind + GPU model + GPU count, llem_pipeline/domain/identity.py) is on every
--     measurement table and in the key; every run is kept, a rewrite of a run_id replaces that run only;
--   * experiment_results also carries workload_hash (prompts, n, lengths, sampling), cycle (repeat of the
--     study schedule), measurement_key (the Dagster partition key) and label (its human label);
--   * the headline columns use the names of the views and the UI: j_per_token (was avg_energy_per_token_j),
--     tokens_per_s (was avg_tokens_per_second);
--   * config_day_stats holds the per config x hardware x day statistics the views project (maintained by
--     ResultStore in each write transaction, llem_pipeline/storage/stats.py); the per-config previous-night
--     columns of migration 2 are dropped (they compared across hardware).
--
-- Existing rows: this file gives them hardware_id 'unknown:no-gpu:x0' and workload_hash = config_hash (a
-- workload of their own: never pooled with another config). ResultStore then runs the Python step of this
-- migration (llem_pipeline/storage/migrate.py: backfill_run_identity), which computes the real values:
-- hardware_id from each run's device_kind and gpu_names, workload_hash from result_json's effective_config,
-- and config_day_stats for every stored group. cycle, measurement_key and label stay NULL for old rows.

ALTER TABLE experiment_results ADD COLUMN hardware_id VARCHAR NOT NULL DEFAULT 'unknown:no-gpu:x0';
ALTER TABLE process_results ADD COLUMN hardware_id VARCHAR NOT NULL DEFAULT 'unknown:no-gpu:x0';
ALTER TABLE environment_snapshots ADD COLUMN hardware_id VARCHAR NOT NULL DEFAULT 'unknown:no-gpu:x0';
ALTER TABLE baselines ADD COLUMN hardware_id VARCHAR NOT NULL DEFAULT 'unknown:no-gpu:x0';
ALTER TABLE power_samples ADD COLUMN hardware_id VARCHAR NOT NULL DEFAULT 'unknown:no-gpu:x0';
ALTER TABLE requests ADD COLUMN hardware_id VARCHAR NOT NULL DEFAULT 'unknown:no-gpu:x0';
ALTER TABLE partition_manifest ADD COLUMN hardware_id VARCHAR NOT NULL DEFAULT 'unknown:no-gpu:x0';
ALTER TABLE experiment_results ADD COLUMN workload_hash VARCHAR NOT NULL DEFAULT '';
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS cycle INTEGER;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS measurement_key VARCHAR;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS label VARCHAR;
-- The defaults only filled the existing rows: every new row must name its hardware and workload.
ALTER TABLE experiment_results ALTER COLUMN hardware_id DROP DEFAULT;
ALTER TABLE process_results ALTER COLUMN hardware_id DROP DEFAULT;
ALTER TABLE environment_snapshots ALTER COLUMN hardware_id DROP DEFAULT;
ALTER TABLE baselines ALTER COLUMN hardware_id DROP DEFAULT;
ALTER TABLE power_samples ALTER COLUMN hardware_id DROP DEFAULT;
ALTER TABLE requests ALTER COLUMN hardware_id DROP DEFAULT;
ALTER TABLE partition_manifest ALTER COLUMN hardware_id DROP DEFAULT;
ALTER TABLE experiment_results ALTER COLUMN workload_hash DROP DEFAULT;

ALTER TABLE experiment_results RENAME COLUMN avg_energy_per_token_j TO j_per_token;
ALTER TABLE experiment_results RENAME COLUMN avg_tokens_per_second TO tokens_per_s;
ALTER TABLE experiment_results DROP COLUMN IF EXISTS prev_run_date;
ALTER TABLE experiment_results DROP COLUMN IF EXISTS prev_j_per_token;
ALTER TABLE experiment_results DROP COLUMN IF EXISTS prev_tokens_per_s;

UPDATE experiment_results SET workload_hash = config_hash WHERE workload_hash = '';

COMMENT ON TABLE experiment_results IS 'One ExperimentResult v2.0 per measurement run, identified by (config_hash, hardware_id, run_id) with run_date beside it: identity and headline columns flattened for SQL, plus the full result as JSON. Every run is kept.';
COMMENT ON COLUMN experiment_results.run_date IS 'Date of the run (the partition date, e.g. the nightly date), YYYY-MM-DD.';
COMMENT ON COLUMN experiment_results.run_id IS 'Id of the run that measured it (a Dagster run id or a worker run id); with config_hash and hardware_id the key of the measurement.';
COMMENT ON COLUMN experiment_results.hardware_id IS 'What it ran on: <device kind>:<GPU model(s)>:x<GPU count>, e.g. nvml:H100-80GB-HBM3:x1 or simulated:Simulated-GPU:x1 (llem_pipeline/domain/identity.py). Simulated and real, and two GPU models, never share one.';
COMMENT ON COLUMN experiment_results.workload_hash IS 'SHA-256[:16] of the workload part of the config: dataset, n, max input/output tokens, fixed output length, prompt seed, decoding (compute_workload_hash). Runs written before migration 6 whose config could not be read carry their config_hash here (a workload of their own).';
COMMENT ON COLUMN experiment_results.cycle IS '0-based repeat of the study schedule this run belongs to; NULL when unknown (e.g. written before migration 6).';
COMMENT ON COLUMN experiment_results.measurement_key IS 'Dagster partition key of the measurement (stable, e.g. demo~batch_size=8~sim~2de5716c); NULL when written outside Dagster.';
COMMENT ON COLUMN experiment_results.label IS 'Human label of the measurement (study, swept values, hardware), e.g. ''demo · batch_size=8 · simulated''.';
COMMENT ON COLUMN experiment_results.setting IS 'The engine setting as a label, e.g. ''batch_size=8'' or ''max_num_seqs=64,tp=1'' (what a study sweeps; views show it beside config_hash).';
COMMENT ON COLUMN experiment_results.is_simulated IS 'TRUE unless energy came from a live NVIDIA GPU: hardware_id not nvml:..., or the result says simulated/replay (device_kind or energy_method).';
COMMENT ON COLUMN experiment_results.tokens_per_s IS 'Output throughput: total_tokens / total_inference_time_sec, tokens/s (ExperimentResult.avg_tokens_per_second).';
COMMENT ON COLUMN experiment_results.j_per_token IS 'total_energy_j / total_tokens, J per output token, the primary efficiency metric (ExperimentResult.avg_energy_per_token_j).';

COMMENT ON TABLE process_results IS 'One RawProcessResult per engine process of a run (process_<k>.json), keyed by (config_hash, hardware_id, run_id, process_index).';
COMMENT ON COLUMN process_results.run_date IS 'Date of the run, YYYY-MM-DD.';
COMMENT ON COLUMN process_results.hardware_id IS 'hardware_id of the run (see experiment_results.hardware_id).';
COMMENT ON TABLE environment_snapshots IS 'The software and hardware a run measured on (environment.json): one row per run (config_hash, hardware_id, run_id).';
COMMENT ON COLUMN environment_snapshots.run_date IS 'Date of the run, YYYY-MM-DD.';
COMMENT ON COLUMN environment_snapshots.hardware_id IS 'hardware_id of the run (see experiment_results.hardware_id).';
COMMENT ON TABLE baselines IS 'Idle power measured before the model loaded (baseline.json): one row per device of a run (config_hash, hardware_id, run_id, device_uuid).';
COMMENT ON COLUMN baselines.run_date IS 'Date of the run, YYYY-MM-DD.';
COMMENT ON COLUMN baselines.hardware_id IS 'hardware_id of the run (see experiment_results.hardware_id).';
COMMENT ON TABLE power_samples IS 'Raw power samples of every process at native resolution (timeseries.parquet): one row per sampler tick and device of a run (config_hash, hardware_id, run_id).';
COMMENT ON COLUMN power_samples.run_date IS 'Date of the run, YYYY-MM-DD.';
COMMENT ON COLUMN power_samples.hardware_id IS 'hardware_id of the run (see experiment_results.hardware_id).';
COMMENT ON TABLE requests IS 'One row per measured request of a run (requests.parquet); warmup requests are not stored.';
COMMENT ON COLUMN requests.run_date IS 'Date of the run, YYYY-MM-DD.';
COMMENT ON COLUMN requests.hardware_id IS 'hardware_id of the run (see experiment_results.hardware_id).';

COMMENT ON TABLE partition_manifest IS 'What the store wrote: one row per (table_name, config_hash, hardware_id, run_id), replaced with the run in the same transaction; ResultStore.audit() / `llem sql --audit` compare it with the tables.';
COMMENT ON COLUMN partition_manifest.table_name IS 'Measurement table the rows were written to.';
COMMENT ON COLUMN partition_manifest.run_date IS 'Date of the run, YYYY-MM-DD.';
COMMENT ON COLUMN partition_manifest.config_hash IS 'config_hash of the run.';
COMMENT ON COLUMN partition_manifest.hardware_id IS 'hardware_id of the run.';
COMMENT ON COLUMN partition_manifest.run_id IS 'run_id of the run.';
COMMENT ON COLUMN partition_manifest.row_count IS 'Rows the write put in this table for the run (0 when the run has none there).';
COMMENT ON COLUMN write_sequence.seq IS 'Write number of the last committed store write (0 before the first).';
COMMENT ON TABLE write_sequence IS 'One row: the number of the last store write committed to this file; the write journal (<db>.writes.jsonl) must not be ahead of it.';

-- -----------------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS config_day_stats (
    config_hash          VARCHAR NOT NULL,
    hardware_id          VARCHAR NOT NULL,
    run_date             DATE NOT NULL,
    workload_hash        VARCHAR NOT NULL,
    studies              VARCHAR,
    model                VARCHAR,
    backend              VARCHAR,
    precision            VARCHAR,
    setting              VARCHAR,
    batch_size           INTEGER,
    max_num_seqs         INTEGER,
    tensor_parallel_size INTEGER,
    is_simulated         BOOLEAN NOT NULL,
    n_runs               INTEGER NOT NULL,
    run_ids              VARCHAR[] NOT NULL,
    j_per_token_mean     DOUBLE,
    j_per_token_median   DOUBLE,
    j_per_token_std      DOUBLE,
    j_per_token_ci_low   DOUBLE,
    j_per_token_ci_high  DOUBLE,
    tokens_per_s_mean    DOUBLE,
    tokens_per_s_median  DOUBLE,
    tokens_per_s_std     DOUBLE,
    tokens_per_s_ci_low  DOUBLE,
    tokens_per_s_ci_high DOUBLE,
    adjusted_j_per_token DOUBLE,
    avg_power_w          DOUBLE,
    ttft_p50_ms          DOUBLE,
    n_warnings           BIGINT,
    any_throttled        BOOLEAN,
    last_end_time        TIMESTAMPTZ,
    prev_run_date        DATE,
    prev_j_per_token     DOUBLE,
    prev_tokens_per_s    DOUBLE,
    next_run_date        DATE
);
COMMENT ON TABLE config_day_stats IS 'Statistics of the runs of one config_hash on one hardware_id on one run_date (repeats: cycles, re-runs), maintained by ResultStore inside every write transaction for the groups it touched (llem_pipeline/storage/stats.py). The views config_stats, efficiency and nightly_trend project it.';
COMMENT ON COLUMN config_day_stats.config_hash IS 'config_hash of the runs.';
COMMENT ON COLUMN config_day_stats.hardware_id IS 'hardware_id of the runs (never pooled across hardware).';
COMMENT ON COLUMN config_day_stats.run_date IS 'run_date of the runs.';
COMMENT ON COLUMN config_day_stats.workload_hash IS 'workload_hash of the config (one per config).';
COMMENT ON COLUMN config_day_stats.studies IS 'Distinct study names of the runs, sorted, joined by '', ''.';
COMMENT ON COLUMN config_day_stats.model IS 'Model id or path.';
COMMENT ON COLUMN config_day_stats.backend IS 'Inference engine.';
COMMENT ON COLUMN config_day_stats.precision IS 'fp32 | fp16 | bf16.';
COMMENT ON COLUMN config_day_stats.setting IS 'Engine setting label (experiment_results.setting).';
COMMENT ON COLUMN config_day_stats.batch_size IS 'pytorch.batch_size; NULL for other engines.';
COMMENT ON COLUMN config_day_stats.max_num_seqs IS 'vllm.max_num_seqs; NULL when unset or not vllm.';
COMMENT ON COLUMN config_day_stats.tensor_parallel_size IS 'vllm.tensor_parallel_size; NULL for other engines.';
COMMENT ON COLUMN config_day_stats.is_simulated IS 'TRUE for simulated or replayed devices (from hardware_id and the results).';
COMMENT ON COLUMN config_day_stats.n_runs IS 'Runs in the group.';
COMMENT ON COLUMN config_day_stats.run_ids IS 'run_id of every run in the group, sorted.';
COMMENT ON COLUMN config_day_stats.j_per_token_mean IS 'Mean over the runs of j_per_token, J per output token.';
COMMENT ON COLUMN config_day_stats.j_per_token_median IS 'Median over the runs of j_per_token, J per output token.';
COMMENT ON COLUMN config_day_stats.j_per_token_std IS 'Sample standard deviation (n - 1) of j_per_token over the runs, J; NULL with one run.';
COMMENT ON COLUMN config_day_stats.j_per_token_ci_low IS 'Lower bound of the 95 % percentile-bootstrap confidence interval of the mean j_per_token (2000 resamples, fixed seed, over the values sorted: the same runs give the same interval), J; NULL with one run.';
COMMENT ON COLUMN config_day_stats.j_per_token_ci_high IS 'Upper bound of that interval, J; NULL with one run.';
COMMENT ON COLUMN config_day_stats.tokens_per_s_mean IS 'Mean over the runs of tokens_per_s, output tokens/s.';
COMMENT ON COLUMN config_day_stats.tokens_per_s_median IS 'Median over the runs of tokens_per_s, tokens/s.';
COMMENT ON COLUMN config_day_stats.tokens_per_s_std IS 'Sample standard deviation of tokens_per_s over the runs, tokens/s; NULL with one run.';
COMMENT ON COLUMN config_day_stats.tokens_per_s_ci_low IS 'Lower bound of the 95 % bootstrap confidence interval of the mean tokens_per_s (as for J/token), tokens/s.';
COMMENT ON COLUMN config_day_stats.tokens_per_s_ci_high IS 'Upper bound of that interval, tokens/s.';
COMMENT ON COLUMN config_day_stats.adjusted_j_per_token IS 'Mean over the runs of energy_adjusted_j / total_tokens, J per output token above idle.';
COMMENT ON COLUMN config_day_stats.avg_power_w IS 'Mean over the runs of avg_power_w, W.';
COMMENT ON COLUMN config_day_stats.ttft_p50_ms IS 'Mean over the runs of ttft_p50_ms (each run''s median TTFT), ms.';
COMMENT ON COLUMN config_day_stats.n_warnings IS 'Measurement warnings of all runs, summed.';
COMMENT ON COLUMN config_day_stats.any_throttled IS 'TRUE when any run saw a thermal / power-cap / HW slowdown clock event.';
COMMENT ON COLUMN config_day_stats.last_end_time IS 'Latest end_time of the runs, UTC.';
COMMENT ON COLUMN config_day_stats.prev_run_date IS 'The previous run_date with runs of the same config_hash on the same hardware_id (NULL for the first).';
COMMENT ON COLUMN config_day_stats.prev_j_per_token IS 'j_per_token_mean of that previous day, J per output token.';
COMMENT ON COLUMN config_day_stats.prev_tokens_per_s IS 'tokens_per_s_mean of that previous day, tokens/s.';
COMMENT ON COLUMN config_day_stats.next_run_date IS 'The next run_date with runs of the same config_hash on the same hardware_id (NULL for the latest day).';
