//! Deployments and their history. A deployment's status only moves forward: once it is final
//! (succeeded, failed, cancelled, timed out) nothing changes it again.

use super::{from_ms, now_ms, on_pool, parse_id, DbError, Store, User};
use shared::api::{Deployment, DeploymentEvent, DeploymentStatus, EventKind};
use shared::runtime::{JobKind, ServiceImage};
use shared::webhooks::DeployTrigger;
use shared::{AgentId, DeploymentId, JobId, ProjectId, ServiceName, UserId};
use uuid::Uuid;

/// Events kept per deployment; output beyond this is counted, not stored.
pub const MAX_EVENTS: i64 = 2_000;

/// An event to append.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub kind: EventKind,
    pub body: String,
}

/// A job to queue: a deploy (with the secret versions it runs) or a lifecycle action.
#[derive(Clone, Debug)]
pub struct NewJob {
    pub project: ProjectId,
    /// The agent the project is on now.
    pub agent: AgentId,
    /// When it counts as created (Unix ms): a deploy takes this before it reads the secrets it
    /// records, so a value replaced while they are read is dated after it and stays masked
    /// (see `forget_previous_values`).
    pub created_at: i64,
    pub requested_by: UserId,
    pub kind: JobKind,
    pub service: Option<ServiceName>,
    pub remove_volumes: bool,
    pub redeploy_of: Option<DeploymentId>,
    /// For a deploy: the secret versions it runs (see `secret_versions`).
    pub secrets: Vec<Uuid>,
}

/// A deployment an agent still owes an answer for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingJob {
    pub deployment_id: DeploymentId,
    pub job_id: JobId,
    pub project_id: ProjectId,
    pub status: DeploymentStatus,
    pub kind: JobKind,
}

#[derive(sqlx::FromRow)]
struct DeploymentRow {
    id: String,
    project_id: String,
    job_id: String,
    status: String,
    message: Option<String>,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    kind: String,
    service: Option<String>,
    remove_volumes: bool,
    redeploy_of: Option<String>,
    requested_by: Option<String>,
    images: Option<String>,
    trigger_info: Option<String>,
    commit_info: Option<String>,
}

fn parse_kind(value: &str) -> Result<JobKind, DbError> {
    JobKind::parse(value).ok_or_else(|| {
        DbError::Other(sqlx::Error::Decode(
            format!("unknown job kind {value:?}").into(),
        ))
    })
}

fn parse_status(value: &str) -> Result<DeploymentStatus, DbError> {
    DeploymentStatus::parse(value).ok_or_else(|| {
        DbError::Other(sqlx::Error::Decode(
            format!("unknown status {value:?}").into(),
        ))
    })
}

impl TryFrom<DeploymentRow> for Deployment {
    type Error = DbError;

    fn try_from(row: DeploymentRow) -> Result<Self, DbError> {
        Ok(Self {
            id: parse_id(&row.id)?,
            project_id: parse_id(&row.project_id)?,
            job_id: parse_id(&row.job_id)?,
            status: parse_status(&row.status)?,
            message: row.message,
            created_at: from_ms(row.created_at),
            updated_at: from_ms(row.updated_at),
            finished_at: row.finished_at.map(from_ms),
            events: Vec::new(),
            kind: parse_kind(&row.kind)?,
            service: row
                .service
                .map(ServiceName::parse)
                .transpose()
                .map_err(|error| DbError::Other(sqlx::Error::Decode(Box::new(error))))?,
            remove_volumes: row.remove_volumes,
            redeploy_of: row.redeploy_of.as_deref().map(parse_id).transpose()?,
            requested_by: row.requested_by,
            // Written by this server from the agent's report; unreadable means none recorded.
            images: row
                .images
                .and_then(|images| serde_json::from_str(&images).ok())
                .unwrap_or_default(),
            // Written by this server; unreadable (a newer server's kind) reads as by hand.
            trigger: row
                .trigger_info
                .and_then(|trigger| serde_json::from_str(&trigger).ok())
                .unwrap_or_default(),
            commit: row
                .commit_info
                .and_then(|commit| serde_json::from_str(&commit).ok()),
        })
    }
}

const DEPLOYMENT_COLUMNS: &str =
    "d.id, d.project_id, d.job_id, d.status, d.message, d.created_at, d.updated_at, d.finished_at, \
     d.kind, d.service, d.remove_volumes, d.redeploy_of, u.login AS requested_by, d.images, \
     d.trigger_info, d.commit_info";
/// Joined after `FROM deployments d` so `requested_by` reads as a login.
const REQUESTER_JOIN: &str = "LEFT JOIN users u ON u.id = d.requested_by";
const OPEN_STATUSES: &str = "('queued', 'sent', 'received', 'running')";

impl Store {
    /// A new job in `Queued`, with its first status event and, for a deploy, the secret
    /// versions it runs.
    pub async fn create_job(&self, job: &NewJob) -> Result<(DeploymentId, JobId), DbError> {
        self.create_triggered_job(job, None).await
    }

    /// [`Store::create_job`] for a job something other than a person started (a push webhook),
    /// recorded with it in the same transaction.
    pub async fn create_triggered_job(
        &self,
        job: &NewJob,
        trigger: Option<&DeployTrigger>,
    ) -> Result<(DeploymentId, JobId), DbError> {
        let trigger = trigger
            .map(serde_json::to_string)
            .transpose()
            .map_err(|error| DbError::Other(sqlx::Error::Encode(Box::new(error))))?;
        let id = DeploymentId(Uuid::new_v4());
        let job_id = JobId(Uuid::new_v4());
        let now = job.created_at;
        let snapshot = job.kind == JobKind::Deploy;
        // The order the agent is handed its jobs in: the database's, not this replica's clock
        // (`created_at`), which another replica's may be behind. SQLite has one writer.
        let queue_order = match self.pool {
            super::Pool::Postgres(_) => "nextval('deployments_queue_order')",
            super::Pool::Sqlite(_) => "(SELECT COALESCE(MAX(queue_order), 0) + 1 FROM deployments)",
        };
        let insert = format!(
            "INSERT INTO deployments (id, project_id, job_id, status, requested_by, created_at, updated_at, \
             kind, service, remove_volumes, redeploy_of, secrets_snapshot, agent_id, trigger_info, queue_order) \
             VALUES ($1, $2, $3, 'queued', $4, $5, $5, $6, $7, $8, $9, $10, $11, $12, {queue_order})"
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(&insert)
            .bind(id.to_string())
            .bind(job.project.to_string())
            .bind(job_id.to_string())
            .bind(job.requested_by.to_string())
            .bind(now)
            .bind(job.kind.as_str())
            .bind(job.service.as_ref().map(ServiceName::as_str))
            .bind(job.remove_volumes)
            .bind(job.redeploy_of.map(|id| id.to_string()))
            .bind(snapshot)
            .bind(job.agent.to_string())
            .bind(trigger.as_deref())
            .execute(&mut *tx)
            .await?;
            for version in &job.secrets {
                sqlx::query("INSERT INTO deployment_secrets (deployment_id, version_id) VALUES ($1, $2)")
                    .bind(id.to_string())
                    .bind(version.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("INSERT INTO deployment_events (deployment_id, at, kind, body) VALUES ($1, $2, 'status', 'queued')")
                .bind(id.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?
        });
        Ok((id, job_id))
    }

    /// Moves a deployment forward to `status` (never back: a late or repeated `Received` does
    /// not undo `Running`, and nothing leaves a final status); records the change as an event.
    /// Returns whether it moved.
    pub async fn set_deployment_status(
        &self,
        id: DeploymentId,
        status: DeploymentStatus,
        message: Option<&str>,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let finished = status.is_final().then_some(now);
        let moved = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let sql = format!(
                "UPDATE deployments SET status = $2, updated_at = $3, finished_at = $4, \
                 message = COALESCE($5, message) WHERE id = $1 AND status IN {}",
                earlier_statuses(status)
            );
            let moved = sqlx::query(&sql)
                .bind(id.to_string())
                .bind(status.as_str())
                .bind(now)
                .bind(finished)
                .bind(message)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if moved == 1 {
                sqlx::query("INSERT INTO deployment_events (deployment_id, at, kind, body) VALUES ($1, $2, 'status', $3)")
                    .bind(id.to_string())
                    .bind(now)
                    .bind(status.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            moved
        });
        Ok(moved == 1)
    }

    /// Appends events, keeping at most [`MAX_EVENTS`] per deployment, and notes that the
    /// deployment is alive (its `updated_at`, which expiry looks at). Returns the time the events
    /// were stored under.
    ///
    /// Each insert checks the bound itself, in one statement: a read-then-write transaction
    /// would fail on SQLite (WAL) whenever another connection committed in between.
    pub async fn add_deployment_events(
        &self,
        id: DeploymentId,
        events: &[NewEvent],
    ) -> Result<time::OffsetDateTime, DbError> {
        let now = now_ms();
        on_pool!(self, pool => {
            for event in events {
                sqlx::query(
                    "INSERT INTO deployment_events (deployment_id, at, kind, body) \
                     SELECT $1, $2, $3, $4 \
                     WHERE (SELECT COUNT(*) FROM deployment_events WHERE deployment_id = $1) < $5",
                )
                .bind(id.to_string())
                .bind(now)
                .bind(event.kind.as_str())
                .bind(&event.body)
                .bind(MAX_EVENTS)
                .execute(pool)
                .await?;
            }
            sqlx::query("UPDATE deployments SET updated_at = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(now)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(from_ms(now))
    }

    /// A deployment of one of `owner`'s projects, with its events.
    pub async fn deployment(&self, owner: &User, id: DeploymentId) -> Result<Deployment, DbError> {
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d JOIN projects p ON p.id = d.project_id \
             {REQUESTER_JOIN} WHERE d.id = $1 AND p.owner_id = $2"
        );
        let row: DeploymentRow = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.to_string()).bind(owner.id.to_string()).fetch_one(pool).await?
        });
        let mut deployment = Deployment::try_from(row)?;
        let events: Vec<(i64, String, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT at, kind, body FROM deployment_events WHERE deployment_id = $1 ORDER BY id")
                .bind(id.to_string())
                .fetch_all(pool)
                .await?
        });
        // A kind this build does not know (written by a newer server sharing the database) is
        // left out rather than making the whole deployment unreadable.
        deployment.events = events
            .into_iter()
            .filter_map(|(at, kind, body)| match EventKind::parse(&kind) {
                Some(kind) => Some(DeploymentEvent {
                    at: from_ms(at),
                    kind,
                    body,
                }),
                None => {
                    tracing::warn!(%id, kind, "skipping a deployment event of an unknown kind");
                    None
                }
            })
            .collect();
        Ok(deployment)
    }

    /// A project's deployments, newest first, without events.
    pub async fn deployments_of_project(
        &self,
        owner: &User,
        project: ProjectId,
    ) -> Result<Vec<Deployment>, DbError> {
        self.project(owner, project).await?;
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d {REQUESTER_JOIN} \
             WHERE d.project_id = $1 ORDER BY d.queue_order DESC, d.id"
        );
        let rows: Vec<DeploymentRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(project.to_string()).fetch_all(pool).await?
        });
        rows.into_iter().map(Deployment::try_from).collect()
    }

    /// The deployment a job id belongs to, if it is one of `agent`'s projects.
    pub async fn deployment_by_job(
        &self,
        agent: AgentId,
        job: JobId,
    ) -> Result<Option<PendingJob>, DbError> {
        let row: Option<PendingRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT d.id, d.job_id, d.project_id, d.status, d.kind FROM deployments d \
                 JOIN projects p ON p.id = d.project_id WHERE d.job_id = $1 AND p.agent_id = $2",
            )
            .bind(job.to_string())
            .bind(agent.to_string())
            .fetch_optional(pool)
            .await?
        });
        row.map(pending_job).transpose()
    }

    /// Deployments of `agent`'s projects that are not final yet, in the order they were queued.
    pub async fn open_jobs_of_agent(&self, agent: AgentId) -> Result<Vec<PendingJob>, DbError> {
        self.jobs_of_agent(agent, OPEN_STATUSES).await
    }

    /// Deployments of `agent`'s projects that wait to be sent (`queued`), in the order they were
    /// queued.
    pub async fn queued_jobs_of_agent(&self, agent: AgentId) -> Result<Vec<PendingJob>, DbError> {
        self.jobs_of_agent(agent, "('queued')").await
    }

    async fn jobs_of_agent(
        &self,
        agent: AgentId,
        statuses: &'static str,
    ) -> Result<Vec<PendingJob>, DbError> {
        let sql = format!(
            "SELECT d.id, d.job_id, d.project_id, d.status, d.kind FROM deployments d \
             JOIN projects p ON p.id = d.project_id \
             WHERE p.agent_id = $1 AND d.status IN {statuses} ORDER BY d.queue_order, d.id"
        );
        let rows: Vec<PendingRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(agent.to_string()).fetch_all(pool).await?
        });
        rows.into_iter().map(pending_job).collect()
    }

    /// How many jobs of a project are waiting or running.
    pub async fn open_jobs_of_project(&self, project: ProjectId) -> Result<i64, DbError> {
        let sql = format!(
            "SELECT COUNT(*) FROM deployments WHERE project_id = $1 AND status IN {OPEN_STATUSES}"
        );
        let (count,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(project.to_string()).fetch_one(pool).await?
        });
        Ok(count)
    }

    /// A job as stored, whoever's it is (for sending it to its agent).
    pub async fn job(&self, id: DeploymentId) -> Result<Deployment, DbError> {
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments d {REQUESTER_JOIN} WHERE d.id = $1"
        );
        let row: DeploymentRow = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.to_string()).fetch_one(pool).await?
        });
        row.try_into()
    }

    /// The secret versions a deploy runs; `None` for a deploy written before snapshots were
    /// kept (it runs the values current when it is sent).
    pub async fn snapshot_of(&self, id: DeploymentId) -> Result<Option<Vec<Uuid>>, DbError> {
        let (has_snapshot,): (bool,) = on_pool!(self, pool => {
            sqlx::query_as("SELECT secrets_snapshot FROM deployments WHERE id = $1")
                .bind(id.to_string())
                .fetch_one(pool)
                .await?
        });
        if !has_snapshot {
            return Ok(None);
        }
        let rows: Vec<(String,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT version_id FROM deployment_secrets WHERE deployment_id = $1")
                .bind(id.to_string())
                .fetch_all(pool)
                .await?
        });
        rows.iter()
            .map(|(id,)| parse_id(id))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// The agent a job was for; `None` for a job written before this was kept.
    pub async fn agent_of_job(&self, id: DeploymentId) -> Result<Option<AgentId>, DbError> {
        let (agent,): (Option<String>,) = on_pool!(self, pool => {
            sqlx::query_as("SELECT agent_id FROM deployments WHERE id = $1")
                .bind(id.to_string())
                .fetch_one(pool)
                .await?
        });
        agent.as_deref().map(parse_id).transpose()
    }

    /// Records the images a deploy's services run, from its agent's result.
    pub async fn set_deployment_images(
        &self,
        id: DeploymentId,
        images: &[ServiceImage],
    ) -> Result<(), DbError> {
        let json = serde_json::to_string(images)
            .map_err(|error| DbError::Other(sqlx::Error::Encode(Box::new(error))))?;
        on_pool!(self, pool => {
            sqlx::query("UPDATE deployments SET images = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(json)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(())
    }

    /// Open deployments not updated since `before` (Unix ms): their agent never answered.
    pub async fn stale_open_deployments(
        &self,
        before: i64,
    ) -> Result<Vec<(DeploymentId, ProjectId)>, DbError> {
        let sql = format!(
            "SELECT id, project_id FROM deployments WHERE status IN {OPEN_STATUSES} AND updated_at < $1"
        );
        let rows: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(before).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(id, project)| Ok((parse_id(&id)?, parse_id(&project)?)))
            .collect()
    }
}

/// The open statuses a deployment may move to `status` from, as an SQL list.
fn earlier_statuses(status: DeploymentStatus) -> String {
    use DeploymentStatus::*;
    let rank = |status: DeploymentStatus| match status {
        Queued => 0,
        Sent => 1,
        Received => 2,
        Running => 3,
        Succeeded | Failed | Cancelled | TimedOut => 4,
    };
    let earlier: Vec<String> = [Queued, Sent, Received, Running]
        .into_iter()
        .filter(|open| rank(*open) < rank(status))
        .map(|open| format!("'{}'", open.as_str()))
        .collect();
    if earlier.is_empty() {
        "(NULL)".into()
    } else {
        format!("({})", earlier.join(", "))
    }
}

type PendingRow = (String, String, String, String, String);

fn pending_job((id, job_id, project_id, status, kind): PendingRow) -> Result<PendingJob, DbError> {
    Ok(PendingJob {
        deployment_id: parse_id(&id)?,
        job_id: parse_id(&job_id)?,
        project_id: parse_id(&project_id)?,
        status: parse_status(&status)?,
        kind: parse_kind(&kind)?,
    })
}
