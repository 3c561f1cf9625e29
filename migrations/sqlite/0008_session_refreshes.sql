-- A run-page session's token refresh, shared by every replica for a minute: GitHub refresh
-- tokens work once, so a person's concurrent requests on several replicas use the first
-- refresh's result (sealed, never in clear) instead of spending the token again.
CREATE TABLE session_refreshes (
    refresh_hash TEXT PRIMARY KEY,
    sealed       TEXT NOT NULL,
    at           BIGINT NOT NULL
);
