-- Pulled work (pull and hybrid models): the worker's lease on a spoke's current attempt.
ALTER TABLE spokes ADD COLUMN lease_id TEXT;
ALTER TABLE spokes ADD COLUMN lease_worker TEXT;
ALTER TABLE spokes ADD COLUMN lease_until BIGINT;
