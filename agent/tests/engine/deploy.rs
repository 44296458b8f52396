//! Deploys through the agent's deploy pipeline against the real engine, on Compose v2 and v1.

use crate::helpers::{leftovers, snapshot, TestProject, IDLE_COMMAND};
use agent::deploy::{self, DeployError, DeployOptions, DeployRequest};
use agent::system::Compose;
use shared::protocol::JobEvent;
use shared::{EnvKey, Secret, SecretScope, SecretValue, ServiceName};
use std::path::Path;
use std::time::Duration;
use tempfile::TempDir;

fn two_services() -> String {
    format!(
        "services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n  worker:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n"
    )
}

fn secret(key: &str, value: &str, service: Option<&str>) -> Secret {
    Secret {
        key: EnvKey::parse(key).unwrap(),
        value: SecretValue::new(value),
        scope: match service {
            Some(service) => SecretScope::Service(ServiceName::parse(service).unwrap()),
            None => SecretScope::Global,
        },
    }
}

fn options(compose: Compose, private_dir: &Path) -> DeployOptions {
    DeployOptions {
        compose,
        allowed_roots: Vec::new(),
        private_dir: private_dir.to_path_buf(),
        up_timeout: Duration::from_secs(120),
        health_timeout: Duration::from_secs(30),
        settle: Duration::from_millis(1500),
        git_max_bytes: agent::git::DEFAULT_MAX_BYTES,
    }
}

async fn run_deploy(
    project: &TestProject,
    private: &TempDir,
    secrets: &[Secret],
) -> (Result<deploy::Deployed, DeployError>, Vec<JobEvent>) {
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
    let mut events = Vec::new();
    let result = deploy::deploy(
        &request,
        &options(project.compose.clone(), private.path()),
        |event| events.push(event),
    )
    .await;
    (result, events)
}

async fn secrets_land_exactly_where_they_belong(compose: Compose) {
    let project = TestProject::new(compose, &two_services()).await;
    let private = tempfile::tempdir().unwrap();
    let before = snapshot(project.dir.path());
    // `$`, quotes and a backslash must reach the container byte for byte.
    let tricky = r#"s3cr3t-$HOME-"quoted"-\n"#;
    let secrets = [
        secret("DB_PASSWORD", tricky, None),
        secret("PORT", "8080", Some("web")),
        secret("DB_PASSWORD", "worker-only-pw", Some("worker")),
    ];

    let (result, events) = run_deploy(&project, &private, &secrets).await;
    result.unwrap();

    let web = project.container_env("web").await;
    assert!(web.contains(&format!("DB_PASSWORD={tricky}")), "{web:?}");
    assert!(web.contains(&"PORT=8080".to_string()), "{web:?}");
    let worker = project.container_env("worker").await;
    assert!(
        worker.contains(&"DB_PASSWORD=worker-only-pw".to_string()),
        "{worker:?}"
    );
    assert!(
        !worker.iter().any(|entry| entry.starts_with("PORT=")),
        "{worker:?}"
    );

    let steps: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            JobEvent::Step { name } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    // Under the `missing` policy there is no pull step: `up` pulls what is missing.
    assert_eq!(steps, ["parse", "render", "claim", "up", "health"]);
    assert!(
        events.iter().any(|e| matches!(e, JobEvent::Output { line } if line.contains("Started") || line.contains("Creating") || line.contains("Created"))),
        "compose's progress lines are streamed: {events:?}"
    );
    assert_eq!(
        snapshot(project.dir.path()),
        before,
        "the user's directory changed"
    );
    assert_eq!(
        leftovers(private.path()),
        Vec::<String>::new(),
        "override file left behind"
    );
}

#[tokio::test]
async fn v2_secrets_land_exactly_where_they_belong_and_nothing_is_left_behind() {
    secrets_land_exactly_where_they_belong(Compose::V2).await;
}

#[tokio::test]
async fn v1_secrets_land_exactly_where_they_belong_and_nothing_is_left_behind() {
    secrets_land_exactly_where_they_belong(Compose::V1).await;
}

/// The agent reads the engine's answers (`docker ps`, `docker inspect`) itself; masking secret
/// values there would corrupt them. `true`/`false` are in every container's inspected state
/// (`"Running":true`): with such a value as a secret, every deploy failed reading the health of
/// its containers, and a value inside a process id (`8080` in 18080) failed one deploy in many.
#[tokio::test]
async fn secret_values_found_inside_the_engines_answers_do_not_break_the_deploy() {
    let project = TestProject::new(Compose::V2, &two_services()).await;
    let private = tempfile::tempdir().unwrap();
    let secrets = [
        secret("FEATURE_ENABLED", "true", None),
        secret("DEBUG", "false", None),
    ];
    let (result, events) = run_deploy(&project, &private, &secrets).await;
    result.unwrap_or_else(|error| panic!("{error}: {events:?}"));
    let web = project.container_env("web").await;
    assert!(web.contains(&"FEATURE_ENABLED=true".to_string()), "{web:?}");
    for event in &events {
        if let JobEvent::Output { line } = event {
            assert!(
                !line.contains("true") && !line.contains("false"),
                "a secret value in the deploy log: {line}"
            );
        }
    }
}

async fn redeploys_converge_without_needless_restarts(compose: Compose) {
    let project = TestProject::new(compose, &two_services()).await;
    let private = tempfile::tempdir().unwrap();
    let mut secrets = vec![
        secret("TOKEN", "one", None),
        secret("PORT", "8080", Some("web")),
    ];
    run_deploy(&project, &private, &secrets).await.0.unwrap();
    let web_id = project.container_id("web").await;
    let worker_id = project.container_id("worker").await;
    let worker_started = project.started_at("worker").await;

    // Same input: not a single container is recreated.
    run_deploy(&project, &private, &secrets).await.0.unwrap();
    assert_eq!(project.container_id("web").await, web_id);
    assert_eq!(project.container_id("worker").await, worker_id);

    // A change scoped to web recreates web only; worker never stops.
    secrets[1] = secret("PORT", "9090", Some("web"));
    run_deploy(&project, &private, &secrets).await.0.unwrap();
    assert_ne!(
        project.container_id("web").await,
        web_id,
        "web kept its old env"
    );
    assert!(project
        .container_env("web")
        .await
        .contains(&"PORT=9090".to_string()));
    assert_eq!(project.container_id("worker").await, worker_id);
    assert_eq!(
        project.started_at("worker").await,
        worker_started,
        "worker was restarted"
    );
}

#[tokio::test]
async fn v2_redeploys_converge_without_needless_restarts() {
    redeploys_converge_without_needless_restarts(Compose::V2).await;
}

#[tokio::test]
async fn v1_redeploys_converge_without_needless_restarts() {
    redeploys_converge_without_needless_restarts(Compose::V1).await;
}

async fn a_crashing_service_fails_the_deploy_with_its_code_and_output(compose: Compose) {
    let yaml = "services:\n  api:\n    image: {image}\n    command: [\"sh\", \"-c\", \"echo connecting with $$API_KEY; echo boom >&2; exit 3\"]\n";
    let project = TestProject::new(compose, yaml).await;
    let private = tempfile::tempdir().unwrap();
    let secrets = [secret("API_KEY", "sk-live-0123456789", None)];

    let (result, _) = run_deploy(&project, &private, &secrets).await;
    let error = result.unwrap_err();
    assert_eq!(error.exit_code(), Some(3), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("service api exited with code 3"),
        "{message}"
    );
    assert!(
        message.contains("boom"),
        "the service's output is shown: {message}"
    );
    assert!(message.contains("connecting with ***"), "{message}");
    assert!(
        !message.contains("sk-live-0123456789"),
        "a secret leaked: {message}"
    );
    assert_eq!(
        leftovers(private.path()),
        Vec::<String>::new(),
        "override file left behind"
    );
}

#[tokio::test]
async fn v2_a_crashing_service_fails_the_deploy_with_its_code_and_output() {
    a_crashing_service_fails_the_deploy_with_its_code_and_output(Compose::V2).await;
}

#[tokio::test]
async fn v1_a_crashing_service_fails_the_deploy_with_its_code_and_output() {
    a_crashing_service_fails_the_deploy_with_its_code_and_output(Compose::V1).await;
}

#[tokio::test]
async fn a_secret_for_an_unknown_service_stops_the_deploy_before_anything_runs() {
    let project = TestProject::new(Compose::V2, &two_services()).await;
    let private = tempfile::tempdir().unwrap();
    let secrets = [secret("PORT", "1", Some("db"))];
    let (result, events) = run_deploy(&project, &private, &secrets).await;
    let message = result.unwrap_err().to_string();
    assert!(message.contains("service db"), "{message}");
    assert!(!events
        .iter()
        .any(|e| matches!(e, JobEvent::Step { name } if name == "up")));
    assert!(project.container_states().await.is_empty(), "something ran");
}

#[tokio::test]
async fn a_cancelled_deploy_leaves_no_override_file() {
    // A healthcheck that never passes keeps the deploy waiting until we cancel it.
    let yaml = format!(
        "services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 60s\n      start_period: 60s\n"
    );
    let project = TestProject::new(Compose::V2, &yaml).await;
    let private = tempfile::tempdir().unwrap();
    let secrets = [secret("TOKEN", "abcdef", None)];
    let deploying = run_deploy(&project, &private, &secrets);
    let cancelled = tokio::time::timeout(Duration::from_secs(8), deploying).await;
    assert!(
        cancelled.is_err(),
        "the deploy should still be waiting for health"
    );
    assert_eq!(
        leftovers(private.path()),
        Vec::<String>::new(),
        "override file left behind"
    );
}
