"""Tests of the llem subcommands in llem_pipeline/commands."""
