-- The leased work ledger (as migrations/postgres/0003_work_ledger.sql; on SQLite one process
-- holds every lease, but the rows, due times and try counts are the same).
ALTER TABLE deliveries ADD COLUMN due_at           INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN lease_owner      TEXT;
ALTER TABLE deliveries ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE deliveries ADD COLUMN tries            INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN last_error       TEXT;

ALTER TABLE runs ADD COLUMN due_at           INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_owner      TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE runs ADD COLUMN tries            INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN last_error       TEXT;
