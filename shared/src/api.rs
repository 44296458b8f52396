//! Bodies of the dashboard's server functions and of the REST API.

use crate::AgentId;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Whether an agent has a live session with the server right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Connected,
    Disconnected,
}

impl AgentStatus {
    /// The word the dashboard shows.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connected => "Connected",
            Self::Disconnected => "Disconnected",
        }
    }
}

/// One agent as listed in the dashboard and by `GET /api/v1/agents`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub id: AgentId,
    /// The name given at registration.
    pub name: String,
    pub status: AgentStatus,
    /// When the server last heard from the agent (RFC 3339), if ever.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    /// From the agent's last hello.
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub agent_version: Option<String>,
    #[serde(default)]
    pub docker_version: Option<String>,
    #[serde(default)]
    pub compose_version: Option<String>,
}
