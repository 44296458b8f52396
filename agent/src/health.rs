//! What state a project's containers are in, read from Compose or the engine, and whether a
//! deploy may call itself done.
//!
//! Compose v2 prints `ps --format json` in two shapes depending on its release (one JSON array,
//! or one object per line); both are accepted. Compose v1 has no JSON output, so for it the
//! containers are found by their `com.docker.compose.project` label and read with
//! `docker inspect`.

use serde::Deserialize;
use shared::runtime::{ContainerHealth, ContainerStatus, ServiceState};
use shared::{ProjectId, ServiceName};
use std::collections::HashMap;

/// One container of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerState {
    pub service: String,
    /// `running`, `exited`, `restarting`, `created`, `dead`, `paused`.
    pub state: String,
    /// `healthy`, `unhealthy` or `starting` when the service has a healthcheck.
    pub health: Option<String>,
    pub exit_code: Option<i64>,
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

#[derive(Deserialize)]
struct ComposePsEntry {
    #[serde(rename = "Service")]
    service: String,
    #[serde(rename = "State")]
    state: String,
    #[serde(rename = "Health", default)]
    health: Option<String>,
    #[serde(rename = "ExitCode", default)]
    exit_code: Option<i64>,
}

impl From<ComposePsEntry> for ContainerState {
    fn from(entry: ComposePsEntry) -> Self {
        Self {
            service: entry.service,
            state: entry.state.to_lowercase(),
            health: entry.health.filter(|health| !health.is_empty()),
            exit_code: entry.exit_code,
        }
    }
}

/// Parses `docker compose ps --format json`: a JSON array (older v2) or one object per line
/// (newer v2). Empty output means no containers.
pub fn parse_compose_ps(output: &str) -> Result<Vec<ContainerState>, serde_json::Error> {
    let trimmed = output.trim();
    if trimmed.starts_with('[') {
        let entries: Vec<ComposePsEntry> = serde_json::from_str(trimmed)?;
        return Ok(entries.into_iter().map(Into::into).collect());
    }
    trimmed
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str::<ComposePsEntry>(line).map(Into::into))
        .collect()
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
        .map(|container| ContainerState {
            service: container.service().unwrap_or_default().to_owned(),
            state: container.status,
            health: container.health,
            exit_code: container.exit_code,
        })
        .collect())
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
        }
    }

    #[test]
    fn both_shapes_of_compose_ps_json_are_read() {
        let array = r#"[{"Name":"p-web-1","Service":"web","State":"running","Health":"","ExitCode":0},
                        {"Name":"p-db-1","Service":"db","State":"running","Health":"starting","ExitCode":0}]"#;
        let lines = "{\"Service\":\"web\",\"State\":\"running\",\"Health\":\"\",\"ExitCode\":0}\n\
                     {\"Service\":\"db\",\"State\":\"running\",\"Health\":\"starting\",\"ExitCode\":0}\n";
        let expected = vec![
            container("web", "running", None, 0),
            container("db", "running", Some("starting"), 0),
        ];
        assert_eq!(parse_compose_ps(array).unwrap(), expected);
        assert_eq!(parse_compose_ps(lines).unwrap(), expected);
        assert_eq!(parse_compose_ps("").unwrap(), vec![]);
        assert_eq!(parse_compose_ps("[]").unwrap(), vec![]);
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
}
