-- Images of a deploy: each project's pull policy, and registry credentials set for one agent
-- (every project it deploys) or for one project (winning over its agent's for the same
-- registry). migrations/postgres/ mirrors this file.

-- 'missing' (pull only what the host lacks, Compose's default) or 'always'.
ALTER TABLE projects ADD COLUMN pull_policy TEXT NOT NULL DEFAULT 'missing';

-- The password is sealed by the vault like a secret value, bound to its row (owner, id and
-- registry); listings show the registry and the username only.
CREATE TABLE registry_credentials (
    id         TEXT PRIMARY KEY,
    agent_id   TEXT REFERENCES agents (id) ON DELETE CASCADE,
    project_id TEXT REFERENCES projects (id) ON DELETE CASCADE,
    registry   TEXT NOT NULL,
    username   TEXT NOT NULL,
    password   BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK ((agent_id IS NULL) <> (project_id IS NULL))
);
CREATE UNIQUE INDEX registry_credentials_of_agent ON registry_credentials (agent_id, registry)
    WHERE agent_id IS NOT NULL;
CREATE UNIQUE INDEX registry_credentials_of_project ON registry_credentials (project_id, registry)
    WHERE project_id IS NOT NULL;
