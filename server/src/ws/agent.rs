//! `GET /api/v1/stream`: the one WebSocket each agent keeps open to the server.
//!
//! The token is checked before the upgrade, so a bad one costs a 401 and no socket. After the
//! upgrade the agent has [`HELLO_TIMEOUT`] to introduce itself; then the session relays the
//! hub's messages to the agent and the agent's frames to the hub until either side goes away,
//! the agent stays silent for three heartbeat intervals, or the hub closes the session.
//!
//! What one agent can make the server do is bounded: a frame is at most [`MAX_MESSAGE_BYTES`],
//! frames come at most [`RATE_PER_SEC`] a second (more ends the connection), and log batches,
//! command output and container state reports at most `STAGELY_AGENT_BYTES_PER_SEC` bytes a
//! second ([`Throttle`]).
//! Over that rate they are dropped, not queued, so a flooding agent slows nobody else down;
//! how many lines were dropped is told where they would have appeared (the log feed's
//! `skipped` count, a line in the deployment's output).

use super::{close, next_frame, send, HELLO_TIMEOUT};
use crate::auth;
use crate::hub::Session;
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use futures_util::{Sink, Stream, StreamExt};
use shared::protocol::{JobEvent, JobUpdate};
use shared::protocol::{Rejected, Welcome};
use shared::JobId;
use shared::{AgentId, AgentToServer, ServerToAgent};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// Largest frame an agent may send: the protocol's limit, which the agent's budgets for log
/// batches, results and answers stay well below.
pub const MAX_MESSAGE_BYTES: usize = shared::protocol::MAX_FRAME_BYTES;
/// Sustained frames per second an agent may send, and the burst above it. The burst exceeds the
/// agent's event queue (4,096), so an agent flushing what it kept during an outage is not cut off.
const RATE_PER_SEC: f64 = 500.0;
const RATE_BURST: f64 = 5_000.0;

/// Authenticates the agent, then upgrades.
pub async fn agent_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, OpError> {
    let token = auth::agent_token(&headers, &uri)?;
    // No database work before a permit: a reconnect storm is refused cheaply.
    let permit = state
        .handshakes
        .clone()
        .try_acquire_owned()
        .map_err(|_| OpError::Busy("too many agents are connecting at once".into()))?;
    let agent = auth::agent_of_token(&state.store, token).await?;
    let upgrade = upgrade.map_err(|rejection| OpError::Invalid(rejection.body_text()))?;
    Ok(upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        // Idle agents dominate: 1 KiB to read into (frames larger than that are still read
        // whole) and no write buffer beyond the frame being sent.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket: WebSocket| run_session(socket, state, agent.id, permit)))
}

/// Drives one agent's socket until it ends. Generic over the socket so tests can use channels.
///
/// `permit` is one of [`MAX_HANDSHAKES`](crate::state::MAX_HANDSHAKES); it is released once the
/// handshake is over.
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
    let mut throttle = Throttle::new(&state.config.limits);

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
                let cost = message.len();
                match serde_json::from_str::<AgentToServer>(&message) {
                    Ok(AgentToServer::Heartbeat(beat)) => {
                        if send(&mut tx, &ServerToAgent::HeartbeatAck(beat)).await.is_err() {
                            break "socket closed while answering a heartbeat".into();
                        }
                    }
                    Ok(AgentToServer::JobUpdate(update)) => {
                        let is_output = matches!(update.event, JobEvent::Output { .. });
                        if is_output && !throttle.allow(agent, cost) {
                            throttle.dropped_output(update.job_id);
                            continue;
                        }
                        let (store, vault, hub, feeds) = (&state.store, &state.vault, &state.hub, &state.logs);
                        if let Some(note) = throttle.take_output_note(update.job_id) {
                            Box::pin(ops::deployments::record_update(store, vault, hub, feeds, agent, note)).await;
                        }
                        Box::pin(ops::deployments::record_update(store, vault, hub, feeds, agent, update)).await;
                    }
                    Ok(AgentToServer::Log(mut batch)) => {
                        if !throttle.allow(agent, cost) {
                            throttle.dropped_log(&batch);
                            continue;
                        }
                        batch.skipped += throttle.take_skipped_lines(batch.stream_id);
                        ops::logs::relay(&state.hub, &state.logs, agent, batch);
                    }
                    Ok(AgentToServer::Inspected(answer)) => state.hub.complete_inspection(answer),
                    Ok(AgentToServer::ServiceStates(states)) => {
                        // Each report is a write and a push to tabs: a flood of them is dropped
                        // like one of logs (the agent reports again on the next change).
                        if !throttle.allow(agent, cost) {
                            continue;
                        }
                        ops::services::record(&state.store, &state.hub, agent, states).await;
                    }
                    Ok(AgentToServer::SwarmNodes(nodes)) => {
                        if !throttle.allow(agent, cost) {
                            continue;
                        }
                        ops::agents::record_swarm_nodes(&state.store, agent, nodes).await;
                    }
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
    throttle.report(agent);
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
    if let Err(reason) = ops::agents::check_hello(&hello) {
        return reject(tx, agent, &reason).await;
    }
    if let Err(error) = state.store.record_hello(agent, &hello).await {
        tracing::warn!(agent_id = %agent, %error, "could not record the agent's hello");
    }
    // Taken before the agent counts as connected here and held until its open jobs are
    // re-sent: a job requested meanwhile goes after them, not before.
    let turn = state.hub.send_turn(agent).await;
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
    // Jobs queued while the agent was away, or left open by a server restart: in a task of
    // its own, as the session must be running to take more than its queue holds.
    let resend_state = state.clone();
    tokio::spawn(async move {
        let (store, vault, hub) = (&resend_state.store, &resend_state.vault, &resend_state.hub);
        ops::deployments::resend_open_jobs(turn, store, vault, hub, agent).await;
    });
    let (store, vault, hub, feeds) = (&state.store, &state.vault, &state.hub, &state.logs);
    ops::logs::restart_for_agent(store, vault, hub, feeds, agent).await;
    Some(session)
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

/// The agent's budget for log batches and command output, in bytes of frames: what it sent
/// over it is dropped and counted per log stream and per job, and the count goes out with the
/// next batch of that stream (`skipped`) or as a line of that job's output.
struct Throttle {
    bytes: RateLimit,
    accepted_bytes: u64,
    dropped_bytes: u64,
    /// Lines dropped per log stream, not yet reported.
    skipped_lines: HashMap<JobId, u64>,
    /// Output lines dropped per job, not yet reported.
    dropped_output: HashMap<JobId, u64>,
}

/// Streams and jobs whose dropped lines are counted at once; a flood over more of them is
/// still dropped, only not counted.
const MAX_COUNTED: usize = 64;

impl Throttle {
    fn new(limits: &crate::config::LimitsConfig) -> Self {
        Self {
            bytes: RateLimit::new(
                limits.agent_bytes_per_sec as f64,
                limits.agent_burst_bytes as f64,
            ),
            accepted_bytes: 0,
            dropped_bytes: 0,
            skipped_lines: HashMap::new(),
            dropped_output: HashMap::new(),
        }
    }

    /// Whether a frame of `bytes` fits the budget now.
    fn allow(&mut self, agent: AgentId, bytes: usize) -> bool {
        if self.bytes.allow_cost(Instant::now(), bytes as f64) {
            self.accepted_bytes += bytes as u64;
            return true;
        }
        if self.dropped_bytes == 0 {
            tracing::warn!(agent_id = %agent, "the agent sends logs or output faster than STAGELY_AGENT_BYTES_PER_SEC; dropping what is over");
        }
        self.dropped_bytes += bytes as u64;
        false
    }

    fn dropped_log(&mut self, batch: &shared::protocol::LogBatch) {
        let lines = batch.messages.len() as u64 + batch.skipped;
        count(&mut self.skipped_lines, batch.stream_id, lines);
    }

    fn take_skipped_lines(&mut self, stream: JobId) -> u64 {
        self.skipped_lines.remove(&stream).unwrap_or(0)
    }

    fn dropped_output(&mut self, job: JobId) {
        count(&mut self.dropped_output, job, 1);
    }

    /// The line that tells a job's history how much of its output was dropped, if any was.
    fn take_output_note(&mut self, job: JobId) -> Option<JobUpdate> {
        let dropped = self.dropped_output.remove(&job)?;
        Some(JobUpdate {
            job_id: job,
            event: JobEvent::Output {
                line: format!(
                    "… {dropped} lines of output dropped: the agent sent them faster than the server accepts (STAGELY_AGENT_BYTES_PER_SEC)"
                ),
            },
        })
    }

    /// Logs what was dropped over the session, if anything.
    fn report(&self, agent: AgentId) {
        if self.dropped_bytes > 0 {
            tracing::info!(
                agent_id = %agent,
                accepted_bytes = self.accepted_bytes,
                dropped_bytes = self.dropped_bytes,
                "Agent Throttled"
            );
        }
    }
}

fn count(counts: &mut HashMap<JobId, u64>, key: JobId, lines: u64) {
    if counts.len() < MAX_COUNTED || counts.contains_key(&key) {
        *counts.entry(key).or_default() += lines;
    }
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
        self.allow_cost(now, 1.0)
    }

    /// Takes `cost` tokens if there are that many.
    fn allow_cost(&mut self, now: Instant, cost: f64) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_allows_a_burst_then_the_sustained_rate() {
        let mut limit = RateLimit::new(10.0, 5.0);
        let start = Instant::now();
        assert!((0..5).all(|_| limit.allow(start)));
        assert!(!limit.allow(start));
        assert!(limit.allow(start + Duration::from_millis(100)));
        assert!(!limit.allow(start + Duration::from_millis(100)));
    }
}
