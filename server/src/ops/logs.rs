//! Container logs for the dashboard: a tab watches a project, the agent streams while anyone
//! does, and the lines are relayed to the watching tabs.
//!
//! The first watcher starts `compose logs -f` on the project's agent ([`StartLogs`], carrying
//! the project's secret values, and those replaced since its last successful deploy, so the
//! agent redacts them); the last one to leave stops it. The stream is restarted when the agent
//! reconnects and when a deploy has (re)created the containers; [`LogFeeds`] numbers the lines
//! and drops those a restart replays. A project that still shares its name with another on its
//! agent ([`Project::name_clash`]) gets no stream: Compose would mix in the other's containers.
//!
//! With several replicas, the feed lives on the replica whose tabs watch, and the agent may be
//! held by another: the start and stop go to that replica (by ids; it reads the secrets to
//! redact itself), which passes the stream's batches back to the watching replica. When the
//! agent comes back on any replica, or a deploy there recreates the containers, every replica
//! restarts the streams it feeds.

use crate::db::Store;
use crate::hub::{Holder, Hub, HubEvent};
use crate::log_feeds::LogFeeds;
use crate::relay::{Message, ReplicaId};
use crate::vault::Vault;
use shared::api::{DashboardEvent, LogCursor, LogLines, Project};
use shared::protocol::{LogBatch, StartLogs, StopLogs};
use shared::{AgentId, JobId, ProjectId, ServerToAgent};

/// Past lines asked for when a stream starts.
const FIRST_TAIL: u32 = 200;
/// Past lines asked for when a stream restarts; those already sent are dropped by timestamp.
const RESTART_TAIL: u32 = 500;

/// A tab starts watching `project` — one the person's operation already resolved (e.g.
/// [`super::projects::show`]): returns the lines to show first (those after `resume`, when the
/// tab had seen some).
pub async fn watch(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    feeds: &LogFeeds,
    project: &Project,
    resume: Option<LogCursor>,
) -> LogLines {
    let (replay, started) = feeds.watch(project, resume);
    if let Some(stream_id) = started {
        start(store, vault, hub, feeds, project, stream_id, FIRST_TAIL).await;
    }
    replay
}

/// A tab stops watching `project` (it closed, or watches another project now).
pub fn unwatch(hub: &Hub, feeds: &LogFeeds, project: ProjectId) {
    if let Some((agent, stream_id)) = feeds.unwatch(project) {
        stop(hub, agent, stream_id);
    }
}

/// Stops a stream on the agent, wherever it is held.
fn stop(hub: &Hub, agent_id: AgentId, stream_id: JobId) {
    match (hub.holder(agent_id), hub.relay()) {
        (Holder::Replica(replica), Some(relay)) => {
            relay.send_to(
                &replica,
                Message::StopLogs {
                    agent_id,
                    stream_id,
                },
            );
        }
        _ => {
            let _ = hub.send(agent_id, ServerToAgent::StopLogs(StopLogs { stream_id }));
        }
    }
}

/// Another replica asks for a stream of an agent held here, for its tabs.
pub async fn start_for_replica(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    origin: ReplicaId,
    project_id: ProjectId,
    stream_id: JobId,
    tail: u32,
) {
    let Some(relay) = hub.relay() else { return };
    let project = match store.project_by_id(project_id).await {
        Ok(project) => project,
        Err(error) => {
            tracing::warn!(%error, %project_id, "cannot start a log stream another replica asked for");
            return;
        }
    };
    relay.stream_started_for(stream_id, project.agent_id, origin);
    send_start(store, vault, hub, &project, stream_id, tail).await;
}

/// Another replica stops a stream it had asked for.
pub fn stop_for_replica(hub: &Hub, agent_id: AgentId, stream_id: JobId) {
    if let Some(relay) = hub.relay() {
        relay.stream_stopped(stream_id);
    }
    let _ = hub.send(agent_id, ServerToAgent::StopLogs(StopLogs { stream_id }));
}

/// Restarts a watched project's stream here and on every other replica (a deploy there
/// recreated the containers).
pub async fn restart_everywhere(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    feeds: &LogFeeds,
    project: ProjectId,
) {
    if let Some(relay) = hub.relay() {
        relay.broadcast(Message::RestartLogs {
            project_id: project,
        });
    }
    restart(store, vault, hub, feeds, project).await;
}

/// After an agent's hello: its watched projects' streams died with the old connection.
pub async fn restart_for_agent(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    feeds: &LogFeeds,
    agent: AgentId,
) {
    for project in feeds.projects_of(agent) {
        restart(store, vault, hub, feeds, project).await;
    }
}

/// Restarts a watched project's stream, e.g. once a deploy has recreated its containers.
pub async fn restart(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    feeds: &LogFeeds,
    project: ProjectId,
) {
    let Some(stream_id) = feeds.restarting(project) else {
        return;
    };
    match store.project_by_id(project).await {
        Ok(project) => start(store, vault, hub, feeds, &project, stream_id, RESTART_TAIL).await,
        Err(error) => tracing::warn!(%error, project_id = %project, "cannot restart a log stream"),
    }
}

/// Publishes an agent's log batch to the watching tabs, encoded once for all of them (at
/// 10 tabs and thousands of lines a second, encoding per tab was most of the server's work).
pub fn relay(hub: &Hub, feeds: &LogFeeds, agent: AgentId, batch: LogBatch) {
    // A stream started here for another replica's tabs: its lines go there.
    if let Some(relay) = hub.relay() {
        if let Some(origin) = relay.origin_of_stream(batch.stream_id) {
            relay.send_to(
                &origin,
                Message::Logs {
                    agent_id: agent,
                    batch,
                },
            );
            return;
        }
    }
    let Some(lines) = feeds.record(agent, batch) else {
        return;
    };
    let project_id = lines.project_id;
    match serde_json::to_string(&DashboardEvent::Logs(lines)) {
        Ok(frame) => hub.publish(HubEvent::Logs {
            project_id,
            frame: frame.into(),
        }),
        // Plain data (strings and numbers) always encodes; should it not, the tabs miss it.
        Err(error) => tracing::warn!(%error, %project_id, "cannot encode log lines"),
    }
}

/// Asks the agent for the stream; the project's secret values (current, and earlier ones that a
/// container may still run) go along so the agent redacts them.
async fn start(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    feeds: &LogFeeds,
    project: &Project,
    stream_id: JobId,
    tail: u32,
) {
    if let (Holder::Replica(replica), Some(relay)) = (hub.holder(project.agent_id), hub.relay()) {
        // That replica reads the secrets to redact and starts the stream for us.
        relay.send_to(
            &replica,
            Message::StartLogs {
                agent_id: project.agent_id,
                project_id: project.id,
                stream_id,
                tail,
            },
        );
        return;
    }
    // The last tab may have left while this started: then its StopLogs went out already, and
    // starting now would leave a stream nobody stops.
    let still_watched = || feeds.stream_of(project.id) == Some(stream_id);
    send_start_checked(store, vault, hub, project, stream_id, tail, still_watched).await;
}

/// Sends the start of a stream to an agent held here.
async fn send_start(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    project: &Project,
    stream_id: JobId,
    tail: u32,
) {
    send_start_checked(store, vault, hub, project, stream_id, tail, || true).await;
}

async fn send_start_checked(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    project: &Project,
    stream_id: JobId,
    tail: u32,
    still_watched: impl Fn() -> bool,
) {
    if project.name_clash {
        // `compose logs -p <name>` would show the containers of the other project of that name
        // on the agent too, masked only with this project's values: stream nothing until it is
        // renamed. Its page says so.
        tracing::warn!(project_id = %project.id, agent_id = %project.agent_id, "no log stream for a project that shares its name on its agent; it must be renamed");
        return;
    }
    let redact = match super::secrets::values_to_redact(store, vault, project.id).await {
        Ok(values) => values,
        Err(error) => {
            // Without the values the agent could not redact: stream nothing.
            tracing::error!(?error, project_id = %project.id, "cannot stream logs without the secrets to redact");
            return;
        }
    };
    // The last tab may have left while the secrets were read: then its StopLogs went out
    // already, and starting now would leave a stream nobody stops.
    if !still_watched() {
        return;
    }
    let request = StartLogs {
        stream_id,
        project: project.name.clone(),
        directory: project.path.to_string(),
        compose_file: project.compose_file.as_ref().map(|file| file.to_string()),
        service: None,
        tail,
        redact,
        project_id: Some(project.id),
        target: project.target,
    };
    let request = ServerToAgent::StartLogs(request);
    if let Err(error) = super::secrets::check_frame_to_agent(&request) {
        // The agent would drop the connection over it, and be sent it again on reconnect.
        tracing::error!(%error, project_id = %project.id, "cannot stream logs");
        return;
    }
    // An agent that is offline gets it on reconnect (`restart_for_agent`).
    let _ = hub.send(project.agent_id, request);
}
