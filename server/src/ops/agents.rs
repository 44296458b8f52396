//! Agents: register, list and revoke the hosts people deploy to, and the rules an agent's
//! hello must meet.

use super::{Actor, OpError, OpResult};
use crate::db::{Agent, Store};
use crate::hub::Hub;
use crate::token::Token;
use shared::api::{AgentCreated, AgentStatus, AgentSummary, CreateAgent};
use shared::protocol::{budget, Hello, SwarmNodes};
use shared::{AgentId, PROTOCOL_VERSION};

/// Registers an agent and returns its token, shown only this once. An agent registered by the
/// operator has no owner, and only admins see it.
pub async fn register(
    store: &Store,
    hub: &Hub,
    by: Actor<'_>,
    input: CreateAgent,
) -> OpResult<AgentCreated> {
    let owner = match by {
        Actor::User(user) => Some(user.id),
        Actor::Operator => None,
    };
    let token = Token::generate();
    let agent = store
        .create_agent(input.name.as_str(), &token.hash(), owner)
        .await?;
    Ok(AgentCreated {
        agent: summarize(agent, hub),
        token: token.expose().to_string(),
    })
}

/// The agents the actor may see, with their live status.
pub async fn list(store: &Store, hub: &Hub, by: Actor<'_>) -> OpResult<Vec<AgentSummary>> {
    let agents = match by {
        Actor::User(user) => store.agents_visible_to(user).await?,
        Actor::Operator => store.list_agents().await?,
    };
    Ok(agents
        .into_iter()
        .map(|agent| summarize(agent, hub))
        .collect())
}

/// Revokes the agent's token and closes its live session at once (a session held by another
/// server process closes within a second, when that process sees the revocation).
pub async fn revoke(store: &Store, hub: &Hub, by: Actor<'_>, id: AgentId) -> OpResult<()> {
    match by {
        Actor::User(user) => {
            store.agent_visible_to(user, id).await?;
            store.revoke_agent(id).await?;
        }
        Actor::Operator => {
            if !store.revoke_agent(id).await? {
                return Err(OpError::NotFound);
            }
        }
    }
    hub.disconnect(id, "agent token revoked");
    Ok(())
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
        swarm_nodes: agent.swarm_nodes,
    }
}

/// Keeps the Swarm nodes an agent reported: at most [`budget::SWARM_NODES`] of them, each
/// string within [`budget::HELLO_FIELD`] (the agent keeps to both; a hostile one need not).
pub async fn record_swarm_nodes(store: &Store, agent: AgentId, mut nodes: SwarmNodes) {
    nodes.nodes.truncate(budget::SWARM_NODES);
    let cut = |text: &mut String| {
        *text = crate::log_feeds::cut_line(std::mem::take(text), budget::HELLO_FIELD);
    };
    for node in &mut nodes.nodes {
        cut(&mut node.hostname);
        cut(&mut node.availability);
        cut(&mut node.state);
    }
    if let Err(error) = store.record_swarm_nodes(agent, &nodes.nodes).await {
        tracing::warn!(agent_id = %agent, %error, "cannot record the agent's Swarm nodes");
    }
}

/// Whether this server can talk to an agent that introduced itself with `hello`; the reason is
/// sent to the agent when not.
pub fn check_hello(hello: &Hello) -> Result<(), String> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not supported by this server (it speaks {PROTOCOL_VERSION}); \
             install the agent version that matches the server",
            hello.protocol_version
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_with_another_protocol_version_is_refused_with_a_reason() {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION + 1,
            agent_version: "9.9.9".into(),
            hostname: "h".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            docker_version: None,
            compose_version: None,
        };
        let reason = check_hello(&hello).unwrap_err();
        assert!(reason.contains("protocol version"), "{reason}");
    }
}
