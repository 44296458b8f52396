//! What runs on a host after a deploy, as the agent reports it and the dashboard shows it: the
//! state of each container, the image it runs, and the lifecycle actions a person can ask for.
//!
//! The same types travel in the agent protocol (`ServiceStates`, `Lifecycle`, a deploy's result)
//! and in the REST API, so the server stores and forwards what the agent said without a second
//! shape in between.

use crate::ServiceName;
use serde::{Deserialize, Serialize};

/// What Docker says a container is doing (`State.Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    Created,
    Running,
    Restarting,
    Paused,
    Exited,
    Dead,
    Removing,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Paused => "paused",
            Self::Exited => "exited",
            Self::Dead => "dead",
            Self::Removing => "removing",
        }
    }

    /// The status Docker names `value` (`docker inspect`'s `State.Status`, `compose ps`'s
    /// `State`), if it is one.
    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Created,
            Self::Running,
            Self::Restarting,
            Self::Paused,
            Self::Exited,
            Self::Dead,
            Self::Removing,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }
}

/// A container's healthcheck verdict; `None` where the service has no healthcheck.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ContainerHealth {
    Starting,
    Healthy,
    Unhealthy,
}

impl ContainerHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::Starting, Self::Healthy, Self::Unhealthy]
            .into_iter()
            .find(|health| health.as_str() == value)
    }
}

/// One container of a deployed project, as the agent last saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ServiceState {
    /// The compose service the container belongs to.
    pub service: ServiceName,
    /// The container's id, 12 hex digits as `docker ps` prints it.
    pub container_id: String,
    pub status: ContainerStatus,
    /// The exit code, when `status` is `exited` or `dead`.
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub health: Option<ContainerHealth>,
    /// When the container last started (RFC 3339, as Docker gives it).
    #[serde(default)]
    pub started_at: Option<String>,
    /// How many times Docker restarted it (its restart policy).
    #[serde(default)]
    pub restart_count: u32,
    /// The id of the image it runs (`sha256:…`).
    #[serde(default)]
    pub image_id: Option<String>,
    /// For a task of a Swarm stack: where its whole service stands (the same on every
    /// container of the service); `None` for a compose container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Replicas>,
}

/// A Swarm service's tasks, as `docker stack services` and `docker stack ps` report them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Replicas {
    /// Tasks running now.
    pub running: u64,
    /// Tasks asked for; `None` for a global service (one per node).
    #[serde(default)]
    pub desired: Option<u64>,
    /// The error of the service's most recent failed task, as Swarm words it.
    #[serde(default)]
    pub error: Option<String>,
}

impl Replicas {
    /// What the dashboard shows: `2/2 running`, `0/1 running · task: non-zero exit (3)`.
    pub fn label(&self) -> String {
        let mut label = match self.desired {
            Some(desired) => format!("{}/{desired} running", self.running),
            None => format!("{} running (global)", self.running),
        };
        if let Some(error) = &self.error {
            label.push_str(&format!(" · {error}"));
        }
        label
    }
}

impl ServiceState {
    /// Running, and healthy where it has a healthcheck (`starting` still counts as up).
    pub fn is_up(&self) -> bool {
        self.status == ContainerStatus::Running && self.health != Some(ContainerHealth::Unhealthy)
    }

    /// What the dashboard shows for it: `running`, `running (healthy)`, `exited (1)`.
    pub fn label(&self) -> String {
        let mut label = self.status.as_str().to_string();
        if let (ContainerStatus::Exited | ContainerStatus::Dead, Some(code)) =
            (self.status, self.exit_code)
        {
            label.push_str(&format!(" ({code})"));
        }
        if let Some(health) = self.health {
            if self.status == ContainerStatus::Running {
                label.push_str(&format!(" ({})", health.as_str()));
            }
        }
        label
    }
}

/// One line for a project's containers, as the Projects list shows it: `3/3 running` while
/// all are up, otherwise the first that is not (`worker exited (1)`, `web unhealthy`) with the
/// count, and `no containers` when none are known.
pub fn summarize(states: &[ServiceState]) -> String {
    if states.is_empty() {
        return "no containers".into();
    }
    let up = states.iter().filter(|state| state.is_up()).count();
    let count = format!("{up}/{} running", states.len());
    match states.iter().find(|state| !state.is_up()) {
        None => count,
        Some(down) => {
            let what = if down.status == ContainerStatus::Running {
                "unhealthy".to_string()
            } else {
                down.label()
            };
            format!("{} {what} · {count}", down.service)
        }
    }
}

/// The image a service ran in a deployment: what the compose file named and what it resolved
/// to on the host. A redeploy pins the service to `image_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ServiceImage {
    pub service: ServiceName,
    /// The reference the container was created from (`registry/app:latest`).
    pub image: String,
    /// The local image id (`sha256:…`), which names exactly that image on that host.
    pub image_id: String,
    /// The registry digest (`registry/app@sha256:…`), when the image came from a registry.
    #[serde(default)]
    pub repo_digest: Option<String>,
}

/// Whether `id` is an image id as Docker writes it: `sha256:` and 64 lowercase hex digits.
pub fn is_image_id(id: &str) -> bool {
    id.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether `reference` names an image by its registry digest: a repository name, `@sha256:`
/// and 64 lowercase hex digits, with nothing a YAML or shell reader would treat specially.
pub fn is_digest_reference(reference: &str) -> bool {
    reference.split_once('@').is_some_and(|(name, digest)| {
        !name.is_empty()
            && name.len() <= 255
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:".contains(&b))
            && is_image_id(digest)
    })
}

/// What a lifecycle job does to a project's containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum LifecycleAction {
    /// `compose start`: start the stopped containers (nothing is created).
    Start,
    /// `compose stop`.
    Stop,
    /// `compose restart`.
    Restart,
    /// `compose down`: remove the containers and networks; volumes only when asked.
    Down,
}

impl LifecycleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Down => "down",
        }
    }
}

/// What a job of a project's history did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// A deploy (also a redeploy of an earlier deployment).
    #[default]
    Deploy,
    Start,
    Stop,
    Restart,
    Down,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Down => "down",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Deploy,
            Self::Start,
            Self::Stop,
            Self::Restart,
            Self::Down,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == value)
    }
}

impl From<LifecycleAction> for JobKind {
    fn from(action: LifecycleAction) -> Self {
        match action {
            LifecycleAction::Start => Self::Start,
            LifecycleAction::Stop => Self::Stop,
            LifecycleAction::Restart => Self::Restart,
            LifecycleAction::Down => Self::Down,
        }
    }
}

/// The lifecycle action a job of this kind runs; a deploy has none (the kind is the error).
impl TryFrom<JobKind> for LifecycleAction {
    type Error = JobKind;

    fn try_from(kind: JobKind) -> Result<Self, JobKind> {
        match kind {
            JobKind::Start => Ok(Self::Start),
            JobKind::Stop => Ok(Self::Stop),
            JobKind::Restart => Ok(Self::Restart),
            JobKind::Down => Ok(Self::Down),
            JobKind::Deploy => Err(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_reference_is_a_repository_and_a_sha256_digest_only() {
        let digest = format!("sha256:{}", "0a".repeat(32));
        for good in [
            format!("app@{digest}"),
            format!("registry.local:5000/team/app@{digest}"),
        ] {
            assert!(is_digest_reference(&good), "{good:?}");
        }
        for bad in [
            digest.clone(),
            format!("@{digest}"),
            format!("app:1.0@{digest}x"),
            format!("App@{digest}"),
            format!("app@sha256:{}", "0".repeat(63)),
            format!("app\n  build: .@{digest}"),
            format!("app {digest}"),
            "app:1.0".to_owned(),
        ] {
            assert!(!is_digest_reference(&bad), "{bad:?}");
        }
    }

    fn state(service: &str, status: ContainerStatus) -> ServiceState {
        ServiceState {
            service: ServiceName::parse(service).unwrap(),
            container_id: "0123456789ab".into(),
            status,
            exit_code: None,
            health: None,
            started_at: None,
            restart_count: 0,
            image_id: None,
            replicas: None,
        }
    }

    #[test]
    fn replicas_read_as_running_out_of_desired_with_the_error() {
        let healthy = Replicas {
            running: 2,
            desired: Some(2),
            error: None,
        };
        assert_eq!(healthy.label(), "2/2 running");
        let failing = Replicas {
            running: 0,
            desired: Some(1),
            error: Some("task: non-zero exit (3)".into()),
        };
        assert_eq!(failing.label(), "0/1 running · task: non-zero exit (3)");
        // A compose container carries no replicas, and says nothing about them on the wire.
        let json = serde_json::to_value(state("web", ContainerStatus::Running)).unwrap();
        assert!(json.get("replicas").is_none());
        let old: ServiceState = serde_json::from_value(json).unwrap();
        assert_eq!(old.replicas, None);
    }

    #[test]
    fn the_summary_names_the_first_service_that_is_not_up() {
        assert_eq!(summarize(&[]), "no containers");
        let web = state("web", ContainerStatus::Running);
        let db = state("db", ContainerStatus::Running);
        assert_eq!(summarize(&[web.clone(), db.clone()]), "2/2 running");
        let worker = ServiceState {
            exit_code: Some(1),
            ..state("worker", ContainerStatus::Exited)
        };
        assert_eq!(
            summarize(&[web.clone(), worker, db.clone()]),
            "worker exited (1) · 2/3 running"
        );
        let sick = ServiceState {
            health: Some(ContainerHealth::Unhealthy),
            ..web
        };
        assert_eq!(summarize(&[sick, db]), "web unhealthy · 1/2 running");
    }

    #[test]
    fn statuses_and_kinds_read_back_from_their_words() {
        for status in [
            "created",
            "running",
            "restarting",
            "paused",
            "exited",
            "dead",
        ] {
            assert_eq!(ContainerStatus::parse(status).unwrap().as_str(), status);
        }
        for kind in ["deploy", "start", "stop", "restart", "down"] {
            assert_eq!(JobKind::parse(kind).unwrap().as_str(), kind);
        }
        assert_eq!(
            serde_json::to_string(&LifecycleAction::Down).unwrap(),
            "\"down\""
        );
    }
}
