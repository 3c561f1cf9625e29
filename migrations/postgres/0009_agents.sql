-- Self-hosted agents that may claim pulled work (as migrations/sqlite/0009_agents.sql).
CREATE TABLE agents (
    name         TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_seen_at BIGINT
);
