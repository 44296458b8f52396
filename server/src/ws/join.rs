//! `GET /api/v1/join`: a new host trades a join token for its own agent token.
//!
//! `install.sh` runs `stagely-agent join`, which opens this socket with the join token, sends a
//! hello and receives a `Joined` (its agent id, name and token) or a `Rejected` with the reason.
//! The token is checked before the upgrade, so a used, expired or unknown one is refused with a
//! 401 that says which; the trade itself is `ops::join_tokens::redeem`.

use super::{close, next_frame, send, HELLO_TIMEOUT};
use crate::auth;
use crate::ops::{self, OpError};
use crate::state::AppState;
use crate::token::TokenHash;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::StreamExt;
use shared::protocol::Rejected;
use shared::{AgentToServer, ServerToAgent};

/// `GET /api/v1/join`: checks the join token (refusing a used or expired one with the reason),
/// then upgrades and trades it for an agent token after the agent's hello.
pub async fn join(
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, OpError> {
    let hash = auth::join_token(&headers)?;
    ops::join_tokens::check(&state.store, &hash).await?;
    Ok(upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| exchange(socket, state, hash)))
}

async fn exchange(socket: WebSocket, state: AppState, join_token: TokenHash) {
    let (mut tx, mut rx) = socket.split();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, next_frame(&mut rx)).await {
        Ok(Some(Ok(AgentToServer::Hello(hello)))) => hello,
        _ => {
            let _ = close(&mut tx, "expected a hello").await;
            return;
        }
    };
    let answer = match ops::join_tokens::redeem(&state.store, &join_token, &hello).await {
        Ok(joined) => ServerToAgent::Joined(joined),
        Err(reason) => ServerToAgent::Rejected(Rejected { reason }),
    };
    let _ = send(&mut tx, &answer).await;
    let _ = close(&mut tx, "joined").await;
}
