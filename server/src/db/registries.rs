//! Registry credentials: one per registry for an agent or for a project, the password sealed
//! by the vault (the store never sees it in the clear). Access checks are the operation's: these
//! queries take the owner as already checked.

use super::{from_ms, now_ms, on_pool, parse_id, DbError, SealedCell, Store};
use shared::{AgentId, ProjectId, RegistryHost, RegistryUsername};
use time::OffsetDateTime;
use uuid::Uuid;

/// Who a registry credential is set for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryOwner {
    /// Every project the agent deploys.
    Agent(AgentId),
    /// This project only; wins over its agent's credential for the same registry.
    Project(ProjectId),
}

impl RegistryOwner {
    /// The column that holds the owner's id, and the id.
    fn column(self) -> (&'static str, String) {
        match self {
            Self::Agent(id) => ("agent_id", id.to_string()),
            Self::Project(id) => ("project_id", id.to_string()),
        }
    }
}

/// A stored credential; `password` is the vault's sealed bytes.
#[derive(Clone, Debug)]
pub struct StoredRegistryCredential {
    pub id: Uuid,
    pub owner: RegistryOwner,
    pub registry: RegistryHost,
    pub username: RegistryUsername,
    pub password: Vec<u8>,
    pub updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    agent_id: Option<String>,
    project_id: Option<String>,
    registry: String,
    username: String,
    password: Vec<u8>,
    updated_at: i64,
}

impl TryFrom<Row> for StoredRegistryCredential {
    type Error = DbError;

    fn try_from(row: Row) -> Result<Self, DbError> {
        let decode = |error| DbError::Other(sqlx::Error::Decode(Box::new(error)));
        let owner = match (row.agent_id, row.project_id) {
            (Some(agent), None) => RegistryOwner::Agent(parse_id(&agent)?),
            (None, Some(project)) => RegistryOwner::Project(parse_id(&project)?),
            _ => {
                return Err(DbError::Other(sqlx::Error::Decode(
                    "a registry credential has no single owner".into(),
                )))
            }
        };
        Ok(Self {
            id: parse_id(&row.id)?,
            owner,
            registry: RegistryHost::parse(row.registry).map_err(decode)?,
            username: RegistryUsername::parse(row.username).map_err(decode)?,
            password: row.password,
            updated_at: from_ms(row.updated_at),
        })
    }
}

const COLUMNS: &str = "id, agent_id, project_id, registry, username, password, updated_at";

impl Store {
    /// The credentials set for `owner`, by registry.
    pub async fn registry_credentials(
        &self,
        owner: RegistryOwner,
    ) -> Result<Vec<StoredRegistryCredential>, DbError> {
        let (column, id) = owner.column();
        let sql = format!(
            "SELECT {COLUMNS} FROM registry_credentials WHERE {column} = $1 ORDER BY registry"
        );
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id).fetch_all(pool).await?
        });
        rows.into_iter().map(TryFrom::try_from).collect()
    }

    /// Every stored credential, for a key rotation.
    pub async fn all_registry_credentials(&self) -> Result<Vec<StoredRegistryCredential>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM registry_credentials ORDER BY id");
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        rows.into_iter().map(TryFrom::try_from).collect()
    }

    /// Adds `owner`'s credential for a registry it has none for; [`DbError::Conflict`] when it
    /// has one (set meanwhile).
    pub async fn insert_registry_credential(
        &self,
        id: Uuid,
        owner: RegistryOwner,
        registry: &RegistryHost,
        username: &RegistryUsername,
        password: &[u8],
    ) -> Result<(), DbError> {
        let (agent, project) = match owner {
            RegistryOwner::Agent(agent) => (Some(agent.to_string()), None),
            RegistryOwner::Project(project) => (None, Some(project.to_string())),
        };
        let now = now_ms();
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO registry_credentials \
                 (id, agent_id, project_id, registry, username, password, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(id.to_string())
            .bind(agent)
            .bind(project)
            .bind(registry.as_str())
            .bind(username.as_str())
            .bind(password)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Replaces the username and password of credential `id`; false when it is gone.
    pub async fn update_registry_credential(
        &self,
        id: Uuid,
        username: &RegistryUsername,
        password: &[u8],
    ) -> Result<bool, DbError> {
        let changed = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE registry_credentials SET username = $2, password = $3, updated_at = $4 \
                 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(username.as_str())
            .bind(password)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Removes `owner`'s credential for `registry`; false when it had none.
    pub async fn delete_registry_credential(
        &self,
        owner: RegistryOwner,
        registry: &RegistryHost,
    ) -> Result<bool, DbError> {
        let (column, id) = owner.column();
        let sql = format!("DELETE FROM registry_credentials WHERE {column} = $1 AND registry = $2");
        let deleted = on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(id)
                .bind(registry.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted == 1)
    }

    /// Swaps a password's sealed bytes if they are still `expected` (a key rotation); false
    /// when the credential changed or went meanwhile.
    pub async fn replace_registry_password(
        &self,
        id: Uuid,
        expected: &[u8],
        password: &[u8],
    ) -> Result<bool, DbError> {
        let cell = SealedCell::new("registry_credentials", "id", "password");
        self.swap_sealed(cell, &id.to_string(), expected, password)
            .await
    }
}
