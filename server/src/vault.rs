//! The vault: seals and opens secret values for their database row.
//!
//! This is the only code that names a row's associated data ([`SecretAad::for_row`]) or calls
//! the cipher ([`Keyring`]); every operation that stores, reveals, deploys or rotates a secret
//! goes through it, so the rules are written once: a value is bound to its project, secret id and
//! key name, and every failure to open one is the same [`VaultError`], whoever asked.
//!
//! A value a secret had before a change or a delete ([`PreviousRow`]) is sealed again under its
//! own row, so it can never be copied back over the secret's current value and still open.

use crate::crypto::{CryptoError, KeyId, Keyring, SecretAad};
pub use crate::db::RegistryOwner;
use shared::notify::ChannelId;
use shared::{EnvKey, ProjectId, RegistryHost, SecretId, SecretValue, UserId};
use uuid::Uuid;

/// The row a sealed value belongs to.
#[derive(Clone, Copy, Debug)]
pub struct SecretRow<'a> {
    pub project_id: ProjectId,
    pub secret_id: SecretId,
    pub key: &'a EnvKey,
}

/// The row of a value `secret` had before, kept while a container may still run it.
#[derive(Clone, Copy, Debug)]
pub struct PreviousRow<'a> {
    pub secret: SecretRow<'a>,
    /// The previous value's own id.
    pub id: Uuid,
}

/// The row of one version of a secret's value (its history, and what deployments ran).
#[derive(Clone, Copy, Debug)]
pub struct VersionRow<'a> {
    pub secret: SecretRow<'a>,
    /// The version's own id.
    pub id: Uuid,
}

/// Why a stored value could not be opened. The message names the secret by its key name and the
/// problem (a missing master key, a modified row) and never holds any part of the value.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("secret {key}: {source}")]
    Crypto {
        key: EnvKey,
        #[source]
        source: CryptoError,
    },
    #[error("secret {key}: the stored value is not valid UTF-8")]
    NotUtf8 { key: EnvKey },
    #[error("the push webhook of project {project}: {source}")]
    Hook {
        project: ProjectId,
        #[source]
        source: CryptoError,
    },
    #[error("the Git source of project {project}, its {field}: {source}")]
    Source {
        project: ProjectId,
        field: &'static str,
        #[source]
        source: CryptoError,
    },
    #[error("the credential for registry {registry}: {source}")]
    Registry {
        registry: RegistryHost,
        #[source]
        source: CryptoError,
    },
    #[error("notification channel {channel}, its {field}: {source}")]
    Channel {
        channel: ChannelId,
        field: &'static str,
        #[source]
        source: CryptoError,
    },
}

/// Seals and opens secret values under the server's master keys; cheap to clone.
#[derive(Clone, Debug)]
pub struct Vault {
    keyring: std::sync::Arc<Keyring>,
}

impl Vault {
    pub fn new(keyring: Keyring) -> Self {
        Self {
            keyring: std::sync::Arc::new(keyring),
        }
    }

    /// Encrypts `value` for `row` under the current master key.
    pub fn seal(&self, row: SecretRow<'_>, value: &SecretValue) -> Vec<u8> {
        self.keyring.encrypt(value.expose().as_bytes(), &aad(row))
    }

    /// Decrypts a value sealed for `row`, under either master key.
    pub fn open(&self, row: SecretRow<'_>, stored: &[u8]) -> Result<SecretValue, VaultError> {
        self.open_for(&aad(row), row.key, stored)
    }

    /// Decrypts a previous value sealed by [`Vault::retire`].
    pub fn open_previous(
        &self,
        row: PreviousRow<'_>,
        stored: &[u8],
    ) -> Result<SecretValue, VaultError> {
        self.open_for(&previous_aad(row), row.secret.key, stored)
    }

    /// A secret's current value (`stored`, sealed for `current`) sealed again as the previous
    /// value `previous`, under the current key; the plaintext never leaves the vault.
    pub fn retire(
        &self,
        current: SecretRow<'_>,
        stored: &[u8],
        previous: PreviousRow<'_>,
    ) -> Result<Vec<u8>, VaultError> {
        let plaintext = self
            .keyring
            .decrypt(stored, &aad(current))
            .map_err(|source| VaultError::Crypto {
                key: current.key.clone(),
                source,
            })?;
        Ok(self.keyring.encrypt(&plaintext, &previous_aad(previous)))
    }

    /// Encrypts `value` as a previous value of its secret (one a container may still run).
    pub fn seal_previous(&self, row: PreviousRow<'_>, value: &SecretValue) -> Vec<u8> {
        self.keyring
            .encrypt(value.expose().as_bytes(), &previous_aad(row))
    }

    /// Encrypts `value` as the version `row` of its secret.
    pub fn seal_version(&self, row: VersionRow<'_>, value: &SecretValue) -> Vec<u8> {
        self.keyring
            .encrypt(value.expose().as_bytes(), &version_aad(row))
    }

    /// Decrypts a version sealed by [`Vault::seal_version`] or [`Vault::keep_as_version`].
    pub fn open_version(
        &self,
        row: VersionRow<'_>,
        stored: &[u8],
    ) -> Result<SecretValue, VaultError> {
        self.open_for(&version_aad(row), row.secret.key, stored)
    }

    /// A secret's current value (`stored`, sealed for `current`) sealed again as its version
    /// `version`, under the current key; the plaintext never leaves the vault.
    pub fn keep_as_version(
        &self,
        current: SecretRow<'_>,
        stored: &[u8],
        version: VersionRow<'_>,
    ) -> Result<Vec<u8>, VaultError> {
        let plaintext = self
            .keyring
            .decrypt(stored, &aad(current))
            .map_err(|source| VaultError::Crypto {
                key: current.key.clone(),
                source,
            })?;
        Ok(self.keyring.encrypt(&plaintext, &version_aad(version)))
    }

    /// [`Vault::reseal`] for a version.
    pub fn reseal_version(
        &self,
        row: VersionRow<'_>,
        stored: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        self.keyring
            .reencrypt(stored, &version_aad(row))
            .map_err(|source| VaultError::Crypto {
                key: row.secret.key.clone(),
                source,
            })
    }

    fn open_for(
        &self,
        aad: &SecretAad,
        key: &EnvKey,
        stored: &[u8],
    ) -> Result<SecretValue, VaultError> {
        let plaintext = self
            .keyring
            .decrypt(stored, aad)
            .map_err(|source| VaultError::Crypto {
                key: key.clone(),
                source,
            })?;
        let value = std::str::from_utf8(&plaintext)
            .map_err(|_| VaultError::NotUtf8 { key: key.clone() })?;
        Ok(SecretValue::new(value.to_string()))
    }

    /// Whether `stored` is under a key other than the current one (or unreadable).
    pub fn needs_rotation(&self, stored: &[u8]) -> bool {
        self.keyring.needs_rotation(stored)
    }

    /// `stored` opened with whichever key it names and sealed again under the current key.
    pub fn reseal(&self, row: SecretRow<'_>, stored: &[u8]) -> Result<Vec<u8>, VaultError> {
        self.keyring
            .reencrypt(stored, &aad(row))
            .map_err(|source| VaultError::Crypto {
                key: row.key.clone(),
                source,
            })
    }

    /// [`Vault::reseal`] for a previous value.
    pub fn reseal_previous(
        &self,
        row: PreviousRow<'_>,
        stored: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        self.keyring
            .reencrypt(stored, &previous_aad(row))
            .map_err(|source| VaultError::Crypto {
                key: row.secret.key.clone(),
                source,
            })
    }

    /// How many bytes the value sealed in `stored` has, without opening it.
    pub fn value_len(stored: &[u8]) -> usize {
        crate::crypto::plaintext_len(stored)
    }

    /// The id of the key new values are sealed under.
    pub fn current_key_id(&self) -> KeyId {
        self.keyring.current_id()
    }
}

/// A row that holds one credential (not a secret value): a notification channel's URL or token,
/// a push webhook's secret, a Git source's deploy key or token. Each names its own associated
/// data, which never meets a secret's (a secret's first field is a bare project UUID; these
/// start with their kind), and the error that names it without its value.
pub trait CredentialRow: Copy {
    fn aad(self) -> SecretAad;
    fn error(self, source: CryptoError) -> VaultError;
}

/// Credentials, sealed like secret values and bound to their row.
impl Vault {
    pub fn seal_credential(&self, row: impl CredentialRow, value: &SecretValue) -> Vec<u8> {
        self.keyring.encrypt(value.expose().as_bytes(), &row.aad())
    }

    pub fn open_credential(
        &self,
        row: impl CredentialRow,
        stored: &[u8],
    ) -> Result<SecretValue, VaultError> {
        let plaintext = self
            .keyring
            .decrypt(stored, &row.aad())
            .map_err(|source| row.error(source))?;
        let value =
            String::from_utf8(plaintext.to_vec()).map_err(|_| row.error(CryptoError::Forged))?;
        Ok(SecretValue::new(value))
    }

    /// [`Vault::reseal`] for a credential.
    pub fn reseal_credential(
        &self,
        row: impl CredentialRow,
        stored: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        self.keyring
            .reencrypt(stored, &row.aad())
            .map_err(|source| row.error(source))
    }
}

/// The row a notification channel's credential belongs to: its URL (Slack and Discord URLs
/// embed a token), a webhook's signing secret or an ntfy token.
#[derive(Clone, Copy, Debug)]
pub struct ChannelRow {
    pub owner: UserId,
    pub channel: ChannelId,
    pub field: ChannelField,
}

/// Which credential of a channel a sealed value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelField {
    Url,
    SigningSecret,
    Token,
}

impl ChannelField {
    fn as_str(self) -> &'static str {
        match self {
            Self::Url => "url",
            Self::SigningSecret => "signing_secret",
            Self::Token => "token",
        }
    }
}

impl CredentialRow for ChannelRow {
    /// `notification-channel/<owner id>`, the channel id, and the field.
    fn aad(self) -> SecretAad {
        SecretAad::new(
            format!("notification-channel/{}", self.owner.0.hyphenated()),
            self.channel.0.hyphenated().to_string(),
            self.field.as_str(),
        )
    }

    fn error(self, source: CryptoError) -> VaultError {
        VaultError::Channel {
            channel: self.channel,
            field: self.field.as_str(),
            source,
        }
    }
}

/// The row a push webhook's secret belongs to: its project and the hook's own id, so a sealed
/// secret copied to another project's (or another hook's) row does not open.
#[derive(Clone, Copy, Debug)]
pub struct HookRow<'a> {
    pub project_id: ProjectId,
    pub hook_id: &'a str,
}

impl CredentialRow for HookRow<'_> {
    /// `webhook/<project id>`, the hook id, and `secret`.
    fn aad(self) -> SecretAad {
        SecretAad::new(
            format!("webhook/{}", self.project_id.0.hyphenated()),
            self.hook_id,
            "secret",
        )
    }

    fn error(self, source: CryptoError) -> VaultError {
        VaultError::Hook {
            project: self.project_id,
            source,
        }
    }
}

/// The row a Git source's credential belongs to: its project and which credential.
#[derive(Clone, Copy, Debug)]
pub struct SourceRow {
    pub project_id: ProjectId,
    pub field: SourceField,
}

/// Which credential of a Git source a sealed value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceField {
    Token,
    SshKey,
}

impl SourceField {
    fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::SshKey => "ssh_key",
        }
    }
}

impl CredentialRow for SourceRow {
    /// `project-source/<project id>`, `git`, and the field.
    fn aad(self) -> SecretAad {
        SecretAad::new(
            format!("project-source/{}", self.project_id.0.hyphenated()),
            "git",
            self.field.as_str(),
        )
    }

    fn error(self, source: CryptoError) -> VaultError {
        VaultError::Source {
            project: self.project_id,
            field: self.field.as_str(),
            source,
        }
    }
}

/// The row a registry credential's password belongs to: set for an agent or for a project.
#[derive(Clone, Copy, Debug)]
pub struct RegistryRow<'a> {
    pub owner: RegistryOwner,
    /// The credential's own id.
    pub id: Uuid,
    pub registry: &'a RegistryHost,
}

impl CredentialRow for RegistryRow<'_> {
    /// `registry-credential/agent/<agent id>` (or `…/project/<project id>`), the credential's
    /// id, and the registry.
    fn aad(self) -> SecretAad {
        let owner = match self.owner {
            RegistryOwner::Agent(agent) => {
                format!("registry-credential/agent/{}", agent.0.hyphenated())
            }
            RegistryOwner::Project(project) => {
                format!("registry-credential/project/{}", project.0.hyphenated())
            }
        };
        SecretAad::new(
            owner,
            self.id.hyphenated().to_string(),
            self.registry.as_str(),
        )
    }

    fn error(self, source: CryptoError) -> VaultError {
        VaultError::Registry {
            registry: self.registry.clone(),
            source,
        }
    }
}

fn aad(row: SecretRow<'_>) -> SecretAad {
    SecretAad::for_row(row.project_id, row.secret_id, row.key)
}

/// The secret's row with `<secret id>/previous/<previous id>` as its id: no secret has that id
/// (ids are UUIDs), and the length-prefixed encoding keeps the fields apart.
fn previous_aad(row: PreviousRow<'_>) -> SecretAad {
    let secret = row.secret;
    SecretAad::new(
        secret.project_id.0.hyphenated().to_string(),
        format!(
            "{}/previous/{}",
            secret.secret_id.0.hyphenated(),
            row.id.hyphenated()
        ),
        secret.key.as_str(),
    )
}

/// The secret's row with `<secret id>/version/<version id>` as its id (see [`previous_aad`]).
fn version_aad(row: VersionRow<'_>) -> SecretAad {
    let secret = row.secret;
    SecretAad::new(
        secret.project_id.0.hyphenated().to_string(),
        format!(
            "{}/version/{}",
            secret.secret_id.0.hyphenated(),
            row.id.hyphenated()
        ),
        secret.key.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use shared::AgentId;

    fn row(key: &EnvKey) -> SecretRow<'_> {
        SecretRow {
            project_id: ProjectId(uuid::Uuid::new_v4()),
            secret_id: SecretId(uuid::Uuid::new_v4()),
            key,
        }
    }

    #[test]
    fn a_registry_password_opens_in_its_own_row_only() {
        let vault = Vault::new(Keyring::new(MasterKey::generate(), None));
        let registry = RegistryHost::parse("ghcr.io").unwrap();
        let project = ProjectId(uuid::Uuid::new_v4());
        let row = RegistryRow {
            owner: RegistryOwner::Project(project),
            id: uuid::Uuid::new_v4(),
            registry: &registry,
        };
        let sealed = vault.seal_credential(row, &SecretValue::new("hunter2"));
        assert_eq!(
            vault.open_credential(row, &sealed).unwrap().expose(),
            "hunter2"
        );
        let other = RegistryHost::parse("docker.io").unwrap();
        for moved in [
            RegistryRow {
                registry: &other,
                ..row
            },
            RegistryRow {
                owner: RegistryOwner::Agent(AgentId(project.0)),
                ..row
            },
            RegistryRow {
                id: uuid::Uuid::new_v4(),
                ..row
            },
        ] {
            let error = vault
                .open_credential(moved, &sealed)
                .unwrap_err()
                .to_string();
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn a_value_opens_in_its_own_row_only() {
        let vault = Vault::new(Keyring::new(MasterKey::generate(), None));
        let key = EnvKey::parse("DB_PASSWORD").unwrap();
        let here = row(&key);
        let sealed = vault.seal(here, &SecretValue::new("hunter2"));
        assert_eq!(vault.open(here, &sealed).unwrap().expose(), "hunter2");
        let error = vault.open(row(&key), &sealed).unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("secret DB_PASSWORD: "), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn a_sealed_values_length_in_bytes_is_told_without_opening_it() {
        let vault = Vault::new(Keyring::new(MasterKey::generate(), None));
        let key = EnvKey::parse("TOKEN").unwrap();
        for value in ["", "hunter2", "éèêëà", &"x".repeat(64 * 1024)] {
            let sealed = vault.seal(row(&key), &SecretValue::new(value));
            assert_eq!(Vault::value_len(&sealed), value.len(), "{value:.10}");
        }
        assert_eq!(Vault::value_len(b"short"), 0);
    }

    #[test]
    fn a_previous_value_opens_in_its_own_row_only() {
        let vault = Vault::new(Keyring::new(MasterKey::generate(), None));
        let key = EnvKey::parse("DB_PASSWORD").unwrap();
        let current = row(&key);
        let sealed = vault.seal(current, &SecretValue::new("hunter2"));
        let previous = PreviousRow {
            secret: current,
            id: uuid::Uuid::new_v4(),
        };
        let retired = vault.retire(current, &sealed, previous).unwrap();
        assert_eq!(
            vault.open_previous(previous, &retired).unwrap().expose(),
            "hunter2"
        );
        // Copied back over the secret's value, or to another previous value, it does not open.
        assert!(vault.open(current, &retired).is_err());
        let other = PreviousRow {
            id: uuid::Uuid::new_v4(),
            ..previous
        };
        assert!(vault.open_previous(other, &retired).is_err());
        assert!(vault.open_previous(previous, &sealed).is_err());
    }

    #[test]
    fn a_version_opens_in_its_own_row_only() {
        let vault = Vault::new(Keyring::new(MasterKey::generate(), None));
        let key = EnvKey::parse("DB_PASSWORD").unwrap();
        let current = row(&key);
        let sealed = vault.seal(current, &SecretValue::new("hunter2"));
        let version = VersionRow {
            secret: current,
            id: uuid::Uuid::new_v4(),
        };
        let kept = vault.keep_as_version(current, &sealed, version).unwrap();
        assert_eq!(
            vault.open_version(version, &kept).unwrap().expose(),
            "hunter2"
        );
        assert!(vault.open(current, &kept).is_err());
        let previous = PreviousRow {
            secret: current,
            id: version.id,
        };
        assert!(
            vault.open_previous(previous, &kept).is_err(),
            "a version is not a previous value of the same id"
        );
        let other = VersionRow {
            id: uuid::Uuid::new_v4(),
            ..version
        };
        assert!(vault.open_version(other, &kept).is_err());
    }

    #[test]
    fn a_value_under_the_previous_key_is_resealed_under_the_current_one() {
        let old = MasterKey::generate();
        let key = EnvKey::parse("TOKEN").unwrap();
        let here = row(&key);
        let sealed = Vault::new(Keyring::new(old.clone(), None)).seal(here, &SecretValue::new("v"));
        let vault = Vault::new(Keyring::new(MasterKey::generate(), Some(old)));
        assert!(vault.needs_rotation(&sealed));
        let resealed = vault.reseal(here, &sealed).unwrap();
        assert!(!vault.needs_rotation(&resealed));
        assert_eq!(vault.open(here, &resealed).unwrap().expose(), "v");
    }
}
