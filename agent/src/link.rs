//! The agent's link to the server: one outbound WebSocket, kept up forever.
//!
//! The agent dials `/api/v1/stream` with its token in the `Authorization` header, says
//! [`Hello`], waits for `Welcome`, then heartbeats. Any failure (refused connection, 401, lost
//! socket, silent server) ends the attempt and the agent retries after a [`Backoff`] delay, so
//! a network blip or a server restart heals by itself. An outage is logged once when it starts
//! and once when it ends; the attempts in between log at debug level. Only `shutdown` makes
//! [`run`] return.

use crate::backoff::Backoff;
use crate::jobs::Executor;
use futures_util::{SinkExt, StreamExt};
use shared::protocol::{Heartbeat, Hello, Welcome};
use shared::{AgentToServer, ServerToAgent};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// How long to wait for the TCP/TLS/WebSocket handshake, and then for the welcome.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where and how to connect.
#[derive(Clone)]
pub struct LinkConfig {
    /// `ws://…/api/v1/stream` or `wss://…`.
    pub stream_url: String,
    pub token: String,
    pub hello: Hello,
    pub backoff: Backoff,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("stream_url", &self.stream_url)
            .field("token", &"***")
            .finish()
    }
}

/// The stream URL for a server given as `http(s)://host[:port][/prefix]` or `ws(s)://…`.
pub fn stream_url(server: &str) -> Result<String, String> {
    let server = server.trim().trim_end_matches('/');
    let rest = |scheme: &str| server.strip_prefix(scheme).filter(|rest| !rest.is_empty());
    let base = if let Some(rest) = rest("https://").or_else(|| rest("wss://")) {
        format!("wss://{rest}")
    } else if let Some(rest) = rest("http://").or_else(|| rest("ws://")) {
        format!("ws://{rest}")
    } else {
        return Err(format!(
            "the server URL {server:?} must start with http://, https://, ws:// or wss://"
        ));
    };
    if base.ends_with("/api/v1/stream") {
        Ok(base)
    } else {
        Ok(format!("{base}/api/v1/stream"))
    }
}

/// How one connection ended.
enum Ended {
    Shutdown,
    Lost(String),
}

/// The link's side of the job executor: where server messages go and where events come from.
pub struct Jobs {
    pub executor: Executor,
    pub events: mpsc::Receiver<AgentToServer>,
}

/// Keeps the link up until `shutdown` resolves; then closes the socket with a close frame.
pub async fn run(
    mut config: LinkConfig,
    mut jobs: Jobs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, mut stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // `Some(since)` while the server is unreachable, for the one recovery line.
    let mut outage: Option<(Instant, String)> = None;
    let mut ever_connected = false;
    loop {
        let attempt_started = Instant::now();
        let ended = connect_and_serve(
            &mut config,
            &mut jobs,
            &mut outage,
            &mut ever_connected,
            stop.clone(),
        )
        .await;
        // Log streams were asked for by that connection; a new one asks again if it wants.
        jobs.executor.stop_all_logs();
        let reason = match ended {
            Ended::Shutdown => {
                tracing::info!("agent stopped");
                return;
            }
            Ended::Lost(reason) => reason,
        };
        config.backoff.connection_ended(attempt_started.elapsed());
        if outage.is_none() {
            if ever_connected {
                tracing::warn!(%reason, "lost the link to the server; reconnecting with backoff");
            } else {
                tracing::warn!(%reason, "cannot connect to the server; retrying with backoff");
            }
            outage = Some((Instant::now(), reason));
        } else {
            tracing::debug!(%reason, attempt = config.backoff.attempts(), "server still unreachable");
        }
        let delay = config.backoff.next_delay();
        tokio::select! {
            _ = stopped(&mut stop) => {
                tracing::info!("agent stopped");
                return;
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Resolves once shutdown was requested.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        // The signal task is gone without asking to stop: never stop.
        std::future::pending::<()>().await;
    }
}

/// One connection: handshake, then serve until it breaks. Logs the recovery of an outage.
async fn connect_and_serve(
    config: &mut LinkConfig,
    jobs: &mut Jobs,
    outage: &mut Option<(Instant, String)>,
    ever_connected: &mut bool,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let (mut socket, welcome) = tokio::select! {
        _ = stopped(&mut stop) => return Ended::Shutdown,
        handshake = handshake(&*config) => match handshake {
            Ok(connected) => connected,
            Err(reason) => return Ended::Lost(reason),
        },
    };
    match outage.take() {
        Some((since, reason)) => tracing::info!(
            agent_id = %welcome.agent_id,
            down_for_secs = since.elapsed().as_secs(),
            previous_error = %reason,
            "reconnected to the server"
        ),
        None if !*ever_connected => {
            tracing::info!(agent_id = %welcome.agent_id, url = %config.stream_url, "connected to the server")
        }
        None => tracing::info!(agent_id = %welcome.agent_id, "reconnected to the server"),
    }
    *ever_connected = true;
    config
        .backoff
        .set_window(Duration::from_secs(welcome.reconnect_window_secs));
    serve(&mut socket, &welcome, jobs, stop).await
}

/// Opens a WebSocket to `url`, authenticated with `Authorization: Bearer <token>`.
pub(crate) async fn open(url: &str, token: &str) -> Result<Socket, String> {
    let mut request = url
        .into_client_request()
        .map_err(|error| format!("invalid server URL: {error}"))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| "the token contains invalid characters".to_string())?;
    request.headers_mut().insert(AUTHORIZATION, bearer);

    let connected =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request)).await;
    match connected {
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(error)) => Err(describe_connect_error(&error)),
        Err(_) => Err("connection attempt timed out".into()),
    }
}

/// Connects, authenticates with the token and exchanges hello and welcome.
async fn handshake(config: &LinkConfig) -> Result<(Socket, Welcome), String> {
    let mut socket = open(&config.stream_url, &config.token).await?;
    send(&mut socket, &AgentToServer::Hello(config.hello.clone())).await?;
    match tokio::time::timeout(CONNECT_TIMEOUT, next_message(&mut socket)).await {
        Ok(Ok(ServerToAgent::Welcome(welcome))) => Ok((socket, welcome)),
        Ok(Ok(ServerToAgent::Rejected(rejected))) => {
            Err(format!("rejected by the server: {}", rejected.reason))
        }
        Ok(Ok(other)) => Err(format!("expected a welcome, got {other:?}")),
        Ok(Err(error)) => Err(error),
        Err(_) => Err("no welcome from the server".into()),
    }
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Heartbeats and handles server messages until the link breaks.
async fn serve(
    socket: &mut Socket,
    welcome: &Welcome,
    jobs: &mut Jobs,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let interval = Duration::from_secs(welcome.heartbeat_interval_secs.max(1));
    let silence_limit = interval * 3 + Duration::from_secs(5);
    let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
    let mut seq = 0u64;
    let mut deadline = Instant::now() + silence_limit;
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                seq += 1;
                if let Err(error) = send(socket, &AgentToServer::Heartbeat(Heartbeat { seq })).await {
                    return Ended::Lost(error);
                }
            }
            frame = socket.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                        return Ended::Lost(format!("the server closed the connection: {reason}"));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Ended::Lost(format!("connection error: {error}")),
                    None => return Ended::Lost("connection closed".into()),
                };
                deadline = Instant::now() + silence_limit;
                match serde_json::from_str::<ServerToAgent>(&text) {
                    Ok(message) => jobs.executor.handle(message),
                    Err(error) => tracing::warn!(%error, "skipping a message this agent does not understand"),
                }
            }
            Some(event) = jobs.events.recv() => {
                if let Err(error) = send(socket, &event).await {
                    // The event is lost with this connection; the job's result is re-sent
                    // when the server asks again for the same job id.
                    return Ended::Lost(error);
                }
            }
            _ = stopped(&mut stop) => {
                close(socket, "agent shutting down").await;
                return Ended::Shutdown;
            }
            _ = sleep_until(deadline) => {
                let _ = socket.close(None).await;
                return Ended::Lost(format!("no answer from the server for {} s", silence_limit.as_secs()));
            }
        }
    }
}

/// Closes the socket politely, waiting briefly for the server's answer.
async fn close(socket: &mut Socket, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: reason.to_string().into(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(Some(frame))).await;
}

pub(crate) async fn send(socket: &mut Socket, message: &AgentToServer) -> Result<(), String> {
    let text = serde_json::to_string(message).map_err(|error| error.to_string())?;
    socket
        .send(Message::text(text))
        .await
        .map_err(|error| format!("sending to the server: {error}"))
}

pub(crate) async fn next_message(socket: &mut Socket) -> Result<ServerToAgent, String> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text)
                    .map_err(|error| format!("malformed message from the server: {error}"))
            }
            Some(Ok(Message::Close(frame))) => {
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Err(format!("the server closed the connection: {reason}"));
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(format!("connection error: {error}")),
            None => return Err("connection closed".into()),
        }
    }
}

fn describe_connect_error(error: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Http(response) if response.status() == 401 => {
            let body = response.body().as_deref().unwrap_or_default();
            // The server explains itself in `{"error": {"message": …}}`.
            let message = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|json| json["error"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
            format!("the server refused the token (401): {message}")
        }
        Error::Http(response) => format!("the server answered HTTP {}", response.status()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_become_stream_urls() {
        let cases = [
            ("http://127.0.0.1:3000", "ws://127.0.0.1:3000/api/v1/stream"),
            (
                "https://deploy.example.com/",
                "wss://deploy.example.com/api/v1/stream",
            ),
            (
                "https://example.com/stagely",
                "wss://example.com/stagely/api/v1/stream",
            ),
            ("ws://h:1/api/v1/stream", "ws://h:1/api/v1/stream"),
        ];
        for (input, expected) in cases {
            assert_eq!(stream_url(input).unwrap(), expected, "{input}");
        }
        assert!(stream_url("example.com")
            .unwrap_err()
            .contains("must start with"));
        assert!(stream_url("http://").is_err());
    }
}
