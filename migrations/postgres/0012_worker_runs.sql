-- Hybrid runs: the worker-workflow runs the hub started for a hub run (their jobs claim its
-- items, proving with their OIDC ID token that they belong to one of these runs).
CREATE TABLE worker_runs (
    workflow_run_id BIGINT PRIMARY KEY,
    hub_run_id      TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX worker_runs_of_run ON worker_runs (hub_run_id);
-- A dispatch whose run id is not known yet (GitHub answered 204) still counts.
CREATE TABLE worker_dispatches (
    hub_run_id    TEXT NOT NULL,
    dispatched_at BIGINT NOT NULL
);
CREATE INDEX worker_dispatches_of_run ON worker_dispatches (hub_run_id);
