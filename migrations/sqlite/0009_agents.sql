-- Self-hosted agents that may claim pulled work: each has its own token, kept only as a
-- SHA-256 hash. A revoked agent's token opens nothing; its name may be added again.
CREATE TABLE agents (
    name         TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_seen_at BIGINT
);
