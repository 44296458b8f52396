//! Start-first rollouts of opted-in compose services against the real engine: a client on the
//! project's network asks the service by its DNS name every 50 ms through a changed-secret
//! deploy and counts what failed.

use crate::helpers::{run_ok, Detached, TestProject};
use agent::deploy::{self, DeployError, DeployOptions, DeployRequest};
use agent::rollout::RolloutError;
use agent::runner::CommandSpec;
use agent::system::Compose;
use shared::protocol::JobEvent;
use shared::{EnvKey, Secret, SecretScope, SecretValue};
use std::time::Duration;
use tempfile::TempDir;

/// An HTTP service that serves its `GREETING` secret, with a healthcheck that fails when the
/// greeting starts with `broken` (a bad new version, by secret alone). `/cgi-bin/slow` serves
/// it too, but a version whose greeting starts with `old` never answers there (it creates
/// `/www/in-flight` and waits an hour: a request in flight across a rollout). httpd ignores
/// SIGTERM (it is PID 1 with no handler): it is killed after its 1 s grace period.
fn web_service(labels: &str) -> String {
    format!(
        r#"services:
  web:
    image: {{image}}
    command: ["sh", "-c", "mkdir -p /www/cgi-bin && echo \"$$GREETING\" > /www/index.html && printf '%s\\n' '#!/bin/sh' 'case $$GREETING in old*) touch /www/in-flight; sleep 3600;; esac' 'printf \"Content-Type: text/plain\\r\\n\\r\\n\"' 'cat /www/index.html' > /www/cgi-bin/slow && chmod +x /www/cgi-bin/slow && exec httpd -f -p 80 -h /www"]
    stop_grace_period: 1s
{labels}    healthcheck:
      test: ["CMD", "sh", "-c", "case \"$$GREETING\" in broken*) exit 1;; esac; wget -qO- http://127.0.0.1/ >/dev/null"]
      interval: 1s
      timeout: 1s
      retries: 2
"#
    )
}

const START_FIRST_MAP: &str = "    labels:\n      dev.stagely.rollout: start-first\n";
const START_FIRST_LIST: &str = "    labels:\n      - dev.stagely.rollout=start-first\n";

fn greeting(value: &str) -> Vec<Secret> {
    vec![Secret {
        key: EnvKey::parse("GREETING").unwrap(),
        value: SecretValue::new(value),
        scope: SecretScope::Global,
    }]
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

async fn run_deploy(
    project: &TestProject,
    private: &TempDir,
    secrets: &[Secret],
) -> (Result<deploy::Deployed, DeployError>, Vec<String>) {
    let name = project.project_name();
    let request = DeployRequest {
        project: &name,
        directory: project.dir.path(),
        compose_file: None,
        secrets,
        project_id: None,
        pinned_images: &[],
        pull_policy: Default::default(),
        registry_credentials: &[],
        target: Default::default(),
        secrets_as: Default::default(),
    };
    let options = DeployOptions {
        compose: Compose::V2,
        allowed_roots: Vec::new(),
        private_dir: private.path().to_path_buf(),
        up_timeout: Duration::from_secs(120),
        health_timeout: Duration::from_secs(30),
        settle: Duration::from_millis(500),
        git_max_bytes: agent::git::DEFAULT_MAX_BYTES,
    };
    let mut lines = Vec::new();
    let result = deploy::deploy(&request, &options, |event| match event {
        JobEvent::Output { line } => {
            // When each line came, shown only when a test fails: to place a failed request.
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            eprintln!("{:.3} {line}", at.as_secs_f64());
            lines.push(line)
        }
        JobEvent::Step { name } => lines.push(format!("step {}", name.as_str())),
        _ => {}
    })
    .await;
    (result, lines)
}

/// A container on the project's network that asks `url` (`http://web/`, the service by its
/// name, unless through a [`Proxy`]) every 50 ms and prints `ok <body>`, or `fail <status>`
/// (143: no answer within the timeout, 2 s for [`Client::start`]; 1: refused, no such name or an error
/// status); removed when dropped.
struct Client {
    container: Detached,
}

impl Client {
    async fn start(project: &TestProject) -> Self {
        Self::waiting(project, "http://web/", 2).await
    }

    async fn waiting(project: &TestProject, url: &str, timeout_secs: u32) -> Self {
        let network = format!("{}_default", project.name);
        let image = agent::testing::test_image().await;
        let script = format!(
            "while true; do \
               if body=$(timeout {timeout_secs} wget -qO- {url} 2>/dev/null); \
               then echo \"ok $body\"; else echo \"fail $?\"; fi; \
               sleep 0.05; \
             done"
        );
        let name = unique("stagely-test-client");
        let container = Detached::run(name, &network, &[image, "sh", "-c", &script]).await;
        Self { container }
    }

    async fn lines(&self) -> Vec<String> {
        let logs = CommandSpec::new("docker", ["logs", self.container.name.as_str()]);
        run_ok(logs)
            .await
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits (polling its output, 30 s at most) until the client has been answered `body`.
    async fn wait_for(&self, body: &str) {
        let expected = format!("ok {body}");
        for _ in 0..300 {
            if self.lines().await.contains(&expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the client never got {body:?}: {:?}", self.lines().await);
    }

    /// Stops the client and returns everything it printed.
    async fn stop(&self) -> Vec<String> {
        let name = self.container.name.as_str();
        run_ok(CommandSpec::new("docker", ["stop", "-t", "0", name]))
            .await
            .unwrap();
        self.lines().await
    }
}

/// HAProxy in a container on the project's network, in front of `web` with the configuration
/// shipped for start-first services (`deploy/haproxy-rollout.cfg`); clients ask it as
/// `http://proxy/`. Removed when dropped.
struct Proxy {
    _container: Detached,
}

impl Proxy {
    async fn start(project: &TestProject) -> Self {
        let network = format!("{}_default", project.name);
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/haproxy-rollout.cfg");
        let mount = format!("{config}:/haproxy.cfg:ro");
        let image = agent::testing::proxy_image().await;
        let rest = [
            "--network-alias",
            "proxy",
            "-v",
            &mount,
            image,
            "-f",
            "/haproxy.cfg",
        ];
        let container = Detached::run(unique("stagely-test-proxy"), &network, &rest).await;
        Self {
            _container: container,
        }
    }
}

/// Waits (30 s at most) until the container is working on a request to `/cgi-bin/slow`.
async fn in_flight(container: &str) {
    for _ in 0..300 {
        let marker = CommandSpec::new(
            "docker",
            ["exec", container, "test", "-e", "/www/in-flight"],
        );
        if run_ok(marker).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no request reached {container}'s /cgi-bin/slow");
}

/// The ids of the project's `web` containers.
async fn web_containers(project: &TestProject) -> Vec<String> {
    let project = format!("label=com.docker.compose.project={}", project.name);
    let list = CommandSpec::new(
        "docker",
        [
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            project.as_str(),
            "--filter",
            "label=com.docker.compose.service=web",
        ],
    );
    let ids = run_ok(list).await.unwrap();
    ids.split_whitespace().map(str::to_owned).collect()
}

fn no_secret_in(lines: &[String], secrets: &[&str]) {
    for line in lines {
        for secret in secrets {
            assert!(!line.contains(secret), "a secret in the deploy log: {line}");
        }
    }
}

async fn changed_secret_rolls_out(labels: &str) {
    let project = TestProject::new(Compose::V2, &web_service(labels)).await;
    let private = tempfile::tempdir().unwrap();
    let (old, new) = (unique("old-greeting"), unique("new-greeting"));
    let (first, _) = run_deploy(&project, &private, &greeting(&old)).await;
    first.unwrap();
    let old_container = web_containers(&project).await;
    let client = Client::start(&project).await;
    let _proxy = Proxy::start(&project).await;
    // Over the proxy's own 30 s server timeout: a request left hanging shows as its error
    // answer, never as a client that gave up while a busy engine was slow to answer a look-up.
    let proxied = Client::waiting(&project, "http://proxy/", 40).await;
    client.wait_for(&old).await;
    proxied.wait_for(&old).await;
    // A request the old container is still working on when the rollout retires it.
    let slow = Client::waiting(&project, "http://proxy/cgi-bin/slow", 60).await;
    in_flight(&old_container[0]).await;

    let (result, log) = run_deploy(&project, &private, &greeting(&new)).await;
    result.unwrap_or_else(|error| panic!("{error}\n{log:#?}"));
    client.wait_for(&new).await;
    proxied.wait_for(&new).await;
    let seen = client.stop().await;
    let seen_through_proxy = proxied.stop().await;

    // The old container never answers it, but was stopped where it stood, which closed the
    // request unanswered: the proxy sent it again to the new container, which answered.
    // (Taken off the network first, the old container would have left it waiting.)
    slow.wait_for(&new).await;
    let seen_slowly = slow.stop().await;
    assert_eq!(
        seen_slowly.first().map(String::as_str),
        Some(format!("ok {new}").as_str()),
        "the request in flight across the rollout: {seen_slowly:?}"
    );

    // Through a proxy that tries a failed connection again on another container, as one in
    // front of a service does (once it has found the service): no request fails. The old
    // container stops on its own network, so a request the proxy sent it is answered, refused
    // or cut by a reset, never left unanswered, and the proxy sends a refused or cut GET again,
    // to the new container.
    let found = seen_through_proxy
        .iter()
        .position(|line| *line == format!("ok {old}"))
        .expect("the proxy answered");
    let failed: Vec<&String> = seen_through_proxy[found..]
        .iter()
        .filter(|line| line.starts_with("fail"))
        .collect();
    assert!(
        failed.is_empty(),
        "requests failed through the proxy: {seen_through_proxy:?}"
    );
    assert_eq!(
        seen_through_proxy.last().map(String::as_str),
        Some(format!("ok {new}").as_str())
    );

    // Asking the service directly (no retry), the old container answers until the new one
    // does: the name never goes missing, as it does when a container is recreated. What can
    // fail is a request to the old container as it stops (refused, or cut by its exit) or
    // just after (its address, looked up a moment before, leads nowhere), so after the new
    // one has answered; the last answer is the new one's.
    let first_new = seen.iter().position(|line| *line == format!("ok {new}"));
    let first_failed = seen.iter().position(|line| line.starts_with("fail"));
    assert!(
        first_failed.is_none_or(|failed| first_new.is_some_and(|new| failed > new)),
        "a request failed before the new container answered: {seen:?}"
    );
    assert_eq!(
        seen.iter().rev().find(|line| line.starts_with("ok")),
        Some(&format!("ok {new}")),
        "{seen:?}"
    );
    let now = web_containers(&project).await;
    assert_eq!(now.len(), 1, "one container is left: {now:?}");
    assert_ne!(now, old_container, "the old container was replaced");
    assert!(
        project
            .container_env("web")
            .await
            .contains(&format!("GREETING={new}")),
        "the remaining container has the new secret"
    );
    assert!(
        log.iter()
            .any(|line| line == "web: start-first 1/1 new container(s) healthy"),
        "progress in the deploy log: {log:#?}"
    );
    no_secret_in(&log, &[&old, &new]);

    // A deploy with nothing changed leaves the new container alone.
    let (again, log) = run_deploy(&project, &private, &greeting(&new)).await;
    again.unwrap();
    assert_eq!(web_containers(&project).await, now);
    assert!(
        !log.iter().any(|line| line.contains("start-first")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_changed_secret_rolls_out_start_first_without_a_failed_request() {
    changed_secret_rolls_out(START_FIRST_MAP).await;
}

#[tokio::test]
async fn the_rollout_label_may_be_written_as_a_list() {
    changed_secret_rolls_out(START_FIRST_LIST).await;
}

#[tokio::test]
async fn a_new_version_that_fails_its_healthcheck_is_removed_and_the_old_keeps_serving() {
    let project = TestProject::new(Compose::V2, &web_service(START_FIRST_MAP)).await;
    let private = tempfile::tempdir().unwrap();
    let (good, bad) = (unique("good-greeting"), unique("broken-greeting"));
    let (first, _) = run_deploy(&project, &private, &greeting(&good)).await;
    first.unwrap();
    let old_container = web_containers(&project).await;
    let client = Client::start(&project).await;
    client.wait_for(&good).await;

    let (result, log) = run_deploy(&project, &private, &greeting(&bad)).await;
    let error = match result {
        Err(DeployError::Rollout(error @ RolloutError::Failed { .. })) => error,
        other => panic!("expected a failed rollout: {other:?}\n{log:#?}"),
    };
    let message = error.to_string();
    assert!(
        message.contains("web: the start-first rollout failed"),
        "{message}"
    );
    assert!(message.contains("unhealthy"), "{message}");
    assert!(message.contains("the old ones keep serving"), "{message}");
    // The old container answers once more after the failure, then the client stops.
    let before = client.lines().await.len();
    for _ in 0..300 {
        if client.lines().await.len() > before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = client.stop().await;

    assert_eq!(
        web_containers(&project).await,
        old_container,
        "the new container was removed, the old one kept"
    );
    assert!(project
        .container_env("web")
        .await
        .contains(&format!("GREETING={good}")));
    // The new container never joined the service's name and the old one never left it.
    let failed = seen.iter().filter(|line| line.starts_with("fail")).count();
    assert_eq!(failed, 0, "requests failed: {seen:?}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some(format!("ok {good}").as_str())
    );
    assert!(
        !seen.iter().any(|line| line.contains(&bad)),
        "the new container was out of the service's name until healthy: {seen:?}"
    );
    no_secret_in(&log, &[&good, &bad]);
    assert!(
        !message.contains(&bad) && !message.contains(&good),
        "{message}"
    );
}

#[tokio::test]
async fn without_the_label_a_changed_service_is_recreated() {
    let project = TestProject::new(Compose::V2, &web_service("")).await;
    let private = tempfile::tempdir().unwrap();
    let (old, new) = (unique("old-greeting"), unique("new-greeting"));
    run_deploy(&project, &private, &greeting(&old))
        .await
        .0
        .unwrap();
    let old_container = web_containers(&project).await;
    let client = Client::start(&project).await;
    client.wait_for(&old).await;

    let (result, log) = run_deploy(&project, &private, &greeting(&new)).await;
    result.unwrap();
    client.wait_for(&new).await;
    client.stop().await;

    let now = web_containers(&project).await;
    assert_eq!(now.len(), 1);
    assert_ne!(now, old_container);
    assert!(
        log.iter().any(|line| line.contains("Recreate")),
        "compose recreated it: {log:#?}"
    );
    assert!(
        !log.iter().any(|line| line.contains("start-first")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn a_start_first_service_with_a_fixed_name_fails_the_deploy_before_anything_runs() {
    let container_name = unique("stagely-test-fixed");
    let labels = format!("{START_FIRST_MAP}    container_name: {container_name}\n");
    let project = TestProject::new(Compose::V2, &web_service(&labels)).await;
    let private = tempfile::tempdir().unwrap();

    let (result, _) = run_deploy(&project, &private, &greeting("hello")).await;
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains(&format!(
            "service web asks for a start-first rollout (dev.stagely.rollout: start-first) but it \
             has a fixed container_name ({container_name})"
        )),
        "{message}"
    );
    assert!(message.contains("Nothing was changed"), "{message}");
    assert_eq!(web_containers(&project).await, Vec::<String>::new());
}
