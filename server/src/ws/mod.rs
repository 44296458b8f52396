//! The three WebSockets the server answers, and the frame helpers they share:
//!
//! - [`agent`]: `GET /api/v1/stream`, the one socket each agent keeps open;
//! - [`join`]: `GET /api/v1/join`, where a new host trades a join token for its agent token;
//! - [`browser`]: `GET /api/v1/events`, the dashboard's live feed, one per tab.
//!
//! Agent frames are JSON text of the `shared::protocol` enums; anything else is refused.

pub mod agent;
pub mod browser;
pub mod join;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use shared::{AgentToServer, ServerToAgent};
use std::time::Duration;

/// An agent must send its hello within this time after the upgrade.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The next protocol message, skipping pings; `None` when the socket closed.
async fn next_frame<R>(rx: &mut R) -> Option<Result<AgentToServer, String>>
where
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    loop {
        return match rx.next().await? {
            Ok(Message::Text(text)) => Some(
                serde_json::from_str(&text).map_err(|error| format!("malformed message: {error}")),
            ),
            Ok(Message::Close(_)) | Err(_) => None,
            Ok(_) => continue,
        };
    }
}

/// Sends one protocol message as a text frame.
async fn send<T: Sink<Message> + Unpin>(tx: &mut T, message: &ServerToAgent) -> Result<(), ()> {
    // Serializing our own enum cannot fail: it holds only strings, numbers and ids.
    let text = serde_json::to_string(message).map_err(|_| ())?;
    tx.send(Message::Text(text.into())).await.map_err(|_| ())
}

/// Closes the socket with `reason` (cut to the 123 bytes a close frame allows).
async fn close<T: Sink<Message> + Unpin>(tx: &mut T, reason: &str) -> Result<(), ()> {
    // Close reasons are limited to 123 bytes by the protocol.
    let mut reason = reason.to_string();
    while reason.len() > 123 {
        reason.pop();
    }
    let frame = CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: reason.into(),
    };
    tx.send(Message::Close(Some(frame))).await.map_err(|_| ())
}
