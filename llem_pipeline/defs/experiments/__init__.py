"""Experiments: study files become dynamic partitions (one per config hash) and rows of experiment_configs."""
