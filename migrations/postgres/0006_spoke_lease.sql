-- Pulled work: the worker's lease on a spoke's current attempt (as migrations/sqlite/0006).
ALTER TABLE spokes ADD COLUMN lease_id TEXT;
ALTER TABLE spokes ADD COLUMN lease_worker TEXT;
ALTER TABLE spokes ADD COLUMN lease_until BIGINT;
