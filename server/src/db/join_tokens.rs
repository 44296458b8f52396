//! Join tokens: single-use, expiring invitations for new hosts.

use super::{now_ms, on_pool, Agent, DbError, Store};
use crate::token::TokenHash;
use shared::{AgentId, UserId};
use uuid::Uuid;

/// What a join token presented by an agent is worth.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinTokenState {
    Valid,
    Used,
    /// Expired at this time (Unix milliseconds).
    Expired(i64),
    Unknown,
}

impl Store {
    /// Stores a new join token for `created_by`, valid until `expires_at` (Unix ms).
    pub async fn create_join_token(
        &self,
        token: &TokenHash,
        created_by: UserId,
        name: Option<&str>,
        expires_at: i64,
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO join_tokens (token_hash, created_by, name, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&token.0)
            .bind(created_by.to_string())
            .bind(name)
            .bind(now_ms())
            .bind(expires_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    pub async fn join_token_state(&self, token: &TokenHash) -> Result<JoinTokenState, DbError> {
        let row: Option<(i64, Option<i64>)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT expires_at, used_at FROM join_tokens WHERE token_hash = $1")
                .bind(&token.0)
                .fetch_optional(pool)
                .await?
        });
        Ok(match row {
            None => JoinTokenState::Unknown,
            Some((_, Some(_))) => JoinTokenState::Used,
            Some((expires_at, None)) if expires_at <= now_ms() => {
                JoinTokenState::Expired(expires_at)
            }
            Some(_) => JoinTokenState::Valid,
        })
    }

    /// Uses up a join token and registers the agent it admits, in one transaction: either the
    /// token is spent and the agent exists with `agent_token`, or nothing changed. `None` when
    /// the token was used (or expired) meanwhile.
    pub async fn redeem_join_token(
        &self,
        token: &TokenHash,
        host_name: &str,
        agent_token: &TokenHash,
    ) -> Result<Option<Agent>, DbError> {
        let id = AgentId(Uuid::new_v4());
        let now = now_ms();
        let redeemed: Option<(Option<String>, Option<String>)> = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let claimed: Option<(Option<String>, Option<String>)> = sqlx::query_as(
                "UPDATE join_tokens SET used_at = $1, agent_id = NULL \
                 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
                 RETURNING created_by, name",
            )
            .bind(now)
            .bind(&token.0)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((created_by, name)) = &claimed {
                let name = name.as_deref().unwrap_or(host_name);
                sqlx::query(
                    "INSERT INTO agents (id, name, token_hash, created_at, owner_id) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id.to_string())
                .bind(name)
                .bind(&agent_token.0)
                .bind(now)
                .bind(created_by)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE join_tokens SET agent_id = $1 WHERE token_hash = $2")
                    .bind(id.to_string())
                    .bind(&token.0)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            claimed
        });
        match redeemed {
            Some(_) => Ok(Some(self.agent(id).await?)),
            None => Ok(None),
        }
    }
}
