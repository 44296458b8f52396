//! Secrets at rest: the master key, the keyring that encrypts with it, and password hashes.
//!
//! The master key comes from `APP_MASTER_KEY` (base64 of 32 random bytes). In the embedded SQLite
//! mode a missing key is generated once into the data directory with mode 0600, so a first start
//! needs no set-up; with PostgreSQL, where several replicas must share it, it has to be given.
//!
//! A secret is stored as `[version = 1][key id: 4][nonce: 12][ciphertext][tag: 16]`, sealed with
//! AES-256-GCM under a fresh random nonce. The associated data binds the value to its row (project,
//! secret id, key name), so a value copied into another row does not decrypt. The key id names the
//! master key a value was written under, which lets `APP_MASTER_KEY_PREVIOUS` keep old values
//! readable while they are re-encrypted under a new key, and lets an error say which key is missing
//! without revealing anything about it.
//!
//! Local account passwords are hashed with Argon2id into PHC strings.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::{engine::general_purpose::STANDARD, Engine};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use shared::{EnvKey, ProjectId, SecretId};
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// 32 bytes of key material, wiped from memory when dropped and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

/// Why the master key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{source_name} is not a valid master key: {reason}. Generate one with `openssl rand -base64 32`")]
    Malformed {
        source_name: String,
        reason: &'static str,
    },
    #[error("APP_MASTER_KEY must be set when DATABASE_URL points to PostgreSQL, so that every server replica shares it")]
    Required,
    #[error("could not read or create the master key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the key came from, for the one line the server logs about it.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    Environment,
    File(PathBuf),
    Generated(PathBuf),
}

impl MasterKey {
    /// Decodes base64 of exactly 32 bytes; `source_name` names the origin in the error.
    pub fn parse(encoded: &str, source_name: &str) -> Result<Self, KeyError> {
        let malformed = |reason| KeyError::Malformed {
            source_name: source_name.to_string(),
            reason,
        };
        let mut bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| malformed("it is not base64"))?;
        let result = <[u8; 32]>::try_from(bytes.as_slice())
            .map(Self)
            .map_err(|_| malformed("it must decode to exactly 32 bytes"));
        bytes.zeroize();
        result
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The raw key, for the cipher.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key's public fingerprint.
    pub fn id(&self) -> KeyId {
        KeyId::of(self)
    }

    /// Resolves the key for a server: the configured one, else (embedded mode only) the one in
    /// `data_dir/master.key`, created on first use.
    pub fn resolve(
        configured: Option<&str>,
        data_dir: &Path,
        embedded: bool,
    ) -> Result<(Self, KeyOrigin), KeyError> {
        if let Some(encoded) = configured {
            return Ok((
                Self::parse(encoded, "APP_MASTER_KEY")?,
                KeyOrigin::Environment,
            ));
        }
        if !embedded {
            return Err(KeyError::Required);
        }
        let path = data_dir.join("master.key");
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        // The file's text and the encoded new key are wiped once used, like the key itself.
        match std::fs::read_to_string(&path).map(Zeroizing::new) {
            Ok(encoded) => {
                let key = Self::parse(&encoded, &path.display().to_string())?;
                Ok((key, KeyOrigin::File(path)))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                // By reference: `key.0` by value would leave a copy of the key on the stack.
                let encoded = Zeroizing::new(STANDARD.encode(key.as_bytes()));
                write_private(&path, encoded.as_bytes()).map_err(io)?;
                Ok((key, KeyOrigin::Generated(path)))
            }
            Err(error) => Err(io(error)),
        }
    }
}

/// Names a master key without revealing it: the first 4 bytes of SHA-256 of the key, shown as 8
/// hex digits. An operator can compute it from the base64 key with
/// `base64 -d | sha256sum | cut -c1-8`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 4]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &MasterKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        Self([digest[0], digest[1], digest[2], digest[3]])
    }

    /// The 4 bytes, as written into every stored value.
    pub fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why a secret could not be decrypted or a password hashed. No message ever holds plaintext or
/// key material; key ids are safe to show.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the stored secret is too short to be an encrypted value: it was truncated or never encrypted")]
    Truncated,
    #[error("the stored secret has format version {0}, which this Stagely cannot read: it was written by a newer release or is not an encrypted value")]
    UnknownVersion(u8),
    #[error("the secret was encrypted under master key {key_id}, which is neither APP_MASTER_KEY ({current}) nor APP_MASTER_KEY_PREVIOUS ({})", describe_previous(.previous))]
    UnknownKey {
        /// The key the value was written under.
        key_id: KeyId,
        /// `APP_MASTER_KEY`.
        current: KeyId,
        /// `APP_MASTER_KEY_PREVIOUS`, if set.
        previous: Option<KeyId>,
    },
    #[error("the secret does not decrypt: it was modified or copied from another row")]
    Forged,
    #[error("could not hash the password: {0}")]
    PasswordHash(argon2::password_hash::Error),
}

fn describe_previous(previous: &Option<KeyId>) -> String {
    previous.map_or_else(|| "not set".to_string(), |id| id.to_string())
}

/// The row a secret belongs to. It is authenticated with the ciphertext, so a value only decrypts
/// in the row it was written for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretAad {
    pub project_id: String,
    pub secret_id: String,
    /// The environment variable name.
    pub key: String,
}

impl SecretAad {
    pub fn new(
        project_id: impl Into<String>,
        secret_id: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        Self {
            project_id: project_id.into(),
            secret_id: secret_id.into(),
            key: key.into(),
        }
    }

    /// The row of a stored secret. The ids are written as lowercase hyphenated UUIDs, spelled out
    /// here so that a change to their `Display` can never make stored values unreadable.
    pub fn for_row(project_id: ProjectId, secret_id: SecretId, key: &EnvKey) -> Self {
        Self::new(
            project_id.0.hyphenated().to_string(),
            secret_id.0.hyphenated().to_string(),
            key.as_str(),
        )
    }

    /// `stagely-secret-v1\0`, the stored value's header, then each field as a big-endian `u64`
    /// length and its bytes: no two different rows encode the same, whatever the fields contain.
    fn encode(&self, header: &[u8; HEADER_LEN]) -> Vec<u8> {
        let fields = [&self.project_id, &self.secret_id, &self.key];
        let capacity = AAD_DOMAIN.len()
            + HEADER_LEN
            + fields.iter().map(|field| 8 + field.len()).sum::<usize>();
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(AAD_DOMAIN);
        out.extend_from_slice(header);
        for field in fields {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

const AAD_DOMAIN: &[u8] = b"stagely-secret-v1\0";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// The length of an encrypted empty secret.
const MIN_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// How many bytes of plaintext a stored value holds, told by its length alone (sealing adds a
/// fixed header, nonce and tag), so sizes can be budgeted without opening anything.
pub fn plaintext_len(stored: &[u8]) -> usize {
    stored.len().saturating_sub(MIN_LEN)
}

/// A stored value split into its parts; nothing is checked but the lengths and the version.
struct Sealed<'a> {
    header: &'a [u8; HEADER_LEN],
    key_id: KeyId,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

impl<'a> Sealed<'a> {
    fn parse(stored: &'a [u8]) -> Result<Self, CryptoError> {
        match stored.first() {
            None => return Err(CryptoError::Truncated),
            Some(&VERSION) => {}
            Some(&other) => return Err(CryptoError::UnknownVersion(other)),
        }
        if stored.len() < MIN_LEN {
            return Err(CryptoError::Truncated);
        }
        let (header, rest) = stored
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(CryptoError::Truncated)?;
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let [_version, id @ ..] = *header;
        Ok(Self {
            header,
            key_id: KeyId(id),
            nonce,
            ciphertext,
            tag,
        })
    }
}

/// The master key that encrypts, and the one before it, still accepted for reading while values
/// are re-encrypted (`APP_MASTER_KEY_PREVIOUS`).
#[derive(Clone)]
pub struct Keyring {
    current: MasterKey,
    previous: Option<MasterKey>,
    current_id: KeyId,
    previous_id: Option<KeyId>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current_id)
            .field("previous", &self.previous_id)
            .finish()
    }
}

impl Keyring {
    pub fn new(current: MasterKey, previous: Option<MasterKey>) -> Self {
        Self {
            current_id: current.id(),
            previous_id: previous.as_ref().map(MasterKey::id),
            current,
            previous,
        }
    }

    /// The id of the key new values are written under.
    pub fn current_id(&self) -> KeyId {
        self.current_id
    }

    /// The id of the previous key, if one is set.
    pub fn previous_id(&self) -> Option<KeyId> {
        self.previous_id
    }

    /// Seals `plaintext` for the row `aad` under the current key, with a fresh random nonce.
    pub fn encrypt(&self, plaintext: &[u8], aad: &SecretAad) -> Vec<u8> {
        let mut header = [VERSION, 0, 0, 0, 0];
        header[1..].copy_from_slice(self.current_id.as_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);

        let mut out = Vec::with_capacity(MIN_LEN + plaintext.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = cipher(&self.current)
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &aad.encode(&header),
                &mut out[HEADER_LEN + NONCE_LEN..],
            )
            // AES-GCM refuses only a message over 64 GiB, which no secret comes near.
            .expect("a secret is far below AES-GCM's 64 GiB limit");
        out.extend_from_slice(&tag);
        out
    }

    /// Opens a value written by [`Keyring::encrypt`] for the same row, with whichever of the two
    /// keys it names. A value that was altered or belongs to another row is refused, never
    /// returned as garbage.
    pub fn decrypt(
        &self,
        stored: &[u8],
        aad: &SecretAad,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let sealed = Sealed::parse(stored)?;
        let key = self.key_for(sealed.key_id)?;
        let mut plaintext = Zeroizing::new(sealed.ciphertext.to_vec());
        cipher(key)
            .decrypt_in_place_detached(
                Nonce::from_slice(sealed.nonce),
                &aad.encode(sealed.header),
                &mut plaintext,
                Tag::from_slice(sealed.tag),
            )
            .map_err(|_| CryptoError::Forged)?;
        Ok(plaintext)
    }

    /// Whether `stored` was written under a key other than the current one. A value that cannot
    /// be parsed also says `true`, so that [`Keyring::reencrypt`] reports it instead of it being
    /// skipped silently.
    pub fn needs_rotation(&self, stored: &[u8]) -> bool {
        match Sealed::parse(stored) {
            Ok(sealed) => sealed.key_id != self.current_id,
            Err(_) => true,
        }
    }

    /// Decrypts with whichever key `stored` names and encrypts again under the current key.
    pub fn reencrypt(&self, stored: &[u8], aad: &SecretAad) -> Result<Vec<u8>, CryptoError> {
        let plaintext = self.decrypt(stored, aad)?;
        Ok(self.encrypt(&plaintext, aad))
    }

    fn key_for(&self, key_id: KeyId) -> Result<&MasterKey, CryptoError> {
        if key_id == self.current_id {
            return Ok(&self.current);
        }
        match (&self.previous, self.previous_id) {
            (Some(previous), Some(previous_id)) if key_id == previous_id => Ok(previous),
            _ => Err(CryptoError::UnknownKey {
                key_id,
                current: self.current_id,
                previous: self.previous_id,
            }),
        }
    }
}

fn cipher(key: &MasterKey) -> Aes256Gcm {
    Aes256Gcm::new(key.as_bytes().into())
}

/// Hashes a local account's password with Argon2id (default parameters, random salt) into a PHC
/// string such as `$argon2id$v=19$m=19456,t=2,p=1$…`. It takes tens of milliseconds of CPU: call it
/// from `spawn_blocking` in async code.
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(CryptoError::PasswordHash)
}

/// Whether `password` matches the PHC string `phc`, with the parameters stored in it. A malformed
/// PHC string matches nothing.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Creates `path` with mode 0600 (failing if it exists, so a key is never overwritten).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn embedded_mode_generates_a_private_key_once_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) = MasterKey::resolve(None, dir.path(), true).unwrap();
        let path = dir.path().join("master.key");
        assert_eq!(origin, KeyOrigin::Generated(path.clone()));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let (second, origin) = MasterKey::resolve(None, dir.path(), true).unwrap();
        assert_eq!(origin, KeyOrigin::File(path));
        assert_eq!(first.as_bytes(), second.as_bytes());
    }

    #[test]
    fn malformed_keys_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let not_base64 = MasterKey::resolve(Some("not base64!"), dir.path(), true).unwrap_err();
        assert!(
            not_base64.to_string().contains("not base64"),
            "{not_base64}"
        );
        let short = MasterKey::resolve(Some("c2hvcnQ="), dir.path(), true).unwrap_err();
        assert!(short.to_string().contains("32 bytes"), "{short}");
        assert!(
            !dir.path().join("master.key").exists(),
            "nothing written on error"
        );
    }

    #[test]
    fn postgres_mode_requires_an_explicit_key() {
        let dir = tempfile::tempdir().unwrap();
        let error = MasterKey::resolve(None, dir.path(), false).unwrap_err();
        assert!(matches!(error, KeyError::Required));
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        assert_eq!(format!("{:?}", MasterKey::generate()), "MasterKey(***)");
    }

    fn key(byte: u8) -> MasterKey {
        MasterKey::parse(&STANDARD.encode([byte; 32]), "test").unwrap()
    }

    fn row() -> SecretAad {
        SecretAad::new(
            "0b6f3c1e-5d2a-4e8f-9a7b-1c2d3e4f5a6b",
            "7f8e9d0c-1b2a-4394-8576-a1b2c3d4e5f6",
            "DATABASE_PASSWORD",
        )
    }

    #[test]
    fn a_key_id_is_the_first_four_bytes_of_the_sha256_of_the_key() {
        // `head -c 32 /dev/zero | sha256sum` starts with 66687aad.
        let id = key(0).id();
        assert_eq!(id.to_string(), "66687aad");
        assert_eq!(format!("{id:?}"), "KeyId(66687aad)");
        assert_eq!(id.as_bytes(), &[0x66, 0x68, 0x7a, 0xad]);
        assert_eq!(Keyring::new(key(0), None).current_id(), id);
    }

    #[test]
    fn a_secret_survives_a_round_trip() {
        let keyring = Keyring::new(MasterKey::generate(), None);
        let large: Vec<u8> = (0..=255).cycle().take(64 * 1024).collect();
        for plaintext in [&b""[..], b"hunter2", "pässwörd ✓".as_bytes(), &large] {
            let stored = keyring.encrypt(plaintext, &row());
            assert_eq!(
                keyring.decrypt(&stored, &row()).unwrap().as_slice(),
                plaintext
            );
        }
    }

    fn from_hex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn a_value_sealed_by_an_independent_implementation_decrypts() {
        // Made with Python's `cryptography` AESGCM from the documented layout and associated data
        // (key = 32 × 0x07, nonce = 00..0b), so the stored format cannot drift unnoticed.
        let stored = from_hex(
            "014bb06f8e000102030405060708090a0b70f48704787bebe0832b56692e34dbdda5e2276725b0d0",
        );
        let keyring = Keyring::new(key(7), None);
        assert_eq!(keyring.current_id().to_string(), "4bb06f8e");
        assert_eq!(
            keyring.decrypt(&stored, &row()).unwrap().as_slice(),
            b"hunter2"
        );
        assert!(!keyring.needs_rotation(&stored));
    }

    #[test]
    fn a_row_is_named_by_its_lowercase_hyphenated_ids_and_key_name() {
        let project_id: ProjectId = "0B6F3C1E-5D2A-4E8F-9A7B-1C2D3E4F5A6B".parse().unwrap();
        let secret_id: SecretId = "7f8e9d0c1b2a43948576a1b2c3d4e5f6".parse().unwrap();
        let key = EnvKey::parse("DATABASE_PASSWORD").unwrap();
        assert_eq!(SecretAad::for_row(project_id, secret_id, &key), row());
    }

    #[test]
    fn a_stored_value_is_version_key_id_nonce_ciphertext_and_tag() {
        let keyring = Keyring::new(key(1), None);
        let stored = keyring.encrypt(b"hunter2", &row());
        assert_eq!(stored[0], 1);
        assert_eq!(&stored[1..5], keyring.current_id().as_bytes());
        assert_eq!(stored.len(), 1 + 4 + 12 + b"hunter2".len() + 16);
        assert!(
            !stored.windows(7).any(|window| window == b"hunter2"),
            "the plaintext is not stored in the clear"
        );
    }

    #[test]
    fn every_encryption_of_the_same_plaintext_differs() {
        let keyring = Keyring::new(key(1), None);
        let stored: Vec<Vec<u8>> = (0..16).map(|_| keyring.encrypt(b"same", &row())).collect();
        let nonces: std::collections::HashSet<&[u8]> =
            stored.iter().map(|value| &value[5..17]).collect();
        assert_eq!(nonces.len(), stored.len(), "a fresh nonce every time");
        let values: std::collections::HashSet<&Vec<u8>> = stored.iter().collect();
        assert_eq!(values.len(), stored.len());
    }

    #[test]
    fn a_value_moved_to_another_row_is_forged() {
        let keyring = Keyring::new(key(1), None);
        let stored = keyring.encrypt(b"hunter2", &row());
        let other_rows = [
            (
                "another project",
                SecretAad {
                    project_id: "5a5a5a5a-0000-4000-8000-000000000000".into(),
                    ..row()
                },
            ),
            (
                "another secret id",
                SecretAad {
                    secret_id: "6b6b6b6b-0000-4000-8000-000000000000".into(),
                    ..row()
                },
            ),
            (
                "a renamed key",
                SecretAad {
                    key: "DATABASE_PASSWORD_OLD".into(),
                    ..row()
                },
            ),
        ];
        for (case, aad) in other_rows {
            let result = keyring.decrypt(&stored, &aad);
            assert!(
                matches!(result, Err(CryptoError::Forged)),
                "{case}: {result:?}"
            );
        }
    }

    #[test]
    fn moving_bytes_between_row_fields_changes_the_associated_data() {
        let keyring = Keyring::new(key(1), None);
        let written = SecretAad::new("ab", "c", "D");
        let stored = keyring.encrypt(b"hunter2", &written);
        for shifted in [
            SecretAad::new("a", "bc", "D"),
            SecretAad::new("abc", "", "D"),
            SecretAad::new("ab", "", "cD"),
            SecretAad::new("ab\0", "c", "D"),
        ] {
            assert_ne!(written.encode(&[0; 5]), shifted.encode(&[0; 5]));
            let result = keyring.decrypt(&stored, &shifted);
            assert!(
                matches!(result, Err(CryptoError::Forged)),
                "{shifted:?}: {result:?}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_refused() {
        let keyring = Keyring::new(key(1), Some(key(2)));
        let stored = keyring.encrypt(b"hunter2", &row());
        for bit in 0..stored.len() * 8 {
            let mut tampered = stored.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            let result = keyring.decrypt(&tampered, &row());
            if bit / 8 < HEADER_LEN {
                // The version or key id changed: no key opens it.
                assert!(
                    matches!(
                        result,
                        Err(CryptoError::UnknownVersion(_) | CryptoError::UnknownKey { .. })
                    ),
                    "bit {bit}: {result:?}"
                );
            } else {
                assert!(
                    matches!(result, Err(CryptoError::Forged)),
                    "bit {bit}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn a_key_id_rewritten_to_the_other_key_is_forged() {
        let keyring = Keyring::new(key(1), Some(key(2)));
        let mut stored = keyring.encrypt(b"hunter2", &row());
        stored[1..5].copy_from_slice(key(2).id().as_bytes());
        let result = keyring.decrypt(&stored, &row());
        assert!(matches!(result, Err(CryptoError::Forged)), "{result:?}");
    }

    #[test]
    fn a_value_under_the_previous_key_decrypts_and_is_rotated_to_the_current_key() {
        let old = Keyring::new(key(1), None);
        let stored = old.encrypt(b"hunter2", &row());
        assert!(!old.needs_rotation(&stored));

        let rotated = Keyring::new(key(2), Some(key(1)));
        assert_eq!(rotated.previous_id(), Some(key(1).id()));
        assert_eq!(
            rotated.decrypt(&stored, &row()).unwrap().as_slice(),
            b"hunter2"
        );
        assert!(rotated.needs_rotation(&stored));

        let reencrypted = rotated.reencrypt(&stored, &row()).unwrap();
        assert!(!rotated.needs_rotation(&reencrypted));
        assert_eq!(&reencrypted[1..5], rotated.current_id().as_bytes());

        let new_only = Keyring::new(key(2), None);
        assert_eq!(
            new_only.decrypt(&reencrypted, &row()).unwrap().as_slice(),
            b"hunter2",
            "the previous key is no longer needed"
        );
    }

    #[test]
    fn reencrypting_a_value_from_another_row_is_refused() {
        let keyring = Keyring::new(key(2), Some(key(1)));
        let stored = Keyring::new(key(1), None).encrypt(b"hunter2", &row());
        let elsewhere = SecretAad {
            key: "OTHER".into(),
            ..row()
        };
        let result = keyring.reencrypt(&stored, &elsewhere);
        assert!(matches!(result, Err(CryptoError::Forged)), "{result:?}");
    }

    #[test]
    fn a_value_under_an_unknown_key_names_both_ids() {
        let stored = Keyring::new(key(1), None).encrypt(b"hunter2", &row());
        let (written, current, previous) = (key(1).id(), key(2).id(), key(3).id());

        let error = Keyring::new(key(2), None)
            .decrypt(&stored, &row())
            .unwrap_err();
        assert!(
            matches!(error, CryptoError::UnknownKey { key_id, current: c, previous: None } if key_id == written && c == current),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("the secret was encrypted under master key {written}, which is neither APP_MASTER_KEY ({current}) nor APP_MASTER_KEY_PREVIOUS (not set)")
        );

        let error = Keyring::new(key(2), Some(key(3)))
            .decrypt(&stored, &row())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("the secret was encrypted under master key {written}, which is neither APP_MASTER_KEY ({current}) nor APP_MASTER_KEY_PREVIOUS ({previous})")
        );
    }

    #[test]
    fn truncated_or_unknown_input_is_refused_and_flagged_for_rotation() {
        let keyring = Keyring::new(key(1), None);
        let stored = keyring.encrypt(b"", &row());
        assert_eq!(stored.len(), MIN_LEN);
        for len in 0..MIN_LEN {
            let result = keyring.decrypt(&stored[..len], &row());
            assert!(
                matches!(result, Err(CryptoError::Truncated)),
                "{len} bytes: {result:?}"
            );
            assert!(keyring.needs_rotation(&stored[..len]));
        }

        let mut future = keyring.encrypt(b"hunter2", &row());
        future[0] = 2;
        let error = keyring.decrypt(&future, &row()).unwrap_err();
        assert!(matches!(error, CryptoError::UnknownVersion(2)), "{error:?}");
        assert!(error.to_string().contains("version 2"), "{error}");
        assert!(keyring.needs_rotation(&future));
    }

    #[test]
    fn errors_say_what_to_do_without_revealing_the_secret() {
        let keyring = Keyring::new(key(1), None);
        let stored = keyring.encrypt(b"hunter2", &row());
        let mut flipped = stored.clone();
        flipped[20] ^= 1;
        let errors = [
            keyring.decrypt(&stored[..10], &row()).unwrap_err(),
            keyring.decrypt(&flipped, &row()).unwrap_err(),
            Keyring::new(key(2), None)
                .decrypt(&stored, &row())
                .unwrap_err(),
        ];
        let key_base64 = STANDARD.encode(key(1).as_bytes());
        for error in errors {
            let message = format!("{error} {error:?}");
            assert!(!message.contains("hunter2"), "{message}");
            assert!(!message.contains(&key_base64), "{message}");
        }
        assert_eq!(
            keyring.decrypt(&flipped, &row()).unwrap_err().to_string(),
            "the secret does not decrypt: it was modified or copied from another row"
        );
    }

    #[test]
    fn the_keyring_debug_shows_key_ids_but_no_key_material() {
        let (current, previous) = (MasterKey::generate(), MasterKey::generate());
        let keyring = Keyring::new(current.clone(), Some(previous.clone()));
        let debug = format!("{keyring:?}");
        assert_eq!(
            debug,
            format!(
                "Keyring {{ current: KeyId({}), previous: Some(KeyId({})) }}",
                current.id(),
                previous.id()
            )
        );
        for key in [&current, &previous] {
            let hex: String = key.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
            assert!(!debug.contains(&hex), "{debug}");
            assert!(!debug.contains(&STANDARD.encode(key.as_bytes())), "{debug}");
            assert!(!debug.contains(&format!("{:?}", key.as_bytes())), "{debug}");
        }
    }

    #[test]
    fn a_password_hash_verifies_and_a_wrong_password_does_not() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(!phc.contains("correct horse"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapler", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn the_same_password_hashes_differently_each_time() {
        let (first, second) = (
            hash_password("hunter2").unwrap(),
            hash_password("hunter2").unwrap(),
        );
        assert_ne!(first, second, "a random salt every time");
    }

    #[test]
    fn a_malformed_password_hash_matches_nothing() {
        for phc in [
            "",
            "hunter2",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$bad",
        ] {
            assert!(!verify_password("hunter2", phc), "{phc:?}");
            assert!(!verify_password("", phc), "{phc:?}");
        }
    }
}
