//! Bodies of the dashboard's server functions and of the REST API.

use crate::registry::PullPolicy;
use crate::runtime::{JobKind, LifecycleAction, ServiceImage, ServiceState};
use crate::{
    AgentId, AgentName, ApiTokenId, ComposeFile, DeploymentId, EnvKey, JobId, ProjectId,
    ProjectName, ProjectPath, SecretId, SecretScope, SecretValue, ServiceName, SessionId, UserId,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::OffsetDateTime;

/// Whether an agent has a live session with the server right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AgentSummary {
    pub id: AgentId,
    /// The name given at registration.
    pub name: String,
    pub status: AgentStatus,
    /// When the server last heard from the agent (RFC 3339), if ever.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
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
    /// The nodes of the Swarm the agent's engine manages, as it last reported them; empty
    /// when it manages none.
    #[serde(default)]
    pub swarm_nodes: Vec<crate::target::SwarmNode>,
}

/// `POST /api/v1/agents`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateAgent {
    /// Trimmed; 1 to 64 printable characters.
    pub name: AgentName,
}

/// The answer to `POST /api/v1/agents`: the token is shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AgentCreated {
    pub agent: AgentSummary,
    pub token: String,
}

/// A project: a compose file in a directory on one agent's host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Project {
    pub id: ProjectId,
    /// Also the Compose project name (`docker compose -p`).
    pub name: ProjectName,
    pub agent_id: AgentId,
    /// The project's directory on the agent's host.
    pub path: ProjectPath,
    /// The compose file inside `path`; `None` means "as Compose finds it".
    #[serde(default)]
    pub compose_file: Option<ComposeFile>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub created_at: OffsetDateTime,
    /// Another project on the same agent has this name too (kept from before names were unique
    /// per agent). Compose would see the two as one stack, so this one streams no logs and
    /// must be renamed; the mark goes with the rename.
    #[serde(default)]
    pub name_clash: bool,
    /// A project deployed from a Git repository (its `path` is then the agent's checkout, or
    /// a placeholder until the first deploy); `None`: from `path` on the host.
    #[serde(default)]
    pub source: Option<crate::source::GitSourceView>,
    /// When a deploy pulls the images of services that are not built.
    #[serde(default)]
    pub pull_policy: PullPolicy,
    /// A Compose project on the agent's host, or a Swarm stack on the agent's manager.
    #[serde(default)]
    pub target: crate::target::DeployTarget,
    /// On a Swarm stack: secrets as environment or as Swarm secrets files.
    #[serde(default)]
    pub secrets_as: crate::target::SecretsAs,
}

/// `POST /api/v1/projects`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateProject {
    pub name: ProjectName,
    pub agent_id: AgentId,
    /// The project's directory on the agent's host; required unless `source` is given (a Git
    /// project lives in the agent's own checkout and takes no path).
    #[serde(default)]
    pub path: Option<ProjectPath>,
    /// The compose file inside `path`; missing, `null` or `""` means "as Compose finds it".
    #[serde(default, deserialize_with = "blank_as_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "schema::blank_or::<ComposeFile>")
    )]
    pub compose_file: Option<ComposeFile>,
    /// Deploy from this Git repository instead of a directory on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::source::GitSource>,
    /// When a deploy pulls images; `missing` when not given.
    #[serde(default, skip_serializing_if = "PullPolicy::is_missing")]
    pub pull_policy: PullPolicy,
    /// `compose` (when not given) or `swarm`.
    #[serde(
        default,
        skip_serializing_if = "crate::target::DeployTarget::is_compose"
    )]
    pub target: crate::target::DeployTarget,
    /// On a Swarm stack: `environment` (when not given) or `swarm_secrets`.
    #[serde(
        default,
        skip_serializing_if = "crate::target::SecretsAs::is_environment"
    )]
    pub secrets_as: crate::target::SecretsAs,
}

/// `PATCH /api/v1/projects/{id}`: only the fields given change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateProject {
    #[serde(default)]
    pub name: Option<ProjectName>,
    #[serde(default)]
    pub agent_id: Option<AgentId>,
    #[serde(default)]
    pub path: Option<ProjectPath>,
    /// On the wire a string: missing (or `null`) leaves the file as it is (`None`), `""` clears
    /// it back to "as Compose finds it" (`Some(None)`), a name sets it (`Some(Some(..))`).
    #[serde(
        default,
        with = "clearable_compose_file",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "schema::empty_or::<ComposeFile>")
    )]
    pub compose_file: Option<Option<ComposeFile>>,
    /// A new source: `"directory"` (with `path`, unless the project has one already) or
    /// `{"git": {...}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::source::ProjectSource>,
    /// A new pull policy; missing leaves it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// A new target; missing leaves it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<crate::target::DeployTarget>,
    /// A new way for a Swarm stack to receive its secrets; missing leaves it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_as: Option<crate::target::SecretsAs>,
}

/// `UpdateProject::compose_file` on the wire: `""` for "clear", a name for "set".
mod clearable_compose_file {
    use super::*;

    pub fn serialize<S: Serializer>(
        value: &Option<Option<ComposeFile>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => serializer.serialize_none(),
            Some(None) => serializer.serialize_str(""),
            Some(Some(file)) => serializer.serialize_str(file.as_str()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<ComposeFile>>, D::Error> {
        match Option::<String>::deserialize(deserializer)? {
            None => Ok(None),
            Some(file) if file.is_empty() => Ok(Some(None)),
            Some(file) => ComposeFile::parse(file)
                .map(|file| Some(Some(file)))
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A secret as listed: the value never leaves the server here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SecretSummary {
    pub id: SecretId,
    pub project_id: ProjectId,
    pub key: EnvKey,
    pub scope: SecretScope,
    /// Always `"********"`; revealing is its own, audited call.
    pub value: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub updated_at: OffsetDateTime,
    /// The value is shorter than 6 characters: logs cannot reliably be masked for it (a short
    /// string also occurs in ordinary output, and the agent leaves the shortest ones as they are).
    #[serde(default)]
    pub weak_redaction: bool,
}

/// `POST /api/v1/secrets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateSecret {
    pub project_id: ProjectId,
    pub key: EnvKey,
    pub value: SecretValue,
    pub scope: SecretScope,
}

/// `PATCH /api/v1/secrets/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UpdateSecret {
    pub value: SecretValue,
}

/// `POST /api/v1/secrets/{id}/reveal`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RevealedSecret {
    pub id: SecretId,
    pub key: EnvKey,
    pub value: SecretValue,
}

/// One value a secret has had. Values stay hidden; revealing one is its own, audited call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SecretVersion {
    /// 1 for the first value, counting up with every change.
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub created_at: OffsetDateTime,
    /// The login of who set it, if they still exist.
    #[serde(default)]
    pub created_by: Option<String>,
    /// The secret's value now.
    pub current: bool,
}

/// `POST /api/v1/projects/{id}/actions` → 202: a lifecycle job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRequest {
    pub action: LifecycleAction,
    /// One service; missing for the whole project. Not allowed with `down`.
    #[serde(default)]
    pub service: Option<ServiceName>,
    /// With `down`: remove the project's volumes too (their data is lost).
    #[serde(default)]
    pub remove_volumes: bool,
}

/// Two shapes: `start`, `stop` and `restart` may name a service and never remove volumes;
/// `down` names none and may.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for LifecycleRequest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LifecycleRequest".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let service = generator.subschema_for::<Option<ServiceName>>();
        let one_service: Vec<&str> = [
            LifecycleAction::Start,
            LifecycleAction::Stop,
            LifecycleAction::Restart,
        ]
        .iter()
        .map(|action| action.as_str())
        .collect();
        schemars::json_schema!({
            "description": "A lifecycle job: start, stop or restart the project or one service, \
                            or take the project down (with its volumes if asked).",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["action"],
                    "properties": {
                        "action": {"type": "string", "enum": one_service},
                        "service": service,
                        "remove_volumes": {"type": "boolean", "const": false},
                    },
                },
                {
                    "type": "object",
                    "required": ["action"],
                    "properties": {
                        "action": {"type": "string", "const": LifecycleAction::Down.as_str()},
                        "service": {"type": "null"},
                        "remove_volumes": {"type": "boolean"},
                    },
                },
            ],
        })
    }
}

/// `DELETE /api/v1/projects/{id}?down=true&remove_volumes=false`: with `down`, the project's
/// containers and networks are taken down on its host first, and the project is deleted only
/// once that succeeded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeleteProject {
    #[serde(default)]
    pub down: bool,
    #[serde(default)]
    pub remove_volumes: bool,
}

/// `GET /api/v1/projects/{id}/services`: the project's containers as its agent last reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProjectServices {
    pub project_id: ProjectId,
    pub containers: Vec<ServiceState>,
    /// When the agent last reported them; `None` if it never has.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub updated_at: Option<OffsetDateTime>,
}

/// `POST /api/v1/deploy/{project_id}` → 202.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeployAccepted {
    pub deployment_id: DeploymentId,
}

/// Where a deployment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// Waiting for its agent (offline, or another deploy of the project is ahead of it).
    Queued,
    /// Handed to the agent's connection.
    Sent,
    /// The agent acknowledged it.
    Received,
    /// The agent is working on it.
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Nobody finished it in time (agent gone, job expired).
    TimedOut,
}

impl DeploymentStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Received => "received",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Sent,
            Self::Received,
            Self::Running,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
            Self::TimedOut,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }
}

/// One entry of a deployment's history: a status change, a step or an output line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeploymentEvent {
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub at: OffsetDateTime,
    /// What `body` is.
    pub kind: EventKind,
    pub body: String,
}

/// What an entry of a deployment's history holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The deployment moved to a new status; the body is the status.
    Status,
    /// The agent started a step of the deploy; the body is the step's name.
    Step,
    /// A line of command output, secrets already redacted.
    Output,
}

impl EventKind {
    /// The word on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Step => "step",
            Self::Output => "output",
        }
    }

    /// The kind `value` names, for reading it back from the database.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Status, Self::Step, Self::Output]
            .into_iter()
            .find(|kind| kind.as_str() == value)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for EventKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A deployment with its history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Deployment {
    pub id: DeploymentId,
    pub project_id: ProjectId,
    pub job_id: JobId,
    pub status: DeploymentStatus,
    /// The result's message (failure reason) once finished.
    #[serde(default)]
    pub message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub finished_at: Option<OffsetDateTime>,
    /// Empty in lists; filled by `GET /deployments/{id}`.
    #[serde(default)]
    pub events: Vec<DeploymentEvent>,
    /// A deploy, or a lifecycle action.
    #[serde(default)]
    pub kind: JobKind,
    /// The one service a lifecycle action was for.
    #[serde(default)]
    pub service: Option<ServiceName>,
    /// A `down` that removed volumes too.
    #[serde(default)]
    pub remove_volumes: bool,
    /// This deploy runs the snapshot of that earlier one (its secret values and images).
    #[serde(default)]
    pub redeploy_of: Option<DeploymentId>,
    /// Who asked for it (a login), if they still exist.
    #[serde(default)]
    pub requested_by: Option<String>,
    /// The image each service ran, once a deploy succeeded.
    #[serde(default)]
    pub images: Vec<ServiceImage>,
    /// What started it: a person (`manual`) or a push webhook (provider, commit, pusher).
    #[serde(default)]
    pub trigger: crate::webhooks::DeployTrigger,
    /// The commit a deploy from Git checked out.
    #[serde(default)]
    pub commit: Option<crate::source::CommitInfo>,
}

/// The body of every API error: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApiError {
    pub error: ApiErrorBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
}

/// What the dashboard's live WebSocket (`/api/v1/events`) sends the browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum DashboardEvent {
    /// An agent connected or disconnected.
    AgentStatus {
        agent_id: AgentId,
        status: AgentStatus,
    },
    /// Events were missed (a slow tab): reload the data instead of trusting the stream.
    Resync,
    /// A deployment of the watched project moved to a new status.
    DeploymentStatus {
        deployment_id: DeploymentId,
        status: DeploymentStatus,
        #[serde(default)]
        message: Option<String>,
    },
    /// A step or output line of a deployment of the watched project.
    DeploymentEvent {
        deployment_id: DeploymentId,
        event: DeploymentEvent,
    },
    /// Container log lines of the watched project.
    Logs(LogLines),
    /// The containers of one of the person's projects changed (any project, watched or not:
    /// the Projects list shows a summary of each).
    ServiceStates {
        project_id: ProjectId,
        containers: Vec<ServiceState>,
    },
}

/// What the browser sends on the live feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum DashboardRequest {
    /// Follow this project's deployments and container logs (instead of any other). `resume`
    /// is the last log line the tab already shows, so a reconnect sends only what is new.
    Watch {
        project_id: ProjectId,
        #[serde(default)]
        resume: Option<LogCursor>,
    },
}

/// A position in a project's log feed. `epoch` names one run of the server's log stream: a
/// cursor from another epoch (the server restarted, or nobody watched for a while) is
/// answered with the buffered lines from the start, and the tab starts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    pub epoch: u64,
    pub seq: u64,
}

/// Log lines of one project, numbered within their epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLines {
    pub project_id: ProjectId,
    pub epoch: u64,
    pub lines: Vec<LogLine>,
    /// Lines the agent dropped because the link could not keep up.
    #[serde(default)]
    pub skipped: u64,
}

/// One container log line, secrets already redacted by the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: u64,
    pub service: ServiceName,
    #[serde(default)]
    pub stderr: bool,
    #[serde(default)]
    pub timestamp: Option<String>,
    pub text: String,
}

/// The fewest seconds a join token may be used for (a minute).
pub const JOIN_TOKEN_MIN_SECS: u64 = 60;
/// The most seconds a join token may be used for (a week).
pub const JOIN_TOKEN_MAX_SECS: u64 = 7 * 24 * 3600;
/// How long a join token lasts unless asked otherwise (an hour).
pub const JOIN_TOKEN_DEFAULT_SECS: u64 = 3600;

/// `POST /api/v1/join-tokens`: an invitation for a new host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateJoinToken {
    /// The new agent's name; by default the host's name. An empty or blank string counts as
    /// no name.
    #[serde(default, deserialize_with = "blank_as_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "schema::blank_or::<AgentName>")
    )]
    pub name: Option<AgentName>,
    /// How long the token may be used: 60 s to 7 days, default 1 hour.
    #[serde(default, deserialize_with = "whole_number")]
    #[cfg_attr(
        feature = "schema",
        schemars(range(min = JOIN_TOKEN_MIN_SECS, max = JOIN_TOKEN_MAX_SECS))
    )]
    pub expires_in_secs: Option<u64>,
}

/// Schemas of the fields whose wire form is wider than their type.
#[cfg(feature = "schema")]
mod schema {
    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

    /// `T`, or a string of only whitespace, or `null` (all but `T` mean "none given").
    pub fn blank_or<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
        let name = generator.subschema_for::<T>();
        json_schema!({"anyOf": [
            name,
            {"type": "string", "pattern": crate::names::BLANK_PATTERN},
            {"type": "null"},
        ]})
    }

    /// `T`, or `""` (clear it), or `null` (leave it).
    pub fn empty_or<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
        let name = generator.subschema_for::<T>();
        json_schema!({"anyOf": [name, {"type": "string", "maxLength": 0}, {"type": "null"}]})
    }
}

/// An optional count that JSON may write as `3600` or `3600.0`: JSON Schema calls both an
/// integer, and so does the API's document.
fn whole_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|value| value.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(value))
            .map(|value| value as u64)
    });
    whole.map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "invalid value: {number}, expected a whole number of seconds"
        ))
    })
}

/// An optional name where `null`, `""` and whitespace all mean "none given".
fn blank_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String>,
    T::Error: fmt::Display,
{
    match Option::<String>::deserialize(deserializer)? {
        Some(name) if !name.trim().is_empty() => T::try_from(name)
            .map(Some)
            .map_err(serde::de::Error::custom),
        _ => Ok(None),
    }
}

/// A join token with the ways to use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JoinTokenCreated {
    /// Single use; shown this once.
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub expires_at: OffsetDateTime,
    /// `curl -fsSL <public url>/install.sh | STAGELY_JOIN_TOKEN=<token> sh`, to run as root on
    /// the host (the token goes in the environment of `sh`, never on a command line).
    pub command: String,
    /// A cloud-init user-data file that does the same on the first boot: `write_files` puts the
    /// token in a root-only file and `runcmd` runs the installer with
    /// `STAGELY_JOIN_TOKEN_FILE` naming it (a `runcmd` line is on a shell's command line).
    pub cloud_init: String,
}

/// The signed-in person, as the dashboard shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewer {
    pub id: UserId,
    pub login: String,
    pub is_admin: bool,
}

/// One of the caller's dashboard sessions, as `GET /api/v1/sessions` lists it. It never
/// carries the session's secret: `id` is a public handle for revoking it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SessionInfo {
    pub id: SessionId,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub created_at: OffsetDateTime,
    /// When it last authenticated a request (to the minute), if since it was created.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub expires_at: OffsetDateTime,
    /// The browser's `User-Agent` at sign-in (at most 256 characters).
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The address the sign-in came from (see `STAGELY_TRUSTED_PROXIES`).
    #[serde(default)]
    pub ip: Option<String>,
    /// The session of this very request: revoking it signs you out.
    pub current: bool,
}

/// One of the caller's API tokens, as `GET /api/v1/api-tokens` lists it: never the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApiTokenInfo {
    pub id: ApiTokenId,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub created_at: OffsetDateTime,
    /// When it last authenticated a request (to the minute), if ever since this was tracked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub last_used_at: Option<OffsetDateTime>,
    /// The token this very request carries.
    pub current: bool,
}

/// A user as an admin sees it in `GET /api/v1/users`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UserSummary {
    pub id: UserId,
    pub login: String,
    pub is_admin: bool,
    /// Signs in with GitHub (matched by GitHub's numeric user id).
    #[serde(default)]
    pub github_id: Option<i64>,
    /// A disabled user cannot sign in, and has no sessions or API tokens.
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub created_at: OffsetDateTime,
}

/// How people may sign in to this server, for the login page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInOptions {
    /// "Sign in with GitHub" is configured.
    pub github: bool,
}

/// The fewest characters a local account's password may have.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Why a sign-in (or the first-admin setup) did not happen: the server redirects back to the
/// form with `?error=<code>` and the page shows [`SignInError::message`]. Only these codes are
/// ever shown: a link with any other `?error=` (say, `<script>…` or "Database error") shows
/// nothing, so nobody can make the sign-in page say what they like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignInError {
    WrongPassword,
    BadUsername,
    ShortPassword,
    PasswordsDiffer,
    AlreadySetUp,
    GitHubNotConfigured,
    GitHubDenied,
    Expired,
    Mismatch,
    NoCode,
    GitHubRejectedCode,
    NotAllowed,
    LocalAccountExists,
    ServerError,
    TooManyAttempts,
    Disabled,
    NameTaken,
}

impl SignInError {
    pub const ALL: [Self; 17] = [
        Self::WrongPassword,
        Self::BadUsername,
        Self::ShortPassword,
        Self::PasswordsDiffer,
        Self::AlreadySetUp,
        Self::GitHubNotConfigured,
        Self::GitHubDenied,
        Self::Expired,
        Self::Mismatch,
        Self::NoCode,
        Self::GitHubRejectedCode,
        Self::NotAllowed,
        Self::LocalAccountExists,
        Self::ServerError,
        Self::TooManyAttempts,
        Self::Disabled,
        Self::NameTaken,
    ];

    /// What goes into `?error=`.
    pub fn code(self) -> &'static str {
        match self {
            Self::WrongPassword => "wrong_password",
            Self::BadUsername => "bad_username",
            Self::ShortPassword => "short_password",
            Self::PasswordsDiffer => "passwords_differ",
            Self::AlreadySetUp => "already_set_up",
            Self::GitHubNotConfigured => "github_not_configured",
            Self::GitHubDenied => "github_denied",
            Self::Expired => "expired",
            Self::Mismatch => "mismatch",
            Self::NoCode => "no_code",
            Self::GitHubRejectedCode => "github_rejected_code",
            Self::NotAllowed => "not_allowed",
            Self::LocalAccountExists => "local_account_exists",
            Self::ServerError => "server_error",
            Self::TooManyAttempts => "too_many_attempts",
            Self::Disabled => "disabled",
            Self::NameTaken => "name_taken",
        }
    }

    /// The code of a `?error=`; `None` for anything the server does not send.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|error| error.code() == code)
    }

    /// What the person reads next to the form.
    pub fn message(self) -> &'static str {
        match self {
            Self::WrongPassword => "Wrong username or password.",
            Self::BadUsername => {
                "The username must be 1 to 64 letters, digits, dots, dashes or underscores."
            }
            Self::ShortPassword => "The password must be at least 8 characters.",
            Self::PasswordsDiffer => "The two passwords differ.",
            Self::AlreadySetUp => "This instance is already set up; sign in instead.",
            Self::GitHubNotConfigured => "GitHub sign-in is not configured on this server.",
            Self::GitHubDenied => "GitHub did not sign you in.",
            Self::Expired => "This sign-in expired or was already used; start again.",
            Self::Mismatch => {
                "The sign-in did not match the one this browser started; start again."
            }
            Self::NoCode => "GitHub sent no authorization code.",
            Self::GitHubRejectedCode => "GitHub did not accept the sign-in; start again.",
            Self::NotAllowed => "This GitHub account is not allowed to sign in to this server.",
            Self::LocalAccountExists => {
                "A local account has this GitHub account's name; sign in with its password."
            }
            Self::ServerError => "Sign-in failed on the server; its log has the details.",
            Self::TooManyAttempts => {
                "Too many sign-in attempts from this address or for this account; wait a few \
                 minutes and try again."
            }
            Self::Disabled => "This account is disabled; ask an administrator.",
            Self::NameTaken => {
                "Another account already uses this GitHub account's name (GitHub accounts are \
                 matched by their id, and this one is new here); ask an administrator."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sign_in_errors_are_a_closed_set_of_codes() {
        for error in SignInError::ALL {
            assert_eq!(SignInError::parse(error.code()), Some(error));
        }
        assert!(SignInError::ShortPassword
            .message()
            .contains(&MIN_PASSWORD_CHARS.to_string()));
        for arbitrary in [
            "<script>alert(1)</script>",
            "Database error",
            "",
            "Wrong username",
        ] {
            assert_eq!(SignInError::parse(arbitrary), None);
        }
    }

    #[test]
    fn a_blank_join_token_name_means_none() {
        for (body, expected) in [
            (json!({}), None),
            (json!({"name": null}), None),
            (json!({"name": ""}), None),
            (json!({"name": "  \t"}), None),
            (json!({"name": " web-1 "}), Some("web-1")),
        ] {
            let token: CreateJoinToken = serde_json::from_value(body.clone()).unwrap();
            assert_eq!(
                token.name.as_ref().map(AgentName::as_str),
                expected,
                "{body}"
            );
        }
        let error =
            serde_json::from_value::<CreateJoinToken>(json!({"name": "a\u{7}b"})).unwrap_err();
        assert!(error.to_string().contains("1 to 64"), "{error}");
    }

    #[test]
    fn an_update_tells_an_unchanged_compose_file_from_a_cleared_one() {
        let file = ComposeFile::parse("compose.prod.yaml").unwrap();
        for (body, expected) in [
            (json!({}), None),
            (json!({"compose_file": null}), None),
            (json!({"compose_file": ""}), Some(None)),
            (
                json!({"compose_file": "compose.prod.yaml"}),
                Some(Some(file.clone())),
            ),
        ] {
            let update: UpdateProject = serde_json::from_value(body.clone()).unwrap();
            assert_eq!(update.compose_file, expected, "{body}");
        }
        for (compose_file, expected) in [
            (None, json!({"name": null, "agent_id": null, "path": null})),
            (
                Some(None),
                json!({"name": null, "agent_id": null, "path": null, "compose_file": ""}),
            ),
            (
                Some(Some(file)),
                json!({"name": null, "agent_id": null, "path": null,
                       "compose_file": "compose.prod.yaml"}),
            ),
        ] {
            let update = UpdateProject {
                compose_file,
                ..UpdateProject::default()
            };
            assert_eq!(
                serde_json::to_value(&update).unwrap(),
                expected,
                "{update:?}"
            );
        }
        let error = serde_json::from_value::<UpdateProject>(json!({"compose_file": "../up.yml"}))
            .unwrap_err();
        assert!(error.to_string().contains("inside the project"), "{error}");
    }

    #[test]
    fn projects_keep_their_json_form() {
        let body = json!({
            "name": "shop",
            "agent_id": "6f1c1c0e-2a5e-4c5e-9a43-1c8f1f0b6a11",
            "path": "/srv/shop",
            "compose_file": "compose.prod.yaml",
        });
        let create: CreateProject = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(create.path.as_ref().unwrap(), "/srv/shop");
        assert_eq!(serde_json::to_value(&create).unwrap(), body);
        for (body, why) in [
            (
                json!({"name": "shop", "agent_id": body["agent_id"], "path": "srv"}),
                "absolute",
            ),
            (
                json!({"name": "shop", "agent_id": body["agent_id"], "path": "/srv",
                       "compose_file": "/etc/x.yaml"}),
                "inside the project",
            ),
        ] {
            let error = serde_json::from_value::<CreateProject>(body).unwrap_err();
            assert!(error.to_string().contains(why), "{why}: {error}");
        }
    }

    #[test]
    fn event_kinds_are_lowercase_words() {
        for (kind, word) in [
            (EventKind::Status, "status"),
            (EventKind::Step, "step"),
            (EventKind::Output, "output"),
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(word), "{word}");
            assert_eq!(EventKind::parse(word), Some(kind), "{word}");
            assert!(kind == word, "{word}");
            assert_eq!(kind.to_string(), word, "{word}");
        }
        assert_eq!(EventKind::parse("Step"), None);
    }
}
