//! Derives notification events from the hub's broadcast:
//!
//! - `DeploymentStatus` reaching a final status, for a job of kind `deploy` (looked up, since a
//!   start, stop, restart or down reaches the same statuses): succeeded → `deploy_succeeded`;
//!   failed or timed out → `deploy_failed`, with the job's message;
//! - agents' statuses (taken from the hub, the newest per agent, not from the broadcast, which a
//!   fleet reconnecting at once would overflow): a disconnected agent that is still not back
//!   after the grace period (and not revoked) → `agent_offline` for its projects; its return
//!   after that was sent → `agent_online`;
//! - `ServiceStates`: a container seen running that is now exited or dead →
//!   `service_exited`; one that turned unhealthy → `service_unhealthy`; unless the project's
//!   latest job is a stop, down or restart still open or finished within the quiet period
//!   (somebody asked for it), or a deploy still open (it replaces containers).
//!
//! This task only keeps what it needs to compare (the last container states per project,
//! the agents waiting out their grace period) and queues deliveries; sending is the delivery
//! worker's. A receiver that falls behind the broadcast logs how much it missed and goes on.

use crate::config::NotifyConfig;
use crate::db::Store;
use crate::hub::{Hub, HubEvent};
use crate::ops;
use crate::state::AppState;
use crate::vault::Vault;
use shared::api::{AgentStatus, DeploymentStatus};
use shared::notify::{Notification, NotificationEvent};
use shared::runtime::{ContainerHealth, ContainerStatus, JobKind, ServiceState};
use shared::webhooks::DeployTrigger;
use shared::{AgentId, DeploymentId, ProjectId};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// What the task remembers between events.
#[derive(Default)]
struct Memory {
    /// Agents disconnected, since when.
    disconnected: HashMap<AgentId, Instant>,
    /// Agents an `agent_offline` was queued for.
    offline: HashSet<AgentId>,
    /// The containers of each project as last reported, by container id.
    containers: HashMap<ProjectId, HashMap<String, ServiceState>>,
}

/// The parts of the server the task uses.
struct Deps<'a> {
    store: &'a Store,
    vault: &'a Vault,
    hub: &'a Hub,
    config: &'a NotifyConfig,
}

pub async fn run(state: AppState) {
    let deps = Deps {
        store: &state.store,
        vault: &state.vault,
        hub: &state.hub,
        config: &state.config.notifications,
    };
    let mut events = state.hub.subscribe_local();
    let mut memory = Memory::default();
    let period =
        (deps.config.offline_grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(event) => deps.handle(&mut memory, event).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "notifications fell behind the server's events; some may not be sent");
                }
                Err(RecvError::Closed) => return,
            },
            changes = state.hub.agent_changes() => deps.agents_changed(&mut memory, changes).await,
            _ = tick.tick() => {
                // Changes noted while the task was busy, should a wake-up have been missed.
                let changes = state.hub.take_agent_changes();
                deps.agents_changed(&mut memory, changes).await;
                deps.agents_past_grace(&mut memory).await;
            }
        }
    }
}

impl Deps<'_> {
    async fn handle(&self, memory: &mut Memory, event: HubEvent) {
        match event {
            HubEvent::DeploymentStatus {
                deployment_id,
                project_id,
                status,
                message,
            } => {
                self.deployment_finished(deployment_id, project_id, status, message)
                    .await
            }
            HubEvent::ServiceStates {
                project_id,
                containers,
                ..
            } => {
                let now: HashMap<String, ServiceState> = containers
                    .iter()
                    .map(|state| (state.container_id.clone(), state.clone()))
                    .collect();
                let before = memory.containers.insert(project_id, now);
                let changes = before
                    .map(|before| changes(&before, &containers))
                    .unwrap_or_default();
                if !changes.is_empty() {
                    self.containers_changed(project_id, changes).await;
                }
            }
            // Agents' statuses come through `agents_changed`.
            HubEvent::AgentStatus { .. }
            | HubEvent::DeploymentEvent { .. }
            | HubEvent::Logs { .. } => {}
        }
    }

    /// Agents that connected or disconnected, by their newest status: one back within its
    /// grace period was never missed.
    async fn agents_changed(&self, memory: &mut Memory, changes: HashMap<AgentId, AgentStatus>) {
        for (agent_id, status) in changes {
            match status {
                // Already told offline: its return, if it came back between two turns of
                // this task, went unseen (only the newest status is kept), and it is offline
                // still; a second `agent_offline` would be news of nothing.
                AgentStatus::Disconnected if memory.offline.contains(&agent_id) => {}
                AgentStatus::Disconnected => {
                    memory.disconnected.insert(agent_id, Instant::now());
                }
                AgentStatus::Connected => {
                    memory.disconnected.remove(&agent_id);
                    if memory.offline.remove(&agent_id) {
                        self.agent_event(agent_id, NotificationEvent::AgentOnline)
                            .await;
                    }
                }
            }
        }
    }

    async fn deployment_finished(
        &self,
        deployment: DeploymentId,
        project: ProjectId,
        status: DeploymentStatus,
        message: Option<String>,
    ) {
        let (event, what) = match status {
            DeploymentStatus::Succeeded => (NotificationEvent::DeploySucceeded, "succeeded"),
            DeploymentStatus::Failed => (NotificationEvent::DeployFailed, "failed"),
            DeploymentStatus::TimedOut => (NotificationEvent::DeployFailed, "timed out"),
            _ => return,
        };
        match self.store.deployment_kind(deployment).await {
            Ok(Some(JobKind::Deploy)) => {}
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%error, deployment_id = %deployment, "could not tell what a finished job was; no notification");
                return;
            }
        }
        let Some(name) = self.project_name(project).await else {
            return;
        };
        let mut message = message
            .filter(|message| !message.trim().is_empty())
            .unwrap_or_else(|| format!("The deploy of {name} {what}."));
        // A deploy a push started says so (provider, commit, pusher); one by hand says nothing.
        match self.store.deployment_trigger(deployment).await {
            Ok(trigger @ DeployTrigger::Webhook { .. }) => {
                message.push_str(&format!(" (started by {})", trigger.describe()));
            }
            Ok(DeployTrigger::Manual) => {}
            Err(error) => {
                tracing::warn!(%error, deployment_id = %deployment, "could not tell what started a deploy")
            }
        }
        let notification = Notification {
            deployment_id: Some(deployment),
            ..notification(
                event,
                format!("{name}: deploy {what}"),
                message,
                project,
                name,
            )
        };
        self.notify(&[project], notification).await;
    }

    async fn agents_past_grace(&self, memory: &mut Memory) {
        // Back on another replica (this one's hub never sees that hello as its own): it is
        // online again, and an old entry here must not hide its next disconnection.
        let back: Vec<AgentId> = memory
            .offline
            .iter()
            .filter(|agent| self.hub.is_connected(**agent))
            .copied()
            .collect();
        for agent in back {
            memory.offline.remove(&agent);
            self.agent_event(agent, NotificationEvent::AgentOnline)
                .await;
        }
        let grace = self.config.offline_grace;
        let gone: Vec<AgentId> = memory
            .disconnected
            .iter()
            .filter(|(_, since)| since.elapsed() >= grace)
            .map(|(agent, _)| *agent)
            .collect();
        for agent in gone {
            memory.disconnected.remove(&agent);
            if self.hub.is_connected(agent) {
                continue;
            }
            match self.store.is_revoked(agent).await {
                Ok(false) => {}
                // Revoked on purpose, or removed: nobody needs telling.
                Ok(true) | Err(crate::db::DbError::NotFound) => continue,
                Err(error) => {
                    tracing::warn!(%error, agent_id = %agent, "could not check an offline agent");
                    continue;
                }
            }
            if self
                .agent_event(agent, NotificationEvent::AgentOffline)
                .await
            {
                memory.offline.insert(agent);
            }
        }
    }

    /// Queues `agent_offline` / `agent_online` for the agent's projects; returns whether any
    /// channel gets it.
    async fn agent_event(&self, agent: AgentId, event: NotificationEvent) -> bool {
        let projects = match self.store.projects_on_agent(agent).await {
            Ok(projects) => projects,
            Err(error) => {
                tracing::warn!(%error, agent_id = %agent, "could not list an agent's projects");
                return false;
            }
        };
        if projects.is_empty() {
            return false;
        }
        let name = match self.store.agent(agent).await {
            Ok(agent) => agent.name,
            Err(_) => agent.to_string(),
        };
        let names: Vec<&str> = projects.iter().map(|(_, name)| name.as_str()).collect();
        let (title, message) = match event {
            NotificationEvent::AgentOffline => (
                format!("Server {name} is offline"),
                format!(
                    "{name} has been disconnected for more than {} s. Projects: {}.",
                    self.config.offline_grace.as_secs(),
                    names.join(", ")
                ),
            ),
            _ => (
                format!("Server {name} is back online"),
                format!("{name} is connected again. Projects: {}.", names.join(", ")),
            ),
        };
        let ids: Vec<ProjectId> = projects.iter().map(|(id, _)| *id).collect();
        let notification = Notification {
            event,
            title,
            message,
            project_id: None,
            project: None,
            agent_id: Some(agent),
            agent: Some(name),
            deployment_id: None,
            service: None,
            at: OffsetDateTime::now_utc(),
        };
        self.notify(&ids, notification).await > 0
    }

    async fn containers_changed(&self, project: ProjectId, changes: Vec<Change>) {
        match self.store.latest_job(project).await {
            Ok(Some(job)) if self.asked_for(&job) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, project_id = %project, "could not read a project's latest job");
                return;
            }
        }
        let Some(name) = self.project_name(project).await else {
            return;
        };
        for change in changes {
            let service = change.state.service.to_string();
            let short_id: String = change.state.container_id.chars().take(12).collect();
            let (event, title, message) = match change.event {
                NotificationEvent::ServiceExited => {
                    let code = change
                        .state
                        .exit_code
                        .map_or_else(String::new, |code| format!(" with code {code}"));
                    (
                        change.event,
                        format!("{name}: {service} {}", change.state.label()),
                        format!(
                            "Container {short_id} of service {service} was running and {}{code}.",
                            change.state.status.as_str()
                        ),
                    )
                }
                _ => (
                    change.event,
                    format!("{name}: {service} is unhealthy"),
                    format!("The healthcheck of container {short_id} of service {service} fails."),
                ),
            };
            let notification = Notification {
                service: Some(service),
                ..notification(event, title, message, project, name.clone())
            };
            self.notify(&[project], notification).await;
        }
    }

    /// Whether a person asked for containers to go away: the latest job is a stop, down or
    /// restart still open or just finished, or a deploy still open.
    fn asked_for(&self, job: &crate::db::LatestJob) -> bool {
        match job.kind {
            JobKind::Stop | JobKind::Down | JobKind::Restart => {
                job.open
                    || job.finished_at.is_some_and(|at| {
                        OffsetDateTime::now_utc() - at < self.config.quiet_after_lifecycle
                    })
            }
            JobKind::Deploy => job.open,
            JobKind::Start => false,
        }
    }

    async fn project_name(&self, project: ProjectId) -> Option<String> {
        match self.store.project_by_id(project).await {
            Ok(project) => Some(project.name.to_string()),
            Err(crate::db::DbError::NotFound) => None,
            Err(error) => {
                tracing::warn!(%error, project_id = %project, "could not read a project to notify about it");
                None
            }
        }
    }

    /// Queues the notification; returns how many channels get it.
    async fn notify(&self, projects: &[ProjectId], notification: Notification) -> usize {
        let event = notification.event;
        match ops::notifications::notify(
            self.store,
            self.vault,
            self.config,
            projects,
            notification,
        )
        .await
        {
            Ok(queued) => queued,
            Err(error) => {
                tracing::warn!(
                    ?error,
                    event = event.as_str(),
                    "could not queue a notification"
                );
                0
            }
        }
    }
}

fn notification(
    event: NotificationEvent,
    title: String,
    message: String,
    project: ProjectId,
    name: String,
) -> Notification {
    Notification {
        event,
        title,
        message,
        project_id: Some(project),
        project: Some(name),
        agent_id: None,
        agent: None,
        deployment_id: None,
        service: None,
        at: OffsetDateTime::now_utc(),
    }
}

/// A container that went down or sick between two reports.
#[derive(Debug, PartialEq)]
struct Change {
    event: NotificationEvent,
    state: ServiceState,
}

/// What changed from `before` (by container id) to `now`: containers seen running that are now
/// exited or dead, and containers that turned unhealthy.
fn changes(before: &HashMap<String, ServiceState>, now: &[ServiceState]) -> Vec<Change> {
    now.iter()
        .filter_map(|state| {
            let was = before.get(&state.container_id)?;
            let exited = matches!(
                state.status,
                ContainerStatus::Exited | ContainerStatus::Dead
            );
            let unhealthy = state.status == ContainerStatus::Running
                && state.health == Some(ContainerHealth::Unhealthy);
            let event = if was.status == ContainerStatus::Running && exited {
                NotificationEvent::ServiceExited
            } else if unhealthy && was.health != Some(ContainerHealth::Unhealthy) {
                NotificationEvent::ServiceUnhealthy
            } else {
                return None;
            };
            Some(Change {
                event,
                state: state.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::ServiceName;

    fn state(id: &str, status: ContainerStatus, health: Option<ContainerHealth>) -> ServiceState {
        ServiceState {
            service: ServiceName::parse("web").unwrap(),
            container_id: id.into(),
            status,
            exit_code: (status == ContainerStatus::Exited).then_some(1),
            health,
            started_at: None,
            restart_count: 0,
            image_id: None,
            replicas: None,
        }
    }

    fn by_id(states: &[ServiceState]) -> HashMap<String, ServiceState> {
        states
            .iter()
            .map(|state| (state.container_id.clone(), state.clone()))
            .collect()
    }

    #[test]
    fn only_a_running_container_that_stops_or_turns_unhealthy_is_a_change() {
        use ContainerStatus::*;
        let before = by_id(&[
            state("a", Running, None),
            state("b", Created, None),
            state("c", Running, Some(ContainerHealth::Healthy)),
            state("d", Running, Some(ContainerHealth::Unhealthy)),
        ]);
        let now = [
            state("a", Exited, None),
            state("b", Exited, None),
            state("c", Running, Some(ContainerHealth::Unhealthy)),
            state("d", Running, Some(ContainerHealth::Unhealthy)),
            state("e", Dead, None),
        ];
        let events: Vec<_> = changes(&before, &now)
            .into_iter()
            .map(|change| (change.state.container_id, change.event))
            .collect();
        assert_eq!(
            events,
            [
                ("a".to_string(), NotificationEvent::ServiceExited),
                ("c".to_string(), NotificationEvent::ServiceUnhealthy),
            ]
        );
    }
}
