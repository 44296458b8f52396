-- Redaction that holds. migrations/postgres/ mirrors this file.

-- The values a secret had before it was changed or deleted, while a container may still run
-- them: the agent is asked to mask them in live logs too. A successful deploy of the project
-- forgets those replaced before it started (its containers run the current values). Sealed
-- like secrets.ciphertext, each bound to its own row; who replaced it and when are kept so the
-- table can grow into a secret's version history.
CREATE TABLE secret_previous_values (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    -- The secret it was a value of; not a foreign key, since it outlives a deleted secret.
    secret_id   TEXT NOT NULL,
    key         TEXT NOT NULL,
    -- format version, key id, nonce, AES-256-GCM ciphertext and tag; never plaintext.
    ciphertext  BLOB NOT NULL,
    replaced_at BIGINT NOT NULL,
    replaced_by TEXT REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX secret_previous_values_by_project ON secret_previous_values (project_id, replaced_at);

-- Whether the value is too short to be masked reliably in logs (under 6 characters), decided
-- when it is written. NULL for rows written before this migration: decided when first listed.
ALTER TABLE secrets ADD COLUMN weak_redaction BOOLEAN;
