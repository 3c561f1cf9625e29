-- Run-page sessions that were signed out, until they would have expired anyway: a copy of a
-- signed-out session's cookie opens nothing.
CREATE TABLE ended_sessions (
    id    TEXT PRIMARY KEY,
    until BIGINT NOT NULL
);
