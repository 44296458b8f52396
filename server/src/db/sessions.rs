//! Dashboard sign-in: sessions, GitHub logins in flight, and the lookups logging in needs.

use super::{now_ms, on_pool, DbError, Pool, Store};
use crate::token::TokenHash;
use shared::UserId;
use std::time::Duration;
use uuid::Uuid;

use super::users::{User, UserRow};

/// A GitHub login between the redirect to GitHub and the callback.
pub struct LoginAttempt {
    pub state: String,
    pub pkce_verifier: String,
    pub created_at: i64,
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
    ) -> Result<(), DbError> {
        let now = now_ms();
        let expires = now + lifetime.as_millis() as i64;
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
                .bind(&token.0)
                .bind(user.to_string())
                .bind(now)
                .bind(expires)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// The user of a session that has not expired.
    pub async fn user_by_session(&self, token: &TokenHash) -> Result<Option<User>, DbError> {
        let row: Option<UserRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT u.id, u.login, u.is_admin FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.token_hash = $1 AND s.expires_at > $2",
            )
            .bind(&token.0)
            .bind(now_ms())
            .fetch_optional(pool)
            .await?
        });
        row.map(User::try_from).transpose()
    }

    /// Ends a session (logout); ending one that does not exist is not an error.
    pub async fn delete_session(&self, token: &TokenHash) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                .bind(&token.0)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
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

    /// A local account and its password hash (`None` for GitHub-only accounts).
    pub async fn local_account(
        &self,
        login: &str,
    ) -> Result<Option<(User, Option<String>)>, DbError> {
        let row: Option<(String, String, bool, Option<String>)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, login, is_admin, password_hash FROM users WHERE login = $1")
                .bind(login)
                .fetch_optional(pool)
                .await?
        });
        row.map(|(id, login, is_admin, hash)| {
            let user = User::try_from(UserRow {
                id,
                login,
                is_admin,
            })?;
            Ok((user, hash))
        })
        .transpose()
    }

    /// The user linked to a GitHub account, created on its first login.
    pub async fn github_user(&self, github_id: i64, login: &str) -> Result<User, DbError> {
        let existing: Option<UserRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, login, is_admin FROM users WHERE github_id = $1")
                .bind(github_id)
                .fetch_optional(pool)
                .await?
        });
        if let Some(row) = existing {
            return row.try_into();
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
        Ok(User {
            id,
            login: login.to_string(),
            is_admin: false,
        })
    }
}
