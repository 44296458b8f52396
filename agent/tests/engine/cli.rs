//! `stagely-agent render` and `stagely-agent deploy`, run as a person would.

use crate::helpers::{leftovers, TestProject, IDLE_COMMAND};
use agent::system::Compose;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const AGENT: &str = env!("CARGO_BIN_EXE_stagely-agent");

fn write_secrets(dir: &Path, json: &str) -> std::path::PathBuf {
    let path = dir.join("secrets.json");
    std::fs::write(&path, json).unwrap();
    path
}

fn agent(args: &[&str], state_dir: &Path) -> Output {
    Command::new(AGENT)
        .args(args)
        .env("STAGELY_STATE_DIR", state_dir)
        .output()
        .unwrap()
}

#[tokio::test]
async fn render_prints_the_override_masked_unless_asked_for_values() {
    let yaml = format!("services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n  db:\n    image: {{image}}\n");
    let project = TestProject::new(Compose::V2, &yaml).await;
    let work = tempfile::tempdir().unwrap();
    let secrets = write_secrets(
        work.path(),
        r#"[{"key":"DB_PASSWORD","value":"pa$$word","scope":"global"},
            {"key":"PORT","value":"8080","scope":{"service":"web"}}]"#,
    );
    let dir = project.dir.path().to_str().unwrap();
    let secrets = secrets.to_str().unwrap();

    let masked = agent(&["render", "--dir", dir, "--secrets", secrets], work.path());
    assert!(
        masked.status.success(),
        "{}",
        String::from_utf8_lossy(&masked.stderr)
    );
    let masked = String::from_utf8(masked.stdout).unwrap();
    assert!(masked.contains("DB_PASSWORD: \"***\""), "{masked}");
    assert!(!masked.contains("pa$$"), "{masked}");

    let shown = agent(
        &[
            "render",
            "--dir",
            dir,
            "--secrets",
            secrets,
            "--show-values",
        ],
        work.path(),
    );
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(
        shown.contains("DB_PASSWORD: \"pa$$$$word\""),
        "`$` is escaped for Compose: {shown}"
    );
    assert!(shown.contains("PORT: \"8080\""), "{shown}");
}

#[tokio::test]
async fn render_piped_into_compose_config_shows_the_labels_and_values_a_deploy_gives() {
    // As the README shows it: `render --show-values | docker compose -f compose.yaml -f - config`.
    let yaml = format!(
        "services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n    labels:\n      - com.example.team=shop\n  db:\n    image: {{image}}\n"
    );
    let project = TestProject::new(Compose::V2, &yaml).await;
    let work = tempfile::tempdir().unwrap();
    let secrets = write_secrets(
        work.path(),
        r#"[{"key":"DB_PASSWORD","value":"pa$$word","scope":"global"}]"#,
    );
    let dir = project.dir.path().to_str().unwrap();
    let rendered = agent(
        &[
            "render",
            "--dir",
            dir,
            "--secrets",
            secrets.to_str().unwrap(),
            "--show-values",
        ],
        work.path(),
    );
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );

    let mut compose = Command::new("docker")
        .args(["compose", "-f", &format!("{dir}/compose.yaml"), "-f", "-"])
        .args(["config", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut compose.stdin.take().unwrap(), &rendered.stdout).unwrap();
    let config = compose.wait_with_output().unwrap();
    assert!(
        config.status.success(),
        "{}",
        String::from_utf8_lossy(&config.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    let name = config["name"].as_str().unwrap();
    for service in ["web", "db"] {
        let service = &config["services"][service];
        assert_eq!(
            service["labels"]["dev.stagely.project"], name,
            "every service is labelled with the project Compose runs: {config}"
        );
        // `config` escapes its output for Compose again: `$$` there is one `$`.
        assert_eq!(
            service["environment"]["DB_PASSWORD"], "pa$$$$word",
            "{config}"
        );
    }
    assert_eq!(
        config["services"]["web"]["labels"]["com.example.team"], "shop",
        "the project's own labels stay"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_a_non_zero_exit() {
    let yaml = format!("services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n");
    let project = TestProject::new(Compose::V2, &yaml).await;
    let work = tempfile::tempdir().unwrap();
    let dir = project.dir.path().to_str().unwrap();
    let cases = [
        (
            r#"[{"key":"PORT","value":"1","scope":{"service":"api"}}]"#,
            "service api",
        ),
        (
            r#"[{"key":"9LIVES","value":"1","scope":"global"}]"#,
            "environment variable name",
        ),
        (r#"{"not":"a list"}"#, "is not a list of secrets"),
    ];
    for (json, expected) in cases {
        let secrets = write_secrets(work.path(), json);
        let output = agent(
            &[
                "deploy",
                "--dir",
                dir,
                "--secrets",
                secrets.to_str().unwrap(),
            ],
            work.path(),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{json} was accepted");
        assert!(stderr.contains(expected), "{json}: {stderr}");
    }
    assert!(
        project.container_states().await.is_empty(),
        "something ran on bad input"
    );
}

#[tokio::test]
async fn deploy_runs_the_project_and_reports_failure_with_a_non_zero_exit() {
    let yaml = format!("services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n");
    let project = TestProject::new(Compose::V2, &yaml).await;
    let work = tempfile::tempdir().unwrap();
    let secrets = write_secrets(
        work.path(),
        r#"[{"key":"GREETING","value":"hello","scope":"global"}]"#,
    );
    let args = [
        "deploy",
        "--dir",
        project.dir.path().to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
        "--project",
        project.name.as_str(),
    ];
    let output = agent(&args, work.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("==> up") && stderr.contains("==> health"),
        "{stderr}"
    );
    assert!(project
        .container_env("web")
        .await
        .contains(&"GREETING=hello".to_string()));

    let failing =
        "services:\n  web:\n    image: {image}\n    command: [\"sh\", \"-c\", \"exit 4\"]\n";
    let broken = TestProject::new(Compose::V2, failing).await;
    let args = [
        "deploy",
        "--dir",
        broken.dir.path().to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
        "--project",
        broken.name.as_str(),
    ];
    let output = agent(&args, work.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("exited with code 4"));
}

#[tokio::test]
async fn an_override_left_by_a_killed_run_is_swept_by_the_next_one() {
    // A healthcheck that never passes keeps the first deploy waiting, override file in place.
    let slow = format!(
        "services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 60s\n      start_period: 60s\n"
    );
    let project = TestProject::new(Compose::V2, &slow).await;
    let state = tempfile::tempdir().unwrap();
    let secrets = write_secrets(
        state.path(),
        r#"[{"key":"TOKEN","value":"abcdef","scope":"global"}]"#,
    );
    let mut child = Command::new(AGENT)
        .args(["deploy", "--dir", project.dir.path().to_str().unwrap()])
        .args([
            "--secrets",
            secrets.to_str().unwrap(),
            "--project",
            project.name.as_str(),
        ])
        .env("STAGELY_STATE_DIR", state.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let private = state.path().join("private");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while leftovers(&private).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the deploy never wrote its override"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert_eq!(
        leftovers(&private).len(),
        1,
        "kill -9 leaves the file behind"
    );

    let quick = format!("services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n");
    let other = TestProject::new(Compose::V2, &quick).await;
    let args = [
        "deploy",
        "--dir",
        other.dir.path().to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
        "--project",
        other.name.as_str(),
    ];
    let output = agent(&args, state.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        leftovers(&private),
        Vec::<String>::new(),
        "the leftover was not swept"
    );
}

#[tokio::test]
async fn a_compose_file_cannot_read_the_agents_own_environment() {
    // A variable listed without a value takes it from Compose's environment: the agent's token
    // (or anything else the agent was started with) must not be what Compose finds there.
    let yaml = format!(
        "services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n    environment:\n      - STAGELY_AGENT_TOKEN\n      - SOME_OTHER\n      - GREETING\n"
    );
    let project = TestProject::new(Compose::V2, &yaml).await;
    let work = tempfile::tempdir().unwrap();
    let secrets = write_secrets(
        work.path(),
        r#"[{"key":"GREETING","value":"hello","scope":"global"}]"#,
    );
    let output = Command::new(AGENT)
        .args(["deploy", "--dir", project.dir.path().to_str().unwrap()])
        .args([
            "--secrets",
            secrets.to_str().unwrap(),
            "--project",
            project.name.as_str(),
        ])
        .env("STAGELY_STATE_DIR", work.path())
        .env("STAGELY_AGENT_TOKEN", "agent-token-that-must-stay-home")
        .env("SOME_OTHER", "another-value-of-the-agent")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let env = project.container_env("web").await;
    assert!(
        env.contains(&"GREETING=hello".to_string()),
        "the project's own secret still arrives: {env:?}"
    );
    for leaked in [
        "agent-token-that-must-stay-home",
        "another-value-of-the-agent",
    ] {
        assert!(
            !env.iter().any(|entry| entry.contains(leaked)),
            "the container got the agent's {leaked:?}: {env:?}"
        );
    }
}
