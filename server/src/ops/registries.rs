//! Registry credentials: set, replaced and removed per agent or per project, listed without
//! their passwords, opened only to go into a deploy job, re-sealed by a key rotation.
//!
//! An agent's credentials may be changed by whoever may see the agent (its owner, an
//! administrator); a project's by its owner. A deploy carries, per registry, the project's own
//! credential if it has one, else its agent's ([`for_deploy`]).

use super::secrets::Rotation;
use super::{OpError, OpResult};
use crate::db::{DbError, RegistryOwner, Store, StoredRegistryCredential, User};
use crate::vault::{RegistryRow, Vault};
use shared::registry::{
    RegistryCredential, RegistryCredentialSummary, SetRegistryCredential,
    MAX_REGISTRY_PASSWORD_BYTES,
};
use shared::{AgentId, ProjectId, RegistryHost};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Most credentials one agent or project may hold.
const MAX_PER_OWNER: usize = 20;

// A deploy's credentials (its project's and its agent's, six bytes of JSON per byte of
// password at most, plus names) stay far below the room a frame to the agent keeps beside the
// secrets (see `ops::secrets`).
const _: () = assert!(2 * MAX_PER_OWNER * (6 * MAX_REGISTRY_PASSWORD_BYTES + 1024) <= 1 << 20);

fn row(credential: &StoredRegistryCredential) -> RegistryRow<'_> {
    RegistryRow {
        owner: credential.owner,
        id: credential.id,
        registry: &credential.registry,
    }
}

fn summary(credential: StoredRegistryCredential) -> RegistryCredentialSummary {
    RegistryCredentialSummary {
        registry: credential.registry,
        username: credential.username,
        updated_at: credential.updated_at,
    }
}

/// `owner` once the person is checked to reach it: a project they own, an agent they may see.
async fn reachable(store: &Store, by: &User, owner: RegistryOwner) -> OpResult<RegistryOwner> {
    match owner {
        RegistryOwner::Project(id) => {
            store.project(by, id).await?;
        }
        RegistryOwner::Agent(id) => {
            store
                .agent_visible_to(by, id)
                .await
                .map_err(|_| OpError::NotFound)?;
        }
    }
    Ok(owner)
}

/// The credentials of a project, registry and username only.
pub async fn list_of_project(
    store: &Store,
    by: &User,
    project: ProjectId,
) -> OpResult<Vec<RegistryCredentialSummary>> {
    list(store, by, RegistryOwner::Project(project)).await
}

/// The credentials of an agent, registry and username only.
pub async fn list_of_agent(
    store: &Store,
    by: &User,
    agent: AgentId,
) -> OpResult<Vec<RegistryCredentialSummary>> {
    list(store, by, RegistryOwner::Agent(agent)).await
}

async fn list(
    store: &Store,
    by: &User,
    owner: RegistryOwner,
) -> OpResult<Vec<RegistryCredentialSummary>> {
    let owner = reachable(store, by, owner).await?;
    let stored = store.registry_credentials(owner).await?;
    Ok(stored.into_iter().map(summary).collect())
}

/// Sets the credential `owner` uses for a registry, replacing the one it had.
pub async fn set(
    store: &Store,
    vault: &Vault,
    by: &User,
    owner: RegistryOwner,
    input: SetRegistryCredential,
) -> OpResult<RegistryCredentialSummary> {
    let owner = reachable(store, by, owner).await?;
    let password = input.password.expose();
    if password.is_empty() {
        return Err(OpError::Invalid(
            "a registry password or token cannot be empty".into(),
        ));
    }
    if password.len() > MAX_REGISTRY_PASSWORD_BYTES {
        return Err(OpError::Invalid(format!(
            "a registry password or token may be at most {} KiB",
            MAX_REGISTRY_PASSWORD_BYTES / 1024
        )));
    }
    if password.contains('\0') {
        return Err(OpError::Invalid(
            "a registry password or token cannot contain a NUL byte".into(),
        ));
    }
    let existing = store.registry_credentials(owner).await?;
    let current = existing
        .iter()
        .find(|credential| credential.registry == input.registry);
    match current {
        Some(current) => {
            let sealed = vault.seal_credential(row(current), &input.password);
            if !store
                .update_registry_credential(current.id, &input.username, &sealed)
                .await?
            {
                return Err(changed_meanwhile(&input.registry));
            }
        }
        None => {
            if existing.len() >= MAX_PER_OWNER {
                return Err(OpError::Invalid(format!(
                    "at most {MAX_PER_OWNER} registry credentials may be set here"
                )));
            }
            let id = Uuid::new_v4();
            let new_row = RegistryRow {
                owner,
                id,
                registry: &input.registry,
            };
            let sealed = vault.seal_credential(new_row, &input.password);
            match store
                .insert_registry_credential(id, owner, &input.registry, &input.username, &sealed)
                .await
            {
                Ok(()) => {}
                Err(DbError::Conflict(_)) => return Err(changed_meanwhile(&input.registry)),
                Err(error) => return Err(error.into()),
            }
        }
    }
    tracing::info!(registry = %input.registry, ?owner, "registry credential set");
    store
        .registry_credentials(owner)
        .await?
        .into_iter()
        .find(|credential| credential.registry == input.registry)
        .map(summary)
        .ok_or_else(|| changed_meanwhile(&input.registry))
}

fn changed_meanwhile(registry: &RegistryHost) -> OpError {
    OpError::Conflict(format!(
        "the credential for {registry} changed meanwhile; try again"
    ))
}

/// Removes the credential `owner` has for `registry`.
pub async fn delete(
    store: &Store,
    by: &User,
    owner: RegistryOwner,
    registry: &RegistryHost,
) -> OpResult<()> {
    let owner = reachable(store, by, owner).await?;
    if store.delete_registry_credential(owner, registry).await? {
        tracing::info!(%registry, ?owner, "registry credential removed");
        Ok(())
    } else {
        Err(OpError::NotFound)
    }
}

/// The credentials a deploy of `project` on `agent` carries: per registry, the project's own,
/// else the agent's. A password that does not open fails the deploy, naming the registry.
pub async fn for_deploy(
    store: &Store,
    vault: &Vault,
    agent: AgentId,
    project: ProjectId,
) -> OpResult<Vec<RegistryCredential>> {
    let mut chosen: BTreeMap<RegistryHost, StoredRegistryCredential> = BTreeMap::new();
    for credential in store
        .registry_credentials(RegistryOwner::Agent(agent))
        .await?
    {
        chosen.insert(credential.registry.clone(), credential);
    }
    for credential in store
        .registry_credentials(RegistryOwner::Project(project))
        .await?
    {
        chosen.insert(credential.registry.clone(), credential);
    }
    chosen
        .into_values()
        .map(|credential| {
            let password = vault
                .open_credential(row(&credential), &credential.password)
                .map_err(|error| OpError::Unreadable(error.to_string()))?;
            Ok(RegistryCredential {
                registry: credential.registry,
                username: credential.username,
                password,
            })
        })
        .collect()
}

/// Re-seals every registry password under the current key (see `ops::secrets::rotate_all`);
/// safe to interrupt and run again.
pub async fn rotate_all(store: &Store, vault: &Vault) -> OpResult<Rotation> {
    let mut done = Rotation::default();
    for credential in &store.all_registry_credentials().await? {
        done.reseal_credential(
            vault,
            row(credential),
            &credential.password,
            |resealed| async move {
                store
                    .replace_registry_password(credential.id, &credential.password, &resealed)
                    .await
            },
        )
        .await?;
    }
    Ok(done)
}
