//! Per-tenant limits (issue 15, item 4): what one agent or one person can make the server hold.
//! A flooding agent is throttled (what is over its rate is dropped and counted where it would
//! have appeared) while another person's agent still reaches that person's tab; a line is kept
//! at most [`MAX_LINE_BYTES`] long; a project holds a bounded number of jobs in flight.

use crate::helpers::{
    hello, raw_agent, send_frame, spawn_app, spawn_app_with_env, wait_for_deployment, AppOptions,
    RawSocket, TestApp, TestDb,
};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use shared::api::{DashboardEvent, DashboardRequest, DeployAccepted, EventKind};
use shared::protocol::{
    JobEvent, JobUpdate, LogBatch, LogMessage, LogStream, StartLogs, PROTOCOL_VERSION,
};
use shared::{AgentToServer, JobId, ProjectId, ServerToAgent};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The server's longest kept line (`log_feeds::MAX_LINE_BYTES`, the agent's own line budget).
const MAX_LINE_BYTES: usize = shared::protocol::budget::LINE;
/// Generous bound for "eventually" (liveness, not speed).
const LIVENESS: Duration = Duration::from_secs(30);

/// A server that lets each agent send 16 KiB/s of logs, output and state reports after a 1 MiB
/// burst: slow enough that the refill while a flood is read stays small even on a loaded machine.
async fn throttled_app() -> TestApp {
    spawn_app_with_env(
        &TestDb::Sqlite,
        AppOptions::default(),
        &[
            ("STAGELY_AGENT_BYTES_PER_SEC", "16384"),
            ("STAGELY_AGENT_BURST_BYTES", "1048576"),
        ],
    )
    .await
}

async fn agent(app: &TestApp, token: &str) -> RawSocket {
    let mut socket = raw_agent(&app.stream_url(), token).await;
    assert!(matches!(
        hello(&mut socket, PROTOCOL_VERSION).await,
        ServerToAgent::Welcome(_)
    ));
    socket
}

async fn output(socket: &mut RawSocket, job_id: JobId, line: String) {
    let update = JobUpdate {
        job_id,
        event: JobEvent::Output { line },
    };
    send_frame(socket, &AgentToServer::JobUpdate(update)).await;
}

/// The tab starts watching `project`; returns once the server answered.
async fn watch(feed: &mut RawSocket, project_id: ProjectId) {
    let request = DashboardRequest::Watch {
        project_id,
        resume: None,
    };
    feed.send(Message::text(serde_json::to_string(&request).unwrap()))
        .await
        .unwrap();
    while !matches!(next(feed).await, DashboardEvent::Logs(_)) {}
}

async fn next(feed: &mut RawSocket) -> DashboardEvent {
    loop {
        let frame = tokio::time::timeout(LIVENESS, feed.next())
            .await
            .expect("no event on the feed")
            .expect("the feed closed")
            .unwrap();
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn a_flooding_agent_is_throttled_while_another_persons_agent_reaches_their_tab() {
    let app = throttled_app().await;
    let (alice, alice_api) = app.user("alice").await;
    let (alice_agent, alice_project) = alice_api.shop_project().await;
    let (mallory, mallory_api) = app.user("mallory").await;
    let (mallory_agent, mallory_project) = mallory_api.shop_project().await;
    let (alice_deployment, alice_job) = app.queue_deploy(alice_project.id, alice.id).await;
    let (mallory_deployment, mallory_job) = app.queue_deploy(mallory_project.id, mallory.id).await;
    let mut alice_feed = app.feed(&alice).await;
    watch(&mut alice_feed, alice_project.id).await;
    let mut hostile = agent(&app, &mallory_agent.token).await;
    let mut honest = agent(&app, &alice_agent.token).await;

    // One line far over the line budget, then 16 KiB lines: over 4 MiB, four times the burst.
    const FLOOD: usize = 256;
    output(&mut hostile, mallory_job, "x".repeat(600 * 1024)).await;
    for n in 0..FLOOD {
        let line = format!("{n:>4} {}", "y".repeat(MAX_LINE_BYTES - 100));
        output(&mut hostile, mallory_job, line).await;
    }
    // Alice's agent says one line: it reaches her tab.
    output(&mut honest, alice_job, "hello from alice".into()).await;
    loop {
        if let DashboardEvent::DeploymentEvent {
            deployment_id,
            event,
        } = next(&mut alice_feed).await
        {
            assert_eq!(deployment_id, alice_deployment, "only her own events");
            assert_eq!(event.body, "hello from alice");
            break;
        }
    }

    // Mallory's job finishes: its history keeps what fitted her rate, then says what was dropped.
    let finished = JobUpdate {
        job_id: mallory_job,
        event: JobEvent::Finished {
            success: false,
            message: "z".repeat(200 * 1024),
            images: Vec::new(),
            checkout: None,
        },
    };
    send_frame(&mut hostile, &AgentToServer::JobUpdate(finished)).await;
    let done = wait_for_deployment(&mallory_api, mallory_deployment, LIVENESS).await;
    let outputs: Vec<&str> = done
        .events
        .iter()
        .filter(|event| event.kind == EventKind::Output)
        .map(|event| event.body.as_str())
        .collect();
    let first = outputs.first().expect("nothing was kept");
    // The first line fitted the burst, cut.
    assert!(
        first.len() <= MAX_LINE_BYTES && first.ends_with("bytes cut"),
        "a 600 KiB line is kept cut, not whole: {} bytes",
        first.len()
    );
    // Each line that got through after some were dropped comes after a note of how many.
    let (notes, kept): (Vec<&str>, Vec<&str>) = outputs
        .iter()
        .partition(|line| line.contains("lines of output dropped"));
    let dropped: usize = notes
        .iter()
        .map(|note| {
            note.strip_prefix("… ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|count| count.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("not a count of dropped lines: {note:.120}"))
        })
        .sum();
    assert!(!notes.is_empty(), "no note of what was dropped");
    assert_eq!(
        kept.len() + dropped,
        FLOOD + 1,
        "every line is kept or counted"
    );
    assert!(
        kept.len() < FLOOD / 2,
        "the flood was throttled: {} of {} lines kept",
        kept.len(),
        FLOOD + 1
    );
    let message = done.message.unwrap_or_default();
    assert!(
        message.len() <= shared::protocol::budget::MESSAGE && message.ends_with("bytes cut"),
        "a result message is kept cut: {} bytes",
        message.len()
    );
}

#[tokio::test]
async fn log_lines_over_an_agents_rate_are_dropped_and_counted_on_the_feed() {
    let app = throttled_app().await;
    let (mallory, api) = app.user("mallory").await;
    let (created, project) = api.shop_project().await;
    let mut hostile = agent(&app, &created.token).await;
    let mut feed = app.feed(&mallory).await;
    watch(&mut feed, project.id).await;
    let stream_id = loop {
        let frame = tokio::time::timeout(LIVENESS, hostile.next())
            .await
            .expect("no StartLogs")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            if let ServerToAgent::StartLogs(StartLogs { stream_id, .. }) =
                serde_json::from_str(&text).unwrap()
            {
                break stream_id;
            }
        }
    };
    let batch = |lines: usize, text: &str| {
        AgentToServer::Log(LogBatch {
            stream_id,
            messages: (0..lines)
                .map(|_| LogMessage {
                    project: project.name.clone(),
                    service: shared::ServiceName::parse("web").unwrap(),
                    stream: LogStream::Stdout,
                    timestamp: None,
                    line: text.to_string(),
                })
                .collect(),
            skipped: 0,
        })
    };
    // 4 MiB of lines in 256 batches: four times the burst.
    const BATCHES: usize = 256;
    const LINES: usize = 16;
    let flood = batch(LINES, &"f".repeat(1000));
    for _ in 0..BATCHES {
        send_frame(&mut hostile, &flood).await;
    }
    // Then one small line at a time until one gets through (the budget refills): the count of
    // what was dropped goes out with it.
    let (mut shown, mut skipped, mut sent) = (0, 0, BATCHES * LINES);
    'through: loop {
        send_frame(&mut hostile, &batch(1, "last")).await;
        sent += 1;
        let wait = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(event) = tokio::time::timeout_at(wait, next(&mut feed)).await {
            let DashboardEvent::Logs(lines) = event else {
                continue;
            };
            shown += lines.lines.len();
            skipped += lines.skipped;
            if lines.lines.iter().any(|line| line.text == "last") {
                break 'through;
            }
        }
        assert!(sent < BATCHES * LINES + 100, "no line got through");
    }
    assert_eq!(
        shown as u64 + skipped,
        sent as u64,
        "every line is shown or counted as skipped"
    );
    assert!(
        shown < BATCHES * LINES / 2,
        "the flood was throttled: {shown} lines shown, {skipped} skipped"
    );
}

#[tokio::test]
async fn container_state_reports_over_an_agents_rate_are_dropped() {
    use shared::protocol::{ProjectContainers, ServiceStates};
    use shared::runtime::{ContainerStatus, ServiceState};
    let app = throttled_app().await;
    let (mallory, api) = app.user("mallory").await;
    let (created, project) = api.shop_project().await;
    let mut hostile = agent(&app, &created.token).await;
    let mut feed = app.feed(&mallory).await;
    let report = |restarts: u32, containers: usize| {
        let state = ServiceState {
            service: shared::ServiceName::parse("web").unwrap(),
            container_id: "0123456789ab".into(),
            status: ContainerStatus::Running,
            exit_code: None,
            health: None,
            started_at: Some("2026-11-30T10:00:00Z".into()),
            restart_count: restarts,
            image_id: Some(format!("sha256:{}", "a".repeat(64))),
            replicas: None,
        };
        AgentToServer::ServiceStates(ServiceStates {
            full: false,
            projects: vec![ProjectContainers {
                project_id: project.id,
                containers: vec![state; containers],
            }],
        })
    };
    // 40 reports of ~75 KiB: three times the burst.
    const REPORTS: usize = 40;
    for n in 0..REPORTS {
        send_frame(&mut hostile, &report(n as u32, 300)).await;
    }
    // Then a small one at a time until one gets through.
    let mut received = 0;
    'through: loop {
        send_frame(&mut hostile, &report(9_999, 1)).await;
        let wait = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(event) = tokio::time::timeout_at(wait, next(&mut feed)).await {
            if let DashboardEvent::ServiceStates { containers, .. } = event {
                if containers.iter().any(|state| state.restart_count == 9_999) {
                    break 'through;
                }
                received += 1;
            }
        }
    }
    assert!(
        received < REPORTS / 2,
        "the flood of reports was throttled: {received} of {REPORTS} pushed to the tab"
    );
}

#[tokio::test]
async fn a_project_refuses_more_jobs_in_flight_than_its_limit() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        // The agent is offline, so every deploy waits queued.
        let (_, project) = api.shop_project().await;
        for _ in 0..10 {
            let _: DeployAccepted = api
                .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
                .await;
        }
        let (status, body) = api
            .call(Method::POST, &format!("/deploy/{}", project.id), None)
            .await;
        assert_eq!(status, 409, "{}: {body}", db.name());
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("10 jobs waiting or running"), "{message}");
        let history: Vec<shared::api::Deployment> = api
            .expect(
                Method::GET,
                &format!("/projects/{}/deployments", project.id),
                None,
                200,
            )
            .await;
        assert_eq!(history.len(), 10, "the refused one was not stored");
    }
}

#[tokio::test]
async fn a_stalled_tab_is_dropped_without_delaying_another_persons_tab() {
    use server::hub::HubEvent;
    let app = spawn_app(&TestDb::Sqlite).await;
    let (alice, alice_api) = app.user("alice").await;
    let (_, alice_project) = alice_api.shop_project().await;
    let (bob, bob_api) = app.user("bob").await;
    let (_, bob_project) = bob_api.shop_project().await;
    let mut stalled = app.feed(&alice).await;
    watch(&mut stalled, alice_project.id).await;
    let mut bob_feed = app.feed(&bob).await;
    watch(&mut bob_feed, bob_project.id).await;
    let event = |project_id, body: String| HubEvent::DeploymentEvent {
        deployment_id: shared::DeploymentId(uuid::Uuid::new_v4()),
        project_id,
        event: shared::api::DeploymentEvent {
            at: time::OffsetDateTime::now_utc(),
            kind: EventKind::Output,
            body,
        },
    };

    // Alice's tab stops reading while her project's events keep coming: 50 MB, far more than
    // the socket buffers between the server and the tab hold.
    let body = "s".repeat(64 * 1024);
    for _ in 0..16 {
        for _ in 0..50 {
            app.state.hub.publish(event(alice_project.id, body.clone()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Bob's tab gets his event all the same.
    app.state
        .hub
        .publish(event(bob_project.id, "for bob".into()));
    loop {
        if let DashboardEvent::DeploymentEvent { event, .. } = next(&mut bob_feed).await {
            assert_eq!(event.body, "for bob", "only his own project's events");
            break;
        }
    }
    // Once its socket has taken nothing for the send timeout, the stalled tab is dropped:
    // reading now finds the end of the connection after what was already buffered.
    // (`ws::browser::SEND_TIMEOUT`, 10 s, and some.)
    tokio::time::sleep(Duration::from_secs(12)).await;
    let ended = tokio::time::timeout(LIVENESS, async {
        while let Some(Ok(frame)) = stalled.next().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled tab is still connected");
}
