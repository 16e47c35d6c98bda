"""The GPU step: allocate GPUs, run the measurement worker through Dagster Pipes, read its run folder."""
