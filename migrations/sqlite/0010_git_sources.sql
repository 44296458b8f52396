-- Git project sources: a project whose compose files come from a repository the agent checks
-- out, its credentials (sealed like secret values, bound to the project and the field), the
-- SSH host key pinned at its first deploy, and the commit each deployment checked out.
-- migrations/postgres/ mirrors this file.

CREATE TABLE project_sources (
    project_id     TEXT PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
    url            TEXT NOT NULL,
    git_ref        TEXT,
    subdir         TEXT,
    compose_file   TEXT,
    -- An https access token and the user name sent with it; sealed, never plaintext.
    token          BLOB,
    token_username TEXT,
    -- The SSH deploy key (OpenSSH private key format), sealed; its public half in clear.
    ssh_key        BLOB,
    ssh_public_key TEXT,
    -- known_hosts lines pinned at the first successful deploy over SSH.
    host_key       TEXT,
    updated_at     BIGINT NOT NULL
);

-- The commit a deploy from Git checked out: JSON {"sha", "subject", "author"}.
ALTER TABLE deployments ADD COLUMN commit_info TEXT;
