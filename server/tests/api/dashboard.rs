//! The server-rendered dashboard, read as a browser without JavaScript would.

use crate::helpers::{dashboard_row, eventually, spawn_app, AgentProcess, TestDb};
use std::time::Duration;

#[tokio::test]
async fn the_dashboard_lists_agents_with_their_live_status() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (online_id, online_token) = app.add_agent("online-box").await;
    app.add_agent("never-started").await;
    let _agent = AgentProcess::spawn(&app.url(), online_token.expose(), app.data_dir.path());
    eventually(Duration::from_secs(10), "the agent to connect", || async {
        app.state.hub.is_connected(online_id)
    })
    .await;

    let (status, html) = app.get_text("/").await;
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
