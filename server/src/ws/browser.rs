//! `GET /api/v1/events`: the dashboard's live feed, one WebSocket per browser tab.
//!
//! It carries the status changes of the agents the person may see and, for the one project the
//! tab watches ([`DashboardRequest::Watch`]), its deployments' progress and container log
//! lines, so the page never polls. A tab that cannot keep up misses events rather than making
//! the server buffer them: each tab reads the hub's events through its own cursor into a
//! bounded ring, so one that falls more than the ring behind is sent `Resync` and reloads, and
//! one whose socket takes nothing for [`SEND_TIMEOUT`] (a stalled or suspended tab) is dropped;
//! neither ever delays the events of another tab. The feed is authenticated like the
//! API (the session cookie, or an API token), and a cookie counts only from this server's own
//! pages, so another site open in the same browser cannot read it.

use crate::auth::{self, CurrentUser};
use crate::db::User;
use crate::hub::HubEvent;
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use shared::api::{DashboardEvent, DashboardRequest};
use shared::{AgentId, ProjectId};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Largest message a tab may send (a watch request is about 150 bytes).
const MAX_REQUEST_BYTES: usize = 4 * 1024;

/// A tab whose socket does not take one message within this long is dropped: it holds its
/// connection and its place in the ring, and would only be sent `Resync` once it woke.
pub const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often an open feed checks that its session (or API token) is still valid, so a
/// sign-out or an expired session also ends the live feed.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn browser_events(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, OpError> {
    Ok(upgrade
        .read_buffer_size(1024)
        .max_message_size(MAX_REQUEST_BYTES)
        .on_upgrade(move |socket| relay(socket, state, user, headers)))
}

/// Whether the credentials the feed was opened with still name a person.
async fn still_signed_in(state: &AppState, headers: &HeaderMap) -> bool {
    // A database hiccup is not a sign-out.
    !matches!(
        auth::user_of(&state.store, headers, state.config.session_cookie()).await,
        Ok(None)
    )
}

/// Stops watching a project's logs when the tab's connection ends, however it ends.
struct Watching {
    state: AppState,
    project: Option<ProjectId>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        if let Some(project) = self.project.take() {
            ops::logs::unwatch(&self.state.hub, &self.state.logs, project);
        }
    }
}

async fn relay(mut socket: WebSocket, state: AppState, user: User, headers: HeaderMap) {
    let mut events = state.hub.subscribe();
    let mut revocations = state.hub.revocations();
    // A revocation between the upgrade's credential check and the subscription above would
    // otherwise go unheard until the periodic check: look once more, now that we listen.
    if !still_signed_in(&state, &headers).await {
        let _ = socket.send(Message::Close(None)).await;
        return;
    }
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    let mut watching = Watching {
        state: state.clone(),
        project: None,
    };
    let mut visible = Visible::default();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let Ok(request) = serde_json::from_str::<DashboardRequest>(&text) else {
                        continue;
                    };
                    let Some(first) = handle(&state, &user, &mut watching, request).await else {
                        continue;
                    };
                    if send(&mut socket, &first).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            _ = state.hub.closing() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            _ = recheck.tick() => {
                if still_signed_in(&state, &headers).await {
                    continue;
                }
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            // A revoked session or token, or a disabled account: ends the feed within moments
            // instead of at the next periodic check.
            revoked = revocations.recv() => {
                let concerns_us = match revoked {
                    Ok(revoked_user) => revoked_user == user.id,
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                };
                if !concerns_us || still_signed_in(&state, &headers).await {
                    continue;
                }
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        };
        let message = match event {
            Ok(event) => {
                match translate(&state, &user, &mut visible, watching.project, event).await {
                    Some(message) => message,
                    None => continue,
                }
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "a dashboard tab fell behind; asking it to resync");
                Outgoing::Event(DashboardEvent::Resync)
            }
            Err(RecvError::Closed) => return,
        };
        let sent = match message {
            Outgoing::Event(event) => send(&mut socket, &event).await,
            Outgoing::Encoded(frame) => send_text(&mut socket, frame.as_ref().into()).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// A watch request: checks the project is the person's, switches the tab to it and returns
/// the log lines the tab has not seen yet.
async fn handle(
    state: &AppState,
    user: &User,
    watching: &mut Watching,
    request: DashboardRequest,
) -> Option<DashboardEvent> {
    let DashboardRequest::Watch { project_id, resume } = request;
    // Not the person's project: nothing changes and nothing is said.
    let project = ops::projects::show(&state.store, user, project_id)
        .await
        .ok()?;
    if let Some(previous) = watching.project.take() {
        ops::logs::unwatch(&state.hub, &state.logs, previous);
    }
    let (store, vault, hub, feeds) = (&state.store, &state.vault, &state.hub, &state.logs);
    let replay = ops::logs::watch(store, vault, hub, feeds, &project, resume).await;
    watching.project = Some(project.id);
    Some(DashboardEvent::Logs(replay))
}

/// What this tab's person may see, looked up once per agent and project.
#[derive(Default)]
struct Visible {
    agents: HashMap<AgentId, bool>,
    projects: HashMap<ProjectId, bool>,
}

impl Visible {
    async fn agent(&mut self, state: &AppState, user: &User, agent_id: AgentId) -> bool {
        if let Some(may_see) = self.agents.get(&agent_id) {
            return *may_see;
        }
        let may_see = user.is_admin || state.store.agent_visible_to(user, agent_id).await.is_ok();
        self.agents.insert(agent_id, may_see);
        may_see
    }

    async fn project(&mut self, state: &AppState, user: &User, project_id: ProjectId) -> bool {
        if let Some(may_see) = self.projects.get(&project_id) {
            return *may_see;
        }
        match state.store.project(user, project_id).await {
            Ok(_) => {
                self.projects.insert(project_id, true);
                true
            }
            Err(crate::db::DbError::NotFound) => {
                self.projects.insert(project_id, false);
                false
            }
            // Not remembered: the next event asks again.
            Err(_) => false,
        }
    }
}

/// A message for the tab: an event to encode, or one the hub's publisher already encoded for
/// every tab (log lines).
enum Outgoing {
    Event(DashboardEvent),
    Encoded(Arc<str>),
}

/// What the tab is told about a hub event, if anything: agent statuses for agents the person
/// may see, container states of any of their projects, everything else only about the watched
/// project.
async fn translate(
    state: &AppState,
    user: &User,
    visible: &mut Visible,
    watched: Option<ProjectId>,
    event: HubEvent,
) -> Option<Outgoing> {
    let event =
        match event {
            HubEvent::AgentStatus { agent_id, status } => visible
                .agent(state, user, agent_id)
                .await
                .then_some(DashboardEvent::AgentStatus { agent_id, status }),
            HubEvent::ServiceStates {
                project_id,
                containers,
                ..
            } => visible.project(state, user, project_id).await.then(|| {
                DashboardEvent::ServiceStates {
                    project_id,
                    containers: (*containers).clone(),
                }
            }),
            HubEvent::DeploymentStatus {
                deployment_id,
                project_id,
                status,
                message,
            } => (watched == Some(project_id)).then_some(DashboardEvent::DeploymentStatus {
                deployment_id,
                status,
                message,
            }),
            HubEvent::DeploymentEvent {
                deployment_id,
                project_id,
                event,
            } => (watched == Some(project_id)).then_some(DashboardEvent::DeploymentEvent {
                deployment_id,
                event,
            }),
            HubEvent::Logs { project_id, frame } => {
                return (watched == Some(project_id)).then_some(Outgoing::Encoded(frame));
            }
        };
    event.map(Outgoing::Event)
}

/// Sends one message; an error when the socket failed or took nothing for [`SEND_TIMEOUT`].
async fn send(socket: &mut WebSocket, message: &DashboardEvent) -> Result<(), ()> {
    let Ok(text) = serde_json::to_string(message) else {
        return Ok(());
    };
    send_text(socket, text).await
}

/// Sends one encoded message, as [`send`].
async fn send_text(socket: &mut WebSocket, text: String) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            tracing::debug!("a dashboard tab took nothing for 10 s; dropping it");
            Err(())
        }
    }
}
