//! The agent protocol: JSON text frames on one WebSocket (`/api/v1/stream`).
//!
//! The agent dials out, so it works behind NAT and firewalls that only allow outbound traffic.
//! Its first frame is [`Hello`]; the server answers [`Welcome`] or [`Rejected`] and from then on
//! both sides send the tagged enums below. Every message has the shape
//! `{"type": "<variant>", "data": {...}}`, so a peer can log and skip a variant it does not know.
//!
//! Compatibility rule: the protocol only grows. New fields get `#[serde(default)]`, renamed
//! variants keep an alias, and [`PROTOCOL_VERSION`] changes only when an old peer could no
//! longer be served; a mismatch is refused with a reason the agent logs once.

use crate::runtime::{LifecycleAction, ServiceImage, ServiceState};
use crate::secret::{DeployPayload, SecretValue};
use crate::target::DeployTarget;
use crate::{AgentId, JobId, ProjectId, ProjectName, ServiceName};
use serde::{Deserialize, Serialize};

/// Bumped only on an incompatible change; checked in [`Hello`].
pub const PROTOCOL_VERSION: u32 = 1;

/// The first agent versions ([`Hello::agent_version`]) that understand a deploy's newer fields.
/// An older agent ignores a field it does not know and would deploy something else than asked
/// (the directory instead of the repository, no pull, no registry login), so the server
/// refuses such a job to it, naming the version needed.
pub mod since {
    /// [`DeployPayload::source`](crate::DeployPayload::source): a checkout of a Git repository.
    pub const GIT_SOURCES: &str = "0.2.0";
    /// [`DeployPayload::pull_policy`](crate::DeployPayload::pull_policy) `always`.
    pub const PULL_POLICY: &str = "0.2.0";
    /// [`DeployPayload::registry_credentials`](crate::DeployPayload::registry_credentials).
    pub const REGISTRY_CREDENTIALS: &str = "0.2.0";
    /// [`DeployPayload::target`](crate::DeployPayload::target) `swarm` (and with it
    /// [`DeployPayload::secrets_as`](crate::DeployPayload::secrets_as)): an older agent would
    /// run the stack with `docker compose up`, Swarm secrets as plain environment.
    pub const SWARM_TARGET: &str = "0.2.0";
    /// [`LifecyclePayload::target`](crate::protocol::LifecyclePayload::target) `swarm`: an
    /// older agent (0.2.0 deploys stacks but knows no other job on them) would run `docker
    /// compose stop` or `down`, find no container of the stack and report success.
    pub const SWARM_LIFECYCLE: &str = "0.2.1";
    /// [`DeployPayload::pinned_images`](crate::DeployPayload::pinned_images) with target
    /// `swarm`: an older agent deploys a stack with the images its file names now.
    pub const SWARM_PINNED_IMAGES: &str = "0.2.2";
}

/// Whether the agent version `reported` is `needed` or later, comparing the numbers of
/// `major.minor.patch` (a pre-release or build suffix is ignored). A version that does not
/// start with three numbers counts as older than any.
pub fn version_at_least(reported: &str, needed: &str) -> bool {
    fn numbers(version: &str) -> Option<[u64; 3]> {
        let core = version.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|part| part.parse::<u64>().ok());
        let found = [parts.next()??, parts.next()??, parts.next()??];
        parts.next().is_none().then_some(found)
    }
    match (numbers(reported.trim()), numbers(needed)) {
        (Some(reported), Some(needed)) => reported >= needed,
        _ => false,
    }
}

/// The largest frame the server reads from an agent, as JSON text. A larger one ends the
/// connection, so the agent builds every frame within the [`budget`]s below, which leave room
/// for the frame around them.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// The largest frame (and message) the agent reads from the server, as JSON text. The agent's
/// WebSocket refuses a larger one by dropping the connection, and the server would send it
/// again after every reconnect, so the server never builds one: a `Deploy` or `StartLogs` that
/// would not fit is refused, naming both sizes. Only secret values make those large (up to six
/// bytes of JSON per byte of value), and the server caps what a project holds well below this.
pub const MAX_FRAME_TO_AGENT_BYTES: usize = 16 << 20;

/// How many bytes `value` takes as the JSON a frame carries, counted without writing it anywhere
/// (so a frame holding secret values is measured without a copy of them). Both ends measure
/// their frames against the limits above with it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and the protocol's types always serialize.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// What the agent lets each part of a frame grow to, in bytes of encoded JSON (a quote or a
/// control character takes more room than in the text). Text over its budget is cut at a
/// character boundary and ends with a visible `… N bytes cut`.
pub mod budget {
    /// A job's result message ([`JobEvent::Finished`](super::JobEvent::Finished)), or why a
    /// compose file could not be read ([`Inspected`](super::Inspected)).
    pub const MESSAGE: usize = 64 * 1024;
    /// One line of command output ([`JobEvent::Output`](super::JobEvent::Output)) or of a
    /// container's log ([`LogMessage`](super::LogMessage)).
    pub const LINE: usize = 16 * 1024;
    /// The messages of one [`LogBatch`](super::LogBatch), together.
    pub const LOG_BATCH: usize = 256 * 1024;
    /// The service names of one [`Inspected`](super::Inspected) answer, together.
    pub const SERVICES: usize = 256 * 1024;
    /// Each string of a [`Hello`](super::Hello) (host name, versions).
    pub const HELLO_FIELD: usize = 256;
    /// One [`ServiceStates`](super::ServiceStates) frame; containers beyond it are left out
    /// (and the agent logs how many).
    pub const SERVICE_STATES: usize = 768 * 1024;
    /// Nodes of one [`SwarmNodes`](super::SwarmNodes) frame (each string within
    /// [`HELLO_FIELD`]); more are left out.
    pub const SWARM_NODES: usize = 1000;
}

// Every budget, with a generous frame around it, fits the server's limit.
const _: () = assert!(budget::LOG_BATCH + budget::LINE + 4096 <= MAX_FRAME_BYTES);
const _: () = assert!(budget::SERVICES + budget::MESSAGE + 4096 <= MAX_FRAME_BYTES);
const _: () = assert!(budget::MESSAGE + 4096 <= MAX_FRAME_BYTES);
const _: () = assert!(budget::SERVICE_STATES + 4096 <= MAX_FRAME_BYTES);
const _: () =
    assert!(budget::SWARM_NODES * (2 * budget::HELLO_FIELD + 256) + 4096 <= MAX_FRAME_BYTES);

/// Numbers the server sends that the agent accepts; anything outside is clamped into them, so
/// a bad value can neither overflow a timer nor ask for unbounded work.
pub mod limits {
    /// [`Welcome::heartbeat_interval_secs`](super::Welcome::heartbeat_interval_secs), the same
    /// range the server's `STAGELY_HEARTBEAT_SECS` allows.
    pub const HEARTBEAT_INTERVAL_SECS: std::ops::RangeInclusive<u64> = 1..=3600;
    /// [`Welcome::reconnect_window_secs`](super::Welcome::reconnect_window_secs), at most.
    pub const MAX_RECONNECT_WINDOW_SECS: u64 = 600;
    /// [`StartLogs::tail`](super::StartLogs::tail), at most (the server keeps 1,000 lines).
    pub const MAX_LOG_TAIL: u32 = 5_000;
}

/// Frames the agent sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum AgentToServer {
    /// The first frame after the upgrade.
    Hello(Hello),
    /// Sent every heartbeat interval; the server answers with the same sequence number.
    Heartbeat(Heartbeat),
    /// Progress and result of a job.
    JobUpdate(JobUpdate),
    /// Container log lines of a running log stream.
    Log(LogBatch),
    /// The answer to an [`Inspect`].
    Inspected(Inspected),
    /// The containers of the projects this agent deployed, as they are now.
    ServiceStates(ServiceStates),
    /// The nodes of the Swarm this agent's engine manages (none when it manages none), after
    /// every welcome and every few minutes. An older server logs and skips it.
    SwarmNodes(SwarmNodes),
}

/// Frames the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ServerToAgent {
    /// The hello was accepted.
    Welcome(Welcome),
    /// The hello was refused; the server closes the socket after this frame.
    Rejected(Rejected),
    /// Answer to a [`Heartbeat`], echoing its sequence number.
    HeartbeatAck(Heartbeat),
    /// Deploy a project.
    Deploy(DeployPayload),
    /// Start streaming a project's container logs.
    StartLogs(StartLogs),
    /// Stop a log stream started with [`StartLogs`].
    StopLogs(StopLogs),
    /// Read a project's compose file and say which services it defines.
    Inspect(Inspect),
    /// On `/api/v1/join` only: the join token was redeemed; this is the agent's own token.
    Joined(Joined),
    /// Start, stop, restart or take down a project's containers; a job like a deploy (same
    /// ledger, same [`JobUpdate`]s).
    Lifecycle(LifecyclePayload),
}

/// A lifecycle job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecyclePayload {
    /// Identifies this run, as for a deploy; the agent never runs one id twice.
    pub job_id: JobId,
    /// The Compose project name.
    pub project: ProjectName,
    /// The Stagely project: only containers labelled with it are acted on.
    pub project_id: ProjectId,
    /// The project's directory on the host (Compose v1 needs the file). Inside the agent's
    /// private directory only for a Git project's own checkout (`project_id`'s).
    pub directory: String,
    #[serde(default)]
    pub compose_file: Option<String>,
    pub action: LifecycleAction,
    /// One service only; `None` for the whole project. Never set with `Down`.
    #[serde(default)]
    pub service: Option<ServiceName>,
    /// With `Down`: remove the project's named volumes too.
    #[serde(default)]
    pub remove_volumes: bool,
    /// A Compose project (the default), or a Swarm stack: acted on by its name with `docker
    /// service` and `docker stack` (since [`since::SWARM_LIFECYCLE`]).
    #[serde(default, skip_serializing_if = "DeployTarget::is_compose")]
    pub target: DeployTarget,
}

/// The containers of deployed projects (those labelled `dev.stagely.project-id`).
///
/// Each entry of `projects` is the complete list of that project's containers and replaces
/// what the server held for it. With `full`, the frame lists every project the agent has
/// containers of, so a project the server holds states for and that is missing here has none
/// left. The agent sends a full frame after every welcome (once) and every few minutes, and
/// a partial one (the projects that changed) within moments of a `docker events` change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStates {
    #[serde(default)]
    pub full: bool,
    pub projects: Vec<ProjectContainers>,
}

/// The nodes of the Swarm the agent's engine manages; empty when it is no manager. Replaces
/// what the server held for the agent. At most [`budget::SWARM_NODES`] nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmNodes {
    #[serde(default)]
    pub nodes: Vec<crate::target::SwarmNode>,
}

/// One project's containers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectContainers {
    pub project_id: ProjectId,
    pub containers: Vec<ServiceState>,
}

/// A new agent's identity, sent once in exchange for a join token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub agent_id: AgentId,
    pub name: String,
    /// The agent's long-lived token: shown this once, the server keeps only its hash.
    pub token: String,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined")
            .field("agent_id", &self.agent_id)
            .field("name", &self.name)
            .field("token", &"***")
            .finish()
    }
}

/// Read a compose project without running anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspect {
    /// Echoed in [`Inspected`].
    pub request_id: JobId,
    pub directory: String,
    #[serde(default)]
    pub compose_file: Option<String>,
    /// The Stagely project read: a Git project's checkout lies in the agent's private
    /// directory, and the agent reads there only the checkout of the project named here.
    /// `None` (an older server) is read nowhere in it.
    #[serde(default)]
    pub project_id: Option<ProjectId>,
}

/// What the agent found: the services, or why the file could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inspected {
    pub request_id: JobId,
    pub result: Result<Vec<ServiceName>, String>,
}

/// Who the agent is and what it can drive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal the server's [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The agent's own version (`CARGO_PKG_VERSION`).
    pub agent_version: String,
    /// The host's name.
    pub hostname: String,
    /// Operating system, as Rust names it (`linux`).
    pub os: String,
    /// CPU architecture, as Rust names it (`x86_64`, `aarch64`).
    pub arch: String,
    /// `docker version` server version, when Docker answers.
    #[serde(default)]
    pub docker_version: Option<String>,
    /// Compose version, when a Compose is found.
    #[serde(default)]
    pub compose_version: Option<String>,
}

/// The server accepted the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The identity the token belongs to.
    pub agent_id: AgentId,
    /// How often the agent should send [`Heartbeat`]s.
    pub heartbeat_interval_secs: u64,
    /// After losing a link that was up, spread the first reconnect uniformly over this many
    /// seconds: the server sizes it to its fleet so a restart is not met by every agent at
    /// once. `0` (an older server) means the agent's own base delay.
    #[serde(default)]
    pub reconnect_window_secs: u64,
}

/// The server refused the agent; `reason` is written for the person reading the agent's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub reason: String,
}

/// A liveness probe; `seq` lets the sender match the answer and measure the round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub seq: u64,
}

/// Progress of one job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUpdate {
    /// The job this is about.
    pub job_id: JobId,
    /// What happened.
    pub event: JobEvent,
}

/// One step in the life of a job on the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobEvent {
    /// The agent has the job and will run it (sent once, also for a duplicate).
    Received,
    /// A named step of the deploy started.
    Step { name: DeployStep },
    /// A line of command output, secrets already redacted.
    Output { line: String },
    /// The job ended. A successful deploy lists the image each service runs.
    Finished {
        success: bool,
        message: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<ServiceImage>,
        /// A deploy from a Git repository: the commit it checked out and the host key it met.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checkout: Option<crate::source::CheckoutReport>,
    },
}

/// A step of a deploy, in the order the agent runs them. On the wire it is the step's name
/// (`"up"`); a name this build does not know (a newer agent's step) is kept as [`Self::Other`],
/// so an old server still records and shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum DeployStep {
    /// Reading the compose file to learn its services.
    Parse,
    /// Writing the secrets into the override file.
    Render,
    /// Making sure the compose project name is not another stack's on this host.
    Claim,
    /// `docker compose pull` under the project's pull policy.
    Pull,
    /// `docker compose build` for the services that have a `build:` section.
    Build,
    /// `docker compose up`.
    Up,
    /// Fetching and checking out the project's Git repository.
    Checkout,
    /// Waiting for the containers to run and turn healthy.
    Health,
    /// A step named by a newer agent; never one of the names above (`From` maps those to
    /// their variants).
    Other(String),
}

impl DeployStep {
    /// The step's name on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Parse => "parse",
            Self::Render => "render",
            Self::Claim => "claim",
            Self::Pull => "pull",
            Self::Build => "build",
            Self::Up => "up",
            Self::Checkout => "checkout",
            Self::Health => "health",
            Self::Other(name) => name,
        }
    }
}

impl From<&str> for DeployStep {
    fn from(name: &str) -> Self {
        match name {
            "parse" => Self::Parse,
            "render" => Self::Render,
            "claim" => Self::Claim,
            "pull" => Self::Pull,
            "build" => Self::Build,
            "up" => Self::Up,
            "checkout" => Self::Checkout,
            "health" => Self::Health,
            other => Self::Other(other.to_string()),
        }
    }
}

impl From<String> for DeployStep {
    fn from(name: String) -> Self {
        match Self::from(name.as_str()) {
            Self::Other(_) => Self::Other(name),
            known => known,
        }
    }
}

impl From<DeployStep> for String {
    fn from(step: DeployStep) -> String {
        match step {
            DeployStep::Other(name) => name,
            known => known.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for DeployStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Steps are equal when their names are: `Other("health")` (built by hand) is `Health`.
impl PartialEq for DeployStep {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for DeployStep {}

impl std::hash::Hash for DeployStep {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for DeployStep {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for DeployStep {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Which output stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One container log line, secrets already redacted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMessage {
    /// The Compose project.
    pub project: ProjectName,
    /// The service that printed it.
    pub service: ServiceName,
    /// stdout or stderr.
    pub stream: LogStream,
    /// The container's timestamp (RFC 3339), when Docker gave one.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The line itself, without its newline.
    pub line: String,
}

/// A batch of log lines; `skipped` counts lines dropped because the receiver was too slow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatch {
    /// The stream these lines belong to.
    pub stream_id: JobId,
    pub messages: Vec<LogMessage>,
    #[serde(default)]
    pub skipped: u64,
}

/// Start `docker compose logs -f` for a project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartLogs {
    /// Names this stream in [`LogBatch`] and [`StopLogs`].
    pub stream_id: JobId,
    pub project: ProjectName,
    /// The project's directory on the host (Compose v1 needs the file to find containers).
    pub directory: String,
    /// The compose file inside `directory`; `None` means "as Compose finds it".
    #[serde(default)]
    pub compose_file: Option<String>,
    /// Only this service, or all of them.
    #[serde(default)]
    pub service: Option<ServiceName>,
    /// How many past lines to send first.
    pub tail: u32,
    /// The project's secret values: the agent replaces them with `***` in every line before
    /// it leaves the host. Sent with the request so redaction holds after an agent restart.
    #[serde(default)]
    pub redact: Vec<SecretValue>,
    /// The Stagely project streamed, as for [`Inspect::project_id`].
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    /// A Compose project (the default), or a Swarm stack: its services' logs are read with
    /// `docker service logs` (an older agent runs `compose logs`, which finds no container and
    /// streams nothing).
    #[serde(default, skip_serializing_if = "DeployTarget::is_compose")]
    pub target: DeployTarget,
}

/// Stop a log stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopLogs {
    pub stream_id: JobId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_with_type_and_data() {
        let json = serde_json::to_value(AgentToServer::Heartbeat(Heartbeat { seq: 7 })).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "heartbeat", "data": {"seq": 7}})
        );
    }

    #[test]
    fn agent_versions_compare_by_their_numbers() {
        for (reported, needed, at_least) in [
            ("0.2.0", "0.2.0", true),
            ("0.10.0", "0.2.0", true),
            ("1.0.0-rc.1", "0.2.0", true),
            ("0.1.9", "0.2.0", false),
            ("0.1.0", "0.2.0", false),
            ("0.2", "0.2.0", false),
            ("loadgen-0.2.0", "0.2.0", false),
            ("", "0.2.0", false),
        ] {
            assert_eq!(version_at_least(reported, needed), at_least, "{reported}");
        }
        // This build's agent understands everything this build's server sends.
        for needed in [
            since::GIT_SOURCES,
            since::PULL_POLICY,
            since::REGISTRY_CREDENTIALS,
        ] {
            assert!(version_at_least(env!("CARGO_PKG_VERSION"), needed));
        }
    }

    #[test]
    fn a_hello_from_an_older_agent_without_versions_still_parses() {
        let json = r#"{"type":"hello","data":{"protocol_version":1,"agent_version":"0.1.0",
            "hostname":"h","os":"linux","arch":"x86_64"}}"#;
        let AgentToServer::Hello(hello) = serde_json::from_str(json).unwrap() else {
            panic!("not a hello");
        };
        assert_eq!(hello.docker_version, None);
    }

    #[test]
    fn steps_are_their_names_on_the_wire_and_unknown_names_survive() {
        for (step, name) in [
            (DeployStep::Parse, "parse"),
            (DeployStep::Render, "render"),
            (DeployStep::Claim, "claim"),
            (DeployStep::Up, "up"),
            (DeployStep::Health, "health"),
            (DeployStep::Other("migrate".into()), "migrate"),
        ] {
            let event = JobEvent::Step { name: step.clone() };
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(
                json,
                format!(r#"{{"kind":"step","name":"{name}"}}"#),
                "{name}"
            );
            assert_eq!(
                serde_json::from_str::<JobEvent>(&json).unwrap(),
                event,
                "{name}"
            );
            assert_eq!(DeployStep::from(name), step, "{name}");
            assert!(step == name, "{name}");
            assert_eq!(step.to_string(), name, "{name}");
        }
    }
}
