//! Background work that keeps the server's state tidy, all in one place:
//!
//! - about once a second, whatever the number of agents: the last-seen times gathered since the
//!   previous round are written in one transaction, and sessions of agents whose token was
//!   revoked (here, on another replica or with `agents revoke`) are closed; every ten rounds the
//!   registered fleet is counted, which sizes the reconnect window agents are told;
//! - every 10 s: deployments whose agent stopped answering are timed out, and a deploy a push
//!   left waiting whose project has nothing open starts (a wakeup lost to an error);
//! - every minute: abandoned GitHub sign-ins are forgotten;
//! - every `STAGELY_PURGE_INTERVAL_SECS` (5 min): one retention pass (`ops::retention`) drops old
//!   jobs with their output, unused secret versions, old audit entries, spent join tokens,
//!   expired sessions and old notification deliveries, in bounded batches, and webhook
//!   delivery ids past their retention;
//! - always: when a job of a project ends, the deploy a push left waiting starts
//!   (`ops::webhooks::follow_up_pushes`).
//!
//! Expiry and retention change shared state: with several replicas on one PostgreSQL, one
//! replica at a time does them, the one holding the housekeeping advisory lock (try-lock each
//! round; the lock goes with the session of a replica that dies). The rest concerns each
//! replica's own agents and runs everywhere, with the replica link's own tasks (`cluster`).
//!
//! The tasks run until the [`Housekeeping`] handle is stopped or dropped.

use crate::db::HousekeepingLock;
use crate::state::AppState;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The running background tasks; dropping it stops them.
pub struct Housekeeping {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Housekeeping {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts every background task.
pub fn spawn(state: &AppState) -> Housekeeping {
    let lock = Arc::new(HousekeepingLock::default());
    let mut tasks = vec![
        tokio::spawn(agents_every_second(state.clone())),
        tokio::spawn(expiry(state.clone(), lock.clone())),
        tokio::spawn(retention(state.clone(), lock)),
        tokio::spawn(crate::ops::webhooks::follow_up_pushes(
            state.store.clone(),
            state.vault.clone(),
            state.hub.clone(),
            state.webhooks.clone(),
        )),
    ];
    tasks.extend(crate::notifier::spawn(state));
    tasks.extend(crate::cluster::spawn(state));
    Housekeeping { tasks }
}

async fn agents_every_second(state: AppState) {
    let (store, hub) = (&state.store, &state.hub);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Look a minute back each time, so neither a revocation committed during a check nor a
    // replica whose clock runs a little behind is missed; closing twice is harmless.
    let mut revoked_checked = crate::db::now_ms();
    for round in 0u64.. {
        tick.tick().await;
        if round.is_multiple_of(10) {
            match store.count_live_agents().await {
                Ok(count) => hub.set_fleet_size(count),
                Err(error) => tracing::warn!(%error, "could not count the registered agents"),
            }
        }
        hub.flush_last_seen(store).await;
        revoked_checked = hub.close_revoked(store, revoked_checked - 60_000).await;
    }
}

async fn expiry(state: AppState, lock: Arc<HousekeepingLock>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    for round in 0u64.. {
        tick.tick().await;
        if !state.store.housekeeping_turn(&lock).await {
            continue;
        }
        crate::ops::deployments::expire_stale(&state.store, &state.hub, state.config.job_expiry)
            .await;
        if round % 6 == 0 {
            crate::ops::users::forget_expired_sign_ins(&state.store).await;
        }
        // A push's deploy is started when a job of its project ends; this catches one whose
        // start failed on a transient error (its flag stays raised).
        crate::ops::webhooks::kick_all(&state.store, &state.vault, &state.hub, &state.webhooks)
            .await;
        // Messages between replicas are read within moments; a minute is plenty.
        let read_by_now = crate::db::now_ms() - 60_000;
        if let Err(error) = state.store.purge_messages(read_by_now).await {
            tracing::warn!(%error, "could not remove old messages between replicas");
        }
    }
}

async fn retention(state: AppState, lock: Arc<HousekeepingLock>) {
    let keep = &state.config.retention;
    // Not at start: a server restarting in a loop should not purge in a loop too.
    let first = tokio::time::Instant::now() + keep.purge_interval;
    let mut tick = tokio::time::interval_at(first, keep.purge_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !state.store.housekeeping_turn(&lock).await {
            continue;
        }
        let now = time::OffsetDateTime::now_utc();
        match crate::ops::retention::purge(&state.store, keep, now).await {
            Ok(purged) if purged.any() => tracing::info!(?purged, "purged old history"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "could not purge old history"),
        }
        crate::ops::webhooks::purge_deliveries(&state.store).await;
    }
}
