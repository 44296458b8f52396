//! The delivery worker: sends queued notifications, one channel at a time per channel, many
//! channels at once.
//!
//! 1. Every poll interval, and whenever a send ends, it asks the store for due deliveries:
//!    the oldest pending one of each channel whose next attempt has come, unclaimed.
//! 2. It claims each (an `UPDATE` only one replica can win) and sends it in a task of its own,
//!    at most [`MAX_SENDS`] at once, with the configured timeout; a channel whose head is being
//!    sent has no due delivery, so its deliveries leave in order.
//! 3. The outcome is recorded under the claim: delivered (2xx), given up (refused with a 4xx
//!    other than 408/429, a redirect, too many attempts, too old), or retried after a backoff
//!    that doubles from `first_retry` up to `max_retry`. Finished deliveries beyond the newest
//!    [`KEPT_DELIVERIES`] of the channel are forgotten.
//!
//! A channel's URL and credentials are opened only to build the request and never logged; a
//! request error is logged without its URL.

use super::render::{render, Credentials};
use crate::config::NotifyConfig;
use crate::db::{Attempt, ClaimedDelivery, Store};
use crate::ops::notifications::{channel_row, receiver_addresses, Refused, KEPT_DELIVERIES};
use crate::state::AppState;
use crate::sync::lock;
use crate::vault::{ChannelField, Vault};
use shared::notify::{ChannelId, Notification};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Requests in flight at once, across channels.
pub const MAX_SENDS: usize = 32;
/// How many due deliveries one look at the queue takes.
const BATCH: u32 = 64;
/// How long a claim outlives the request's timeout, for the outcome to be written.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// What every send task shares.
struct Worker {
    store: Store,
    vault: Vault,
    config: NotifyConfig,
    http: reqwest::Client,
    /// Channels with a send in flight from this process.
    busy: Mutex<HashSet<ChannelId>>,
    sends: Arc<Semaphore>,
    /// Rung when a send ends, so the channel's next delivery goes at once.
    wake: Notify,
}

/// How every request to a receiver is made.
fn client(config: &NotifyConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        // A redirect would carry the body somewhere the person did not name (and could lead
        // to an address the check below never saw).
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the name itself, past the check of its addresses.
        .no_proxy()
        .user_agent(concat!("Stagely/", env!("CARGO_PKG_VERSION")))
}

pub async fn run(state: AppState) {
    let config = state.config.notifications.clone();
    let http = match client(&config).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot build the HTTP client: notifications are not sent");
            return;
        }
    };
    let worker = Arc::new(Worker {
        store: state.store.clone(),
        vault: state.vault.clone(),
        config,
        http,
        busy: Mutex::default(),
        sends: Arc::new(Semaphore::new(MAX_SENDS)),
        wake: Notify::new(),
    });
    loop {
        worker.clone().start_due().await;
        tokio::select! {
            _ = tokio::time::sleep(worker.config.poll) => {}
            _ = worker.wake.notified() => {}
        }
    }
}

impl Worker {
    /// Claims what is due and starts sending it.
    async fn start_due(self: Arc<Self>) {
        let due = match self.store.due_deliveries(BATCH).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "could not look for due notifications");
                return;
            }
        };
        for (id, channel) in due {
            if lock(&self.busy).contains(&channel) {
                continue;
            }
            let Ok(permit) = self.sends.clone().try_acquire_owned() else {
                // Every slot is busy: the rest waits for the next look.
                return;
            };
            let until = crate::db::now_ms()
                + i64::try_from((self.config.timeout + CLAIM_MARGIN).as_millis())
                    .unwrap_or(i64::MAX / 2);
            let claimed = match self.store.claim_delivery(id, until).await {
                Ok(Some(claimed)) => claimed,
                // Another replica took it, or it finished meanwhile.
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(%error, "could not claim a notification");
                    continue;
                }
            };
            lock(&self.busy).insert(channel);
            let worker = self.clone();
            tokio::spawn(async move {
                worker.send(&claimed).await;
                lock(&worker.busy).remove(&claimed.channel_id);
                drop(permit);
                worker.wake.notify_one();
            });
        }
    }

    /// One attempt at one delivery, and its outcome recorded.
    async fn send(&self, delivery: &ClaimedDelivery) {
        let result = self.attempt(delivery).await;
        if matches!(result, Err(Failure::Gone)) {
            return;
        }
        let attempt = outcome(&self.config, delivery, result);
        let attempts = delivery.attempts + 1;
        match &attempt {
            Attempt::Delivered { .. } => {}
            Attempt::Retry { error, .. } => {
                tracing::info!(delivery_id = %delivery.id, channel_id = %delivery.channel_id, attempts, %error, "a notification could not be delivered; it will be retried")
            }
            Attempt::GaveUp { error, .. } => {
                tracing::warn!(delivery_id = %delivery.id, channel_id = %delivery.channel_id, attempts, %error, "a notification was given up")
            }
        }
        match self.store.record_attempt(delivery, &attempt).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery_id = %delivery.id, "a notification's claim expired before its outcome was recorded")
            }
            Err(error) => {
                tracing::warn!(%error, delivery_id = %delivery.id, "could not record a notification's outcome")
            }
        }
        if !matches!(attempt, Attempt::Retry { .. }) {
            if let Err(error) = self
                .store
                .prune_deliveries(delivery.channel_id, KEPT_DELIVERIES)
                .await
            {
                tracing::warn!(%error, "could not forget old notifications");
            }
        }
    }

    /// Sends the request: the receiver's status, or why there is none.
    async fn attempt(&self, delivery: &ClaimedDelivery) -> Result<u16, Failure> {
        let channel = match self.store.channel_by_id(delivery.channel_id).await {
            Ok(channel) => channel,
            Err(crate::db::DbError::NotFound) => return Err(Failure::Gone),
            Err(error) => {
                return Err(Failure::Retry(format!(
                    "could not read the channel: {error}"
                )))
            }
        };
        let notification: Notification = serde_json::from_str(&delivery.payload)
            .map_err(|error| Failure::Permanent(format!("unreadable notification: {error}")))?;
        let open = |field, stored: &[u8]| {
            self.vault
                .open_credential(channel_row(&channel, field), stored)
                .map_err(|error| Failure::Permanent(error.to_string()))
        };
        let url = open(ChannelField::Url, &channel.url)?;
        let signing_secret = channel
            .signing_secret
            .as_deref()
            .map(|stored| open(ChannelField::SigningSecret, stored))
            .transpose()?;
        let token = channel
            .token
            .as_deref()
            .map(|stored| open(ChannelField::Token, stored))
            .transpose()?;
        let credentials = Credentials {
            signing_secret: signing_secret.as_ref(),
            token: token.as_ref(),
        };
        let rendered = render(
            channel.kind,
            delivery.id,
            &notification,
            &delivery.payload,
            &credentials,
        );
        // Checked at every send, not only when the channel was added: a name can be made to
        // resolve elsewhere later. The request then goes to exactly the addresses checked.
        let addresses =
            match receiver_addresses(url.expose(), self.config.allow_private_networks).await {
                Ok(addresses) => addresses,
                Err(refused @ Refused::Unresolved { .. }) => {
                    return Err(Failure::Retry(refused.to_string()))
                }
                Err(refused) => return Err(Failure::Permanent(refused.to_string())),
            };
        let pinned;
        let http = match reqwest::Url::parse(url.expose())
            .ok()
            .and_then(|url| url.domain().map(str::to_owned))
        {
            Some(domain) => {
                pinned = client(&self.config)
                    .resolve_to_addrs(&domain, &addresses)
                    .build()
                    .map_err(|error| Failure::Retry(describe(&self.config, error)))?;
                &pinned
            }
            None => &self.http,
        };
        let mut request = http.post(url.expose()).body(rendered.body);
        for (name, value) in rendered.headers {
            request = request.header(name, value);
        }
        let response = request
            .send()
            .await
            .map_err(|error| Failure::Retry(describe(&self.config, error)))?;
        Ok(response.status().as_u16())
    }
}

/// Why an attempt got no status code.
enum Failure {
    /// Worth trying again (the receiver is down, slow, unreachable).
    Retry(String),
    /// Trying again cannot help (the channel's URL cannot be opened).
    Permanent(String),
    /// The channel was deleted meanwhile, and its deliveries with it.
    Gone,
}

/// What to record after an attempt.
fn outcome(
    config: &NotifyConfig,
    delivery: &ClaimedDelivery,
    result: Result<u16, Failure>,
) -> Attempt {
    let (http_status, error) = match result {
        Ok(status @ 200..=299) => {
            return Attempt::Delivered {
                http_status: status,
            }
        }
        Ok(status @ 300..=399) => {
            return Attempt::GaveUp {
                http_status: Some(status),
                error: format!("the receiver answered {status} (a redirect): give the final URL"),
            }
        }
        Ok(status @ 400..=499) if status != 408 && status != 429 => {
            return Attempt::GaveUp {
                http_status: Some(status),
                error: format!("the receiver refused it with {status}"),
            }
        }
        Ok(status) => (Some(status), format!("the receiver answered {status}")),
        Err(Failure::Permanent(error)) => {
            return Attempt::GaveUp {
                http_status: None,
                error,
            }
        }
        Err(Failure::Gone) => {
            return Attempt::GaveUp {
                http_status: None,
                error: "the channel was deleted".into(),
            }
        }
        Err(Failure::Retry(error)) => (None, error),
    };
    let attempts = delivery.attempts + 1;
    let age = time::OffsetDateTime::now_utc() - delivery.created_at;
    if attempts >= config.max_attempts || age >= config.max_age {
        return Attempt::GaveUp {
            http_status,
            error: format!("{error} (gave up after {attempts} attempts)"),
        };
    }
    Attempt::Retry {
        http_status,
        error,
        next_attempt_at: crate::db::now_ms() + backoff(config, attempts).as_millis() as i64,
    }
}

/// The wait after the `attempts`-th failed attempt: `first_retry` doubled each time, at most
/// `max_retry`.
pub fn backoff(config: &NotifyConfig, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    config
        .first_retry
        .saturating_mul(1 << doublings)
        .min(config.max_retry)
}

/// A request error in words, without the URL (which may hold a token).
fn describe(config: &NotifyConfig, error: reqwest::Error) -> String {
    if error.is_timeout() {
        return format!("no answer within {} ms", config.timeout.as_millis());
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let config = NotifyConfig::default();
        let waits: Vec<u64> = (1..=10)
            .map(|attempts| backoff(&config, attempts).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(&config, 1000).as_secs(), 300);
    }
}
