-- After the click: lifecycle jobs, secret versions, exact redeploys and live container state.
-- migrations/postgres/ mirrors this file.

-- Every job of a project's history is a row of `deployments`: a deploy (also a redeploy of an
-- earlier one), or a lifecycle action on its containers. Rows written before are deploys.
ALTER TABLE deployments ADD COLUMN kind TEXT NOT NULL DEFAULT 'deploy';
-- The one service a lifecycle action was for; NULL for the whole project.
ALTER TABLE deployments ADD COLUMN service TEXT;
ALTER TABLE deployments ADD COLUMN remove_volumes BOOLEAN NOT NULL DEFAULT FALSE;
-- The earlier deployment whose snapshot this deploy runs again.
ALTER TABLE deployments ADD COLUMN redeploy_of TEXT REFERENCES deployments (id) ON DELETE SET NULL;
-- JSON list of shared::runtime::ServiceImage, from the agent's result of a successful deploy.
ALTER TABLE deployments ADD COLUMN images TEXT;
-- The agent the job was for: image ids name images on one host only, so a redeploy must go to
-- the same one. NULL for rows written before.
ALTER TABLE deployments ADD COLUMN agent_id TEXT;

-- Every value a secret has had, sealed like secrets.ciphertext and bound to its own row. The
-- secret's current value is also in secrets.ciphertext; secrets.current_version names its
-- row here (NULL for a value written before this migration: its version row is written the
-- first time a deploy needs it). Versions outlive a deleted secret, so an earlier
-- deployment can still be run again.
CREATE TABLE secret_versions (
    id         TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    -- Not a foreign key: it outlives a deleted secret.
    secret_id  TEXT NOT NULL,
    version    BIGINT NOT NULL,
    key        TEXT NOT NULL,
    -- '' for global, else the service name.
    scope      TEXT NOT NULL,
    -- format version, key id, nonce, AES-256-GCM ciphertext and tag; never plaintext.
    ciphertext BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    UNIQUE (secret_id, version)
);
CREATE INDEX secret_versions_by_project ON secret_versions (project_id);
ALTER TABLE secrets ADD COLUMN current_version TEXT;

-- Exactly which secret values a deploy ran: one row per secret version it was given. A deploy
-- written before this migration has none and runs the values current when it is sent.
ALTER TABLE deployments ADD COLUMN secrets_snapshot BOOLEAN NOT NULL DEFAULT FALSE;
CREATE TABLE deployment_secrets (
    deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    version_id    TEXT NOT NULL REFERENCES secret_versions (id) ON DELETE CASCADE,
    PRIMARY KEY (deployment_id, version_id)
);

-- The containers of each project as its agent last reported them (JSON list of
-- shared::runtime::ServiceState), replaced whole on every report.
CREATE TABLE service_states (
    project_id TEXT PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    agent_id   TEXT NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    containers TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX service_states_by_agent ON service_states (agent_id);
