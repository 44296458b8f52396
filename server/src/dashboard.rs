//! The server side of the dashboard: answers its server functions from the store and the hub.

use crate::db::{Agent, Store};
use crate::hub::Hub;
use app::ssr::{BoxFuture, Dashboard};
use shared::api::{AgentStatus, AgentSummary};

pub struct ServerDashboard {
    pub store: Store,
    pub hub: Hub,
}

impl Dashboard for ServerDashboard {
    fn list_agents(&self) -> BoxFuture<'_, Result<Vec<AgentSummary>, String>> {
        Box::pin(async move {
            let agents = self.store.list_agents().await.map_err(|error| {
                tracing::error!(%error, "listing agents for the dashboard");
                "Could not load the servers; see the server log.".to_string()
            })?;
            Ok(agents
                .into_iter()
                .map(|agent| summarize(agent, &self.hub))
                .collect())
        })
    }
}

/// An agent as the dashboard and API show it: stored facts plus live status from the hub.
pub fn summarize(agent: Agent, hub: &Hub) -> AgentSummary {
    let status = if hub.is_connected(agent.id) {
        AgentStatus::Connected
    } else {
        AgentStatus::Disconnected
    };
    AgentSummary {
        id: agent.id,
        name: agent.name,
        status,
        last_seen: agent.last_seen,
        hostname: agent.hostname,
        agent_version: agent.agent_version,
        docker_version: agent.docker_version,
        compose_version: agent.compose_version,
    }
}
