//! Turning a fresh host into a connected agent: join tokens, the install script, the agent
//! binaries and the `/api/v1/join` exchange.
//!
//! A person creates a join token (dashboard or API) and runs the command it comes with on the
//! new host. `install.sh` downloads the static agent from this server, checks its SHA-256
//! against the published sum, and runs `stagely-agent join`, which opens `/api/v1/join` with
//! the join token, introduces itself with a hello and receives its own agent token in
//! exchange. The join token is spent in the same transaction that registers the agent, so a
//! token is never spent without an agent to show for it, nor used twice.

use crate::db::{JoinTokenState, User};
use crate::error::AppError;
use crate::routes::{ApiJson, CurrentUser};
use crate::stream::{bearer_token, check_hello, close, next_frame, send, HELLO_TIMEOUT};
use crate::token::{Token, TokenHash};
use crate::AppState;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use shared::api::{CreateJoinToken, JoinTokenCreated};
use shared::protocol::{Joined, Rejected};
use shared::{AgentToServer, ServerToAgent};
use time::OffsetDateTime;

/// How long a join token lasts unless asked otherwise.
const DEFAULT_LIFETIME_SECS: u64 = 3600;
const LIFETIME_RANGE: std::ops::RangeInclusive<u64> = 60..=7 * 24 * 3600;
/// Architectures the server may have an agent binary for.
pub const ARCHES: [&str; 2] = ["x86_64", "aarch64"];
const INSTALL_SCRIPT: &str = include_str!("install.sh");

/// `POST /api/v1/join-tokens`.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateJoinToken>,
) -> Result<(StatusCode, Json<JoinTokenCreated>), AppError> {
    Ok((
        StatusCode::CREATED,
        Json(create_join_token(&state, &user, body).await?),
    ))
}

pub async fn create_join_token(
    state: &AppState,
    user: &User,
    body: CreateJoinToken,
) -> Result<JoinTokenCreated, AppError> {
    let name = match body
        .name
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        Some(name) => Some(crate::routes::agents::validate_name(name)?),
        None => None,
    };
    let lifetime = body.expires_in_secs.unwrap_or(DEFAULT_LIFETIME_SECS);
    if !LIFETIME_RANGE.contains(&lifetime) {
        return Err(AppError::BadRequest(
            "expires_in_secs must be from 60 (a minute) to 604800 (a week)".into(),
        ));
    }
    let token = Token::join();
    let expires_at = OffsetDateTime::now_utc() + time::Duration::seconds(lifetime as i64);
    state
        .store
        .create_join_token(&token.hash(), user.id, name, crate::db::to_ms(expires_at))
        .await?;
    tracing::info!(user = %user.login, expires_at = %expires_at, "join token created");
    let command = install_command(&state.config.public_url, token.expose());
    Ok(JoinTokenCreated {
        token: token.expose().to_string(),
        expires_at,
        cloud_init: cloud_init(&command),
        command,
    })
}

/// The one line that installs and registers an agent.
pub fn install_command(public_url: &str, token: &str) -> String {
    format!("curl -fsSL {public_url}/install.sh | sh -s -- --token {token}")
}

/// A cloud-init user-data file that runs `command` once, on the first boot.
pub fn cloud_init(command: &str) -> String {
    #[derive(serde::Serialize)]
    struct UserData<'a> {
        runcmd: [&'a str; 1],
    }
    let body = serde_yaml::to_string(&UserData { runcmd: [command] }).unwrap_or_default();
    format!("#cloud-config\n# Registers this machine as a Stagely agent on its first boot.\n{body}")
}

/// `GET /install.sh`: the installer, with this server's URL filled in.
pub async fn install_script(State(state): State<AppState>) -> Response {
    let script = INSTALL_SCRIPT.replace("__STAGELY_URL__", &state.config.public_url);
    (
        [(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8")],
        script,
    )
        .into_response()
}

/// `GET /downloads/stagely-agent-<arch>` and `…-<arch>.sha256`.
pub async fn download(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, AppError> {
    let (name, sum) = match file.strip_suffix(".sha256") {
        Some(name) => (name, true),
        None => (file.as_str(), false),
    };
    let known = ARCHES
        .iter()
        .any(|arch| name == format!("stagely-agent-{arch}"));
    if !known {
        return Err(AppError::NotFound);
    }
    let path = state.config.downloads_dir.join(name);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(AppError::BadRequest(format!(
                "this server has no {name}: build it with scripts/build-agent.sh into {}",
                state.config.downloads_dir.display()
            )))
        }
        Err(error) => return Err(AppError::Internal(error.into())),
    };
    if sum {
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        return Ok((
            [(header::CONTENT_TYPE, "text/plain")],
            format!("{hex}  {name}\n"),
        )
            .into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /api/v1/join`: checks the join token (refusing a used or expired one with the reason),
/// then upgrades and trades it for an agent token after the agent's hello.
pub async fn join(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    let token = bearer_token(&headers)
        .ok_or_else(|| {
            AppError::Unauthorized("missing `Authorization: Bearer <join token>` header".into())
        })?
        .to_string();
    let hash = TokenHash::of(&token);
    refusal(state.store.join_token_state(&hash).await?)?;
    Ok(upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| exchange(socket, state, hash)))
}

/// Why a join token cannot be used, in words for the person running the installer.
fn refusal(token: JoinTokenState) -> Result<(), AppError> {
    let create_another =
        "create a new one in the dashboard (Servers → Add server) or with POST /api/v1/join-tokens";
    match token {
        JoinTokenState::Valid => Ok(()),
        JoinTokenState::Used => Err(AppError::Unauthorized(format!(
            "this join token was already used; {create_another}"
        ))),
        JoinTokenState::Expired(at) => Err(AppError::Unauthorized(format!(
            "this join token expired at {}; {create_another}",
            crate::db::from_ms(at)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        ))),
        JoinTokenState::Unknown => Err(AppError::Unauthorized(format!(
            "this join token is not known to this server; {create_another}"
        ))),
    }
}

async fn exchange(socket: WebSocket, state: AppState, join_token: TokenHash) {
    let (mut tx, mut rx) = socket.split();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, next_frame(&mut rx)).await {
        Ok(Some(Ok(AgentToServer::Hello(hello)))) => hello,
        _ => {
            let _ = close(&mut tx, "expected a hello").await;
            return;
        }
    };
    let answer = match admit(&state, &join_token, &hello).await {
        Ok(joined) => ServerToAgent::Joined(joined),
        Err(reason) => ServerToAgent::Rejected(Rejected { reason }),
    };
    let _ = send(&mut tx, &answer).await;
    let _ = close(&mut tx, "joined").await;
}

async fn admit(
    state: &AppState,
    join_token: &TokenHash,
    hello: &shared::protocol::Hello,
) -> Result<Joined, String> {
    check_hello(hello)?;
    let host = hello.hostname.trim();
    let host_name = crate::routes::agents::validate_name(host).unwrap_or("new host");
    let agent_token = Token::generate();
    let redeemed = state
        .store
        .redeem_join_token(join_token, host_name, &agent_token.hash())
        .await
        .map_err(|error| {
            tracing::error!(%error, "could not redeem a join token");
            "the server could not register the agent; see its log".to_string()
        })?;
    let Some(agent) = redeemed else {
        // Spent or expired between the check and now: say which.
        let state_now = state.store.join_token_state(join_token).await;
        return Err(match state_now.map(refusal) {
            Ok(Err(error)) => error.to_string(),
            _ => "this join token can no longer be used".into(),
        });
    };
    tracing::info!(agent_id = %agent.id, name = %agent.name, host = %host, "agent joined with a join token");
    Ok(Joined {
        agent_id: agent.id,
        name: agent.name,
        token: agent_token.expose().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cloud_init_file_runs_the_install_command_once() {
        let command = install_command("https://deploy.example.com", "stj_abc-DEF_123");
        let file = cloud_init(&command);
        assert!(file.starts_with("#cloud-config\n"), "{file}");
        let parsed: serde_yaml::Value = serde_yaml::from_str(&file).unwrap();
        assert_eq!(parsed["runcmd"][0].as_str(), Some(command.as_str()));
        assert_eq!(parsed["runcmd"].as_sequence().map(Vec::len), Some(1));
    }
}
