//! Notifications as stored: channels (credentials sealed by the vault before they get here),
//! each project's rules, and the queue of deliveries the worker drains.
//!
//! The queue is shared by every replica of the server. A worker sends only the oldest pending
//! delivery of a channel (so a channel's deliveries go out in order), and only after claiming
//! it with one `UPDATE … WHERE status = 'pending' AND (claimed_until IS NULL OR claimed_until
//! < now)`: of two workers, one changes the row and the other changes nothing. A claim expires,
//! so a worker that died mid-send holds nothing for long; the receiver may then get that
//! delivery twice, which `X-Stagely-Delivery` lets it notice.

use super::{from_ms, now_ms, on_pool, parse_id, DbError, SealedCell, Store, User};
use shared::notify::{
    ChannelId, ChannelKind, Delivery, DeliveryId, DeliveryStatus, Notification, NotificationEvent,
};
use shared::runtime::JobKind;
use shared::{AgentId, DeploymentId, ProjectId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

/// One channel row; the credentials are ciphertext (see `vault::ChannelRow`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChannel {
    pub id: ChannelId,
    pub owner_id: UserId,
    pub kind: ChannelKind,
    pub name: String,
    /// Scheme and host of the URL, what listings show.
    pub target: String,
    pub url: Vec<u8>,
    pub signing_secret: Option<Vec<u8>>,
    pub token: Option<Vec<u8>>,
    pub created_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct ChannelRow {
    id: String,
    owner_id: String,
    kind: String,
    name: String,
    target: String,
    url: Vec<u8>,
    signing_secret: Option<Vec<u8>>,
    token: Option<Vec<u8>>,
    created_at: i64,
}

fn decode_error(what: String) -> DbError {
    DbError::Other(sqlx::Error::Decode(what.into()))
}

impl TryFrom<ChannelRow> for StoredChannel {
    type Error = DbError;

    fn try_from(row: ChannelRow) -> Result<Self, DbError> {
        Ok(Self {
            id: parse_id(&row.id)?,
            owner_id: parse_id(&row.owner_id)?,
            kind: ChannelKind::parse(&row.kind)
                .ok_or_else(|| decode_error(format!("unknown channel kind {:?}", row.kind)))?,
            name: row.name,
            target: row.target,
            url: row.url,
            signing_secret: row.signing_secret,
            token: row.token,
            created_at: from_ms(row.created_at),
        })
    }
}

const CHANNEL_COLUMNS: &str =
    "id, owner_id, kind, name, target, url, signing_secret, token, created_at";

/// Which sealed column of a channel to replace (a key rotation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelColumn {
    Url,
    SigningSecret,
    Token,
}

impl ChannelColumn {
    fn name(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::SigningSecret => "signing_secret",
            Self::Token => "token",
        }
    }
}

/// A delivery a worker has claimed: what it sends, and the claim that lets it record the
/// outcome.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    pub id: DeliveryId,
    pub channel_id: ChannelId,
    pub payload: String,
    pub attempts: u32,
    pub created_at: OffsetDateTime,
    /// Set by this claim; recording an outcome checks it, so an expired claim another worker
    /// took over cannot be overwritten.
    pub claim: String,
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Delivered {
        http_status: u16,
    },
    /// Try again at `next_attempt_at` (Unix ms).
    Retry {
        http_status: Option<u16>,
        error: String,
        next_attempt_at: i64,
    },
    GaveUp {
        http_status: Option<u16>,
        error: String,
    },
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    channel_id: String,
    event: String,
    payload: String,
    status: String,
    attempts: i64,
    http_status: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    delivered_at: Option<i64>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = DbError;

    fn try_from(row: DeliveryRow) -> Result<Self, DbError> {
        let title = serde_json::from_str::<Notification>(&row.payload)
            .map(|notification| notification.title)
            .unwrap_or_default();
        Ok(Self {
            id: parse_id(&row.id)?,
            channel_id: parse_id(&row.channel_id)?,
            event: NotificationEvent::parse(&row.event)
                .ok_or_else(|| decode_error(format!("unknown event {:?}", row.event)))?,
            title,
            status: DeliveryStatus::parse(&row.status)
                .ok_or_else(|| decode_error(format!("unknown status {:?}", row.status)))?,
            attempts: u32::try_from(row.attempts).unwrap_or(u32::MAX),
            http_status: row.http_status.and_then(|code| u16::try_from(code).ok()),
            last_error: row.last_error,
            created_at: from_ms(row.created_at),
            delivered_at: row.delivered_at.map(from_ms),
        })
    }
}

/// The job a project ran last, for telling a container someone stopped from one that died.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatestJob {
    pub kind: JobKind,
    pub open: bool,
    pub finished_at: Option<OffsetDateTime>,
}

impl Store {
    pub async fn insert_channel(&self, channel: &StoredChannel) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO notification_channels \
                 (id, owner_id, kind, name, target, url, signing_secret, token, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(channel.id.to_string())
            .bind(channel.owner_id.to_string())
            .bind(channel.kind.as_str())
            .bind(&channel.name)
            .bind(&channel.target)
            .bind(&channel.url)
            .bind(channel.signing_secret.as_deref())
            .bind(channel.token.as_deref())
            .bind(super::to_ms(channel.created_at))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// The person's channels, oldest first.
    pub async fn channels_of(&self, owner: &User) -> Result<Vec<StoredChannel>, DbError> {
        let sql = format!(
            "SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE owner_id = $1 \
             ORDER BY created_at, id"
        );
        let rows: Vec<ChannelRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(owner.id.to_string()).fetch_all(pool).await?
        });
        rows.into_iter().map(StoredChannel::try_from).collect()
    }

    /// One of the person's channels.
    pub async fn channel(&self, owner: &User, id: ChannelId) -> Result<StoredChannel, DbError> {
        let sql = format!(
            "SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE id = $1 AND owner_id = $2"
        );
        let row: ChannelRow = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(id.to_string())
                .bind(owner.id.to_string())
                .fetch_one(pool)
                .await?
        });
        row.try_into()
    }

    /// A channel whoever owns it, for the delivery worker.
    pub async fn channel_by_id(&self, id: ChannelId) -> Result<StoredChannel, DbError> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE id = $1");
        let row: ChannelRow = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.to_string()).fetch_one(pool).await?
        });
        row.try_into()
    }

    /// Every channel, for key rotation.
    pub async fn all_channels(&self) -> Result<Vec<StoredChannel>, DbError> {
        let sql = format!("SELECT {CHANNEL_COLUMNS} FROM notification_channels ORDER BY id");
        let rows: Vec<ChannelRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        rows.into_iter().map(StoredChannel::try_from).collect()
    }

    /// Deletes one of the person's channels with its rules and deliveries.
    pub async fn delete_channel(&self, owner: &User, id: ChannelId) -> Result<(), DbError> {
        let deleted = on_pool!(self, pool => {
            sqlx::query("DELETE FROM notification_channels WHERE id = $1 AND owner_id = $2")
                .bind(id.to_string())
                .bind(owner.id.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if deleted == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }

    /// Replaces one sealed column only if it still holds `expected`. Returns whether it did.
    pub async fn replace_channel_ciphertext(
        &self,
        id: ChannelId,
        column: ChannelColumn,
        expected: &[u8],
        ciphertext: &[u8],
    ) -> Result<bool, DbError> {
        let cell = SealedCell::new("notification_channels", "id", column.name());
        self.swap_sealed(cell, &id.to_string(), expected, ciphertext)
            .await
    }

    /// A project's rules as (channel, event) pairs.
    pub async fn notification_rules(
        &self,
        project: ProjectId,
    ) -> Result<Vec<(ChannelId, NotificationEvent)>, DbError> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT channel_id, event FROM notification_rules WHERE project_id = $1 \
                 ORDER BY channel_id, event",
            )
            .bind(project.to_string())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .filter_map(|(channel, event)| {
                // An event this server does not know (written by a newer one) is skipped.
                let event = NotificationEvent::parse(&event)?;
                Some(parse_id(&channel).map(|channel| (channel, event)))
            })
            .collect()
    }

    /// Replaces a project's rules in one transaction.
    pub async fn set_notification_rules(
        &self,
        project: ProjectId,
        rules: &[(ChannelId, NotificationEvent)],
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM notification_rules WHERE project_id = $1")
                .bind(project.to_string())
                .execute(&mut *tx)
                .await?;
            for (channel, event) in rules {
                sqlx::query(
                    "INSERT INTO notification_rules (project_id, channel_id, event) VALUES ($1, $2, $3)",
                )
                .bind(project.to_string())
                .bind(channel.to_string())
                .bind(event.as_str())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?
        });
        Ok(())
    }

    /// The channels that get `event` from `project`.
    pub async fn channels_for(
        &self,
        project: ProjectId,
        event: NotificationEvent,
    ) -> Result<Vec<ChannelId>, DbError> {
        let rows: Vec<(String,)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT channel_id FROM notification_rules WHERE project_id = $1 AND event = $2",
            )
            .bind(project.to_string())
            .bind(event.as_str())
            .fetch_all(pool)
            .await?
        });
        rows.iter().map(|(id,)| parse_id(id)).collect()
    }

    /// Queues a delivery, then keeps the channel's pending deliveries within `cap` by failing
    /// the oldest waiting ones. One a worker is sending (a live claim) is never dropped but
    /// counts towards `cap`; when sends in flight fill it, the delivery just queued still
    /// waits, so a new notification is never lost to old ones. Returns how many were dropped.
    ///
    /// The insert and the drop are one transaction, so neither is applied without the other.
    /// On PostgreSQL (READ COMMITTED) it first locks the channel's row, so enqueues to one
    /// channel take turns and each sees the one before, then the channel's pending rows: a
    /// worker's claim of the head waits for the commit instead of landing between the count
    /// of claims and the drop, which would keep `cap + 1`. SQLite runs one writer at a time.
    pub async fn enqueue_delivery(
        &self,
        id: DeliveryId,
        channel: ChannelId,
        event: NotificationEvent,
        payload: &str,
        cap: u32,
    ) -> Result<u64, DbError> {
        let now = now_ms();
        let postgres = matches!(self.pool, super::Pool::Postgres(_));
        let dropped = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            if postgres {
                // FOR NO KEY UPDATE does not block the foreign-key check of other inserts.
                sqlx::query("SELECT id FROM notification_channels WHERE id = $1 FOR NO KEY UPDATE")
                    .bind(channel.to_string())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "SELECT id FROM notification_deliveries \
                     WHERE channel_id = $1 AND status = 'pending' ORDER BY seq FOR UPDATE",
                )
                .bind(channel.to_string())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "INSERT INTO notification_deliveries \
                 (id, channel_id, event, payload, status, attempts, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5)",
            )
            .bind(id.to_string())
            .bind(channel.to_string())
            .bind(event.as_str())
            .bind(payload)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let (in_flight,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM notification_deliveries \
                 WHERE channel_id = $1 AND status = 'pending' AND claimed_until >= $2",
            )
            .bind(channel.to_string())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            // The newest `keep` waiting deliveries stay, and always the one just queued.
            let keep = (i64::from(cap) - in_flight).max(1);
            let dropped = sqlx::query(
                "UPDATE notification_deliveries \
                 SET status = 'failed', last_error = 'dropped: queue full', claimed_by = NULL, claimed_until = NULL \
                 WHERE channel_id = $1 AND status = 'pending' \
                 AND (claimed_until IS NULL OR claimed_until < $2) \
                 AND seq <= (SELECT seq FROM notification_deliveries \
                             WHERE channel_id = $1 AND status = 'pending' \
                             AND (claimed_until IS NULL OR claimed_until < $2) \
                             ORDER BY seq DESC LIMIT 1 OFFSET $3)",
            )
            .bind(channel.to_string())
            .bind(now)
            .bind(keep)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            dropped
        });
        Ok(dropped)
    }

    /// Deliveries that may be sent now: the oldest pending one of each channel, when it is due
    /// and nobody holds a live claim on it; most overdue first.
    pub async fn due_deliveries(
        &self,
        limit: u32,
    ) -> Result<Vec<(DeliveryId, ChannelId)>, DbError> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT d.id, d.channel_id FROM notification_deliveries d \
                 WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
                 AND (d.claimed_until IS NULL OR d.claimed_until < $1) \
                 AND NOT EXISTS (SELECT 1 FROM notification_deliveries e \
                                 WHERE e.channel_id = d.channel_id AND e.status = 'pending' \
                                 AND e.seq < d.seq) \
                 ORDER BY d.next_attempt_at, d.seq LIMIT $2",
            )
            .bind(now_ms())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.iter()
            .map(|(id, channel)| Ok((parse_id(id)?, parse_id(channel)?)))
            .collect()
    }

    /// Claims a delivery until `until` (Unix ms), unless it is no longer pending or someone
    /// else holds a live claim on it.
    pub async fn claim_delivery(
        &self,
        id: DeliveryId,
        until: i64,
    ) -> Result<Option<ClaimedDelivery>, DbError> {
        let claim = Uuid::new_v4().to_string();
        let claimed = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE notification_deliveries SET claimed_by = $2, claimed_until = $3 \
                 WHERE id = $1 AND status = 'pending' \
                 AND (claimed_until IS NULL OR claimed_until < $4)",
            )
            .bind(id.to_string())
            .bind(&claim)
            .bind(until)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        if claimed != 1 {
            return Ok(None);
        }
        let row: Option<(String, String, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT channel_id, payload, attempts, created_at FROM notification_deliveries \
                 WHERE id = $1 AND claimed_by = $2",
            )
            .bind(id.to_string())
            .bind(&claim)
            .fetch_optional(pool)
            .await?
        });
        let Some((channel_id, payload, attempts, created_at)) = row else {
            return Ok(None);
        };
        Ok(Some(ClaimedDelivery {
            id,
            channel_id: parse_id(&channel_id)?,
            payload,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            created_at: from_ms(created_at),
            claim,
        }))
    }

    /// Records how an attempt ended and releases the claim. Returns false when the claim was
    /// lost meanwhile (it expired and another worker took the delivery over).
    pub async fn record_attempt(
        &self,
        delivery: &ClaimedDelivery,
        attempt: &Attempt,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let (status, http_status, error, next_attempt_at, delivered_at) = match attempt {
            Attempt::Delivered { http_status } => {
                ("delivered", Some(*http_status), None, now, Some(now))
            }
            Attempt::Retry {
                http_status,
                error,
                next_attempt_at,
            } => (
                "pending",
                *http_status,
                Some(error.as_str()),
                *next_attempt_at,
                None,
            ),
            Attempt::GaveUp { http_status, error } => {
                ("failed", *http_status, Some(error.as_str()), now, None)
            }
        };
        let changed = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE notification_deliveries SET status = $3, attempts = attempts + 1, \
                 http_status = $4, last_error = $5, next_attempt_at = $6, delivered_at = $7, \
                 claimed_by = NULL, claimed_until = NULL \
                 WHERE id = $1 AND claimed_by = $2",
            )
            .bind(delivery.id.to_string())
            .bind(&delivery.claim)
            .bind(status)
            .bind(http_status.map(i64::from))
            .bind(error)
            .bind(next_attempt_at)
            .bind(delivered_at)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Forgets a channel's finished deliveries beyond the newest `keep`.
    pub async fn prune_deliveries(&self, channel: ChannelId, keep: u32) -> Result<u64, DbError> {
        let pruned = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM notification_deliveries \
                 WHERE channel_id = $1 AND status <> 'pending' \
                 AND seq <= (SELECT seq FROM notification_deliveries \
                             WHERE channel_id = $1 AND status <> 'pending' \
                             ORDER BY seq DESC LIMIT 1 OFFSET $2)",
            )
            .bind(channel.to_string())
            .bind(i64::from(keep))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(pruned)
    }

    /// A channel's deliveries, newest first.
    pub async fn deliveries_of(
        &self,
        channel: ChannelId,
        limit: u32,
    ) -> Result<Vec<Delivery>, DbError> {
        let rows: Vec<DeliveryRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, channel_id, event, payload, status, attempts, http_status, last_error, \
                 created_at, delivered_at FROM notification_deliveries WHERE channel_id = $1 \
                 ORDER BY seq DESC LIMIT $2",
            )
            .bind(channel.to_string())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Delivery::try_from).collect()
    }

    /// What a deployment was (a deploy or a lifecycle action), if it exists.
    pub async fn deployment_kind(&self, id: DeploymentId) -> Result<Option<JobKind>, DbError> {
        let kind: Option<(String,)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT kind FROM deployments WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(pool)
                .await?
        });
        kind.map(|(kind,)| {
            JobKind::parse(&kind).ok_or_else(|| decode_error(format!("unknown job kind {kind:?}")))
        })
        .transpose()
    }

    /// The job a project was given last, if any.
    pub async fn latest_job(&self, project: ProjectId) -> Result<Option<LatestJob>, DbError> {
        let row: Option<(String, String, Option<i64>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT kind, status, finished_at FROM deployments WHERE project_id = $1 \
                 ORDER BY queue_order DESC, id DESC LIMIT 1",
            )
            .bind(project.to_string())
            .fetch_optional(pool)
            .await?
        });
        let Some((kind, status, finished_at)) = row else {
            return Ok(None);
        };
        let kind = JobKind::parse(&kind)
            .ok_or_else(|| decode_error(format!("unknown job kind {kind:?}")))?;
        let open =
            shared::api::DeploymentStatus::parse(&status).is_some_and(|status| !status.is_final());
        Ok(Some(LatestJob {
            kind,
            open,
            finished_at: finished_at.map(from_ms),
        }))
    }

    /// The projects an agent runs, as (id, name).
    pub async fn projects_on_agent(
        &self,
        agent: AgentId,
    ) -> Result<Vec<(ProjectId, String)>, DbError> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, name FROM projects WHERE agent_id = $1 ORDER BY id")
                .bind(agent.to_string())
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(id, name)| Ok((parse_id(&id)?, name)))
            .collect()
    }
}
