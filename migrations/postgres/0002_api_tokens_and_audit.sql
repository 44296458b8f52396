-- User API tokens (stored hashed, like agent tokens) and the audit trail of sensitive reads.
-- migrations/sqlite/ mirrors this file.

CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    user_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL
);

CREATE INDEX deployments_open ON deployments (status);
