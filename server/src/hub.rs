//! The hub: which agents are connected right now, and the way to reach each of them.
//!
//! Every agent connection registers here and gets a [`Session`]; the [`SessionGuard`] inside it
//! removes the entry when dropped, so the map is right on every exit path (clean close, error,
//! panic, task abort). One agent has at most one live session: a new connection with the same
//! identity replaces the old one, which is told why and closes.
//!
//! Status changes are published on a broadcast channel for the dashboard. Last-seen times are
//! kept in memory and flushed to the database in batches by [`Hub::flush_last_seen`], which
//! `housekeeping` calls about once a second.
//!
//! With several replicas on one PostgreSQL (README, "Running several replicas") the hub also
//! knows which other replica holds each agent it does not hold ([`Hub::holder`]), hands
//! questions for those agents to that replica ([`Hub::inspect`]) and passes its events on to
//! the others' tabs, through the [`Relay`]. Events relayed from another replica reach this
//! replica's tabs ([`Hub::subscribe`]) but not its own reactions to what happened here
//! ([`Hub::subscribe_local`]: notifications, push follow-ups), so those run once.

use crate::db::Store;
use crate::relay::{Message, Relay, ReplicaId};
use crate::sync::lock;
use serde::{Deserialize, Serialize};
use shared::api::{AgentStatus, DeploymentEvent, DeploymentStatus};
use shared::protocol::{Inspect, Inspected};
use shared::runtime::ServiceState;
use shared::{AgentId, DeploymentId, JobId, ProjectId, ServerToAgent, ServiceName, UserId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc, oneshot};

/// How many messages may wait for one agent before sends to it fail fast.
const OUTBOUND_QUEUE: usize = 64;

/// Messages are queued boxed: tokio allocates a block of 32 slots per channel up front, and 32
/// pointers cost an idle agent 256 bytes where 32 inline messages would cost 4.6 KiB.
pub type Outbound = Box<ServerToAgent>;

/// Something the dashboard may want to know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubEvent {
    AgentStatus {
        agent_id: AgentId,
        status: AgentStatus,
    },
    DeploymentStatus {
        deployment_id: DeploymentId,
        project_id: ProjectId,
        status: DeploymentStatus,
        message: Option<String>,
    },
    DeploymentEvent {
        deployment_id: DeploymentId,
        project_id: ProjectId,
        /// As stored, with the time it was stored under.
        event: DeploymentEvent,
    },
    /// Container log lines of a watched project (see `ops::logs`): the
    /// [`DashboardEvent::Logs`](shared::api::DashboardEvent::Logs) frame every tab watching it
    /// is sent, encoded once for all of them.
    Logs {
        project_id: ProjectId,
        frame: Arc<str>,
    },
    /// A project's containers as its agent reports them now (see `ops::services`).
    ServiceStates {
        project_id: ProjectId,
        agent_id: AgentId,
        containers: Arc<Vec<ServiceState>>,
    },
}

/// A [`HubEvent`] as it travels to other replicas. Log lines are not among them: they go only
/// to the replica whose tabs watch the stream (see `ops::logs`).
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RelayedEvent {
    AgentStatus {
        agent_id: AgentId,
        status: AgentStatus,
    },
    DeploymentStatus {
        deployment_id: DeploymentId,
        project_id: ProjectId,
        status: DeploymentStatus,
        message: Option<String>,
    },
    DeploymentEvent {
        deployment_id: DeploymentId,
        project_id: ProjectId,
        event: DeploymentEvent,
    },
    ServiceStates {
        project_id: ProjectId,
        agent_id: AgentId,
        containers: Vec<ServiceState>,
    },
}

impl RelayedEvent {
    fn of(event: &HubEvent) -> Option<Self> {
        Some(match event.clone() {
            HubEvent::AgentStatus { agent_id, status } => Self::AgentStatus { agent_id, status },
            HubEvent::DeploymentStatus {
                deployment_id,
                project_id,
                status,
                message,
            } => Self::DeploymentStatus {
                deployment_id,
                project_id,
                status,
                message,
            },
            HubEvent::DeploymentEvent {
                deployment_id,
                project_id,
                event,
            } => Self::DeploymentEvent {
                deployment_id,
                project_id,
                event,
            },
            HubEvent::ServiceStates {
                project_id,
                agent_id,
                containers,
            } => Self::ServiceStates {
                project_id,
                agent_id,
                containers: containers.as_ref().clone(),
            },
            HubEvent::Logs { .. } => return None,
        })
    }

    fn into_event(self) -> HubEvent {
        match self {
            Self::AgentStatus { agent_id, status } => HubEvent::AgentStatus { agent_id, status },
            Self::DeploymentStatus {
                deployment_id,
                project_id,
                status,
                message,
            } => HubEvent::DeploymentStatus {
                deployment_id,
                project_id,
                status,
                message,
            },
            Self::DeploymentEvent {
                deployment_id,
                project_id,
                event,
            } => HubEvent::DeploymentEvent {
                deployment_id,
                project_id,
                event,
            },
            Self::ServiceStates {
                project_id,
                agent_id,
                containers,
            } => HubEvent::ServiceStates {
                project_id,
                agent_id,
                containers: Arc::new(containers),
            },
        }
    }
}

/// Where an agent's socket is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// On this replica.
    Here,
    /// On another replica (by its lease or its latest word).
    Replica(ReplicaId),
    /// Not connected anywhere.
    Nowhere,
}

/// An agent's answer to an inspection: the compose file's services, or why it could not be read.
pub type InspectResult = Result<Vec<ServiceName>, String>;

/// Why a message could not be handed to an agent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the agent is not connected")]
    NotConnected,
    #[error("the agent's queue is full")]
    QueueFull,
}

/// How widely a fleet of `fleet` agents should spread its first reconnect after losing its
/// server: about a second for a small fleet, up to a minute (the backoff cap) for a large one,
/// so that a restart admits about 400 agents a second.
///
/// Among `replicas` (other replicas are up), a replica that dies sends back only its share of the fleet, over the same
/// window: at 400 a second that share would come back in a third of the time, far above 5% of
/// it in a second. So a fleet of replicas spreads over at least 30 s once it is large enough
/// (3,000 agents) for that to matter, less in proportion below: a uniform spread over 30 s puts
/// about 3.3% of them in an average second, and for a large share (thousands) under 5% in the
/// busiest.
pub fn reconnect_window_secs(fleet: usize, replicas: bool) -> u64 {
    let fleet = fleet as u64;
    let admission = fleet / 400;
    let share_of_one_replica = if replicas { (fleet / 100).min(30) } else { 0 };
    admission.max(share_of_one_replica).clamp(1, 60)
}

/// Cheap to clone; all clones share one map.
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    sessions: Mutex<HashMap<AgentId, Entry>>,
    /// Agents other replicas hold, and which one holds each (empty with one replica).
    remote: Mutex<HashMap<AgentId, ReplicaId>>,
    /// The link to the other replicas, when the database is shared.
    relay: Option<Relay>,
    /// Events of this replica only (see [`Hub::subscribe_local`]), but agents' statuses.
    local_events: broadcast::Sender<HubEvent>,
    /// This replica's agents that connected or disconnected since [`Hub::agent_changes`] last
    /// took them, the newest status of each, and the signal that there are some.
    agent_changes: Mutex<HashMap<AgentId, AgentStatus>>,
    agent_changed: tokio::sync::Notify,
    seen: Mutex<HashMap<AgentId, OffsetDateTime>>,
    events: broadcast::Sender<HubEvent>,
    next_session: AtomicU64,
    shutting_down: AtomicBool,
    /// Registered (not revoked) agents, refreshed by housekeeping: the fleet a restart will
    /// see come back, whatever order its agents happened to connect in.
    fleet_size: std::sync::atomic::AtomicUsize,
    /// Flips to true on shutdown, for connections that are not agent sessions (browsers).
    closing: tokio::sync::watch::Sender<bool>,
    /// Inspections sent to agents, waiting for their answer.
    inspections: Mutex<HashMap<JobId, oneshot::Sender<InspectResult>>>,
    /// Users some of whose credentials were just revoked (a session, a token, a disabled
    /// account): their live feeds check theirs again at once.
    revoked: broadcast::Sender<UserId>,
    /// Per agent, the turn to hand it jobs (see [`Hub::send_turn`]); only while taken or
    /// waited for.
    send_turns: Mutex<HashMap<AgentId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            sessions: Mutex::default(),
            remote: Mutex::default(),
            relay: None,
            local_events: broadcast::channel(1024).0,
            agent_changes: Mutex::default(),
            agent_changed: tokio::sync::Notify::new(),
            seen: Mutex::default(),
            events: broadcast::channel(1024).0,
            next_session: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            fleet_size: std::sync::atomic::AtomicUsize::new(0),
            closing: tokio::sync::watch::channel(false).0,
            inspections: Mutex::default(),
            revoked: broadcast::channel(256).0,
            send_turns: Mutex::default(),
        }
    }
}

struct Entry {
    session: u64,
    outbound: mpsc::Sender<Outbound>,
    close: Option<oneshot::Sender<String>>,
}

/// What a connection gets when it registers.
pub struct Session {
    /// Messages to write to this agent's socket.
    pub outbound: mpsc::Receiver<Outbound>,
    /// Fires with a reason when the server wants this session closed (replaced, revoked,
    /// shutting down).
    pub close: oneshot::Receiver<String>,
    /// Removes the session from the hub when dropped.
    pub guard: SessionGuard,
}

/// Unregisters a session on drop and logs `Agent Disconnected` with the reason it was given.
pub struct SessionGuard {
    hub: Hub,
    agent_id: AgentId,
    session: u64,
    reason: String,
}

impl SessionGuard {
    /// Records why the session is ending, for the log line written on drop.
    pub fn set_reason(&mut self, reason: impl Into<String>) {
        self.reason = reason.into();
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let removed = {
            let mut sessions = lock(&self.hub.inner.sessions);
            match sessions.get(&self.agent_id) {
                Some(entry) if entry.session == self.session => {
                    sessions.remove(&self.agent_id);
                    true
                }
                // Replaced by a newer session, which stays registered.
                _ => false,
            }
        };
        self.hub.mark_seen(self.agent_id);
        tracing::info!(agent_id = %self.agent_id, reason = %self.reason, "Agent Disconnected");
        if removed {
            if let Some(relay) = &self.hub.inner.relay {
                relay.released(self.agent_id);
            }
            self.hub.publish(HubEvent::AgentStatus {
                agent_id: self.agent_id,
                status: AgentStatus::Disconnected,
            });
        }
    }
}

/// One agent's turn to be handed jobs, from [`Hub::send_turn`]; the next waiting gets it on drop.
pub struct SendTurn {
    hub: Hub,
    agent_id: AgentId,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for SendTurn {
    fn drop(&mut self) {
        let mut turns = lock(&self.hub.inner.send_turns);
        // Clones are only made under this lock: two references are the map's and this turn's,
        // so nobody waits for it and the agent's entry can go.
        if turns
            .get(&self.agent_id)
            .is_some_and(|turn| Arc::strong_count(turn) == 2)
        {
            turns.remove(&self.agent_id);
        }
    }
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A hub that is one of several replicas, linked to the others by `relay`.
    pub fn with_relay(relay: Option<Relay>) -> Self {
        Self {
            inner: Arc::new(Inner {
                relay,
                ..Inner::default()
            }),
        }
    }

    /// The link to the other replicas, if there are any.
    pub fn relay(&self) -> Option<&Relay> {
        self.inner.relay.as_ref()
    }

    /// Where `agent_id`'s socket is.
    pub fn holder(&self, agent_id: AgentId) -> Holder {
        if lock(&self.inner.sessions).contains_key(&agent_id) {
            return Holder::Here;
        }
        match lock(&self.inner.remote).get(&agent_id) {
            Some(replica) => Holder::Replica(replica.clone()),
            None => Holder::Nowhere,
        }
    }

    /// The agents whose sockets this replica holds.
    pub fn local_agents(&self) -> Vec<AgentId> {
        lock(&self.inner.sessions).keys().copied().collect()
    }

    /// Replaces what this replica knows of the agents others hold (read from their leases).
    pub fn set_held_elsewhere(&self, held: HashMap<AgentId, ReplicaId>) {
        *lock(&self.inner.remote) = held;
    }

    /// An event another replica published: its tabs-facing part is published here, and an
    /// agent's status updates where this replica thinks the agent is.
    pub fn publish_relayed(&self, from: &ReplicaId, event: serde_json::Value) {
        let event = match serde_json::from_value::<RelayedEvent>(event) {
            Ok(event) => event.into_event(),
            Err(error) => {
                tracing::debug!(%error, "skipping an event from another replica that is not understood");
                return;
            }
        };
        if let HubEvent::AgentStatus { agent_id, status } = &event {
            let mut remote = lock(&self.inner.remote);
            match status {
                AgentStatus::Connected => {
                    remote.insert(*agent_id, from.clone());
                }
                AgentStatus::Disconnected => {
                    if remote.get(agent_id) == Some(from) {
                        remote.remove(agent_id);
                    }
                    drop(remote);
                    // It left that replica for another (or this one): it is still connected.
                    if self.holder(*agent_id) != Holder::Nowhere {
                        return;
                    }
                }
            }
        }
        let _ = self.inner.events.send(event);
    }

    /// Registers a live session for `agent_id`, closing any older one. Returns `None` while the
    /// server is shutting down.
    pub fn register(&self, agent_id: AgentId) -> Option<Session> {
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return None;
        }
        let session = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let (outbound_tx, outbound) = mpsc::channel(OUTBOUND_QUEUE);
        let (close_tx, close) = oneshot::channel();
        let entry = Entry {
            session,
            outbound: outbound_tx,
            close: Some(close_tx),
        };
        let replaced = lock(&self.inner.sessions).insert(agent_id, entry);
        lock(&self.inner.remote).remove(&agent_id);
        if let Some(relay) = &self.inner.relay {
            relay.held(agent_id);
        }
        if let Some(mut old) = replaced {
            if let Some(close) = old.close.take() {
                let _ = close.send("replaced by a newer connection of the same agent".into());
            }
        }
        self.mark_seen(agent_id);
        tracing::info!(agent_id = %agent_id, "Agent Connected");
        self.publish(HubEvent::AgentStatus {
            agent_id,
            status: AgentStatus::Connected,
        });
        Some(Session {
            outbound,
            close,
            guard: SessionGuard {
                hub: self.clone(),
                agent_id,
                session,
                reason: "connection closed".into(),
            },
        })
    }

    /// Whether the agent is connected, to this replica or another.
    pub fn is_connected(&self, agent_id: AgentId) -> bool {
        self.holder(agent_id) != Holder::Nowhere
    }

    /// How widely agents should spread their first reconnect after losing this server (see
    /// [`reconnect_window_secs`]). Sized from the registered fleet, so the first agents to
    /// connect get the same advice as the last.
    pub fn reconnect_window_secs(&self) -> u64 {
        let fleet = self
            .inner
            .fleet_size
            .load(Ordering::Relaxed)
            .max(self.connected_count());
        let replicas = self.inner.relay.as_ref().is_some_and(Relay::has_others);
        reconnect_window_secs(fleet, replicas)
    }

    /// Records how many agents are registered (see [`Hub::reconnect_window_secs`]).
    pub fn set_fleet_size(&self, agents: usize) {
        self.inner.fleet_size.store(agents, Ordering::Relaxed);
    }

    pub fn connected_count(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// Queues a message for an agent without waiting.
    pub fn send(&self, agent_id: AgentId, message: ServerToAgent) -> Result<(), SendError> {
        let outbound = lock(&self.inner.sessions)
            .get(&agent_id)
            .map(|entry| entry.outbound.clone())
            .ok_or(SendError::NotConnected)?;
        outbound
            .try_send(Box::new(message))
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SendError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => SendError::NotConnected,
            })
    }

    /// Queues a message for an agent, waiting up to `timeout` for room; [`SendError::QueueFull`]
    /// when there was none by then.
    pub async fn send_waiting(
        &self,
        agent_id: AgentId,
        message: ServerToAgent,
        timeout: std::time::Duration,
    ) -> Result<(), SendError> {
        let outbound = lock(&self.inner.sessions)
            .get(&agent_id)
            .map(|entry| entry.outbound.clone())
            .ok_or(SendError::NotConnected)?;
        outbound
            .send_timeout(Box::new(message), timeout)
            .await
            .map_err(|error| match error {
                mpsc::error::SendTimeoutError::Timeout(_) => SendError::QueueFull,
                mpsc::error::SendTimeoutError::Closed(_) => SendError::NotConnected,
            })
    }

    /// Waits for the turn to hand `agent_id` jobs. Whoever holds it sends the jobs waiting in
    /// the order they were queued, so two jobs of one project, queued through different
    /// replicas or prepared at different speeds, still reach the agent (which runs a project's
    /// jobs in the order they arrive) oldest first. Turns are taken in the order asked.
    pub async fn send_turn(&self, agent_id: AgentId) -> SendTurn {
        let turn = lock(&self.inner.send_turns)
            .entry(agent_id)
            .or_default()
            .clone();
        SendTurn {
            hub: self.clone(),
            agent_id,
            _turn: turn.lock_owned().await,
        }
    }

    /// Asks an agent which services a compose project defines, waiting up to `timeout`. A
    /// question sent to a session that was replaced meanwhile (the agent reconnected) went down
    /// with that session's queue, so it is asked again on the new one. An agent another replica
    /// holds is asked by that replica.
    pub async fn inspect(
        &self,
        agent_id: AgentId,
        project_id: ProjectId,
        directory: String,
        compose_file: Option<String>,
        timeout: std::time::Duration,
    ) -> InspectResult {
        if let (Holder::Replica(holder), Some(relay)) = (self.holder(agent_id), self.relay()) {
            return relay
                .inspect(
                    &holder,
                    agent_id,
                    project_id,
                    directory,
                    compose_file,
                    timeout,
                )
                .await;
        }
        let request_id = JobId(uuid::Uuid::new_v4());
        let (answer_tx, mut answer) = oneshot::channel();
        lock(&self.inner.inspections).insert(request_id, answer_tx);
        let request = Inspect {
            request_id,
            directory,
            compose_file,
            project_id: Some(project_id),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let result = async {
            let mut asked = None;
            loop {
                let session = self.session_of(agent_id);
                if session.is_none() {
                    return Err(SendError::NotConnected.to_string());
                }
                if session != asked {
                    self.send(agent_id, ServerToAgent::Inspect(request.clone()))
                        .map_err(|error| error.to_string())?;
                    asked = session;
                }
                let check = (tokio::time::Instant::now() + std::time::Duration::from_millis(500))
                    .min(deadline);
                match tokio::time::timeout_at(check, &mut answer).await {
                    Ok(Ok(result)) => return result,
                    Ok(Err(_)) => return Err("the agent did not answer".into()),
                    Err(_) if tokio::time::Instant::now() >= deadline => {
                        return Err("the agent did not answer in time".into())
                    }
                    Err(_) => continue,
                }
            }
        }
        .await;
        lock(&self.inner.inspections).remove(&request_id);
        result
    }

    /// The number of the agent's live session, if it has one.
    fn session_of(&self, agent_id: AgentId) -> Option<u64> {
        lock(&self.inner.sessions)
            .get(&agent_id)
            .map(|entry| entry.session)
    }

    /// Hands an agent's answer to the [`Hub::inspect`] waiting for it.
    pub fn complete_inspection(&self, answer: Inspected) {
        if let Some(waiting) = lock(&self.inner.inspections).remove(&answer.request_id) {
            let _ = waiting.send(answer.result);
        }
    }

    /// Asks an agent's session to close (e.g. its token was revoked).
    pub fn disconnect(&self, agent_id: AgentId, reason: &str) {
        if let Some(entry) = lock(&self.inner.sessions).get_mut(&agent_id) {
            if let Some(close) = entry.close.take() {
                let _ = close.send(reason.to_string());
            }
        }
    }

    /// Closes every session and refuses new ones; lets a graceful shutdown finish.
    pub fn shut_down(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.closing.send_replace(true);
        for entry in lock(&self.inner.sessions).values_mut() {
            if let Some(close) = entry.close.take() {
                let _ = close.send("server shutting down".into());
            }
        }
    }

    /// Waits (up to `timeout`) until every session closed, after [`Hub::shut_down`].
    pub async fn sessions_ended(&self, timeout: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.connected_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Notes that the agent was heard from now; written to the database by the flusher.
    pub fn mark_seen(&self, agent_id: AgentId) {
        lock(&self.inner.seen).insert(agent_id, OffsetDateTime::now_utc());
    }

    /// Resolves when the server starts shutting down.
    pub async fn closing(&self) {
        let mut closing = self.inner.closing.subscribe();
        // The sender lives as long as the hub, so waiting cannot fail while we hold `self`.
        let _ = closing.wait_for(|closing| *closing).await;
    }

    /// Every event, this replica's and those relayed from others: what tabs show.
    pub fn subscribe(&self) -> broadcast::Receiver<HubEvent> {
        self.inner.events.subscribe()
    }

    /// The events of what happened on this replica only: for reactions that must run once
    /// (notifications, a push's follow-up deploy), by the replica where it happened. Agents'
    /// statuses are not among them: [`Hub::agent_changes`] has the newest of each.
    pub fn subscribe_local(&self) -> broadcast::Receiver<HubEvent> {
        self.inner.local_events.subscribe()
    }

    /// Says that some credentials of `user` were revoked, so their open feeds, here and on the
    /// other replicas, check theirs again now rather than at their next periodic check.
    pub fn credentials_revoked(&self, user: UserId) {
        if let Some(relay) = &self.inner.relay {
            relay.broadcast(Message::CredentialsRevoked { user_id: user });
        }
        self.credentials_revoked_here(user);
    }

    /// [`Hub::credentials_revoked`] for this replica's feeds only (another replica said so).
    pub fn credentials_revoked_here(&self, user: UserId) {
        let _ = self.inner.revoked.send(user);
    }

    /// Revocations as [`Hub::credentials_revoked`] announces them. A receiver that lags has
    /// missed some: it should check its credentials.
    pub fn revocations(&self) -> broadcast::Receiver<UserId> {
        self.inner.revoked.subscribe()
    }

    /// Tells the dashboard's listeners, here and on the other replicas; nobody listening is
    /// fine.
    pub fn publish(&self, event: HubEvent) {
        if let Some(relay) = &self.inner.relay {
            let relayed =
                RelayedEvent::of(&event).and_then(|event| serde_json::to_value(event).ok());
            match (relayed, &event) {
                (Some(relayed), HubEvent::AgentStatus { agent_id, .. }) => {
                    relay.broadcast_status(*agent_id, relayed);
                }
                (Some(relayed), _) => relay.broadcast(Message::Event(relayed)),
                (None, _) => {}
            }
        }
        match &event {
            // Not on the local channel: a fleet reconnecting at once (a restart) would push
            // what must not be missed there (a deploy's end) out of its buffer before the
            // notifier's next turn. Only an agent's newest status counts: it waits here.
            HubEvent::AgentStatus { agent_id, status } => {
                lock(&self.inner.agent_changes).insert(*agent_id, *status);
                self.inner.agent_changed.notify_one();
            }
            _ => {
                let _ = self.inner.local_events.send(event.clone());
            }
        }
        let _ = self.inner.events.send(event);
    }

    /// Waits until agents of this replica connected or disconnected, and returns the newest
    /// status of each since the last call (for one reader: the notifier). Cancel-safe.
    pub async fn agent_changes(&self) -> HashMap<AgentId, AgentStatus> {
        loop {
            let changes = self.take_agent_changes();
            if !changes.is_empty() {
                return changes;
            }
            self.inner.agent_changed.notified().await;
        }
    }

    /// [`Hub::agent_changes`] without waiting: empty when there are none.
    pub fn take_agent_changes(&self) -> HashMap<AgentId, AgentStatus> {
        std::mem::take(&mut *lock(&self.inner.agent_changes))
    }

    /// Writes the last-seen times gathered since the previous call in one transaction.
    pub async fn flush_last_seen(&self, store: &Store) {
        let batch: Vec<_> = std::mem::take(&mut *lock(&self.inner.seen))
            .into_iter()
            .collect();
        if let Err(error) = store.record_last_seen(&batch).await {
            tracing::warn!(%error, agents = batch.len(), "could not record last-seen times");
        }
    }

    /// Closes the sessions of agents whose token was revoked since `since` (by this server,
    /// another replica or the `agents revoke` command) and returns the time checked up to.
    pub async fn close_revoked(&self, store: &Store, since: i64) -> i64 {
        let checked_at = crate::db::now_ms();
        match store.revoked_since(since).await {
            Ok(revoked) => {
                for agent_id in revoked {
                    self.disconnect(agent_id, "agent token revoked");
                }
                checked_at
            }
            Err(error) => {
                tracing::warn!(%error, "could not check for revoked agent tokens");
                since
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use uuid::Uuid;

    fn agent() -> AgentId {
        AgentId(Uuid::new_v4())
    }

    fn project() -> ProjectId {
        ProjectId(Uuid::new_v4())
    }

    #[tokio::test]
    async fn dropping_the_guard_unregisters_and_publishes_disconnected() {
        let hub = Hub::new();
        let mut events = hub.subscribe();
        let id = agent();
        let session = hub.register(id).unwrap();
        assert!(hub.is_connected(id));
        drop(session);
        assert!(!hub.is_connected(id));
        let statuses: Vec<_> = [events.recv().await.unwrap(), events.recv().await.unwrap()]
            .into_iter()
            .map(|event| match event {
                HubEvent::AgentStatus { status, .. } => status,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            statuses,
            [AgentStatus::Connected, AgentStatus::Disconnected]
        );
    }

    #[tokio::test]
    async fn a_second_connection_replaces_the_first_which_is_told_why() {
        let hub = Hub::new();
        let id = agent();
        let first = hub.register(id).unwrap();
        let second = hub.register(id).unwrap();
        let reason = first.close.await.unwrap();
        assert!(reason.contains("replaced"), "{reason}");
        drop(first.guard);
        assert!(hub.is_connected(id), "the newer session stays registered");
        assert_eq!(hub.connected_count(), 1);
        drop(second);
        assert!(!hub.is_connected(id));
    }

    #[tokio::test]
    async fn sends_fail_fast_when_the_agent_is_gone_or_its_queue_is_full() {
        let hub = Hub::new();
        let id = agent();
        let message = ServerToAgent::HeartbeatAck(shared::protocol::Heartbeat { seq: 1 });
        assert_eq!(hub.send(id, message.clone()), Err(SendError::NotConnected));
        let _session = hub.register(id).unwrap();
        for _ in 0..OUTBOUND_QUEUE {
            hub.send(id, message.clone()).unwrap();
        }
        assert_eq!(hub.send(id, message), Err(SendError::QueueFull));
    }

    #[tokio::test]
    async fn shutting_down_closes_sessions_and_refuses_new_ones() {
        let hub = Hub::new();
        let session = hub.register(agent()).unwrap();
        hub.shut_down();
        assert_eq!(session.close.await.unwrap(), "server shutting down");
        assert!(hub.register(agent()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_inspection_is_asked_again_when_the_agent_reconnects_before_answering() {
        let hub = Hub::new();
        let id = agent();
        let mut first = hub.register(id).unwrap();
        let asking = {
            let hub = hub.clone();
            tokio::spawn(async move {
                hub.inspect(
                    id,
                    project(),
                    "/srv/shop".into(),
                    None,
                    Duration::from_secs(10),
                )
                .await
            })
        };
        let Some(message) = first.outbound.recv().await else {
            panic!("nothing asked");
        };
        assert!(matches!(*message, ServerToAgent::Inspect(_)));
        // The agent reconnects; the question went down with the first session.
        let mut second = hub.register(id).unwrap();
        drop(first);
        let Some(message) = second.outbound.recv().await else {
            panic!("not asked again");
        };
        let ServerToAgent::Inspect(request) = *message else {
            panic!("not an inspection");
        };
        hub.complete_inspection(Inspected {
            request_id: request.request_id,
            result: Ok(vec![ServiceName::parse("web").unwrap()]),
        });
        let services = asking.await.unwrap().unwrap();
        assert_eq!(services, [ServiceName::parse("web").unwrap()]);
    }

    #[tokio::test]
    async fn an_inspection_of_an_agent_that_is_not_connected_fails_at_once() {
        let hub = Hub::new();
        let error = hub
            .inspect(
                agent(),
                project(),
                "/srv".into(),
                None,
                Duration::from_secs(10),
            )
            .await
            .unwrap_err();
        assert_eq!(error, "the agent is not connected");
    }

    #[tokio::test]
    async fn an_agent_that_moved_between_replicas_stays_connected_whatever_order_the_news_come_in()
    {
        let hub = Hub::new();
        let mut events = hub.subscribe();
        let id = agent();
        let (a, c) = (ReplicaId::from("a"), ReplicaId::from("c"));
        let status = |status: AgentStatus| {
            serde_json::to_value(RelayedEvent::AgentStatus {
                agent_id: id,
                status,
            })
            .unwrap()
        };
        hub.publish_relayed(&a, status(AgentStatus::Connected));
        assert_eq!(hub.holder(id), Holder::Replica(a.clone()));
        // It left replica a for replica c; c says so before a does.
        hub.publish_relayed(&c, status(AgentStatus::Connected));
        hub.publish_relayed(&a, status(AgentStatus::Disconnected));
        assert_eq!(hub.holder(id), Holder::Replica(c.clone()));
        assert!(hub.is_connected(id));
        let mut seen = Vec::new();
        while let Ok(HubEvent::AgentStatus { status, .. }) = events.try_recv() {
            seen.push(status);
        }
        assert_eq!(
            seen,
            [AgentStatus::Connected, AgentStatus::Connected],
            "tabs are never told it left"
        );
        // Then c loses it: now it is gone, and tabs are told.
        hub.publish_relayed(&c, status(AgentStatus::Disconnected));
        assert_eq!(hub.holder(id), Holder::Nowhere);
        assert!(matches!(
            events.try_recv(),
            Ok(HubEvent::AgentStatus {
                status: AgentStatus::Disconnected,
                ..
            })
        ));
    }

    #[test]
    fn the_reconnect_window_follows_the_registered_fleet_not_the_arrival_order() {
        let hub = Hub::new();
        assert_eq!(
            hub.reconnect_window_secs(),
            1,
            "a small fleet comes back at once"
        );
        hub.set_fleet_size(10_000);
        // The very first agent of a 10,000-agent fleet is told the same as the last one.
        assert_eq!(hub.reconnect_window_secs(), 25);
        hub.set_fleet_size(1_000_000);
        assert_eq!(
            hub.reconnect_window_secs(),
            60,
            "never longer than the backoff cap"
        );
    }

    #[test]
    fn replicas_spread_a_large_fleet_over_half_a_minute_at_least() {
        assert_eq!(reconnect_window_secs(50, true), 1, "a small fleet at once");
        assert_eq!(reconnect_window_secs(1_000, true), 10);
        assert_eq!(reconnect_window_secs(1_000, false), 2);
        assert_eq!(reconnect_window_secs(8_000, true), 30);
        assert_eq!(reconnect_window_secs(8_000, false), 20);
        assert_eq!(
            reconnect_window_secs(20_000, true),
            50,
            "the admission rate rules"
        );
        assert_eq!(reconnect_window_secs(1_000_000, true), 60);
    }
}
