//! The master key that encrypts secrets at rest.
//!
//! It comes from `APP_MASTER_KEY` (base64 of 32 random bytes). In the embedded SQLite mode a
//! missing key is generated once into the data directory with mode 0600, so a first start needs
//! no set-up; with PostgreSQL, where several replicas must share it, it has to be given.

use base64::{engine::general_purpose::STANDARD, Engine};
use rand::RngCore;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, ZeroizeOnDrop};

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
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The raw key, for the cipher.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
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
        match std::fs::read_to_string(&path) {
            Ok(encoded) => {
                let key = Self::parse(&encoded, &path.display().to_string())?;
                Ok((key, KeyOrigin::File(path)))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                write_private(&path, STANDARD.encode(key.0).as_bytes()).map_err(io)?;
                Ok((key, KeyOrigin::Generated(path)))
            }
            Err(error) => Err(io(error)),
        }
    }
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
}
