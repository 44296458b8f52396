//! Push webhooks: a project's hook (create, show, rotate its secret, delete) and what happens
//! when a Git host delivers a push to it.
//!
//! A delivery is handled in this order, and nothing is parsed or stored before step 3:
//!
//! 1. the hook id in the URL names a hook (else 404), whose owner may still act;
//! 2. its secret is opened from the vault;
//! 3. the sender is told apart by its headers (Forgejo, Gitea, GitLab, GitHub, then a plain
//!    `Authorization: Bearer`) and its proof checked against the secret over the raw body, in
//!    constant time: an HMAC-SHA256 signature (GitHub, Gitea, Forgejo) or the secret itself
//!    (GitLab's token, Bearer). Any failure is the same 401, so nothing tells an attacker which
//!    part was wrong;
//! 4. the body is read (400 if a signed body is not the event's JSON) and the push judged: a
//!    `ping` is answered, a branch deletion, a tag, another branch than the configured one or
//!    another event is acknowledged and ignored;
//! 5. the delivery id is kept (only now, so forged requests write nothing); one seen before
//!    is answered "duplicate" and does nothing;
//! 6. a push to deploy raises the project's "deploy again" flag with its trigger, and the flag
//!    is taken at once if no job of the project is open: the deploy starts. Otherwise the
//!    running deploy keeps it, and when a job of the project ends ([`follow_up_pushes`]) the
//!    flag, holding the newest push, starts exactly one more deploy. A burst of pushes is
//!    therefore one deploy of the newest commit, never a queue of stale ones, and the flag is in
//!    the database so a restart keeps it.

use super::secrets::Rotation;
use super::{OpError, OpResult};
use crate::db::{NewDelivery, Store, StoredHook, User};
use crate::hub::{Hub, HubEvent};
use crate::vault::{HookRow, Vault};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::api::Project;
use shared::webhooks::{
    DeliveryOutcome, DeliveryReceipt, DeployTrigger, Webhook, WebhookCreated, WebhookProvider,
};
use shared::{DeploymentId, ProjectId, SecretValue};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// The largest delivery body read; a larger one is refused (413) before anything is hashed.
/// A push payload lists at most a few dozen commits; this leaves room for far more.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long delivery ids are kept: a redelivery within this time is recognised.
pub const DELIVERY_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// Deliveries the hook's view lists.
const LISTED_DELIVERIES: i64 = 20;

/// Prefix of hook secrets, so a leaked one is recognisable to secret scanners and people.
const SECRET_PREFIX: &str = "stw_";

type HmacSha256 = Hmac<Sha256>;

/// Serializes, per project, the decisions "deploy now or raise the flag" and "take the flag",
/// so two of them never both see no open job and start two deploys; projects do not wait for
/// each other. A project's entry lives only while someone holds or awaits it, so the map does
/// not grow with the number of projects ever seen. Cheap to clone.
#[derive(Clone, Default)]
pub struct WebhookGate(Arc<std::sync::Mutex<HashMap<ProjectId, Arc<tokio::sync::Mutex<()>>>>>);

/// One project's turn at the gate; dropping it ends the turn.
struct GateTurn {
    gate: WebhookGate,
    project: ProjectId,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WebhookGate {
    fn entries(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ProjectId, Arc<tokio::sync::Mutex<()>>>> {
        // The map is only read and written whole under this lock: a panic elsewhere leaves it
        // consistent.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn enter(&self, project: ProjectId) -> GateTurn {
        let mutex = Arc::clone(self.entries().entry(project).or_default());
        let held = mutex.lock_owned().await;
        GateTurn {
            gate: self.clone(),
            project,
            held: Some(held),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().len()
    }
}

impl Drop for GateTurn {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut entries = self.gate.entries();
        // Clones are only made under the map's lock: one left (the map's) means nobody holds
        // or awaits this project's turn.
        if entries
            .get(&self.project)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            entries.remove(&self.project);
        }
    }
}

/// The headers of a delivery that say who sent it and prove it, as the HTTP adapter read them
/// (each `None` when absent or not text). Its `Debug` hides the two that carry the secret.
#[derive(Clone, Default)]
pub struct DeliveryHeaders {
    pub github_event: Option<String>,
    pub github_delivery: Option<String>,
    pub hub_signature_256: Option<String>,
    pub gitlab_event: Option<String>,
    pub gitlab_token: Option<String>,
    pub gitlab_event_uuid: Option<String>,
    pub gitea_event: Option<String>,
    pub gitea_delivery: Option<String>,
    pub gitea_signature: Option<String>,
    pub forgejo_event: Option<String>,
    pub forgejo_delivery: Option<String>,
    pub forgejo_signature: Option<String>,
    /// `Idempotency-Key`: GitLab's delivery id, and one a script may give with Bearer.
    pub idempotency_key: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
}

impl std::fmt::Debug for DeliveryHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryHeaders")
            .field("github_event", &self.github_event)
            .field("gitlab_event", &self.gitlab_event)
            .field("gitea_event", &self.gitea_event)
            .field("forgejo_event", &self.forgejo_event)
            .field("gitlab_token", &self.gitlab_token.as_ref().map(|_| "***"))
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// The branch (or tag, or full ref) a push must be to deploy the project: its Git source's
/// `ref`; for a source that follows the remote's default branch, the default branch the push's
/// repository names (any branch when the sender does not say); `None` for a project whose
/// source is a directory on its host, which has no branch: every branch push deploys it.
async fn configured_branch(
    store: &Store,
    project: ProjectId,
    delivery: &Delivery,
) -> OpResult<Option<String>> {
    Ok(
        match super::sources::configured_branch(store, project).await? {
            None => None,
            Some(Some(git_ref)) => Some(git_ref.as_str().to_owned()),
            Some(None) => delivery
                .push
                .as_ref()
                .and_then(Push::default_branch)
                .map(str::to_owned),
        },
    )
}

/// Creates the project's hook: a random id for its URL and a random secret, shown this once.
pub async fn create(
    store: &Store,
    vault: &Vault,
    public_url: &str,
    by: &User,
    project_id: ProjectId,
) -> OpResult<WebhookCreated> {
    let project = store.project(by, project_id).await?;
    if store.webhook_of_project(project.id).await?.is_some() {
        return Err(OpError::Conflict(
            "this project has a webhook already; rotate its secret to get a new one".into(),
        ));
    }
    let id = random_text(18);
    let secret = new_secret();
    let row = HookRow {
        project_id: project.id,
        hook_id: &id,
    };
    match store
        .create_webhook(project.id, &id, &vault.seal_credential(row, &secret))
        .await
    {
        Ok(()) => {}
        // Another create of this project's hook won the race.
        Err(crate::db::DbError::Conflict(_)) => {
            return Err(OpError::Conflict(
                "this project has a webhook already; rotate its secret to get a new one".into(),
            ))
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(project_id = %project.id, hook_id = %id, "webhook created");
    let webhook = view(store, public_url, project.id).await?;
    Ok(WebhookCreated { webhook, secret })
}

/// The project's hook, with its latest deliveries; `NotFound` if it has none.
pub async fn show(
    store: &Store,
    public_url: &str,
    by: &User,
    project_id: ProjectId,
) -> OpResult<Webhook> {
    let project = store.project(by, project_id).await?;
    view(store, public_url, project.id).await
}

/// Replaces the hook's secret (its URL stays): the old one stops working at once and the new
/// one is shown this once.
pub async fn rotate(
    store: &Store,
    vault: &Vault,
    public_url: &str,
    by: &User,
    project_id: ProjectId,
) -> OpResult<WebhookCreated> {
    let project = store.project(by, project_id).await?;
    let hook = store
        .webhook_of_project(project.id)
        .await?
        .ok_or(OpError::NotFound)?;
    let secret = new_secret();
    let row = HookRow {
        project_id: project.id,
        hook_id: &hook.id,
    };
    store
        .set_webhook_secret(&hook.id, &vault.seal_credential(row, &secret))
        .await?;
    tracing::info!(project_id = %project.id, hook_id = %hook.id, "webhook secret rotated");
    let webhook = view(store, public_url, project.id).await?;
    Ok(WebhookCreated { webhook, secret })
}

/// Removes the project's hook: its URL answers 404 from now on.
pub async fn delete(store: &Store, by: &User, project_id: ProjectId) -> OpResult<()> {
    let project = store.project(by, project_id).await?;
    if !store.delete_webhook(project.id).await? {
        return Err(OpError::NotFound);
    }
    tracing::info!(project_id = %project.id, "webhook deleted");
    Ok(())
}

async fn view(store: &Store, public_url: &str, project: ProjectId) -> OpResult<Webhook> {
    let hook = store
        .webhook_of_project(project)
        .await?
        .ok_or(OpError::NotFound)?;
    let deliveries = store
        .webhook_deliveries(&hook.id, LISTED_DELIVERIES)
        .await?;
    Ok(Webhook {
        url: format!(
            "{}/api/v1/hooks/{}",
            public_url.trim_end_matches('/'),
            hook.id
        ),
        created_at: crate::db::from_ms(hook.created_at),
        rotated_at: hook.rotated_at.map(crate::db::from_ms),
        deploy_pending: hook.pending_deploy.is_some(),
        deliveries,
        id: hook.id,
    })
}

/// A hook a delivery names, found before its body is read (step 1).
pub struct DeliveryTarget {
    hook: StoredHook,
    owner: shared::UserId,
}

/// Step 1: the hook `hook_id` names, with an owner who may still act; `NotFound` otherwise.
/// The adapter asks this before it reads the body, so an unknown hook costs no body read.
pub async fn target(store: &Store, hook_id: &str) -> OpResult<DeliveryTarget> {
    let hook = find_hook(store, hook_id).await?;
    let (owner, active) = store.project_owner(hook.project_id).await?;
    if !active {
        return Err(OpError::NotFound);
    }
    Ok(DeliveryTarget { hook, owner })
}

/// Handles one delivery to the hook [`target`] found (see the module's steps). `body` is the
/// raw body, at most [`MAX_BODY_BYTES`] (the adapter refuses more).
pub async fn receive(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    gate: &WebhookGate,
    target: DeliveryTarget,
    headers: &DeliveryHeaders,
    body: &[u8],
) -> OpResult<DeliveryReceipt> {
    let DeliveryTarget { hook, owner } = target;
    // 2–3. The proof, before anything else of the request is believed.
    let row = HookRow {
        project_id: hook.project_id,
        hook_id: &hook.id,
    };
    // The caller is nobody yet: what failed (it names the project) goes to the log only.
    let secret = vault
        .open_credential(row, &hook.secret)
        .map_err(|error| OpError::Internal(anyhow::Error::new(error)))?;
    let Some(provider) = verify(headers, body, &secret) else {
        return Err(OpError::Unauthorized(
            "the delivery is not signed with this webhook's secret".into(),
        ));
    };
    drop(secret);
    // 4. What it asks for.
    let project = store.project_by_id(hook.project_id).await?;
    let delivery = Delivery::read(provider, headers, body)?;
    let configured = configured_branch(store, project.id, &delivery).await?;
    let decision = decide(&delivery, configured.as_deref());
    // 5. Seen before?
    let delivery_id = delivery
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let first_outcome = match &decision {
        Decision::Ping => DeliveryOutcome::Ping,
        Decision::Ignore(_) => DeliveryOutcome::Ignored,
        Decision::Deploy(_) => DeliveryOutcome::Pending,
    };
    // The HMAC covers the body only: a captured delivery re-sent under another id (or none,
    // or another sender's headers with the same signature) is known by its body.
    let body_sha256 = match provider {
        WebhookProvider::Github | WebhookProvider::Gitea | WebhookProvider::Forgejo => {
            Some(hex(&Sha256::digest(body)))
        }
        WebhookProvider::Gitlab | WebhookProvider::Bearer => None,
    };
    let kept = NewDelivery {
        hook_id: &hook.id,
        delivery_id: &delivery_id,
        provider,
        event: &delivery.event,
        outcome: first_outcome,
        body_sha256: body_sha256.as_deref(),
    };
    if !store.record_webhook_delivery(&kept).await? {
        tracing::info!(project_id = %project.id, provider = %provider, delivery = %delivery_id, "duplicate webhook delivery ignored");
        return Ok(receipt(
            DeliveryOutcome::Duplicate,
            "duplicate: this delivery was handled before".into(),
            None,
        ));
    }
    // 6. Deploy, now or when the running deploy ends.
    let trigger = match decision {
        Decision::Ping => {
            return Ok(receipt(DeliveryOutcome::Ping, "pong".into(), None));
        }
        Decision::Ignore(reason) => {
            tracing::info!(project_id = %project.id, provider = %provider, delivery = %delivery_id, reason, "webhook delivery ignored");
            return Ok(receipt(
                DeliveryOutcome::Ignored,
                format!("ignored: {reason}"),
                None,
            ));
        }
        Decision::Deploy(trigger) => trigger,
    };
    let started = request_deploy(store, vault, hub, gate, &project, owner, &trigger).await;
    let started = match started {
        Ok(started) => started,
        Err(error) => {
            // Not handled: the sender's retry must not be taken for a duplicate.
            if let Err(forget) = store.forget_webhook_delivery(&hook.id, &delivery_id).await {
                tracing::error!(%forget, "could not forget a failed webhook delivery");
            }
            return Err(error);
        }
    };
    let (outcome, message) = match started {
        Some(_) => (
            DeliveryOutcome::Deployed,
            format!("deploying ({})", trigger.describe()),
        ),
        None => (
            DeliveryOutcome::Pending,
            "a deploy of this project is running: the newest push deploys when it ends".into(),
        ),
    };
    store
        .set_webhook_delivery_outcome(&hook.id, &delivery_id, outcome, started)
        .await?;
    tracing::info!(project_id = %project.id, provider = %provider, delivery = %delivery_id, outcome = outcome.as_str(), "webhook delivery accepted");
    Ok(receipt(outcome, message, started))
}

fn receipt(
    outcome: DeliveryOutcome,
    message: String,
    deployment_id: Option<DeploymentId>,
) -> DeliveryReceipt {
    DeliveryReceipt {
        outcome,
        message,
        deployment_id,
    }
}

/// The hook an URL names. An id that could not be one is not looked up.
async fn find_hook(store: &Store, hook_id: &str) -> OpResult<StoredHook> {
    let plausible = (1..=64).contains(&hook_id.len())
        && hook_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !plausible {
        return Err(OpError::NotFound);
    }
    store.webhook_by_id(hook_id).await?.ok_or(OpError::NotFound)
}

/// Raises the project's flag with `trigger` (replacing an older push's) and starts the deploy
/// at once if nothing of the project is open. Returns the deploy it started, if it did.
async fn request_deploy(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    gate: &WebhookGate,
    project: &Project,
    owner: shared::UserId,
    trigger: &DeployTrigger,
) -> OpResult<Option<DeploymentId>> {
    let json = serde_json::to_string(trigger).map_err(|error| {
        OpError::Internal(anyhow::Error::new(error).context("encoding a trigger"))
    })?;
    let _decide = gate.enter(project.id).await;
    store.set_pending_deploy(project.id, &json).await?;
    start_pending(store, vault, hub, project, owner).await
}

/// Takes the project's flag and starts its deploy if no job of the project is open. Called
/// with the gate held.
async fn start_pending(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    project: &Project,
    owner: shared::UserId,
) -> OpResult<Option<DeploymentId>> {
    let Some(hook) = store.webhook_of_project(project.id).await? else {
        return Ok(None);
    };
    let Some(pending) = hook.pending_deploy else {
        return Ok(None);
    };
    if store.open_jobs_of_project(project.id).await? > 0 {
        return Ok(None);
    }
    if !store.take_pending_deploy(project.id, &pending).await? {
        return Ok(None);
    }
    // Written by this server; a flag it cannot read still deploys, as a webhook of unknown origin.
    let trigger = serde_json::from_str(&pending).unwrap_or(DeployTrigger::Webhook {
        provider: WebhookProvider::Bearer,
        delivery: None,
        commit: None,
        pusher: None,
        git_ref: None,
    });
    // The flag is not raised again if this fails: a deploy that cannot start would otherwise
    // be retried after every job of the project, forever. A sender still waiting hears of the
    // failure; a push left waiting has its delivery marked failed, for the hook's list.
    let started =
        super::deployments::start_triggered(store, vault, hub, project, owner, &trigger).await;
    let accepted = match started {
        Ok(accepted) => accepted,
        Err(error) => {
            if let DeployTrigger::Webhook {
                delivery: Some(delivery),
                ..
            } = &trigger
            {
                let failed = DeliveryOutcome::Failed;
                if let Err(mark) = store
                    .set_webhook_delivery_outcome(&hook.id, delivery, failed, None)
                    .await
                {
                    tracing::error!(%mark, "could not mark a webhook delivery failed");
                }
            }
            return Err(error);
        }
    };
    tracing::info!(project_id = %project.id, deployment_id = %accepted.deployment_id, trigger = %trigger.describe(), "webhook deploy started");
    Ok(Some(accepted.deployment_id))
}

/// Starts the waiting deploy of `project`, if it has one and nothing of it is open.
async fn kick(store: &Store, vault: &Vault, hub: &Hub, gate: &WebhookGate, project: ProjectId) {
    // Most jobs that end leave no push waiting: those take no turn at the gate.
    match store.webhook_of_project(project).await {
        Ok(Some(hook)) if hook.pending_deploy.is_some() => {}
        Ok(_) => return,
        Err(error) => {
            tracing::error!(%error, project_id = %project, "could not tell whether a push is waiting");
            return;
        }
    }
    let result = async {
        let _decide = gate.enter(project).await;
        let project = match store.project_by_id(project).await {
            Ok(project) => project,
            // Deleted meanwhile: its hook went with it.
            Err(crate::db::DbError::NotFound) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let (owner, active) = store.project_owner(project.id).await?;
        if !active {
            return Ok(None);
        }
        start_pending(store, vault, hub, &project, owner).await
    }
    .await;
    if let Err(error) = result {
        tracing::error!(?error, project_id = %project, "could not start the deploy a push is waiting for");
    }
}

/// Runs until the hub closes: whenever a job of a project ends, starts the deploy a push left
/// waiting. Looks at every waiting project at start (a restart keeps the flags) and whenever
/// it missed events.
pub async fn follow_up_pushes(store: Store, vault: Vault, hub: Hub, gate: WebhookGate) {
    // Jobs that end on another replica are followed up there.
    let mut events = hub.subscribe_local();
    kick_all(&store, &vault, &hub, &gate).await;
    loop {
        match events.recv().await {
            Ok(HubEvent::DeploymentStatus {
                project_id, status, ..
            }) if status.is_final() => kick(&store, &vault, &hub, &gate, project_id).await,
            Ok(_) => {}
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "webhook follow-up fell behind; checking every waiting project"
                );
                kick_all(&store, &vault, &hub, &gate).await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Starts the waiting deploy of every project that has one and nothing open. Also run
/// periodically by the housekeeping, so a wakeup lost to a transient error is not lost for good.
pub async fn kick_all(store: &Store, vault: &Vault, hub: &Hub, gate: &WebhookGate) {
    match store.projects_with_pending_deploy().await {
        Ok(projects) => {
            for project in projects {
                kick(store, vault, hub, gate, project).await;
            }
        }
        Err(error) => tracing::warn!(%error, "could not list the projects with a push waiting"),
    }
}

/// Drops delivery ids older than [`DELIVERY_RETENTION`].
pub async fn purge_deliveries(store: &Store) {
    use super::retention::{BATCH, MAX_BATCHES};
    let before = crate::db::now_ms() - DELIVERY_RETENTION.as_millis() as i64;
    let mut purged = 0;
    // Bounded batches, like the other purges (`ops::retention`).
    for _ in 0..MAX_BATCHES {
        match store.purge_webhook_deliveries(before, BATCH).await {
            Ok(deleted) => {
                purged += deleted;
                if deleted < u64::from(BATCH) {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not purge old webhook deliveries");
                break;
            }
        }
    }
    if purged > 0 {
        tracing::info!(purged, "purged old webhook deliveries");
    }
}

/// Re-seals every hook secret under the current key (see `ops::secrets::rotate_all`).
pub async fn rotate_all(store: &Store, vault: &Vault) -> OpResult<Rotation> {
    let mut done = Rotation::default();
    for hook in &store.all_webhooks().await? {
        let row = HookRow {
            project_id: hook.project_id,
            hook_id: &hook.id,
        };
        done.reseal_credential(vault, row, &hook.secret, |resealed| async move {
            store
                .replace_webhook_ciphertext(&hook.id, &hook.secret, &resealed)
                .await
        })
        .await?;
    }
    Ok(done)
}

fn random_text(bytes: usize) -> String {
    let mut random = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut random);
    URL_SAFE_NO_PAD.encode(random)
}

/// 256 random bits, URL-safe, with the `stw_` prefix.
fn new_secret() -> SecretValue {
    SecretValue::new(format!("{SECRET_PREFIX}{}", random_text(32)))
}

/// Tells the sender apart by its headers and checks its proof; `None` if the proof is missing
/// or wrong, whichever way.
fn verify(headers: &DeliveryHeaders, body: &[u8], secret: &SecretValue) -> Option<WebhookProvider> {
    let key = secret.expose().as_bytes();
    let (provider, proven) = if headers.forgejo_event.is_some() {
        let signature = headers
            .forgejo_signature
            .as_deref()
            .or(headers.gitea_signature.as_deref());
        (WebhookProvider::Forgejo, signed(key, body, signature))
    } else if headers.gitea_event.is_some() {
        let signature = headers.gitea_signature.as_deref();
        (WebhookProvider::Gitea, signed(key, body, signature))
    } else if headers.gitlab_event.is_some() {
        let token = headers.gitlab_token.as_deref();
        (
            WebhookProvider::Gitlab,
            token.is_some_and(|token| same_secret(token, key)),
        )
    } else if headers.github_event.is_some() {
        let signature = headers
            .hub_signature_256
            .as_deref()
            .and_then(|header| header.strip_prefix("sha256="));
        (WebhookProvider::Github, signed(key, body, signature))
    } else {
        let bearer = headers
            .authorization
            .as_deref()
            .and_then(|header| header.strip_prefix("Bearer "))
            .map(str::trim);
        (
            WebhookProvider::Bearer,
            bearer.is_some_and(|token| same_secret(token, key)),
        )
    };
    proven.then_some(provider)
}

/// Whether `signature` (hex) is the HMAC-SHA256 of `body` under `key`, compared in constant
/// time.
fn signed(key: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(expected) = signature.and_then(decode_hex) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Whether `given` is the secret, in time that depends on neither: both are reduced to a MAC
/// of a fixed message, and the MACs compared in constant time.
fn same_secret(given: &str, key: &[u8]) -> bool {
    const LABEL: &[u8] = b"stagely webhook token";
    let (Ok(mut given_mac), Ok(mut secret_mac)) = (
        HmacSha256::new_from_slice(given.as_bytes()),
        HmacSha256::new_from_slice(key),
    ) else {
        return false;
    };
    given_mac.update(LABEL);
    secret_mac.update(LABEL);
    given_mac
        .verify_slice(&secret_mac.finalize().into_bytes())
        .is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// A verified delivery, read.
#[derive(Debug)]
struct Delivery {
    provider: WebhookProvider,
    /// The sender's event name as it gave it (`push`, `Push Hook`, `ping`).
    event: String,
    id: Option<String>,
    /// The push, for a push event.
    push: Option<Push>,
}

/// What a push event says, in the fields the senders share.
#[derive(Debug, Default, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    after: Option<String>,
    /// GitHub and Gitea say so on a branch deletion.
    #[serde(default)]
    deleted: bool,
    /// GitLab: the commit the ref points to now (`null` on a deletion).
    #[serde(default)]
    checkout_sha: Option<String>,
    #[serde(default)]
    head_commit: Option<Commit>,
    /// GitHub: `{name, email}`; Gitea: a user with `login`/`username`.
    #[serde(default)]
    pusher: Option<Person>,
    /// GitLab.
    #[serde(default)]
    user_username: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
    #[serde(default)]
    sender: Option<Person>,
    /// GitHub and Gitea: the repository, with its default branch.
    #[serde(default)]
    repository: Option<Repository>,
    /// GitLab: the project, with its default branch.
    #[serde(default)]
    project: Option<Repository>,
}

impl Push {
    /// The repository's default branch, as the sender names it.
    fn default_branch(&self) -> Option<&str> {
        [&self.repository, &self.project]
            .into_iter()
            .flatten()
            .find_map(|repository| repository.default_branch.as_deref())
            .filter(|branch| !branch.is_empty())
    }
}

#[derive(Debug, Default, Deserialize)]
struct Repository {
    #[serde(default)]
    default_branch: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Commit {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Person {
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl Person {
    fn handle(&self) -> Option<String> {
        self.login
            .clone()
            .or_else(|| self.username.clone())
            .or_else(|| self.name.clone())
            .filter(|name| !name.is_empty())
    }
}

/// A delivery id or event name as kept: at most 200 characters, printable.
fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

impl Delivery {
    /// Reads a verified delivery: its id and event from the headers, and a push's body.
    fn read(provider: WebhookProvider, headers: &DeliveryHeaders, body: &[u8]) -> OpResult<Self> {
        let (event, id) = match provider {
            WebhookProvider::Github => (&headers.github_event, &headers.github_delivery),
            WebhookProvider::Gitlab => (
                &headers.gitlab_event,
                // Idempotency-Key is the same on every retry of a delivery; the event UUID
                // (older GitLab) names the event.
                if headers.idempotency_key.is_some() {
                    &headers.idempotency_key
                } else {
                    &headers.gitlab_event_uuid
                },
            ),
            WebhookProvider::Gitea => (&headers.gitea_event, &headers.gitea_delivery),
            WebhookProvider::Forgejo => (
                &headers.forgejo_event,
                if headers.forgejo_delivery.is_some() {
                    &headers.forgejo_delivery
                } else {
                    &headers.gitea_delivery
                },
            ),
            WebhookProvider::Bearer => (&None, &headers.idempotency_key),
        };
        let event = event
            .as_deref()
            .map(clean)
            .unwrap_or_else(|| "deploy".into());
        let id = id.as_deref().map(clean).filter(|id| !id.is_empty());
        let is_push = match provider {
            WebhookProvider::Github | WebhookProvider::Gitea | WebhookProvider::Forgejo => {
                event == "push"
            }
            WebhookProvider::Gitlab => event == "Push Hook" || event == "Tag Push Hook",
            WebhookProvider::Bearer => false,
        };
        let push = if is_push {
            Some(parse_push(headers.content_type.as_deref(), body)?)
        } else {
            None
        };
        Ok(Self {
            provider,
            event,
            id,
            push,
        })
    }
}

/// A push body: JSON, or GitHub's form encoding (`payload=<JSON>`).
fn parse_push(content_type: Option<&str>, body: &[u8]) -> OpResult<Push> {
    let form = content_type.is_some_and(|kind| {
        kind.trim_start()
            .starts_with("application/x-www-form-urlencoded")
    });
    let parsed = if form {
        let payload = url::form_urlencoded::parse(body)
            .find(|(name, _)| name == "payload")
            .map(|(_, value)| value.into_owned())
            .ok_or_else(|| {
                OpError::Invalid("the form-encoded delivery has no `payload` field".into())
            })?;
        serde_json::from_str::<Push>(&payload)
    } else {
        serde_json::from_slice::<Push>(body)
    };
    parsed.map_err(|error| {
        OpError::Invalid(format!(
            "the delivery's body is not a push event's JSON: {error}"
        ))
    })
}

/// What a verified delivery asks for.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Ping,
    /// Acknowledged, not deployed; the reason.
    Ignore(String),
    Deploy(DeployTrigger),
}

/// Judges a delivery against the project's configured branch (see [`configured_branch`]):
/// a configured name matches `refs/heads/<name>` or `refs/tags/<name>` (a full `refs/…` is
/// matched as it is); without one, every branch push deploys and tags do not.
fn decide(delivery: &Delivery, configured: Option<&str>) -> Decision {
    let trigger = |commit: Option<String>, pusher: Option<String>, git_ref: Option<String>| {
        DeployTrigger::Webhook {
            provider: delivery.provider,
            delivery: delivery.id.clone(),
            commit,
            pusher,
            git_ref,
        }
    };
    if delivery.provider == WebhookProvider::Bearer {
        return Decision::Deploy(trigger(None, None, None));
    }
    if delivery.provider == WebhookProvider::Github && delivery.event == "ping" {
        return Decision::Ping;
    }
    let Some(push) = &delivery.push else {
        return Decision::Ignore(format!("event {} is not a push", delivery.event));
    };
    let after = push
        .checkout_sha
        .clone()
        .or_else(|| push.after.clone())
        .or_else(|| {
            push.head_commit
                .as_ref()
                .and_then(|commit| commit.id.clone())
        });
    let zero = |sha: &str| !sha.is_empty() && sha.bytes().all(|byte| byte == b'0');
    let deleted = push.deleted
        || push.after.as_deref().is_some_and(zero)
        || (delivery.provider == WebhookProvider::Gitlab
            && push.checkout_sha.is_none()
            && push.after.as_deref().is_none_or(zero));
    let git_ref = push.git_ref.as_str();
    let (kind, name) = if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        ("branch", branch)
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        ("tag", tag)
    } else {
        ("ref", git_ref)
    };
    if deleted {
        return Decision::Ignore(format!("{kind} {name} was deleted"));
    }
    let wanted = match configured {
        Some(configured) if configured.starts_with("refs/") => git_ref == configured,
        Some(configured) => kind != "ref" && name == configured,
        None => kind == "branch",
    };
    if !wanted {
        return Decision::Ignore(format!("{kind} {name}"));
    }
    let pusher = push
        .pusher
        .as_ref()
        .and_then(Person::handle)
        .or_else(|| push.user_username.clone())
        .or_else(|| push.user_name.clone())
        .or_else(|| push.sender.as_ref().and_then(Person::handle))
        .map(|name| clean(&name));
    Decision::Deploy(trigger(
        after.map(|sha| clean(&sha)),
        pusher,
        Some(clean(git_ref)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(provider: WebhookProvider, event: &str, body: serde_json::Value) -> Delivery {
        let push = serde_json::from_value(body).unwrap();
        Delivery {
            provider,
            event: event.into(),
            id: Some("d-1".into()),
            push: Some(push),
        }
    }

    fn github_push(git_ref: &str) -> Delivery {
        push(
            WebhookProvider::Github,
            "push",
            json!({
                "ref": git_ref,
                "before": "1111111111111111111111111111111111111111",
                "after": "2222222222222222222222222222222222222222",
                "deleted": false,
                "head_commit": {"id": "2222222222222222222222222222222222222222"},
                "pusher": {"name": "alice", "email": "alice@example.com"},
            }),
        )
    }

    #[test]
    fn a_push_to_the_configured_branch_deploys_and_others_are_ignored() {
        let main = github_push("refs/heads/main");
        let Decision::Deploy(DeployTrigger::Webhook { commit, pusher, .. }) =
            decide(&main, Some("main"))
        else {
            panic!("main should deploy");
        };
        assert_eq!(
            commit.as_deref(),
            Some("2222222222222222222222222222222222222222")
        );
        assert_eq!(pusher.as_deref(), Some("alice"));
        assert_eq!(
            decide(&github_push("refs/heads/feature"), Some("main")),
            Decision::Ignore("branch feature".into())
        );
        assert!(matches!(
            decide(&github_push("refs/heads/main"), Some("refs/heads/main")),
            Decision::Deploy(_)
        ));
    }

    #[test]
    fn tags_deploy_only_when_the_configured_ref_is_that_tag() {
        let tag = github_push("refs/tags/v1.2.0");
        assert_eq!(
            decide(&tag, Some("main")),
            Decision::Ignore("tag v1.2.0".into())
        );
        assert_eq!(decide(&tag, None), Decision::Ignore("tag v1.2.0".into()));
        assert!(matches!(decide(&tag, Some("v1.2.0")), Decision::Deploy(_)));
    }

    #[test]
    fn the_default_branch_is_read_from_the_repository_or_gitlabs_project() {
        let github = push(
            WebhookProvider::Github,
            "push",
            json!({"ref": "refs/heads/trunk", "repository": {"default_branch": "trunk"}}),
        );
        let gitlab = push(
            WebhookProvider::Gitlab,
            "Push Hook",
            json!({"ref": "refs/heads/trunk", "project": {"default_branch": "develop"}}),
        );
        let silent = github_push("refs/heads/main");
        let default = |delivery: &Delivery| {
            delivery
                .push
                .as_ref()
                .and_then(Push::default_branch)
                .map(str::to_owned)
        };
        assert_eq!(default(&github).as_deref(), Some("trunk"));
        assert_eq!(default(&gitlab).as_deref(), Some("develop"));
        assert_eq!(default(&silent), None);
    }

    #[test]
    fn a_directory_project_deploys_on_every_branch_push() {
        for branch in ["refs/heads/main", "refs/heads/anything"] {
            assert!(matches!(
                decide(&github_push(branch), None),
                Decision::Deploy(_)
            ));
        }
    }

    #[test]
    fn branch_deletions_are_ignored_for_every_sender() {
        let zeros = "0000000000000000000000000000000000000000";
        let github = push(
            WebhookProvider::Github,
            "push",
            json!({"ref": "refs/heads/main", "after": zeros, "deleted": true, "head_commit": null}),
        );
        let gitlab = push(
            WebhookProvider::Gitlab,
            "Push Hook",
            json!({"ref": "refs/heads/main", "after": zeros, "checkout_sha": null, "user_username": "bob"}),
        );
        let gitea = push(
            WebhookProvider::Gitea,
            "push",
            json!({"ref": "refs/heads/main", "after": zeros, "pusher": {"login": "carol"}}),
        );
        for delivery in [github, gitlab, gitea] {
            assert_eq!(
                decide(&delivery, Some("main")),
                Decision::Ignore("branch main was deleted".into()),
                "{:?}",
                delivery.provider
            );
        }
    }

    #[test]
    fn signatures_are_checked_over_the_exact_bytes() {
        let secret = SecretValue::new("s3cret");
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut mac = HmacSha256::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let github = DeliveryHeaders {
            github_event: Some("push".into()),
            hub_signature_256: Some(format!("sha256={hex}")),
            ..Default::default()
        };
        assert_eq!(
            verify(&github, body, &secret),
            Some(WebhookProvider::Github)
        );
        assert_eq!(
            verify(&github, b"{\"ref\":\"refs/heads/evil\"}", &secret),
            None
        );
        let unprefixed = DeliveryHeaders {
            hub_signature_256: Some(hex.clone()),
            ..github.clone()
        };
        assert_eq!(verify(&unprefixed, body, &secret), None);
        let gitea = DeliveryHeaders {
            gitea_event: Some("push".into()),
            gitea_signature: Some(hex.to_uppercase()),
            ..Default::default()
        };
        assert_eq!(verify(&gitea, body, &secret), Some(WebhookProvider::Gitea));
        let gitlab = DeliveryHeaders {
            gitlab_event: Some("Push Hook".into()),
            gitlab_token: Some("s3cret".into()),
            ..Default::default()
        };
        assert_eq!(
            verify(&gitlab, body, &secret),
            Some(WebhookProvider::Gitlab)
        );
        let wrong_token = DeliveryHeaders {
            gitlab_token: Some("s3cre".into()),
            ..gitlab
        };
        assert_eq!(verify(&wrong_token, body, &secret), None);
        let bearer = DeliveryHeaders {
            authorization: Some("Bearer s3cret".into()),
            ..Default::default()
        };
        assert_eq!(verify(&bearer, b"", &secret), Some(WebhookProvider::Bearer));
        assert_eq!(verify(&DeliveryHeaders::default(), b"", &secret), None);
    }

    /// The right secret in the wrong sender's header proves nothing: the sender is told
    /// apart first, and only its own proof counts.
    #[test]
    fn the_secret_in_another_senders_header_is_refused() {
        let secret = SecretValue::new("s3cret");
        let body = br#"{"ref":"refs/heads/main"}"#;
        fn some(text: &str) -> Option<String> {
            Some(text.into())
        }
        let forged = |edit: fn(&mut DeliveryHeaders)| {
            let mut headers = DeliveryHeaders::default();
            edit(&mut headers);
            headers
        };
        for (what, headers) in [
            (
                "GitLab's token as GitHub",
                forged(|h| (h.github_event, h.gitlab_token) = (some("push"), some("s3cret"))),
            ),
            (
                "a Bearer as Gitea",
                forged(|h| {
                    (h.gitea_event, h.authorization) = (some("push"), some("Bearer s3cret"))
                }),
            ),
            (
                "a Bearer and the token as Forgejo",
                forged(|h| {
                    (h.forgejo_event, h.authorization) = (some("push"), some("Bearer s3cret"));
                    h.gitlab_token = some("s3cret");
                }),
            ),
            (
                "the secret as GitHub's signature",
                forged(|h| {
                    (h.github_event, h.hub_signature_256) = (some("push"), some("sha256=s3cret"))
                }),
            ),
        ] {
            assert_eq!(verify(&headers, body, &secret), None, "{what}");
        }
    }

    #[tokio::test]
    async fn the_gate_serializes_one_project_lets_others_pass_and_forgets_idle_projects() {
        let gate = WebhookGate::default();
        let (shop, blog) = (
            ProjectId(uuid::Uuid::new_v4()),
            ProjectId(uuid::Uuid::new_v4()),
        );
        let first = gate.enter(shop).await;
        // Another project is not held up by the first one's turn.
        let other = gate.enter(blog).await;
        assert_eq!(gate.len(), 2);
        drop(other);
        assert_eq!(gate.len(), 1);
        // The same project waits for its turn.
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move {
                let _turn = gate.enter(shop).await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        waiting.await.unwrap();
        assert_eq!(gate.len(), 0, "no entry is left for idle projects");
    }

    #[test]
    fn gitlab_deliveries_are_known_by_their_idempotency_key() {
        let headers = DeliveryHeaders {
            gitlab_event: Some("Push Hook".into()),
            gitlab_event_uuid: Some("event-uuid".into()),
            idempotency_key: Some("retry-stable".into()),
            ..Default::default()
        };
        let delivery = Delivery::read(
            WebhookProvider::Gitlab,
            &headers,
            b"{\"ref\":\"refs/heads/main\"}",
        )
        .unwrap();
        assert_eq!(delivery.id.as_deref(), Some("retry-stable"));
        let older = DeliveryHeaders {
            idempotency_key: None,
            ..headers
        };
        let delivery = Delivery::read(
            WebhookProvider::Gitlab,
            &older,
            b"{\"ref\":\"refs/heads/main\"}",
        )
        .unwrap();
        assert_eq!(delivery.id.as_deref(), Some("event-uuid"));
    }
}
