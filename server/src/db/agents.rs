//! Agents: registration, token lookup, what they said in their hello, last-seen times.

use super::{from_ms, now_ms, on_pool, DbError, Store};
use crate::token::TokenHash;
use shared::protocol::Hello;
use shared::target::SwarmNode;
use shared::{AgentId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

/// An agent as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub id: AgentId,
    pub name: String,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub arch: Option<String>,
    pub agent_version: Option<String>,
    pub docker_version: Option<String>,
    pub compose_version: Option<String>,
    /// The Swarm nodes it last reported (none when it manages no Swarm).
    pub swarm_nodes: Vec<SwarmNode>,
    pub last_seen: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct AgentRow {
    id: String,
    name: String,
    hostname: Option<String>,
    os: Option<String>,
    arch: Option<String>,
    agent_version: Option<String>,
    docker_version: Option<String>,
    compose_version: Option<String>,
    swarm_nodes: Option<String>,
    last_seen: Option<i64>,
    created_at: i64,
}

impl TryFrom<AgentRow> for Agent {
    type Error = DbError;

    fn try_from(row: AgentRow) -> Result<Self, DbError> {
        let id = super::parse_id(&row.id)?;
        Ok(Self {
            id,
            name: row.name,
            hostname: row.hostname,
            os: row.os,
            arch: row.arch,
            agent_version: row.agent_version,
            docker_version: row.docker_version,
            compose_version: row.compose_version,
            // Written only by `record_swarm_nodes`; a value that does not read is shown as none.
            swarm_nodes: row
                .swarm_nodes
                .as_deref()
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default(),
            last_seen: row.last_seen.map(from_ms),
            created_at: from_ms(row.created_at),
        })
    }
}

const AGENT_COLUMNS: &str = "id, name, hostname, os, arch, agent_version, docker_version, \
                             compose_version, swarm_nodes, last_seen, created_at";

impl Store {
    /// Registers an agent under the hash of its token. `owner` is `None` for agents registered
    /// by an operator on the command line, which only admins see.
    pub async fn create_agent(
        &self,
        name: &str,
        token: &TokenHash,
        owner: Option<UserId>,
    ) -> Result<Agent, DbError> {
        let id = AgentId(Uuid::new_v4());
        let now = now_ms();
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO agents (id, name, token_hash, created_at, owner_id) VALUES ($1, $2, $3, $4, $5)")
                .bind(id.to_string())
                .bind(name)
                .bind(&token.0)
                .bind(now)
                .bind(owner.map(|owner| owner.to_string()))
                .execute(pool)
                .await?
                .rows_affected()
        });
        self.agent(id).await
    }

    /// One agent, revoked or not.
    pub async fn agent(&self, id: AgentId) -> Result<Agent, DbError> {
        let sql = format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1");
        let row: AgentRow = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.to_string()).fetch_one(pool).await?
        });
        row.try_into()
    }

    /// The live (not revoked) agent whose token hashes to `token`.
    pub async fn agent_by_token(&self, token: &TokenHash) -> Result<Option<Agent>, DbError> {
        let sql = format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE token_hash = $1 AND revoked_at IS NULL"
        );
        let row: Option<AgentRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(&token.0).fetch_optional(pool).await?
        });
        row.map(Agent::try_from).transpose()
    }

    /// The live agents `user` may see (their own; admins see every agent), oldest first.
    pub async fn agents_visible_to(&self, user: &super::User) -> Result<Vec<Agent>, DbError> {
        let sql = format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE revoked_at IS NULL \
             AND (owner_id = $1 OR $2) ORDER BY created_at, id"
        );
        let rows: Vec<AgentRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(user.id.to_string())
                .bind(user.is_admin)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(Agent::try_from).collect()
    }

    /// One live agent `user` may see, or `NotFound`.
    pub async fn agent_visible_to(
        &self,
        user: &super::User,
        id: AgentId,
    ) -> Result<Agent, DbError> {
        let sql = format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 AND revoked_at IS NULL \
             AND (owner_id = $2 OR $3)"
        );
        let row: AgentRow = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(id.to_string())
                .bind(user.id.to_string())
                .bind(user.is_admin)
                .fetch_one(pool)
                .await?
        });
        row.try_into()
    }

    /// Every agent that is not revoked, oldest first.
    pub async fn list_agents(&self) -> Result<Vec<Agent>, DbError> {
        let sql = format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE revoked_at IS NULL ORDER BY created_at, id"
        );
        let rows: Vec<AgentRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        rows.into_iter().map(Agent::try_from).collect()
    }

    /// Keeps what the agent reported about itself in its hello.
    pub async fn record_hello(&self, id: AgentId, hello: &Hello) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE agents SET hostname = $2, os = $3, arch = $4, agent_version = $5, \
                 docker_version = $6, compose_version = $7, last_seen = $8 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(&hello.hostname)
            .bind(&hello.os)
            .bind(&hello.arch)
            .bind(&hello.agent_version)
            .bind(&hello.docker_version)
            .bind(&hello.compose_version)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Keeps the Swarm nodes the agent reported, replacing what it reported before.
    pub async fn record_swarm_nodes(
        &self,
        id: AgentId,
        nodes: &[SwarmNode],
    ) -> Result<(), DbError> {
        let json = serde_json::to_string(nodes)
            .map_err(|error| DbError::Other(sqlx::Error::Encode(Box::new(error))))?;
        on_pool!(self, pool => {
            sqlx::query("UPDATE agents SET swarm_nodes = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(&json)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Writes many last-seen times in one transaction: the hub calls this about once a second
    /// with every agent heard from since, whatever the number of agents.
    pub async fn record_last_seen(
        &self,
        seen: &[(AgentId, OffsetDateTime)],
    ) -> Result<(), DbError> {
        if seen.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for (id, at) in seen {
                sqlx::query("UPDATE agents SET last_seen = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(super::to_ms(*at))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?
        });
        Ok(())
    }

    /// Revokes an agent's token. Returns false when there was no live agent with that id.
    pub async fn revoke_agent(&self, id: AgentId) -> Result<bool, DbError> {
        let result = on_pool!(self, pool => {
            sqlx::query("UPDATE agents SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id.to_string())
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(result == 1)
    }

    /// Agents revoked at or after `since` (Unix ms).
    pub async fn revoked_since(&self, since: i64) -> Result<Vec<AgentId>, DbError> {
        let ids: Vec<(String,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id FROM agents WHERE revoked_at >= $1")
                .bind(since)
                .fetch_all(pool)
                .await?
        });
        ids.into_iter().map(|(id,)| super::parse_id(&id)).collect()
    }

    /// How many agents are registered and not revoked.
    pub async fn count_live_agents(&self) -> Result<usize, DbError> {
        let (count,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as("SELECT COUNT(*) FROM agents WHERE revoked_at IS NULL")
                .fetch_one(pool)
                .await?
        });
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Whether the agent's token has been revoked (or the agent deleted).
    pub async fn is_revoked(&self, id: AgentId) -> Result<bool, DbError> {
        let live: Option<(String,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id FROM agents WHERE id = $1 AND revoked_at IS NULL")
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        });
        Ok(live.is_none())
    }
}
