//! Container logs for the dashboard: a tab watches a project, the agent streams while anyone
//! does, and the lines are relayed to the watching tabs.
//!
//! The first watcher starts `compose logs -f` on the project's agent ([`StartLogs`], carrying
//! the project's secret values, and those replaced since its last successful deploy, so the
//! agent redacts them); the last one to leave stops it. The stream is restarted when the agent
//! reconnects and when a deploy has (re)created the containers; [`LogFeeds`] numbers the lines
//! and drops those a restart replays. A project that still shares its name with another on its
//! agent ([`Project::name_clash`]) gets no stream: Compose would mix in the other's containers.

use crate::db::Store;
use crate::hub::{Hub, HubEvent};
use crate::log_feeds::LogFeeds;
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
        let _ = hub.send(agent, ServerToAgent::StopLogs(StopLogs { stream_id }));
    }
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
    if feeds.stream_of(project.id) != Some(stream_id) {
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
