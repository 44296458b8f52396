//! Purging history the server no longer needs, a bounded batch at a time.
//!
//! Every method deletes at most `limit` rows of one table in one statement (its own short
//! transaction), so a huge backlog is worked off in many small steps and never holds a long
//! write lock; [`crate::ops::retention`] calls them in a loop. Times are Unix milliseconds and
//! come from the caller, so a test can purge as if it were a year later.

use super::{on_pool, parse_id, DbError, Store};
use shared::DeploymentId;

/// The open statuses: a job still waiting for its agent is never purged.
const OPEN_STATUSES: &str = "('queued', 'sent', 'received', 'running')";

impl Store {
    /// Finished jobs of each project beyond its newest `keep` finished ones, at most `limit`,
    /// oldest first. Kept whatever their rank: the project's newest successful deploy (what
    /// runs) and any job a remaining job redeploys.
    pub async fn deployments_to_purge(
        &self,
        keep: u32,
        limit: u32,
    ) -> Result<Vec<DeploymentId>, DbError> {
        let sql = format!(
            "SELECT ranked.id FROM ( \
               SELECT d.id, d.project_id, d.queue_order, ROW_NUMBER() OVER ( \
                 PARTITION BY d.project_id ORDER BY d.queue_order DESC, d.id DESC) AS place \
               FROM deployments d WHERE d.status NOT IN {OPEN_STATUSES} \
             ) ranked \
             WHERE ranked.place > $1 \
               AND NOT EXISTS (SELECT 1 FROM deployments r WHERE r.redeploy_of = ranked.id) \
               AND ranked.id <> COALESCE(( \
                 SELECT s.id FROM deployments s \
                 WHERE s.project_id = ranked.project_id AND s.kind = 'deploy' AND s.status = 'succeeded' \
                 ORDER BY s.queue_order DESC, s.id DESC LIMIT 1), '') \
             ORDER BY ranked.queue_order, ranked.id LIMIT $2"
        );
        let rows: Vec<(String,)> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(i64::from(keep))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.iter().map(|(id,)| parse_id(id)).collect()
    }

    /// Deletes up to `limit` events of one deployment. Returns how many went.
    pub async fn purge_deployment_events(
        &self,
        deployment: DeploymentId,
        limit: u32,
    ) -> Result<u64, DbError> {
        let purged = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM deployment_events WHERE id IN ( \
                   SELECT id FROM deployment_events WHERE deployment_id = $1 LIMIT $2)",
            )
            .bind(deployment.to_string())
            .bind(i64::from(limit))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(purged)
    }

    /// Deletes a finished deployment (its remaining events and `deployment_secrets` rows
    /// cascade) unless a job redeploying it appeared meanwhile. Returns whether it went.
    pub async fn purge_deployment(&self, deployment: DeploymentId) -> Result<bool, DbError> {
        let sql = format!(
            "DELETE FROM deployments WHERE id = $1 AND status NOT IN {OPEN_STATUSES} \
             AND NOT EXISTS (SELECT 1 FROM deployments r WHERE r.redeploy_of = $1)"
        );
        let purged = on_pool!(self, pool => {
            sqlx::query(&sql).bind(deployment.to_string()).execute(pool).await?.rows_affected()
        });
        Ok(purged == 1)
    }

    /// Deletes up to `limit` secret versions that no deployment runs and no secret holds as
    /// its current value, beyond the newest `keep` of their secret.
    pub async fn purge_secret_versions(&self, keep: u32, limit: u32) -> Result<u64, DbError> {
        let purged = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM secret_versions WHERE id IN ( \
                   SELECT v.id FROM secret_versions v \
                   WHERE NOT EXISTS (SELECT 1 FROM deployment_secrets ds WHERE ds.version_id = v.id) \
                     AND NOT EXISTS (SELECT 1 FROM secrets s WHERE s.current_version = v.id) \
                     AND (SELECT COUNT(*) FROM secret_versions n \
                          WHERE n.secret_id = v.secret_id AND n.version > v.version) >= $1 \
                   LIMIT $2)",
            )
            .bind(i64::from(keep))
            .bind(i64::from(limit))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(purged)
    }

    /// Deletes up to `limit` audit entries written before `before`.
    pub async fn purge_audit(&self, before: i64, limit: u32) -> Result<u64, DbError> {
        let purged = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM audit_log WHERE id IN ( \
                   SELECT id FROM audit_log WHERE at < $1 LIMIT $2)",
            )
            .bind(before)
            .bind(i64::from(limit))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(purged)
    }

    /// Deletes up to `limit` join tokens used or expired before `before`.
    pub async fn purge_join_tokens(&self, before: i64, limit: u32) -> Result<u64, DbError> {
        let purged = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM join_tokens WHERE token_hash IN ( \
                   SELECT token_hash FROM join_tokens \
                   WHERE used_at < $1 OR (used_at IS NULL AND expires_at < $1) LIMIT $2)",
            )
            .bind(before)
            .bind(i64::from(limit))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(purged)
    }

    /// Deletes up to `limit` sign-in sessions expired at `now`.
    pub async fn purge_sessions(&self, now: i64, limit: u32) -> Result<u64, DbError> {
        let purged = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM sessions WHERE token_hash IN ( \
                   SELECT token_hash FROM sessions WHERE expires_at <= $1 LIMIT $2)",
            )
            .bind(now)
            .bind(i64::from(limit))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(purged)
    }

    /// Deletes up to `limit` finished (delivered or failed) notification deliveries queued
    /// before `before`; pending ones stay whatever their age.
    pub async fn purge_deliveries(&self, before: i64, limit: u32) -> Result<u64, DbError> {
        let purged = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM notification_deliveries WHERE seq IN ( \
                   SELECT seq FROM notification_deliveries \
                   WHERE status <> 'pending' AND created_at < $1 LIMIT $2)",
            )
            .bind(before)
            .bind(i64::from(limit))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(purged)
    }
}
