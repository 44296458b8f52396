-- Stagely's first schema (PostgreSQL). Ids are UUID text, times are Unix milliseconds.
-- Never edit a landed migration: add a new one. migrations/sqlite/ mirrors this file.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    login         TEXT NOT NULL UNIQUE,
    -- argon2id PHC string for local accounts; NULL for GitHub-only users.
    password_hash TEXT,
    github_id     BIGINT UNIQUE,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);

CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    owner_id        TEXT REFERENCES users (id) ON DELETE SET NULL,
    name            TEXT NOT NULL,
    -- SHA-256 of the agent's token; the token itself is never stored.
    token_hash      TEXT NOT NULL UNIQUE,
    revoked_at      BIGINT,
    hostname        TEXT,
    os              TEXT,
    arch            TEXT,
    agent_version   TEXT,
    docker_version  TEXT,
    compose_version TEXT,
    last_seen       BIGINT,
    created_at      BIGINT NOT NULL
);
-- The server checks every second for tokens revoked elsewhere (CLI, other replicas).
CREATE INDEX agents_by_revoked_at ON agents (revoked_at);

CREATE TABLE projects (
    id           TEXT PRIMARY KEY,
    owner_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id     TEXT NOT NULL REFERENCES agents (id),
    name         TEXT NOT NULL,
    path         TEXT NOT NULL,
    compose_file TEXT,
    created_at   BIGINT NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE secrets (
    id         TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    -- '' for global, else the service name.
    scope      TEXT NOT NULL,
    -- format version, key id, nonce, AES-256-GCM ciphertext and tag; never plaintext.
    ciphertext BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (project_id, key, scope)
);

CREATE TABLE deployments (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    job_id       TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    requested_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    message      TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    finished_at  BIGINT
);
CREATE INDEX deployments_by_project ON deployments (project_id, created_at);

CREATE TABLE deployment_events (
    id            BIGSERIAL PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    at            BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX deployment_events_by_deployment ON deployment_events (deployment_id, id);
