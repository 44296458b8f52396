//! The agent link end to end: real `stagely-agent` processes against the real server.

use crate::helpers::send_frame;
use crate::helpers::{
    eventually, hello, next_message, raw_agent, spawn_app, spawn_app_with, AgentProcess,
    AppOptions, RawSocket, Relay, ServerProcess, TestDb,
};
use futures_util::StreamExt;
use shared::{AgentToServer, ServerToAgent, PROTOCOL_VERSION};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const SOON: Duration = Duration::from_secs(10);
/// The agent's backoff cap (60 s) plus slack for a loaded machine.
const BACKOFF_CAP_AND_SLACK: Duration = Duration::from_secs(75);

#[tokio::test]
async fn an_agent_with_a_valid_token_connects_and_reports_its_host() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (agent_id, _, agent) = app.connected_agent("edge-1").await;
    let stored = app.store().agent(agent_id).await.unwrap();
    assert_eq!(
        stored.hostname.as_deref(),
        Some(agent::system::hostname().as_str())
    );
    assert_eq!(
        stored.agent_version.as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(stored.last_seen.is_some());
    // Logged on the welcome, which follows the registration the helper waited for.
    eventually(SOON, "the agent to log that it is connected", || async {
        agent.log_text().contains("connected to the server")
    })
    .await;
}

#[tokio::test]
async fn a_killed_agent_is_disconnected_at_once() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (agent_id, _, mut agent) = app.connected_agent("edge-1").await;

    agent.kill_9().await;
    // The kernel closes the socket of a killed process, so no heartbeat timeout is needed.
    eventually(
        Duration::from_secs(3),
        "the agent to show as disconnected",
        || async { !app.state.hub.is_connected(agent_id) },
    )
    .await;
}

#[tokio::test]
async fn missing_bad_revoked_and_query_string_tokens_get_401_before_the_upgrade() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (agent_id, token) = app.add_agent("edge-1").await;
    let revoked = app.add_agent("edge-2").await;
    app.store().revoke_agent(revoked.0).await.unwrap();

    let cases = [
        ("missing token", None, app.stream_url()),
        (
            "unknown token",
            Some("stg_not-a-real-token".to_string()),
            app.stream_url(),
        ),
        (
            "revoked token",
            Some(revoked.1.expose().to_string()),
            app.stream_url(),
        ),
        (
            "token in the query string",
            None,
            format!("{}?token={}", app.stream_url(), token.expose()),
        ),
    ];
    for (case, bearer, url) in cases {
        let status = connect_status(&url, bearer.as_deref()).await;
        assert_eq!(status, Some(401), "{case}");
    }
    assert!(!app.state.hub.is_connected(agent_id));
    assert!(!app.state.hub.is_connected(revoked.0));
}

#[tokio::test]
async fn a_second_connection_with_the_same_identity_replaces_the_first() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (agent_id, token) = app.add_agent("edge-1").await;

    let mut first = raw_agent(&app.stream_url(), token.expose()).await;
    assert!(matches!(
        hello(&mut first, PROTOCOL_VERSION).await,
        ServerToAgent::Welcome(_)
    ));
    let mut second = raw_agent(&app.stream_url(), token.expose()).await;
    assert!(matches!(
        hello(&mut second, PROTOCOL_VERSION).await,
        ServerToAgent::Welcome(_)
    ));

    let reason = close_reason(&mut first).await;
    assert!(
        reason.contains("replaced"),
        "first connection closed with {reason:?}"
    );
    assert_eq!(app.state.hub.connected_count(), 1);
    assert!(app.state.hub.is_connected(agent_id));

    // The second session is the live one: it still answers heartbeats.
    let beat = AgentToServer::Heartbeat(shared::protocol::Heartbeat { seq: 42 });
    send_frame(&mut second, &beat).await;
    let answer = next_message(&mut second).await;
    assert_eq!(
        answer,
        ServerToAgent::HeartbeatAck(shared::protocol::Heartbeat { seq: 42 })
    );
}

#[tokio::test]
async fn an_agent_speaking_another_protocol_version_is_rejected_with_a_reason() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (agent_id, token) = app.add_agent("edge-1").await;
    let mut socket = raw_agent(&app.stream_url(), token.expose()).await;
    match hello(&mut socket, PROTOCOL_VERSION + 1).await {
        ServerToAgent::Rejected(rejected) => {
            assert!(
                rejected.reason.contains("protocol version"),
                "{}",
                rejected.reason
            )
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(!app.state.hub.is_connected(agent_id));
}

#[tokio::test]
async fn a_silent_agent_is_disconnected_after_three_missed_heartbeats() {
    let app = spawn_app_with(&TestDb::Sqlite, AppOptions { heartbeat_secs: 1 }).await;
    let (agent_id, token) = app.add_agent("edge-1").await;
    let mut socket = raw_agent(&app.stream_url(), token.expose()).await;
    assert!(matches!(
        hello(&mut socket, PROTOCOL_VERSION).await,
        ServerToAgent::Welcome(_)
    ));
    assert!(app.state.hub.is_connected(agent_id));
    // Say nothing: 3 × 1 s + 5 s slack later the server gives up on us.
    let reason = tokio::time::timeout(Duration::from_secs(15), close_reason(&mut socket))
        .await
        .expect("the server never closed the silent connection");
    assert_eq!(reason, "no heartbeat");
    assert!(!app.state.hub.is_connected(agent_id));
}

#[tokio::test]
async fn an_agent_comes_back_by_itself_after_the_server_is_killed_and_restarted() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data_dir.path(), None).await;
    let token = server.add_agent("edge-1");
    let agent = AgentProcess::spawn(&server.url(), &token, data_dir.path());
    eventually(
        SOON,
        "the dashboard to show the agent connected",
        || async { server.dashboard_shows("edge-1", "Connected").await },
    )
    .await;
    // The server lists the agent before its welcome reaches it: wait for the agent's side too,
    // or the kill below can land mid-handshake (a failed connect, not a lost link).
    eventually(SOON, "the agent to log its connection", || async {
        agent.log_text().contains("connected to the server")
    })
    .await;

    server.kill_9().await;
    eventually(SOON, "the agent to notice the outage", || async {
        agent.log_text().contains("lost the link to the server")
    })
    .await;
    let mut server = ServerProcess::start(data_dir.path(), Some(server.address)).await;

    // Backoff starts at 1 s and doubles up to its 60 s cap; the promise is "back within the
    // cap" (usually a few seconds), so the test waits the cap plus slack, not less.
    eventually(BACKOFF_CAP_AND_SLACK, "the agent to reconnect", || async {
        server.dashboard_shows("edge-1", "Connected").await
    })
    .await;
    assert_outage_and_recovery_logged_once(&agent).await;
    server.kill_9().await;
}

async fn connect_status(url: &str, bearer: Option<&str>) -> Option<u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

async fn close_reason(socket: &mut RawSocket) -> String {
    loop {
        match socket.next().await {
            Some(Ok(Message::Close(frame))) => {
                return frame.map(|f| f.reason.to_string()).unwrap_or_default()
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_graceful_server_stop_closes_agent_sessions_instead_of_hanging() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, _, agent) = app.connected_agent("edge-1").await;
    let _data_dir = app.stop().await;
    eventually(
        SOON,
        "the agent to hear that the server is going away",
        || async { agent.log_text().contains("server shutting down") },
    )
    .await;
}

#[tokio::test]
async fn revoking_a_token_closes_the_live_session_within_a_second_or_so() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (agent_id, token) = app.add_agent("edge-1").await;
    let mut socket = raw_agent(&app.stream_url(), token.expose()).await;
    assert!(matches!(
        hello(&mut socket, PROTOCOL_VERSION).await,
        ServerToAgent::Welcome(_)
    ));

    // As `stagely-server agents revoke` does from another process: only the database changes.
    app.store().revoke_agent(agent_id).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(3), close_reason(&mut socket))
        .await
        .expect("the session outlived its revoked token");
    assert_eq!(reason, "agent token revoked");
    assert!(!app.state.hub.is_connected(agent_id));
    assert_eq!(
        connect_status(&app.stream_url(), Some(token.expose())).await,
        Some(401)
    );
}

#[tokio::test]
async fn a_network_blip_mid_stream_heals_by_itself() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (agent_id, token) = app.add_agent("edge-1").await;
    let relay = Relay::start(app.address).await;
    let agent = AgentProcess::spawn(&relay.url(), token.expose(), app.data_dir.path());
    eventually(SOON, "the agent to connect", || async {
        app.state.hub.is_connected(agent_id)
    })
    .await;
    // The server lists the agent before its welcome reaches it: a cut in between is a failed
    // connect ("cannot connect"), not a lost link. Wait for the agent's own line (written just
    // before it counts itself connected, with no await in between).
    eventually(SOON, "the agent to log its connection", || async {
        agent.log_text().contains("connected to the server")
    })
    .await;

    relay.cut();
    eventually(SOON, "the server to see the agent gone", || async {
        !app.state.hub.is_connected(agent_id)
    })
    .await;
    eventually(SOON, "the agent to notice", || async {
        agent.log_text().contains("lost the link to the server")
    })
    .await;
    // A few refused attempts while the link is down: the outage is logged once, not per try.
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.restore();

    // The attempts refused while the link was down have grown the backoff: the next one may be
    // up to the 60 s cap away (on a loaded machine the outage lasts longer, so this varies).
    eventually(
        BACKOFF_CAP_AND_SLACK,
        "the agent to reconnect through the restored link",
        || async { app.state.hub.is_connected(agent_id) },
    )
    .await;
    assert_outage_and_recovery_logged_once(&agent).await;
}

#[tokio::test]
async fn when_too_many_agents_connect_at_once_the_rest_are_told_to_retry_later() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (agent_id, token) = app.add_agent("edge-1").await;
    // Every handshake slot taken, as in a reconnect storm after a restart.
    let all = server::state::MAX_HANDSHAKES as u32;
    let busy = app
        .state
        .handshakes
        .clone()
        .acquire_many_owned(all)
        .await
        .unwrap();

    let mut request = app.stream_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token.expose()).parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=5).contains(&retry_after), "{retry_after}");
        }
        other => panic!("expected 503, got {other:?}"),
    }

    // Once the storm passes, the real agent gets in by itself.
    drop(busy);
    let _agent = AgentProcess::spawn(&app.url(), token.expose(), app.data_dir.path());
    eventually(SOON, "the agent to connect", || async {
        app.state.hub.is_connected(agent_id)
    })
    .await;
    eventually(SOON, "every handshake slot to be free again", || async {
        app.state.handshakes.available_permits() == server::state::MAX_HANDSHAKES
    })
    .await;
}

/// The agent logged the outage once and the recovery once, however many attempts it made.
async fn assert_outage_and_recovery_logged_once(agent: &AgentProcess) {
    // The server registers the session just before it sends the welcome that makes the agent
    // log its recovery: wait for the line rather than racing it.
    eventually(SOON, "the agent to log its recovery", || async {
        agent.log_text().contains("reconnected to the server")
    })
    .await;
    let log = agent.log_text();
    assert_eq!(
        log.matches("lost the link to the server").count(),
        1,
        "outage logged once:\n{log}"
    );
    assert_eq!(
        log.matches("reconnected to the server").count(),
        1,
        "recovery logged once:\n{log}"
    );
}

/// Jobs reach the agent in the order they were queued, whatever path each took: here a deploy
/// queued earlier and not yet sent (as one queued through another replica is while that
/// replica's word is on its way, or lost) goes out before a deploy requested now. The agent runs
/// a project's jobs in the order they arrive, so the other order would leave the older deploy
/// running.
#[tokio::test]
async fn jobs_reach_the_agent_in_the_order_they_were_queued() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (alice, api) = app.user("alice").await;
        let (agent, project) = api.shop_project().await;
        let mut socket = raw_agent(&app.stream_url(), &agent.token).await;
        assert!(matches!(
            hello(&mut socket, PROTOCOL_VERSION).await,
            ServerToAgent::Welcome(_)
        ));
        // Past the hello's re-send of open jobs (none yet), which would send the next one:
        // it holds the agent's turn from before the welcome until it is done.
        drop(app.state.hub.send_turn(agent.agent.id).await);
        let (_, earlier) = app.queue_deploy(project.id, alice.id).await;
        let accepted: shared::api::DeployAccepted = api
            .expect(
                reqwest::Method::POST,
                &format!("/deploy/{}", project.id),
                None,
                202,
            )
            .await;
        let later = app
            .store()
            .job(accepted.deployment_id)
            .await
            .unwrap()
            .job_id;

        let mut received = Vec::new();
        while received.len() < 2 {
            if let ServerToAgent::Deploy(job) = next_message(&mut socket).await {
                received.push(job.job_id);
            }
        }
        assert_eq!(received, [earlier, later], "{}: oldest first", db.name());
    }
}

/// Replicas' clocks differ. A stop queued through a replica whose clock is a minute behind,
/// right after a deploy queued through another, still goes to the agent after the deploy (the
/// order is drawn from the database, not from the queuing replica's clock): the other order
/// would stop the project, then start it.
#[tokio::test]
async fn a_job_queued_later_through_a_replica_whose_clock_is_behind_still_goes_second() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (alice, api) = app.user("alice").await;
        let (agent, project) = api.shop_project().await;
        let job = |created_at, kind| server::db::NewJob {
            project: project.id,
            agent: agent.agent.id,
            created_at,
            requested_by: alice.id,
            kind,
            service: None,
            remove_volumes: false,
            redeploy_of: None,
            secrets: Vec::new(),
        };
        let now = server::db::now_ms();
        let deploy = job(now, shared::runtime::JobKind::Deploy);
        let (_, first) = app.store().create_job(&deploy).await.unwrap();
        let stop = job(now - 60_000, shared::runtime::JobKind::Stop);
        let (_, second) = app.store().create_job(&stop).await.unwrap();
        // The agent connects: it is sent its open jobs, the deploy and then the stop.
        let mut socket = raw_agent(&app.stream_url(), &agent.token).await;
        crate::helpers::hello_as(&mut socket, env!("CARGO_PKG_VERSION")).await;
        let mut sent = Vec::new();
        while sent.len() < 2 {
            match next_message(&mut socket).await {
                ServerToAgent::Deploy(job) => sent.push(("deploy", job.job_id)),
                ServerToAgent::Lifecycle(job) => sent.push(("stop", job.job_id)),
                _ => {}
            }
        }
        assert_eq!(sent, [("deploy", first), ("stop", second)], "{}", db.name());
    }
}
