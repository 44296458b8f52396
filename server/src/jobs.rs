//! Deployments as durable jobs: the server side of the deploy protocol.
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

use crate::crypto::SecretAad;
use crate::db::{NewEvent, PendingJob};
use crate::error::AppError;
use crate::hub::{HubEvent, SendError};
use crate::AppState;
use anyhow::Context;
use shared::api::{DeploymentStatus, Project};
use shared::protocol::{JobEvent, JobUpdate};
use shared::{
    AgentId, DeployPayload, DeploymentId, JobId, ProjectId, Secret, SecretValue, ServerToAgent,
};

/// Decrypts a project's secrets for a deploy (or for redacting its logs).
pub async fn project_secrets(state: &AppState, project: &Project) -> Result<Vec<Secret>, AppError> {
    let stored = state.store.secrets_of_project(project.id).await?;
    stored
        .into_iter()
        .map(|secret| {
            let aad = SecretAad::for_row(project.id, secret.id, &secret.key);
            let plaintext = state
                .keyring
                .decrypt(&secret.ciphertext, &aad)
                .with_context(|| {
                    format!(
                        "decrypting secret {} of project {}",
                        secret.key, project.name
                    )
                })?;
            let value = String::from_utf8(plaintext.to_vec())
                .with_context(|| format!("secret {} is not UTF-8", secret.key))?;
            Ok(Secret {
                key: secret.key,
                value: SecretValue::new(value),
                scope: secret.scope,
            })
        })
        .collect::<anyhow::Result<_>>()
        .map_err(AppError::Internal)
}

/// Hands a job to its agent if it is connected; otherwise it stays queued until it connects.
pub async fn dispatch(
    state: &AppState,
    deployment: DeploymentId,
    job_id: JobId,
    project: &Project,
) -> Result<(), AppError> {
    let payload = DeployPayload {
        job_id,
        project: project.name.clone(),
        directory: project.path.clone(),
        compose_file: project.compose_file.clone(),
        secrets: project_secrets(state, project).await?,
    };
    match state
        .hub
        .send(project.agent_id, ServerToAgent::Deploy(payload))
    {
        Ok(()) => {
            set_status(state, deployment, project.id, DeploymentStatus::Sent, None).await?;
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
pub async fn resend_open_jobs(state: &AppState, agent: AgentId) {
    let open = match state.store.open_jobs_of_agent(agent).await {
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
            let project = state.store.project_by_id(project_id).await?;
            dispatch(state, deployment_id, job_id, &project).await
        }
        .await;
        if let Err(error) = result {
            tracing::error!(?error, %deployment_id, "could not re-send a job");
        }
    }
}

/// Applies one update from an agent to the deployment it is about.
pub async fn record_update(state: &AppState, agent: AgentId, update: JobUpdate) {
    let job = match state.store.deployment_by_job(agent, update.job_id).await {
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
            set_status(state, id, project, DeploymentStatus::Received, None).await
        }
        JobEvent::Step { name } => {
            let moved = set_status(state, id, project, DeploymentStatus::Running, None).await;
            if name == "health" {
                // The containers were just (re)created: follow the new ones' logs.
                crate::live_logs::restart(state, project).await;
            }
            add_event(state, id, project, "step", name).await.and(moved)
        }
        JobEvent::Output { line } => add_event(state, id, project, "output", line).await,
        JobEvent::Finished { success, message } => {
            let status = if success {
                DeploymentStatus::Succeeded
            } else {
                DeploymentStatus::Failed
            };
            set_status(state, id, project, status, Some(&message)).await
        }
    };
    if let Err(error) = result {
        tracing::error!(?error, deployment_id = %id, "could not record a job update");
    }
}

/// Marks open deployments untouched for `expiry` as timed out.
pub async fn expire_stale(state: &AppState) {
    let cutoff = crate::db::now_ms() - state.config.job_expiry.as_millis() as i64;
    let stale = match state.store.stale_open_deployments(cutoff).await {
        Ok(stale) => stale,
        Err(error) => {
            tracing::warn!(%error, "could not look for stale deployments");
            return;
        }
    };
    for (id, project) in stale {
        let message = format!(
            "no word from the agent for {} s: the job timed out",
            state.config.job_expiry.as_secs()
        );
        let timed_out = set_status(
            state,
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

pub async fn set_status(
    state: &AppState,
    id: DeploymentId,
    project_id: ProjectId,
    status: DeploymentStatus,
    message: Option<&str>,
) -> Result<(), AppError> {
    if state
        .store
        .set_deployment_status(id, status, message)
        .await?
    {
        state.hub.publish(HubEvent::DeploymentStatus {
            deployment_id: id,
            project_id,
            status,
            message: message.map(str::to_string),
        });
    }
    Ok(())
}

async fn add_event(
    state: &AppState,
    id: DeploymentId,
    project_id: ProjectId,
    kind: &'static str,
    body: String,
) -> Result<(), AppError> {
    state
        .store
        .add_deployment_events(
            id,
            &[NewEvent {
                kind,
                body: body.clone(),
            }],
        )
        .await?;
    state.hub.publish(HubEvent::DeploymentEvent {
        deployment_id: id,
        project_id,
        kind,
        body,
    });
    Ok(())
}
