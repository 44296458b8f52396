//! `stagely-agent join`: trades a single-use join token for this agent's own token.
//!
//! The installer runs it once, in the foreground, so that a refused token (used, expired,
//! unknown) is reported to the person running the installer with the server's reason.

use crate::link::{self, next_message, open, send, AgentToken, PlainHttp};
use crate::private_fs::{self, PrivateDirError};
use shared::protocol::{Hello, Joined};
use shared::{AgentId, AgentToServer, ServerToAgent};
use std::path::Path;
use zeroize::Zeroizing;

/// `ws(s)://…/api/v1/join` for a server URL (plain `ws` to another host only when
/// `plain_http` allows it).
pub fn join_url(server: &str, plain_http: PlainHttp) -> Result<String, String> {
    let stream = link::stream_url(server, plain_http)?;
    Ok(format!(
        "{}/api/v1/join",
        stream.trim_end_matches("/api/v1/stream")
    ))
}

/// The identity the server gave this host, its token held as an [`AgentToken`] (printed as
/// `***`, wiped when dropped).
#[derive(Debug)]
pub struct Registered {
    pub agent_id: AgentId,
    pub name: String,
    pub token: AgentToken,
}

impl From<Joined> for Registered {
    /// Takes the token over without copying it.
    fn from(joined: Joined) -> Self {
        Self {
            agent_id: joined.agent_id,
            name: joined.name,
            token: AgentToken::from(joined.token),
        }
    }
}

/// Introduces this host with `hello` and returns the identity the server gave it. The join
/// token is sent only once the URL passed the plain-http check.
pub async fn join(
    server: &str,
    plain_http: PlainHttp,
    join_token: &str,
    hello: Hello,
) -> Result<Registered, String> {
    let mut socket = open(&join_url(server, plain_http)?, join_token).await?;
    send(&mut socket, &AgentToServer::Hello(hello)).await?;
    match next_message(&mut socket).await? {
        ServerToAgent::Joined(joined) => Ok(Registered::from(joined)),
        ServerToAgent::Rejected(rejected) => Err(rejected.reason),
        other => Err(format!("unexpected answer from the server: {other:?}")),
    }
}

/// Makes sure the agent token can be saved at `path`, before a join token is spent on it: a
/// missing directory is created 0700; an existing one must be the agent's own and closed to
/// other writers (its mode is otherwise left alone: it may be someone's home).
pub fn prepare_token_dir(path: &Path) -> Result<(), PrivateDirError> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if std::fs::symlink_metadata(dir).is_err() {
        private_fs::ensure_private_dir(dir)
    } else {
        private_fs::check_private_dir(dir)
    }
}

/// Writes the agent token to `path`, readable by its owner only (0600), atomically: a crash
/// leaves either the old file or the whole token.
pub fn save_token(path: &Path, token: &AgentToken) -> Result<(), PrivateDirError> {
    prepare_token_dir(path)?;
    // Sized up front: a buffer that grew would leave a copy behind, unwiped.
    let mut line = Zeroizing::new(String::with_capacity(token.expose().len() + 1));
    line.push_str(token.expose());
    line.push('\n');
    private_fs::write_private_file(path, line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn join_urls_sit_beside_the_stream() {
        assert_eq!(
            join_url("https://deploy.example.com/", PlainHttp::LoopbackOnly).unwrap(),
            "wss://deploy.example.com/api/v1/join"
        );
        assert_eq!(
            join_url("http://127.0.0.1:3000", PlainHttp::LoopbackOnly).unwrap(),
            "ws://127.0.0.1:3000/api/v1/join"
        );
    }

    #[tokio::test]
    async fn a_join_token_is_never_sent_over_plain_http_to_another_host() {
        let hello = Hello {
            protocol_version: shared::PROTOCOL_VERSION,
            agent_version: "test".into(),
            hostname: "h".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            docker_version: None,
            compose_version: None,
        };
        // Refused before any connection: the name does not even resolve.
        let server = "http://stagely.example.invalid:3000";
        let error = join(server, PlainHttp::LoopbackOnly, "stj_secret", hello)
            .await
            .unwrap_err();
        assert!(error.contains("in the clear"), "{error}");
        assert!(error.contains("STAGELY_ALLOW_INSECURE_HTTP"), "{error}");
    }

    #[test]
    fn the_token_file_is_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/agent.token");
        save_token(&path, &AgentToken::from("stg_secret")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "stg_secret\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    // The temporary the token is first written to has a random name, created
    // O_EXCL|O_NOFOLLOW: `private_fs`'s own tests plant a symlink at the very name a write picks.
    #[test]
    fn saving_the_token_replaces_a_symlink_planted_at_its_name_without_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("agent.token");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        save_token(&path, &AgentToken::from("stg_secret")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "stg_secret\n");
    }

    #[test]
    fn a_registration_prints_its_agent_but_never_its_token() {
        let joined = Joined {
            agent_id: AgentId(uuid::Uuid::nil()),
            name: "web-1".into(),
            token: "stg_secret-token".into(),
        };
        let registered = Registered::from(joined);
        let printed = format!("{registered:?}");
        assert!(printed.contains("web-1"), "{printed}");
        assert!(!printed.contains("stg_secret"), "{printed}");
        assert_eq!(registered.token.expose(), "stg_secret-token");
    }

    #[test]
    fn the_token_is_not_saved_in_a_directory_others_can_write_to() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("agent.token");
        let error = save_token(&path, &AgentToken::from("stg_secret"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(&dir.path().display().to_string()), "{error}");
        assert!(!error.contains("stg_secret"), "{error}");
        assert!(!path.exists());
    }
}
