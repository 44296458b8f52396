-- Dashboard sign-in: browser sessions and GitHub logins in flight.
-- Both keep only SHA-256 hashes of what the browser holds in its cookie.
-- migrations/postgres/ mirrors this file.

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

-- One row per "Sign in with GitHub" click: the OAuth state and PKCE verifier, bound to the
-- pre-login cookie and deleted when the callback uses them (or after ten minutes).
CREATE TABLE login_attempts (
    cookie_hash   TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
