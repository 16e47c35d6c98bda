-- llem_pipeline result store, schema version 1.
--
-- Plain DuckDB SQL: run it in the duckdb shell (`duckdb data/llem.duckdb < schema.sql`) or let
-- `ResultStore.ensure_schema()` apply it. Every statement is idempotent (IF NOT EXISTS).
--
-- Keys (as migrated: migrations/006_run_identity.sql adds hardware_id and renames two columns): a
-- measurement is identified by (config_hash, hardware_id, run_id), with run_date beside it; every
-- measurement table carries the four columns. ResultStore writes whole runs in ONE transaction
-- (DELETE the rows of exactly those runs from every table, INSERT the new rows, COMMIT), so a retry
-- of a run is idempotent, no other run is ever touched, and a crash leaves the old or the new rows,
-- never half. Keys are not declared as PRIMARY KEY constraints: DuckDB's ART indexes slow bulk
-- ingest and the writer guarantees uniqueness per run.
--
-- Units are in the column names or comments: J (joules), W (watts), s, ms, mJ, MB, °C, MHz, %.
-- Times: TIMESTAMPTZ (UTC) for wall clock, DOUBLE seconds from a monotonic clock for durations.

CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL,
    description VARCHAR NOT NULL
);
COMMENT ON TABLE schema_version IS 'Migrations applied to this database: one row per schema version (the highest is the current one).';
COMMENT ON COLUMN schema_version.version IS 'Schema migration number (1 = schema.sql).';
COMMENT ON COLUMN schema_version.applied_at IS 'When the migration was applied, UTC.';
COMMENT ON COLUMN schema_version.description IS 'What the migration did.';

-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS experiment_configs (
    config_hash   VARCHAR NOT NULL,
    study         VARCHAR NOT NULL,
    model         VARCHAR NOT NULL,
    backend       VARCHAR NOT NULL,
    precision     VARCHAR NOT NULL,
    config_json   JSON NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (config_hash, study)
);
COMMENT ON TABLE experiment_configs IS 'Every experiment a study defines (one row per config hash and study); written when a study is registered, before anything is measured.';
COMMENT ON COLUMN experiment_configs.config_hash IS 'measurement_config_hash: SHA-256[:16] of the ExperimentConfig JSON (16 lowercase hex).';
COMMENT ON COLUMN experiment_configs.study IS 'Name of the study (studies/<name>.yaml) that defines this experiment.';
COMMENT ON COLUMN experiment_configs.model IS 'Hugging Face model id or local model directory.';
COMMENT ON COLUMN experiment_configs.backend IS 'Inference engine: pytorch | vllm | tensorrt.';
COMMENT ON COLUMN experiment_configs.precision IS 'Weights and compute precision: fp32 | fp16 | bf16.';
COMMENT ON COLUMN experiment_configs.config_json IS 'The full ExperimentConfig (model_dump(mode="json")).';
COMMENT ON COLUMN experiment_configs.registered_at IS 'When the study registered (or last re-registered) this experiment, UTC.';

-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS experiment_results (
    run_date                 DATE NOT NULL,
    config_hash              VARCHAR NOT NULL,
    run_id                   VARCHAR NOT NULL,
    experiment_id            VARCHAR NOT NULL,
    study                    VARCHAR,
    model                    VARCHAR,
    backend                  VARCHAR NOT NULL,
    backend_version          VARCHAR,
    precision                VARCHAR,
    batch_size               INTEGER,
    max_num_seqs             INTEGER,
    tensor_parallel_size     INTEGER,
    pipeline_parallel_size   INTEGER,
    num_processes            INTEGER,
    n_prompts                INTEGER,
    max_input_tokens         INTEGER,
    max_output_tokens        INTEGER,
    fixed_output_length      BOOLEAN,
    setting                  VARCHAR,
    device_kind              VARCHAR,
    is_simulated             BOOLEAN NOT NULL,
    gpu_names                VARCHAR[],
    num_devices              INTEGER,
    energy_method            VARCHAR,
    measurement_methodology  VARCHAR NOT NULL,
    total_tokens             BIGINT NOT NULL,
    input_tokens             BIGINT,
    total_inference_time_sec DOUBLE NOT NULL,
    avg_tokens_per_second    DOUBLE NOT NULL,
    total_energy_j           DOUBLE NOT NULL,
    avg_energy_per_token_j   DOUBLE NOT NULL,
    energy_adjusted_j        DOUBLE,
    baseline_power_w         DOUBLE,
    energy_trace_agreement   DOUBLE,
    energy_uncertainty_j     DOUBLE,
    avg_power_w              DOUBLE,
    total_flops              DOUBLE,
    ttft_p50_ms              DOUBLE,
    ttft_p99_ms              DOUBLE,
    itl_p50_ms               DOUBLE,
    tpot_mean_ms             DOUBLE,
    e2e_p50_ms               DOUBLE,
    throttled                BOOLEAN,
    max_temperature_c        DOUBLE,
    n_warnings               INTEGER NOT NULL,
    warnings                 VARCHAR[],
    start_time               TIMESTAMPTZ NOT NULL,
    end_time                 TIMESTAMPTZ NOT NULL,
    schema_version           VARCHAR NOT NULL,
    result_json              JSON NOT NULL
);
COMMENT ON TABLE experiment_results IS 'One ExperimentResult v2.0 per (run_date, config_hash, run_id): headline columns flattened for SQL plus the full result as JSON.';
COMMENT ON COLUMN experiment_results.run_date IS 'Partition date of the run (the nightly date), YYYY-MM-DD.';
COMMENT ON COLUMN experiment_results.config_hash IS 'measurement_config_hash of what was measured (16 lowercase hex).';
COMMENT ON COLUMN experiment_results.run_id IS 'Id of the run that measured it (a Dagster run id or a worker run id).';
COMMENT ON COLUMN experiment_results.experiment_id IS 'ExperimentResult.experiment_id.';
COMMENT ON COLUMN experiment_results.study IS 'Study the experiment belongs to; NULL when written without one and not unique in experiment_configs.';
COMMENT ON COLUMN experiment_results.model IS 'Model id or path, from effective_config.model.';
COMMENT ON COLUMN experiment_results.backend IS 'Inference engine: pytorch | vllm | tensorrt.';
COMMENT ON COLUMN experiment_results.backend_version IS 'Engine library version (transformers / vllm).';
COMMENT ON COLUMN experiment_results.precision IS 'fp32 | fp16 | bf16, from effective_config.precision.';
COMMENT ON COLUMN experiment_results.batch_size IS 'pytorch.batch_size (requests per generate() call); NULL for other engines.';
COMMENT ON COLUMN experiment_results.max_num_seqs IS 'vllm.max_num_seqs (concurrent sequences); NULL when unset or not vllm.';
COMMENT ON COLUMN experiment_results.tensor_parallel_size IS 'vllm.tensor_parallel_size; NULL for other engines.';
COMMENT ON COLUMN experiment_results.pipeline_parallel_size IS 'vllm.pipeline_parallel_size; NULL for other engines.';
COMMENT ON COLUMN experiment_results.num_processes IS 'Engine processes (pytorch.num_processes data parallelism; 1 otherwise).';
COMMENT ON COLUMN experiment_results.n_prompts IS 'Measured prompts (effective_config.n).';
COMMENT ON COLUMN experiment_results.max_input_tokens IS 'Prompt truncation limit, tokens.';
COMMENT ON COLUMN experiment_results.max_output_tokens IS 'Generation limit per request, tokens.';
COMMENT ON COLUMN experiment_results.fixed_output_length IS 'TRUE when EOS was ignored so every request generated max_output_tokens.';
COMMENT ON COLUMN experiment_results.setting IS 'The engine setting as a label, e.g. ''batch_size=8'' or ''max_num_seqs=64,tp=1'' (what the efficiency view groups by).';
COMMENT ON COLUMN experiment_results.device_kind IS 'Power source: nvml | simulated | replay.';
COMMENT ON COLUMN experiment_results.is_simulated IS 'TRUE unless energy came from a live NVIDIA GPU (device_kind simulated or replay, or energy_method simulated).';
COMMENT ON COLUMN experiment_results.gpu_names IS 'Product names of the measured devices (all processes, in order).';
COMMENT ON COLUMN experiment_results.num_devices IS 'Devices measured (all processes).';
COMMENT ON COLUMN experiment_results.energy_method IS 'How total_energy_j was obtained: nvml_counter | trace_integral | simulated.';
COMMENT ON COLUMN experiment_results.measurement_methodology IS 'Which window the figures cover: total | steady_state | windowed.';
COMMENT ON COLUMN experiment_results.total_tokens IS 'Generated (output) tokens in the window, summed over processes; padding and tokens after EOS never count.';
COMMENT ON COLUMN experiment_results.input_tokens IS 'Prompt tokens fed to the engine (after truncation).';
COMMENT ON COLUMN experiment_results.total_inference_time_sec IS 'Measurement window, s (monotonic clock).';
COMMENT ON COLUMN experiment_results.avg_tokens_per_second IS 'Output throughput: total_tokens / total_inference_time_sec, tokens/s.';
COMMENT ON COLUMN experiment_results.total_energy_j IS 'Raw GPU energy in the window, J, summed over devices (never baseline-adjusted).';
COMMENT ON COLUMN experiment_results.avg_energy_per_token_j IS 'total_energy_j / total_tokens, J per output token (the primary efficiency metric).';
COMMENT ON COLUMN experiment_results.energy_adjusted_j IS 'total_energy_j - baseline_power_w x window, floored at 0, J.';
COMMENT ON COLUMN experiment_results.baseline_power_w IS 'Idle power of the measured devices, W (summed over devices).';
COMMENT ON COLUMN experiment_results.energy_trace_agreement IS '|E_counter - integral of P dt| / E_counter (unitless; 0.01 = 1 %).';
COMMENT ON COLUMN experiment_results.energy_uncertainty_j IS 'Remaining uncertainty of total_energy_j after boundary correction, J (± bound).';
COMMENT ON COLUMN experiment_results.avg_power_w IS 'Mean power over the window, W (extended_metrics.avg_power_w, else total_energy_j / window).';
COMMENT ON COLUMN experiment_results.total_flops IS 'Estimated FLOPs of the measured tokens (reference only).';
COMMENT ON COLUMN experiment_results.ttft_p50_ms IS 'Time to first token, median over requests, ms.';
COMMENT ON COLUMN experiment_results.ttft_p99_ms IS 'Time to first token, 99th percentile, ms.';
COMMENT ON COLUMN experiment_results.itl_p50_ms IS 'Inter-token latency, median of all gaps pooled, ms.';
COMMENT ON COLUMN experiment_results.tpot_mean_ms IS 'Time per output token after the first, mean over requests, ms.';
COMMENT ON COLUMN experiment_results.e2e_p50_ms IS 'End-to-end request latency, median, ms.';
COMMENT ON COLUMN experiment_results.throttled IS 'TRUE when a thermal / power-cap / HW slowdown clock event was active in the window; NULL when unknown.';
COMMENT ON COLUMN experiment_results.max_temperature_c IS 'Highest GPU temperature in the window, °C.';
COMMENT ON COLUMN experiment_results.n_warnings IS 'Number of measurement warnings.';
COMMENT ON COLUMN experiment_results.warnings IS 'measurement_warnings: ''<code>: <detail>'' strings (codes in llem_pipeline.domain.warnings).';
COMMENT ON COLUMN experiment_results.start_time IS 'Earliest process window start, UTC.';
COMMENT ON COLUMN experiment_results.end_time IS 'Latest process window end, UTC.';
COMMENT ON COLUMN experiment_results.schema_version IS 'ExperimentResult schema version (2.0).';
COMMENT ON COLUMN experiment_results.result_json IS 'The full ExperimentResult v2.0 (model_dump_json); read_result() rebuilds the model from it.';

-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS process_results (
    run_date                DATE NOT NULL,
    config_hash             VARCHAR NOT NULL,
    run_id                  VARCHAR NOT NULL,
    process_index           INTEGER NOT NULL,
    experiment_id           VARCHAR NOT NULL,
    backend                 VARCHAR,
    backend_version         VARCHAR,
    device_kind             VARCHAR,
    device_uuids            VARCHAR[],
    gpu_names               VARCHAR[],
    start_time              TIMESTAMPTZ,
    end_time                TIMESTAMPTZ,
    measurement_methodology VARCHAR,
    num_requests            INTEGER,
    input_tokens            BIGINT,
    output_tokens           BIGINT,
    inference_time_sec      DOUBLE,
    energy_j                DOUBLE,
    energy_per_device_j     DOUBLE[],
    energy_method           VARCHAR,
    trace_energy_j          DOUBLE,
    energy_trace_agreement  DOUBLE,
    energy_uncertainty_j    DOUBLE,
    baseline_power_w        DOUBLE,
    energy_adjusted_j       DOUBLE,
    sample_count            INTEGER,
    throttled               BOOLEAN,
    n_warnings              INTEGER,
    warnings                VARCHAR[],
    process_json            JSON NOT NULL
);
COMMENT ON TABLE process_results IS 'One RawProcessResult per engine process of a run (process_<k>.json).';
COMMENT ON COLUMN process_results.run_date IS 'Partition date of the run, YYYY-MM-DD.';
COMMENT ON COLUMN process_results.config_hash IS 'measurement_config_hash (16 lowercase hex).';
COMMENT ON COLUMN process_results.run_id IS 'Id of the run.';
COMMENT ON COLUMN process_results.process_index IS 'Engine process index (0-based).';
COMMENT ON COLUMN process_results.experiment_id IS 'Experiment id shared by all processes of the run.';
COMMENT ON COLUMN process_results.backend IS 'Inference engine.';
COMMENT ON COLUMN process_results.backend_version IS 'Engine library version.';
COMMENT ON COLUMN process_results.device_kind IS 'Power source: nvml | simulated | replay.';
COMMENT ON COLUMN process_results.device_uuids IS 'UUIDs of the devices this process measured.';
COMMENT ON COLUMN process_results.gpu_names IS 'Product names of those devices.';
COMMENT ON COLUMN process_results.start_time IS 'Window start, UTC.';
COMMENT ON COLUMN process_results.end_time IS 'Window end, UTC.';
COMMENT ON COLUMN process_results.measurement_methodology IS 'total | steady_state | windowed.';
COMMENT ON COLUMN process_results.num_requests IS 'Measured requests (warmup excluded).';
COMMENT ON COLUMN process_results.input_tokens IS 'Prompt tokens in the window.';
COMMENT ON COLUMN process_results.output_tokens IS 'Generated tokens in the window.';
COMMENT ON COLUMN process_results.inference_time_sec IS 'Window length, s (monotonic).';
COMMENT ON COLUMN process_results.energy_j IS 'Raw GPU energy of this process''s devices in the window, J.';
COMMENT ON COLUMN process_results.energy_per_device_j IS 'Raw energy per device, J.';
COMMENT ON COLUMN process_results.energy_method IS 'nvml_counter | trace_integral | simulated.';
COMMENT ON COLUMN process_results.trace_energy_j IS 'Integral of sampled power over the window, J (cross-check).';
COMMENT ON COLUMN process_results.energy_trace_agreement IS '|E_counter - integral of P dt| / E_counter (unitless).';
COMMENT ON COLUMN process_results.energy_uncertainty_j IS 'Remaining uncertainty of energy_j, J.';
COMMENT ON COLUMN process_results.baseline_power_w IS 'Idle power of this process''s devices, W.';
COMMENT ON COLUMN process_results.energy_adjusted_j IS 'Baseline-adjusted energy, J, floored at 0.';
COMMENT ON COLUMN process_results.sample_count IS 'Power samples taken in the window (all devices).';
COMMENT ON COLUMN process_results.throttled IS 'TRUE when a throttle reason was active in the window; NULL when unknown.';
COMMENT ON COLUMN process_results.n_warnings IS 'Number of measurement warnings of this process.';
COMMENT ON COLUMN process_results.warnings IS '''<code>: <detail>'' warnings of this process.';
COMMENT ON COLUMN process_results.process_json IS 'The full RawProcessResult as JSON.';

-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS environment_snapshots (
    run_date             DATE NOT NULL,
    config_hash          VARCHAR NOT NULL,
    run_id               VARCHAR NOT NULL,
    collected_at         TIMESTAMPTZ,
    python_version       VARCHAR,
    cuda_version         VARCHAR,
    cuda_driver_version  VARCHAR,
    gpu_names            VARCHAR[],
    gpu_uuids            VARCHAR[],
    gpu_vram_mb          BIGINT[],
    gpu_power_limits_w   DOUBLE[],
    gpu_persistence_mode BOOLEAN[],
    nvml_version         VARCHAR,
    torch_version        VARCHAR,
    transformers_version VARCHAR,
    vllm_version         VARCHAR,
    tool_version         VARCHAR,
    platform             VARCHAR,
    os_version           VARCHAR,
    cpu_model            VARCHAR,
    hostname             VARCHAR,
    device_kind          VARCHAR,
    snapshot_json        JSON NOT NULL
);
COMMENT ON TABLE environment_snapshots IS 'The software and hardware a run measured on (environment.json): one row per run.';
COMMENT ON COLUMN environment_snapshots.run_date IS 'Partition date of the run, YYYY-MM-DD.';
COMMENT ON COLUMN environment_snapshots.config_hash IS 'measurement_config_hash (16 lowercase hex).';
COMMENT ON COLUMN environment_snapshots.run_id IS 'Id of the run.';
COMMENT ON COLUMN environment_snapshots.collected_at IS 'When the snapshot was taken, UTC.';
COMMENT ON COLUMN environment_snapshots.python_version IS 'Python version.';
COMMENT ON COLUMN environment_snapshots.cuda_version IS 'CUDA runtime version (from torch); NULL without CUDA.';
COMMENT ON COLUMN environment_snapshots.cuda_driver_version IS 'NVIDIA driver version (from NVML).';
COMMENT ON COLUMN environment_snapshots.gpu_names IS 'GPU product names, in device order.';
COMMENT ON COLUMN environment_snapshots.gpu_uuids IS 'GPU UUIDs, in device order.';
COMMENT ON COLUMN environment_snapshots.gpu_vram_mb IS 'Memory per GPU, MB.';
COMMENT ON COLUMN environment_snapshots.gpu_power_limits_w IS 'Enforced power limit per GPU, W.';
COMMENT ON COLUMN environment_snapshots.gpu_persistence_mode IS 'Persistence mode per GPU.';
COMMENT ON COLUMN environment_snapshots.nvml_version IS 'NVML library version.';
COMMENT ON COLUMN environment_snapshots.torch_version IS 'torch version.';
COMMENT ON COLUMN environment_snapshots.transformers_version IS 'transformers version.';
COMMENT ON COLUMN environment_snapshots.vllm_version IS 'vllm version; NULL when not installed.';
COMMENT ON COLUMN environment_snapshots.tool_version IS 'llem_pipeline version.';
COMMENT ON COLUMN environment_snapshots.platform IS 'platform.platform() string.';
COMMENT ON COLUMN environment_snapshots.os_version IS 'OS release.';
COMMENT ON COLUMN environment_snapshots.cpu_model IS 'CPU model name.';
COMMENT ON COLUMN environment_snapshots.hostname IS 'Host name.';
COMMENT ON COLUMN environment_snapshots.device_kind IS 'nvml | simulated | replay.';
COMMENT ON COLUMN environment_snapshots.snapshot_json IS 'The full EnvironmentSnapshot as JSON (pip freeze, allow-listed env vars).';

-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS baselines (
    run_date      DATE NOT NULL,
    config_hash   VARCHAR NOT NULL,
    run_id        VARCHAR NOT NULL,
    device_uuid   VARCHAR NOT NULL,
    power_w       DOUBLE NOT NULL,
    total_power_w DOUBLE,
    duration_s    DOUBLE,
    sample_count  INTEGER,
    measured_at   TIMESTAMPTZ,
    provenance    VARCHAR,
    cache_age_s   DOUBLE,
    device_kind   VARCHAR
);
COMMENT ON TABLE baselines IS 'Idle power measured before the model loaded (baseline.json): one row per device of the run.';
COMMENT ON COLUMN baselines.run_date IS 'Partition date of the run, YYYY-MM-DD.';
COMMENT ON COLUMN baselines.config_hash IS 'measurement_config_hash (16 lowercase hex).';
COMMENT ON COLUMN baselines.run_id IS 'Id of the run.';
COMMENT ON COLUMN baselines.device_uuid IS 'GPU UUID.';
COMMENT ON COLUMN baselines.power_w IS 'Idle power of this device, W.';
COMMENT ON COLUMN baselines.total_power_w IS 'Idle power of all devices of the run, W (same on every row of the run).';
COMMENT ON COLUMN baselines.duration_s IS 'Length of the idle measurement, s.';
COMMENT ON COLUMN baselines.sample_count IS 'Power samples of the idle measurement.';
COMMENT ON COLUMN baselines.measured_at IS 'When the idle power was measured, UTC.';
COMMENT ON COLUMN baselines.provenance IS 'fresh (measured for this run) | cached (per-GPU-UUID cache).';
COMMENT ON COLUMN baselines.cache_age_s IS 'Age of the cached value when used, s; NULL when fresh.';
COMMENT ON COLUMN baselines.device_kind IS 'nvml | simulated | replay.';

-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS power_samples (
    run_date            DATE NOT NULL,
    config_hash         VARCHAR NOT NULL,
    run_id              VARCHAR NOT NULL,
    process_index       SMALLINT,
    device_index        SMALLINT,
    device_uuid         VARCHAR,
    t_mono_s            DOUBLE,
    t_rel_s             DOUBLE,
    utc                 TIMESTAMPTZ,
    power_w             FLOAT,
    energy_mj           DOUBLE,
    temperature_c       FLOAT,
    sm_clock_mhz        FLOAT,
    mem_clock_mhz       FLOAT,
    gpu_util_pct        FLOAT,
    mem_used_mb         FLOAT,
    clock_event_reasons BIGINT,
    phase               VARCHAR
);
COMMENT ON TABLE power_samples IS 'Raw power samples of every process at native resolution (timeseries.parquet): one row per sampler tick and device.';
COMMENT ON COLUMN power_samples.run_date IS 'Partition date of the run, YYYY-MM-DD.';
COMMENT ON COLUMN power_samples.config_hash IS 'measurement_config_hash (16 lowercase hex).';
COMMENT ON COLUMN power_samples.run_id IS 'Id of the run.';
COMMENT ON COLUMN power_samples.process_index IS 'Engine process that sampled it.';
COMMENT ON COLUMN power_samples.device_index IS 'Position of the device in the process''s device list.';
COMMENT ON COLUMN power_samples.device_uuid IS 'GPU UUID.';
COMMENT ON COLUMN power_samples.t_mono_s IS 'Monotonic time of the read, s (the process''s perf_counter).';
COMMENT ON COLUMN power_samples.t_rel_s IS 'Time of the read, s from inference start (negative during warmup/idle).';
COMMENT ON COLUMN power_samples.utc IS 'Wall-clock time of the read, UTC.';
COMMENT ON COLUMN power_samples.power_w IS 'Instant power, W (NaN when unsupported).';
COMMENT ON COLUMN power_samples.energy_mj IS 'Cumulative energy counter, mJ (NaN when unsupported).';
COMMENT ON COLUMN power_samples.temperature_c IS 'GPU temperature, °C.';
COMMENT ON COLUMN power_samples.sm_clock_mhz IS 'SM clock, MHz.';
COMMENT ON COLUMN power_samples.mem_clock_mhz IS 'Memory clock, MHz.';
COMMENT ON COLUMN power_samples.gpu_util_pct IS 'GPU utilisation, %.';
COMMENT ON COLUMN power_samples.mem_used_mb IS 'Device memory used, MB.';
COMMENT ON COLUMN power_samples.clock_event_reasons IS 'NVML clock-event (throttle) reason bitmask; -1 unknown.';
COMMENT ON COLUMN power_samples.phase IS 'warmup | window | idle.';

-- ---------------------------------------------------------------------------------------------
CREATE TABLE IF NOT EXISTS requests (
    run_date      DATE NOT NULL,
    config_hash   VARCHAR NOT NULL,
    run_id        VARCHAR NOT NULL,
    process_index SMALLINT,
    request_index INTEGER,
    input_tokens  INTEGER,
    output_tokens INTEGER,
    submit_s      DOUBLE,
    first_token_s DOUBLE,
    done_s        DOUBLE,
    ttft_ms       DOUBLE,
    e2e_ms        DOUBLE,
    tpot_ms       DOUBLE,
    finish_reason VARCHAR,
    token_times_s DOUBLE[]
);
COMMENT ON TABLE requests IS 'One row per measured request (requests.parquet); warmup requests are not stored.';
COMMENT ON COLUMN requests.run_date IS 'Partition date of the run, YYYY-MM-DD.';
COMMENT ON COLUMN requests.config_hash IS 'measurement_config_hash (16 lowercase hex).';
COMMENT ON COLUMN requests.run_id IS 'Id of the run.';
COMMENT ON COLUMN requests.process_index IS 'Engine process that served the request.';
COMMENT ON COLUMN requests.request_index IS 'Position of the request in the prompt set (0-based).';
COMMENT ON COLUMN requests.input_tokens IS 'Prompt tokens fed to the engine.';
COMMENT ON COLUMN requests.output_tokens IS 'Generated tokens (no padding, nothing after EOS).';
COMMENT ON COLUMN requests.submit_s IS 'Submission, s from inference start.';
COMMENT ON COLUMN requests.first_token_s IS 'First output token, s from inference start; NULL when none was generated.';
COMMENT ON COLUMN requests.done_s IS 'Last token / finished, s from inference start.';
COMMENT ON COLUMN requests.ttft_ms IS 'Time to first token, ms.';
COMMENT ON COLUMN requests.e2e_ms IS 'End-to-end latency, ms.';
COMMENT ON COLUMN requests.tpot_ms IS 'Time per output token after the first, ms; NULL with fewer than 2 tokens.';
COMMENT ON COLUMN requests.finish_reason IS 'length | eos | engine-specific.';
COMMENT ON COLUMN requests.token_times_s IS 'Time of each output token, s from inference start.';
