//! Registry credentials for one deploy, handed to Compose as a Docker configuration directory
//! of its own.
//!
//! Compose (and the Docker CLI under it) reads registry credentials from `config.json` in the
//! directory `DOCKER_CONFIG` names. A deploy with credentials gets a fresh directory in the
//! agent's private directory (0700, `<project>.<pid>.<8 hex>.docker-config`) holding a 0600
//! `config.json` with one `auths` entry per registry, and only its `pull`, `build` and `up`
//! see it (`DOCKER_CONFIG` is set on those commands alone). So:
//!
//! - nothing is ever written to the host's own Docker configuration (no `docker login`), and a
//!   credential is never on a command line or in the agent's environment;
//! - the directory is removed when the deploy ends, however it ends ([`DockerConfig`]'s
//!   `Drop`), and what a crash left is removed at the next start ([`sweep`]);
//! - the Compose plugin, which the Docker CLI also looks for under its configuration
//!   directory, is still found: the host's `cli-plugins` directory is linked in.

use crate::private_fs::{self, PrivateDirError};
use base64::Engine as _;
use shared::registry::RegistryCredential;
use shared::ProjectName;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Every per-run configuration directory's name ends with this.
const DIR_SUFFIX: &str = ".docker-config";

/// Why the per-run configuration could not be written; names the path, never a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryAuthError {
    #[error(transparent)]
    Private(#[from] PrivateDirError),
    #[error("creating the registry credentials directory {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
}

/// A per-run Docker configuration directory; dropping it removes the directory and all in it.
#[derive(Debug)]
pub struct DockerConfig {
    dir: PathBuf,
}

impl DockerConfig {
    /// Writes `credentials` into a new directory in `private_dir`; `None` when there are none
    /// (Compose then runs with the host's own configuration, as without this module).
    pub fn write(
        private_dir: &Path,
        project: &ProjectName,
        credentials: &[RegistryCredential],
    ) -> Result<Option<Self>, RegistryAuthError> {
        if credentials.is_empty() {
            return Ok(None);
        }
        private_fs::ensure_private_dir(private_dir)?;
        private_fs::check_private_dir(private_dir)?;
        let dir = private_dir.join(format!(
            "{project}.{}.{:08x}{DIR_SUFFIX}",
            std::process::id(),
            rand::random::<u32>()
        ));
        // Not recursive: a directory (or anything) already there is refused, never reused.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| RegistryAuthError::Create {
                path: dir.clone(),
                source,
            })?;
        // From here the directory is ours and goes with the guard, whatever fails next.
        let config = Self { dir };
        let contents = zeroize::Zeroizing::new(config_json(credentials));
        private_fs::write_private_file(&config.dir.join("config.json"), contents.as_bytes())?;
        if let Some(plugins) = host_cli_plugins() {
            if let Err(error) = std::os::unix::fs::symlink(&plugins, config.dir.join("cli-plugins"))
            {
                tracing::debug!(%error, "could not link the Docker CLI plugins");
            }
        }
        Ok(Some(config))
    }

    /// The directory to set as `DOCKER_CONFIG`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for DockerConfig {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_dir_all(&self.dir) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), %error, "could not remove the registry credentials directory");
            }
        }
    }
}

/// The `auths` key Docker uses for a registry: Docker Hub has its historical URL.
fn auth_key(registry: &str) -> &str {
    match registry {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    }
}

/// `username:password` as `config.json` stores it.
pub fn auth_value(credential: &RegistryCredential) -> String {
    let pair = zeroize::Zeroizing::new(format!(
        "{}:{}",
        credential.username,
        credential.password.expose()
    ));
    base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
}

/// `{"auths": {"<registry>": {"auth": "<base64 user:password>"}}}`.
fn config_json(credentials: &[RegistryCredential]) -> String {
    let auths: serde_json::Map<String, serde_json::Value> = credentials
        .iter()
        .map(|credential| {
            (
                auth_key(credential.registry.as_str()).to_owned(),
                serde_json::json!({ "auth": auth_value(credential) }),
            )
        })
        .collect();
    serde_json::json!({ "auths": auths }).to_string()
}

/// The host's Docker CLI plugin directory, where a user-installed Compose plugin lives:
/// `$DOCKER_CONFIG/cli-plugins`, else `~/.docker/cli-plugins`, if it exists.
fn host_cli_plugins() -> Option<PathBuf> {
    let base = std::env::var_os("DOCKER_CONFIG")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))?;
    let plugins = base.join("cli-plugins");
    plugins.is_dir().then_some(plugins)
}

/// Removes the configuration directories runs that did not clean up (a crash, a kill -9) left
/// in `private_dir`; returns how many. One whose writer (the pid in its name) still runs is
/// left alone. Call it when the agent starts, before any deploy.
pub fn sweep(private_dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(private_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(DIR_SUFFIX) else {
            continue;
        };
        // A symlink is not followed: `file_type` does not follow it, and it is not a directory.
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if !is_dir || writer_is_alive(stem) {
            continue;
        }
        match fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(error) => {
                tracing::warn!(path = %entry.path().display(), %error, "could not remove leftover registry credentials");
            }
        }
    }
    removed
}

/// Whether the process named in `<project>.<pid>.<random>` still runs (and is not this one's
/// earlier life: the agent's own pid is always "alive", its own directories are live guards).
fn writer_is_alive(stem: &str) -> bool {
    let mut parts = stem.rsplit('.');
    let _random = parts.next();
    match parts.next().and_then(|pid| pid.parse::<u32>().ok()) {
        Some(pid) if pid == std::process::id() => true,
        Some(pid) => Path::new("/proc").join(pid.to_string()).exists(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::{RegistryHost, RegistryUsername, SecretValue};
    use std::os::unix::fs::PermissionsExt;

    fn credential(registry: &str, password: &str) -> RegistryCredential {
        RegistryCredential {
            registry: RegistryHost::parse(registry).unwrap(),
            username: RegistryUsername::parse("ci").unwrap(),
            password: SecretValue::new(password),
        }
    }

    #[test]
    fn the_config_holds_one_auth_per_registry_and_goes_with_its_guard() {
        let private = tempfile::tempdir().unwrap();
        let private_dir = private.path().join("private");
        let project = ProjectName::parse("shop").unwrap();
        let credentials = [
            credential("localhost:5000", "s3cret-token"),
            credential("docker.io", "hub-token"),
        ];
        let config = DockerConfig::write(&private_dir, &project, &credentials)
            .unwrap()
            .unwrap();
        let file = config.dir().join("config.json");
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(config.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
        let decoded = |key: &str| {
            let auth = json["auths"][key]["auth"].as_str().unwrap();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(auth)
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(decoded("localhost:5000"), "ci:s3cret-token");
        assert_eq!(decoded("https://index.docker.io/v1/"), "ci:hub-token");
        let dir = config.dir().to_owned();
        drop(config);
        assert!(!dir.exists(), "the directory outlived its guard");
        assert_eq!(fs::read_dir(&private_dir).unwrap().count(), 0);
    }

    #[test]
    fn no_credentials_write_nothing() {
        let private = tempfile::tempdir().unwrap();
        let project = ProjectName::parse("shop").unwrap();
        assert!(DockerConfig::write(private.path(), &project, &[])
            .unwrap()
            .is_none());
        assert_eq!(fs::read_dir(private.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_leftover_of_a_dead_run_is_swept_and_a_live_one_kept() {
        let private = tempfile::tempdir().unwrap();
        // 999999999 is above any pid_max Linux allows; this process is alive.
        let dead = private
            .path()
            .join(format!("shop.999999999.0badbeef{DIR_SUFFIX}"));
        let live = private
            .path()
            .join(format!("shop.{}.0badbeef{DIR_SUFFIX}", std::process::id()));
        for dir in [&dead, &live] {
            fs::create_dir(dir).unwrap();
            fs::write(dir.join("config.json"), "{}").unwrap();
        }
        assert_eq!(sweep(private.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists());
    }
}
