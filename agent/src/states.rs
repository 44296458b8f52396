//! Live service state: the containers of every deployed project, as they are now, sent to the
//! server as [`ServiceStates`] frames.
//!
//! 1. **Follow** `docker events` for containers labelled with a Stagely project id
//!    ([`PROJECT_ID_LABEL`]); an event that changes a container's state (start, die, kill,
//!    health status, destroy, …) marks its project for a refresh. Nothing else is parsed.
//! 2. **Debounce**: a refresh waits [`DEBOUNCE`] for more marks, so a hundred containers
//!    changing at once become a frame or two, not a hundred.
//! 3. **Read** the marked projects' containers (`docker ps` by label, then `docker inspect`)
//!    and queue one frame with each project's complete list (`full: false`; an empty list when
//!    a project has no container left). A Swarm stack's task containers also carry where
//!    their service stands (`docker stack services` and `docker stack ps`: n/m running, the
//!    latest task error while it is short).
//! 4. **Reconcile**: after every welcome ([`Refresh::all`], called by the link through the
//!    executor), every [`FULL_EVERY`], and whenever `docker events` comes back after an outage
//!    (events were missed), read every labelled container and queue one `full: true` frame,
//!    followed by a [`SwarmNodes`] frame: the nodes of the Swarm this engine manages
//!    (`docker node ls`; none when it is no manager).
//!
//! `docker events` runs like `compose logs -f`: through the runner, without a timeout, its
//! process group killed when the future is dropped. When it ends (Docker stopped, not
//! installed) it is started again after a [`Backoff`] delay; the outage is logged once when it
//! starts and once when it ends. Frames wait for room in the event queue (they matter more
//! than a log line) but this runs in a task of its own, so the link never waits for it; while
//! it waits, marks only accumulate in a set. A frame stays within [`budget::SERVICE_STATES`]:
//! containers beyond it are left out and counted in a warning.

use crate::backoff::Backoff;
use crate::engine::{self, EngineError};
use crate::health::{
    InspectedContainer, COMPOSE_SERVICE_LABEL, SWARM_STACK_LABEL, SWARM_TASK_LABEL,
};
use crate::override_file::PROJECT_ID_LABEL;
use crate::runner::{self, CommandSpec, OutputLine, Redactor};
use crate::swarm;
use crate::wire;
use serde::Deserialize;
use shared::protocol::{budget, ProjectContainers, ServiceStates, SwarmNodes};
use shared::runtime::{ContainerStatus, ServiceState};
use shared::{AgentToServer, ProjectId, ServiceName};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

/// How long a refresh waits for more changes before it reads the engine.
pub const DEBOUNCE: Duration = Duration::from_millis(150);
/// How often every project is read again, whatever `docker events` said.
pub const FULL_EVERY: Duration = Duration::from_secs(180);
/// `docker events` that has run this long counts as back after an outage.
const EVENTS_BACK_AFTER: Duration = Duration::from_secs(2);
/// The shortest wait before `docker events` is started again (full jitter may pick zero).
const MIN_RETRY: Duration = Duration::from_millis(250);

/// Event actions that change what a container's state says; others (`exec_*`, `attach`,
/// `resize`, `top`, …; healthchecks alone start an exec every interval) are ignored.
const STATE_ACTIONS: [&str; 13] = [
    "create",
    "start",
    "restart",
    "die",
    "stop",
    "kill",
    "pause",
    "unpause",
    "oom",
    "destroy",
    "health_status",
    "rename",
    "update",
];

/// What to read again: marks set by `docker events`, the link and lifecycle jobs, taken by the
/// watcher. Cheap to clone; clones share the marks. The marks are a set, so they stay bounded
/// by the number of projects however long nobody takes them.
#[derive(Clone, Default)]
pub struct Refresh {
    inner: Arc<Marks>,
}

#[derive(Default)]
struct Marks {
    pending: Mutex<Pending>,
    wake: Notify,
    /// Whether the link is up: frames are queued only then. A frame queued during an outage
    /// would be stale by the time it is sent (the welcome asks for a full one anyway) and
    /// would take the room of job results in the queue.
    link_up: std::sync::atomic::AtomicBool,
}

/// Marks taken at once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pending {
    /// Read every project ([`ServiceStates::full`]).
    pub full: bool,
    pub projects: BTreeSet<ProjectId>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        !self.full && self.projects.is_empty()
    }
}

impl Refresh {
    /// Reads one project's containers again soon.
    pub fn project(&self, id: ProjectId) {
        self.pending().projects.insert(id);
        self.inner.wake.notify_one();
    }

    /// Reads every project again soon and sends a full frame.
    pub fn all(&self) {
        self.pending().full = true;
        self.inner.wake.notify_one();
    }

    /// The link came up (states are sent from now on, starting with a full frame) or went
    /// down (nothing is queued until it is up again).
    pub fn link(&self, up: bool) {
        self.inner
            .link_up
            .store(up, std::sync::atomic::Ordering::Release);
        if up {
            self.all();
        }
    }

    fn link_is_up(&self) -> bool {
        self.inner
            .link_up
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Takes every mark set so far.
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending())
    }

    /// Puts back marks a failed read could not answer, without waking the watcher (the next
    /// mark, or `docker events` coming back, does).
    fn put_back(&self, pending: Pending) {
        let mut current = self.pending();
        current.full |= pending.full;
        current.projects.extend(pending.projects);
    }

    async fn marked(&self) {
        self.inner.wake.notified().await;
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // Each critical section is one field update: a poisoned lock still holds a valid set.
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Follows `docker events` and sends state frames into `out`, until the future is dropped or
/// `out` is closed.
pub async fn run(refresh: Refresh, out: mpsc::Sender<AgentToServer>) {
    tokio::select! {
        () = follow_events(refresh.clone()) => {}
        () = publish(refresh, out) => {}
    }
}

/// Runs `docker events` forever, marking the projects whose containers changed.
async fn follow_events(refresh: Refresh) {
    let mut backoff = Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(30),
        Duration::from_secs(60),
    );
    let filter = format!("label={PROJECT_ID_LABEL}");
    let spec = CommandSpec::new(
        "docker",
        [
            "events",
            "--filter",
            "type=container",
            "--filter",
            filter.as_str(),
            "--format",
            "{{json .}}",
        ],
    )
    .no_timeout();
    let redactor = Redactor::default();
    // Since when `docker events` has been down, while it is.
    let mut outage: Option<(Instant, String)> = None;
    loop {
        let started = Instant::now();
        if outage.is_some() {
            // Whatever changed while it was down was not seen.
            refresh.all();
        }
        let running = runner::run(&spec, &redactor, |line| {
            if let OutputLine::Stdout(line) = line {
                if let Some(id) = project_of_event(&line) {
                    refresh.project(id);
                }
            }
        });
        tokio::pin!(running);
        let ended = tokio::select! {
            ended = &mut running => ended,
            () = tokio::time::sleep(EVENTS_BACK_AFTER) => {
                if let Some((since, _)) = outage.take() {
                    tracing::info!(
                        down_for_secs = since.elapsed().as_secs(),
                        "following docker events again"
                    );
                }
                running.await
            }
        };
        let reason = match ended {
            Ok(output) => format!(
                "`docker events` ended (exit code {:?}): {}",
                output.exit_code,
                output.stderr.trim()
            ),
            Err(error) => error.to_string(),
        };
        backoff.connection_ended(started.elapsed());
        if outage.is_none() {
            tracing::warn!(%reason, "not following container changes; retrying with backoff");
            outage = Some((Instant::now(), reason));
        } else {
            tracing::debug!(%reason, attempt = backoff.attempts(), "docker events still down");
        }
        tokio::time::sleep(backoff.next_delay().max(MIN_RETRY)).await;
    }
}

/// Reads marked projects after the debounce and queues their frames.
async fn publish(refresh: Refresh, out: mpsc::Sender<AgentToServer>) {
    let mut reconcile = tokio::time::interval_at(Instant::now() + FULL_EVERY, FULL_EVERY);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let redactor = Redactor::default();
    let mut failing = false;
    loop {
        tokio::select! {
            () = refresh.marked() => {}
            _ = reconcile.tick() => refresh.all(),
        }
        tokio::time::sleep(DEBOUNCE).await;
        let pending = refresh.take();
        // While the link is down the marks are dropped: the welcome asks for a full frame.
        if pending.is_empty() || !refresh.link_is_up() {
            continue;
        }
        let projects = match read(&pending, &redactor).await {
            Ok(projects) => projects,
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "cannot read container states; trying again when Docker answers");
                }
                failing = true;
                refresh.put_back(pending);
                continue;
            }
        };
        if failing {
            tracing::info!("reading container states again");
            failing = false;
        }
        let (frames, left_out) = frames(pending.full, projects);
        if left_out > 0 {
            tracing::warn!(
                left_out,
                "too many containers for one state frame; {left_out} of them are not reported"
            );
        }
        for frame in frames {
            if out.send(AgentToServer::ServiceStates(frame)).await.is_err() {
                return; // the agent is stopping
            }
        }
        // With every full reading, the Swarm's nodes (none when this engine manages none).
        if pending.full {
            match swarm::nodes(&redactor).await {
                Ok(nodes) => {
                    let frame = AgentToServer::SwarmNodes(SwarmNodes { nodes });
                    if out.send(frame).await.is_err() {
                        return;
                    }
                }
                Err(error) => tracing::debug!(%error, "cannot read the Swarm's nodes"),
            }
        }
    }
}

/// The containers of the pending projects (of every project when `full`), grouped by project;
/// a marked project without containers has an empty list.
pub async fn read(
    pending: &Pending,
    redactor: &Redactor,
) -> Result<BTreeMap<ProjectId, Vec<ServiceState>>, EngineError> {
    let filter = match (pending.full, pending.projects.first()) {
        (false, Some(only)) if pending.projects.len() == 1 => {
            format!("{PROJECT_ID_LABEL}={only}")
        }
        // Several projects: one read of every labelled container is cheaper than one each.
        _ => PROJECT_ID_LABEL.to_owned(),
    };
    let containers = engine::containers(&[filter], redactor).await?;
    let mut grouped = group(&containers);
    add_replicas(&containers, &mut grouped, redactor).await;
    if !pending.full {
        grouped.retain(|id, _| pending.projects.contains(id));
        for id in &pending.projects {
            grouped.entry(*id).or_default();
        }
    }
    Ok(grouped)
}

/// Puts on every task container of a Swarm stack where its service stands, and leaves out
/// the stopped containers of tasks Swarm has shut down ([`without_shut_down_tasks`]). A stack
/// whose services cannot be read (this node is not a manager, Docker stopped) is reported
/// with every container and no counts.
async fn add_replicas(
    containers: &[InspectedContainer],
    grouped: &mut BTreeMap<ProjectId, Vec<ServiceState>>,
    redactor: &Redactor,
) {
    let stacks: BTreeSet<(ProjectId, &str)> = containers
        .iter()
        .filter(|container| !container.labels.contains_key(COMPOSE_SERVICE_LABEL))
        .filter_map(|container| {
            let stack = container.labels.get(SWARM_STACK_LABEL)?;
            Some((container.project_id()?, stack.as_str()))
        })
        .collect();
    for (project, stack) in stacks {
        let Some(states) = grouped.get_mut(&project) else {
            continue;
        };
        match swarm::stack_state(stack, redactor).await {
            Ok(stack) => {
                // As the states name them (`ServiceState::container_id`: 12 digits).
                let shut_down: BTreeSet<&str> = containers
                    .iter()
                    .filter(|container| {
                        container
                            .labels
                            .get(SWARM_TASK_LABEL)
                            .is_some_and(|task| stack.shut_down.contains(task))
                    })
                    .map(|container| container.id.get(..12).unwrap_or(&container.id))
                    .collect();
                without_shut_down_tasks(states, &shut_down);
                for state in states {
                    state.replicas = stack.replicas.get(state.service.as_str()).cloned();
                }
            }
            Err(error) => {
                tracing::debug!(%error, stack, "cannot read the stack's replicas");
            }
        }
    }
}

/// Leaves out the stopped containers of shut-down tasks (`shut_down`, by the states' container
/// ids): a rolling update leaves the replaced tasks' containers behind (Swarm keeps a few per
/// replica), and listed they would read as services that exited. A service left with no
/// container keeps its latest one, so a stopped service (scaled to 0) still has its row and
/// its Start button.
pub fn without_shut_down_tasks(states: &mut Vec<ServiceState>, shut_down: &BTreeSet<&str>) {
    let history = |state: &ServiceState| {
        state.status != ContainerStatus::Running && shut_down.contains(state.container_id.as_str())
    };
    let mut latest: BTreeMap<ServiceName, ServiceState> = BTreeMap::new();
    for state in states.iter().filter(|state| history(state)) {
        let newer = latest
            .get(&state.service)
            .is_none_or(|kept| kept.started_at < state.started_at);
        if newer {
            latest.insert(state.service.clone(), state.clone());
        }
    }
    states.retain(|state| !history(state));
    for (service, state) in latest {
        if !states.iter().any(|kept| kept.service == service) {
            states.push(state);
        }
    }
    sort_states(states);
}

/// A project's containers in the order reported: by service, then container id.
fn sort_states(states: &mut [ServiceState]) {
    states.sort_by(|a, b| {
        (a.service.as_str(), &a.container_id).cmp(&(b.service.as_str(), &b.container_id))
    });
}

/// Containers by project, each list sorted by service and id; containers without a valid
/// project id, service or status are left out.
pub fn group(containers: &[InspectedContainer]) -> BTreeMap<ProjectId, Vec<ServiceState>> {
    let mut grouped: BTreeMap<ProjectId, Vec<ServiceState>> = BTreeMap::new();
    for container in containers {
        let (Some(id), Some(state)) = (container.project_id(), container.service_state()) else {
            tracing::debug!(container = %container.id, "not reporting a container without a project, service or known status");
            continue;
        };
        grouped.entry(id).or_default().push(state);
    }
    for states in grouped.values_mut() {
        sort_states(states);
    }
    grouped
}

/// The frames that carry `projects`, each within [`budget::SERVICE_STATES`], and how many
/// containers did not fit. A full frame must list every project, so it is one frame; changes
/// may spread over several, each project whole in one of them.
pub fn frames(
    full: bool,
    projects: BTreeMap<ProjectId, Vec<ServiceState>>,
) -> (Vec<ServiceStates>, usize) {
    let empty_frame = |full| {
        wire::encoded_len(&AgentToServer::ServiceStates(ServiceStates {
            full,
            projects: Vec::new(),
        }))
    };
    let mut frames = Vec::new();
    let mut current = ServiceStates {
        full,
        projects: Vec::new(),
    };
    // A project's entry without its containers, and the comma before it.
    let entry_len = |project_id| {
        wire::encoded_len(&ProjectContainers {
            project_id,
            containers: Vec::new(),
        }) + 1
    };
    let mut size = empty_frame(full);
    if full {
        // Every project is listed, so room for every entry is kept before any container.
        size += projects.keys().map(|id| entry_len(*id)).sum::<usize>();
    }
    let mut left_out = 0;
    for (project_id, containers) in projects {
        let entry = entry_len(project_id);
        let sizes: Vec<usize> = containers
            .iter()
            .map(|state| wire::encoded_len(state) + 1)
            .collect();
        let whole = entry + sizes.iter().sum::<usize>();
        if !full && !current.projects.is_empty() && size + whole > budget::SERVICE_STATES {
            frames.push(std::mem::replace(
                &mut current,
                ServiceStates {
                    full,
                    projects: Vec::new(),
                },
            ));
            size = empty_frame(full);
        }
        if !full {
            size += entry;
        }
        let mut kept = Vec::with_capacity(containers.len());
        for (state, bytes) in containers.into_iter().zip(sizes) {
            if size + bytes <= budget::SERVICE_STATES {
                size += bytes;
                kept.push(state);
            } else {
                left_out += 1;
            }
        }
        current.projects.push(ProjectContainers {
            project_id,
            containers: kept,
        });
    }
    if full || !current.projects.is_empty() {
        frames.push(current);
    }
    (frames, left_out)
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(rename = "Actor", default)]
    actor: Actor,
}

#[derive(Default, Deserialize)]
struct Actor {
    #[serde(rename = "Attributes", default)]
    attributes: HashMap<String, String>,
}

/// The project whose container changed state, from one line of
/// `docker events --format '{{json .}}'`; `None` for other events and unreadable lines.
pub fn project_of_event(line: &str) -> Option<ProjectId> {
    let event: Event = serde_json::from_str(line).ok()?;
    // `health_status: healthy`, `exec_start: sh -c …`: the action is the part before `:`.
    let action = event.action.split(':').next().unwrap_or_default().trim();
    if event.kind != "container" || !STATE_ACTIONS.contains(&action) {
        return None;
    }
    event.actor.attributes.get(PROJECT_ID_LABEL)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::runtime::{ContainerHealth, ContainerStatus};
    use shared::ServiceName;
    use uuid::Uuid;

    fn event(action: &str, project_id: &str) -> String {
        serde_json::json!({
            "status": action, "id": "4f1c", "from": "app:1.0", "Type": "container",
            "Action": action,
            "Actor": {"ID": "4f1c", "Attributes": {
                "com.docker.compose.service": "web", "dev.stagely.project": "shop",
                "dev.stagely.project-id": project_id, "exitCode": "137", "image": "app:1.0",
                "name": "shop-web-1",
            }},
            "scope": "local", "time": 1764500000, "timeNano": 1764500000000000000u64,
        })
        .to_string()
    }

    #[test]
    fn state_changes_mark_their_project_and_other_events_do_not() {
        let id = ProjectId(Uuid::new_v4());
        let text = id.to_string();
        for action in [
            "create",
            "start",
            "die",
            "kill",
            "stop",
            "pause",
            "unpause",
            "restart",
            "destroy",
            "oom",
            "health_status: unhealthy",
            "health_status: healthy",
        ] {
            assert_eq!(
                project_of_event(&event(action, &text)),
                Some(id),
                "{action}"
            );
        }
        for action in [
            "exec_create: sh -c true",
            "exec_start: sh -c true",
            "exec_die",
            "attach",
            "resize",
            "top",
        ] {
            assert_eq!(project_of_event(&event(action, &text)), None, "{action}");
        }
        assert_eq!(project_of_event(&event("die", "not-a-uuid")), None);
        let network = event("die", &text).replace("\"container\"", "\"network\"");
        assert_eq!(project_of_event(&network), None);
        assert_eq!(project_of_event("not json"), None);
        assert_eq!(project_of_event("{}"), None);
    }

    fn inspected(project_id: &str, service: &str, id: &str, status: &str) -> InspectedContainer {
        let json = serde_json::json!([{
            "Id": id,
            "Image": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
            "RestartCount": 2,
            "State": {"Status": status, "ExitCode": 137, "StartedAt": "2026-11-30T12:00:00.5Z",
                      "Health": {"Status": "unhealthy", "FailingStreak": 3, "Log": []}},
            "Config": {"Image": "app:1.0", "Labels": {
                "com.docker.compose.service": service,
                "com.docker.compose.project": "shop",
                "dev.stagely.project-id": project_id,
            }},
        }]);
        crate::health::parse_inspected(&json.to_string())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn containers_are_grouped_by_project_and_sorted() {
        let (a, b) = (ProjectId(Uuid::new_v4()), ProjectId(Uuid::new_v4()));
        let id = |n: u8| format!("{n:0>64}");
        let containers = [
            inspected(&a.to_string(), "worker", &id(3), "running"),
            inspected(&b.to_string(), "web", &id(2), "exited"),
            inspected(&a.to_string(), "web", &id(1), "exited"),
            inspected("not-a-uuid", "web", &id(4), "running"),
            inspected(&a.to_string(), "web", &id(5), "no-such-status"),
        ];
        let grouped = group(&containers);
        assert_eq!(grouped.len(), 2);
        let services: Vec<_> = grouped[&a].iter().map(|s| s.service.as_str()).collect();
        assert_eq!(services, ["web", "worker"]);
        let web = &grouped[&a][0];
        assert_eq!(web.container_id, "000000000000");
        assert_eq!(web.status, ContainerStatus::Exited);
        assert_eq!(web.exit_code, Some(137));
        assert_eq!(web.health, Some(ContainerHealth::Unhealthy));
        assert_eq!(web.restart_count, 2);
        assert_eq!(web.started_at.as_deref(), Some("2026-11-30T12:00:00.5Z"));
        assert!(web.image_id.as_deref().unwrap().starts_with("sha256:1111"));
        // A running container carries no exit code.
        assert_eq!(grouped[&a][1].exit_code, None);
    }

    fn state(n: usize) -> ServiceState {
        ServiceState {
            service: ServiceName::parse(format!("service-{n:0>40}")).unwrap(),
            container_id: format!("{n:0>12}"),
            status: ContainerStatus::Running,
            exit_code: None,
            health: Some(ContainerHealth::Healthy),
            started_at: Some("2026-11-30T12:00:00.123456789Z".into()),
            restart_count: 0,
            image_id: Some(format!("sha256:{}", "a".repeat(64))),
            replicas: None,
        }
    }

    #[test]
    fn a_stacks_shut_down_tasks_are_left_out_but_a_stopped_service_keeps_its_latest() {
        let task = |service: &str, id: &str, status: ContainerStatus, started: &str| ServiceState {
            service: ServiceName::parse(service).unwrap(),
            container_id: id.into(),
            status,
            started_at: Some(started.into()),
            health: None,
            ..state(0)
        };
        let exited = ContainerStatus::Exited;
        let mut states = vec![
            // web: two current tasks, two replaced ones.
            task(
                "web",
                "aaaaaaaaaaa1",
                ContainerStatus::Running,
                "2026-12-01T10:00:05Z",
            ),
            task(
                "web",
                "aaaaaaaaaaa2",
                ContainerStatus::Running,
                "2026-12-01T10:00:06Z",
            ),
            task("web", "aaaaaaaaaaa3", exited, "2026-12-01T10:00:01Z"),
            task("web", "aaaaaaaaaaa4", exited, "2026-12-01T10:00:02Z"),
            // worker: stopped (scaled to 0), every task shut down.
            task("worker", "bbbbbbbbbbb1", exited, "2026-12-01T09:00:00Z"),
            task("worker", "bbbbbbbbbbb2", exited, "2026-12-01T09:30:00Z"),
            // migrate: a job's task that completed (not shut down) stays.
            task("migrate", "ccccccccccc1", exited, "2026-12-01T08:00:00Z"),
        ];
        let shut_down: BTreeSet<&str> = [
            "aaaaaaaaaaa3",
            "aaaaaaaaaaa4",
            "bbbbbbbbbbb1",
            "bbbbbbbbbbb2",
        ]
        .into_iter()
        .collect();
        without_shut_down_tasks(&mut states, &shut_down);
        let left: Vec<(&str, &str)> = states
            .iter()
            .map(|state| (state.service.as_str(), state.container_id.as_str()))
            .collect();
        assert_eq!(
            left,
            [
                ("migrate", "ccccccccccc1"),
                ("web", "aaaaaaaaaaa1"),
                ("web", "aaaaaaaaaaa2"),
                ("worker", "bbbbbbbbbbb2"),
            ]
        );
    }

    #[test]
    fn frames_stay_within_their_budget_and_count_what_they_leave_out() {
        // About 300 bytes a container: 10,000 of them are far over the budget.
        let many: BTreeMap<_, _> = (0..10)
            .map(|p| {
                (
                    ProjectId(Uuid::new_v4()),
                    (0..1_000).map(|n| state(p * 1_000 + n)).collect(),
                )
            })
            .collect();
        let (full, left_out) = frames(true, many.clone());
        assert_eq!(full.len(), 1, "a full frame is one frame");
        assert_eq!(full[0].projects.len(), 10, "every project is listed");
        let frame = AgentToServer::ServiceStates(full[0].clone());
        assert!(wire::encoded_len(&frame) <= budget::SERVICE_STATES);
        let kept: usize = full[0].projects.iter().map(|p| p.containers.len()).sum();
        assert!(
            left_out > 0 && kept + left_out == 10_000,
            "{kept} + {left_out}"
        );

        let (changes, left_out) = frames(false, many);
        assert_eq!(left_out, 0, "changes spread over several frames");
        assert!(changes.len() > 1);
        for frame in &changes {
            assert!(!frame.full);
            let frame = AgentToServer::ServiceStates(frame.clone());
            assert!(wire::encoded_len(&frame) <= budget::SERVICE_STATES);
        }
        let projects: usize = changes.iter().map(|f| f.projects.len()).sum();
        assert_eq!(projects, 10);

        // A project without containers is still sent: its list replaces the server's.
        let gone = BTreeMap::from([(ProjectId(Uuid::new_v4()), Vec::new())]);
        let (frames_of_gone, _) = frames(false, gone);
        assert_eq!(frames_of_gone.len(), 1);
        assert!(frames_of_gone[0].projects[0].containers.is_empty());
        // A full frame of nothing says there is nothing.
        let (empty, _) = frames(true, BTreeMap::new());
        assert_eq!(empty.len(), 1);
        assert!(empty[0].full && empty[0].projects.is_empty());
    }

    #[test]
    fn marks_accumulate_until_taken() {
        let refresh = Refresh::default();
        let (a, b) = (ProjectId(Uuid::new_v4()), ProjectId(Uuid::new_v4()));
        refresh.project(a);
        refresh.project(b);
        refresh.project(a);
        let taken = refresh.take();
        assert!(!taken.full);
        assert_eq!(taken.projects, BTreeSet::from([a, b]));
        assert_eq!(refresh.take(), Pending::default());
        refresh.all();
        refresh.put_back(Pending {
            full: false,
            projects: BTreeSet::from([a]),
        });
        let taken = refresh.take();
        assert!(taken.full && taken.projects.contains(&a));
    }
}
