-- Migration 5: experiment_configs keeps the configs no study file defines any more, marked retired.
--
-- A config row (config_hash, study) stays for history when its study file is deleted, its study renamed,
-- or the config dropped from the study's sweep: registering the studies sets retired_at on every row no
-- current study file defines, and clears it when a study defines the config again. Rows of a study file
-- that is present but currently invalid are left as they are (the file is not gone, only unreadable).
-- study_file is the file name that defined the row at its last registration (NULL for rows registered
-- before this migration).

ALTER TABLE experiment_configs ADD COLUMN study_file VARCHAR;
ALTER TABLE experiment_configs ADD COLUMN retired_at TIMESTAMPTZ;
COMMENT ON COLUMN experiment_configs.study_file IS 'File name of the study (e.g. demo.yaml) at the last registration; NULL when registered before migration 5.';
COMMENT ON COLUMN experiment_configs.retired_at IS 'When registration found that no current study file defines this config for this study, UTC; NULL while one does (retired rows are kept for history).';
