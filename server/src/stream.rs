//! `GET /api/v1/stream`: the one WebSocket each agent keeps open to the server.
//!
//! The token is checked before the upgrade, so a bad one costs a 401 and no socket. After the
//! upgrade the agent has [`HELLO_TIMEOUT`] to introduce itself; then the session relays the
//! hub's messages to the agent and the agent's frames to the hub until either side goes away,
//! the agent stays silent for three heartbeat intervals, or the hub closes the session.

use crate::error::AppError;
use crate::hub::Session;
use crate::token::TokenHash;
use crate::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, Uri};
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use shared::protocol::{Hello, Rejected, Welcome};
use shared::{AgentId, AgentToServer, ServerToAgent, PROTOCOL_VERSION};
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// The agent must send its hello within this time after the upgrade.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame an agent may send; log batches are split well below this.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Sustained frames per second an agent may send, and the burst above it. The burst exceeds the
/// agent's event queue (4,096), so an agent flushing what it kept during an outage is not cut off.
const RATE_PER_SEC: f64 = 500.0;
const RATE_BURST: f64 = 5_000.0;

/// Handshakes (authentication, hello, welcome) in progress at once; beyond this new agents are
/// told to come back later (503) before any database work, which bounds both the load and the
/// memory of a reconnect storm.
pub const MAX_HANDSHAKES: usize = 256;

/// Authenticates the agent, then upgrades.
pub async fn agent_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    if uri.query().is_some_and(|query| query.contains("token")) {
        return Err(AppError::Unauthorized(
            "send the agent token in the Authorization header, never in the URL".into(),
        ));
    }
    let token = bearer_token(&headers).ok_or_else(|| {
        AppError::Unauthorized("missing `Authorization: Bearer <agent token>` header".into())
    })?;
    let permit = state
        .handshakes
        .clone()
        .try_acquire_owned()
        .map_err(|_| AppError::Busy("too many agents are connecting at once".into()))?;
    let agent = state
        .store
        .agent_by_token(&TokenHash::of(token))
        .await?
        .ok_or_else(|| AppError::Unauthorized("unknown or revoked agent token".into()))?;
    let upgrade = upgrade.map_err(|rejection| AppError::BadRequest(rejection.body_text()))?;
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        // Idle agents dominate: 1 KiB to read into (frames larger than that are still read
        // whole) and no write buffer beyond the frame being sent.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket: WebSocket| run_session(socket, state, agent.id, permit)))
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Drives one agent's socket until it ends. Generic over the socket so tests can use channels.
///
/// `permit` is one of [`MAX_HANDSHAKES`]; it is released once the handshake is over.
pub async fn run_session<S>(
    socket: S,
    state: AppState,
    agent: AgentId,
    permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: Sink<Message> + Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let (mut tx, mut rx) = socket.split();
    // Boxed: the handshake's state lives on the heap only while it runs, instead of inside
    // every idle session for its whole life.
    let session = Box::pin(handshake(&mut tx, &mut rx, &state, agent)).await;
    drop(permit);
    let Some(mut session) = session else { return };

    // Offline after three missed heartbeats (plus slack for a slow network).
    let silence_limit = state.config.heartbeat_interval * 3 + Duration::from_secs(5);
    let mut deadline = Instant::now() + silence_limit;
    let mut rate = RateLimit::new(RATE_PER_SEC, RATE_BURST);

    let reason = loop {
        tokio::select! {
            frame = rx.next() => {
                let Some(frame) = frame else { break "connection closed by the agent".to_string() };
                let message = match frame {
                    Ok(Message::Text(text)) => text,
                    Ok(Message::Close(_)) => break "agent closed the connection".into(),
                    Ok(Message::Binary(_)) => break "binary frames are not part of the protocol".into(),
                    Ok(_) => continue, // ping/pong are answered by the socket layer
                    Err(error) => break format!("connection error: {error}"),
                };
                deadline = Instant::now() + silence_limit;
                if !rate.allow(Instant::now()) {
                    let _ = close(&mut tx, "message rate limit exceeded").await;
                    break "message rate limit exceeded".into();
                }
                state.hub.mark_seen(agent);
                match serde_json::from_str::<AgentToServer>(&message) {
                    Ok(AgentToServer::Heartbeat(beat)) => {
                        if send(&mut tx, &ServerToAgent::HeartbeatAck(beat)).await.is_err() {
                            break "socket closed while answering a heartbeat".into();
                        }
                    }
                    Ok(AgentToServer::JobUpdate(update)) => {
                        Box::pin(crate::jobs::record_update(&state, agent, update)).await;
                    }
                    Ok(AgentToServer::Log(batch)) => crate::live_logs::relay(&state, agent, batch),
                    Ok(AgentToServer::Inspected(answer)) => state.hub.complete_inspection(answer),
                    Ok(AgentToServer::Hello(_)) => {
                        tracing::debug!(agent_id = %agent, "ignoring a repeated hello");
                    }
                    Err(error) => {
                        tracing::warn!(agent_id = %agent, %error, "skipping a frame that is not a known message");
                    }
                }
            }
            Some(message) = session.outbound.recv() => {
                if send(&mut tx, &message).await.is_err() {
                    break "socket closed while sending".into();
                }
            }
            reason = &mut session.close => {
                let reason = reason.unwrap_or_else(|_| "closed by the server".into());
                let _ = close(&mut tx, &reason).await;
                break reason;
            }
            _ = sleep_until(deadline) => {
                let _ = close(&mut tx, "no heartbeat").await;
                break format!("no message for {} s (3 missed heartbeats)", silence_limit.as_secs());
            }
        }
    };
    session.guard.set_reason(reason);
}

/// Hello, registration and welcome; `None` when the agent is refused or gone.
async fn handshake<T, R>(
    tx: &mut T,
    rx: &mut R,
    state: &AppState,
    agent: AgentId,
) -> Option<Session>
where
    T: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, next_frame(rx)).await {
        Ok(Some(Ok(AgentToServer::Hello(hello)))) => hello,
        Ok(Some(Ok(_))) => return reject(tx, agent, "the first message must be a hello").await,
        Ok(Some(Err(error))) => return reject(tx, agent, &error).await,
        Ok(None) => return None,
        Err(_) => return reject(tx, agent, "no hello within 10 seconds").await,
    };
    if let Err(reason) = check_hello(&hello) {
        return reject(tx, agent, &reason).await;
    }
    if let Err(error) = state.store.record_hello(agent, &hello).await {
        tracing::warn!(agent_id = %agent, %error, "could not record the agent's hello");
    }
    let Some(mut session) = state.hub.register(agent) else {
        let _ = close(tx, "server shutting down").await;
        return None;
    };
    // The token was checked before the upgrade, up to HELLO_TIMEOUT ago: a revocation in
    // between found no session to close, so look again now that there is one.
    match state.store.is_revoked(agent).await {
        Ok(false) => {}
        Ok(true) => {
            session.guard.set_reason("agent token revoked");
            let _ = close(tx, "agent token revoked").await;
            return None;
        }
        Err(error) => {
            tracing::warn!(agent_id = %agent, %error, "could not re-check the agent's token");
            session
                .guard
                .set_reason("could not re-check the agent's token");
            let _ = close(tx, "server error; retry later").await;
            return None;
        }
    }
    let welcome = ServerToAgent::Welcome(Welcome {
        agent_id: agent,
        heartbeat_interval_secs: state.config.heartbeat_interval.as_secs(),
        reconnect_window_secs: state.hub.reconnect_window_secs(),
    });
    if send(tx, &welcome).await.is_err() {
        session.guard.set_reason("socket closed before welcome");
        return None;
    }
    // Jobs queued while the agent was away, or left open by a server restart.
    crate::jobs::resend_open_jobs(state, agent).await;
    crate::live_logs::restart_for_agent(state, agent).await;
    Some(session)
}

pub(crate) fn check_hello(hello: &Hello) -> Result<(), String> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not supported by this server (it speaks {PROTOCOL_VERSION}); \
             install the agent version that matches the server",
            hello.protocol_version
        ));
    }
    Ok(())
}

pub(crate) async fn next_frame<R>(rx: &mut R) -> Option<Result<AgentToServer, String>>
where
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    loop {
        return match rx.next().await? {
            Ok(Message::Text(text)) => Some(
                serde_json::from_str(&text).map_err(|error| format!("malformed message: {error}")),
            ),
            Ok(Message::Close(_)) | Err(_) => None,
            Ok(_) => continue,
        };
    }
}

async fn reject<T: Sink<Message> + Unpin>(
    tx: &mut T,
    agent: AgentId,
    reason: &str,
) -> Option<Session> {
    tracing::warn!(agent_id = %agent, %reason, "Agent Rejected");
    let rejected = ServerToAgent::Rejected(Rejected {
        reason: reason.to_string(),
    });
    let _ = send(tx, &rejected).await;
    let _ = close(tx, "rejected").await;
    None
}

pub(crate) async fn send<T: Sink<Message> + Unpin>(
    tx: &mut T,
    message: &ServerToAgent,
) -> Result<(), ()> {
    // Serializing our own enum cannot fail: it holds only strings, numbers and ids.
    let text = serde_json::to_string(message).map_err(|_| ())?;
    tx.send(Message::Text(text.into())).await.map_err(|_| ())
}

pub(crate) async fn close<T: Sink<Message> + Unpin>(tx: &mut T, reason: &str) -> Result<(), ()> {
    // Close reasons are limited to 123 bytes by the protocol.
    let mut reason = reason.to_string();
    while reason.len() > 123 {
        reason.pop();
    }
    let frame = CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: reason.into(),
    };
    tx.send(Message::Close(Some(frame))).await.map_err(|_| ())
}

/// A token bucket: `burst` frames at once, refilled at `rate` per second.
struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer stg_abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("stg_abc"));
        headers.insert(header::AUTHORIZATION, "Basic stg_abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_allows_a_burst_then_the_sustained_rate() {
        let mut limit = RateLimit::new(10.0, 5.0);
        let start = Instant::now();
        assert!((0..5).all(|_| limit.allow(start)));
        assert!(!limit.allow(start));
        assert!(limit.allow(start + Duration::from_millis(100)));
        assert!(!limit.allow(start + Duration::from_millis(100)));
    }

    #[test]
    fn a_hello_with_another_protocol_version_is_refused_with_a_reason() {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            agent_version: "9.9.9".into(),
            hostname: "h".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            docker_version: None,
            compose_version: None,
        };
        let reason = check_hello(&hello).unwrap_err();
        assert!(reason.contains("protocol version"), "{reason}");
    }
}
