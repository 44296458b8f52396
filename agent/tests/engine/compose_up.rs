//! `docker compose up -d` through the agent's command runner, on both Compose generations.

use crate::helpers::TestProject;
use agent::runner::{self, OutputLine, Redactor};
use agent::system::{self, Compose};

/// A service that stops promptly on SIGTERM, like a well-behaved app.
const ONE_SERVICE: &str = r#"
services:
  web:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;

async fn up_runs_the_service_and_down_removes_it(compose: Compose) {
    let project = TestProject::new(compose.clone(), ONE_SERVICE).await;
    let mut lines = Vec::new();
    let up = project.command(&["up", "-d", "--remove-orphans"]);
    let output = runner::run(&up, &Redactor::default(), |line| lines.push(line))
        .await
        .unwrap();
    assert!(output.success(), "{}\n{}", output.stdout, output.stderr);
    // Compose reports progress on stderr; the runner hands it over line by line.
    assert!(
        lines.iter().any(|line| matches!(line, OutputLine::Stderr(text) | OutputLine::Stdout(text) if text.contains("web"))),
        "no progress line mentions the service: {lines:?}"
    );

    let states = project.container_states().await;
    assert_eq!(states.len(), 1, "{states:?}");
    assert!(states[0].0.contains("web"), "{states:?}");
    assert_eq!(states[0].1, "running", "{states:?}");

    let down = project.command(&["down", "-v", "--remove-orphans", "-t", "1"]);
    let output = runner::run(&down, &Redactor::default(), |_| {})
        .await
        .unwrap();
    assert!(output.success(), "{}", output.stderr);
    assert!(
        project.container_states().await.is_empty(),
        "containers left after down"
    );
}

#[tokio::test]
async fn compose_v2_up_through_the_runner_starts_the_container() {
    up_runs_the_service_and_down_removes_it(Compose::V2).await;
}

#[tokio::test]
async fn compose_v1_up_through_the_runner_starts_the_container() {
    up_runs_the_service_and_down_removes_it(Compose::V1).await;
}

#[tokio::test]
async fn the_agent_finds_docker_and_prefers_compose_v2() {
    let docker = system::docker_version().await.expect("docker answers");
    assert!(
        docker.chars().next().is_some_and(|c| c.is_ascii_digit()),
        "{docker}"
    );
    let (compose, version) = system::detect_compose()
        .await
        .expect("a compose is installed");
    assert_eq!(compose, Compose::V2);
    assert!(version.starts_with('2'), "{version}");
}
