"""Jobs, the nightly schedule and the report-refresh sensor."""
