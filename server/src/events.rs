//! `GET /api/v1/events`: the dashboard's live feed, one WebSocket per browser tab.
//!
//! It relays the hub's status changes as [`DashboardEvent`]s so the page never polls. A tab
//! that cannot keep up misses events rather than making the server buffer them: it is sent
//! `Resync` and reloads. The Origin is checked against the server itself, so another site open
//! in the same browser cannot read the feed.

use crate::error::AppError;
use crate::hub::HubEvent;
use crate::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use shared::api::DashboardEvent;
use tokio::sync::broadcast::error::RecvError;

pub async fn browser_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    if !same_origin(&headers, &state.config.public_url) {
        return Err(AppError::Forbidden(
            "cross-origin requests to the live feed are refused".into(),
        ));
    }
    Ok(upgrade
        .read_buffer_size(1024)
        .on_upgrade(move |socket| relay(socket, state)))
}

/// A browser sends `Origin`; it must be this server, as the browser reached it (`Host`) or as
/// configured (`STAGELY_PUBLIC_URL`). Requests without one do not come from a web page.
fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let origin_host = origin
        .split_once("://")
        .map(|(_, host)| host)
        .unwrap_or(origin);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    origin == public_url || Some(origin_host) == host
}

async fn relay(mut socket: WebSocket, state: AppState) {
    let mut events = state.hub.subscribe();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue, // the browser has nothing to say
            },
            _ = state.hub.closing() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        };
        let message = match event {
            Ok(HubEvent::AgentStatus { agent_id, status }) => {
                DashboardEvent::AgentStatus { agent_id, status }
            }
            Ok(_) => continue,
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "a dashboard tab fell behind; asking it to resync");
                DashboardEvent::Resync
            }
            Err(RecvError::Closed) => return,
        };
        let Ok(text) = serde_json::to_string(&message) else {
            continue;
        };
        if socket.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_pages_of_this_server_may_open_the_feed() {
        let public = "https://deploy.example.com";
        assert!(same_origin(
            &headers(Some("http://127.0.0.1:3000"), "127.0.0.1:3000"),
            public
        ));
        assert!(same_origin(
            &headers(Some("https://deploy.example.com"), "10.0.0.5:3000"),
            public
        ));
        assert!(same_origin(&headers(None, "127.0.0.1:3000"), public));
        assert!(!same_origin(
            &headers(Some("https://evil.example"), "127.0.0.1:3000"),
            public
        ));
    }
}
