//! `stagely-agent join`: trades a single-use join token for this agent's own token.
//!
//! The installer runs it once, in the foreground, so that a refused token (used, expired,
//! unknown) is reported to the person running the installer with the server's reason.

use crate::link::{self, next_message, open, send};
use shared::protocol::{Hello, Joined};
use shared::{AgentToServer, ServerToAgent};
use std::io::Write;
use std::path::Path;

/// `ws(s)://…/api/v1/join` for a server URL.
pub fn join_url(server: &str) -> Result<String, String> {
    let stream = link::stream_url(server)?;
    Ok(format!(
        "{}/api/v1/join",
        stream.trim_end_matches("/api/v1/stream")
    ))
}

/// Introduces this host with `hello` and returns the identity the server gave it.
pub async fn join(server: &str, join_token: &str, hello: Hello) -> Result<Joined, String> {
    let mut socket = open(&join_url(server)?, join_token).await?;
    send(&mut socket, &AgentToServer::Hello(hello)).await?;
    match next_message(&mut socket).await? {
        ServerToAgent::Joined(joined) => Ok(joined),
        ServerToAgent::Rejected(rejected) => Err(rejected.reason),
        other => Err(format!("unexpected answer from the server: {other:?}")),
    }
}

/// Writes the agent token to `path`, readable by its owner only (0600, directory 0700), and
/// atomically: a crash leaves either no file or the whole token.
pub fn save_token(path: &Path, token: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let partial = dir.join(format!(".agent-token.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn join_urls_sit_beside_the_stream() {
        assert_eq!(
            join_url("https://deploy.example.com/").unwrap(),
            "wss://deploy.example.com/api/v1/join"
        );
        assert_eq!(
            join_url("http://127.0.0.1:3000").unwrap(),
            "ws://127.0.0.1:3000/api/v1/join"
        );
    }

    #[test]
    fn the_token_file_is_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/agent.token");
        save_token(&path, "stg_secret").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "stg_secret\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }
}
