-- A cancel request is state, not a reason's wording: set by `cancel`, read by the run's driver.
ALTER TABLE runs ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
