"""CPU steps: the v2.0 ExperimentResult, power samples and request latencies into DuckDB, plus asset checks."""
