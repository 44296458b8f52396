//! Secrets as stored: key, scope and the AES-GCM ciphertext, and the values they had before a
//! change or a delete while a container may still run them. Plaintext never reaches this module.

use super::{from_ms, now_ms, on_pool, parse_id, DbError, SealedCell, Store, User};
use shared::{DeploymentId, EnvKey, ProjectId, SecretId, SecretScope, ServiceName, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

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
    /// Whether the value is too short to be masked reliably in logs; `None` for a row written
    /// before this was stored.
    pub weak_redaction: Option<bool>,
    /// The row of `secret_versions` holding the current value; `None` for a value written
    /// before versions were kept (its version is written when a deploy first needs it).
    pub current_version: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct SecretRow {
    id: String,
    project_id: String,
    key: String,
    scope: String,
    ciphertext: Vec<u8>,
    updated_at: i64,
    weak_redaction: Option<bool>,
    current_version: Option<String>,
}

fn decode_error(error: impl std::error::Error + Send + Sync + 'static) -> DbError {
    DbError::Other(sqlx::Error::Decode(Box::new(error)))
}

fn parse_scope(scope: String) -> Result<SecretScope, DbError> {
    if scope.is_empty() {
        Ok(SecretScope::Global)
    } else {
        Ok(SecretScope::Service(
            ServiceName::parse(scope).map_err(decode_error)?,
        ))
    }
}

impl TryFrom<SecretRow> for StoredSecret {
    type Error = DbError;

    fn try_from(row: SecretRow) -> Result<Self, DbError> {
        let scope = parse_scope(row.scope)?;
        Ok(Self {
            id: parse_id(&row.id)?,
            project_id: parse_id(&row.project_id)?,
            key: EnvKey::parse(row.key).map_err(decode_error)?,
            scope,
            ciphertext: row.ciphertext,
            updated_at: from_ms(row.updated_at),
            weak_redaction: row.weak_redaction,
            current_version: row.current_version.as_deref().map(parse_id).transpose()?,
        })
    }
}

/// One value a secret has had, sealed under its own row (see `vault::VersionRow`). It outlives
/// a deleted secret, so an earlier deployment can run again with exactly what it ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredVersion {
    /// The version's own id.
    pub id: Uuid,
    pub project_id: ProjectId,
    pub secret_id: SecretId,
    /// 1, 2, … per secret.
    pub version: i64,
    pub key: EnvKey,
    pub scope: SecretScope,
    /// Format version, key id, nonce, ciphertext and tag (see `crypto`).
    pub ciphertext: Vec<u8>,
    pub created_at: OffsetDateTime,
    pub created_by: Option<UserId>,
    /// The login of `created_by`, when read for a listing.
    pub created_by_login: Option<String>,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    id: String,
    project_id: String,
    secret_id: String,
    version: i64,
    key: String,
    scope: String,
    ciphertext: Vec<u8>,
    created_at: i64,
    created_by: Option<String>,
    created_by_login: Option<String>,
}

impl TryFrom<VersionRow> for StoredVersion {
    type Error = DbError;

    fn try_from(row: VersionRow) -> Result<Self, DbError> {
        Ok(Self {
            id: parse_id(&row.id)?,
            project_id: parse_id(&row.project_id)?,
            secret_id: parse_id(&row.secret_id)?,
            version: row.version,
            key: EnvKey::parse(row.key).map_err(decode_error)?,
            scope: parse_scope(row.scope)?,
            ciphertext: row.ciphertext,
            created_at: from_ms(row.created_at),
            created_by: row.created_by.as_deref().map(parse_id).transpose()?,
            created_by_login: row.created_by_login,
        })
    }
}

const VERSION_COLUMNS: &str = "v.id, v.project_id, v.secret_id, v.version, v.key, v.scope, \
     v.ciphertext, v.created_at, v.created_by, u.login AS created_by_login";

/// Adds `version` (numbered the secret's next) inside a transaction that has already written
/// the secret's row: that write holds the row, so two changes of one secret cannot both take
/// the same number.
macro_rules! insert_version_row {
    ($tx:expr, $version:expr) => {{
        sqlx::query(
            "INSERT INTO secret_versions \
             (id, project_id, secret_id, version, key, scope, ciphertext, created_at, created_by) \
             VALUES ($1, $2, $3, \
                     (SELECT COALESCE(MAX(version), 0) + 1 FROM secret_versions WHERE secret_id = $3), \
                     $4, $5, $6, $7, $8)",
        )
        .bind($version.id.to_string())
        .bind($version.project_id.to_string())
        .bind($version.secret_id.to_string())
        .bind($version.key.as_str())
        .bind(scope_column(&$version.scope))
        .bind(&$version.ciphertext)
        .bind(now_ms())
        .bind($version.created_by.map(|user| user.to_string()))
        .execute(&mut *$tx)
        .await?;
    }};
}

/// [`insert_version_row`], and the secret points at it as its current value.
macro_rules! insert_version {
    ($tx:expr, $version:expr) => {{
        insert_version_row!($tx, $version);
        sqlx::query("UPDATE secrets SET current_version = $2 WHERE id = $1")
            .bind($version.secret_id.to_string())
            .bind($version.id.to_string())
            .execute(&mut *$tx)
            .await?;
    }};
}

/// A value a secret had before it was changed or deleted, sealed under its own row (see
/// `vault::PreviousRow`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviousValue {
    /// The previous value's own id.
    pub id: Uuid,
    pub project_id: ProjectId,
    /// The secret it was a value of (which may be deleted since).
    pub secret_id: SecretId,
    pub key: EnvKey,
    /// Format version, key id, nonce, ciphertext and tag (see `crypto`).
    pub ciphertext: Vec<u8>,
    pub replaced_at: OffsetDateTime,
    pub replaced_by: Option<UserId>,
}

#[derive(sqlx::FromRow)]
struct PreviousValueRow {
    id: String,
    project_id: String,
    secret_id: String,
    key: String,
    ciphertext: Vec<u8>,
    replaced_at: i64,
    replaced_by: Option<String>,
}

impl TryFrom<PreviousValueRow> for PreviousValue {
    type Error = DbError;

    fn try_from(row: PreviousValueRow) -> Result<Self, DbError> {
        Ok(Self {
            id: parse_id(&row.id)?,
            project_id: parse_id(&row.project_id)?,
            secret_id: parse_id(&row.secret_id)?,
            key: EnvKey::parse(row.key).map_err(decode_error)?,
            ciphertext: row.ciphertext,
            replaced_at: from_ms(row.replaced_at),
            replaced_by: row.replaced_by.as_deref().map(parse_id).transpose()?,
        })
    }
}

const PREVIOUS_COLUMNS: &str =
    "id, project_id, secret_id, key, ciphertext, replaced_at, replaced_by";

/// Keeps `previous` inside the transaction that replaces or deletes its secret.
macro_rules! insert_previous {
    ($tx:expr, $previous:expr) => {
        sqlx::query(
            "INSERT INTO secret_previous_values \
             (id, project_id, secret_id, key, ciphertext, replaced_at, replaced_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind($previous.id.to_string())
        .bind($previous.project_id.to_string())
        .bind($previous.secret_id.to_string())
        .bind($previous.key.as_str())
        .bind(&$previous.ciphertext)
        .bind(super::to_ms($previous.replaced_at))
        .bind($previous.replaced_by.map(|user| user.to_string()))
        .execute(&mut *$tx)
        .await?
    };
}

/// How a scope is stored: `''` for global, else the service name.
fn scope_column(scope: &SecretScope) -> &str {
    match scope {
        SecretScope::Global => "",
        SecretScope::Service(service) => service.as_str(),
    }
}

const SECRET_COLUMNS: &str = "s.id, s.project_id, s.key, s.scope, s.ciphertext, s.updated_at, \
     s.weak_redaction, s.current_version";

impl Store {
    /// Stores a new secret with its first version (`None` only as a server before versions
    /// did); the same key and scope twice in a project is a `Conflict`.
    pub async fn insert_secret(
        &self,
        secret: &StoredSecret,
        version: Option<&StoredVersion>,
    ) -> Result<(), DbError> {
        let now = now_ms();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO secrets (id, project_id, key, scope, ciphertext, created_at, updated_at, weak_redaction) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
            )
            .bind(secret.id.to_string())
            .bind(secret.project_id.to_string())
            .bind(secret.key.as_str())
            .bind(scope_column(&secret.scope))
            .bind(&secret.ciphertext)
            .bind(now)
            .bind(secret.weak_redaction)
            .execute(&mut *tx)
            .await?;
            if let Some(version) = version {
                insert_version!(tx, version);
            }
            tx.commit().await?
        });
        Ok(())
    }

    /// Writes the version row of a secret's current value written before versions were kept,
    /// unless the value changed meanwhile (the change wrote its own). Returns the id of the
    /// current version either way.
    pub async fn keep_current_version(
        &self,
        secret: &StoredSecret,
        version: &StoredVersion,
    ) -> Result<Option<Uuid>, DbError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // Claims the row first, only while it still holds the value that was read and has
            // no version: a change committed meanwhile wrote its own, and wins.
            let claimed = sqlx::query(
                "UPDATE secrets SET current_version = $3 \
                 WHERE id = $1 AND ciphertext = $2 AND current_version IS NULL",
            )
            .bind(secret.id.to_string())
            .bind(&secret.ciphertext)
            .bind(version.id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 1 {
                insert_version_row!(tx, version);
            }
            tx.commit().await?
        });
        let current: Option<(Option<String>,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT current_version FROM secrets WHERE id = $1")
                .bind(secret.id.to_string())
                .fetch_optional(pool)
                .await?
        });
        current
            .and_then(|(id,)| id)
            .as_deref()
            .map(parse_id)
            .transpose()
    }

    /// The versions of one of `owner`'s secrets, newest first.
    pub async fn versions_of_secret(
        &self,
        owner: &User,
        secret: SecretId,
    ) -> Result<Vec<StoredVersion>, DbError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM secret_versions v \
             JOIN projects p ON p.id = v.project_id \
             LEFT JOIN users u ON u.id = v.created_by \
             WHERE v.secret_id = $1 AND p.owner_id = $2 ORDER BY v.version DESC"
        );
        let rows: Vec<VersionRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(secret.to_string())
                .bind(owner.id.to_string())
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(StoredVersion::try_from).collect()
    }

    /// The versions with these ids (a deployment's snapshot), sorted by key then scope.
    pub async fn versions_by_id(&self, ids: &[Uuid]) -> Result<Vec<StoredVersion>, DbError> {
        let mut versions = Vec::with_capacity(ids.len());
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM secret_versions v \
             LEFT JOIN users u ON u.id = v.created_by WHERE v.id = $1"
        );
        for id in ids {
            let row: Option<VersionRow> = on_pool!(self, pool => {
                sqlx::query_as(&sql).bind(id.to_string()).fetch_optional(pool).await?
            });
            if let Some(row) = row {
                versions.push(StoredVersion::try_from(row)?);
            }
        }
        versions.sort_by(|a, b| (&a.key, &a.scope).cmp(&(&b.key, &b.scope)));
        Ok(versions)
    }

    /// Every version of every secret, for key rotation.
    pub async fn all_versions(&self) -> Result<Vec<StoredVersion>, DbError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM secret_versions v \
             LEFT JOIN users u ON u.id = v.created_by ORDER BY v.id"
        );
        let rows: Vec<VersionRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        rows.into_iter().map(StoredVersion::try_from).collect()
    }

    /// Replaces a version's ciphertext only if it is still `expected`. Returns whether the row
    /// changed.
    pub async fn replace_version_ciphertext(
        &self,
        id: Uuid,
        expected: &[u8],
        ciphertext: &[u8],
    ) -> Result<bool, DbError> {
        let cell = SealedCell::new("secret_versions", "id", "ciphertext");
        self.swap_sealed(cell, &id.to_string(), expected, ciphertext)
            .await
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

    /// Gives a secret a new value only if it still has `expected`, keeping the one it had as
    /// `previous`. Returns whether the row changed.
    pub async fn replace_secret_value(
        &self,
        id: SecretId,
        expected: &[u8],
        ciphertext: &[u8],
        weak_redaction: bool,
        previous: Option<&PreviousValue>,
        version: &StoredVersion,
    ) -> Result<bool, DbError> {
        let changed = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let changed = sqlx::query(
                "UPDATE secrets SET ciphertext = $3, weak_redaction = $4, updated_at = $5 \
                 WHERE id = $1 AND ciphertext = $2",
            )
            .bind(id.to_string())
            .bind(expected)
            .bind(ciphertext)
            .bind(weak_redaction)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if let (1, Some(previous)) = (changed, previous) {
                insert_previous!(tx, previous);
            }
            if changed == 1 {
                insert_version!(tx, version);
            }
            tx.commit().await?;
            changed
        });
        if let (1, Some(previous)) = (changed, previous) {
            self.stamp_replaced(previous.id).await?;
        }
        Ok(changed == 1)
    }

    /// Deletes a secret only if it still has the value it was read with, keeping that value as
    /// `previous`. Returns whether it was deleted.
    pub async fn delete_secret(
        &self,
        secret: &StoredSecret,
        previous: Option<&PreviousValue>,
    ) -> Result<bool, DbError> {
        let deleted = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let deleted = sqlx::query("DELETE FROM secrets WHERE id = $1 AND ciphertext = $2")
                .bind(secret.id.to_string())
                .bind(&secret.ciphertext)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if let (1, Some(previous)) = (deleted, previous) {
                insert_previous!(tx, previous);
            }
            tx.commit().await?;
            deleted
        });
        if let (1, Some(previous)) = (deleted, previous) {
            self.stamp_replaced(previous.id).await?;
        }
        Ok(deleted == 1)
    }

    /// Dates a previous value again once the change that made it is committed. A deploy that
    /// read the secrets before that commit was given this value; such a deploy was created
    /// before the commit, so "replaced before the deploy was created" never matches it.
    async fn stamp_replaced(&self, id: Uuid) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE secret_previous_values SET replaced_at = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Records whether a secret's value is too short to be masked reliably, unless its value
    /// changed meanwhile (the change recorded its own).
    pub async fn set_weak_redaction(
        &self,
        id: SecretId,
        ciphertext: &[u8],
        weak_redaction: bool,
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE secrets SET weak_redaction = $3 WHERE id = $1 AND ciphertext = $2")
                .bind(id.to_string())
                .bind(ciphertext)
                .bind(weak_redaction)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// The values a project's secrets had before, oldest first.
    pub async fn previous_values_of_project(
        &self,
        project: ProjectId,
    ) -> Result<Vec<PreviousValue>, DbError> {
        let sql = format!(
            "SELECT {PREVIOUS_COLUMNS} FROM secret_previous_values WHERE project_id = $1 \
             ORDER BY replaced_at, id"
        );
        let rows: Vec<PreviousValueRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(project.to_string()).fetch_all(pool).await?
        });
        rows.into_iter().map(PreviousValue::try_from).collect()
    }

    /// Every previous value of every project, for key rotation.
    pub async fn all_previous_values(&self) -> Result<Vec<PreviousValue>, DbError> {
        let sql = format!("SELECT {PREVIOUS_COLUMNS} FROM secret_previous_values ORDER BY id");
        let rows: Vec<PreviousValueRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        rows.into_iter().map(PreviousValue::try_from).collect()
    }

    /// Replaces a previous value's ciphertext only if it is still `expected`. Returns whether
    /// the row changed.
    pub async fn replace_previous_ciphertext(
        &self,
        id: Uuid,
        expected: &[u8],
        ciphertext: &[u8],
    ) -> Result<bool, DbError> {
        let cell = SealedCell::new("secret_previous_values", "id", "ciphertext");
        self.swap_sealed(cell, &id.to_string(), expected, ciphertext)
            .await
    }

    /// Keeps a value a container may run again (a redeploy of an earlier snapshot).
    pub async fn insert_previous_value(&self, previous: &PreviousValue) -> Result<(), DbError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            insert_previous!(tx, previous);
            tx.commit().await?
        });
        Ok(())
    }

    /// Forgets one previous value (one too many to keep).
    pub async fn delete_previous_value(&self, id: Uuid) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM secret_previous_values WHERE id = $1")
                .bind(id.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Forgets the previous values of `project` replaced before `deployment` was created: once
    /// it succeeded, its containers run the values it was given. Returns how many were dropped.
    pub async fn forget_previous_values(
        &self,
        project: ProjectId,
        deployment: DeploymentId,
    ) -> Result<u64, DbError> {
        let forgotten = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM secret_previous_values WHERE project_id = $1 AND replaced_at < \
                 (SELECT created_at FROM deployments WHERE id = $2 AND project_id = $1)",
            )
            .bind(project.to_string())
            .bind(deployment.to_string())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(forgotten)
    }
}
