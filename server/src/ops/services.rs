//! The live state of deployed projects: what each agent reports about its containers, kept per
//! project (the latest report replaces the one before) and pushed to the tabs of the project's
//! owner, so the Project page and the Projects list change without a reload.
//!
//! An agent reports only on its own projects: a report about a project that is not on that
//! agent (another tenant's, or one moved elsewhere) is dropped. After a full report, a project of
//! the agent that it did not list has no containers left.

use super::OpResult;
use crate::db::{Store, User};
use crate::hub::{Hub, HubEvent};
use shared::api::ProjectServices;
use shared::protocol::ServiceStates;
use shared::{AgentId, ProjectId};
use std::sync::Arc;

/// Keeps what an agent reported and tells the watching tabs.
pub async fn record(store: &Store, hub: &Hub, agent: AgentId, states: ServiceStates) {
    let listed: Vec<ProjectId> = states
        .projects
        .iter()
        .map(|project| project.project_id)
        .collect();
    for project in states.projects {
        match store
            .record_service_states(agent, project.project_id, &project.containers)
            .await
        {
            Ok(true) => publish(hub, agent, project.project_id, project.containers),
            Ok(false) => {
                tracing::debug!(agent_id = %agent, project_id = %project.project_id, "dropping container states of a project that is not on this agent");
            }
            Err(error) => {
                tracing::warn!(%error, agent_id = %agent, "could not record container states");
            }
        }
    }
    if !states.full {
        return;
    }
    let gone = match store.projects_with_states_besides(agent, &listed).await {
        Ok(gone) => gone,
        Err(error) => {
            tracing::warn!(%error, agent_id = %agent, "could not look for projects without containers");
            return;
        }
    };
    for project in gone {
        match store.record_service_states(agent, project, &[]).await {
            Ok(true) => publish(hub, agent, project, Vec::new()),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, agent_id = %agent, "could not record container states");
            }
        }
    }
}

fn publish(
    hub: &Hub,
    agent: AgentId,
    project: ProjectId,
    containers: Vec<shared::runtime::ServiceState>,
) {
    hub.publish(HubEvent::ServiceStates {
        project_id: project,
        agent_id: agent,
        containers: Arc::new(containers),
    });
}

/// One of the person's projects' containers, as last reported.
pub async fn of_project(store: &Store, by: &User, id: ProjectId) -> OpResult<ProjectServices> {
    let project = store.project(by, id).await?;
    let (containers, updated_at) = match store.service_states(project.id).await? {
        Some((containers, at)) => (containers, Some(at)),
        None => (Vec::new(), None),
    };
    Ok(ProjectServices {
        project_id: project.id,
        containers,
        updated_at,
    })
}

/// The containers of all the person's projects that have any on record.
pub async fn overview(store: &Store, by: &User) -> OpResult<Vec<ProjectServices>> {
    Ok(store
        .service_states_of_owner(by)
        .await?
        .into_iter()
        .map(|(project_id, containers)| ProjectServices {
            project_id,
            containers,
            updated_at: None,
        })
        .collect())
}
