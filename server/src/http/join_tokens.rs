//! `/join-tokens`: single-use invitations for new hosts, with the command that uses them.

use super::{ApiJson, CurrentUser};
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::{CreateJoinToken, JoinTokenCreated};

/// `POST /api/v1/join-tokens`. Every field of the body is optional, and so is the body: a
/// request without one (and without a `Content-Type`) takes the defaults; a body must be JSON.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    body: Option<ApiJson<CreateJoinToken>>,
) -> Result<(StatusCode, Json<JoinTokenCreated>), OpError> {
    let input = body.map(|ApiJson(input)| input).unwrap_or_default();
    let created =
        ops::join_tokens::create(&state.store, &state.config.public_url, &user, input).await?;
    Ok((StatusCode::CREATED, Json(created)))
}
