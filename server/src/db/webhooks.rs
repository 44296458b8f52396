//! Push webhooks: one row per project (its random id, its sealed secret, the "deploy again when
//! the running deploy ends" flag) and the deliveries it verified (for de-duplication and the
//! dashboard). A delivery is stored only after its signature checked out, so a flood of forged
//! requests writes nothing.

use super::{from_ms, now_ms, on_pool, parse_id, DbError, SealedCell, Store};
use shared::webhooks::{DeliveryOutcome, DeployTrigger, WebhookDelivery, WebhookProvider};
use shared::{DeploymentId, ProjectId, UserId};

/// A hook as stored: its secret still sealed.
#[derive(Clone)]
pub struct StoredHook {
    pub id: String,
    pub project_id: ProjectId,
    pub secret: Vec<u8>,
    pub created_at: i64,
    pub rotated_at: Option<i64>,
    /// JSON of the trigger to deploy when the running deploy ends, if a push is waiting.
    pub pending_deploy: Option<String>,
}

impl std::fmt::Debug for StoredHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredHook")
            .field("id", &self.id)
            .field("project_id", &self.project_id)
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

/// A verified delivery to keep.
#[derive(Clone, Debug)]
pub struct NewDelivery<'a> {
    pub hook_id: &'a str,
    pub delivery_id: &'a str,
    pub provider: WebhookProvider,
    pub event: &'a str,
    pub outcome: DeliveryOutcome,
    /// SHA-256 (hex) of the raw body of an HMAC-signed delivery: a second delivery with the
    /// same body is a duplicate whatever its id (a replay under a new id).
    pub body_sha256: Option<&'a str>,
}

#[derive(sqlx::FromRow)]
struct HookRow {
    id: String,
    project_id: String,
    secret: Vec<u8>,
    created_at: i64,
    rotated_at: Option<i64>,
    pending_deploy: Option<String>,
}

impl TryFrom<HookRow> for StoredHook {
    type Error = DbError;

    fn try_from(row: HookRow) -> Result<Self, DbError> {
        Ok(Self {
            id: row.id,
            project_id: parse_id(&row.project_id)?,
            secret: row.secret,
            created_at: row.created_at,
            rotated_at: row.rotated_at,
            pending_deploy: row.pending_deploy,
        })
    }
}

const HOOK_COLUMNS: &str = "id, project_id, secret, created_at, rotated_at, pending_deploy";

impl Store {
    /// A new hook for `project`; `Conflict` if it has one.
    pub async fn create_webhook(
        &self,
        project: ProjectId,
        hook_id: &str,
        secret: &[u8],
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO webhooks (id, project_id, secret, created_at) VALUES ($1, $2, $3, $4)")
                .bind(hook_id)
                .bind(project.to_string())
                .bind(secret)
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// The hook of a project, if it has one.
    pub async fn webhook_of_project(
        &self,
        project: ProjectId,
    ) -> Result<Option<StoredHook>, DbError> {
        let sql = format!("SELECT {HOOK_COLUMNS} FROM webhooks WHERE project_id = $1");
        let row: Option<HookRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(project.to_string()).fetch_optional(pool).await?
        });
        row.map(StoredHook::try_from).transpose()
    }

    /// The hook a delivery's URL names, if there is one.
    pub async fn webhook_by_id(&self, hook_id: &str) -> Result<Option<StoredHook>, DbError> {
        let sql = format!("SELECT {HOOK_COLUMNS} FROM webhooks WHERE id = $1");
        let row: Option<HookRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(hook_id).fetch_optional(pool).await?
        });
        row.map(StoredHook::try_from).transpose()
    }

    /// Every hook (for a key rotation).
    pub async fn all_webhooks(&self) -> Result<Vec<StoredHook>, DbError> {
        let sql = format!("SELECT {HOOK_COLUMNS} FROM webhooks ORDER BY id");
        let rows: Vec<HookRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        rows.into_iter().map(StoredHook::try_from).collect()
    }

    /// Replaces a hook's secret (a rotation by its owner); `NotFound` if it is gone.
    pub async fn set_webhook_secret(&self, hook_id: &str, secret: &[u8]) -> Result<(), DbError> {
        let changed = on_pool!(self, pool => {
            sqlx::query("UPDATE webhooks SET secret = $2, rotated_at = $3 WHERE id = $1")
                .bind(hook_id)
                .bind(secret)
                .bind(now_ms())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if changed == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    /// Replaces a sealed secret with the same value sealed under another master key, only if
    /// the row still holds `old` (a key rotation). Returns whether it did.
    pub async fn replace_webhook_ciphertext(
        &self,
        hook_id: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, DbError> {
        let cell = SealedCell::new("webhooks", "id", "secret");
        self.swap_sealed(cell, hook_id, old, new).await
    }

    /// Removes a project's hook with its deliveries; returns whether it had one.
    pub async fn delete_webhook(&self, project: ProjectId) -> Result<bool, DbError> {
        let deleted = on_pool!(self, pool => {
            sqlx::query("DELETE FROM webhooks WHERE project_id = $1")
                .bind(project.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted == 1)
    }

    /// Keeps a verified delivery; `false` if this hook has seen its id, or its signed body,
    /// before (nothing written).
    pub async fn record_webhook_delivery(
        &self,
        delivery: &NewDelivery<'_>,
    ) -> Result<bool, DbError> {
        let inserted = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO webhook_deliveries \
                 (hook_id, delivery_id, received_at, provider, event, outcome, body_sha256) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            )
            .bind(delivery.hook_id)
            .bind(delivery.delivery_id)
            .bind(now_ms())
            .bind(delivery.provider.as_str())
            .bind(delivery.event)
            .bind(delivery.outcome.as_str())
            .bind(delivery.body_sha256)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Records what a kept delivery became.
    pub async fn set_webhook_delivery_outcome(
        &self,
        hook_id: &str,
        delivery_id: &str,
        outcome: DeliveryOutcome,
        deployment: Option<DeploymentId>,
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE webhook_deliveries SET outcome = $3, deployment_id = $4 \
                 WHERE hook_id = $1 AND delivery_id = $2",
            )
            .bind(hook_id)
            .bind(delivery_id)
            .bind(outcome.as_str())
            .bind(deployment.map(|id| id.to_string()))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Forgets a kept delivery whose handling failed, so the sender's retry is not taken for a
    /// duplicate.
    pub async fn forget_webhook_delivery(
        &self,
        hook_id: &str,
        delivery_id: &str,
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM webhook_deliveries WHERE hook_id = $1 AND delivery_id = $2")
                .bind(hook_id)
                .bind(delivery_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// A hook's latest deliveries, newest first.
    pub async fn webhook_deliveries(
        &self,
        hook_id: &str,
        limit: i64,
    ) -> Result<Vec<WebhookDelivery>, DbError> {
        type Row = (String, i64, String, String, String, Option<String>);
        let rows: Vec<Row> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT delivery_id, received_at, provider, event, outcome, deployment_id \
                 FROM webhook_deliveries WHERE hook_id = $1 \
                 ORDER BY received_at DESC, delivery_id LIMIT $2",
            )
            .bind(hook_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        let unknown = |what: &str, value: &str| {
            DbError::Other(sqlx::Error::Decode(
                format!("unknown webhook {what} {value:?}").into(),
            ))
        };
        rows.into_iter()
            .map(
                |(delivery_id, received_at, provider, event, outcome, deployment)| {
                    Ok(WebhookDelivery {
                        provider: WebhookProvider::parse(&provider)
                            .ok_or_else(|| unknown("provider", &provider))?,
                        outcome: DeliveryOutcome::parse(&outcome)
                            .ok_or_else(|| unknown("outcome", &outcome))?,
                        delivery_id,
                        received_at: from_ms(received_at),
                        event,
                        deployment_id: deployment.as_deref().map(parse_id).transpose()?,
                    })
                },
            )
            .collect()
    }

    /// Drops at most `limit` deliveries received before `before` (Unix ms); returns how many.
    pub async fn purge_webhook_deliveries(&self, before: i64, limit: u32) -> Result<u64, DbError> {
        Ok(on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM webhook_deliveries WHERE (hook_id, delivery_id) IN ( \
                   SELECT hook_id, delivery_id FROM webhook_deliveries \
                   WHERE received_at < $1 LIMIT $2)",
            )
                .bind(before)
                .bind(i64::from(limit))
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Raises the "deploy again when the running deploy ends" flag of a project's hook, with the
    /// trigger of the newest push (JSON), replacing an older one.
    pub async fn set_pending_deploy(
        &self,
        project: ProjectId,
        trigger: &str,
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE webhooks SET pending_deploy = $2 WHERE project_id = $1")
                .bind(project.to_string())
                .bind(trigger)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Lowers the flag if it still holds `trigger` (what the caller read); returns whether this
    /// caller lowered it, so of two callers racing for one flag only one deploys.
    pub async fn take_pending_deploy(
        &self,
        project: ProjectId,
        trigger: &str,
    ) -> Result<bool, DbError> {
        let taken = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE webhooks SET pending_deploy = NULL WHERE project_id = $1 AND pending_deploy = $2",
            )
            .bind(project.to_string())
            .bind(trigger)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(taken == 1)
    }

    /// The owner of a project and whether they may still act (not disabled): a hook deploys on
    /// its owner's behalf.
    pub async fn project_owner(&self, project: ProjectId) -> Result<(UserId, bool), DbError> {
        let (owner, disabled_at): (String, Option<i64>) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT u.id, u.disabled_at FROM projects p JOIN users u ON u.id = p.owner_id \
                 WHERE p.id = $1",
            )
            .bind(project.to_string())
            .fetch_one(pool)
            .await?
        });
        Ok((parse_id(&owner)?, disabled_at.is_none()))
    }

    /// What started a deployment (`Manual` if nothing was recorded).
    pub async fn deployment_trigger(&self, id: DeploymentId) -> Result<DeployTrigger, DbError> {
        let (trigger,): (Option<String>,) = on_pool!(self, pool => {
            sqlx::query_as("SELECT trigger_info FROM deployments WHERE id = $1")
                .bind(id.to_string())
                .fetch_one(pool)
                .await?
        });
        Ok(trigger
            .and_then(|trigger| serde_json::from_str(&trigger).ok())
            .unwrap_or_default())
    }

    /// Projects whose hook has a deploy waiting.
    pub async fn projects_with_pending_deploy(&self) -> Result<Vec<ProjectId>, DbError> {
        let rows: Vec<(String,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT project_id FROM webhooks WHERE pending_deploy IS NOT NULL")
                .fetch_all(pool)
                .await?
        });
        rows.iter().map(|(id,)| parse_id(id)).collect()
    }
}
