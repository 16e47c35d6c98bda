"""Dagster definitions, one folder per domain, autoloaded by ``llem_pipeline/definitions.py``.

experiments/   study files → dynamic config partitions (sensor) + the date × config partitions
measurements/  the GPU step (pool "gpu", GPU allocator, the worker through Dagster Pipes)
results/       the CPU step store_results: experiment_results (v2.0), power_timeseries, request_latencies
               in one DuckDB transaction, and the asset checks
reports/       efficiency views: markdown table and J/token chart across the swept setting
automation/    jobs, the nightly schedule, the report-refresh sensor
"""
