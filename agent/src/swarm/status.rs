//! Reading where a stack's services stand, from `docker service inspect` and `docker service
//! ps`, and judging a rolling update by it.
//!
//! Swarm runs the update itself; the agent only watches: a service's `UpdateStatus` says
//! `updating`, `completed`, `paused`, `rollback_started`, `rollback_completed` or
//! `rollback_paused`. A service that was just created has none; it is done when its desired
//! number of tasks run (with a healthcheck, Swarm counts a task as running once it is healthy).

use serde::Deserialize;
use shared::runtime::Replicas;
use shared::target::{NodeRole, SwarmNode};
use std::collections::{BTreeMap, HashMap};

/// One service as `docker service inspect` prints it (the parts read here).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceInfo {
    #[serde(rename = "ID")]
    pub id: String,
    pub version: Version,
    pub spec: Spec,
    /// The spec before the last update (`docker stack deploy` updates every service of the
    /// stack, changed or not).
    #[serde(default)]
    pub previous_spec: Option<PreviousSpec>,
    #[serde(default)]
    pub update_status: Option<UpdateStatus>,
    /// A job's: which run of it Swarm is at.
    #[serde(default)]
    pub job_status: Option<JobStatus>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobStatus {
    #[serde(default)]
    pub job_iteration: Option<Version>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PreviousSpec {
    #[serde(default)]
    pub task_template: serde_json::Value,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    /// Absent when 0 (a job's first `JobIteration` reads `{}`).
    #[serde(default)]
    pub index: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Spec {
    pub name: String,
    /// The service's own labels (`null` when it has none).
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
    #[serde(default)]
    pub mode: Mode,
    /// What each task runs (image, environment, secrets, …), kept whole: Swarm replaces a
    /// service's tasks only when this changed.
    #[serde(default)]
    pub task_template: serde_json::Value,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Mode {
    #[serde(default)]
    pub replicated: Option<Replicated>,
    /// A job (`mode: replicated-job`): tasks that run to completion, once per deploy.
    #[serde(default)]
    pub replicated_job: Option<serde_json::Value>,
    /// A job on every node (`mode: global-job`).
    #[serde(default)]
    pub global_job: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Replicated {
    #[serde(default)]
    pub replicas: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStatus {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl ServiceInfo {
    /// Replicas asked for; `None` for a global service.
    pub fn desired(&self) -> Option<u64> {
        self.spec
            .mode
            .replicated
            .as_ref()
            .map(|replicated| replicated.replicas.unwrap_or(1))
    }

    /// A job: its tasks run to completion (a migration), nothing to stop, start or restart.
    pub fn is_job(&self) -> bool {
        self.spec.mode.replicated_job.is_some() || self.spec.mode.global_job.is_some()
    }

    /// The run of a job Swarm is at (`JobStatus.JobIteration`); `None` for a service.
    pub fn job_iteration(&self) -> Option<u64> {
        Some(self.job_status.as_ref()?.job_iteration.as_ref()?.index)
    }

    /// How many tasks of a replicated job must complete: its `TotalCompletions` (1 when
    /// unset).
    pub fn completions(&self) -> u64 {
        self.spec
            .mode
            .replicated_job
            .as_ref()
            .and_then(|job| job["TotalCompletions"].as_u64())
            .unwrap_or(1)
    }

    /// One of the service's own labels.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.spec.labels.as_ref()?.get(key).map(String::as_str)
    }

    /// A label its tasks' containers carry (the compose file's `labels:`, where the agent's
    /// owner labels go).
    pub fn container_label(&self, key: &str) -> Option<&str> {
        self.spec.task_template["ContainerSpec"]["Labels"][key].as_str()
    }

    /// The image reference its tasks run (`app:1.0`, or `app:1.0@sha256:…` once resolved
    /// against a registry).
    pub fn image(&self) -> Option<&str> {
        self.spec.task_template["ContainerSpec"]["Image"]
            .as_str()
            .filter(|image| !image.is_empty())
    }

    /// The Swarm secrets the service's current spec mounts.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.spec.task_template["ContainerSpec"]["Secrets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|secret| secret["SecretName"].as_str())
    }

    /// Whether the last update left what tasks run as it was: Swarm then replaces no task and
    /// never reports an update status for it. The two specs are compared by what makes a task
    /// differ ([`task_fingerprint`]): the daemon fills defaults into the current spec only.
    pub fn tasks_unchanged(&self) -> bool {
        self.previous_spec.as_ref().is_some_and(|previous| {
            task_fingerprint(&previous.task_template) == task_fingerprint(&self.spec.task_template)
        })
    }
}

/// What a task runs, from a service's task template: the container's image, command,
/// environment, secrets, configs, mounts and labels, its networks, placement and resources,
/// and the forced-update counter; empty values count as absent. Defaults the daemon writes into
/// one spec and not the other (`DNSConfig: {}`, a stop grace period, the restart policy) are
/// left out.
fn task_fingerprint(template: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Map, Value};
    fn present(value: &Value) -> Option<Value> {
        match value {
            Value::Null => None,
            Value::Array(items) if items.is_empty() => None,
            Value::Object(fields) if fields.is_empty() => None,
            other => Some(other.clone()),
        }
    }
    let mut out = Map::new();
    let container = &template["ContainerSpec"];
    for key in [
        "Image",
        "Args",
        "Command",
        "Env",
        "Secrets",
        "Configs",
        "Mounts",
        "Labels",
        "User",
        "Dir",
        "Hostname",
        "Healthcheck",
    ] {
        if let Some(value) = present(&container[key]) {
            out.insert(format!("ContainerSpec.{key}"), value);
        }
    }
    for key in ["ForceUpdate", "Networks", "Placement", "Resources"] {
        if let Some(value) = present(&template[key]) {
            out.insert(key.to_string(), value);
        }
    }
    Value::Object(out)
}

/// A service's image reference split into what a person wrote (`registry/app:1.0`) and, when
/// it carries one, the registry digest reference it was resolved to (`registry/app@sha256:…`,
/// without the tag, as `docker image inspect` finds it).
pub fn split_digest(reference: &str) -> (&str, Option<String>) {
    let Some((named, digest)) = reference.split_once('@') else {
        return (reference, None);
    };
    let repository = crate::engine::repository_of(named);
    (named, Some(format!("{repository}@{digest}")))
}

/// Parses `docker service inspect` output (a JSON array).
pub fn parse_services(output: &str) -> Result<Vec<ServiceInfo>, serde_json::Error> {
    let trimmed = output.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(trimmed)
}

/// One task as `docker service ps --format '{{json .}}'` prints it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskLine {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub desired_state: String,
    pub current_state: String,
    #[serde(default)]
    pub error: String,
}

impl TaskLine {
    /// Running now and meant to (a healthy task when the service has a healthcheck).
    pub fn is_running(&self) -> bool {
        self.desired_state == "Running" && self.current_state.starts_with("Running")
    }

    /// A job's task that ran to completion.
    pub fn is_complete(&self) -> bool {
        self.current_state.starts_with("Complete")
    }

    /// Not finished yet: new, on its way to running, or running.
    pub fn is_active(&self) -> bool {
        [
            "New",
            "Pending",
            "Assigned",
            "Accepted",
            "Preparing",
            "Ready",
            "Starting",
            "Running",
        ]
        .iter()
        .any(|state| self.current_state.starts_with(state))
    }

    /// Swarm wants it shut down (replaced, failed, or its service scaled down).
    pub fn is_shut_down(&self) -> bool {
        matches!(self.desired_state.as_str(), "Shutdown" | "Remove")
    }

    /// Its container still runs, whatever Swarm wants of it (a task told to shut down runs
    /// until its container exits).
    pub fn container_runs(&self) -> bool {
        self.current_state.starts_with("Running")
    }
}

/// Parses `docker service ps --no-trunc --format '{{json .}}'` output, one task a line.
pub fn parse_tasks(output: &str) -> Result<Vec<TaskLine>, serde_json::Error> {
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}

/// The longest task error the live state carries, in bytes (Swarm's are a line).
const MAX_TASK_ERROR: usize = 1024;

/// One service as `docker stack services --format '{{json .}}'` prints it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceLine {
    /// `<stack>_<service>`.
    pub name: String,
    /// `replicated` or `global`.
    #[serde(default)]
    pub mode: String,
    /// `running/desired`, e.g. `2/2`.
    pub replicas: String,
}

/// Parses `docker stack services --format '{{json .}}'` output, one service a line.
pub fn parse_service_lines(output: &str) -> Result<Vec<ServiceLine>, serde_json::Error> {
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}

/// Where each service of `stack` stands, by its compose service name: running and desired
/// tasks from `services`, and, while fewer run than asked for, the error of its most recent
/// failed task from `tasks` (`docker stack ps`, newest first in each slot). A service whose
/// counts do not read as `n/m` is left out.
pub fn replicas(
    stack: &str,
    services: &[ServiceLine],
    tasks: &[TaskLine],
) -> BTreeMap<String, Replicas> {
    let prefix = format!("{stack}_");
    let mut found = BTreeMap::new();
    for line in services {
        let Some(service) = line.name.strip_prefix(&prefix) else {
            continue;
        };
        let Some((running, desired)) = line.replicas.split_once('/') else {
            continue;
        };
        // A global service's count reads `1/1` too, but it has no number asked for.
        let (Ok(running), Ok(desired)) = (running.trim().parse::<u64>(), desired.trim().parse())
        else {
            continue;
        };
        let desired = (line.mode != "global").then_some(desired);
        let error = if desired.is_some_and(|desired| running >= desired) {
            None
        } else {
            let task_prefix = format!("{}.", line.name);
            tasks
                .iter()
                .filter(|task| task.name.starts_with(&task_prefix))
                .map(|task| task.error.trim().trim_matches('"').trim())
                .find(|error| !error.is_empty())
                .map(|error| crate::wire::cut(error, MAX_TASK_ERROR))
        };
        found.insert(
            service.to_owned(),
            Replicas {
                running,
                desired,
                error,
            },
        );
    }
    found
}

/// One node as `docker node ls --format '{{json .}}'` prints it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeLine {
    hostname: String,
    /// `Leader`, `Reachable` or `Unreachable` for a manager; empty for a worker.
    #[serde(default)]
    manager_status: String,
    /// `Active`, `Pause` or `Drain`.
    availability: String,
    /// `Ready`, `Down`, `Unknown` or `Disconnected`.
    status: String,
    #[serde(rename = "Self", default)]
    this_node: bool,
}

/// Parses `docker node ls --format '{{json .}}'` output, one node a line; each string is cut
/// to `max_field` bytes.
pub fn parse_nodes(output: &str, max_field: usize) -> Result<Vec<SwarmNode>, serde_json::Error> {
    let cut = |text: &str| crate::wire::cut(&text.to_lowercase(), max_field);
    output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let node: NodeLine = serde_json::from_str(line)?;
            Ok(SwarmNode {
                hostname: crate::wire::cut(&node.hostname, max_field),
                role: if node.manager_status.is_empty() {
                    NodeRole::Worker
                } else {
                    NodeRole::Manager
                },
                leader: node.manager_status == "Leader",
                availability: cut(&node.availability),
                state: cut(&node.status),
                this_node: node.this_node,
            })
        })
        .collect()
}

/// Where one changed service's update stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still going (or not started yet).
    Updating,
    /// Every task runs the new spec.
    Done,
    /// Swarm gave up: rolled back, or paused; the message is Swarm's.
    Failed { rolled_back: bool, message: String },
}

/// Judges a changed service: `before` is its update status from before the deploy, so a status
/// left from an earlier update is not mistaken for this one's.
pub fn judge(
    service: &ServiceInfo,
    before: Option<&UpdateStatus>,
    running: u64,
    created: bool,
) -> Progress {
    let current = service.update_status.as_ref();
    let fresh = current.filter(|status| Some(*status) != before);
    match fresh.map(|status| status.state.as_str()) {
        Some("completed") => Progress::Done,
        Some("rollback_completed") => Progress::Failed {
            rolled_back: true,
            message: message_of(fresh),
        },
        Some("paused") | Some("rollback_paused") => Progress::Failed {
            rolled_back: false,
            message: message_of(fresh),
        },
        Some(_) => Progress::Updating,
        // A new service has no update, nor has one whose tasks the deploy left as they were
        // (Swarm clears the status and finds no task to replace): done when its tasks run.
        None if created || service.tasks_unchanged() => match service.desired() {
            Some(desired) if running >= desired => Progress::Done,
            None if running > 0 => Progress::Done,
            _ => Progress::Updating,
        },
        None => Progress::Updating,
    }
}

/// The tasks of a job (a migration) the deploy started, as they stand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobRun {
    /// Still to finish: new, pending, starting or running.
    pub active: u64,
    /// Ran to completion.
    pub completed: u64,
}

/// Judges a job: it has no rolling update; Swarm runs its tasks to completion again whenever
/// the service is updated (its `JobIteration` moves on; `docker stack deploy` updates every
/// service). Done when that iteration's tasks completed: as many as a replicated job asks for,
/// or, for a global job (one per node), every one started with none still going; done at once
/// when the iteration did not move. One that keeps failing is retried by Swarm until the
/// deploy's timeout.
pub fn judge_job(
    service: &ServiceInfo,
    iteration_before: Option<u64>,
    created: bool,
    run: JobRun,
) -> Progress {
    if !created && service.job_iteration() == iteration_before {
        return Progress::Done;
    }
    let done = if service.spec.mode.global_job.is_some() {
        run.completed > 0 && run.active == 0
    } else {
        run.completed >= service.completions()
    };
    if done {
        Progress::Done
    } else {
        Progress::Updating
    }
}

fn message_of(status: Option<&UpdateStatus>) -> String {
    status
        .and_then(|status| status.message.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(mode: serde_json::Value, iteration: u64) -> ServiceInfo {
        let json = serde_json::json!([{
            "ID": "j1",
            "Version": {"Index": 9},
            "Spec": {"Name": "shop_migrate", "Mode": mode},
            // As Docker writes it: the first iteration's index is left out.
            "JobStatus": {"JobIteration": if iteration == 0 {
                serde_json::json!({})
            } else {
                serde_json::json!({"Index": iteration})
            }},
        }]);
        parse_services(&json.to_string()).unwrap().remove(0)
    }

    #[test]
    fn a_job_is_done_when_this_runs_tasks_completed() {
        let run = |active, completed| JobRun { active, completed };
        let replicated = job(
            serde_json::json!({"ReplicatedJob": {"TotalCompletions": 2}}),
            4,
        );
        assert_eq!(
            judge_job(&replicated, Some(3), false, run(1, 1)),
            Progress::Updating
        );
        assert_eq!(
            judge_job(&replicated, Some(3), false, run(0, 2)),
            Progress::Done
        );
        assert_eq!(
            judge_job(&replicated, None, true, run(2, 0)),
            Progress::Updating
        );
        // Swarm did not run it again: nothing to wait for.
        assert_eq!(
            judge_job(&replicated, Some(4), false, run(0, 0)),
            Progress::Done
        );
        let unset = job(serde_json::json!({"ReplicatedJob": {}}), 0);
        assert_eq!(unset.job_iteration(), Some(0));
        assert_eq!(judge_job(&unset, None, true, run(0, 1)), Progress::Done);
        // A global job: one task per node, every one of them.
        let global = job(serde_json::json!({"GlobalJob": {}}), 2);
        assert_eq!(
            judge_job(&global, Some(1), false, run(1, 1)),
            Progress::Updating
        );
        assert_eq!(
            judge_job(&global, Some(1), false, run(0, 0)),
            Progress::Updating
        );
        assert_eq!(
            judge_job(&global, Some(1), false, run(0, 3)),
            Progress::Done
        );
    }

    #[test]
    fn a_resolved_reference_splits_into_what_was_written_and_its_digest() {
        let digest = format!("sha256:{}", "0a".repeat(32));
        assert_eq!(split_digest("app:1.0"), ("app:1.0", None));
        assert_eq!(
            split_digest(&format!("registry.local:5000/team/app:1.0@{digest}")),
            (
                "registry.local:5000/team/app:1.0",
                Some(format!("registry.local:5000/team/app@{digest}"))
            )
        );
        assert_eq!(
            split_digest(&format!("registry.local:5000/app@{digest}")),
            (
                "registry.local:5000/app",
                Some(format!("registry.local:5000/app@{digest}"))
            )
        );
    }

    const INSPECT: &str = r#"[{"ID":"abc","Version":{"Index":53},"Spec":{"Name":"shop_web",
        "Mode":{"Replicated":{"Replicas":2}},"TaskTemplate":{"ContainerSpec":{"Image":"x",
        "Secrets":[{"SecretName":"shop_KEY_v1","SecretID":"s"}]}}},
        "UpdateStatus":{"State":"rollback_completed","StartedAt":"2026-11-30T22:44:24Z",
        "Message":"rollback completed"}}]"#;

    #[test]
    fn a_rolled_back_update_fails_with_swarms_message_unless_it_is_the_old_one() {
        let services = parse_services(INSPECT).unwrap();
        let web = &services[0];
        assert_eq!(web.desired(), Some(2));
        assert_eq!(web.secret_names().collect::<Vec<_>>(), ["shop_KEY_v1"]);
        assert_eq!(
            judge(web, None, 2, false),
            Progress::Failed {
                rolled_back: true,
                message: "rollback completed".into()
            }
        );
        // The same status as before the deploy: this deploy's update has not begun.
        assert_eq!(
            judge(web, web.update_status.as_ref(), 2, false),
            Progress::Updating
        );
    }

    #[test]
    fn a_new_service_is_done_when_its_replicas_run() {
        let json = r#"[{"ID":"a","Version":{"Index":1},"Spec":{"Name":"s",
            "Mode":{"Replicated":{"Replicas":2}}}}]"#;
        let service = &parse_services(json).unwrap()[0];
        assert_eq!(judge(service, None, 1, true), Progress::Updating);
        assert_eq!(judge(service, None, 2, true), Progress::Done);
    }

    /// `docker stack deploy` updates every service; one whose tasks it left as they were gets
    /// no update status from Swarm (it clears the old one and has no task to replace), and must
    /// not be waited for until the deploy times out.
    #[test]
    fn a_service_the_deploy_left_unchanged_is_done_when_its_replicas_run() {
        // As dockerd 20.10 shows a service `docker stack deploy` updated with the same file:
        // the current spec carries defaults the previous one lacks.
        let json = r#"[{"ID":"a","Version":{"Index":9},"Spec":{"Name":"s",
            "Mode":{"Replicated":{"Replicas":2}},"TaskTemplate":{"ContainerSpec":{"Image":"x",
            "Args":["sh"],"DNSConfig":{},"Env":["A=1"],"Privileges":{"NoNewPrivileges":false},
            "StopGracePeriod":10000000000},"ForceUpdate":0,"Placement":{},"Resources":{},
            "RestartPolicy":{"Condition":"any"},"Runtime":"container"}},
            "PreviousSpec":{"Name":"s","TaskTemplate":{"ContainerSpec":{"Image":"x",
            "Args":["sh"],"Env":["A=1"],"Privileges":{}},"ForceUpdate":0,"Placement":{},
            "Resources":{},"Runtime":"container"}}}]"#;
        let unchanged = &parse_services(json).unwrap()[0];
        assert!(unchanged.tasks_unchanged());
        assert_eq!(judge(unchanged, None, 2, false), Progress::Done);
        assert_eq!(judge(unchanged, None, 1, false), Progress::Updating);

        // Changed tasks: the update has not reported yet, so it is waited for.
        let changed = &parse_services(&json.replacen("A=1", "A=2", 1)).unwrap()[0];
        assert!(!changed.tasks_unchanged());
        assert_eq!(judge(changed, None, 2, false), Progress::Updating);
    }

    /// Captured from this machine's dockerd 20.10.24 (single-node swarm): a stack with a
    /// 2-replica service that runs and a 1-replica one whose command exits 3.
    const STACK_SERVICES: &str = r#"{"ID":"nbct2d9ltda6","Image":"stagely-test/busybox:latest","Mode":"replicated","Name":"swcap9614_bad","Ports":"","Replicas":"0/1"}
{"ID":"sbejfx4slq8d","Image":"stagely-test/busybox:latest","Mode":"replicated","Name":"swcap9614_web","Ports":"","Replicas":"2/2"}
"#;
    const STACK_PS: &str = r#"{"CurrentState":"Ready 4 seconds ago","DesiredState":"Running","Error":"","ID":"4mdi0l9f3c2sxwbbkwa3gv7av","Image":"stagely-test/busybox:latest","Name":"swcap9614_bad.1","Node":"vm","Ports":""}
{"CurrentState":"Failed 5 seconds ago","DesiredState":"Shutdown","Error":"\"task: non-zero exit (3)\"","ID":"uaj0kxsullboyco0aj53aosj4","Image":"stagely-test/busybox:latest","Name":"swcap9614_bad.1","Node":"vm","Ports":""}
{"CurrentState":"Running 5 seconds ago","DesiredState":"Running","Error":"","ID":"la57zgou56ipspbvre5i8wqus","Image":"stagely-test/busybox:latest","Name":"swcap9614_web.1","Node":"vm","Ports":""}
{"CurrentState":"Running 5 seconds ago","DesiredState":"Running","Error":"","ID":"5obrajpf3gzsia5ldjsw1rkk2","Image":"stagely-test/busybox:latest","Name":"swcap9614_web.2","Node":"vm","Ports":""}
"#;

    #[test]
    fn replicas_count_each_service_and_name_a_failing_ones_task_error() {
        let services = parse_service_lines(STACK_SERVICES).unwrap();
        let tasks = parse_tasks(STACK_PS).unwrap();
        let found = replicas("swcap9614", &services, &tasks);
        assert_eq!(found["web"].label(), "2/2 running");
        assert_eq!(found["web"].error, None);
        assert_eq!(
            found["bad"],
            Replicas {
                running: 0,
                desired: Some(1),
                error: Some("task: non-zero exit (3)".into()),
            }
        );
        // Another stack's services are not this one's.
        assert!(replicas("swcap", &services, &tasks).is_empty());
    }

    /// Captured from this machine's dockerd 20.10.24 after `docker swarm init`, and a worker
    /// line as Docker prints one (empty `ManagerStatus`).
    const NODE_LS: &str = r#"{"Availability":"Active","EngineVersion":"20.10.24+dfsg1","Hostname":"vm","ID":"xzml3c7twlb9yecstl4cuym1k","ManagerStatus":"Leader","Self":true,"Status":"Ready","TLSStatus":"Ready"}
{"Availability":"Drain","EngineVersion":"20.10.24+dfsg1","Hostname":"worker-1","ID":"q1","ManagerStatus":"","Self":false,"Status":"Down","TLSStatus":"Ready"}
"#;

    #[test]
    fn nodes_parse_with_their_role_and_this_node_marked() {
        let nodes = parse_nodes(NODE_LS, 256).unwrap();
        assert_eq!(
            nodes[0],
            SwarmNode {
                hostname: "vm".into(),
                role: NodeRole::Manager,
                leader: true,
                availability: "active".into(),
                state: "ready".into(),
                this_node: true,
            }
        );
        assert_eq!(nodes[0].label(), "vm · manager (leader) · active · ready");
        assert_eq!(nodes[1].role, NodeRole::Worker);
        assert_eq!(nodes[1].label(), "worker-1 · worker · drain · down");
        assert!(!nodes[1].this_node);
    }

    #[test]
    fn a_global_service_has_no_desired_count() {
        let line = r#"{"ID":"x","Image":"i","Mode":"global","Name":"s_agent","Ports":"","Replicas":"1/1"}"#;
        let found = replicas("s", &parse_service_lines(line).unwrap(), &[]);
        assert_eq!(found["agent"].desired, None);
        assert_eq!(found["agent"].running, 1);
    }

    #[test]
    fn task_lines_parse_and_running_means_running_now() {
        let line = r#"{"CurrentState":"Running 3 seconds ago","DesiredState":"Running","Error":"","ID":"i3","Image":"x","Name":"shop_web.1","Node":"vm","Ports":""}"#;
        let tasks = parse_tasks(line).unwrap();
        assert!(tasks[0].is_running());
    }
}
