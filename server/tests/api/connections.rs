//! The slow-client limits of the accept loop (issue 15, item 6): a request's headers must
//! arrive within the header timeout, an idle connection is closed, connections beyond the
//! maximum wait for a free slot, and a crowd of slowloris connections cannot keep a normal
//! client from being served. Real sockets against the server on a loopback port.

use crate::helpers::{http_get, spawn_app_with_env, AppOptions, TestApp, TestDb};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for "eventually" (liveness, not speed).
const LIVENESS: Duration = Duration::from_secs(30);

async fn app(env: &[(&str, &str)]) -> TestApp {
    spawn_app_with_env(&TestDb::Sqlite, AppOptions::default(), env).await
}

/// Reads until the server closes the connection; `None` if it is still open after `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut received)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed_after_the_header_timeout() {
    let app = app(&[("STAGELY_HEADER_TIMEOUT_SECS", "1")]).await;
    let mut partial = TcpStream::connect(app.address).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: stagely\r\nX-Slow: ")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(app.address).await.unwrap();
    for (what, stream) in [("half a header", &mut partial), ("nothing", &mut silent)] {
        let answer = closed_within(stream, LIVENESS).await;
        let answer =
            answer.unwrap_or_else(|| panic!("a connection that sent {what} is still open"));
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{what}: {answer}"
        );
    }
    // The server itself is fine.
    assert_eq!(http_get(app.address, "/healthz").await.0, 200);
}

#[tokio::test]
async fn slowloris_connections_cannot_stop_a_normal_client_from_being_served() {
    // More slowloris connections than the server takes at once: they fill every slot, are cut
    // at the header timeout, and the queue behind them moves on.
    const SLOW: usize = 100;
    let app = app(&[
        ("STAGELY_HEADER_TIMEOUT_SECS", "2"),
        ("STAGELY_MAX_CONNECTIONS", "40"),
    ])
    .await;
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut stream = TcpStream::connect(app.address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        // One header byte at a time until the server hangs up.
        slow.push(tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            loop {
                tokio::select! {
                    read = stream.read(&mut buffer) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => continue, // a 408, then the close
                    },
                    () = tokio::time::sleep(Duration::from_millis(200)) => {
                        if stream.write_all(b"X").await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
    let served = tokio::time::timeout(LIVENESS, http_get(app.address, "/healthz")).await;
    assert_eq!(
        served.expect("a normal client was not served").0,
        200,
        "a normal client is served while slowloris connections come and go"
    );
    for connection in slow {
        tokio::time::timeout(LIVENESS, connection)
            .await
            .expect("a slowloris connection is still open")
            .unwrap();
    }
}

#[tokio::test]
async fn connections_beyond_the_maximum_wait_until_one_closes() {
    let app = app(&[
        ("STAGELY_MAX_CONNECTIONS", "2"),
        ("STAGELY_HEADER_TIMEOUT_SECS", "600"),
        ("STAGELY_IDLE_TIMEOUT_SECS", "600"),
    ])
    .await;
    // Two connections take both slots (the listen queue hands them over in order).
    let first = TcpStream::connect(app.address).await.unwrap();
    let _second = TcpStream::connect(app.address).await.unwrap();
    let mut third = TcpStream::connect(app.address).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: stagely\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(1), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a third connection was served while two held both slots"
    );
    drop(first);
    let answer = closed_within(&mut third, LIVENESS)
        .await
        .expect("the waiting connection was not served once a slot was free");
    assert!(answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout_but_a_websocket_is_not() {
    let app = app(&[
        ("STAGELY_IDLE_TIMEOUT_SECS", "1"),
        ("STAGELY_HEADER_TIMEOUT_SECS", "600"),
    ])
    .await;
    let (alice, api) = app.user("alice").await;
    let (_, project) = api.shop_project().await;
    let mut feed = app.feed(&alice).await;

    // A kept-alive connection that asks once, then says nothing.
    let mut kept = TcpStream::connect(app.address).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: stagely\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut kept, LIVENESS)
        .await
        .expect("an idle kept-alive connection is still open");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The tab's feed outlived several idle timeouts and still answers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let watch = shared::api::DashboardRequest::Watch {
        project_id: project.id,
        resume: None,
    };
    feed.send(tokio_tungstenite::tungstenite::Message::text(
        serde_json::to_string(&watch).unwrap(),
    ))
    .await
    .expect("the feed was closed");
    loop {
        let frame = tokio::time::timeout(LIVENESS, feed.next())
            .await
            .expect("the feed did not answer")
            .expect("the feed was closed")
            .expect("the feed failed");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            let event: shared::api::DashboardEvent = serde_json::from_str(&text).unwrap();
            if matches!(event, shared::api::DashboardEvent::Logs(_)) {
                break;
            }
        }
    }
}
