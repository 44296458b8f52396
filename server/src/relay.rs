//! The link between replicas of the server that share one PostgreSQL database.
//!
//! Every replica has an id. It records which agents it holds with a lease (renewed every
//! [`LEASE_RENEWAL`], gone [`LEASE_TTL`] after a replica died), and it hands other replicas
//! what concerns an agent they hold, or tabs they serve, as [`Message`]s:
//!
//! 1. the message is stored in `replica_messages` (addressed to one replica, or to all);
//! 2. in the same statement, `NOTIFY` tells the addressee's channel the row's id, and only
//!    that, so a notification never nears PostgreSQL's 8,000-byte limit whatever it carries;
//! 3. the addressee's listener reads the row (removing it when it was addressed to it alone)
//!    and hands the message to the `cluster` task, which acts on it.
//!
//! Messages leave in the order they were given, one writer per replica. A notification can be
//! lost (the listener's connection dropped): the listener then reads what it missed from the
//! table. Nothing durable depends on a message: a job waiting for an agent held elsewhere stays
//! `queued` in the database, and the replica holding the agent sends such jobs again every few
//! seconds, so a lost message delays a job, never loses it.
//!
//! Secrets never travel here: a job or a log stream is handed over by id, and the replica that
//! holds the agent reads and decrypts what it needs itself.

use crate::db::{Listener, PostedMessage, Store};
use crate::sync::lock;
use serde::{Deserialize, Serialize};
use shared::protocol::LogBatch;
use shared::{AgentId, JobId, ProjectId, ServiceName, UserId};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How long a lease lasts without renewal: a replica that died gives up its agents after this.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often a replica renews the leases of the agents it holds.
pub const LEASE_RENEWAL: Duration = Duration::from_secs(10);
/// The channel every replica listens on.
const ALL: &str = "stagely_replicas";
/// The start of the channel of one replica (its id follows).
const PER_REPLICA: &str = "stagely_replica_";
/// Most messages and lease changes written in one round.
const WRITE_BATCH: usize = 256;
/// Messages waiting to be written; beyond this, new ones are dropped (and logged). Leases and
/// agents' statuses do not queue here (see [`Newest`]).
const OUTGOING_QUEUE: usize = 16_384;
/// Most agents' statuses written in one round.
const STATUS_BATCH: usize = 4_096;
/// Messages read, waiting for the `cluster` task.
const INCOMING_QUEUE: usize = 4_096;
/// Most notices whose messages are read in one round.
const READ_BATCH: usize = 512;

/// An agent's answer to an inspection: the compose file's services, or why not.
pub type InspectAnswer = Result<Vec<ServiceName>, String>;

/// One replica's id: a random UUID in hex, fresh at every start.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplicaId(String);

impl ReplicaId {
    fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    fn channel(&self) -> String {
        format!("{PER_REPLICA}{}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ReplicaId {
    fn from(id: &str) -> Self {
        Self(id.to_string())
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one replica hands another.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Message {
    /// A hub event for every replica's tabs (the hub's own encoding of it).
    Event(serde_json::Value),
    /// Jobs of an agent you hold wait `queued`: send them.
    JobsWaiting { agent_id: AgentId },
    /// Start this log stream on an agent you hold, for the sender's tabs.
    StartLogs {
        agent_id: AgentId,
        project_id: ProjectId,
        stream_id: JobId,
        tail: u32,
    },
    /// Stop a log stream of an agent you hold.
    StopLogs { agent_id: AgentId, stream_id: JobId },
    /// Lines of a log stream the addressee started.
    Logs { agent_id: AgentId, batch: LogBatch },
    /// A deploy recreated a project's containers: restart its watched log streams.
    RestartLogs { project_id: ProjectId },
    /// Ask an agent you hold which services a compose project defines.
    Inspect {
        request_id: JobId,
        agent_id: AgentId,
        project_id: ProjectId,
        directory: String,
        compose_file: Option<String>,
    },
    /// The answer to an [`Message::Inspect`].
    Inspected {
        request_id: JobId,
        result: InspectAnswer,
    },
    /// Some credentials of this user were revoked (a session, an API token, the whole account):
    /// your feeds of theirs check their credentials now, not at their next periodic check.
    CredentialsRevoked { user_id: UserId },
}

/// A message and the replica it came from.
#[derive(Debug)]
pub struct Envelope {
    pub from: ReplicaId,
    pub message: Message,
}

enum Op {
    Post(Option<ReplicaId>, Box<Message>),
    Close(oneshot::Sender<()>),
}

/// What only the newest word counts of, per agent, until the writer's next round: whether this
/// replica holds the agent, and the agent's status event for the others. A burst (a fleet
/// reconnecting at once) can outrun the writer when the database is busy; these then wait here,
/// one entry per agent, instead of filling the queue and being dropped (a dropped one left the
/// other replicas routing the agent's jobs by an old lease until the next renewal).
#[derive(Default)]
struct Newest {
    /// Agent → whether it is held here (a hello) or not (its socket closed).
    leases: HashMap<AgentId, bool>,
    /// Agent → its last status event, encoded.
    statuses: HashMap<AgentId, String>,
}

/// This replica's link to the others; cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    id: ReplicaId,
    store: Store,
    outgoing: mpsc::Sender<Op>,
    /// Written by the writer with what `outgoing` holds; [`Inner::wake`] tells it there is some.
    newest: Mutex<Newest>,
    wake: tokio::sync::Notify,
    incoming: Mutex<Option<mpsc::Receiver<Envelope>>>,
    inspections: Mutex<HashMap<JobId, oneshot::Sender<InspectAnswer>>>,
    /// Log streams started here for another replica's tabs, with that replica and the agent.
    stream_origins: Mutex<HashMap<JobId, (ReplicaId, AgentId)>>,
    /// Replicas with a live lease, this one included, as last read.
    live_replicas: std::sync::atomic::AtomicUsize,
    stop: watch::Sender<bool>,
}

impl Relay {
    /// Starts the link when the database can be shared (PostgreSQL); `None` on SQLite.
    pub async fn start(store: &Store) -> Result<Option<Self>, crate::db::DbError> {
        if !store.is_shared() {
            return Ok(None);
        }
        let id = ReplicaId::random();
        let own = id.channel();
        let Some(listener) = store.listen(&[ALL, own.as_str()]).await? else {
            return Ok(None);
        };
        let newest = store.newest_message().await?;
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_QUEUE);
        let relay = Self {
            inner: Arc::new(Inner {
                id,
                store: store.clone(),
                outgoing,
                newest: Mutex::default(),
                wake: tokio::sync::Notify::new(),
                incoming: Mutex::new(Some(incoming)),
                inspections: Mutex::default(),
                stream_origins: Mutex::default(),
                live_replicas: std::sync::atomic::AtomicUsize::new(1),
                stop: watch::channel(false).0,
            }),
        };
        tracing::info!(replica_id = %relay.inner.id, "replica link to the others is up (PostgreSQL LISTEN/NOTIFY)");
        tokio::spawn(write(relay.clone(), outgoing_rx));
        tokio::spawn(read(relay.clone(), listener, newest, incoming_tx));
        Ok(Some(relay))
    }

    pub fn id(&self) -> &ReplicaId {
        &self.inner.id
    }

    /// The messages for this replica; the first caller gets them (the `cluster` task).
    pub fn take_incoming(&self) -> Option<mpsc::Receiver<Envelope>> {
        lock(&self.inner.incoming).take()
    }

    fn queue(&self, op: Op) {
        if self.inner.outgoing.try_send(op).is_err() {
            tracing::warn!(
                "the replica link's queue is full; a message to other replicas was dropped"
            );
        }
    }

    /// Leaves the newest word about an agent for the writer's next round.
    fn note(&self, write: impl FnOnce(&mut Newest)) {
        write(&mut lock(&self.inner.newest));
        self.inner.wake.notify_one();
    }

    /// This replica now holds `agent`'s socket.
    pub fn held(&self, agent: AgentId) {
        self.note(|newest| {
            newest.leases.insert(agent, true);
        });
    }

    /// This replica no longer holds `agent`'s socket.
    pub fn released(&self, agent: AgentId) {
        self.note(|newest| {
            newest.leases.insert(agent, false);
        });
    }

    /// The leases waiting to be written, and up to [`STATUS_BATCH`] agents' statuses (the
    /// writer is woken again for the rest).
    fn take_newest(&self) -> (HashMap<AgentId, bool>, Vec<String>) {
        let mut newest = lock(&self.inner.newest);
        let leases = std::mem::take(&mut newest.leases);
        let agents: Vec<AgentId> = newest.statuses.keys().take(STATUS_BATCH).copied().collect();
        let statuses = agents
            .iter()
            .filter_map(|agent| newest.statuses.remove(agent))
            .collect();
        if !newest.statuses.is_empty() {
            self.inner.wake.notify_one();
        }
        (leases, statuses)
    }

    /// Hands every other replica `agent`'s status event (a hub event), replacing one about it
    /// that is still waiting to be written: only the newest counts.
    pub fn broadcast_status(&self, agent: AgentId, event: serde_json::Value) {
        // Our own enum of ids, strings and numbers always encodes.
        if let Ok(body) = serde_json::to_string(&Message::Event(event)) {
            self.note(|newest| {
                newest.statuses.insert(agent, body);
            });
        }
    }

    /// Hands `message` to one replica.
    pub fn send_to(&self, replica: &ReplicaId, message: Message) {
        self.queue(Op::Post(Some(replica.clone()), Box::new(message)));
    }

    /// Hands `message` to every other replica.
    pub fn broadcast(&self, message: Message) {
        self.queue(Op::Post(None, Box::new(message)));
    }

    /// Renews this replica's lease and those of the agents held here.
    pub async fn renew(&self, agents: &[AgentId]) {
        let now = crate::db::now_ms();
        let expires_at = now + LEASE_TTL.as_millis() as i64;
        let id = self.inner.id.as_str();
        if let Err(error) = self.inner.store.renew_replica(id, expires_at).await {
            tracing::warn!(%error, "could not renew this replica's lease");
        }
        let renewed = self.inner.store.renew_agents(id, agents, now, expires_at);
        if let Err(error) = renewed.await {
            tracing::warn!(%error, "could not renew the leases of this replica's agents");
        }
    }

    /// Whether other replicas were up at the last lease renewal (or have spoken since).
    pub fn has_others(&self) -> bool {
        self.inner.live_replicas.load(Ordering::Relaxed) > 1
    }

    /// Reads which replicas are up and records how many (see [`Relay::has_others`]); `None`
    /// when it could not be read.
    pub async fn live_replicas(&self) -> Option<Vec<String>> {
        let live = match self.inner.store.live_replicas(crate::db::now_ms()).await {
            Ok(live) => live,
            Err(error) => {
                tracing::warn!(%error, "could not read which replicas are up");
                return None;
            }
        };
        let me = self.inner.id.as_str();
        let others = live.iter().filter(|id| *id != me).count();
        self.inner
            .live_replicas
            .store(others + 1, Ordering::Relaxed);
        Some(live)
    }

    /// The log streams started here for replicas that are gone (stopped or dead without
    /// saying so), with their agent: nobody watches them any more. They are forgotten.
    pub async fn streams_of_gone_replicas(&self) -> Vec<(AgentId, JobId)> {
        let Some(live) = self.live_replicas().await else {
            return Vec::new();
        };
        let mut origins = lock(&self.inner.stream_origins);
        let gone: Vec<JobId> = origins
            .iter()
            .filter(|(_, (origin, _))| !live.iter().any(|id| id == origin.as_str()))
            .map(|(stream, _)| *stream)
            .collect();
        gone.into_iter()
            .filter_map(|stream| origins.remove(&stream).map(|(_, agent)| (agent, stream)))
            .collect()
    }

    /// The agents other replicas hold, by lease; `None` when it could not be read.
    pub async fn held_elsewhere(&self) -> Option<HashMap<AgentId, ReplicaId>> {
        let id = self.inner.id.as_str();
        match self
            .inner
            .store
            .agents_held_elsewhere(id, crate::db::now_ms())
            .await
        {
            Ok(leases) => Some(
                leases
                    .into_iter()
                    .map(|(agent, replica)| (agent, ReplicaId(replica)))
                    .collect(),
            ),
            Err(error) => {
                tracing::warn!(%error, "could not read which replica holds which agent");
                None
            }
        }
    }

    /// Asks the replica holding `agent` to inspect a compose project, waiting up to `timeout`.
    pub async fn inspect(
        &self,
        holder: &ReplicaId,
        agent_id: AgentId,
        project_id: ProjectId,
        directory: String,
        compose_file: Option<String>,
        timeout: Duration,
    ) -> InspectAnswer {
        let request_id = JobId(uuid::Uuid::new_v4());
        let (answer_tx, answer) = oneshot::channel();
        lock(&self.inner.inspections).insert(request_id, answer_tx);
        self.send_to(
            holder,
            Message::Inspect {
                request_id,
                agent_id,
                project_id,
                directory,
                compose_file,
            },
        );
        let result = match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the agent did not answer".into()),
            Err(_) => Err(format!(
                "the agent did not answer in time: the server replica that holds its connection did not reply within {} s",
                timeout.as_secs()
            )),
        };
        lock(&self.inner.inspections).remove(&request_id);
        result
    }

    /// Notes that `stream` was started here, on `agent`, for `origin`'s tabs.
    pub fn stream_started_for(&self, stream: JobId, agent: AgentId, origin: ReplicaId) {
        lock(&self.inner.stream_origins).insert(stream, (origin, agent));
    }

    /// Forgets a stream started for another replica (it was stopped).
    pub fn stream_stopped(&self, stream: JobId) {
        lock(&self.inner.stream_origins).remove(&stream);
    }

    /// The replica whose tabs a stream started here feeds, if another one's.
    pub fn origin_of_stream(&self, stream: JobId) -> Option<ReplicaId> {
        lock(&self.inner.stream_origins)
            .get(&stream)
            .map(|(origin, _)| origin.clone())
    }

    /// Sends what is queued, gives up every lease and stops listening.
    pub async fn close(&self) {
        let (done_tx, done) = oneshot::channel();
        if self.inner.outgoing.send(Op::Close(done_tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
        }
        self.inner.stop.send_replace(true);
    }

    fn complete_inspection(&self, request_id: JobId, result: InspectAnswer) {
        if let Some(waiting) = lock(&self.inner.inspections).remove(&request_id) {
            let _ = waiting.send(result);
        }
    }
}

/// Writes what this replica hands the others, in order.
async fn write(relay: Relay, mut ops: mpsc::Receiver<Op>) {
    let inner = &relay.inner;
    let (store, me) = (&inner.store, inner.id.as_str());
    let mut posts: Vec<(Option<String>, String)> = Vec::new();
    // What queued up is written together: the leases taken and given up and the newest status
    // of each agent that has one waiting (an agent's last word wins), then the posts in order. A burst of connections (a restart, a replica's agents failing over) is a few
    // statements instead of two per agent.
    loop {
        let first = tokio::select! {
            op = ops.recv() => match op {
                Some(op) => Some(op),
                None => return,
            },
            () = inner.wake.notified() => None,
        };
        let mut closing = None;
        let mut taken = 0;
        let mut next = first;
        while let Some(op) = next.take() {
            match op {
                // Our own enum of ids, strings and numbers always encodes.
                Op::Post(target, message) => {
                    if let Ok(body) = serde_json::to_string(&message) {
                        posts.push((target.map(|target| target.0), body));
                    }
                }
                Op::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
            taken += 1;
            if taken < WRITE_BATCH {
                next = ops.try_recv().ok();
            }
        }
        write_newest(&relay, &mut posts).await;
        flush(store, me, &mut posts).await;
        if let Some(done) = closing {
            // Every agent's last word, however many: a replica stopping with thousands of
            // agents leaves each one's "disconnected" for the others' tabs and routing.
            while write_newest(&relay, &mut posts).await {
                flush(store, me, &mut posts).await;
            }
            if let Err(error) = store.release_all_agents(me).await {
                tracing::warn!(%error, "could not release this replica's agent leases; they expire on their own");
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Writes the leases waiting in [`Newest`] and puts the agents' statuses waiting there in front
/// of `posts`: a replica told of a connection finds its lease, and a status is written before
/// the posts of its round (it may so reach the others before messages queued just before it,
/// such as an agent's last log lines; tabs show those all the same, and nothing routes by
/// that order). Whether there was anything.
async fn write_newest(relay: &Relay, posts: &mut Vec<(Option<String>, String)>) -> bool {
    let (leases, statuses) = relay.take_newest();
    let any = !leases.is_empty() || !statuses.is_empty();
    posts.splice(0..0, statuses.into_iter().map(|body| (None, body)));
    write_leases(&relay.inner.store, relay.inner.id.as_str(), leases).await;
    any
}

/// Takes the leases of the agents that said hello here and gives up those whose socket closed.
async fn write_leases(store: &Store, me: &str, leases: HashMap<AgentId, bool>) {
    if leases.is_empty() {
        return;
    }
    let (held, released): (Vec<_>, Vec<_>) = leases.into_iter().partition(|(_, held)| *held);
    let held: Vec<AgentId> = held.into_iter().map(|(agent, _)| agent).collect();
    let released: Vec<AgentId> = released.into_iter().map(|(agent, _)| agent).collect();
    let expires_at = crate::db::now_ms() + LEASE_TTL.as_millis() as i64;
    if let Err(error) = store.take_agents(me, &held, expires_at).await {
        tracing::warn!(%error, count = held.len(), "could not record the agents held here; the next renewal does");
    }
    if let Err(error) = store.release_agents(me, &released).await {
        tracing::warn!(%error, count = released.len(), "could not give up the leases of agents gone from here; they expire on their own");
    }
}

/// Writes the waiting posts in one statement (many messages arrive together: a burst of
/// deploys, their events, log batches), then forgets them.
async fn flush(store: &Store, me: &str, posts: &mut Vec<(Option<String>, String)>) {
    if posts.is_empty() {
        return;
    }
    // A whole batch is at stake: one more try after a moment (a dropped connection is replaced
    // by the pool), then the messages are given up, as one was before.
    if let Err(error) = store.post_messages(me, posts, ALL, PER_REPLICA).await {
        tracing::warn!(%error, count = posts.len(), "could not hand messages to the other replicas; trying once more");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Err(error) = store.post_messages(me, posts, ALL, PER_REPLICA).await {
            tracing::warn!(%error, count = posts.len(), "could not hand messages to the other replicas");
        }
    }
    posts.clear();
}

/// What the listener heard, in the order it heard it.
enum Heard {
    /// A message's id, on this replica's own channel (`targeted`) or the one for all.
    Notice { id: i64, targeted: bool },
    /// The connection dropped (why): notifications may have been lost.
    Lost(String),
}

/// Hands what the listener hears to [`read`], so notices that arrive while it reads pile up
/// and are read together. Ends when the relay stops or the server closes the database.
async fn listen(relay: Relay, mut listener: Listener, heard: mpsc::Sender<Heard>) {
    let mut stop = relay.inner.stop.subscribe();
    let store = &relay.inner.store;
    loop {
        let notice = tokio::select! {
            notice = listener.next() => notice,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let next = match notice {
            Ok(Some(notice)) => {
                let Ok(id) = notice.payload.parse::<i64>() else {
                    continue;
                };
                Heard::Notice {
                    id,
                    targeted: notice.channel != ALL,
                }
            }
            // The server is stopping: its connections are closed, nothing is missed.
            Err(_) if store.is_closed() => return,
            Err(error) => Heard::Lost(error.to_string()),
            Ok(None) => Heard::Lost("its connection was closed".to_string()),
        };
        if heard.send(next).await.is_err() {
            return;
        }
    }
}

/// Reads what other replicas hand this one: the messages of every notice heard so far in one
/// round (two statements), not one statement per notice, so a burst (an agent fleet
/// reconnecting, a wave of deploys) costs the database a few reads.
async fn read(relay: Relay, listener: Listener, mut last: i64, incoming: mpsc::Sender<Envelope>) {
    let (heard_tx, mut heard) = mpsc::channel(READ_BATCH);
    tokio::spawn(listen(relay.clone(), listener, heard_tx));
    let store = relay.inner.store.clone();
    let me = relay.inner.id.clone();
    while let Some(first) = heard.recv().await {
        let mut round = vec![first];
        while round.len() < READ_BATCH {
            match heard.try_recv() {
                Ok(next) => round.push(next),
                Err(_) => break,
            }
        }
        let lost = round.iter().find_map(|heard| match heard {
            Heard::Lost(cause) => Some(cause.clone()),
            Heard::Notice { .. } => None,
        });
        let posted = match lost {
            // Notifications were lost: read everything after the last message read (which
            // covers this round's notices too).
            Some(cause) => {
                tracing::warn!(%cause, "the replica link's listener reconnected; catching up");
                tokio::time::sleep(Duration::from_millis(200)).await;
                store.messages_after(me.as_str(), last, 10_000).await
            }
            None => {
                let (targeted, all): (Vec<_>, Vec<_>) = round
                    .iter()
                    .filter_map(|heard| match heard {
                        Heard::Notice { id, targeted } => Some((*id, *targeted)),
                        Heard::Lost(_) => None,
                    })
                    .partition(|(_, targeted)| *targeted);
                let ids = |notices: Vec<(i64, bool)>| -> Vec<i64> {
                    notices.into_iter().map(|(id, _)| id).collect()
                };
                store
                    .read_messages(&ids(targeted), &ids(all), me.as_str())
                    .await
            }
        };
        let posted = match posted {
            Ok(posted) => posted,
            Err(_) if store.is_closed() => return,
            Err(error) => {
                // Nothing of the round was taken (one statement): after a moment, everything
                // after the last message handled is read instead.
                tracing::warn!(%error, "could not read messages from other replicas; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
                match store.messages_after(me.as_str(), last, 10_000).await {
                    Ok(posted) => posted,
                    Err(error) => {
                        tracing::warn!(%error, "could not read messages from other replicas");
                        continue;
                    }
                }
            }
        };
        for PostedMessage { id, sender, body } in posted {
            last = last.max(id);
            if sender == me.as_str() {
                continue;
            }
            // Another replica is up (the next lease renewal counts them exactly).
            relay.inner.live_replicas.fetch_max(2, Ordering::Relaxed);
            let message = match serde_json::from_str::<Message>(&body) {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "skipping a message from another replica that is not understood (another version?)");
                    continue;
                }
            };
            if let Message::Inspected { request_id, result } = message {
                relay.complete_inspection(request_id, result);
                continue;
            }
            let envelope = Envelope {
                from: ReplicaId(sender),
                message,
            };
            if incoming.send(envelope).await.is_err() {
                return;
            }
        }
    }
}
