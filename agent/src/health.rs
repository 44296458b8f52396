//! What state a project's containers are in, read from the engine, and whether a deploy may
//! call itself done.
//!
//! A project's containers are found by their `com.docker.compose.project` label and read with
//! `docker inspect` (Compose v2 and v1 alike): unlike `compose ps`, it says when each container
//! started, so a redeploy that changed nothing need not wait out the settle time again for
//! containers that have been up for hours ([`settle_left`]).

use serde::Deserialize;
use shared::runtime::{ContainerHealth, ContainerStatus, ServiceState};
use shared::{ProjectId, ServiceName};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// One container of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerState {
    pub service: String,
    /// `running`, `exited`, `restarting`, `created`, `dead`, `paused`.
    pub state: String,
    /// `healthy`, `unhealthy` or `starting` when the service has a healthcheck.
    pub health: Option<String>,
    pub exit_code: Option<i64>,
    /// When the container last started (`State.StartedAt`); `None` when it never started or
    /// the engine did not say.
    pub started_at: Option<SystemTime>,
}

/// Where the project stands after `up`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every container is running (and healthy where it has a healthcheck), or finished with
    /// exit code 0 (a one-shot task).
    Ready,
    /// Not there yet; says what is being waited for.
    Waiting(String),
    /// A container exited with an error or reported unhealthy.
    Failed {
        service: String,
        exit_code: Option<i64>,
        reason: String,
    },
}

/// Judges a project from its containers' states.
pub fn judge(containers: &[ContainerState]) -> Verdict {
    if containers.is_empty() {
        return Verdict::Waiting("no containers yet".into());
    }
    let mut waiting = Vec::new();
    for container in containers {
        let service = &container.service;
        match (container.state.as_str(), container.health.as_deref()) {
            ("exited" | "dead", _) if container.exit_code != Some(0) => {
                return Verdict::Failed {
                    service: service.clone(),
                    exit_code: container.exit_code,
                    reason: format!(
                        "service {service} exited with code {}",
                        container
                            .exit_code
                            .map_or_else(|| "unknown".into(), |code| code.to_string())
                    ),
                };
            }
            ("exited", _) => {} // a one-shot task that succeeded
            (_, Some("unhealthy")) => {
                return Verdict::Failed {
                    service: service.clone(),
                    exit_code: None,
                    reason: format!("service {service} is unhealthy"),
                };
            }
            ("running", None | Some("healthy") | Some("")) => {}
            ("running", Some(health)) => waiting.push(format!("{service} ({health})")),
            (state, _) => waiting.push(format!("{service} ({state})")),
        }
    }
    if waiting.is_empty() {
        Verdict::Ready
    } else {
        Verdict::Waiting(waiting.join(", "))
    }
}

/// How much longer a project that [`judge`] calls ready must wait before the deploy is done:
/// until every running container has been up for `settle`, counted from its own start. A
/// container that has run for hours (a redeploy that changed nothing) has settled at once; one
/// just (re)started, by `up` or by its restart policy, waits the whole time; a crash loop keeps
/// starting afresh and never settles. A container whose start is unknown counts from when the
/// agent first saw the project ready, `seen_ready_for` ago. Finished one-shot tasks have nothing
/// to settle. A start in the future (clock skew) counts as just now.
pub fn settle_left(
    containers: &[ContainerState],
    settle: Duration,
    now: SystemTime,
    seen_ready_for: Duration,
) -> Duration {
    containers
        .iter()
        .filter(|container| container.state == "running")
        .map(|container| {
            let up = container.started_at.map_or(seen_ready_for, |started| {
                now.duration_since(started).unwrap_or(Duration::ZERO)
            });
            settle.saturating_sub(up)
        })
        .max()
        .unwrap_or(Duration::ZERO)
}

/// One container as `docker inspect` describes it: what the agent reports about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectedContainer {
    /// The full id (64 hex digits).
    pub id: String,
    /// `State.Status`: `running`, `exited`, …
    pub status: String,
    pub exit_code: Option<i64>,
    /// `State.Health.Status` when the container has a healthcheck.
    pub health: Option<String>,
    /// `State.StartedAt`; `None` for a container that never started.
    pub started_at: Option<String>,
    pub restart_count: u64,
    /// `.Image`: the image id (`sha256:…`).
    pub image_id: String,
    /// `Config.Image`: the reference the container was created from.
    pub image: String,
    pub labels: HashMap<String, String>,
}

/// The label Compose puts on every container: its service.
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";

/// The label Swarm puts on a stack's task containers: the stack (`docker stack deploy`'s name).
pub const SWARM_STACK_LABEL: &str = "com.docker.stack.namespace";

/// The label Swarm puts on a task's container: its service, `<stack>_<service>`.
pub const SWARM_SERVICE_LABEL: &str = "com.docker.swarm.service.name";

/// The label Swarm puts on a task's container: the task's id.
pub const SWARM_TASK_LABEL: &str = "com.docker.swarm.task.id";

impl InspectedContainer {
    /// The compose service, from its label; for a task of a Swarm stack (which Compose did
    /// not start), its Swarm service's name without the `<stack>_` prefix.
    pub fn service(&self) -> Option<&str> {
        if let Some(service) = self.labels.get(COMPOSE_SERVICE_LABEL) {
            return Some(service);
        }
        let stack = self.labels.get(SWARM_STACK_LABEL)?;
        self.labels
            .get(SWARM_SERVICE_LABEL)?
            .strip_prefix(stack.as_str())?
            .strip_prefix('_')
    }

    /// The Stagely project, from [`crate::override_file::PROJECT_ID_LABEL`].
    pub fn project_id(&self) -> Option<ProjectId> {
        self.labels
            .get(crate::override_file::PROJECT_ID_LABEL)?
            .parse()
            .ok()
    }

    /// What the server is told about it; `None` when it is no compose service's or Docker
    /// names a status this build does not know.
    pub fn service_state(&self) -> Option<ServiceState> {
        let service = ServiceName::parse(self.service()?).ok()?;
        let status = ContainerStatus::parse(&self.status)?;
        let exit_code = match status {
            ContainerStatus::Exited | ContainerStatus::Dead => self.exit_code,
            _ => None,
        };
        Some(ServiceState {
            service,
            container_id: self.id.chars().take(12).collect(),
            status,
            exit_code,
            health: self.health.as_deref().and_then(ContainerHealth::parse),
            started_at: self.started_at.clone(),
            restart_count: u32::try_from(self.restart_count).unwrap_or(u32::MAX),
            image_id: Some(self.image_id.clone()).filter(|id| !id.is_empty()),
            replicas: None,
        })
    }
}

#[derive(Deserialize)]
struct InspectEntry {
    #[serde(rename = "Id", default)]
    id: String,
    #[serde(rename = "State")]
    state: InspectState,
    #[serde(rename = "Config")]
    config: InspectConfig,
    #[serde(rename = "RestartCount", default)]
    restart_count: u64,
    #[serde(rename = "Image", default)]
    image_id: String,
}

#[derive(Deserialize)]
struct InspectState {
    #[serde(rename = "Status")]
    status: String,
    #[serde(rename = "ExitCode", default)]
    exit_code: Option<i64>,
    #[serde(rename = "Health", default)]
    health: Option<InspectHealth>,
    #[serde(rename = "StartedAt", default)]
    started_at: Option<String>,
}

#[derive(Deserialize)]
struct InspectHealth {
    #[serde(rename = "Status")]
    status: String,
}

#[derive(Deserialize)]
struct InspectConfig {
    // `null` for a container without labels.
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
    #[serde(rename = "Image", default)]
    image: String,
}

/// Docker's `StartedAt` of a container that never started.
const NEVER: &str = "0001-01-01T00:00:00Z";

/// The `--format` of `docker inspect` that prints one line per container with only what the
/// agent reads, in the shape of the full entry. The full entry carries the container's
/// environment (secret values) and can be large: with many containers it would exceed what a
/// command's output may hold, and a long line would be split.
pub const INSPECT_FORMAT: &str = concat!(
    r#"{"Id":{{json .Id}},"Image":{{json .Image}},"RestartCount":{{json .RestartCount}},"#,
    // The whole state: a container without a healthcheck has no `Health` key to name (the
    // template fails on a missing key), and the state holds no environment.
    r#""State":{{json .State}},"#,
    r#""Config":{"Image":{{json .Config.Image}},"Labels":{{json .Config.Labels}}}}"#,
);

/// Parses `docker inspect <containers…>`: a JSON array of full entries, or one line per
/// container printed with [`INSPECT_FORMAT`]. (A container removed between listing and
/// inspecting is missing from it, not an error here.)
pub fn parse_inspected(output: &str) -> Result<Vec<InspectedContainer>, serde_json::Error> {
    let trimmed = output.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<InspectEntry> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed)?
    } else {
        trimmed
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?
    };
    Ok(entries
        .into_iter()
        .map(|entry| InspectedContainer {
            id: entry.id,
            status: entry.state.status.to_lowercase(),
            exit_code: entry.state.exit_code,
            health: entry
                .state
                .health
                .map(|health| health.status)
                .filter(|health| !health.is_empty()),
            started_at: entry
                .state
                .started_at
                .filter(|at| !at.is_empty() && at != NEVER),
            restart_count: entry.restart_count,
            image_id: entry.image_id,
            image: entry.config.image,
            labels: entry.config.labels.unwrap_or_default(),
        })
        .collect())
}

/// Parses `docker inspect <containers…>` of Compose-made containers.
pub fn parse_inspect(output: &str) -> Result<Vec<ContainerState>, serde_json::Error> {
    Ok(parse_inspected(output)?
        .into_iter()
        .map(|container| ContainerState::from(&container))
        .collect())
}

impl From<&InspectedContainer> for ContainerState {
    fn from(container: &InspectedContainer) -> Self {
        Self {
            service: container.service().unwrap_or_default().to_owned(),
            state: container.status.clone(),
            health: container.health.clone(),
            exit_code: container.exit_code,
            started_at: container.started_at.as_deref().and_then(parse_time),
        }
    }
}

/// Docker's RFC 3339 time (`2026-11-30T12:00:00.123456789Z`); `None` when it is not one.
fn parse_time(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok().map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(service: &str, state: &str, health: Option<&str>, exit: i64) -> ContainerState {
        ContainerState {
            service: service.into(),
            state: state.into(),
            health: health.map(Into::into),
            exit_code: Some(exit),
            started_at: None,
        }
    }

    #[test]
    fn docker_inspect_output_is_read_through_compose_labels() {
        let json = r#"[{"State":{"Status":"exited","ExitCode":3},
                        "Config":{"Labels":{"com.docker.compose.service":"worker"}}},
                       {"State":{"Status":"running","ExitCode":0,"Health":{"Status":"healthy"}},
                        "Config":{"Labels":{"com.docker.compose.service":"web"}}}]"#;
        assert_eq!(
            parse_inspect(json).unwrap(),
            vec![
                container("worker", "exited", None, 3),
                container("web", "running", Some("healthy"), 0),
            ]
        );
        let started = r#"[{"State":{"Status":"running","ExitCode":0,
                            "StartedAt":"2026-11-30T12:00:00.250000001Z"},
                           "Config":{"Labels":{"com.docker.compose.service":"web"}}},
                          {"State":{"Status":"running","ExitCode":0,"StartedAt":"yesterday"},
                           "Config":{"Labels":{"com.docker.compose.service":"db"}}}]"#;
        let states = parse_inspect(started).unwrap();
        assert_eq!(
            states[0].started_at,
            Some(noon() + Duration::from_nanos(250_000_001))
        );
        assert_eq!(states[1].started_at, None, "not a time: unknown");
    }

    #[test]
    fn a_swarm_tasks_service_is_its_swarm_service_without_the_stack() {
        let json = r#"[{"Id":"9a9a","Image":"sha256:1","RestartCount":0,
            "State":{"Status":"running","ExitCode":0},
            "Config":{"Image":"app:1.0","Labels":{"com.docker.stack.namespace":"shop",
                "com.docker.swarm.service.name":"shop_web"}}},
            {"Id":"9b9b","Image":"sha256:1","RestartCount":0,
            "State":{"Status":"running","ExitCode":0},
            "Config":{"Image":"app:1.0","Labels":{"com.docker.stack.namespace":"shop",
                "com.docker.swarm.service.name":"other_web"}}}]"#;
        let containers = parse_inspected(json).unwrap();
        assert_eq!(containers[0].service(), Some("web"));
        assert_eq!(containers[1].service(), None, "not the stack's own service");
    }

    #[test]
    fn a_whole_docker_inspect_entry_is_read() {
        // Trimmed from `docker inspect` of a Compose container that was created, never started.
        let json = r#"[{"Id":"4f1c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ffee0c0ffe",
            "Created":"2026-11-30T12:00:00Z","Path":"sh","Args":[],
            "State":{"Status":"created","Running":false,"Paused":false,"Restarting":false,
                     "OOMKilled":false,"Dead":false,"Pid":0,"ExitCode":0,"Error":"",
                     "StartedAt":"0001-01-01T00:00:00Z","FinishedAt":"0001-01-01T00:00:00Z"},
            "Image":"sha256:93089526db36aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "Name":"/shop-web-1","RestartCount":0,
            "Config":{"Hostname":"4f1c","Image":"app:1.0","Labels":{
                "com.docker.compose.project":"shop","com.docker.compose.service":"web",
                "dev.stagely.project-id":"not-a-uuid"}}}]"#;
        let containers = parse_inspected(json).unwrap();
        let web = &containers[0];
        assert_eq!(web.service(), Some("web"));
        assert_eq!(web.status, "created");
        assert_eq!(web.started_at, None, "never started");
        assert_eq!(web.image, "app:1.0");
        assert!(web.image_id.starts_with("sha256:93089526db36"));
        assert_eq!(web.project_id(), None, "not a project id");
        let state = web.service_state().unwrap();
        assert_eq!(state.container_id, "4f1c0ffee0c0");
        assert_eq!(state.exit_code, None, "only exited containers carry a code");
        assert_eq!(parse_inspected("").unwrap(), vec![]);
        let lines = concat!(
            r#"{"Id":"a1","Image":"sha256:1","RestartCount":2,"State":{"Status":"running","ExitCode":0,"StartedAt":"2026-11-30T10:00:00Z","Health":null},"Config":{"Image":"app:1","Labels":null}}"#,
            "\n",
            r#"{"Id":"b2","Image":"sha256:2","RestartCount":0,"State":{"Status":"exited","ExitCode":3,"StartedAt":"2026-11-30T10:00:00Z","Health":{"Status":"unhealthy"}},"Config":{"Image":"app:2","Labels":{"k":"v"}}}"#,
            "\n"
        );
        let parsed = parse_inspected(lines).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].restart_count, 2);
        assert_eq!(parsed[1].exit_code, Some(3));
        assert_eq!(parsed[1].health.as_deref(), Some("unhealthy"));
        assert!(parse_inspected("Error: No such object").is_err());
    }

    #[test]
    fn a_project_is_ready_when_everything_runs_healthy_or_finished_cleanly() {
        let ready = [
            container("web", "running", None, 0),
            container("db", "running", Some("healthy"), 0),
            container("migrate", "exited", None, 0),
        ];
        assert_eq!(judge(&ready), Verdict::Ready);
    }

    #[test]
    fn starting_healthchecks_and_restarts_are_waited_for() {
        let verdict = judge(&[
            container("web", "running", Some("starting"), 0),
            container("db", "restarting", None, 0),
        ]);
        assert_eq!(
            verdict,
            Verdict::Waiting("web (starting), db (restarting)".into())
        );
        assert!(matches!(judge(&[]), Verdict::Waiting(_)));
    }

    #[test]
    fn an_exit_with_an_error_or_an_unhealthy_check_fails_the_deploy() {
        let exited = judge(&[
            container("web", "running", None, 0),
            container("api", "exited", None, 1),
        ]);
        assert_eq!(
            exited,
            Verdict::Failed {
                service: "api".into(),
                exit_code: Some(1),
                reason: "service api exited with code 1".into(),
            }
        );
        let unhealthy = judge(&[container("db", "running", Some("unhealthy"), 0)]);
        assert!(matches!(unhealthy, Verdict::Failed { service, .. } if service == "db"));
    }

    /// 2026-11-30T12:00:00Z, the "now" of the settle tests.
    fn noon() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_040_000)
    }

    /// A running container of `service` that started `up` before [`noon`] (`None`: unknown).
    fn running(service: &str, up: Option<Duration>) -> ContainerState {
        ContainerState {
            started_at: up.map(|up| noon() - up),
            ..container(service, "running", None, 0)
        }
    }

    const SETTLE: Duration = Duration::from_millis(1500);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn millis(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn containers_up_for_hours_have_settled_at_once() {
        let hours = [
            running("web", Some(secs(3 * 3600))),
            running("db", Some(secs(7200))),
            container("migrate", "exited", None, 0),
        ];
        assert_eq!(
            settle_left(&hours, SETTLE, noon(), Duration::ZERO),
            Duration::ZERO
        );
    }

    #[test]
    fn a_freshly_started_container_waits_out_the_settle_time_from_its_own_start() {
        let fresh = [
            running("web", Some(secs(3600))),
            running("db", Some(millis(200))),
        ];
        assert_eq!(
            settle_left(&fresh, SETTLE, noon(), Duration::ZERO),
            millis(1300)
        );
        // Seen ready for long does not matter when the container says it just started.
        assert_eq!(settle_left(&fresh, SETTLE, noon(), secs(60)), millis(1300));
        let just_now = [running("web", Some(Duration::ZERO))];
        assert_eq!(
            settle_left(&just_now, SETTLE, noon(), Duration::ZERO),
            SETTLE
        );
    }

    #[test]
    fn a_container_restarted_by_its_policy_waits_again() {
        // Up for an hour, then crashed and restarted: its start is new, and so is its wait.
        let restarted = [
            running("web", Some(secs(3600))),
            running("worker", Some(millis(400))),
        ];
        assert_eq!(
            settle_left(&restarted, SETTLE, noon(), secs(3600)),
            millis(1100)
        );
        // A start in the future (the clock went back) counts as just now.
        let ahead = [ContainerState {
            started_at: Some(noon() + secs(5)),
            ..running("web", None)
        }];
        assert_eq!(settle_left(&ahead, SETTLE, noon(), secs(60)), SETTLE);
    }

    #[test]
    fn an_unknown_start_counts_from_when_the_agent_saw_the_project_ready() {
        let unknown = [running("web", None), running("db", Some(secs(3600)))];
        assert_eq!(
            settle_left(&unknown, SETTLE, noon(), Duration::ZERO),
            SETTLE
        );
        assert_eq!(
            settle_left(&unknown, SETTLE, noon(), millis(1000)),
            millis(500)
        );
        assert_eq!(
            settle_left(&unknown, SETTLE, noon(), secs(2)),
            Duration::ZERO
        );
    }
}
