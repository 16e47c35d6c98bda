-- Migration 4: the partition manifest and the store's write sequence (a lost write must be impossible to
-- miss; storage/locking.py describes the loss that made it necessary). Migration 6 re-keys the manifest
-- by run: one row per (table, config_hash, hardware_id, run_id).
--
-- ResultStore writes, inside each partition write's transaction, one manifest row per (table, partition)
-- it replaced (row_count 0 included: a write that empties a table's partition is recorded too) and bumps
-- write_sequence. ResultStore.audit() compares the manifest with the tables (a partition whose rows
-- changed behind the store's back) and with the write journal next to the database file
-- (<db>.writes.jsonl: a committed write that vanished from the file together with its manifest rows).
-- Rows written without ResultStore (e.g. in the duckdb shell) show up in the audit until the partition
-- is written again through the store.

CREATE TABLE IF NOT EXISTS partition_manifest (
    table_name  VARCHAR NOT NULL,
    run_date    DATE NOT NULL,
    config_hash VARCHAR NOT NULL,
    run_id      VARCHAR NOT NULL,
    row_count   BIGINT NOT NULL,
    written_at  TIMESTAMPTZ NOT NULL,
    writer_pid  INTEGER,
    write_seq   BIGINT
);
COMMENT ON TABLE partition_manifest IS 'What the store wrote: one row per (table_name, run_date, config_hash), replaced with the partition in the same transaction; ResultStore.audit() / `llem sql --audit` compare it with the tables.';
COMMENT ON COLUMN partition_manifest.table_name IS 'Partitioned table the rows were written to.';
COMMENT ON COLUMN partition_manifest.run_date IS 'Partition date, YYYY-MM-DD.';
COMMENT ON COLUMN partition_manifest.config_hash IS 'measurement_config_hash of the partition.';
COMMENT ON COLUMN partition_manifest.run_id IS 'Run whose rows the partition holds.';
COMMENT ON COLUMN partition_manifest.row_count IS 'Rows the write put in the partition of this table (0 when the write emptied it).';
COMMENT ON COLUMN partition_manifest.written_at IS 'When the write transaction started, UTC.';
COMMENT ON COLUMN partition_manifest.writer_pid IS 'Process id of the writer; NULL for rows backfilled by migration 4.';
COMMENT ON COLUMN partition_manifest.write_seq IS 'Store write number (write_sequence.seq of the write; the journal line carries it too); NULL when backfilled.';

CREATE TABLE IF NOT EXISTS write_sequence (
    seq        BIGINT NOT NULL,
    written_at TIMESTAMPTZ NOT NULL,
    writer_pid INTEGER,
    store_id   VARCHAR NOT NULL
);
COMMENT ON TABLE write_sequence IS 'One row: the number of the last partition write committed to this file; the write journal (<db>.writes.jsonl) must not be ahead of it.';
COMMENT ON COLUMN write_sequence.seq IS 'Write number of the last committed partition write (0 before the first).';
COMMENT ON COLUMN write_sequence.written_at IS 'When that write started, UTC.';
COMMENT ON COLUMN write_sequence.writer_pid IS 'Process id of that writer.';
COMMENT ON COLUMN write_sequence.store_id IS 'Random id of this database, on every journal line: a journal of another (deleted and recreated) database is set aside, not read as losses.';
INSERT INTO write_sequence SELECT 0, now(), NULL, uuid()::VARCHAR WHERE NOT EXISTS (SELECT 1 FROM write_sequence);

-- Backfill: the partitions already stored (their writer and write number are unknown).
INSERT INTO partition_manifest
SELECT 'experiment_results', run_date, config_hash, min(run_id), count(*), now(), NULL, NULL FROM experiment_results GROUP BY run_date, config_hash;
INSERT INTO partition_manifest
SELECT 'process_results', run_date, config_hash, min(run_id), count(*), now(), NULL, NULL FROM process_results GROUP BY run_date, config_hash;
INSERT INTO partition_manifest
SELECT 'environment_snapshots', run_date, config_hash, min(run_id), count(*), now(), NULL, NULL FROM environment_snapshots GROUP BY run_date, config_hash;
INSERT INTO partition_manifest
SELECT 'baselines', run_date, config_hash, min(run_id), count(*), now(), NULL, NULL FROM baselines GROUP BY run_date, config_hash;
INSERT INTO partition_manifest
SELECT 'power_samples', run_date, config_hash, min(run_id), count(*), now(), NULL, NULL FROM power_samples GROUP BY run_date, config_hash;
INSERT INTO partition_manifest
SELECT 'requests', run_date, config_hash, min(run_id), count(*), now(), NULL, NULL FROM requests GROUP BY run_date, config_hash;
