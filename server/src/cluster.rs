//! The background work of a replica among several (README, "Running several replicas"); not
//! started on SQLite, where the server is alone.
//!
//! 1. Acts on what other replicas hand this one through the [`Relay`]: jobs waiting for an
//!    agent held here, log streams to start or stop for their tabs and the lines of those
//!    streams, inspections, and their events for this replica's tabs. An agent that (re)connected
//!    elsewhere gets the log streams this replica's tabs watch restarted there.
//! 2. Every [`LEASE_RENEWAL`]: renews this replica's lease and those of the agents held here,
//!    reads which replica holds the others, and stops the log streams started here for a
//!    replica that is gone.
//! 3. Every [`SWEEP`]: sends the agents held here their jobs still `queued` (a hand-over from
//!    another replica that was lost), so durable job state stays the source of truth.

use crate::ops;
use crate::relay::{Envelope, Message, Relay, LEASE_RENEWAL};
use crate::state::AppState;
use crate::sync::lock;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often jobs left `queued` for agents held here are sent again.
const SWEEP: Duration = Duration::from_secs(5);
/// A job queued this long ago without being sent is due for the sweep.
const SWEEP_AFTER: Duration = Duration::from_secs(3);
/// How long an inspection asked by another replica may take here.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts the tasks when this server is one of several replicas; none otherwise.
pub fn spawn(state: &AppState) -> Vec<JoinHandle<()>> {
    let Some(relay) = state.hub.relay().cloned() else {
        return Vec::new();
    };
    let senders = Senders::default();
    let mut tasks = vec![
        tokio::spawn(leases(state.clone(), relay.clone())),
        tokio::spawn(sweep(state.clone(), senders.clone())),
    ];
    if let Some(incoming) = relay.take_incoming() {
        tasks.push(tokio::spawn(act(state.clone(), incoming, senders)));
    }
    tasks
}

async fn act(
    state: AppState,
    mut incoming: tokio::sync::mpsc::Receiver<Envelope>,
    senders: Senders,
) {
    let (store, vault, hub, feeds) = (&state.store, &state.vault, &state.hub, &state.logs);
    while let Some(Envelope { from, message }) = incoming.recv().await {
        match message {
            Message::Event(event) => {
                let connected = agent_connected(&event);
                hub.publish_relayed(&from, event);
                if let Some(agent) = connected {
                    // Its log streams died with its old connection: the ones our tabs watch
                    // start again on the replica that holds it now.
                    ops::logs::restart_for_agent(store, vault, hub, feeds, agent).await;
                }
            }
            Message::JobsWaiting { agent_id } => senders.send_queued_jobs(&state, agent_id),
            Message::StartLogs {
                agent_id: _,
                project_id,
                stream_id,
                tail,
            } => {
                ops::logs::start_for_replica(store, vault, hub, from, project_id, stream_id, tail)
                    .await;
            }
            Message::StopLogs {
                agent_id,
                stream_id,
            } => ops::logs::stop_for_replica(hub, agent_id, stream_id),
            Message::Logs { agent_id, batch } => ops::logs::relay(hub, feeds, agent_id, batch),
            Message::RestartLogs { project_id } => {
                ops::logs::restart(store, vault, hub, feeds, project_id).await;
            }
            Message::Inspect {
                request_id,
                agent_id,
                project_id,
                directory,
                compose_file,
            } => {
                // Answered in a task of its own: the agent may take seconds.
                let hub = hub.clone();
                tokio::spawn(async move {
                    let result = match hub.holder(agent_id) {
                        crate::hub::Holder::Here => {
                            hub.inspect(
                                agent_id,
                                project_id,
                                directory,
                                compose_file,
                                INSPECT_TIMEOUT,
                            )
                            .await
                        }
                        _ => Err("the agent is not connected".to_string()),
                    };
                    if let Some(relay) = hub.relay() {
                        relay.send_to(&from, Message::Inspected { request_id, result });
                    }
                });
            }
            Message::CredentialsRevoked { user_id } => hub.credentials_revoked_here(user_id),
            // Completed by the relay itself.
            Message::Inspected { .. } => {}
        }
    }
}

/// The agents whose queued jobs are being sent, each in a task of its own: one agent's database
/// reads and hand-over do not hold up another's (nor this replica's other messages), and a
/// burst of hand-overs for one agent is one send, plus one more if some came in during it.
#[derive(Clone, Default)]
struct Senders {
    /// Agent → whether another hand-over came in while its send ran.
    running: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<shared::AgentId, bool>>>,
}

impl Senders {
    fn send_queued_jobs(&self, state: &AppState, agent: shared::AgentId) {
        {
            let mut running = lock(&self.running);
            if let Some(again) = running.get_mut(&agent) {
                *again = true;
                return;
            }
            running.insert(agent, false);
        }
        let (senders, state) = (self.clone(), state.clone());
        tokio::spawn(async move {
            // Should a send panic, the agent is not left marked as being sent to (its later
            // hand-overs would only set the flag, and its jobs wait for the sweep).
            let _forget_on_panic = ForgetOnPanic {
                senders: senders.clone(),
                agent,
            };
            loop {
                let (store, vault, hub) = (&state.store, &state.vault, &state.hub);
                ops::deployments::send_queued_jobs(store, vault, hub, agent).await;
                let mut running = lock(&senders.running);
                if running.get(&agent) == Some(&true) {
                    running.insert(agent, false);
                    continue;
                }
                running.remove(&agent);
                return;
            }
        });
    }
}

/// Removes an agent from [`Senders::running`] when its send task unwinds.
struct ForgetOnPanic {
    senders: Senders,
    agent: shared::AgentId,
}

impl Drop for ForgetOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.senders.running).remove(&self.agent);
        }
    }
}

/// The agent an event says connected, if it is such an event.
fn agent_connected(event: &serde_json::Value) -> Option<shared::AgentId> {
    let connected = event.get("type")?.as_str()? == "agent_status"
        && event.get("status")?.as_str()? == "connected";
    if !connected {
        return None;
    }
    serde_json::from_value(event.get("agent_id")?.clone()).ok()
}

async fn leases(state: AppState, relay: Relay) {
    let mut tick = tokio::time::interval(LEASE_RENEWAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        relay.renew(&state.hub.local_agents()).await;
        if let Some(held) = relay.held_elsewhere().await {
            state.hub.set_held_elsewhere(held);
        }
        // Streams whose tabs were on a replica that is gone would run for nobody.
        for (agent, stream) in relay.streams_of_gone_replicas().await {
            ops::logs::stop_for_replica(&state.hub, agent, stream);
        }
    }
}

async fn sweep(state: AppState, senders: Senders) {
    let store = &state.store;
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let before = crate::db::now_ms() - SWEEP_AFTER.as_millis() as i64;
        let agents = match store.agents_with_queued_jobs(before).await {
            Ok(agents) => agents,
            Err(error) => {
                tracing::warn!(%error, "could not look for jobs left queued");
                continue;
            }
        };
        // Each in the agent's own send task: one slow agent holds up no other.
        for agent in agents {
            senders.send_queued_jobs(&state, agent);
        }
    }
}
