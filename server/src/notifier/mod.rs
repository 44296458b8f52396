//! The notifier: two background tasks that turn what happens into notifications and send them.
//!
//! 1. [`events`] listens to the hub and derives the events people subscribe to (a deploy's
//!    result, an agent gone for longer than a grace period and back, a container that exited
//!    or turned unhealthy without anybody asking), then queues a delivery for each channel a
//!    project sends that event to (`ops::notifications::notify`, which masks secret values).
//! 2. [`delivery`] drains the queue: one request at a time per channel, in order, channels
//!    independent of each other, retries with exponential backoff, a timeout per attempt.
//!
//! Neither task is on the path of a request or a deploy: the hub never waits for a listener,
//! and the queue lives in the database, so a slow or dead receiver only ever delays its own
//! channel.

pub mod delivery;
pub mod events;
pub mod render;

use crate::state::AppState;
use tokio::task::JoinHandle;

/// Starts both tasks; the caller aborts them on shutdown.
pub fn spawn(state: &AppState) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(events::run(state.clone())),
        tokio::spawn(delivery::run(state.clone())),
    ]
}
