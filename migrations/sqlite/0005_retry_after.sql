-- Why a spoke waits for a retry is state, not a reason's wording: how the attempt before
-- ended (`failed` or `timed_out`), or NULL for an operator's re-run.
ALTER TABLE spokes ADD COLUMN retry_after TEXT;
UPDATE spokes SET retry_after = 'failed' WHERE status = 'retry_wait' AND reason LIKE 'failed%';
UPDATE spokes SET retry_after = 'timed_out' WHERE status = 'retry_wait' AND reason LIKE 'timed out%';
