//! The job executor as the link drives it: server messages in, typed events out.

use crate::helpers::{TestProject, IDLE_COMMAND};
use agent::deploy::DeployOptions;
use agent::jobs::Executor;
use agent::system::Compose;
use shared::protocol::{JobEvent, JobUpdate, StartLogs, StopLogs};
use shared::{
    AgentToServer, DeployPayload, EnvKey, JobId, Secret, SecretScope, SecretValue, ServerToAgent,
};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

fn executor(private: &std::path::Path) -> (Executor, mpsc::Receiver<AgentToServer>) {
    executor_with_ledger(private, None)
}

fn executor_with_ledger(
    private: &std::path::Path,
    ledger: Option<std::path::PathBuf>,
) -> (Executor, mpsc::Receiver<AgentToServer>) {
    Executor::new(
        DeployOptions {
            compose: Compose::V2,
            allowed_roots: Vec::new(),
            private_dir: private.to_path_buf(),
            up_timeout: Duration::from_secs(120),
            health_timeout: Duration::from_secs(30),
            settle: Duration::from_millis(1500),
            git_max_bytes: agent::git::DEFAULT_MAX_BYTES,
        },
        ledger,
    )
}

async fn next_update(events: &mut mpsc::Receiver<AgentToServer>) -> JobUpdate {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .expect("no event within 60 s")
            .expect("the executor is gone");
        if let AgentToServer::JobUpdate(update) = event {
            return update;
        }
    }
}

#[tokio::test]
async fn a_job_sent_again_is_acknowledged_but_never_run_twice() {
    let yaml = format!("services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n");
    let project = TestProject::new(Compose::V2, &yaml).await;
    let private = tempfile::tempdir().unwrap();
    let (executor, mut events) = executor(private.path());
    let job = DeployPayload {
        job_id: JobId(Uuid::new_v4()),
        project: project.project_name(),
        directory: project.dir.path().display().to_string(),
        compose_file: None,
        secrets: vec![Secret {
            key: EnvKey::parse("TOKEN").unwrap(),
            value: SecretValue::new("abcdef"),
            scope: SecretScope::Global,
        }],
        project_id: None,
        pinned_images: Vec::new(),
        source: None,
        pull_policy: Default::default(),
        registry_credentials: Vec::new(),
        target: Default::default(),
        secrets_as: Default::default(),
    };

    // Sent, then re-sent while it runs (as after a reconnect).
    executor.handle(ServerToAgent::Deploy(job.clone()));
    executor.handle(ServerToAgent::Deploy(job.clone()));
    let mut received = 0;
    let mut ups = 0;
    let finished = loop {
        let update = next_update(&mut events).await;
        assert_eq!(update.job_id, job.job_id);
        match update.event {
            JobEvent::Received => received += 1,
            JobEvent::Step { name } if name == "up" => ups += 1,
            JobEvent::Finished {
                success, message, ..
            } => break (success, message),
            _ => {}
        }
    };
    assert!(finished.0, "{}", finished.1);
    assert_eq!((received, ups), (2, 1));

    // Sent once more after it finished: the stored result is repeated, nothing runs.
    let container = project.container_id("web").await;
    executor.handle(ServerToAgent::Deploy(job.clone()));
    assert_eq!(next_update(&mut events).await.event, JobEvent::Received);
    assert!(matches!(
        next_update(&mut events).await.event,
        JobEvent::Finished { success: true, .. }
    ));
    assert_eq!(project.container_id("web").await, container);
}

#[tokio::test]
async fn the_job_ledger_survives_an_agent_restart() {
    let yaml = format!("services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n");
    let project = TestProject::new(Compose::V2, &yaml).await;
    let private = tempfile::tempdir().unwrap();
    let ledger = private.path().join("jobs.json");
    let job = DeployPayload {
        job_id: JobId(Uuid::new_v4()),
        project: project.project_name(),
        directory: project.dir.path().display().to_string(),
        compose_file: None,
        secrets: Vec::new(),
        project_id: None,
        pinned_images: Vec::new(),
        source: None,
        pull_policy: Default::default(),
        registry_credentials: Vec::new(),
        target: Default::default(),
        secrets_as: Default::default(),
    };
    {
        let (executor, mut events) = executor_with_ledger(private.path(), Some(ledger.clone()));
        executor.handle(ServerToAgent::Deploy(job.clone()));
        while !matches!(
            next_update(&mut events).await.event,
            JobEvent::Finished { .. }
        ) {}
    }
    let container = project.container_id("web").await;

    // A new agent process (a new executor over the same ledger) gets the job again.
    let (executor, mut events) = executor_with_ledger(private.path(), Some(ledger));
    executor.handle(ServerToAgent::Deploy(job));
    assert_eq!(next_update(&mut events).await.event, JobEvent::Received);
    assert!(matches!(
        next_update(&mut events).await.event,
        JobEvent::Finished { success: true, .. }
    ));
    assert_eq!(
        project.container_id("web").await,
        container,
        "the job ran a second time"
    );
}

#[tokio::test]
async fn logs_stream_redacted_in_batches_and_stopping_leaves_no_process() {
    let yaml = "services:\n  web:\n    image: {image}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do echo tick pw=hunter2hunter2; sleep 0.2; done\"]\n";
    let project = TestProject::new(Compose::V2, yaml).await;
    let up = project.command(&["up", "-d"]);
    crate::helpers::run_ok(up).await.unwrap();
    let private = tempfile::tempdir().unwrap();
    let (executor, mut events) = executor(private.path());
    let stream_id = JobId(Uuid::new_v4());
    executor.handle(ServerToAgent::StartLogs(StartLogs {
        stream_id,
        project: project.project_name(),
        directory: project.dir.path().display().to_string(),
        compose_file: None,
        service: None,
        tail: 5,
        redact: vec![SecretValue::new("hunter2hunter2")],
        project_id: None,
        target: Default::default(),
    }));

    let mut lines = Vec::new();
    while lines.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("no log batch within 20 s")
            .unwrap();
        if let AgentToServer::Log(batch) = event {
            assert_eq!(batch.stream_id, stream_id);
            lines.extend(batch.messages);
        }
    }
    for line in &lines {
        assert_eq!(line.service.as_str(), "web");
        assert_eq!(line.line, "tick pw=***", "{line:?}");
        assert!(line.timestamp.is_some(), "{line:?}");
    }

    executor.handle(ServerToAgent::StopLogs(StopLogs { stream_id }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !compose_logs_processes(&project.name).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running: {:?}",
            compose_logs_processes(&project.name)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Command lines of running `compose … logs` processes for this project.
fn compose_logs_processes(project: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(project) && cmdline.contains(" logs ") {
            found.push(cmdline);
        }
    }
    found
}
