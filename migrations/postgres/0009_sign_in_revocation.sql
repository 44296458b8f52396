-- Revocation: sessions and API tokens get a public id (never their secret or its hash) and
-- what the person needs to recognise them; users can be disabled by an admin.
-- migrations/sqlite/ mirrors this file.

ALTER TABLE users ADD COLUMN disabled_at BIGINT;

ALTER TABLE sessions ADD COLUMN id TEXT;
ALTER TABLE sessions ADD COLUMN last_used_at BIGINT;
ALTER TABLE sessions ADD COLUMN user_agent TEXT;
ALTER TABLE sessions ADD COLUMN ip TEXT;
-- Sessions from before this migration get a random UUID.
UPDATE sessions SET id = gen_random_uuid()::text;
CREATE UNIQUE INDEX sessions_by_id ON sessions (id);
CREATE INDEX sessions_by_user ON sessions (user_id);

ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);
