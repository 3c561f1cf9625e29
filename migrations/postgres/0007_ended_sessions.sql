-- Run-page sessions that were signed out (as migrations/sqlite/0007_ended_sessions.sql).
CREATE TABLE ended_sessions (
    id    TEXT PRIMARY KEY,
    until BIGINT NOT NULL
);
