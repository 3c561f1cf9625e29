-- Why a spoke waits for a retry (as migrations/sqlite/0005_retry_after.sql).
ALTER TABLE spokes ADD COLUMN retry_after TEXT;
UPDATE spokes SET retry_after = 'failed' WHERE status = 'retry_wait' AND reason LIKE 'failed%';
UPDATE spokes SET retry_after = 'timed_out' WHERE status = 'retry_wait' AND reason LIKE 'timed out%';
