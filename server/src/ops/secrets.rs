//! Secrets: sealed by the vault before they are stored, listed masked, revealed only by an
//! audited call, opened for a deploy or to redact a project's logs, re-sealed by a key rotation.

use super::{OpError, OpResult};
use crate::db::{DbError, Store, StoredSecret, User};
use crate::vault::{SecretRow, Vault};
use shared::api::{CreateSecret, RevealedSecret, SecretSummary, UpdateSecret};
use shared::{ProjectId, Secret, SecretId, SecretValue};
use uuid::Uuid;

/// Largest secret value accepted.
const MAX_VALUE_BYTES: usize = 64 * 1024;
/// What a listed secret shows instead of its value.
const MASK: &str = "********";

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

fn row_of(secret: &StoredSecret) -> SecretRow<'_> {
    SecretRow {
        project_id: secret.project_id,
        secret_id: secret.id,
        key: &secret.key,
    }
}

fn summary(secret: StoredSecret) -> SecretSummary {
    SecretSummary {
        id: secret.id,
        project_id: secret.project_id,
        key: secret.key,
        scope: secret.scope,
        value: MASK.into(),
        updated_at: secret.updated_at,
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
    let project = store.project(by, input.project_id).await?;
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
    };
    store
        .insert_secret(&stored)
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
pub async fn list(store: &Store, by: &User, project: ProjectId) -> OpResult<Vec<SecretSummary>> {
    let project = store.project(by, project).await?;
    let secrets = store.secrets_of_project(project.id).await?;
    Ok(secrets.into_iter().map(summary).collect())
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
    let ciphertext = vault.seal(row_of(&current), &input.value);
    if !store
        .replace_ciphertext(id, &current.ciphertext, &ciphertext)
        .await?
    {
        return Err(OpError::Conflict(
            "the secret changed meanwhile; try again".into(),
        ));
    }
    Ok(summary(store.secret(by, id).await?))
}

pub async fn delete(store: &Store, by: &User, id: SecretId) -> OpResult<()> {
    Ok(store.delete_secret(by, id).await?)
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

/// A project's secrets in the clear, for a deploy or for the agent to redact its logs. Only the
/// server calls this, for a project an operation already resolved.
pub async fn values_of_project(
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

/// What a key rotation did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Re-sealed under the current key.
    pub rotated: usize,
    /// Already under it.
    pub current: usize,
}

/// Re-seals every secret under the current key, one row at a time: a row is either still under
/// the previous key or already under the new one, so stopping halfway loses nothing.
pub async fn rotate_all(store: &Store, vault: &Vault) -> OpResult<Rotation> {
    let mut done = Rotation::default();
    for secret in store.all_secrets().await? {
        if !vault.needs_rotation(&secret.ciphertext) {
            done.current += 1;
            continue;
        }
        let ciphertext = vault.reseal(row_of(&secret), &secret.ciphertext)?;
        if store
            .replace_ciphertext(secret.id, &secret.ciphertext, &ciphertext)
            .await?
        {
            done.rotated += 1;
        }
    }
    Ok(done)
}
