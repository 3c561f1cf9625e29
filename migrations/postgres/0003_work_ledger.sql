-- The leased work ledger (several replicas on one database). Every piece of work that must
-- happen later is a row with a due time, a lease (owner, expiry) and a try count with its last
-- error; a replica claims due rows (FOR UPDATE SKIP LOCKED), renews its leases while it works,
-- and a lease whose replica died expires and is claimed by another.

-- Deliveries to process.
ALTER TABLE deliveries ADD COLUMN due_at           BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN lease_owner      TEXT;
ALTER TABLE deliveries ADD COLUMN lease_expires_at BIGINT;
ALTER TABLE deliveries ADD COLUMN tries            BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN last_error       TEXT;

-- Runs to plan and drive: the replica holding a run's lease drives it (its spokes' due work:
-- dispatches, searches for lost dispatches, read-backs, retries, timeouts, check-run updates).
ALTER TABLE runs ADD COLUMN due_at           BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_owner      TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_at BIGINT;
ALTER TABLE runs ADD COLUMN tries            BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN last_error       TEXT;

-- Every change of a spoke records the transaction that made it, so a driver on any replica
-- reads exactly the changes it has not seen: rows whose transaction is not older than the
-- oldest one still running when it last looked (pg_snapshot_xmin).
ALTER TABLE spokes ADD COLUMN changed_xid BIGINT NOT NULL
    DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX spokes_changes ON spokes (run_id, changed_xid);

-- A wait GitHub asked for (retry-after, a spent quota), seen by every replica.
CREATE TABLE rate_pauses (
    installation_id BIGINT PRIMARY KEY,
    until_ms        BIGINT NOT NULL
);
