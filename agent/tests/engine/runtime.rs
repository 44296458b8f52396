//! After a deploy, against the real engine: live container states, lifecycle jobs, the images
//! a deploy reports, and redeploys pinned to exact image ids; on Compose v2 and v1.

use crate::helpers::{run_ok, TestProject, IDLE_COMMAND};
use agent::deploy::DeployOptions;
use agent::jobs::Executor;
use agent::runner::CommandSpec;
use agent::states::{self, Refresh};
use agent::system::Compose;
use shared::protocol::{JobEvent, JobUpdate, LifecyclePayload, ServiceStates};
use shared::runtime::{ContainerStatus, LifecycleAction, ServiceImage};
use shared::{AgentToServer, DeployPayload, JobId, ProjectId, ServerToAgent, ServiceName};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

fn two_services() -> String {
    format!(
        "services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n  worker:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n"
    )
}

/// An executor as the link drives it, with the state watcher running.
struct Agent {
    executor: Executor,
    events: mpsc::Receiver<AgentToServer>,
    /// State frames seen while waiting for job results.
    states: Vec<ServiceStates>,
    _private: tempfile::TempDir,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// The result of one job.
struct Finished {
    success: bool,
    message: String,
    images: Vec<ServiceImage>,
    steps: Vec<String>,
}

impl Agent {
    fn new(compose: Compose) -> Self {
        let private = tempfile::tempdir().unwrap();
        let (executor, events) = Executor::new(
            DeployOptions {
                compose,
                allowed_roots: Vec::new(),
                private_dir: private.path().join("private"),
                up_timeout: Duration::from_secs(120),
                health_timeout: Duration::from_secs(30),
                settle: Duration::from_millis(500),
                git_max_bytes: agent::git::DEFAULT_MAX_BYTES,
            },
            None,
        );
        let watcher = tokio::spawn(executor.watch_states());
        // As after a welcome: state frames are sent while the link is up.
        executor.connected();
        Self {
            executor,
            events,
            states: Vec::new(),
            _private: private,
            watcher,
        }
    }

    /// Sends `message` and waits for the result of `job_id`.
    async fn job(&mut self, job_id: JobId, message: ServerToAgent) -> Finished {
        self.executor.handle(message);
        let mut steps = Vec::new();
        loop {
            match self.next().await {
                AgentToServer::ServiceStates(states) => self.states.push(states),
                AgentToServer::JobUpdate(JobUpdate { job_id: id, event }) if id == job_id => {
                    match event {
                        JobEvent::Step { name } => steps.push(name.to_string()),
                        JobEvent::Finished {
                            success,
                            message,
                            images,
                            ..
                        } => {
                            return Finished {
                                success,
                                message,
                                images,
                                steps,
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }

    async fn next(&mut self) -> AgentToServer {
        tokio::time::timeout(Duration::from_secs(120), self.events.recv())
            .await
            .expect("nothing from the executor within 120 s")
            .expect("the executor is gone")
    }

    /// Waits (up to `within`) for a state frame that `accept`s; earlier frames are kept.
    async fn state_frame(
        &mut self,
        within: Duration,
        accept: impl Fn(&ServiceStates) -> bool,
    ) -> ServiceStates {
        if let Some(found) = self.states.iter().find(|frame| accept(frame)) {
            return found.clone();
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no such state frame within {within:?}: {:?}", self.states)
                })
                .expect("the executor is gone");
            if let AgentToServer::ServiceStates(frame) = event {
                if accept(&frame) {
                    return frame;
                }
                self.states.push(frame);
            }
        }
    }

    async fn deploy(
        &mut self,
        project: &TestProject,
        project_id: ProjectId,
        pinned_images: Vec<ServiceImage>,
    ) -> Finished {
        let job_id = JobId(Uuid::new_v4());
        let payload = DeployPayload {
            job_id,
            project: project.project_name(),
            directory: project.dir.path().display().to_string(),
            compose_file: None,
            secrets: Vec::new(),
            project_id: Some(project_id),
            pinned_images,
            source: None,
            pull_policy: Default::default(),
            registry_credentials: Vec::new(),
            target: Default::default(),
            secrets_as: Default::default(),
        };
        self.job(job_id, ServerToAgent::Deploy(payload)).await
    }

    async fn lifecycle(
        &mut self,
        project: &TestProject,
        project_id: ProjectId,
        action: LifecycleAction,
        service: Option<&str>,
    ) -> Finished {
        let job_id = JobId(Uuid::new_v4());
        let payload = LifecyclePayload {
            job_id,
            project: project.project_name(),
            project_id,
            directory: project.dir.path().display().to_string(),
            compose_file: None,
            action,
            service: service.map(|name| ServiceName::parse(name).unwrap()),
            remove_volumes: false,
            target: Default::default(),
        };
        self.job(job_id, ServerToAgent::Lifecycle(payload)).await
    }
}

/// `docker inspect -f <format> <id>`, trimmed.
async fn inspect(id: &str, format: &str) -> String {
    let spec = CommandSpec::new("docker", ["inspect", "-f", format, id]);
    run_ok(spec).await.unwrap().trim().to_owned()
}

/// The project's frame in `frame`, if it is there.
fn containers_of(frame: &ServiceStates, id: ProjectId) -> Option<&[shared::runtime::ServiceState]> {
    frame
        .projects
        .iter()
        .find(|project| project.project_id == id)
        .map(|project| project.containers.as_slice())
}

#[tokio::test]
async fn a_killed_container_shows_on_the_server_within_moments_and_a_welcome_gets_a_full_list() {
    let project = TestProject::new(Compose::V2, &two_services()).await;
    let id = ProjectId(Uuid::new_v4());
    let mut agent = Agent::new(Compose::V2);
    let deployed = agent.deploy(&project, id, Vec::new()).await;
    assert!(deployed.success, "{}", deployed.message);

    // A welcome (as the link reports it): every project, in one full frame.
    agent.executor.connected();
    let full = agent
        .state_frame(Duration::from_secs(10), |frame| {
            frame.full && containers_of(frame, id).is_some()
        })
        .await;
    let ours = containers_of(&full, id).expect("the project is in the full frame");
    let services: Vec<_> = ours.iter().map(|state| state.service.as_str()).collect();
    assert_eq!(services, ["web", "worker"]);
    let web_id = project.container_id("web").await;
    let web = &ours[0];
    assert_eq!(web.container_id, web_id[..12]);
    assert_eq!(web.status, ContainerStatus::Running);
    assert_eq!(
        web.image_id.as_deref(),
        Some(inspect(&web_id, "{{.Image}}").await.as_str())
    );
    assert!(web.started_at.is_some());
    agent.states.clear();

    let kill = CommandSpec::new("docker", ["kill", web_id.as_str()]);
    run_ok(kill).await.unwrap();
    let started = std::time::Instant::now();
    let changed = agent
        .state_frame(Duration::from_secs(10), |frame| {
            !frame.full
                && containers_of(frame, id).is_some_and(|containers| {
                    containers.iter().any(|state| {
                        state.service.as_str() == "web"
                            && matches!(
                                state.status,
                                ContainerStatus::Exited | ContainerStatus::Dead
                            )
                    })
                })
        })
        .await;
    eprintln!("the kill was reported after {:?}", started.elapsed());
    let ours = containers_of(&changed, id).unwrap();
    assert_eq!(ours.len(), 2, "the project's complete list: {ours:?}");
    assert_eq!(ours[0].exit_code, Some(137));
    assert_eq!(
        ours[1].status,
        ContainerStatus::Running,
        "worker is untouched"
    );
}

#[tokio::test]
async fn a_project_marked_for_refresh_is_read_and_sent_by_the_watcher_alone() {
    // The watcher on its own, as `states::run` is called: marks in, frames out.
    let project = TestProject::new(Compose::V2, &two_services()).await;
    let id = ProjectId(Uuid::new_v4());
    let mut agent = Agent::new(Compose::V2);
    assert!(agent.deploy(&project, id, Vec::new()).await.success);
    drop(agent);

    let (out, mut frames) = mpsc::channel(16);
    let refresh = Refresh::default();
    let watcher = tokio::spawn(states::run(refresh.clone(), out));
    // While the link is down nothing is queued: the frame would be stale when it went out.
    refresh.project(id);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), frames.recv())
            .await
            .is_err(),
        "a state frame was queued while the link was down"
    );
    // The link comes up: a full frame first, as after a welcome.
    refresh.link(true);
    assert!(next_with_project(&mut frames, id).await.full);
    refresh.project(id);
    let frame = next_with_project(&mut frames, id).await;
    assert!(!frame.full);
    assert_eq!(containers_of(&frame, id).unwrap().len(), 2);
    watcher.abort();
}

async fn lifecycle_jobs_act_on_the_projects_containers_only(compose: Compose) {
    let project = TestProject::new(compose.clone(), &two_services()).await;
    let id = ProjectId(Uuid::new_v4());
    let mut agent = Agent::new(compose);
    let deployed = agent.deploy(&project, id, Vec::new()).await;
    assert!(deployed.success, "{}", deployed.message);
    let states = |wanted: &str| {
        let wanted = wanted.to_owned();
        move |states: Vec<(String, String)>| states.iter().all(|(_, state)| *state == wanted)
    };

    agent.states.clear();
    let stopped = agent
        .lifecycle(&project, id, LifecycleAction::Stop, None)
        .await;
    assert!(stopped.success, "{}", stopped.message);
    assert_eq!(stopped.steps, ["stop"]);
    let now = project.container_states().await;
    assert!(states("exited")(now.clone()) && now.len() == 2, "{now:?}");
    // The watcher saw it too: both containers exited, in a frame of their own project.
    agent
        .state_frame(Duration::from_secs(10), |frame| {
            containers_of(frame, id).is_some_and(|containers| {
                containers.len() == 2
                    && containers
                        .iter()
                        .all(|state| state.status == ContainerStatus::Exited)
            })
        })
        .await;

    let started = agent
        .lifecycle(&project, id, LifecycleAction::Start, None)
        .await;
    assert!(started.success, "{}", started.message);
    let now = project.container_states().await;
    assert!(states("running")(now.clone()), "{now:?}");

    let web_started = project.started_at("web").await;
    let worker_started = project.started_at("worker").await;
    let restarted = agent
        .lifecycle(&project, id, LifecycleAction::Restart, Some("web"))
        .await;
    assert!(restarted.success, "{}", restarted.message);
    assert_ne!(
        project.started_at("web").await,
        web_started,
        "web restarted"
    );
    assert_eq!(
        project.started_at("worker").await,
        worker_started,
        "worker was left alone"
    );

    // Another Stagely project asking for the same compose project name is refused.
    let other = ProjectId(Uuid::new_v4());
    let refused = agent
        .lifecycle(&project, other, LifecycleAction::Down, None)
        .await;
    assert!(!refused.success);
    assert!(
        refused.message.contains("are not this project's"),
        "{}",
        refused.message
    );
    assert_eq!(
        project.container_states().await.len(),
        2,
        "nothing was removed"
    );

    let one_service = agent
        .lifecycle(&project, id, LifecycleAction::Down, Some("web"))
        .await;
    assert!(!one_service.success);
    assert!(
        one_service.message.contains("whole project"),
        "{}",
        one_service.message
    );

    agent.states.clear();
    let down = agent
        .lifecycle(&project, id, LifecycleAction::Down, None)
        .await;
    assert!(down.success, "{}", down.message);
    assert_eq!(project.container_states().await, Vec::new());
    // The project has no container left: its list is sent empty.
    agent
        .state_frame(Duration::from_secs(10), |frame| {
            containers_of(frame, id).is_some_and(<[_]>::is_empty)
        })
        .await;
}

#[tokio::test]
async fn v2_lifecycle_jobs_act_on_the_projects_containers_only() {
    lifecycle_jobs_act_on_the_projects_containers_only(Compose::V2).await;
}

#[tokio::test]
async fn v1_lifecycle_jobs_act_on_the_projects_containers_only() {
    lifecycle_jobs_act_on_the_projects_containers_only(Compose::V1).await;
}

async fn stop_and_down_without_the_compose_file(compose: Compose) -> (Finished, Finished, usize) {
    let project = TestProject::new(compose.clone(), &two_services()).await;
    let id = ProjectId(Uuid::new_v4());
    let mut agent = Agent::new(compose);
    assert!(agent.deploy(&project, id, Vec::new()).await.success);
    for file in ["compose.yaml", "docker-compose.yml"] {
        let _ = std::fs::remove_file(project.dir.path().join(file));
    }
    let stop = agent
        .lifecycle(&project, id, LifecycleAction::Stop, None)
        .await;
    let down = agent
        .lifecycle(&project, id, LifecycleAction::Down, None)
        .await;
    let left = project.container_states().await.len();
    agent::testing::remove_project(&project.name);
    (stop, down, left)
}

#[tokio::test]
async fn v2_stops_and_takes_down_a_project_whose_file_is_gone_by_its_name() {
    let (stop, down, left) = stop_and_down_without_the_compose_file(Compose::V2).await;
    assert!(stop.success, "{}", stop.message);
    assert!(down.success, "{}", down.message);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn v1_says_clearly_it_needs_the_compose_file() {
    let (stop, down, left) = stop_and_down_without_the_compose_file(Compose::V1).await;
    for result in [&stop, &down] {
        assert!(!result.success);
        assert!(
            result.message.contains("Compose v1 needs it"),
            "{}",
            result.message
        );
    }
    assert_eq!(left, 2, "nothing was touched");
}

async fn a_redeploy_runs_exactly_the_pinned_image(compose: Compose) {
    let tag = format!(
        "stagely-test/pinned-{}:1.0",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let v1 = agent::testing::build_version_image(&tag, "one").await;
    let yaml = format!(
        "services:\n  web:\n    image: {tag}\n    command: {IDLE_COMMAND}\n  worker:\n    image: {tag}\n    command: {IDLE_COMMAND}\n"
    );
    let project = TestProject::new(compose.clone(), &yaml).await;
    let id = ProjectId(Uuid::new_v4());
    let mut agent = Agent::new(compose);

    let first = agent.deploy(&project, id, Vec::new()).await;
    assert!(first.success, "{}", first.message);
    // The result lists what each service runs, as the engine says.
    let names: Vec<_> = first.images.iter().map(|i| i.service.as_str()).collect();
    assert_eq!(names, ["web", "worker"]);
    for image in &first.images {
        let container = project.container_id(image.service.as_str()).await;
        assert_eq!(image.image_id, inspect(&container, "{{.Image}}").await);
        assert_eq!(image.image, inspect(&container, "{{.Config.Image}}").await);
        assert_eq!(image.image_id, v1);
        assert_eq!(
            image.repo_digest, None,
            "a local build has no registry digest"
        );
    }

    // The tag moves to another build; a plain deploy would follow it, a pinned one does not.
    let v2 = agent::testing::build_version_image(&tag, "two").await;
    // Since then `web` got a `build:` section (one that cannot build): a deploy builds such a
    // service, a pinned redeploy must not.
    let file = if project.compose == Compose::V1 {
        "docker-compose.yml"
    } else {
        "compose.yaml"
    };
    let image = agent::testing::test_image().await;
    std::fs::write(
        project.dir.path().join(file),
        yaml.replacen(
            &format!("image: {tag}\n"),
            &format!("image: {tag}\n    build: .\n"),
            1,
        )
        .replace("{image}", image),
    )
    .unwrap();
    std::fs::write(
        project.dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY nothing-here /\n",
    )
    .unwrap();
    assert_ne!(v1, v2);
    let pinned = agent.deploy(&project, id, first.images.clone()).await;
    assert!(pinned.success, "{}", pinned.message);
    for service in ["web", "worker"] {
        let container = project.container_id(service).await;
        assert_eq!(inspect(&container, "{{.Image}}").await, v1, "{service}");
    }
    assert_eq!(
        agent::testing::image_id(&tag).await,
        v2,
        "nothing was built or retagged"
    );
    let reported: Vec<_> = pinned
        .images
        .iter()
        .map(|i| (i.service.as_str(), i.image.as_str(), i.image_id.as_str()))
        .collect();
    assert_eq!(
        reported,
        [
            ("web", tag.as_str(), v1.as_str()),
            ("worker", tag.as_str(), v1.as_str())
        ],
        "a pinned service keeps its reference"
    );

    // Pinned to an image that is gone: the job fails saying so, and nothing changes.
    let containers = (
        project.container_id("web").await,
        project.started_at("web").await,
    );
    let gone = format!("sha256:{}", "0".repeat(64));
    let mut missing = first.images.clone();
    missing[0].image_id = gone.clone();
    let refused = agent.deploy(&project, id, missing).await;
    assert!(!refused.success);
    assert_eq!(
        refused.message,
        format!(
            "service web ran image sha256:000000000000… ({tag}) in that deployment, and it is \
             no longer on this host"
        )
    );
    assert!(
        !refused.steps.iter().any(|step| step == "up"),
        "{:?}",
        refused.steps
    );
    assert_eq!(
        (
            project.container_id("web").await,
            project.started_at("web").await
        ),
        containers,
        "the running container was touched"
    );

    drop(project);
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", tag.as_str(), v1.as_str(), v2.as_str()])
        .output();
}

#[tokio::test]
async fn v2_a_redeploy_runs_exactly_the_pinned_image() {
    a_redeploy_runs_exactly_the_pinned_image(Compose::V2).await;
}

#[tokio::test]
async fn v1_a_redeploy_runs_exactly_the_pinned_image() {
    a_redeploy_runs_exactly_the_pinned_image(Compose::V1).await;
}

#[tokio::test]
async fn a_resent_deploy_replays_its_images() {
    let project = TestProject::new(Compose::V2, &two_services()).await;
    let id = ProjectId(Uuid::new_v4());
    let mut agent = Agent::new(Compose::V2);
    let job_id = JobId(Uuid::new_v4());
    let payload = DeployPayload {
        job_id,
        project: project.project_name(),
        directory: project.dir.path().display().to_string(),
        compose_file: None,
        secrets: Vec::new(),
        project_id: Some(id),
        pinned_images: Vec::new(),
        source: None,
        pull_policy: Default::default(),
        registry_credentials: Vec::new(),
        target: Default::default(),
        secrets_as: Default::default(),
    };
    let first = agent
        .job(job_id, ServerToAgent::Deploy(payload.clone()))
        .await;
    assert!(first.success, "{}", first.message);
    assert_eq!(first.images.len(), 2);
    let again = agent.job(job_id, ServerToAgent::Deploy(payload)).await;
    assert!(again.success);
    assert_eq!(again.images, first.images);
    assert!(again.steps.is_empty(), "it ran again: {:?}", again.steps);
}

/// The next state frame that has `project` in it (other tests' containers change meanwhile,
/// and their projects may come first or share the frame).
async fn next_with_project(
    frames: &mut mpsc::Receiver<AgentToServer>,
    project: ProjectId,
) -> ServiceStates {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, frames.recv())
            .await
            .expect("no frame with the project within 10 s")
            .unwrap();
        let frame = match frame {
            AgentToServer::ServiceStates(frame) => frame,
            // The Swarm's node list rides along with every full reading.
            AgentToServer::SwarmNodes(_) => continue,
            other => panic!("not a state frame: {other:?}"),
        };
        if containers_of(&frame, project).is_some() {
            return frame;
        }
    }
}
