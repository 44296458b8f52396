-- Join tokens: single-use, expiring invitations that let a new host register itself. The agent
-- trades one for its own token on first connect. Only SHA-256 hashes are stored.
-- migrations/sqlite/ mirrors this file.

CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY,
    created_by TEXT REFERENCES users (id) ON DELETE CASCADE,
    -- The name the new agent gets; NULL means "the host's name".
    name       TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    agent_id   TEXT REFERENCES agents (id) ON DELETE SET NULL
);
