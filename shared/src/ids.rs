//! Identifiers. Each is a UUID in its own newtype so an agent id can never be passed where a
//! project id is expected. They serialize as plain UUID strings.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}
pub(crate) use id_type;

id_type!(
    /// One registered agent, i.e. one host running `stagely-agent`.
    AgentId
);
id_type!(
    /// One project: a compose file in a directory on one agent's host.
    ProjectId
);
id_type!(
    /// One deployment of a project, as the user sees it in the history.
    DeploymentId
);
id_type!(
    /// One job sent to an agent. Progress and results carry it back, and the agent uses it as an
    /// idempotency key so a job re-sent after a reconnect never runs twice.
    JobId
);
id_type!(
    /// One secret of a project.
    SecretId
);
id_type!(
    /// One user account.
    UserId
);
id_type!(
    /// One dashboard session of a user (its public id: never the cookie's secret nor its hash).
    SessionId
);
id_type!(
    /// One API token of a user (its public id: never the token nor its hash).
    ApiTokenId
);
