//! The server-rendered dashboard, read as a browser without JavaScript would.

use crate::helpers::{dashboard_row, next_event, spawn_app, AgentProcess, TestDb};

#[tokio::test]
async fn the_dashboard_lists_agents_with_their_live_status() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, _, _agent) = app.connected_agent("online-box").await;
    app.add_agent("never-started").await;

    let (status, html) = app.get_page("/").await;
    assert_eq!(status, 200);
    let online = dashboard_row(&html, "online-box").expect("online-box is listed");
    assert!(online.contains(">Connected<"), "{online}");
    assert!(
        online.contains(&agent::system::hostname()),
        "the host name is shown: {online}"
    );
    let offline = dashboard_row(&html, "never-started").expect("never-started is listed");
    assert!(offline.contains(">Disconnected<"), "{offline}");
}

#[tokio::test]
async fn health_check_answers_ok() {
    let app = spawn_app(&TestDb::Sqlite).await;
    assert_eq!(app.get_text("/healthz").await, (200, "ok".to_string()));
}

#[tokio::test]
async fn the_live_feed_tells_the_browser_when_an_agent_comes_and_goes() {
    use shared::api::{AgentStatus, DashboardEvent};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let app = spawn_app(&TestDb::Sqlite).await;
    let (agent_id, token) = app.add_agent("live-box").await;
    let url = format!("ws://{}/api/v1/events", app.address);

    // Another site's page may not open the feed.
    let mut foreign = url.as_str().into_client_request().unwrap();
    foreign
        .headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(foreign).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!("expected 403, got {other:?}"),
    }

    // Nor may a page without a session.
    let mut signed_out = url.as_str().into_client_request().unwrap();
    signed_out
        .headers_mut()
        .insert("origin", app.url().parse().unwrap());
    match tokio_tungstenite::connect_async(signed_out).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!("expected 401, got {other:?}"),
    }

    let mut request = url.as_str().into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("origin", app.url().parse().unwrap());
    headers.insert("cookie", app.admin_session("admin").await.parse().unwrap());
    let (mut feed, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut agent = AgentProcess::spawn(&app.url(), token.expose(), app.data_dir.path());
    assert_eq!(
        next_event(&mut feed).await,
        DashboardEvent::AgentStatus {
            agent_id,
            status: AgentStatus::Connected
        }
    );
    agent.kill_9().await;
    assert_eq!(
        next_event(&mut feed).await,
        DashboardEvent::AgentStatus {
            agent_id,
            status: AgentStatus::Disconnected
        }
    );
}

#[tokio::test]
async fn a_live_history_entry_carries_the_time_it_was_stored_under() {
    use futures_util::SinkExt;
    use shared::api::{DashboardEvent, DashboardRequest, EventKind};
    use shared::protocol::{JobEvent, JobUpdate};

    let app = spawn_app(&TestDb::Sqlite).await;
    let (alice, api) = app.user("alice").await;
    let (agent, project) = api.shop_project().await;
    let mut feed = app.feed(&alice).await;
    let watch = DashboardRequest::Watch {
        project_id: project.id,
        resume: None,
    };
    let text = serde_json::to_string(&watch).unwrap();
    feed.send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
        .await
        .unwrap();
    // The first answer to a watch is the log replay: from then on the tab follows the project.
    assert!(matches!(
        next_event(&mut feed).await,
        DashboardEvent::Logs(_)
    ));

    let (deployment, job_id) = app.queue_deploy(project.id, alice.id).await;
    let state = &app.state;
    let update = JobUpdate {
        job_id,
        event: JobEvent::Output {
            line: "Container shop-web-1 Started".into(),
        },
    };
    server::ops::deployments::record_update(
        &state.store,
        &state.vault,
        &state.hub,
        &state.logs,
        agent.agent.id,
        update,
    )
    .await;
    let live = loop {
        if let DashboardEvent::DeploymentEvent { event, .. } = next_event(&mut feed).await {
            break event;
        }
    };
    let stored = app
        .store()
        .deployment(&alice, deployment)
        .await
        .unwrap()
        .events
        .into_iter()
        .find(|event| event.kind == EventKind::Output)
        .expect("the output line is in the history");
    assert_eq!(
        live, stored,
        "the tab shows the entry exactly as the history keeps it"
    );
}
