//! Projects: a compose project on one agent's host, always reached through its owner, so
//! another person's project is simply not found.

use super::{OpError, OpResult};
use crate::db::{DbError, Store, User};
use crate::hub::Hub;
use shared::api::{CreateProject, Project, UpdateProject};
use shared::{AgentId, ProjectId, ServiceName};
use std::time::Duration;

/// How long the Project page waits for the agent to read a compose file.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates a project on one of the person's agents. The path and compose file were checked when
/// the input was parsed.
pub async fn create(store: &Store, by: &User, input: CreateProject) -> OpResult<Project> {
    agent_must_be_visible(store, by, input.agent_id).await?;
    store
        .create_project(by, &input)
        .await
        .map_err(|error| match error {
            DbError::Conflict(_) => {
                OpError::Conflict(format!("you already have a project named {}", input.name))
            }
            other => other.into(),
        })
}

pub async fn list(store: &Store, by: &User) -> OpResult<Vec<Project>> {
    Ok(store.projects(by).await?)
}

pub async fn show(store: &Store, by: &User, id: ProjectId) -> OpResult<Project> {
    Ok(store.project(by, id).await?)
}

/// Applies the given changes; a new agent must be one the person may see.
pub async fn update(
    store: &Store,
    by: &User,
    id: ProjectId,
    changes: UpdateProject,
) -> OpResult<Project> {
    if let Some(agent_id) = changes.agent_id {
        agent_must_be_visible(store, by, agent_id).await?;
    }
    Ok(store.update_project(by, id, &changes).await?)
}

/// Deletes a project with its secrets and deployments.
pub async fn delete(store: &Store, by: &User, id: ProjectId) -> OpResult<()> {
    Ok(store.delete_project(by, id).await?)
}

/// The services the project's agent finds in its compose file (nothing is run).
pub async fn services(
    store: &Store,
    hub: &Hub,
    by: &User,
    id: ProjectId,
) -> OpResult<Vec<ServiceName>> {
    let project = store.project(by, id).await?;
    hub.inspect(
        project.agent_id,
        project.path.to_string(),
        project.compose_file.map(|file| file.to_string()),
        INSPECT_TIMEOUT,
    )
    .await
    .map_err(OpError::Invalid)
}

async fn agent_must_be_visible(store: &Store, by: &User, agent_id: AgentId) -> OpResult<()> {
    store
        .agent_visible_to(by, agent_id)
        .await
        .map(drop)
        .map_err(|_| OpError::Invalid(format!("agent {agent_id} does not exist")))
}
