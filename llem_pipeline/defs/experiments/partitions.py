"""Measurement partitions: run date (UTC day) × experiment config hash (dynamic, registered from studies)."""

from __future__ import annotations

import dagster as dg

CONFIG_PARTITIONS_NAME = "llem_configs"
FIRST_RUN_DATE = "2026-11-01"

config_partitions = dg.DynamicPartitionsDefinition(name=CONFIG_PARTITIONS_NAME)
# end_offset=1: today's partition exists, so a measurement run today lands in today's partition.
date_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_RUN_DATE, end_offset=1, timezone="UTC")
measurement_partitions = dg.MultiPartitionsDefinition({"date": date_partitions, "config": config_partitions})


def measurement_key(run_date: str, config_hash: str) -> dg.MultiPartitionKey:
    """Return the partition key of (run date 'YYYY-MM-DD', 16-hex config hash)."""
    return dg.MultiPartitionKey({"date": run_date, "config": config_hash})


def split_measurement_key(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """Return (run_date, config_hash) of a measurement partition key (string form 'hash|date' accepted)."""
    if not isinstance(key, dg.MultiPartitionKey):
        key = measurement_partitions.get_partition_key_from_str(key)
    dims = key.keys_by_dimension
    return dims["date"], dims["config"]
