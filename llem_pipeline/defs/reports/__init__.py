"""Efficiency reports over DuckDB: the views refreshed and J/token across the swept setting."""
