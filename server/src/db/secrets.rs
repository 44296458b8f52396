//! Secrets as stored: key, scope and the AES-GCM ciphertext. Plaintext never reaches this module.

use super::{from_ms, now_ms, on_pool, parse_id, DbError, Store, User};
use shared::{EnvKey, ProjectId, SecretId, SecretScope, ServiceName};
use time::OffsetDateTime;

/// One secret row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSecret {
    pub id: SecretId,
    pub project_id: ProjectId,
    pub key: EnvKey,
    pub scope: SecretScope,
    /// Format version, key id, nonce, ciphertext and tag (see `crypto`).
    pub ciphertext: Vec<u8>,
    pub updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    id: String,
    project_id: String,
    key: String,
    scope: String,
    ciphertext: Vec<u8>,
    updated_at: i64,
}

fn decode_error(error: impl std::error::Error + Send + Sync + 'static) -> DbError {
    DbError::Other(sqlx::Error::Decode(Box::new(error)))
}

impl TryFrom<SecretRow> for StoredSecret {
    type Error = DbError;

    fn try_from(row: SecretRow) -> Result<Self, DbError> {
        let scope = if row.scope.is_empty() {
            SecretScope::Global
        } else {
            SecretScope::Service(ServiceName::parse(row.scope).map_err(decode_error)?)
        };
        Ok(Self {
            id: parse_id(&row.id)?,
            project_id: parse_id(&row.project_id)?,
            key: EnvKey::parse(row.key).map_err(decode_error)?,
            scope,
            ciphertext: row.ciphertext,
            updated_at: from_ms(row.updated_at),
        })
    }
}

/// How a scope is stored: `''` for global, else the service name.
fn scope_column(scope: &SecretScope) -> &str {
    match scope {
        SecretScope::Global => "",
        SecretScope::Service(service) => service.as_str(),
    }
}

const SECRET_COLUMNS: &str = "s.id, s.project_id, s.key, s.scope, s.ciphertext, s.updated_at";

impl Store {
    /// Stores a new secret; the same key and scope twice in a project is a `Conflict`.
    pub async fn insert_secret(&self, secret: &StoredSecret) -> Result<(), DbError> {
        let now = now_ms();
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO secrets (id, project_id, key, scope, ciphertext, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(secret.id.to_string())
            .bind(secret.project_id.to_string())
            .bind(secret.key.as_str())
            .bind(scope_column(&secret.scope))
            .bind(&secret.ciphertext)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// A project's secrets, sorted by key then scope.
    pub async fn secrets_of_project(
        &self,
        project: ProjectId,
    ) -> Result<Vec<StoredSecret>, DbError> {
        let sql = format!("SELECT {SECRET_COLUMNS} FROM secrets s WHERE s.project_id = $1 ORDER BY s.key, s.scope");
        let rows: Vec<SecretRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(project.to_string()).fetch_all(pool).await?
        });
        rows.into_iter().map(StoredSecret::try_from).collect()
    }

    /// One secret of one of `owner`'s projects.
    pub async fn secret(&self, owner: &User, id: SecretId) -> Result<StoredSecret, DbError> {
        let sql = format!(
            "SELECT {SECRET_COLUMNS} FROM secrets s JOIN projects p ON p.id = s.project_id \
             WHERE s.id = $1 AND p.owner_id = $2"
        );
        let row: SecretRow = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(id.to_string())
                .bind(owner.id.to_string())
                .fetch_one(pool)
                .await?
        });
        row.try_into()
    }

    /// Every secret of every project, for key rotation.
    pub async fn all_secrets(&self) -> Result<Vec<StoredSecret>, DbError> {
        let sql = format!("SELECT {SECRET_COLUMNS} FROM secrets s ORDER BY s.id");
        let rows: Vec<SecretRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        rows.into_iter().map(StoredSecret::try_from).collect()
    }

    /// Replaces a secret's ciphertext only if it is still `expected`: an update made meanwhile
    /// wins over a rotation. Returns whether the row changed.
    pub async fn replace_ciphertext(
        &self,
        id: SecretId,
        expected: &[u8],
        ciphertext: &[u8],
    ) -> Result<bool, DbError> {
        let changed = on_pool!(self, pool => {
            sqlx::query("UPDATE secrets SET ciphertext = $3, updated_at = $4 WHERE id = $1 AND ciphertext = $2")
                .bind(id.to_string())
                .bind(expected)
                .bind(ciphertext)
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Deletes one of `owner`'s secrets.
    pub async fn delete_secret(&self, owner: &User, id: SecretId) -> Result<(), DbError> {
        let secret = self.secret(owner, id).await?;
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM secrets WHERE id = $1")
                .bind(secret.id.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }
}
