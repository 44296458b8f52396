//! Deployments as durable jobs: start one, follow it, read the history, and the server side of
//! the deploy protocol.
//!
//! A deployment is stored `Queued` before anything is sent, so it survives a server restart.
//! It is handed to its agent's session (`Sent`) when the agent is connected, and again every
//! time the agent (re)connects while it is still open: the agent runs a job id at most once and
//! answers a repeat with `Received` and, when it has one, the result. Each update the agent
//! sends moves the stored status forward (`Received`, `Running`, `Succeeded` / `Failed`) and is
//! kept as an event. A deployment nobody finishes is marked `TimedOut`, so nothing stays
//! "Running" forever.
//!
//! Deploys of one project are serialized on the agent, in the order they arrive; a second
//! deploy requested while one runs waits its turn (`Sent`/`Received`) rather than being refused.

use super::OpResult;
use crate::db::{NewEvent, PendingJob, Store, User};
use crate::hub::{Hub, HubEvent, SendError};
use crate::log_feeds::LogFeeds;
use crate::vault::Vault;
use shared::api::{DeployAccepted, Deployment, DeploymentStatus, EventKind, Project};
use shared::protocol::{DeployStep, JobEvent, JobUpdate};
use shared::{AgentId, DeployPayload, DeploymentId, JobId, ProjectId, ServerToAgent};
use std::time::Duration;

/// Queues a deployment of one of the person's projects and hands it to the agent if it is
/// connected.
pub async fn start(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    by: &User,
    project_id: ProjectId,
) -> OpResult<DeployAccepted> {
    let project = store.project(by, project_id).await?;
    let (deployment_id, job_id) = store.create_deployment(project.id, by.id).await?;
    if let Err(error) = dispatch(store, vault, hub, deployment_id, job_id, &project).await {
        // Nothing was sent: say so on the deployment instead of leaving it queued for good.
        tracing::error!(error = format!("{error:#}"), %deployment_id, "a deploy could not be prepared");
        let message = format!("the deploy could not be prepared: {error}");
        set_status(
            store,
            hub,
            deployment_id,
            project.id,
            DeploymentStatus::Failed,
            Some(&message),
        )
        .await?;
        return Err(error);
    }
    Ok(DeployAccepted { deployment_id })
}

/// A deployment of one of the person's projects, with its history.
pub async fn show(store: &Store, by: &User, id: DeploymentId) -> OpResult<Deployment> {
    Ok(store.deployment(by, id).await?)
}

/// A project's deployments, newest first.
pub async fn history(store: &Store, by: &User, project: ProjectId) -> OpResult<Vec<Deployment>> {
    Ok(store.deployments_of_project(by, project).await?)
}

/// Hands a job to its agent if it is connected; otherwise it stays queued until it connects.
pub async fn dispatch(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    deployment: DeploymentId,
    job_id: JobId,
    project: &Project,
) -> OpResult<()> {
    let payload = DeployPayload {
        job_id,
        project: project.name.clone(),
        directory: project.path.to_string(),
        compose_file: project.compose_file.as_ref().map(|file| file.to_string()),
        secrets: super::secrets::values_of_project(store, vault, project.id).await?,
        project_id: Some(project.id),
        pinned_images: Vec::new(),
    };
    let message = ServerToAgent::Deploy(payload);
    super::secrets::check_frame_to_agent(&message)?;
    match hub.send(project.agent_id, message) {
        Ok(()) => {
            set_status(
                store,
                hub,
                deployment,
                project.id,
                DeploymentStatus::Sent,
                None,
            )
            .await?;
        }
        Err(SendError::NotConnected) => {
            tracing::info!(%deployment, agent_id = %project.agent_id, "agent offline; the deployment waits queued");
        }
        Err(SendError::QueueFull) => {
            tracing::warn!(%deployment, agent_id = %project.agent_id, "agent queue full; the deployment is re-sent when it reconnects");
        }
    }
    Ok(())
}

/// After an agent's hello: re-sends every deployment it has not finished.
pub async fn resend_open_jobs(store: &Store, vault: &Vault, hub: &Hub, agent: AgentId) {
    let open = match store.open_jobs_of_agent(agent).await {
        Ok(open) => open,
        Err(error) => {
            tracing::error!(%error, agent_id = %agent, "could not load the agent's open jobs");
            return;
        }
    };
    for PendingJob {
        deployment_id,
        job_id,
        project_id,
        ..
    } in open
    {
        let result = async {
            let project = store.project_by_id(project_id).await?;
            dispatch(store, vault, hub, deployment_id, job_id, &project).await
        }
        .await;
        if let Err(error) = result {
            tracing::error!(?error, %deployment_id, "could not re-send a job");
        }
    }
}

/// Applies one update from an agent to the deployment it is about. When a deploy reaches its
/// health step the containers were just (re)created, so a watched project's log stream is
/// restarted to follow the new ones.
pub async fn record_update(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    feeds: &LogFeeds,
    agent: AgentId,
    update: JobUpdate,
) {
    let job = match store.deployment_by_job(agent, update.job_id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            tracing::warn!(agent_id = %agent, job_id = %update.job_id, "update for a job this agent was never given");
            return;
        }
        Err(error) => {
            tracing::error!(%error, "could not look up a job");
            return;
        }
    };
    let id = job.deployment_id;
    let project = job.project_id;
    let result = match update.event {
        JobEvent::Received => {
            set_status(store, hub, id, project, DeploymentStatus::Received, None).await
        }
        JobEvent::Step { name } => {
            let moved = set_status(store, hub, id, project, DeploymentStatus::Running, None).await;
            if name == DeployStep::Health {
                super::logs::restart(store, vault, hub, feeds, project).await;
            }
            let event = NewEvent {
                kind: EventKind::Step,
                body: name.to_string(),
            };
            let added = add_event(store, hub, id, project, event).await;
            log_failure(moved, id);
            added
        }
        JobEvent::Output { line } => {
            let event = NewEvent {
                kind: EventKind::Output,
                body: line,
            };
            add_event(store, hub, id, project, event).await
        }
        JobEvent::Finished {
            success, message, ..
        } => {
            let status = if success {
                DeploymentStatus::Succeeded
            } else {
                DeploymentStatus::Failed
            };
            let moved = set_status(store, hub, id, project, status, Some(&message)).await;
            if success {
                // Its containers run the values it was given: the ones replaced before it no
                // longer need masking in the project's logs.
                let forgotten = super::secrets::forget_previous_values(store, project, id).await;
                log_failure(moved, id);
                forgotten
            } else {
                moved
            }
        }
    };
    log_failure(result, id);
}

/// Logs why recording part of a job update failed; each part is logged on its own.
fn log_failure(result: OpResult<()>, deployment: DeploymentId) {
    if let Err(error) = result {
        tracing::error!(?error, deployment_id = %deployment, "could not record a job update");
    }
}

/// Marks open deployments untouched for `expiry` as timed out.
pub async fn expire_stale(store: &Store, hub: &Hub, expiry: Duration) {
    let cutoff = crate::db::now_ms() - expiry.as_millis() as i64;
    let stale = match store.stale_open_deployments(cutoff).await {
        Ok(stale) => stale,
        Err(error) => {
            tracing::warn!(%error, "could not look for stale deployments");
            return;
        }
    };
    for (id, project) in stale {
        let message = format!(
            "no word from the agent for {} s: the job timed out",
            expiry.as_secs()
        );
        let timed_out = set_status(
            store,
            hub,
            id,
            project,
            DeploymentStatus::TimedOut,
            Some(&message),
        );
        if let Err(error) = timed_out.await {
            tracing::warn!(?error, deployment_id = %id, "could not time out a deployment");
        }
    }
}

/// Moves a deployment forward and tells the watching tabs.
async fn set_status(
    store: &Store,
    hub: &Hub,
    id: DeploymentId,
    project_id: ProjectId,
    status: DeploymentStatus,
    message: Option<&str>,
) -> OpResult<()> {
    if store.set_deployment_status(id, status, message).await? {
        hub.publish(HubEvent::DeploymentStatus {
            deployment_id: id,
            project_id,
            status,
            message: message.map(str::to_string),
        });
    }
    Ok(())
}

/// Keeps an event of a deployment's history and tells the watching tabs, with the time it was
/// stored under.
async fn add_event(
    store: &Store,
    hub: &Hub,
    id: DeploymentId,
    project_id: ProjectId,
    event: NewEvent,
) -> OpResult<()> {
    let at = store
        .add_deployment_events(id, std::slice::from_ref(&event))
        .await?;
    hub.publish(HubEvent::DeploymentEvent {
        deployment_id: id,
        project_id,
        event: shared::api::DeploymentEvent {
            at,
            kind: event.kind,
            body: event.body,
        },
    });
    Ok(())
}
