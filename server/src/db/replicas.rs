//! What several replicas on one PostgreSQL share (README, "Running several replicas"): the
//! leases that say which replica holds an agent's socket, the messages they hand each other
//! (kept in a table, announced by `NOTIFY` with only the row's id), and the advisory lock
//! that lets one of them at a time do the housekeeping.
//!
//! On SQLite there is one replica: leases and messages are never written, and the
//! housekeeping lock is always this process's.

use super::{parse_id, DbError, Pool, Store};
use shared::AgentId;
use sqlx::postgres::PgListener;
use sqlx::Connection;

/// The advisory lock key of the housekeeping ("stagely" in ASCII, as a number).
const HOUSEKEEPING_LOCK: i64 = 0x0073_7461_6765_6c79;

/// A message another replica (or this one) posted, as stored.
#[derive(Debug)]
pub struct PostedMessage {
    pub id: i64,
    pub sender: String,
    pub body: String,
}

/// The `LISTEN` side: notifications on the channels of this replica.
pub struct Listener {
    inner: PgListener,
}

/// A notification: its channel and payload (a message id).
pub struct Notice {
    pub channel: String,
    pub payload: String,
}

impl Listener {
    /// The next notification. `Ok(None)` when the connection was lost (and is being
    /// re-established): notifications sent meanwhile were lost, the caller should catch up.
    pub async fn next(&mut self) -> Result<Option<Notice>, DbError> {
        Ok(self.inner.try_recv().await?.map(|notice| Notice {
            channel: notice.channel().to_string(),
            payload: notice.payload().to_string(),
        }))
    }
}

/// The PostgreSQL session that holds the housekeeping lock, or tries to get it.
#[derive(Default)]
pub struct HousekeepingLock {
    connection: tokio::sync::Mutex<Option<(sqlx::PgConnection, bool)>>,
}

impl Store {
    /// Whether several replicas can share this database (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// Starts listening on `channels`; `None` on SQLite.
    pub async fn listen(&self, channels: &[&str]) -> Result<Option<Listener>, DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(None);
        };
        let mut inner = PgListener::connect_with(pool).await?;
        inner.listen_all(channels.iter().copied()).await?;
        Ok(Some(Listener { inner }))
    }

    /// Records that `replica` now holds `agents` until `expires_at` (ms): each said hello
    /// there, so the newest connection wins over any lease another replica had.
    pub async fn take_agents(
        &self,
        replica: &str,
        agents: &[AgentId],
        expires_at: i64,
    ) -> Result<(), DbError> {
        self.write_leases(replica, agents, expires_at, None).await
    }

    /// Renews `replica`'s leases of `agents` until `expires_at` (ms). A lease another replica
    /// took meanwhile (the agent reconnected there while this one still had a half-open socket)
    /// is left to it, unless it has run out by `now`: a renewal never takes an agent back.
    pub async fn renew_agents(
        &self,
        replica: &str,
        agents: &[AgentId],
        now: i64,
        expires_at: i64,
    ) -> Result<(), DbError> {
        self.write_leases(replica, agents, expires_at, Some(now))
            .await
    }

    async fn write_leases(
        &self,
        replica: &str,
        agents: &[AgentId],
        expires_at: i64,
        renewing_at: Option<i64>,
    ) -> Result<(), DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        if agents.is_empty() {
            return Ok(());
        }
        let ids = sorted_ids(agents);
        sqlx::query(
            "INSERT INTO agent_leases (agent_id, replica_id, expires_at) \
             SELECT id, $2, $3 FROM UNNEST($1::text[]) AS id \
             ON CONFLICT (agent_id) DO UPDATE \
             SET replica_id = excluded.replica_id, expires_at = excluded.expires_at \
             WHERE $4::bigint IS NULL OR agent_leases.replica_id = excluded.replica_id \
             OR agent_leases.expires_at < $4::bigint",
        )
        .bind(&ids)
        .bind(replica)
        .bind(expires_at)
        .bind(renewing_at)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Records that `replica` is up until `expires_at` (ms).
    pub async fn renew_replica(&self, replica: &str, expires_at: i64) -> Result<(), DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO replicas (replica_id, expires_at) VALUES ($1, $2) \
             ON CONFLICT (replica_id) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(replica)
        .bind(expires_at)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// The replicas whose lease runs at `now` (ms); old entries are removed on the way.
    pub async fn live_replicas(&self, now: i64) -> Result<Vec<String>, DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        sqlx::query("DELETE FROM replicas WHERE expires_at < $1")
            .bind(now - 3_600_000)
            .execute(pool)
            .await?;
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT replica_id FROM replicas WHERE expires_at > $1")
                .bind(now)
                .fetch_all(pool)
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Gives up `replica`'s leases of `agents` (their sockets closed); another replica's stay.
    pub async fn release_agents(&self, replica: &str, agents: &[AgentId]) -> Result<(), DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        if agents.is_empty() {
            return Ok(());
        }
        let ids = sorted_ids(agents);
        sqlx::query(
            "DELETE FROM agent_leases WHERE agent_id = ANY($1::text[]) AND replica_id = $2",
        )
        .bind(&ids)
        .bind(replica)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Gives up every lease of `replica` (it is shutting down).
    pub async fn release_all_agents(&self, replica: &str) -> Result<(), DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        sqlx::query("DELETE FROM agent_leases WHERE replica_id = $1")
            .bind(replica)
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM replicas WHERE replica_id = $1")
            .bind(replica)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// The agents other replicas hold now, with the replica holding each.
    pub async fn agents_held_elsewhere(
        &self,
        replica: &str,
        now: i64,
    ) -> Result<Vec<(AgentId, String)>, DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT agent_id, replica_id FROM agent_leases WHERE replica_id <> $1 AND expires_at > $2",
        )
        .bind(replica)
        .bind(now)
        .fetch_all(pool)
        .await?;
        rows.into_iter()
            .map(|(agent, replica)| Ok((parse_id(&agent)?, replica)))
            .collect()
    }

    /// Stores messages, each for its target (every replica when `None`), in order, and
    /// notifies each one's id on its channel (`all` for every replica, `per_replica` + the
    /// target's id for one), in one statement: one round trip for a whole batch.
    pub async fn post_messages(
        &self,
        sender: &str,
        messages: &[(Option<String>, String)],
        all: &str,
        per_replica: &str,
    ) -> Result<(), DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(());
        };
        if messages.is_empty() {
            return Ok(());
        }
        let targets: Vec<Option<String>> = messages.iter().map(|(t, _)| t.clone()).collect();
        let bodies: Vec<&str> = messages.iter().map(|(_, b)| b.as_str()).collect();
        // Ids are drawn in the order of the rows (ORDER BY the position), and notified in id
        // order, so the other replicas see the messages in the order they were posted.
        sqlx::query(
            "WITH posted AS (\
               INSERT INTO replica_messages (sender, target, body, created_at) \
               SELECT $1, m.target, m.body, $2 \
               FROM UNNEST($3::text[], $4::text[]) WITH ORDINALITY AS m(target, body, n) \
               ORDER BY m.n \
               RETURNING id, target) \
             SELECT pg_notify(CASE WHEN target IS NULL THEN $5 ELSE $6 || target END, id::text) \
             FROM posted ORDER BY id",
        )
        .bind(sender)
        .bind(super::now_ms())
        .bind(targets)
        .bind(bodies)
        .bind(all)
        .bind(per_replica)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// The messages `targeted` (addressed to `replica`, removed as they are read) and `all`
    /// (for every replica) name, oldest first, in one statement (a failure removes none);
    /// ids without a message (already read) are skipped.
    pub async fn read_messages(
        &self,
        targeted: &[i64],
        all: &[i64],
        replica: &str,
    ) -> Result<Vec<PostedMessage>, DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        if targeted.is_empty() && all.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "WITH mine AS (DELETE FROM replica_messages WHERE id = ANY($1) AND target = $3 \
             RETURNING id, sender, body) \
             SELECT id, sender, body FROM mine \
             UNION ALL SELECT id, sender, body FROM replica_messages \
             WHERE id = ANY($2) AND target IS NULL \
             ORDER BY id",
        )
        .bind(targeted)
        .bind(all)
        .bind(replica)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, sender, body)| PostedMessage { id, sender, body })
            .collect())
    }

    /// Messages for `replica` or for every replica, from others, after `after` (a catch-up
    /// when notifications may have been lost), oldest first, at most `limit`.
    pub async fn messages_after(
        &self,
        replica: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<PostedMessage>, DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        let rows: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, sender, body FROM replica_messages \
             WHERE id > $1 AND sender <> $2 AND (target IS NULL OR target = $2) \
             ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(replica)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        if let Some((last, _, _)) = rows.last() {
            sqlx::query("DELETE FROM replica_messages WHERE id > $1 AND id <= $2 AND target = $3")
                .bind(after)
                .bind(last)
                .bind(replica)
                .execute(pool)
                .await?;
        }
        Ok(rows
            .into_iter()
            .map(|(id, sender, body)| PostedMessage { id, sender, body })
            .collect())
    }

    /// The newest message id, where a new listener starts.
    pub async fn newest_message(&self) -> Result<i64, DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(0);
        };
        let (id,): (Option<i64>,) = sqlx::query_as("SELECT MAX(id) FROM replica_messages")
            .fetch_one(pool)
            .await?;
        Ok(id.unwrap_or(0))
    }

    /// Removes messages older than `before` (ms): every replica that was up has read them.
    pub async fn purge_messages(&self, before: i64) -> Result<u64, DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(0);
        };
        let done = sqlx::query("DELETE FROM replica_messages WHERE created_at < $1")
            .bind(before)
            .execute(pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Agents with a job still `queued` since before `before` (ms): a hand-over between
    /// replicas that was lost, to be sent again by the replica holding the agent.
    pub async fn agents_with_queued_jobs(&self, before: i64) -> Result<Vec<AgentId>, DbError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT p.agent_id FROM deployments d JOIN projects p ON p.id = d.project_id \
             WHERE d.status = 'queued' AND d.updated_at < $1",
        )
        .bind(before)
        .fetch_all(pool)
        .await?;
        rows.into_iter().map(|(agent,)| parse_id(&agent)).collect()
    }

    /// Whether this process may do the housekeeping now: always on SQLite; on PostgreSQL when
    /// it holds the advisory lock, which it tries to take if not. The lock lives as long as the
    /// session that took it, so a replica that dies hands it on.
    pub async fn housekeeping_turn(&self, lock: &HousekeepingLock) -> bool {
        let Pool::Postgres(pool) = &self.pool else {
            return true;
        };
        let mut slot = lock.connection.lock().await;
        if slot.is_none() {
            match pool.acquire().await {
                Ok(connection) => *slot = Some((connection.detach(), false)),
                Err(error) => {
                    tracing::warn!(%error, "cannot open a session for the housekeeping lock");
                    return false;
                }
            }
        }
        let Some((connection, held)) = slot.as_mut() else {
            return false;
        };
        let checked: Result<bool, sqlx::Error> = if *held {
            // Still ours as long as the session lives.
            connection.ping().await.map(|()| true)
        } else {
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(HOUSEKEEPING_LOCK)
                .fetch_one(&mut *connection)
                .await
        };
        match checked {
            Ok(mine) => {
                if mine && !*held {
                    tracing::info!("this replica does the housekeeping now");
                }
                *held = mine;
                mine
            }
            Err(error) => {
                tracing::warn!(%error, "lost the session of the housekeeping lock");
                *slot = None;
                false
            }
        }
    }
}

/// Agent ids in one order for every statement that locks several lease rows: two such
/// statements (a renewal and a take, one replica's release and another's take) then lock
/// the rows they share in the same order and cannot deadlock.
fn sorted_ids(agents: &[AgentId]) -> Vec<String> {
    let mut ids: Vec<String> = agents.iter().map(ToString::to_string).collect();
    ids.sort_unstable();
    ids
}
