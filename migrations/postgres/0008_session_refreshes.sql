-- A run-page session's token refresh, shared by every replica (as migrations/sqlite/0008).
CREATE TABLE session_refreshes (
    refresh_hash TEXT PRIMARY KEY,
    sealed       TEXT NOT NULL,
    at           BIGINT NOT NULL
);
