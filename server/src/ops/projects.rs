//! Projects: a compose project on one agent's host, always reached through its owner, so
//! another person's project is simply not found.
//!
//! A project's name is also its compose project name (`docker compose -p`), a namespace on its
//! agent's host, so it is unique twice over: among the person's projects, and among the
//! projects on its agent, whoever owns them. A clash on the agent is told as "agent X already
//! runs a project named N", which names only what the person chose; the database holds the same
//! rule against two requests racing (migrations `0006_project_name_per_agent.sql`).

use super::{OpError, OpResult};
use crate::db::{Agent, DbError, Store, User};
use crate::hub::Hub;
use crate::vault::Vault;
use shared::api::{
    CreateProject, DeleteProject, DeploymentStatus, LifecycleRequest, Project, UpdateProject,
};
use shared::runtime::LifecycleAction;
use shared::source::ProjectSource;
use shared::{AgentId, ProjectId, ProjectName, ProjectPath, ServiceName};
use std::time::Duration;

/// How long deleting a project waits for its containers to be taken down.
const DOWN_TIMEOUT: Duration = Duration::from_secs(180);

/// How long the Project page waits for the agent to read a compose file.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates a project on one of the person's agents. The path and compose file were checked when
/// the input was parsed.
///
/// A project with a Git `source` takes no path: it lives in its agent's checkout, whose path
/// the first deploy records (until then it is [`super::sources::NOT_CHECKED_OUT`]).
pub async fn create(store: &Store, by: &User, mut input: CreateProject) -> OpResult<Project> {
    match (&input.source, &input.path) {
        (Some(_), Some(_)) => {
            return Err(OpError::Invalid(
                "a project deployed from Git takes no path: the agent checks it out into its                  own directory"
                    .into(),
            ))
        }
        (None, None) => {
            return Err(OpError::Invalid(
                "give the project's path on the agent's host, or a Git source".into(),
            ))
        }
        (Some(source), None) => {
            input.path = Some(ProjectPath::parse(super::sources::NOT_CHECKED_OUT)?);
            input.compose_file = source.compose_file.clone();
        }
        (None, Some(_)) => {}
    }
    let agent = agent_must_be_visible(store, by, input.agent_id).await?;
    name_must_be_free(store, by, &agent, &input.name, None).await?;
    let mut project = match store.create_project(by, &input).await {
        Ok(project) => project,
        Err(error) => return Err(explain_write(store, by, &agent, &input.name, None, error).await),
    };
    if let Some(source) = &input.source {
        if let Err(error) = super::sources::set(store, project.id, source).await {
            // Nothing half-made: the project goes with its source.
            let _ = store.delete_project(by, project.id).await;
            return Err(error);
        }
        super::sources::attach(store, &mut project).await?;
    }
    Ok(project)
}

pub async fn list(store: &Store, by: &User) -> OpResult<Vec<Project>> {
    let mut projects = store.projects(by).await?;
    for project in &mut projects {
        super::sources::attach(store, project).await?;
    }
    Ok(projects)
}

pub async fn show(store: &Store, by: &User, id: ProjectId) -> OpResult<Project> {
    let mut project = store.project(by, id).await?;
    super::sources::attach(store, &mut project).await?;
    Ok(project)
}

/// Applies the given changes; a new agent must be one the person may see, and a new name or
/// agent must leave the name free where the project lands.
pub async fn update(
    store: &Store,
    by: &User,
    id: ProjectId,
    mut changes: UpdateProject,
) -> OpResult<Project> {
    let current = store.project(by, id).await?;
    // Checked first and applied once the rest is written, so a refused change changes nothing.
    let source = changes.source.take();
    let from_git = store.project_source(id).await?.is_some();
    match &source {
        // A Git project's path is the agent's own checkout: never one a person sets.
        None if from_git && changes.path.is_some() => {
            return Err(OpError::Invalid(
                "a project deployed from Git takes no path (switch it to a directory source \
                 with a path of its own)"
                    .into(),
            ));
        }
        // Its old path is the agent's checkout, which no directory project may use.
        Some(ProjectSource::Directory) if from_git && changes.path.is_none() => {
            return Err(OpError::Invalid(
                "give the project's path on the agent's host with the directory source".into(),
            ));
        }
        Some(ProjectSource::Git(_)) if changes.path.is_some() => {
            return Err(OpError::Invalid(
                "a project deployed from Git takes no path".into(),
            ));
        }
        Some(ProjectSource::Git(source)) => {
            changes.compose_file = Some(source.compose_file.clone());
        }
        Some(ProjectSource::Directory)
            if changes.path.is_none() && current.path == super::sources::NOT_CHECKED_OUT =>
        {
            return Err(OpError::Invalid(
                "give the project's path on the agent's host with the directory source".into(),
            ));
        }
        Some(ProjectSource::Directory) | None => {}
    }
    let mut project = update_row(store, by, id, current, changes).await?;
    match source {
        None => {}
        Some(ProjectSource::Git(source)) => super::sources::set(store, id, &source).await?,
        Some(ProjectSource::Directory) => super::sources::clear(store, id).await?,
    }
    super::sources::attach(store, &mut project).await?;
    Ok(project)
}

/// The project's own row: name, agent, path and compose file.
async fn update_row(
    store: &Store,
    by: &User,
    id: ProjectId,
    current: Project,
    changes: UpdateProject,
) -> OpResult<Project> {
    let agent = match changes.agent_id {
        Some(agent_id) => Some(agent_must_be_visible(store, by, agent_id).await?),
        None => None,
    };
    let name = changes.name.as_ref().unwrap_or(&current.name);
    let agent_id = agent.as_ref().map_or(current.agent_id, |agent| agent.id);
    if *name == current.name && agent_id == current.agent_id {
        return Ok(store.update_project(by, id, &changes).await?);
    }
    let agent = match agent {
        Some(agent) => agent,
        None => store.agent(agent_id).await?,
    };
    name_must_be_free(store, by, &agent, name, Some(id)).await?;
    match store.update_project(by, id, &changes).await {
        Ok(project) => Ok(project),
        Err(error) => Err(explain_write(store, by, &agent, name, Some(id), error).await),
    }
}

/// Deletes a project with its secrets and deployments. With `down`, its containers and
/// networks (and volumes, if asked) are taken down on its host first, as a job of its history;
/// the project is deleted only once that succeeded, and kept, with the job's reason, if not.
pub async fn delete(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    by: &User,
    id: ProjectId,
    options: DeleteProject,
) -> OpResult<()> {
    let project = store.project(by, id).await?;
    if !options.down {
        return Ok(store.delete_project(by, id).await?);
    }
    if !hub.is_connected(project.agent_id) {
        return Err(OpError::Conflict(
            "the project's agent is not connected, so its containers cannot be taken down now; \
             try again once it is, or delete the project without taking them down"
                .into(),
        ));
    }
    // In a task of its own: a client (or a proxy) that stops waiting does not leave the
    // containers down and the project kept.
    let (store, vault, hub, by) = (store.clone(), vault.clone(), hub.clone(), by.clone());
    let down_then_delete = tokio::spawn(async move {
        let mut events = hub.subscribe();
        let down = LifecycleRequest {
            action: LifecycleAction::Down,
            service: None,
            remove_volumes: options.remove_volumes,
        };
        let accepted = super::deployments::act(&store, &vault, &hub, &by, id, down).await?;
        let (status, message) = super::deployments::wait_until_final(
            &store,
            &mut events,
            accepted.deployment_id,
            DOWN_TIMEOUT,
        )
        .await?;
        if status != DeploymentStatus::Succeeded {
            let why = message.unwrap_or_else(|| status.as_str().to_string());
            return Err(OpError::Conflict(format!(
                "taking the containers down did not succeed, so the project was kept: {why}"
            )));
        }
        Ok(store.delete_project(&by, id).await?)
    });
    down_then_delete.await.map_err(|error| {
        OpError::Internal(anyhow::anyhow!("deleting a project stopped: {error}"))
    })?
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
        project.id,
        project.path.to_string(),
        project.compose_file.map(|file| file.to_string()),
        INSPECT_TIMEOUT,
    )
    .await
    .map_err(OpError::Invalid)
}

async fn agent_must_be_visible(store: &Store, by: &User, agent_id: AgentId) -> OpResult<Agent> {
    store
        .agent_visible_to(by, agent_id)
        .await
        .map_err(|_| OpError::NoSuch(format!("agent {agent_id} does not exist")))
}

/// Refuses `name` for a project of `by` on `agent` while another project (not `except`) holds
/// it: one of the person's own, on any agent, or anyone's on that agent.
async fn name_must_be_free(
    store: &Store,
    by: &User,
    agent: &Agent,
    name: &ProjectName,
    except: Option<ProjectId>,
) -> OpResult<()> {
    let in_use = store
        .project_name_in_use(by, agent.id, name, except)
        .await?;
    if in_use.by_owner {
        Err(OpError::Conflict(format!(
            "you already have a project named {name}"
        )))
    } else if in_use.on_agent {
        Err(OpError::Conflict(format!(
            "agent {} already runs a project named {name}",
            agent.name
        )))
    } else {
        Ok(())
    }
}

/// A write the database refused: a duplicate that appeared after [`name_must_be_free`] looked
/// is told the same way.
async fn explain_write(
    store: &Store,
    by: &User,
    agent: &Agent,
    name: &ProjectName,
    except: Option<ProjectId>,
    error: DbError,
) -> OpError {
    match error {
        DbError::Conflict(_) => match name_must_be_free(store, by, agent, name, except).await {
            Err(explained) => explained,
            Ok(()) => OpError::Conflict(format!(
                "the project name {name} was taken meanwhile; try again"
            )),
        },
        other => other.into(),
    }
}
