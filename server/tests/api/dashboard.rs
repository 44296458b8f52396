//! The server-rendered dashboard, read as a browser without JavaScript would.

use crate::helpers::{dashboard_row, spawn_app, AgentProcess, TestDb};
use std::time::Duration;

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

async fn next_event<S>(feed: &mut S) -> shared::api::DashboardEvent
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("no event within 10 s")
            .expect("the feed closed")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}
