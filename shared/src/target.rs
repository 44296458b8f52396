//! Where a project is deployed: a Compose project on one host, or a Docker Swarm stack run by
//! the manager the agent sits on, and how a Swarm stack receives its secrets.
//!
//! Both travel the REST API, the dashboard and the agent protocol under the same names, and
//! both default to what Stagely did before targets existed (`compose`, `environment`), so an
//! older server's deploy job and an older client's body mean what they always did.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What a deploy runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeployTarget {
    /// `docker compose up` on the agent's host.
    #[default]
    Compose,
    /// `docker stack deploy` on the Swarm whose manager the agent runs on: start-first,
    /// health-gated rolling updates, rolled back by Swarm when the new tasks fail.
    Swarm,
}

impl DeployTarget {
    /// The name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compose => "compose",
            Self::Swarm => "swarm",
        }
    }

    /// Whether this is the default, [`Self::Compose`] (a body leaves it out).
    pub fn is_compose(&self) -> bool {
        *self == Self::Compose
    }

    /// The target of a stored name; `None` for a name this build does not know.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "compose" => Some(Self::Compose),
            "swarm" => Some(Self::Swarm),
            _ => None,
        }
    }
}

impl fmt::Display for DeployTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the services of a Swarm stack receive the project's secrets (a Compose project always
/// receives them as environment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SecretsAs {
    /// Environment variables, as on a Compose project.
    #[default]
    Environment,
    /// Docker Swarm secrets: one per key and deploy (a versioned name), mounted read-only at
    /// `/run/secrets/<KEY>`; versions no service uses any more are removed.
    SwarmSecrets,
}

impl SecretsAs {
    /// The name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "environment",
            Self::SwarmSecrets => "swarm_secrets",
        }
    }

    /// Whether this is the default, [`Self::Environment`] (a body leaves it out).
    pub fn is_environment(&self) -> bool {
        *self == Self::Environment
    }

    /// The mode of a stored name; `None` for a name this build does not know.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "environment" => Some(Self::Environment),
            "swarm_secrets" => Some(Self::SwarmSecrets),
            _ => None,
        }
    }
}

impl fmt::Display for SecretsAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node of the Swarm an agent manages, as `docker node ls` reports it. Docker's words are
/// kept lower-case (`active`, `drain`; `ready`, `down`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SwarmNode {
    /// The node's host name.
    pub hostname: String,
    pub role: NodeRole,
    /// The manager that leads the Swarm's Raft (`docker node ls` says `Leader`).
    #[serde(default)]
    pub leader: bool,
    /// Whether the scheduler places tasks on it: `active`, `pause` or `drain`.
    pub availability: String,
    /// `ready`, `down`, `unknown` or `disconnected`.
    pub state: String,
    /// The node the reporting agent runs on.
    #[serde(default)]
    pub this_node: bool,
}

/// Whether a node manages the Swarm or only runs tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Manager,
    Worker,
}

impl SwarmNode {
    /// What the Servers page shows: `vm · manager (leader) · active · ready`.
    pub fn label(&self) -> String {
        let role = match (self.role, self.leader) {
            (NodeRole::Manager, true) => "manager (leader)",
            (NodeRole::Manager, false) => "manager",
            (NodeRole::Worker, _) => "worker",
        };
        format!(
            "{} · {role} · {} · {}",
            self.hostname, self.availability, self.state
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_secret_modes_are_their_names_and_default_to_what_came_before() {
        for target in [DeployTarget::Compose, DeployTarget::Swarm] {
            let json = serde_json::to_string(&target).unwrap();
            assert_eq!(json, format!("\"{}\"", target.as_str()));
            assert_eq!(DeployTarget::parse(target.as_str()), Some(target));
        }
        for mode in [SecretsAs::Environment, SecretsAs::SwarmSecrets] {
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{}\"", mode.as_str()));
            assert_eq!(SecretsAs::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(DeployTarget::default(), DeployTarget::Compose);
        assert_eq!(SecretsAs::default(), SecretsAs::Environment);
        assert_eq!(DeployTarget::parse("kubernetes"), None);
    }
}
