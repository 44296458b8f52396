//! Secrets: sealed by the vault before they are stored, listed masked, revealed only by an
//! audited call, opened for a deploy or to redact a project's logs, re-sealed by a key rotation.
//!
//! Redaction has to hold for the containers that run now, not only for the values stored now:
//! a change or a delete keeps the value it replaces (sealed, as a previous value), and a
//! project's logs are masked for those too until a deploy of the project succeeds, since from
//! then on its containers run the values that deploy was given.
//!
//! Every value a project holds travels in one frame to its agent (a `Deploy` carries the
//! current ones, a `StartLogs` those and the kept previous ones), and the agent reads no frame
//! over [`MAX_FRAME_TO_AGENT_BYTES`]. So a project holds at most [`MAX_SECRETS_PER_PROJECT`]
//! secrets of [`MAX_PROJECT_BYTES`] together, keeps at most [`MAX_PREVIOUS_PER_SECRET`]
//! previous values per secret within [`MAX_PREVIOUS_BYTES`] (the oldest go first, and masking
//! them is best effort from then on), and a message that would still not fit (secrets stored
//! before these limits) is refused with both sizes rather than sent.

use super::{OpError, OpResult};
use crate::db::{DbError, PreviousValue, Store, StoredSecret, StoredVersion, User};
use crate::vault::{CredentialRow, PreviousRow, SecretRow, Vault, VersionRow};
use shared::api::{CreateSecret, RevealedSecret, SecretSummary, SecretVersion, UpdateSecret};
use shared::protocol::MAX_FRAME_TO_AGENT_BYTES;
use shared::{DeploymentId, ProjectId, Secret, SecretId, SecretValue, ServerToAgent};
use std::collections::HashMap;
use uuid::Uuid;

/// Largest secret value accepted.
const MAX_VALUE_BYTES: usize = shared::secret::MAX_SECRET_VALUE_BYTES;
/// Most secrets one project may have.
const MAX_SECRETS_PER_PROJECT: usize = 1000;
/// Most bytes a project's secret values may hold together.
const MAX_PROJECT_BYTES: usize = 1024 * 1024;
/// Most previous values kept per secret: the newest.
const MAX_PREVIOUS_PER_SECRET: usize = 3;
/// Most previous values kept per project, whichever secrets they were values of (empty values
/// take no bytes, but still room in a frame).
const MAX_PREVIOUS_VALUES: usize = 1000;
/// Most bytes a project's kept previous values may hold together.
const MAX_PREVIOUS_BYTES: usize = 1024 * 1024;

// Whatever a project holds fits one frame: a byte of a value takes at most six bytes of JSON
// (`\u0001`), and 1 MiB is far more than the keys (up to 256 bytes), scopes, quotes and commas
// of 1,000 secrets and 1,000 previous values.
const _: () =
    assert!(6 * (MAX_PROJECT_BYTES + MAX_PREVIOUS_BYTES) + (1 << 20) <= MAX_FRAME_TO_AGENT_BYTES);

/// What a listed secret shows instead of its value.
const MASK: &str = "********";
/// A value shorter than this (in characters) is flagged as not reliably masked in logs: the
/// agent leaves the shortest values alone, and a short one also matches ordinary output.
const RELIABLY_MASKED_CHARS: usize = 6;

fn weak_redaction(value: &SecretValue) -> bool {
    value.expose().chars().count() < RELIABLY_MASKED_CHARS
}

fn check_value(value: &SecretValue) -> OpResult<()> {
    if value.expose().len() > MAX_VALUE_BYTES {
        return Err(OpError::Invalid(format!(
            "a secret value may be at most {} KiB",
            MAX_VALUE_BYTES / 1024
        )));
    }
    if value.expose().contains('\0') {
        return Err(OpError::Invalid(
            "a secret value cannot contain a NUL byte".into(),
        ));
    }
    Ok(())
}

/// Whether a project with `secrets` has room for `value`, as a new secret or (`replacing`) as
/// the new value of one of them. A project over the limit (from before it) may still shrink.
fn check_room(
    secrets: &[StoredSecret],
    replacing: Option<SecretId>,
    value: &SecretValue,
) -> OpResult<()> {
    if replacing.is_none() && secrets.len() >= MAX_SECRETS_PER_PROJECT {
        return Err(OpError::Invalid(format!(
            "a project may have at most {MAX_SECRETS_PER_PROJECT} secrets"
        )));
    }
    let now: usize = secrets
        .iter()
        .map(|secret| Vault::value_len(&secret.ciphertext))
        .sum();
    let replaced = secrets
        .iter()
        .find(|secret| Some(secret.id) == replacing)
        .map_or(0, |secret| Vault::value_len(&secret.ciphertext));
    let total = now - replaced + value.expose().len();
    if total > MAX_PROJECT_BYTES && total > now {
        return Err(OpError::Invalid(format!(
            "a project's secrets may hold at most {} MiB together; this one would make it {total} bytes",
            MAX_PROJECT_BYTES / (1024 * 1024)
        )));
    }
    Ok(())
}

/// Refuses a message to an agent that would not fit in one frame the agent reads. Only secret
/// values make a message that large, so the error says so, with both sizes.
pub(super) fn check_frame_to_agent(message: &ServerToAgent) -> OpResult<()> {
    let size = shared::protocol::encoded_len(message);
    if size > MAX_FRAME_TO_AGENT_BYTES {
        return Err(OpError::Invalid(format!(
            "the project's secrets are too large to send ({size} bytes, limit {MAX_FRAME_TO_AGENT_BYTES})"
        )));
    }
    Ok(())
}

fn row_of(secret: &StoredSecret) -> SecretRow<'_> {
    SecretRow {
        project_id: secret.project_id,
        secret_id: secret.id,
        key: &secret.key,
    }
}

fn previous_row(previous: &PreviousValue) -> PreviousRow<'_> {
    PreviousRow {
        secret: SecretRow {
            project_id: previous.project_id,
            secret_id: previous.secret_id,
            key: &previous.key,
        },
        id: previous.id,
    }
}

fn version_row(version: &StoredVersion) -> VersionRow<'_> {
    VersionRow {
        secret: SecretRow {
            project_id: version.project_id,
            secret_id: version.secret_id,
            key: &version.key,
        },
        id: version.id,
    }
}

/// A new version of `secret` holding `value` (its number is given when it is stored).
fn new_version(
    vault: &Vault,
    secret: &StoredSecret,
    value: &SecretValue,
    by: Option<&User>,
) -> StoredVersion {
    let mut version = StoredVersion {
        id: Uuid::new_v4(),
        project_id: secret.project_id,
        secret_id: secret.id,
        version: 0,
        key: secret.key.clone(),
        scope: secret.scope.clone(),
        ciphertext: Vec::new(),
        created_at: time::OffsetDateTime::now_utc(),
        created_by: by.map(|user| user.id),
        created_by_login: None,
    };
    version.ciphertext = vault.seal_version(version_row(&version), value);
    version
}

fn summary(secret: StoredSecret) -> SecretSummary {
    SecretSummary {
        id: secret.id,
        project_id: secret.project_id,
        key: secret.key,
        scope: secret.scope,
        value: MASK.into(),
        updated_at: secret.updated_at,
        weak_redaction: secret.weak_redaction.unwrap_or(false),
    }
}

/// Adds a secret to one of the person's projects.
pub async fn create(
    store: &Store,
    vault: &Vault,
    by: &User,
    input: CreateSecret,
) -> OpResult<SecretSummary> {
    check_value(&input.value)?;
    let project = match store.project(by, input.project_id).await {
        Err(DbError::NotFound) => {
            let message = format!("project {} does not exist", input.project_id);
            return Err(OpError::NoSuch(message));
        }
        found => found?,
    };
    check_room(
        &store.secrets_of_project(project.id).await?,
        None,
        &input.value,
    )?;
    let id = SecretId(Uuid::new_v4());
    let row = SecretRow {
        project_id: project.id,
        secret_id: id,
        key: &input.key,
    };
    let stored = StoredSecret {
        id,
        project_id: project.id,
        key: input.key.clone(),
        scope: input.scope.clone(),
        ciphertext: vault.seal(row, &input.value),
        updated_at: time::OffsetDateTime::now_utc(),
        weak_redaction: Some(weak_redaction(&input.value)),
        current_version: None,
    };
    let version = new_version(vault, &stored, &input.value, Some(by));
    store
        .insert_secret(&stored, Some(&version))
        .await
        .map_err(|error| match error {
            DbError::Conflict(_) => OpError::Conflict(format!(
                "secret {} with scope {} already exists in this project; update it instead",
                input.key, input.scope
            )),
            other => other.into(),
        })?;
    Ok(summary(stored))
}

/// A project's secrets, values masked.
pub async fn list(
    store: &Store,
    vault: &Vault,
    by: &User,
    project: ProjectId,
) -> OpResult<Vec<SecretSummary>> {
    let project = store.project(by, project).await?;
    let mut secrets = store.secrets_of_project(project.id).await?;
    for secret in secrets
        .iter_mut()
        .filter(|secret| secret.weak_redaction.is_none())
    {
        // Stored before the flag was: worked out from the value this once, then kept.
        match vault.open(row_of(secret), &secret.ciphertext) {
            Ok(value) => {
                let weak = weak_redaction(&value);
                store
                    .set_weak_redaction(secret.id, &secret.ciphertext, weak)
                    .await?;
                secret.weak_redaction = Some(weak);
            }
            Err(error) => {
                tracing::warn!(%error, secret_id = %secret.id, "cannot tell whether a secret is long enough to be masked")
            }
        }
    }
    Ok(secrets.into_iter().map(summary).collect())
}

/// The value `secret` has now, sealed as a previous value replaced by `by`. A value the vault
/// cannot open could not be masked either: it is not kept, and the change goes ahead.
fn previous_value(vault: &Vault, secret: &StoredSecret, by: &User) -> Option<PreviousValue> {
    let mut previous = PreviousValue {
        id: Uuid::new_v4(),
        project_id: secret.project_id,
        secret_id: secret.id,
        key: secret.key.clone(),
        ciphertext: Vec::new(),
        replaced_at: time::OffsetDateTime::now_utc(),
        replaced_by: Some(by.id),
    };
    match vault.retire(row_of(secret), &secret.ciphertext, previous_row(&previous)) {
        Ok(ciphertext) => {
            previous.ciphertext = ciphertext;
            Some(previous)
        }
        Err(error) => {
            tracing::warn!(%error, secret_id = %secret.id, "the value being replaced cannot be opened, so it is not kept for masking logs");
            None
        }
    }
}

/// Gives a secret a new value; a change made meanwhile by someone else is a `Conflict`.
pub async fn update(
    store: &Store,
    vault: &Vault,
    by: &User,
    id: SecretId,
    input: UpdateSecret,
) -> OpResult<SecretSummary> {
    check_value(&input.value)?;
    let current = store.secret(by, id).await?;
    check_room(
        &store.secrets_of_project(current.project_id).await?,
        Some(id),
        &input.value,
    )?;
    let ciphertext = vault.seal(row_of(&current), &input.value);
    let previous = previous_value(vault, &current, by);
    let weak = weak_redaction(&input.value);
    let version = new_version(vault, &current, &input.value, Some(by));
    if !store
        .replace_secret_value(
            id,
            &current.ciphertext,
            &ciphertext,
            weak,
            previous.as_ref(),
            &version,
        )
        .await?
    {
        return Err(OpError::Conflict(
            "the secret changed meanwhile; try again".into(),
        ));
    }
    if previous.is_some() {
        keep_previous_values_bounded(store, current.project_id).await;
    }
    Ok(summary(store.secret(by, id).await?))
}

/// Deletes a secret, keeping its value for masking logs until the next successful deploy.
pub async fn delete(store: &Store, vault: &Vault, by: &User, id: SecretId) -> OpResult<()> {
    let secret = store.secret(by, id).await?;
    let previous = previous_value(vault, &secret, by);
    if !store.delete_secret(&secret, previous.as_ref()).await? {
        return Err(OpError::Conflict(
            "the secret changed meanwhile; try again".into(),
        ));
    }
    if previous.is_some() {
        keep_previous_values_bounded(store, secret.project_id).await;
    }
    Ok(())
}

/// After a change kept a previous value: drops those of `project` beyond what is kept (see
/// [`excess_previous_values`]), each logged once, by key name. The change itself is done, so a
/// failure here is logged too, and the next change tries again.
async fn keep_previous_values_bounded(store: &Store, project: ProjectId) {
    let result = async {
        let kept = store.previous_values_of_project(project).await?;
        for previous in excess_previous_values(&kept) {
            store.delete_previous_value(previous.id).await?;
            tracing::warn!(
                project_id = %project,
                secret_id = %previous.secret_id,
                key = %previous.key,
                "an earlier value of this secret is no longer masked in the project's logs: at most {MAX_PREVIOUS_PER_SECRET} per secret and {} MiB per project are kept; deploy the project so no container runs it",
                MAX_PREVIOUS_BYTES / (1024 * 1024)
            );
        }
        Ok::<_, DbError>(())
    }
    .await;
    if let Err(error) = result {
        tracing::error!(%error, project_id = %project, "could not drop the earlier values beyond those kept");
    }
}

/// Which of a project's previous values (oldest first) are too many to keep: all but the
/// [`MAX_PREVIOUS_PER_SECRET`] newest of each secret, and, going from the newest, every one
/// from the first that no longer fits [`MAX_PREVIOUS_VALUES`] and [`MAX_PREVIOUS_BYTES`].
fn excess_previous_values(kept: &[PreviousValue]) -> Vec<&PreviousValue> {
    let mut of_secret = HashMap::<SecretId, usize>::new();
    let (mut count, mut bytes, mut full) = (0, 0, false);
    let mut excess = Vec::new();
    for previous in kept.iter().rev() {
        let newer_of_secret = of_secret.entry(previous.secret_id).or_default();
        *newer_of_secret += 1;
        if *newer_of_secret > MAX_PREVIOUS_PER_SECRET {
            excess.push(previous);
            continue;
        }
        let size = Vault::value_len(&previous.ciphertext);
        full = full || count == MAX_PREVIOUS_VALUES || bytes + size > MAX_PREVIOUS_BYTES;
        if full {
            excess.push(previous);
        } else {
            count += 1;
            bytes += size;
        }
    }
    excess
}

/// Returns the plaintext and records who asked.
pub async fn reveal(
    store: &Store,
    vault: &Vault,
    by: &User,
    id: SecretId,
) -> OpResult<RevealedSecret> {
    let secret = store.secret(by, id).await?;
    let value = vault.open(row_of(&secret), &secret.ciphertext)?;
    store
        .audit(by.id, "reveal_secret", &format!("secret:{id}"))
        .await?;
    tracing::info!(user = %by.login, secret_id = %id, key = %secret.key, "secret revealed");
    Ok(RevealedSecret {
        id,
        key: secret.key,
        value,
    })
}

/// The values one of the person's secrets has had, newest first; the values stay hidden.
pub async fn versions(store: &Store, by: &User, id: SecretId) -> OpResult<Vec<SecretVersion>> {
    let secret = store.secret(by, id).await?;
    let versions = store.versions_of_secret(by, id).await?;
    Ok(versions
        .into_iter()
        .map(|version| SecretVersion {
            version: version.version,
            created_at: version.created_at,
            created_by: version.created_by_login,
            current: secret.current_version == Some(version.id),
        })
        .collect())
}

/// The plaintext of one earlier value of a secret; recorded in the audit log like a reveal.
pub async fn reveal_version(
    store: &Store,
    vault: &Vault,
    by: &User,
    id: SecretId,
    number: i64,
) -> OpResult<RevealedSecret> {
    let version = store
        .versions_of_secret(by, id)
        .await?
        .into_iter()
        .find(|version| version.version == number)
        .ok_or(OpError::NotFound)?;
    let value = vault.open_version(version_row(&version), &version.ciphertext)?;
    store
        .audit(
            by.id,
            "reveal_secret_version",
            &format!("secret:{id}/version:{number}"),
        )
        .await?;
    tracing::info!(user = %by.login, secret_id = %id, key = %version.key, version = number, "secret version revealed");
    Ok(RevealedSecret {
        id,
        key: version.key,
        value,
    })
}

/// The versions holding a project's current values, for a deploy to record as what it runs.
/// A value written before versions were kept gets its version row now.
pub(super) async fn snapshot(
    store: &Store,
    vault: &Vault,
    project: ProjectId,
) -> OpResult<Vec<Uuid>> {
    let mut versions = Vec::new();
    for secret in store.secrets_of_project(project).await? {
        let id = match secret.current_version {
            Some(id) => id,
            None => {
                let mut version = new_version(vault, &secret, &SecretValue::new(""), None);
                version.ciphertext = vault.keep_as_version(
                    row_of(&secret),
                    &secret.ciphertext,
                    version_row(&version),
                )?;
                store
                    .keep_current_version(&secret, &version)
                    .await?
                    .ok_or_else(|| {
                        OpError::Conflict(format!(
                            "secret {} changed meanwhile; deploy again",
                            secret.key
                        ))
                    })?
            }
        };
        versions.push(id);
    }
    Ok(versions)
}

/// The secrets a deploy runs: its snapshot's versions, opened.
pub(super) async fn values_of_snapshot(
    store: &Store,
    vault: &Vault,
    versions: &[Uuid],
) -> OpResult<Vec<Secret>> {
    let stored = store.versions_by_id(versions).await?;
    if stored.len() != versions.len() {
        return Err(OpError::Conflict(
            "some secret values this deployment ran are no longer stored".into(),
        ));
    }
    stored
        .into_iter()
        .map(|version| {
            let value = vault.open_version(version_row(&version), &version.ciphertext)?;
            Ok(Secret {
                key: version.key,
                value,
                scope: version.scope,
            })
        })
        .collect()
}

/// Keeps the values of a redeploy's snapshot that differ from the project's current ones as
/// previous values, so the project's logs are masked for them while its containers run them
/// (until a later deploy succeeds), like a value replaced by a change.
pub(super) async fn mask_while_running(
    store: &Store,
    vault: &Vault,
    by: &User,
    project: ProjectId,
    snapshot: &[Secret],
) -> OpResult<()> {
    let current = values_of_project(store, vault, project).await?;
    for secret in snapshot {
        if current
            .iter()
            .any(|now| now.value.expose() == secret.value.expose())
        {
            continue;
        }
        let mut previous = PreviousValue {
            id: Uuid::new_v4(),
            project_id: project,
            // The value is not a secret's current one; its own id keeps its row apart.
            secret_id: SecretId(Uuid::new_v4()),
            key: secret.key.clone(),
            ciphertext: Vec::new(),
            replaced_at: time::OffsetDateTime::now_utc(),
            replaced_by: Some(by.id),
        };
        previous.ciphertext = vault.seal_previous(previous_row(&previous), &secret.value);
        store.insert_previous_value(&previous).await?;
    }
    keep_previous_values_bounded(store, project).await;
    Ok(())
}

/// A project's secrets in the clear, for a deploy or for the agent to redact its logs. Only the
/// server calls this, for a project an operation already resolved.
pub(super) async fn values_of_project(
    store: &Store,
    vault: &Vault,
    project: ProjectId,
) -> OpResult<Vec<Secret>> {
    let stored = store.secrets_of_project(project).await?;
    stored
        .into_iter()
        .map(|secret| {
            let value = vault.open(row_of(&secret), &secret.ciphertext)?;
            Ok(Secret {
                key: secret.key,
                value,
                scope: secret.scope,
            })
        })
        .collect()
}

/// What the agent masks in a project's logs: the current value of every secret, and every value
/// replaced or deleted since the project's last successful deploy (a container may still run
/// it). Only the server calls this, for a project an operation already resolved.
pub async fn values_to_redact(
    store: &Store,
    vault: &Vault,
    project: ProjectId,
) -> OpResult<Vec<SecretValue>> {
    let mut values: Vec<SecretValue> = values_of_project(store, vault, project)
        .await?
        .into_iter()
        .map(|secret| secret.value)
        .collect();
    for previous in store.previous_values_of_project(project).await? {
        match vault.open_previous(previous_row(&previous), &previous.ciphertext) {
            Ok(value) => values.push(value),
            // It could not be masked anyway; the others still can.
            Err(error) => tracing::warn!(
                %error,
                project_id = %project,
                previous_value_id = %previous.id,
                "an earlier value cannot be opened, so it is not masked in the project's logs"
            ),
        }
    }
    values.sort_by(|a, b| a.expose().cmp(b.expose()));
    values.dedup_by(|a, b| a.expose() == b.expose());
    Ok(values)
}

/// After `deployment` of `project` succeeded: its containers run the values it was given, so
/// the values replaced before it was created need no masking any more.
pub async fn forget_previous_values(
    store: &Store,
    project: ProjectId,
    deployment: DeploymentId,
) -> OpResult<()> {
    store.forget_previous_values(project, deployment).await?;
    Ok(())
}

/// What a key rotation did, counting secrets and their kept previous values (or credentials).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Re-sealed under the current key.
    pub rotated: usize,
    /// Already under it.
    pub current: usize,
}

impl Rotation {
    /// Counts a credential `stored` for `row` as current, or re-seals it and hands the new
    /// ciphertext to `replace`: a compare-and-swap on the old one, `false` when the row changed
    /// or went meanwhile.
    pub(super) async fn reseal_credential<Fut>(
        &mut self,
        vault: &Vault,
        row: impl CredentialRow,
        stored: &[u8],
        replace: impl FnOnce(Vec<u8>) -> Fut,
    ) -> OpResult<()>
    where
        Fut: std::future::Future<Output = Result<bool, DbError>>,
    {
        if !vault.needs_rotation(stored) {
            self.current += 1;
            return Ok(());
        }
        let resealed = vault.reseal_credential(row, stored)?;
        if replace(resealed).await? {
            self.rotated += 1;
        }
        Ok(())
    }
}

/// Re-seals every secret (and every kept previous value) under the current key, one row at a
/// time: a row is either still under the previous key or already under the new one, so
/// stopping halfway loses nothing.
pub async fn rotate_all(store: &Store, vault: &Vault) -> OpResult<Rotation> {
    let mut done = Rotation::default();
    for secret in store.all_secrets().await? {
        if !vault.needs_rotation(&secret.ciphertext) {
            done.current += 1;
            continue;
        }
        // Key names repeat across projects: the id says which row it was.
        let ciphertext = vault
            .reseal(row_of(&secret), &secret.ciphertext)
            .map_err(|error| OpError::Unreadable(format!("{error} (secret id {})", secret.id)))?;
        if store
            .replace_ciphertext(secret.id, &secret.ciphertext, &ciphertext)
            .await?
        {
            done.rotated += 1;
        }
    }
    for version in store.all_versions().await? {
        if !vault.needs_rotation(&version.ciphertext) {
            done.current += 1;
            continue;
        }
        let ciphertext = vault.reseal_version(version_row(&version), &version.ciphertext)?;
        if store
            .replace_version_ciphertext(version.id, &version.ciphertext, &ciphertext)
            .await?
        {
            done.rotated += 1;
        }
    }
    for previous in store.all_previous_values().await? {
        if !vault.needs_rotation(&previous.ciphertext) {
            done.current += 1;
            continue;
        }
        let ciphertext = vault.reseal_previous(previous_row(&previous), &previous.ciphertext)?;
        if store
            .replace_previous_ciphertext(previous.id, &previous.ciphertext, &ciphertext)
            .await?
        {
            done.rotated += 1;
        }
    }
    Ok(done)
}
