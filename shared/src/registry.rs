//! Images of a deploy: when the agent pulls them ([`PullPolicy`]) and the registry credentials
//! it pulls them with.
//!
//! A credential is stored sealed on the server, set for one agent (every project it deploys)
//! or for one project (winning over the agent's for the same registry), and travels to the
//! agent only inside a deploy job ([`RegistryCredential`]); the agent hands it to Compose in a
//! per-run Docker configuration directory and removes it when the deploy ends. The API never
//! gives a password back: a listing shows the registry and the username
//! ([`RegistryCredentialSummary`]).

use crate::names::{RegistryHost, RegistryUsername};
use crate::secret::SecretValue;
use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;

/// When a deploy pulls the images of the services that have no `build:` section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Only images not on the host yet (Compose's own default).
    #[default]
    Missing,
    /// Every deploy asks the registry, so a tag pushed again (`:latest` from CI) is picked up;
    /// services that are built also build with `--pull`.
    Always,
}

impl PullPolicy {
    /// The name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Always => "always",
        }
    }

    /// Whether this is the default, [`Self::Missing`] (a body leaves it out).
    pub fn is_missing(&self) -> bool {
        *self == Self::Missing
    }

    /// The policy of a stored name; `None` for a name this build does not know.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "missing" => Some(Self::Missing),
            "always" => Some(Self::Always),
            _ => None,
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most bytes a registry password or token may have (the server refuses more).
pub const MAX_REGISTRY_PASSWORD_BYTES: usize = 4 * 1024;

/// One registry's credential as a deploy job carries it to the agent. Its `Debug` shows the
/// password as `***` ([`SecretValue`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredential {
    /// The registry host, as image references name it.
    pub registry: RegistryHost,
    /// The account name.
    pub username: RegistryUsername,
    /// The password or access token.
    pub password: SecretValue,
}

/// `PUT` of a project's or an agent's credential for one registry: set, or replace the one it
/// has for that registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SetRegistryCredential {
    /// The registry host, as image references name it (`ghcr.io`, `localhost:5000`).
    pub registry: RegistryHost,
    pub username: RegistryUsername,
    /// The password or access token; stored encrypted and never shown again.
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub password: SecretValue,
}

/// A stored credential as listings show it: never its password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RegistryCredentialSummary {
    pub registry: RegistryHost,
    pub username: RegistryUsername,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub updated_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credentials_password_never_shows_in_debug_output() {
        let credential = RegistryCredential {
            registry: RegistryHost::parse("ghcr.io").unwrap(),
            username: RegistryUsername::parse("ci").unwrap(),
            password: SecretValue::new("hunter2-registry"),
        };
        let printed = format!("{credential:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("***"), "{printed}");
    }

    #[test]
    fn pull_policies_have_their_documented_names() {
        for policy in [PullPolicy::Missing, PullPolicy::Always] {
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(json, format!("\"{}\"", policy.as_str()));
            assert_eq!(PullPolicy::parse(policy.as_str()), Some(policy));
        }
        assert_eq!(PullPolicy::default(), PullPolicy::Missing);
        assert_eq!(PullPolicy::parse("never"), None);
    }
}
