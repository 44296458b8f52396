//! Retention: what history the server keeps, and the purge pass that drops the rest.
//!
//! Housekeeping runs [`purge`] every `STAGELY_PURGE_INTERVAL_SECS`. One pass:
//!
//! 1. drops finished jobs beyond the newest `STAGELY_KEEP_DEPLOYMENTS` of each project with
//!    their output (events first, a bounded batch at a time, then the row; the rows of
//!    `deployment_secrets` cascade). Open jobs, the project's newest successful deploy and any
//!    job a kept one redeploys stay;
//! 2. drops secret versions no remaining deployment ran and no secret holds as its current
//!    value, beyond the newest `STAGELY_KEEP_SECRET_VERSIONS` of their secret;
//! 3. drops audit entries older than `STAGELY_KEEP_AUDIT_DAYS`, join tokens used or expired
//!    more than a day ago (so an installer run again that day still hears "already used"),
//!    expired sign-in sessions, and finished notification deliveries older than
//!    `STAGELY_KEEP_DELIVERIES_DAYS`.
//!
//! Every statement deletes at most [`BATCH`] rows, and a pass stops after [`MAX_BATCHES`] per
//! kind: a huge backlog is worked off over several passes and never holds a long transaction.
//! `now` is a parameter, so a test can purge as if it were a year later.

use super::OpResult;
use crate::config::RetentionConfig;
use crate::db::{to_ms, Store};
use std::time::Duration;
use time::OffsetDateTime;

/// The most rows one statement deletes.
pub const BATCH: u32 = 500;
/// The most batches of one kind in one pass.
pub const MAX_BATCHES: u32 = 100;
/// How long a used or expired join token is still recognised.
pub const JOIN_TOKEN_GRACE: Duration = Duration::from_secs(86_400);

/// How many rows a pass dropped, for the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub deployments: u64,
    pub deployment_events: u64,
    pub secret_versions: u64,
    pub audit_entries: u64,
    pub join_tokens: u64,
    pub sessions: u64,
    pub deliveries: u64,
}

impl Purged {
    /// Whether the pass dropped anything.
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// One purge pass as of `now`.
pub async fn purge(store: &Store, keep: &RetentionConfig, now: OffsetDateTime) -> OpResult<Purged> {
    let now_ms = to_ms(now);
    let before = |age: Duration| now_ms.saturating_sub(age.as_millis() as i64);
    let mut purged = Purged::default();

    for _ in 0..MAX_BATCHES {
        let doomed = store
            .deployments_to_purge(keep.deployments_per_project, BATCH / 10)
            .await?;
        for &deployment in &doomed {
            loop {
                let events = store.purge_deployment_events(deployment, BATCH).await?;
                purged.deployment_events += events;
                if events < u64::from(BATCH) {
                    break;
                }
            }
            purged.deployments += u64::from(store.purge_deployment(deployment).await?);
        }
        if doomed.len() < (BATCH / 10) as usize {
            break;
        }
    }

    purged.secret_versions =
        batches(|| store.purge_secret_versions(keep.secret_versions, BATCH)).await?;
    purged.audit_entries = batches(|| store.purge_audit(before(keep.audit), BATCH)).await?;
    purged.join_tokens =
        batches(|| store.purge_join_tokens(before(JOIN_TOKEN_GRACE), BATCH)).await?;
    purged.sessions = batches(|| store.purge_sessions(now_ms, BATCH)).await?;
    purged.deliveries = batches(|| store.purge_deliveries(before(keep.deliveries), BATCH)).await?;
    Ok(purged)
}

/// Runs one bounded delete until it comes back short (or [`MAX_BATCHES`] times); the total.
async fn batches<F, Fut>(mut delete: F) -> OpResult<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, crate::db::DbError>>,
{
    let mut total = 0;
    for _ in 0..MAX_BATCHES {
        let deleted = delete().await?;
        total += deleted;
        if deleted < u64::from(BATCH) {
            break;
        }
    }
    Ok(total)
}
