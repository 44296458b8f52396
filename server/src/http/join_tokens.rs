//! `/join-tokens`: single-use invitations for new hosts, with the command that uses them.

use super::CurrentUser;
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::{CreateJoinToken, JoinTokenCreated};

/// `POST /api/v1/join-tokens`. Every field of the body is optional, and so is the body: an
/// empty one (with or without a JSON content type) takes the defaults.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    body: Bytes,
) -> Result<(StatusCode, Json<JoinTokenCreated>), OpError> {
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        CreateJoinToken::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            OpError::Invalid(format!("Failed to deserialize the JSON body: {error}"))
        })?
    };
    let created =
        ops::join_tokens::create(&state.store, &state.config.public_url, &user, input).await?;
    Ok((StatusCode::CREATED, Json(created)))
}
