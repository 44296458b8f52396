//! Git project sources: which repository a project deploys from, its credentials (an https
//! token or an SSH deploy key the server generates), the SSH host key pinned at the first
//! deploy, and the commit each deploy checked out.
//!
//! Credentials are sealed by the vault like secret values (bound to the project and the field,
//! re-sealed by a key rotation) and leave the server only inside a deploy job; no answer ever
//! carries them back, only whether they are set and the deploy key's public half.

use super::{OpError, OpResult};
use crate::db::{SourceColumn, Store, StoredSource, User};
use crate::vault::{SourceField, SourceRow, Vault};
use shared::api::Project;
use shared::source::{
    CheckoutReport, CommitInfo, GitCheckout, GitRef, GitSource, GitSourceView, SetGitToken,
    Transport,
};
use shared::{DeploymentId, ProjectId, ProjectPath, SecretValue};

/// The `path` a Git project has until its first deploy tells where the agent checked it out.
pub const NOT_CHECKED_OUT: &str = "/(git checkout, not deployed yet)";

/// The largest working copy the agent makes of a repository, in bytes.
pub const MAX_REPOSITORY_BYTES: u64 = 512 * 1024 * 1024;
/// The longest a fetch may take.
pub const FETCH_TIMEOUT_SECS: u64 = 300;

/// The longest https token accepted.
const MAX_TOKEN_BYTES: usize = 4096;

/// The branch a project deploys from, for push hooks: `None` when the project is not deployed
/// from Git, `Some(None)` when it follows the remote's default branch, `Some(Some(ref))` for a
/// configured branch or tag.
pub async fn configured_branch(
    store: &Store,
    project: ProjectId,
) -> OpResult<Option<Option<GitRef>>> {
    Ok(store
        .project_source(project)
        .await?
        .map(|stored| stored.source.git_ref))
}

/// What the API shows of a project's source.
pub fn view(stored: StoredSource) -> GitSourceView {
    GitSourceView {
        has_token: stored.token.is_some(),
        deploy_public_key: stored.ssh_public_key,
        pinned_host_key: stored.host_key,
        source: stored.source,
    }
}

/// Fills `project.source` from its row.
pub async fn attach(store: &Store, project: &mut Project) -> OpResult<()> {
    project.source = store.project_source(project.id).await?.map(view);
    Ok(())
}

/// Makes `project` deploy from `source` (a new row, or new settings for the existing one).
pub async fn set(store: &Store, project: ProjectId, source: &GitSource) -> OpResult<()> {
    store.set_project_source(project, source).await?;
    Ok(())
}

/// Makes `project` deploy from its directory again; its credentials are deleted.
pub async fn clear(store: &Store, project: ProjectId) -> OpResult<()> {
    store.delete_project_source(project).await?;
    Ok(())
}

async fn source_of(store: &Store, by: &User, project: ProjectId) -> OpResult<StoredSource> {
    // Through the owner: another person's project is not found.
    store.project(by, project).await?;
    store.project_source(project).await?.ok_or_else(|| {
        OpError::Conflict("the project is not deployed from a Git repository".into())
    })
}

/// Generates a new Ed25519 deploy key for the project (replacing any earlier one) and returns
/// the source with its public half, to add to the repository as a read-only deploy key.
pub async fn generate_deploy_key(
    store: &Store,
    vault: &Vault,
    by: &User,
    project: ProjectId,
) -> OpResult<GitSourceView> {
    source_of(store, by, project).await?;
    let comment = format!("stagely-{}", project.0.simple());
    let (private, public) = deploy_key::generate(&comment)?;
    let row = SourceRow {
        project_id: project,
        field: SourceField::SshKey,
    };
    let sealed = vault.seal_credential(row, &private);
    store.set_source_ssh_key(project, &sealed, &public).await?;
    Ok(view(source_of(store, by, project).await?))
}

/// Sets (or removes) the project's https access token.
pub async fn set_token(
    store: &Store,
    vault: &Vault,
    by: &User,
    project: ProjectId,
    input: SetGitToken,
) -> OpResult<GitSourceView> {
    source_of(store, by, project).await?;
    let token = input.token.filter(|token| !token.expose().is_empty());
    let username = input
        .username
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty());
    if let Some(name) = &username {
        let valid = name.len() <= 256
            && !name.contains(':')
            && !name.chars().any(|c| c.is_control() || c.is_whitespace());
        if !valid {
            return Err(OpError::Invalid(
                "the token's username must be at most 256 characters, without ':', spaces or \
                 control characters"
                    .into(),
            ));
        }
    }
    let sealed = match &token {
        Some(token) => {
            let text = token.expose();
            if text.len() > MAX_TOKEN_BYTES || text.chars().any(|c| c.is_control()) {
                return Err(OpError::Invalid(format!(
                    "the token must be at most {MAX_TOKEN_BYTES} bytes without control characters"
                )));
            }
            let row = SourceRow {
                project_id: project,
                field: SourceField::Token,
            };
            Some(vault.seal_credential(row, token))
        }
        None => None,
    };
    store
        .set_source_token(project, sealed.as_deref(), username.as_deref())
        .await?;
    Ok(view(source_of(store, by, project).await?))
}

/// Forgets the pinned host key, so the next deploy trusts the one it meets (after the
/// repository's server really changed its key).
pub async fn forget_host_key(
    store: &Store,
    by: &User,
    project: ProjectId,
) -> OpResult<GitSourceView> {
    source_of(store, by, project).await?;
    store.set_source_host_key(project, None).await?;
    Ok(view(source_of(store, by, project).await?))
}

/// The checkout a deploy job of `project` carries, with its credentials opened; `None` for a
/// project deployed from its directory. `commit` pins a redeploy to the commit it ran.
pub async fn checkout_for_job(
    store: &Store,
    vault: &Vault,
    project: ProjectId,
    commit: Option<String>,
) -> OpResult<Option<GitCheckout>> {
    let Some(stored) = store.project_source(project).await? else {
        return Ok(None);
    };
    let open = |field, sealed: &Option<Vec<u8>>| -> OpResult<Option<SecretValue>> {
        sealed
            .as_deref()
            .map(|sealed| {
                vault.open_credential(
                    SourceRow {
                        project_id: project,
                        field,
                    },
                    sealed,
                )
            })
            .transpose()
            .map_err(OpError::from)
    };
    // Only the credential the URL's transport uses leaves the server.
    let (token, ssh_key) = match stored.source.url.transport() {
        Transport::Http => (open(SourceField::Token, &stored.token)?, None),
        Transport::Ssh => (None, open(SourceField::SshKey, &stored.ssh_key)?),
    };
    Ok(Some(GitCheckout {
        token,
        ssh_key,
        url: stored.source.url,
        git_ref: stored.source.git_ref,
        commit,
        subdir: stored.source.subdir,
        compose_file: stored.source.compose_file,
        token_username: stored.token_username,
        known_hosts: stored.host_key,
        max_bytes: MAX_REPOSITORY_BYTES,
        timeout_secs: FETCH_TIMEOUT_SECS,
    }))
}

/// Keeps what a deploy checked out: the commit on the deployment (whatever the outcome), and
/// after a success the host key met (pinned if none was) and where the project now lives on
/// the agent's host. What the agent says is checked before it is kept.
pub async fn record_checkout(
    store: &Store,
    project: ProjectId,
    deployment: DeploymentId,
    report: CheckoutReport,
    success: bool,
) -> OpResult<()> {
    let Some(stored) = store.project_source(project).await? else {
        return Ok(());
    };
    if !CommitInfo::is_sha(&report.commit.sha) {
        tracing::warn!(%deployment, "the agent reported a commit id that is not one; not kept");
        return Ok(());
    }
    let commit = CommitInfo {
        sha: report.commit.sha,
        subject: cut(&report.commit.subject, 1024),
        author: cut(&report.commit.author, 512),
    };
    store.set_deployment_commit(deployment, &commit).await?;
    if !success {
        return Ok(());
    }
    if let Some(host_key) = report.host_key.filter(|key| key.len() <= 16 * 1024) {
        if stored.host_key.is_none() {
            store.pin_source_host_key(project, &host_key).await?;
        }
    }
    if let Some(path) = report
        .directory
        .and_then(|dir| ProjectPath::parse(dir).ok())
    {
        store.set_project_checkout_path(project, &path).await?;
    }
    Ok(())
}

/// The commit an earlier deployment checked out, for a redeploy of it.
pub async fn commit_of(
    store: &Store,
    by: &User,
    deployment: DeploymentId,
) -> OpResult<Option<String>> {
    Ok(store
        .deployment(by, deployment)
        .await?
        .commit
        .map(|commit| commit.sha))
}

fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Re-seals every Git credential under the current master key (see `ops::secrets::rotate_all`).
pub async fn rotate_all(store: &Store, vault: &Vault) -> OpResult<super::secrets::Rotation> {
    let mut done = super::secrets::Rotation::default();
    for stored in &store.all_project_sources().await? {
        for (field, column, sealed) in [
            (SourceField::Token, SourceColumn::Token, &stored.token),
            (SourceField::SshKey, SourceColumn::SshKey, &stored.ssh_key),
        ] {
            let Some(sealed) = sealed else { continue };
            let row = SourceRow {
                project_id: stored.project_id,
                field,
            };
            done.reseal_credential(vault, row, sealed, |resealed| async move {
                store
                    .replace_source_credential(stored.project_id, column, sealed, &resealed)
                    .await
            })
            .await?;
        }
    }
    Ok(done)
}

/// Ed25519 deploy keys in OpenSSH's formats.
pub mod deploy_key {
    use super::{OpError, OpResult};
    use base64::Engine;
    use shared::SecretValue;
    use zeroize::Zeroizing;

    /// A new key pair: the private key as an unencrypted OpenSSH private key file, and the
    /// public key as an `authorized_keys` line ending with `comment`.
    pub fn generate(comment: &str) -> OpResult<(SecretValue, String)> {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, seed.as_mut());
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed.as_ref())
            .map_err(|error| OpError::Internal(anyhow::anyhow!("making a deploy key: {error}")))?;
        let public: [u8; 32] = ring::signature::KeyPair::public_key(&pair)
            .as_ref()
            .try_into()
            .map_err(|_| OpError::Internal(anyhow::anyhow!("an Ed25519 public key is 32 bytes")))?;
        Ok((
            private_key(&seed, &public, comment),
            public_key(&public, comment),
        ))
    }

    fn string(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    fn public_blob(public: &[u8; 32]) -> Vec<u8> {
        let mut blob = Vec::new();
        string(&mut blob, b"ssh-ed25519");
        string(&mut blob, public);
        blob
    }

    /// `ssh-ed25519 <base64> <comment>`.
    pub fn public_key(public: &[u8; 32], comment: &str) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(public_blob(public));
        format!("ssh-ed25519 {encoded} {comment}")
    }

    /// The `openssh-key-v1` format, unencrypted (PROTOCOL.key in OpenSSH's sources).
    pub fn private_key(seed: &[u8; 32], public: &[u8; 32], comment: &str) -> SecretValue {
        let check = rand::random::<u32>().to_be_bytes();
        let mut private = Zeroizing::new(Vec::new());
        private.extend_from_slice(&check);
        private.extend_from_slice(&check);
        string(&mut private, b"ssh-ed25519");
        string(&mut private, public);
        let mut secret = Zeroizing::new(Vec::with_capacity(64));
        secret.extend_from_slice(seed);
        secret.extend_from_slice(public);
        string(&mut private, &secret);
        string(&mut private, comment.as_bytes());
        let mut pad = 1u8;
        while private.len() % 8 != 0 {
            private.push(pad);
            pad += 1;
        }
        let mut whole = Zeroizing::new(Vec::new());
        whole.extend_from_slice(b"openssh-key-v1\0");
        string(&mut whole, b"none");
        string(&mut whole, b"none");
        string(&mut whole, b"");
        whole.extend_from_slice(&1u32.to_be_bytes());
        string(&mut whole, &public_blob(public));
        string(&mut whole, &private);
        let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*whole));
        let mut text = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
        for line in encoded.as_bytes().chunks(70) {
            text.push_str(&String::from_utf8_lossy(line));
            text.push('\n');
        }
        text.push_str("-----END OPENSSH PRIVATE KEY-----\n");
        SecretValue::new(text)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn ssh_keygen_reads_the_private_key_and_derives_the_same_public_key() {
            let (private, public) = super::generate("stagely-test").unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("key");
            std::fs::write(&path, private.expose()).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            let derived = std::process::Command::new("ssh-keygen")
                .args(["-y", "-f"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(derived.status.success(), "{derived:?}");
            let derived = String::from_utf8(derived.stdout).unwrap();
            let key = |line: &str| line.split(' ').take(2).collect::<Vec<_>>().join(" ");
            assert_eq!(key(derived.trim()), key(&public));
            assert!(public.ends_with(" stagely-test"));
        }
    }
}
