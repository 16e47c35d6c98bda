-- Migration 3: remember which views.sql is applied, so opening a current database runs no DDL
-- (re-creating views on every open raced with other threads' writes in one process).

CREATE TABLE IF NOT EXISTS schema_views (
    sha256     VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE schema_views IS 'SHA-256 of the views.sql last applied (one row); ensure_schema re-applies views.sql when it differs.';
COMMENT ON COLUMN schema_views.sha256 IS 'Hex SHA-256 of the views.sql text.';
COMMENT ON COLUMN schema_views.applied_at IS 'When the views were (re)created, UTC.';
