-- Migration 7: energy per request and per phase, energy at a latency target, carbon and cost at query time,
-- published results to compare with (method: docs/methodology-attribution.md).
--
--   * requests gains each request's attributed energy (J) and its prefill / decode / baseline parts;
--   * experiment_results gains the run's attribution summary (per-request energy percentiles, prefill and
--     decode energy, idle energy, method, weight ratio) and TPOT p99 (back-filled from result_json);
--   * latency_targets (user-edited; seeded 'interactive' 500 ms TTFT p99 / 50 ms TPOT p99 and 'batch' with
--     no limit), factors (grid intensity, PUE, price, each with source and validity; `llem factors`) and
--     published_results (facts with their source) are read by the views at query time: none of them
--     enters a config hash, and changing a factor re-prices every stored run.
-- Runs stored before this migration keep NULL attribution columns (their run folders can be stored again).

ALTER TABLE requests ADD COLUMN IF NOT EXISTS energy_j DOUBLE;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS prefill_energy_j DOUBLE;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS decode_energy_j DOUBLE;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS baseline_energy_j DOUBLE;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS energy_uncertainty_j DOUBLE;
COMMENT ON COLUMN requests.energy_j IS 'Energy attributed to the request, J: its share of every interval it worked in (prefill_energy_j + decode_energy_j); NULL when not attributed.';
COMMENT ON COLUMN requests.prefill_energy_j IS 'Part of energy_j attributed to its prompt (prefill), J.';
COMMENT ON COLUMN requests.decode_energy_j IS 'Part of energy_j attributed to its generated tokens after the first (decode), J.';
COMMENT ON COLUMN requests.baseline_energy_j IS 'Part of energy_j the device draws at its idle baseline, J; NULL without a baseline.';
COMMENT ON COLUMN requests.energy_uncertainty_j IS 'Change of energy_j across the 95 % range of the prefill/decode weight ratio, J (± bound).';

ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS tpot_p99_ms DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS request_energy_p50_j DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS request_energy_p90_j DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS request_energy_p99_j DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS prefill_energy_j DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS decode_energy_j DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS prefill_share DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS prefill_uncertainty_j DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS idle_energy_j DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS prefill_direct_energy_j DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS prefill_direct_coverage DOUBLE;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS attribution_method VARCHAR;
ALTER TABLE experiment_results ADD COLUMN IF NOT EXISTS prefill_decode_ratio DOUBLE;
COMMENT ON COLUMN experiment_results.tpot_p99_ms IS 'Time per output token after the first, 99th percentile over requests, ms.';
COMMENT ON COLUMN experiment_results.request_energy_p50_j IS 'Energy per request (requests.energy_j), median over the run''s requests, J.';
COMMENT ON COLUMN experiment_results.request_energy_p90_j IS 'Energy per request, 90th percentile, J.';
COMMENT ON COLUMN experiment_results.request_energy_p99_j IS 'Energy per request, 99th percentile, J.';
COMMENT ON COLUMN experiment_results.prefill_energy_j IS 'Energy attributed to prefill (prompts), summed over requests, J.';
COMMENT ON COLUMN experiment_results.decode_energy_j IS 'Energy attributed to decode (tokens after the first), summed over requests, J.';
COMMENT ON COLUMN experiment_results.prefill_share IS 'prefill_energy_j / (prefill_energy_j + decode_energy_j), a fraction (0.2 = 20 %).';
COMMENT ON COLUMN experiment_results.prefill_uncertainty_j IS 'Change of prefill_energy_j across the 95 % range of the prefill/decode weight ratio, J (± bound).';
COMMENT ON COLUMN experiment_results.idle_energy_j IS 'Energy of the intervals in which no request worked (not attributed), J.';
COMMENT ON COLUMN experiment_results.prefill_direct_energy_j IS 'Measured energy of the sampler intervals in which only prefill ran (no weights), J: the prefill energy measured directly when the engine runs the phases apart.';
COMMENT ON COLUMN experiment_results.prefill_direct_coverage IS 'Fraction of prompt tokens prefilled in those intervals (1.0: every prefill ran apart from decode, so prefill_direct_energy_j is the whole prefill energy).';
COMMENT ON COLUMN experiment_results.attribution_method IS 'How the energy was split: interval_split:regression_ratio (weights fitted on the run) or interval_split:default_ratio, and what the intervals were scaled to.';
COMMENT ON COLUMN experiment_results.prefill_decode_ratio IS 'J per prompt token prefilled / J per token decoded used for the split (unitless).';
UPDATE experiment_results
SET tpot_p99_ms = TRY_CAST(json_extract(result_json, '$.latency_stats.tpot.p99_ms') AS DOUBLE)
WHERE tpot_p99_ms IS NULL;

CREATE TABLE IF NOT EXISTS latency_targets (
    target       VARCHAR NOT NULL PRIMARY KEY,
    ttft_p99_ms  DOUBLE CHECK (ttft_p99_ms IS NULL OR (isfinite(ttft_p99_ms) AND ttft_p99_ms > 0)),
    tpot_p99_ms  DOUBLE CHECK (tpot_p99_ms IS NULL OR (isfinite(tpot_p99_ms) AND tpot_p99_ms > 0)),
    description  VARCHAR
);
COMMENT ON TABLE latency_targets IS 'Latency targets a configuration must meet (user-edited, e.g. UPDATE latency_targets SET ttft_p99_ms = 300 WHERE target = ''interactive''); energy_at_target reads it at query time.';
COMMENT ON COLUMN latency_targets.target IS 'Name of the target, e.g. interactive, batch.';
COMMENT ON COLUMN latency_targets.ttft_p99_ms IS 'Highest allowed time to first token, 99th percentile, ms; NULL: no limit.';
COMMENT ON COLUMN latency_targets.tpot_p99_ms IS 'Highest allowed time per output token, 99th percentile, ms; NULL: no limit.';
COMMENT ON COLUMN latency_targets.description IS 'What the target is for.';
INSERT INTO latency_targets
SELECT * FROM (VALUES
    ('interactive', 500.0, 50.0, 'chat: first token within 500 ms and 50 ms per token after it, for 99 % of requests'),
    ('batch', NULL::DOUBLE, NULL::DOUBLE, 'offline batch: no latency limit (the lowest J/token of all)')
) AS v(target, ttft_p99_ms, tpot_p99_ms, description)
WHERE NOT EXISTS (SELECT 1 FROM latency_targets);

CREATE TABLE IF NOT EXISTS factors (
    name        VARCHAR NOT NULL CHECK (name IN ('grid_gco2_per_kwh', 'pue', 'price_per_kwh')),
    value       DOUBLE NOT NULL CHECK (isfinite(value) AND value >= 0),
    unit        VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    valid_from  TIMESTAMPTZ NOT NULL,
    valid_to    TIMESTAMPTZ,
    recorded_at TIMESTAMPTZ NOT NULL,
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
COMMENT ON TABLE factors IS 'Conversion factors maintained by the user (`llem factors set|import|list`): grid_gco2_per_kwh, pue, price_per_kwh, each valid from valid_from to valid_to; the views pick, for a run, the factor valid at its start_time (the latest recorded when several are).';
COMMENT ON COLUMN factors.name IS 'grid_gco2_per_kwh (gCO2e per kWh drawn) | pue (facility energy / IT energy, >= 1) | price_per_kwh (currency per kWh).';
COMMENT ON COLUMN factors.value IS 'The factor, in unit.';
COMMENT ON COLUMN factors.unit IS 'gCO2e/kWh | ratio | <currency>/kWh, e.g. EUR/kWh.';
COMMENT ON COLUMN factors.source IS 'Where the value comes from (publication, tariff, URL).';
COMMENT ON COLUMN factors.valid_from IS 'First instant the value applies, UTC.';
COMMENT ON COLUMN factors.valid_to IS 'First instant it no longer applies, UTC; NULL: still valid.';
COMMENT ON COLUMN factors.recorded_at IS 'When the row was recorded, UTC (the latest wins where validity overlaps).';

CREATE TABLE IF NOT EXISTS published_results (
    source          VARCHAR NOT NULL,
    citation        VARCHAR NOT NULL,
    model           VARCHAR NOT NULL,
    backend         VARCHAR NOT NULL,
    backend_version VARCHAR,
    gpu_name        VARCHAR NOT NULL,
    num_gpus        INTEGER NOT NULL,
    task            VARCHAR,
    max_num_seqs    INTEGER,
    j_per_token     DOUBLE NOT NULL,
    j_per_request   DOUBLE,
    avg_power_w     DOUBLE,
    note            VARCHAR
);
COMMENT ON TABLE published_results IS 'Published measurements of other tools, each with its source: facts to compare with (the published_reference check reports the ratio, never a pass or fail).';
COMMENT ON COLUMN published_results.source IS 'Who published it and which release.';
COMMENT ON COLUMN published_results.citation IS 'Where exactly: repository, file, commit or URL.';
COMMENT ON COLUMN published_results.model IS 'Model id as published (matched case-insensitively against a run''s model).';
COMMENT ON COLUMN published_results.backend IS 'Inference engine, as experiment_results.backend (vllm, pytorch, tensorrt).';
COMMENT ON COLUMN published_results.backend_version IS 'Engine version as published.';
COMMENT ON COLUMN published_results.gpu_name IS 'GPU product, matched as a substring of a run''s GPU names (e.g. H100).';
COMMENT ON COLUMN published_results.num_gpus IS 'GPUs used.';
COMMENT ON COLUMN published_results.task IS 'Workload as published.';
COMMENT ON COLUMN published_results.max_num_seqs IS 'Concurrency limit (vLLM max_num_seqs).';
COMMENT ON COLUMN published_results.j_per_token IS 'Published energy per output token, J.';
COMMENT ON COLUMN published_results.j_per_request IS 'Published energy per request (response), J.';
COMMENT ON COLUMN published_results.avg_power_w IS 'Published mean power, W (all GPUs).';
COMMENT ON COLUMN published_results.note IS 'How the published figure was measured.';
INSERT INTO published_results
SELECT * FROM (VALUES
    ('ML.ENERGY Leaderboard v3.0 (2025-12-01)', 'github.com/ml-energy/leaderboard @0cd52da, public/data/tasks/lm-arena-chat.json',
     'meta-llama/Llama-3.1-8B-Instruct', 'vllm', '0.11.1', 'H100', 1, 'lm-arena-chat', 8, 0.455, 176.8, 486.0,
     'steady-state window, GPU energy from the NVML counter (Zeus), no idle subtraction'),
    ('ML.ENERGY Leaderboard v3.0 (2025-12-01)', 'github.com/ml-energy/leaderboard @0cd52da, public/data/tasks/lm-arena-chat.json',
     'meta-llama/Llama-3.1-8B-Instruct', 'vllm', '0.11.1', 'H100', 1, 'lm-arena-chat', 64, 0.119, 46.9, 610.0,
     'steady-state window, GPU energy from the NVML counter (Zeus), no idle subtraction'),
    ('ML.ENERGY Leaderboard v3.0 (2025-12-01)', 'github.com/ml-energy/leaderboard @0cd52da, public/data/tasks/lm-arena-chat.json',
     'meta-llama/Llama-3.1-8B-Instruct', 'vllm', '0.11.1', 'H100', 1, 'lm-arena-chat', 128, 0.095, 38.5, 669.0,
     'steady-state window, GPU energy from the NVML counter (Zeus), no idle subtraction'),
    ('ML.ENERGY Leaderboard v3.0 (2025-12-01)', 'github.com/ml-energy/leaderboard @0cd52da, public/data/tasks/lm-arena-chat.json',
     'meta-llama/Llama-3.1-8B-Instruct', 'vllm', '0.11.1', 'H100', 1, 'lm-arena-chat', 512, 0.070, 27.8, 688.0,
     'steady-state window, GPU energy from the NVML counter (Zeus), no idle subtraction')
) AS v
WHERE NOT EXISTS (SELECT 1 FROM published_results);
