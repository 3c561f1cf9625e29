-- A cancel request is state, not a reason's wording: set by `cancel`, read by the run's driver
-- (as migrations/sqlite/0003_run_cancel.sql).
ALTER TABLE runs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
