//! Users, their API tokens, and the audit trail of what they revealed.

use super::sessions::{Credential, SignedInRow};
use super::{now_ms, on_pool, parse_id, DbError, Pool, Store};
use crate::token::TokenHash;
use shared::{ApiTokenId, UserId};
use uuid::Uuid;

/// The PostgreSQL advisory lock taken while an admin may be disabled (any constant of
/// Stagely's own).
const ADMINS_LOCK: i64 = 0x5374_6167_0002;

/// An API token as stored, for its owner's list. `token_hash` tells which one a request uses
/// and never leaves the server.
#[derive(Clone, Debug)]
pub struct ApiTokenRecord {
    pub id: ApiTokenId,
    pub token_hash: TokenHash,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A user as an admin sees it.
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub id: UserId,
    pub login: String,
    pub is_admin: bool,
    pub github_id: Option<i64>,
    pub disabled_at: Option<i64>,
    pub created_at: i64,
}

#[derive(sqlx::FromRow)]
struct UserRecordRow {
    id: String,
    login: String,
    is_admin: bool,
    github_id: Option<i64>,
    disabled_at: Option<i64>,
    created_at: i64,
}

impl TryFrom<UserRecordRow> for UserRecord {
    type Error = DbError;

    fn try_from(row: UserRecordRow) -> Result<Self, DbError> {
        Ok(Self {
            id: parse_id(&row.id)?,
            login: row.login,
            is_admin: row.is_admin,
            github_id: row.github_id,
            disabled_at: row.disabled_at,
            created_at: row.created_at,
        })
    }
}

/// What [`Store::disable_user`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisableOutcome {
    Disabled,
    AlreadyDisabled,
    /// Refused: the user is the last admin who is not disabled.
    LastAdmin,
}

/// A person who can log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub login: String,
    pub is_admin: bool,
}

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    pub(super) id: String,
    pub(super) login: String,
    pub(super) is_admin: bool,
}

impl TryFrom<UserRow> for User {
    type Error = DbError;

    fn try_from(row: UserRow) -> Result<Self, DbError> {
        Ok(Self {
            id: parse_id(&row.id)?,
            login: row.login,
            is_admin: row.is_admin,
        })
    }
}

impl Store {
    /// Creates a local user; `password_hash` is an argon2id PHC string (or `None`).
    pub async fn create_user(
        &self,
        login: &str,
        password_hash: Option<&str>,
        is_admin: bool,
    ) -> Result<User, DbError> {
        let id = UserId(Uuid::new_v4());
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO users (id, login, password_hash, is_admin, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.to_string())
            .bind(login)
            .bind(password_hash)
            .bind(is_admin)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(User {
            id,
            login: login.to_string(),
            is_admin,
        })
    }

    pub async fn user_by_login(&self, login: &str) -> Result<User, DbError> {
        let row: UserRow = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, login, is_admin FROM users WHERE login = $1")
                .bind(login)
                .fetch_one(pool)
                .await?
        });
        row.try_into()
    }

    /// Stores the hash of a new API token for `user`.
    pub async fn create_api_token(&self, user: UserId, token: &TokenHash) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO api_tokens (id, user_id, token_hash, created_at) VALUES ($1, $2, $3, $4)")
                .bind(Uuid::new_v4().to_string())
                .bind(user.to_string())
                .bind(&token.0)
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// The user an API token belongs to, unless their account is disabled. Notes the use, at
    /// most one write a minute per token (a read alone takes no write lock).
    pub async fn user_by_api_token(&self, token: &TokenHash) -> Result<Option<User>, DbError> {
        let row: Option<SignedInRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT u.id, u.login, u.is_admin, t.last_used_at FROM api_tokens t \
                 JOIN users u ON u.id = t.user_id \
                 WHERE t.token_hash = $1 AND u.disabled_at IS NULL",
            )
            .bind(&token.0)
            .fetch_optional(pool)
            .await?
        });
        self.signed_in_user(Credential::ApiToken, token, row, now_ms())
            .await
    }

    /// The API tokens of `user`, newest first.
    pub async fn api_tokens_of(&self, user: UserId) -> Result<Vec<ApiTokenRecord>, DbError> {
        let rows: Vec<(String, String, i64, Option<i64>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, token_hash, created_at, last_used_at FROM api_tokens \
                 WHERE user_id = $1 ORDER BY created_at DESC, id",
            )
            .bind(user.to_string())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, token_hash, created_at, last_used_at)| {
                Ok(ApiTokenRecord {
                    id: parse_id(&id)?,
                    token_hash: TokenHash(token_hash),
                    created_at,
                    last_used_at,
                })
            })
            .collect()
    }

    /// Deletes the API token `id` of `user`; false when `user` has no such token.
    pub async fn delete_api_token_of(&self, user: UserId, id: ApiTokenId) -> Result<bool, DbError> {
        let deleted = on_pool!(self, pool => {
            sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND id = $2")
                .bind(user.to_string())
                .bind(id.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted == 1)
    }

    /// Every user, by login.
    pub async fn users(&self) -> Result<Vec<UserRecord>, DbError> {
        let rows: Vec<UserRecordRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, login, is_admin, github_id, disabled_at, created_at FROM users ORDER BY login",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(UserRecord::try_from).collect()
    }

    /// One user, for an admin.
    pub async fn user_record(&self, id: UserId) -> Result<UserRecord, DbError> {
        let row: UserRecordRow = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, login, is_admin, github_id, disabled_at, created_at FROM users WHERE id = $1",
            )
            .bind(id.to_string())
            .fetch_one(pool)
            .await?
        });
        row.try_into()
    }

    /// Disables `user`: they can no longer sign in, and their sessions and API tokens are
    /// deleted (re-enabling does not bring them back). The last enabled admin is never
    /// disabled.
    pub async fn disable_user(&self, user: UserId) -> Result<DisableOutcome, DbError> {
        let now = now_ms();
        // One statement checks and writes, so the check sees the row it changes; on PostgreSQL
        // two admins disabling each other at once take turns on a lock.
        let update = "UPDATE users SET disabled_at = $1 WHERE id = $2 AND disabled_at IS NULL \
                      AND (is_admin = FALSE OR EXISTS (SELECT 1 FROM users o \
                      WHERE o.is_admin AND o.disabled_at IS NULL AND o.id <> $2))";
        let changed = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(update)
                .bind(now)
                .bind(user.to_string())
                .execute(pool)
                .await?
                .rows_affected(),
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(ADMINS_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let changed = sqlx::query(update)
                    .bind(now)
                    .bind(user.to_string())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                changed
            }
        };
        if changed == 0 {
            let record = self.user_record(user).await?;
            return Ok(if record.disabled_at.is_some() {
                DisableOutcome::AlreadyDisabled
            } else {
                DisableOutcome::LastAdmin
            });
        }
        // Lookups already refuse a disabled user's credentials; these deletes make it final.
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(user.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM api_tokens WHERE user_id = $1")
                .bind(user.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(DisableOutcome::Disabled)
    }

    /// Lets a disabled user sign in again; false when there is no such user.
    pub async fn enable_user(&self, user: UserId) -> Result<bool, DbError> {
        let changed = on_pool!(self, pool => {
            sqlx::query("UPDATE users SET disabled_at = NULL WHERE id = $1")
                .bind(user.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Records that `user` did `action` to `target` (e.g. revealed a secret).
    pub async fn audit(&self, user: UserId, action: &str, target: &str) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO audit_log (at, user_id, action, target) VALUES ($1, $2, $3, $4)")
                .bind(now_ms())
                .bind(user.to_string())
                .bind(action)
                .bind(target)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// The audit entries about `target`, oldest first, as `(user login, action)`.
    pub async fn audit_trail(&self, target: &str) -> Result<Vec<(String, String)>, DbError> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT u.login, a.action FROM audit_log a JOIN users u ON u.id = a.user_id \
                 WHERE a.target = $1 ORDER BY a.id",
            )
            .bind(target)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}
