-- The hub's durable ledger on PostgreSQL: the same tables and columns as on SQLite
-- (migrations/sqlite), with Postgres types. Times are unix milliseconds (BIGINT); every
-- integer the hub reads is BIGINT, so both backends decode the same rows.

-- Every accepted webhook delivery, deduplicated by X-GitHub-Delivery. The persisted queue:
-- a delivery is recorded before it is acknowledged and processed afterwards.
CREATE TABLE deliveries (
    guid            TEXT PRIMARY KEY,
    -- Receipt order among deliveries recorded in the same millisecond (SQLite's rowid).
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    event           TEXT NOT NULL,
    action          TEXT,
    installation_id BIGINT,
    payload         BYTEA NOT NULL,
    received_at     BIGINT NOT NULL,
    processed_at    BIGINT,
    outcome         TEXT
);
CREATE INDEX deliveries_pending ON deliveries (received_at, seq) WHERE processed_at IS NULL;

-- One hub run: a task over a target set, started by one workflow_dispatch delivery.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    installation_id  BIGINT NOT NULL,
    hub_repo         TEXT NOT NULL,
    task             TEXT NOT NULL,
    targets          TEXT NOT NULL,
    params           TEXT NOT NULL,
    dry_run          BOOLEAN NOT NULL,
    git_ref          TEXT NOT NULL,
    head_sha         TEXT,
    sender           TEXT NOT NULL,
    trigger_delivery TEXT UNIQUE,
    status           TEXT NOT NULL,
    conclusion       TEXT,
    reason           TEXT,
    check_run_id     BIGINT,
    created_at       BIGINT NOT NULL,
    deadline_at      BIGINT NOT NULL,
    completed_at     BIGINT
);
CREATE INDEX runs_unfinished ON runs (status) WHERE status <> 'completed';

-- One target repository of a run, with the state of its current attempt and the spoke's own
-- summary of it.
CREATE TABLE spokes (
    run_id          TEXT NOT NULL REFERENCES runs (id),
    repo            TEXT NOT NULL,
    default_branch  TEXT NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT,
    attempt         BIGINT NOT NULL,
    workflow_run_id BIGINT,
    run_url         TEXT,
    dispatched_at   BIGINT,
    started_at      BIGINT,
    finished_at     BIGINT,
    due_at          BIGINT,
    conflicts       BIGINT NOT NULL DEFAULT 0,
    summary         TEXT,
    PRIMARY KEY (run_id, repo)
);
CREATE INDEX spokes_by_workflow_run ON spokes (workflow_run_id) WHERE workflow_run_id IS NOT NULL;

-- What happened, for operators: transitions, conflicts, stale and rejected reports.
CREATE TABLE events (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id TEXT,
    repo   TEXT,
    kind   TEXT NOT NULL,
    detail TEXT NOT NULL,
    at     BIGINT NOT NULL
);
CREATE INDEX events_by_run ON events (run_id, id);

-- Hub-wide settings, e.g. the key that signs callback tokens (survives restarts).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
