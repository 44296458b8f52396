//! Users, their API tokens, and the audit trail of what they revealed.

use super::{now_ms, on_pool, parse_id, DbError, Store};
use crate::token::TokenHash;
use shared::UserId;
use uuid::Uuid;

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

    /// The user an API token belongs to.
    pub async fn user_by_api_token(&self, token: &TokenHash) -> Result<Option<User>, DbError> {
        let row: Option<UserRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT u.id, u.login, u.is_admin FROM api_tokens t JOIN users u ON u.id = t.user_id \
                 WHERE t.token_hash = $1",
            )
            .bind(&token.0)
            .fetch_optional(pool)
            .await?
        });
        row.map(User::try_from).transpose()
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
