//! Dashboard sign-in: sessions, GitHub logins in flight, and the lookups logging in needs.

use super::{now_ms, on_pool, parse_id, DbError, Pool, Store};
use crate::token::TokenHash;
use shared::{SessionId, UserId};
use std::time::Duration;
use uuid::Uuid;

use super::users::{User, UserRow};

/// A GitHub login between the redirect to GitHub and the callback.
pub struct LoginAttempt {
    pub state: String,
    pub pkce_verifier: String,
    pub created_at: i64,
}

/// Where a session was started from, as the browser said.
#[derive(Clone, Debug, Default)]
pub struct SessionClient {
    /// `User-Agent`, cut to [`MAX_USER_AGENT_CHARS`].
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// The longest `User-Agent` kept with a session.
pub const MAX_USER_AGENT_CHARS: usize = 256;

/// Last-used times are kept to this grain (one write a minute per session or token at most).
const LAST_USED_GRAIN_MS: i64 = 60_000;

/// Whether a last-used time is older than its grain, so worth a write.
fn is_stale(last_used_at: Option<i64>, now: i64) -> bool {
    last_used_at.is_none_or(|at| at < now - LAST_USED_GRAIN_MS)
}

/// A bearer credential a request signs in with, found by its token hash.
#[derive(Clone, Copy)]
pub(super) enum Credential {
    Session,
    ApiToken,
}

impl Credential {
    fn note_use_sql(self) -> &'static str {
        match self {
            Credential::Session => "UPDATE sessions SET last_used_at = $1 WHERE token_hash = $2",
            Credential::ApiToken => "UPDATE api_tokens SET last_used_at = $1 WHERE token_hash = $2",
        }
    }
}

/// What a credential lookup reads: the user's id, login and admin flag, and when the
/// credential was last used.
pub(super) type SignedInRow = (String, String, bool, Option<i64>);

impl Store {
    /// The user of a credential found as `row`; notes its use when the last one is older than
    /// a minute (a read alone takes no write lock).
    pub(super) async fn signed_in_user(
        &self,
        credential: Credential,
        token: &TokenHash,
        row: Option<SignedInRow>,
        now: i64,
    ) -> Result<Option<User>, DbError> {
        let Some((id, login, is_admin, last_used_at)) = row else {
            return Ok(None);
        };
        if is_stale(last_used_at, now) {
            on_pool!(self, pool => {
                sqlx::query(credential.note_use_sql())
                    .bind(now)
                    .bind(&token.0)
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
        }
        User::try_from(UserRow {
            id,
            login,
            is_admin,
        })
        .map(Some)
    }
}

/// A session as stored, for its owner's list. `token_hash` tells which one a request uses and
/// never leaves the server.
#[derive(Clone, Debug)]
pub struct SessionRecord {
    pub id: SessionId,
    pub token_hash: TokenHash,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: i64,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// The PostgreSQL advisory lock the first-admin setup takes (any constant of Stagely's own).
const FIRST_ADMIN_LOCK: i64 = 0x5374_6167_0001;

impl Store {
    /// Starts a session for `user` that ends after `lifetime`.
    pub async fn create_session(
        &self,
        user: UserId,
        token: &TokenHash,
        lifetime: Duration,
    ) -> Result<SessionId, DbError> {
        self.create_session_from(user, token, lifetime, &SessionClient::default())
            .await
    }

    /// Starts a session for `user` that ends after `lifetime`, noting the browser it was
    /// started from (shown in the list of sessions, so the person can tell them apart).
    pub async fn create_session_from(
        &self,
        user: UserId,
        token: &TokenHash,
        lifetime: Duration,
        client: &SessionClient,
    ) -> Result<SessionId, DbError> {
        let now = now_ms();
        let expires = now + lifetime.as_millis() as i64;
        let id = SessionId(Uuid::new_v4());
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, id, user_agent, ip) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&token.0)
            .bind(user.to_string())
            .bind(now)
            .bind(expires)
            .bind(id.to_string())
            .bind(client.user_agent.as_deref())
            .bind(client.ip.as_deref())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(id)
    }

    /// The user of a session that has not expired, whose account is not disabled. Notes the
    /// use, at most one write a minute per session (a read alone takes no write lock).
    pub async fn user_by_session(&self, token: &TokenHash) -> Result<Option<User>, DbError> {
        let now = now_ms();
        let row: Option<SignedInRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT u.id, u.login, u.is_admin, s.last_used_at FROM sessions s \
                 JOIN users u ON u.id = s.user_id \
                 WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL",
            )
            .bind(&token.0)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        self.signed_in_user(Credential::Session, token, row, now)
            .await
    }

    /// The sessions of `user` that have not expired, newest first.
    pub async fn sessions_of(&self, user: UserId) -> Result<Vec<SessionRecord>, DbError> {
        type Row = (
            String,
            String,
            i64,
            Option<i64>,
            i64,
            Option<String>,
            Option<String>,
        );
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, token_hash, created_at, last_used_at, expires_at, user_agent, ip \
                 FROM sessions WHERE user_id = $1 AND expires_at > $2 \
                 ORDER BY created_at DESC, id",
            )
            .bind(user.to_string())
            .bind(now_ms())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(
                |(id, token_hash, created_at, last_used_at, expires_at, user_agent, ip)| {
                    Ok(SessionRecord {
                        id: parse_id(&id)?,
                        token_hash: TokenHash(token_hash),
                        created_at,
                        last_used_at,
                        expires_at,
                        user_agent,
                        ip,
                    })
                },
            )
            .collect()
    }

    /// Ends the session `id` of `user`; `None` when `user` has no such session, else the hash
    /// of the ended session's token.
    pub async fn delete_session_of(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<Option<TokenHash>, DbError> {
        let hash: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "DELETE FROM sessions WHERE user_id = $1 AND id = $2 RETURNING token_hash",
            )
            .bind(user.to_string())
            .bind(id.to_string())
            .fetch_optional(pool)
            .await?
        });
        Ok(hash.map(TokenHash))
    }

    /// Ends a session (logout) and says whose it was; ending one that does not exist is not an
    /// error.
    pub async fn delete_session(&self, token: &TokenHash) -> Result<Option<UserId>, DbError> {
        let user: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar("DELETE FROM sessions WHERE token_hash = $1 RETURNING user_id")
                .bind(&token.0)
                .fetch_optional(pool)
                .await?
        });
        user.as_deref().map(parse_id).transpose()
    }

    /// Forgets GitHub logins older than `attempt_lifetime` (expired sessions go with the
    /// retention pass, `purge_sessions`).
    pub async fn delete_expired_logins(&self, attempt_lifetime: Duration) -> Result<(), DbError> {
        let oldest_attempt = now_ms() - attempt_lifetime.as_millis() as i64;
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM login_attempts WHERE created_at < $1")
                .bind(oldest_attempt)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    pub async fn save_login_attempt(
        &self,
        cookie: &TokenHash,
        state: &str,
        pkce_verifier: &str,
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO login_attempts (cookie_hash, state, pkce_verifier, created_at) VALUES ($1, $2, $3, $4)")
                .bind(&cookie.0)
                .bind(state)
                .bind(pkce_verifier)
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Removes and returns the login attempt of a pre-login cookie: each can be used once.
    pub async fn take_login_attempt(
        &self,
        cookie: &TokenHash,
    ) -> Result<Option<LoginAttempt>, DbError> {
        let row: Option<(String, String, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "DELETE FROM login_attempts WHERE cookie_hash = $1 \
                 RETURNING state, pkce_verifier, created_at",
            )
            .bind(&cookie.0)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(state, pkce_verifier, created_at)| LoginAttempt {
            state,
            pkce_verifier,
            created_at,
        }))
    }

    /// Whether anyone can log in yet: a fresh instance has no users and offers the setup page.
    pub async fn has_users(&self) -> Result<bool, DbError> {
        let count: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await?
        });
        Ok(count > 0)
    }

    /// Creates the first user, an admin, only while there are no users at all: of two people
    /// racing through the setup page, one wins and the other is told to log in.
    pub async fn create_first_admin(
        &self,
        login: &str,
        password_hash: &str,
    ) -> Result<Option<User>, DbError> {
        let id = UserId(Uuid::new_v4());
        let insert = "INSERT INTO users (id, login, password_hash, is_admin, created_at) \
                      SELECT $1, $2, $3, TRUE, $4 WHERE NOT EXISTS (SELECT 1 FROM users)";
        let created = match &self.pool {
            // One write at a time: the check and the insert see the same users.
            Pool::Sqlite(pool) => sqlx::query(insert)
                .bind(id.to_string())
                .bind(login)
                .bind(password_hash)
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected(),
            // Under READ COMMITTED two setups would each see no users and both insert: they
            // take turns on a transaction-scoped lock, so the second sees the first's admin.
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(FIRST_ADMIN_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let created = sqlx::query(insert)
                    .bind(id.to_string())
                    .bind(login)
                    .bind(password_hash)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                created
            }
        };
        Ok((created == 1).then(|| User {
            id,
            login: login.to_string(),
            is_admin: true,
        }))
    }

    /// A local account, its password hash (`None` for GitHub-only accounts) and whether it is
    /// disabled.
    pub async fn local_account(&self, login: &str) -> Result<Option<LocalAccount>, DbError> {
        type Row = (String, String, bool, Option<String>, Option<i64>);
        let row: Option<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, login, is_admin, password_hash, disabled_at FROM users WHERE login = $1",
            )
            .bind(login)
            .fetch_optional(pool)
            .await?
        });
        row.map(|(id, login, is_admin, password_hash, disabled_at)| {
            let user = User::try_from(UserRow {
                id,
                login,
                is_admin,
            })?;
            Ok(LocalAccount {
                user,
                password_hash,
                disabled: disabled_at.is_some(),
            })
        })
        .transpose()
    }

    /// The user linked to a GitHub account, found by GitHub's numeric id (a login can be
    /// renamed and then taken by someone else), created on its first sign-in; with whether the
    /// account is disabled. A new account whose login another user already has is a
    /// `Conflict`.
    pub async fn github_user(&self, github_id: i64, login: &str) -> Result<(User, bool), DbError> {
        let existing: Option<(String, String, bool, Option<i64>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, login, is_admin, disabled_at FROM users WHERE github_id = $1",
            )
            .bind(github_id)
            .fetch_optional(pool)
            .await?
        });
        if let Some((id, login, is_admin, disabled_at)) = existing {
            let user = User::try_from(UserRow {
                id,
                login,
                is_admin,
            })?;
            return Ok((user, disabled_at.is_some()));
        }
        let id = UserId(Uuid::new_v4());
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO users (id, login, github_id, is_admin, created_at) VALUES ($1, $2, $3, FALSE, $4)",
            )
            .bind(id.to_string())
            .bind(login)
            .bind(github_id)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        let user = User {
            id,
            login: login.to_string(),
            is_admin: false,
        };
        Ok((user, false))
    }

    /// Whether the user named `login` signs in with GitHub (another GitHub account than one
    /// that now has this name, if that one is new here).
    pub async fn login_is_github(&self, login: &str) -> Result<bool, DbError> {
        let github_id: Option<Option<i64>> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT github_id FROM users WHERE login = $1")
                .bind(login)
                .fetch_optional(pool)
                .await?
        });
        Ok(matches!(github_id, Some(Some(_))))
    }
}

/// A local account as signing in needs it.
pub struct LocalAccount {
    pub user: User,
    /// argon2id PHC string; `None` for GitHub-only accounts.
    pub password_hash: Option<String>,
    pub disabled: bool,
}
