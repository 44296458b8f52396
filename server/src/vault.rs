//! The vault: seals and opens secret values for their database row.
//!
//! This is the only code that names a row's associated data ([`SecretAad::for_row`]) or calls
//! the cipher ([`Keyring`]); every operation that stores, reveals, deploys or rotates a secret
//! goes through it, so the rules are written once: a value is bound to its project, secret id and
//! key name, and every failure to open one is the same [`VaultError`], whoever asked.

use crate::crypto::{CryptoError, KeyId, Keyring, SecretAad};
use shared::{EnvKey, ProjectId, SecretId, SecretValue};

/// The row a sealed value belongs to.
#[derive(Clone, Copy, Debug)]
pub struct SecretRow<'a> {
    pub project_id: ProjectId,
    pub secret_id: SecretId,
    pub key: &'a EnvKey,
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
        let plaintext =
            self.keyring
                .decrypt(stored, &aad(row))
                .map_err(|source| VaultError::Crypto {
                    key: row.key.clone(),
                    source,
                })?;
        let value = std::str::from_utf8(&plaintext).map_err(|_| VaultError::NotUtf8 {
            key: row.key.clone(),
        })?;
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

    /// The id of the key new values are sealed under.
    pub fn current_key_id(&self) -> KeyId {
        self.keyring.current_id()
    }
}

fn aad(row: SecretRow<'_>) -> SecretAad {
    SecretAad::for_row(row.project_id, row.secret_id, row.key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn row(key: &EnvKey) -> SecretRow<'_> {
        SecretRow {
            project_id: ProjectId(uuid::Uuid::new_v4()),
            secret_id: SecretId(uuid::Uuid::new_v4()),
            key,
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
