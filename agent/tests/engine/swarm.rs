//! Swarm stacks through the agent's deploy pipeline, against the real engine in single-node
//! swarm mode: a changed secret rolls out start-first to every replica (as environment and as
//! a Swarm secret file), and a new version whose healthcheck fails is rolled back by Swarm while
//! the old tasks keep serving.
//!
//! The tests put the engine into swarm mode themselves and leave it when the last one ends
//! (also on a panic), unless it was a manager already.

use crate::helpers::{run_ok, test_image, Detached};
use agent::deploy::{self, DeployError, DeployOptions, DeployRequest};
use agent::runner::CommandSpec;
use agent::system::Compose;
use agent::testing::build_version_image;
use shared::protocol::JobEvent;
use shared::target::{DeployTarget, SecretsAs};
use shared::{EnvKey, ProjectName, Secret, SecretScope, SecretValue, ServiceName};
use std::sync::Mutex;
use std::time::Duration;
use tempfile::TempDir;

/// Holds the engine in swarm mode while any test here runs; the last one out leaves the swarm
/// if the first one in joined it.
struct SwarmMode;

static USERS: Mutex<(usize, bool)> = Mutex::new((0, false));

impl SwarmMode {
    fn enter() -> Self {
        let mut users = USERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if users.0 == 0 {
            let state = std::process::Command::new("docker")
                .args(["info", "--format", "{{.Swarm.LocalNodeState}}"])
                .output()
                .expect("docker info");
            let active = String::from_utf8_lossy(&state.stdout).trim() == "active";
            if !active {
                let init = std::process::Command::new("docker")
                    .args(["swarm", "init", "--advertise-addr", "127.0.0.1"])
                    .output()
                    .expect("docker swarm init");
                assert!(init.status.success(), "swarm init: {init:?}");
            }
            users.1 = !active;
        }
        users.0 += 1;
        SwarmMode
    }
}

impl Drop for SwarmMode {
    fn drop(&mut self) {
        let mut users = USERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        users.0 -= 1;
        if users.0 == 0 && users.1 {
            let _ = std::process::Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .output();
            users.1 = false;
        }
    }
}

/// A stack removed (with its secrets) when dropped.
struct TestStack {
    name: ProjectName,
    dir: TempDir,
}

impl TestStack {
    fn new(compose_yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("compose.yaml"), compose_yaml).unwrap();
        let name = format!("sw{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        Self {
            name: ProjectName::parse(name).unwrap(),
            dir,
        }
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        let name = self.name.as_str();
        let _ = std::process::Command::new("docker")
            .args(["stack", "rm", name])
            .output();
        let filter = format!("label=dev.stagely.project={name}");
        if let Ok(output) = std::process::Command::new("docker")
            .args(["secret", "ls", "-q", "--filter", filter.as_str()])
            .output()
        {
            for id in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["secret", "rm", id])
                    .output();
            }
        }
    }
}

/// A web service of two replicas whose healthcheck passes once it serves `GREETING` (from the
/// environment, or from `/run/secrets/GREETING` when that file exists) and that, like any
/// service meant for rolling updates, keeps serving for a moment after SIGTERM (Swarm has taken
/// it out of the service's DNS by then). Clients find it by DNS on an attachable overlay
/// network (`dnsrr`: this engine's kernel has no IPVS for a virtual IP).
fn web_stack(image: &str) -> String {
    format!(
        r#"services:
  web:
    image: {image}
    command: ["sh", "-c", "mkdir -p /www; if [ -f /run/secrets/GREETING ]; then cat /run/secrets/GREETING > /www/index.html; else echo \"$$GREETING\" > /www/index.html; fi; httpd -f -p 8080 -h /www & pid=$$!; trap 'sleep 2; kill $$pid; exit 0' TERM; wait"]
    networks: [mesh]
    healthcheck:
      test: ["CMD-SHELL", "test -f /version && grep -q broken /version && exit 1; wget -q -O- http://127.0.0.1:8080/ >/dev/null"]
      interval: 1s
      timeout: 2s
      retries: 2
      start_period: 1s
    stop_grace_period: 5s
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
networks:
  mesh:
    driver: overlay
    attachable: true
"#
    )
}

/// The client's loop: every 50 ms it looks the service up and asks one of its addresses for
/// the page, printing `OK <page>` or `FAIL <why>`, until `/stop` exists.
const CLIENT_LOOP: &str = r#"while [ ! -f /stop ]; do
  set -- $(nslookup web 127.0.0.11 2>/dev/null | sed -n 's/^Address: //p')
  if [ $# -eq 0 ]; then echo "FAIL no address"; else
    i=$((RANDOM % $# + 1)); eval ip=\${$i}
    if page=$(timeout 2 wget -q -O- http://$ip:8080/ 2>/dev/null); then echo "OK $page"; else echo "FAIL $ip"; fi
  fi
  sleep 0.05
done
echo DONE"#;

/// A container on the stack's network hitting the service every 50 ms.
struct Client {
    container: Detached,
}

impl Client {
    async fn start(stack: &TestStack, image: &str) -> Self {
        let name = format!("{}-client", stack.name);
        let network = format!("{}_mesh", stack.name);
        let container = Detached::run(name, &network, &[image, "sh", "-c", CLIENT_LOOP]).await;
        Self { container }
    }

    /// Stops the loop and returns its answers: (pages served, failures).
    async fn stop(self) -> (Vec<String>, Vec<String>) {
        let name = self.container.name.as_str();
        run_ok(CommandSpec::new("docker", ["exec", name, "touch", "/stop"]))
            .await
            .expect("stopping the client");
        run_ok(CommandSpec::new("docker", ["wait", name]))
            .await
            .expect("the client ends");
        let logs = run_ok(CommandSpec::new("docker", ["logs", name]))
            .await
            .expect("the client's log");
        let pages = logs
            .lines()
            .filter_map(|line| line.strip_prefix("OK "))
            .map(str::to_owned)
            .collect();
        let failures = logs
            .lines()
            .filter(|line| line.starts_with("FAIL"))
            .map(str::to_owned)
            .collect();
        (pages, failures)
    }
}

fn options(private_dir: &std::path::Path) -> DeployOptions {
    DeployOptions {
        compose: Compose::V2,
        allowed_roots: Vec::new(),
        private_dir: private_dir.to_path_buf(),
        up_timeout: Duration::from_secs(240),
        health_timeout: Duration::from_secs(60),
        settle: Duration::from_millis(1500),
        git_max_bytes: agent::git::DEFAULT_MAX_BYTES,
    }
}

fn greeting(value: &str) -> Secret {
    Secret {
        key: EnvKey::parse("GREETING").unwrap(),
        value: SecretValue::new(value),
        scope: SecretScope::Service(ServiceName::parse("web").unwrap()),
    }
}

/// A deploy of `stack` to this Swarm.
fn swarm_request<'a>(
    stack: &'a TestStack,
    secrets: &'a [Secret],
    secrets_as: SecretsAs,
    project_id: Option<shared::ProjectId>,
) -> DeployRequest<'a> {
    DeployRequest {
        project: &stack.name,
        directory: stack.dir.path(),
        compose_file: None,
        secrets,
        project_id,
        pinned_images: &[],
        pull_policy: Default::default(),
        registry_credentials: &[],
        target: DeployTarget::Swarm,
        secrets_as,
    }
}

async fn deploy_stack(
    stack: &TestStack,
    private: &TempDir,
    secrets: &[Secret],
    secrets_as: SecretsAs,
) -> (Result<deploy::Deployed, DeployError>, Vec<JobEvent>) {
    let request = swarm_request(stack, secrets, secrets_as, None);
    let mut events = Vec::new();
    let result = deploy::deploy(&request, &options(private.path()), |event| {
        events.push(event)
    })
    .await;
    (result, events)
}

/// The containers of the tasks the stack's web service wants running.
async fn task_containers(stack: &TestStack) -> Vec<String> {
    let service = format!("{}_web", stack.name);
    let tasks = run_ok(CommandSpec::new(
        "docker",
        [
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=running",
            service.as_str(),
        ],
    ))
    .await
    .unwrap();
    let mut ids = Vec::new();
    for task in tasks.split_whitespace() {
        let container = run_ok(CommandSpec::new(
            "docker",
            [
                "inspect",
                "--format",
                "{{.Status.ContainerStatus.ContainerID}}",
                task,
            ],
        ))
        .await
        .unwrap();
        ids.push(container.trim().to_owned());
    }
    ids
}

/// What `argv` prints in every task the web service wants running, sorted.
async fn in_every_task(stack: &TestStack, argv: &[&str]) -> Vec<String> {
    let mut printed = Vec::new();
    for id in task_containers(stack).await {
        let exec = ["exec", id.as_str()]
            .into_iter()
            .chain(argv.iter().copied());
        let out = run_ok(CommandSpec::new("docker", exec)).await.unwrap();
        printed.push(out.trim().to_owned());
    }
    printed.sort();
    printed
}

/// What every task the service wants running serves (read inside each task's container).
async fn served_by_every_task(stack: &TestStack) -> Vec<String> {
    in_every_task(stack, &["wget", "-q", "-O-", "http://127.0.0.1:8080/"]).await
}

fn output_lines(events: &[JobEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            JobEvent::Output { line } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

async fn a_changed_secret_rolls_out_to_every_replica(secrets_as: SecretsAs) {
    let _swarm = SwarmMode::enter();
    let image = test_image().await;
    let stack = TestStack::new(&web_stack(image));
    let private = tempfile::tempdir().unwrap();

    let (first, _) = deploy_stack(&stack, &private, &[greeting("first $value")], secrets_as).await;
    first.expect("the first deploy works");
    assert_eq!(served_by_every_task(&stack).await, ["first $value"; 2]);

    let client = Client::start(&stack, image).await;
    let (second, events) = deploy_stack(
        &stack,
        &private,
        &[greeting("second \"value\"")],
        secrets_as,
    )
    .await;
    let (pages, failures) = client.stop().await;
    let deployed = second.unwrap_or_else(|error| panic!("the second deploy works: {error}"));
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "no request failed during the deploy"
    );
    assert!(
        pages.len() >= 20,
        "the client kept asking: {} answers",
        pages.len()
    );
    assert!(pages.iter().any(|page| page == "first $value"), "{pages:?}");
    assert_eq!(pages.last().map(String::as_str), Some("second \"value\""));
    assert_eq!(deployed.containers.len(), 2);
    assert_eq!(served_by_every_task(&stack).await, ["second \"value\""; 2]);
    let lines = output_lines(&events);
    let web = format!("{}_web: 2/2 updated", stack.name);
    assert!(
        lines.iter().any(|line| line.starts_with(&web)),
        "progress per service in the log: {lines:#?}"
    );
    // The update was start-first with rollback, from the override.
    let config = run_ok(CommandSpec::new(
        "docker",
        [
            "service",
            "inspect",
            "--format",
            "{{.Spec.UpdateConfig.Order}} {{.Spec.UpdateConfig.FailureAction}}",
            &format!("{}_web", stack.name),
        ],
    ))
    .await
    .unwrap();
    assert_eq!(config.trim(), "start-first rollback");
    // A redeploy that changes nothing (Swarm replaces no task, so it reports no update for
    // the service) ends as soon as the replicas run, not at the deploy's timeout.
    let (again, events) = deploy_stack(
        &stack,
        &private,
        &[greeting("second \"value\"")],
        secrets_as,
    )
    .await;
    again.unwrap_or_else(|error| {
        panic!(
            "the unchanged redeploy works: {error}\n{:#?}",
            output_lines(&events)
        )
    });
    assert_eq!(served_by_every_task(&stack).await, ["second \"value\""; 2]);
    // Nothing of the deploy is left in the private directory.
    assert_eq!(std::fs::read_dir(private.path()).unwrap().count(), 0);
    if secrets_as == SecretsAs::SwarmSecrets {
        // Only the version the service mounts is left.
        let secrets = project_secrets(&stack).await;
        assert_eq!(secrets.len(), 1, "{secrets:?}");
    }
}

#[tokio::test]
async fn a_changed_secret_reaches_every_replica_as_environment() {
    a_changed_secret_rolls_out_to_every_replica(SecretsAs::Environment).await;
}

#[tokio::test]
async fn a_changed_secret_reaches_every_replica_as_a_swarm_secret_file() {
    a_changed_secret_rolls_out_to_every_replica(SecretsAs::SwarmSecrets).await;
}

#[tokio::test]
async fn a_version_whose_healthcheck_fails_is_rolled_back_and_the_old_tasks_keep_serving() {
    let _swarm = SwarmMode::enter();
    let tag = format!(
        "stagely-test/swarm-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let good = format!("{tag}:good");
    let broken = format!("{tag}:broken");
    build_version_image(&good, "good").await;
    build_version_image(&broken, "broken").await;
    let stack = TestStack::new(&web_stack(&good));
    let private = tempfile::tempdir().unwrap();
    let (first, _) =
        deploy_stack(&stack, &private, &[greeting("old")], SecretsAs::Environment).await;
    first.expect("the first deploy works");

    std::fs::write(stack.dir.path().join("compose.yaml"), web_stack(&broken)).unwrap();
    let client = Client::start(&stack, &good).await;
    let (second, _) =
        deploy_stack(&stack, &private, &[greeting("new")], SecretsAs::Environment).await;
    let (pages, failures) = client.stop().await;
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "no request failed during the deploy"
    );
    assert!(pages.iter().all(|page| page == "old"), "{pages:?}");
    let error = second.expect_err("the broken version fails the deploy");
    let message = error.to_string();
    assert!(
        message.contains("rolled it back"),
        "the reason says Swarm rolled back: {message}"
    );
    assert_eq!(served_by_every_task(&stack).await, ["old"; 2]);
    let image = service_image(&stack).await;
    assert!(image.starts_with(&good), "{image}");
    remove_with_images(stack, &[&good, &broken]).await;
}

/// A stack's deployment records the image each service ran, and running it again exactly
/// brings that image back although the file names another version and its own tag has moved
/// since; a pinned image that is gone fails the redeploy before anything changes.
#[tokio::test]
async fn an_exact_redeploy_of_a_stack_runs_the_images_it_ran_although_the_tag_moved() {
    let _swarm = SwarmMode::enter();
    let repository = format!(
        "stagely-test/swarm-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let (tag_one, tag_two) = (format!("{repository}:one"), format!("{repository}:two"));
    let one = build_version_image(&tag_one, "one").await;
    let stack = TestStack::new(&web_stack(&tag_one));
    let private = tempfile::tempdir().unwrap();
    let secrets = [greeting("hello")];
    let (first, _) = deploy_stack(&stack, &private, &secrets, SecretsAs::Environment).await;
    let first = first.expect("the first deploy works");
    let web = ServiceName::parse("web").unwrap();
    assert_eq!(first.images.len(), 1, "{:?}", first.images);
    assert_eq!(first.images[0].service, web);
    assert_eq!(first.images[0].image, tag_one);
    assert_eq!(first.images[0].image_id, one);

    // The tag moved on this host (no registry): Swarm keeps the tasks it has, and the
    // deployment records the image they run, not the one the tag names now.
    let moved = build_version_image(&tag_one, "moved").await;
    let (unchanged, _) = deploy_stack(&stack, &private, &secrets, SecretsAs::Environment).await;
    assert_eq!(unchanged.expect("the deploy works").images, first.images);
    let ran_one = format!("one {tag_one}");
    assert_eq!(
        in_every_task(&stack, &["cat", "/version"]).await,
        [ran_one.clone(), ran_one.clone()]
    );

    let two = build_version_image(&tag_two, "two").await;
    std::fs::write(stack.dir.path().join("compose.yaml"), web_stack(&tag_two)).unwrap();
    let (second, _) = deploy_stack(&stack, &private, &secrets, SecretsAs::Environment).await;
    assert_eq!(
        second.expect("the second deploy works").images[0].image_id,
        two
    );
    let ran_two = format!("two {tag_two}");
    assert_eq!(
        in_every_task(&stack, &["cat", "/version"]).await,
        [ran_two.clone(), ran_two]
    );

    let mut request = swarm_request(&stack, &secrets, SecretsAs::Environment, None);
    request.pinned_images = &first.images;
    let mut events = Vec::new();
    let again = deploy::deploy(&request, &options(private.path()), |event| {
        events.push(event)
    })
    .await
    .unwrap_or_else(|error| {
        panic!(
            "the exact redeploy works: {error}\n{:#?}",
            output_lines(&events)
        )
    });
    assert_eq!(
        in_every_task(&stack, &["cat", "/version"]).await,
        [ran_one.clone(), ran_one]
    );
    assert_eq!(
        again.images, first.images,
        "the redeploy records what it ran, as the deployment it repeats did"
    );
    assert_eq!(served_by_every_task(&stack).await, ["hello"; 2]);

    // An image that is gone: refused before the stack is touched.
    let gone = [shared::runtime::ServiceImage {
        image_id: format!("sha256:{}", "0d".repeat(32)),
        ..first.images[0].clone()
    }];
    let spec_before = service_image(&stack).await;
    request.pinned_images = &gone;
    let refused = deploy::deploy(&request, &options(private.path()), |_| {}).await;
    let message = refused.expect_err("a missing image is refused").to_string();
    assert!(
        message.contains("service web ran image sha256:0d0d") && message.contains("no longer"),
        "{message}"
    );
    assert_eq!(service_image(&stack).await, spec_before);
    remove_with_images(stack, &[&one, &moved, &two]).await;
}

/// A job (`mode: replicated-job`, a migration) beside the services: Swarm refuses a job with
/// an update config, and a job's tasks complete rather than run, so the deploy must neither
/// give it the rolling update nor wait for it to run. It runs to completion, the deploy
/// succeeds and records its image; Swarm runs it again on the next deploy, which waits for
/// that run. Its mode is written through a variable (`${MIGRATE_MODE:-replicated-job}`), as
/// `docker stack deploy` reads it: Swarm refused the update config the agent gave it when only
/// the literal mode was known as a job.
#[tokio::test]
async fn a_stack_with_a_job_deploys_once_the_job_completed() {
    let _swarm = SwarmMode::enter();
    let mode = "\"${MIGRATE_MODE:-replicated-job}\"";
    let (stack, id) = stack_with_job("migrated", mode, "[\"cat\", \"/version\"]", "").await;
    let private = tempfile::tempdir().unwrap();
    let secrets = [greeting("hello")];
    let job = format!("{}_migrate", stack.name);
    for (runs, round) in [(1, "first"), (2, "unchanged")] {
        let (deployed, events) =
            deploy_stack(&stack, &private, &secrets, SecretsAs::Environment).await;
        let deployed = deployed.unwrap_or_else(|error| {
            panic!(
                "the {round} deploy works: {error}\n{:#?}",
                output_lines(&events)
            )
        });
        let services: Vec<&str> = deployed.images.iter().map(|i| i.service.as_str()).collect();
        assert_eq!(
            services,
            ["migrate", "web"],
            "{round}: {:?}",
            deployed.images
        );
        assert!(
            deployed.images.iter().all(|image| image.image_id == id),
            "{round}"
        );
        // Swarm runs a job again on every deploy; the deploy ended once this run completed.
        let states = sorted_lines(&[
            "service",
            "ps",
            "--format",
            "{{.CurrentState}}",
            job.as_str(),
        ])
        .await;
        let completed = states.iter().filter(|s| s.starts_with("Complete")).count();
        assert_eq!(completed, runs, "{round}: {states:?}");
    }
    remove_with_images(stack, &[&id]).await;
}

/// A job that keeps failing (a migration that exits 3): Swarm retries it until the deploy's
/// timeout, and the deploy's failure then says which service it waited for and why its tasks
/// failed (it said only "waiting for …").
#[tokio::test]
async fn a_job_that_keeps_failing_fails_the_deploy_with_its_task_errors() {
    let _swarm = SwarmMode::enter();
    let restart = "\n      restart_policy:\n        delay: 1s";
    let (stack, id) = stack_with_job(
        "broken",
        "replicated-job",
        "[\"sh\", \"-c\", \"exit 3\"]",
        restart,
    )
    .await;
    let private = tempfile::tempdir().unwrap();
    let secrets = [greeting("hello")];
    let request = swarm_request(&stack, &secrets, SecretsAs::Environment, None);
    let options = DeployOptions {
        up_timeout: Duration::from_secs(30),
        ..options(private.path())
    };
    let mut events = Vec::new();
    let result = deploy::deploy(&request, &options, |event| events.push(event)).await;
    let error = result
        .expect_err("a job that never completes fails the deploy")
        .to_string();
    let migrate = format!("{}_migrate", stack.name);
    assert!(
        error.contains(&format!(
            "did not finish within 30 s: waiting for {migrate}"
        )),
        "{error}"
    );
    assert!(error.contains("task errors:"), "{error}");
    assert!(error.contains("non-zero exit (3)"), "{error}");
    remove_with_images(stack, &[&id]).await;
}

/// The web stack with a `migrate` job (`mode` is `replicated-job`, or says so through a
/// variable) running `command` (YAML flow list), with `deploy` lines added under its mode, on an
/// image of its own built for `version`; returns the stack and the image's id.
async fn stack_with_job(
    version: &str,
    mode: &str,
    command: &str,
    deploy: &str,
) -> (TestStack, String) {
    let tag = format!(
        "stagely-test/swarm-{}:job",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let id = build_version_image(&tag, version).await;
    let job = format!(
        "  migrate:\n    image: {tag}\n    command: {command}\n    deploy:\n      \
         mode: {mode}{deploy}\nnetworks:\n  mesh:"
    );
    let stack = TestStack::new(&web_stack(&tag).replacen("networks:\n  mesh:", &job, 1));
    (stack, id)
}

/// Removes the stack, then the images once no container of it uses them (a task's container
/// outlives its service for a moment).
async fn remove_with_images(stack: TestStack, images: &[&str]) {
    let label = format!("label=com.docker.stack.namespace={}", stack.name);
    drop(stack);
    for _ in 0..60 {
        if sorted_lines(&["ps", "-a", "-q", "--filter", label.as_str()])
            .await
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for image in images {
        let _ = run_ok(CommandSpec::new("docker", ["rmi", "-f", image])).await;
    }
}

/// The image reference the stack's web service runs.
async fn service_image(stack: &TestStack) -> String {
    run_ok(CommandSpec::new(
        "docker",
        [
            "service",
            "inspect",
            "--format",
            "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
            &format!("{}_web", stack.name),
        ],
    ))
    .await
    .unwrap()
    .trim()
    .to_owned()
}

/// `docker stack deploy --prune` replaces and removes the services of whatever stack has the
/// name: a project whose name is a stack started by hand is refused before anything is created,
/// and that stack keeps running untouched.
#[tokio::test]
async fn a_stack_started_by_hand_under_the_projects_name_is_left_alone() {
    let _swarm = SwarmMode::enter();
    let image = test_image().await;
    let stack = TestStack::new(&format!(
        "services:\n  db:\n    image: {image}\n    command: [\"sleep\", \"600\"]\n"
    ));
    let by_hand = run_ok(
        CommandSpec::new(
            "docker",
            [
                "stack",
                "deploy",
                "--detach=true",
                "-c",
                "compose.yaml",
                stack.name.as_str(),
            ],
        )
        .current_dir(stack.dir.path()),
    )
    .await;
    by_hand.expect("the stack started by hand");
    let services = || async {
        run_ok(CommandSpec::new(
            "docker",
            [
                "service",
                "ls",
                "--format",
                "{{.Name}} {{.Image}}",
                "--filter",
                &format!("label=com.docker.stack.namespace={}", stack.name),
            ],
        ))
        .await
        .unwrap()
    };
    let before = services().await;
    assert!(before.contains(&format!("{}_db", stack.name)), "{before}");

    // The project's own file has another service: --prune would have removed `db`.
    std::fs::write(stack.dir.path().join("compose.yaml"), web_stack(image)).unwrap();
    let private = tempfile::tempdir().unwrap();
    let (result, _) =
        deploy_stack(&stack, &private, &[greeting("x")], SecretsAs::SwarmSecrets).await;
    let message = result.expect_err("the name is taken").to_string();
    assert!(
        message.contains("did not deploy") && message.contains(&format!("{}_db", stack.name)),
        "{message}"
    );
    assert_eq!(
        services().await,
        before,
        "the stack started by hand is untouched"
    );
    let secrets = project_secrets(&stack).await;
    assert_eq!(secrets, Vec::<String>::new(), "no Swarm secret was created");

    // Nor are its container logs this project's to read: the stream ends at once, empty
    // (followed, it would run until stopped).
    let (out, mut batches) = tokio::sync::mpsc::channel(16);
    let request = stack_logs(&stack, "db", shared::ProjectId(uuid::Uuid::new_v4()));
    let streamed = agent::logs::stream(
        request,
        Compose::V2,
        agent::runner::Redactor::default(),
        out,
    );
    tokio::time::timeout(Duration::from_secs(30), streamed)
        .await
        .expect("the refused stream ended");
    assert!(batches.try_recv().is_err(), "no line of the stack was sent");
}

/// The dashboard's log stream of one service of the stack, for project `project_id`.
fn stack_logs(
    stack: &TestStack,
    service: &str,
    project_id: shared::ProjectId,
) -> agent::logs::LogRequest {
    agent::logs::LogRequest {
        stream_id: shared::JobId(uuid::Uuid::new_v4()),
        project: stack.name.clone(),
        files: Vec::new(),
        project_dir: stack.dir.path().to_path_buf(),
        services: vec![ServiceName::parse(service).unwrap()],
        tail: 10,
        target: DeployTarget::Swarm,
        project_id: Some(project_id),
    }
}

/// The lines `docker <argv…>` prints, sorted.
async fn sorted_lines(argv: &[&str]) -> Vec<String> {
    let printed = run_ok(CommandSpec::new("docker", argv)).await.unwrap();
    let mut lines: Vec<String> = printed.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// The Swarm secrets labelled with the stack's project.
async fn project_secrets(stack: &TestStack) -> Vec<String> {
    let filter = format!("label=dev.stagely.project={}", stack.name);
    sorted_lines(&["secret", "ls", "-q", "--filter", filter.as_str()]).await
}

/// Running task ids of a stack's service, sorted.
async fn running_tasks(stack: &TestStack, service: &str) -> Vec<String> {
    let name = format!("{}_{service}", stack.name);
    let filter = "desired-state=running";
    sorted_lines(&["service", "ps", "-q", "--filter", filter, name.as_str()]).await
}

/// `<service> <replicas>` of each service of the stack, sorted (`docker service ls`).
async fn replica_counts(stack: &TestStack) -> Vec<String> {
    let filter = format!("label=com.docker.stack.namespace={}", stack.name);
    let format = "{{.Name}} {{.Replicas}}";
    sorted_lines(&[
        "service",
        "ls",
        "--format",
        format,
        "--filter",
        filter.as_str(),
    ])
    .await
}

/// A lifecycle job on the stack (or one service), with the output lines it reported.
async fn act_seen(
    stack: &TestStack,
    project_id: shared::ProjectId,
    action: shared::runtime::LifecycleAction,
    service: Option<&str>,
) -> (Result<String, String>, Vec<String>) {
    let service = service.map(|name| ServiceName::parse(name).unwrap());
    let request = agent::lifecycle::LifecycleRequest {
        project: &stack.name,
        project_id,
        directory: stack.dir.path(),
        compose_file: None,
        action,
        service: service.as_ref(),
        remove_volumes: true,
        target: DeployTarget::Swarm,
    };
    let private = tempfile::tempdir().unwrap();
    let mut events = Vec::new();
    let done = agent::lifecycle::run(&request, &options(private.path()), |event| {
        events.push(event)
    })
    .await
    .map_err(|error| error.to_string());
    (done, output_lines(&events))
}

async fn act(
    stack: &TestStack,
    project_id: shared::ProjectId,
    action: shared::runtime::LifecycleAction,
    service: Option<&str>,
) -> Result<String, String> {
    act_seen(stack, project_id, action, service).await.0
}

/// `docker stack rm` refuses to remove a network a task is still attached to (a replaced task
/// still stopping; here a container attached by hand for 15 s) and leaves it: Down
/// removes it once that task is gone, and succeeds.
#[tokio::test]
async fn down_removes_a_network_that_was_still_in_use_when_the_services_went() {
    use shared::runtime::LifecycleAction::Down;
    let _swarm = SwarmMode::enter();
    let image = test_image().await;
    let stack = TestStack::new(&web_stack(image));
    let private = tempfile::tempdir().unwrap();
    let project_id = shared::ProjectId(uuid::Uuid::new_v4());
    let secrets = [greeting("hello")];
    let request = swarm_request(&stack, &secrets, SecretsAs::Environment, Some(project_id));
    deploy::deploy(&request, &options(private.path()), |_| {})
        .await
        .expect("deployed");
    let network = format!("{}_mesh", stack.name);
    run_ok(CommandSpec::new(
        "docker",
        [
            "run",
            "-d",
            "--rm",
            "--network",
            network.as_str(),
            image,
            "sleep",
            "15",
        ],
    ))
    .await
    .expect("a container attached to the stack's network");

    let (done, lines) = act_seen(&stack, project_id, Down, None).await;
    assert!(done.is_ok(), "{done:?}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("still in use by a task")),
        "the network was in use when the services went: {lines:#?}"
    );
    let filter = format!("name={network}");
    let left = sorted_lines(&["network", "ls", "-q", "--filter", filter.as_str()]).await;
    assert_eq!(left, Vec::<String>::new(), "the stack's network is gone");
}

/// Stop, start, restart (one service) and down on a stack: stop scales to zero and start
/// brings back the count it had; restart replaces only that service's tasks, start-first;
/// down leaves no service, container, Swarm secret or volume of the stack.
#[tokio::test]
async fn a_stack_is_stopped_started_restarted_and_taken_down() {
    use shared::runtime::LifecycleAction::{Down, Restart, Start, Stop};
    let _swarm = SwarmMode::enter();
    let image = test_image().await;
    let worker = format!(
        "  worker:\n    image: {image}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; echo worker-says-hello; sleep 600 & wait\"]\n    volumes: [data:/data]\nvolumes:\n  data: {{}}\nnetworks:\n  mesh:"
    );
    let compose = web_stack(image).replacen("networks:\n  mesh:", &worker, 1);
    let stack = TestStack::new(&compose);
    let private = tempfile::tempdir().unwrap();
    let project_id = shared::ProjectId(uuid::Uuid::new_v4());
    let secrets = [greeting("hello")];
    let request = swarm_request(&stack, &secrets, SecretsAs::SwarmSecrets, Some(project_id));
    deploy::deploy(&request, &options(private.path()), |_| {})
        .await
        .expect("deployed");
    let name = stack.name.as_str();
    let running = [format!("{name}_web 2/2"), format!("{name}_worker 1/1")];
    assert_eq!(replica_counts(&stack).await, running);

    // Another project's id: nothing is done.
    let other = shared::ProjectId(uuid::Uuid::new_v4());
    let refused = act(&stack, other, Stop, None).await.unwrap_err();
    assert!(refused.contains("another Stagely project"), "{refused}");
    assert_eq!(replica_counts(&stack).await, running);
    let missing = act(&stack, project_id, Restart, Some("nope"))
        .await
        .unwrap_err();
    assert!(missing.contains("no service nope"), "{missing}");

    act(&stack, project_id, Stop, None).await.unwrap();
    assert_eq!(
        replica_counts(&stack).await,
        [format!("{name}_web 0/0"), format!("{name}_worker 0/0")]
    );
    act(&stack, project_id, Start, None).await.unwrap();
    assert_eq!(replica_counts(&stack).await, running);
    assert_eq!(served_by_every_task(&stack).await, ["hello"; 2]);

    let web_before = running_tasks(&stack, "web").await;
    let worker_before = running_tasks(&stack, "worker").await;
    act(&stack, project_id, Restart, Some("web")).await.unwrap();
    let web_after = running_tasks(&stack, "web").await;
    assert_eq!(web_after.len(), 2, "{web_after:?}");
    assert!(
        web_after.iter().all(|task| !web_before.contains(task)),
        "every web task was replaced: {web_before:?} -> {web_after:?}"
    );
    assert_eq!(running_tasks(&stack, "worker").await, worker_before);

    // The dashboard's container logs: the service's tasks, read through the manager.
    let (out, mut batches) = tokio::sync::mpsc::channel(16);
    let request = stack_logs(&stack, "worker", project_id);
    let streaming = agent::logs::stream(
        request,
        Compose::V2,
        agent::runner::Redactor::default(),
        out,
    );
    let line = tokio::select! {
        () = streaming => panic!("the log stream ended"),
        line = async {
            loop {
                match batches.recv().await {
                    Some(shared::AgentToServer::Log(batch)) => {
                        if let Some(message) = batch.messages.into_iter().next() {
                            return message;
                        }
                    }
                    Some(_) => {}
                    None => panic!("the log stream closed its channel"),
                }
            }
        } => line,
        () = tokio::time::sleep(Duration::from_secs(30)) => panic!("no log line in 30 s"),
    };
    assert_eq!(line.line, "worker-says-hello", "{line:?}");
    assert_eq!(line.service.as_str(), "worker");
    assert!(line.timestamp.is_some(), "{line:?}");

    let done = act(&stack, project_id, Down, None).await.unwrap();
    assert!(done.contains("took the project down"), "{done}");
    assert_eq!(replica_counts(&stack).await, Vec::<String>::new());
    let label = format!("label=com.docker.stack.namespace={name}");
    for listing in [
        ["ps", "-a", "-q", "--filter", label.as_str()],
        ["volume", "ls", "-q", "--filter", label.as_str()],
        [
            "secret",
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.stagely.project={name}"),
        ],
    ] {
        let left = run_ok(CommandSpec::new("docker", listing)).await.unwrap();
        assert_eq!(left.trim(), "", "left after down: docker {listing:?}");
    }
    // Down again: nothing there, nothing fails.
    act(&stack, project_id, Down, None).await.unwrap();
}

/// The benchmark of `scripts/bench-swarm-rollout.sh`: changed-secret deploys of a two-replica
/// stack, one after another, while the client asks every 50 ms, until it has asked at least
/// `STAGELY_BENCH_REQUESTS` times (default 200); prints how many of its requests failed.
#[tokio::test]
#[ignore = "a benchmark: scripts/bench-swarm-rollout.sh"]
async fn bench_requests_failed_during_changed_secret_deploys() {
    let wanted: usize = std::env::var("STAGELY_BENCH_REQUESTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200);
    let _swarm = SwarmMode::enter();
    let image = test_image().await;
    let stack = TestStack::new(&web_stack(image));
    let private = tempfile::tempdir().unwrap();
    let (first, _) =
        deploy_stack(&stack, &private, &[greeting("v0")], SecretsAs::Environment).await;
    first.expect("the first deploy works");
    let client = Client::start(&stack, image).await;
    let mut deploys = 0;
    let mut asked = 0;
    while asked < wanted {
        deploys += 1;
        let value = format!("v{deploys}");
        let (result, _) = deploy_stack(
            &stack,
            &private,
            &[greeting(&value)],
            SecretsAs::Environment,
        )
        .await;
        result.expect("the deploy works");
        let logs = run_ok(CommandSpec::new(
            "docker",
            ["logs", client.container.name.as_str()],
        ))
        .await
        .unwrap();
        asked = logs.lines().filter(|line| !line.is_empty()).count();
    }
    let (pages, failures) = client.stop().await;
    println!(
        "requests failed during a changed-secret deploy: {} of {} ({deploys} swarm deploys, 2 replicas, start-first)",
        failures.len(),
        pages.len() + failures.len()
    );
}

/// The live service state of a stack: every task container carries its service's count, as
/// the Services panel shows it ("2/2 running"); and the node list names this node as the
/// Swarm's leading manager, as the Servers page shows it.
#[tokio::test]
async fn the_live_state_of_a_stack_counts_its_replicas_and_the_nodes_name_this_manager() {
    let _swarm = SwarmMode::enter();
    let nodes = agent::swarm::nodes(&agent::runner::Redactor::default())
        .await
        .expect("a manager lists its nodes");
    let this = nodes
        .iter()
        .find(|node| node.this_node)
        .unwrap_or_else(|| panic!("this node is listed: {nodes:?}"));
    assert_eq!(this.role, shared::target::NodeRole::Manager);
    assert!(this.leader, "{this:?}");
    assert_eq!(
        (this.availability.as_str(), this.state.as_str()),
        ("active", "ready")
    );
    assert_eq!(this.hostname, agent::system::hostname());

    let image = test_image().await;
    let stack = TestStack::new(&web_stack(image));
    let private = tempfile::tempdir().unwrap();
    let project = shared::ProjectId(uuid::Uuid::new_v4());
    let secrets = [greeting("hello")];
    let request = swarm_request(&stack, &secrets, SecretsAs::Environment, Some(project));
    deploy::deploy(&request, &options(private.path()), |_| {})
        .await
        .expect("the deploy works");

    let pending = agent::states::Pending {
        full: false,
        projects: [project].into(),
    };
    let states = agent::states::read(&pending, &agent::runner::Redactor::default())
        .await
        .expect("the engine answers");
    let web = &states[&project];
    assert_eq!(web.len(), 2, "{web:#?}");
    for task in web {
        assert_eq!(task.service.as_str(), "web");
        let replicas = task
            .replicas
            .as_ref()
            .expect("a task carries its service's count");
        assert_eq!(replicas.label(), "2/2 running", "{replicas:?}");
    }
}
