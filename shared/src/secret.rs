//! Secrets as they travel from the server to an agent, and the deploy job that carries them.

use crate::registry::{PullPolicy, RegistryCredential};
use crate::runtime::ServiceImage;
use crate::{EnvKey, JobId, ProjectId, ProjectName, ServiceName};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a secret is injected.
///
/// JSON form, the same everywhere (REST, server functions, agent protocol, CLI files):
/// `"global"` or `{"service": "<name>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SecretScope {
    /// Injected into every service of the project.
    Global,
    /// Injected into this one service only; wins over a global secret with the same key.
    Service(ServiceName),
}

impl fmt::Display for SecretScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Service(name) => write!(f, "service {name}"),
        }
    }
}

/// A secret's plaintext. Its `Debug` prints `***` so it never lands in a log by accident, and
/// its memory is wiped when it is dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretValue(String);

/// The most bytes one secret's value may have (the server refuses more).
pub const MAX_SECRET_VALUE_BYTES: usize = 64 * 1024;

/// The rule the server holds a value to when it is stored: at most
/// [`MAX_SECRET_VALUE_BYTES`], no NUL (it could not reach a process's environment).
#[cfg(feature = "schema")]
impl schemars::JsonSchema for SecretValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretValue".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[^\\x00]*$",
            "maxLength": MAX_SECRET_VALUE_BYTES,
            "description": format!("At most {MAX_SECRET_VALUE_BYTES} bytes of UTF-8, no NUL."),
        })
    }
}

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext; call sites are the few places that must see it (override file, redaction).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One secret of a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// The environment variable it becomes.
    pub key: EnvKey,
    /// The plaintext value.
    pub value: SecretValue,
    /// Which services receive it.
    pub scope: SecretScope,
}

/// Everything an agent needs to deploy one project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployPayload {
    /// Identifies this run; progress carries it back and the agent never runs one id twice.
    pub job_id: JobId,
    /// The Compose project name (`docker compose -p`).
    pub project: ProjectName,
    /// The project's directory on the agent's host.
    pub directory: String,
    /// The compose file inside `directory`; `None` means "as Compose finds it".
    #[serde(default)]
    pub compose_file: Option<String>,
    /// The decrypted secrets to inject.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// The Stagely project, which the agent labels every container with so it can tell its own
    /// stack from another one using the same compose project name; `None` from older servers.
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    /// A redeploy of an earlier deployment: run each listed service on exactly the image it
    /// ran then (`image: <image_id>` in the override; for a Swarm stack, its registry digest
    /// when it has one, which every node can pull). Before anything runs, the agent checks
    /// every image it pins by id is still on the host and fails the job naming the first that
    /// is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned_images: Vec<ServiceImage>,
    /// A project whose source is a Git repository: the agent checks it out into its own state
    /// directory and deploys from there (`directory` is then not used). Carries the
    /// repository's credentials, which its `Debug` hides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Box<crate::source::GitCheckout>>,
    /// When to pull the images of services that are not built; `missing` from older servers.
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// The registry credentials to pull and build with, one per registry (a project's own
    /// already chosen over its agent's). The agent writes them into a per-run Docker
    /// configuration that it removes when the deploy ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry_credentials: Vec<RegistryCredential>,
    /// `compose` (older servers) or `swarm`: a Swarm stack deployed on the agent's manager.
    #[serde(
        default,
        skip_serializing_if = "crate::target::DeployTarget::is_compose"
    )]
    pub target: crate::target::DeployTarget,
    /// On a Swarm stack: secrets as environment (older servers) or as Swarm secrets.
    #[serde(
        default,
        skip_serializing_if = "crate::target::SecretsAs::is_environment"
    )]
    pub secrets_as: crate::target::SecretsAs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_has_the_documented_json_form() {
        let global = serde_json::to_string(&SecretScope::Global).unwrap();
        assert_eq!(global, "\"global\"");
        let scoped = SecretScope::Service(ServiceName::parse("web").unwrap());
        assert_eq!(
            serde_json::to_string(&scoped).unwrap(),
            r#"{"service":"web"}"#
        );
        let back: SecretScope = serde_json::from_str(r#"{"service":"web"}"#).unwrap();
        assert_eq!(back, scoped);
    }

    #[test]
    fn secret_values_never_show_in_debug_output() {
        let secret = Secret {
            key: EnvKey::parse("DB_PASSWORD").unwrap(),
            value: SecretValue::new("hunter2"),
            scope: SecretScope::Global,
        };
        let printed = format!("{secret:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("***"));
    }
}
