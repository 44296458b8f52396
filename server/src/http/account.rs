//! `/sessions` and `/api-tokens`: the caller's own credentials, listed (never their secrets)
//! and revoked.

use super::{ApiPath, CurrentUser};
use crate::auth::{credential_hash, set_cookie};
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shared::api::{ApiTokenInfo, SessionInfo};
use shared::{ApiTokenId, SessionId};
use std::time::Duration;

/// `GET /api/v1/sessions`: the caller's dashboard sessions, the request's own marked.
pub async fn sessions(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
) -> Result<Json<Vec<SessionInfo>>, OpError> {
    let current = credential_hash(&headers, state.config.session_cookie());
    let sessions = ops::users::sessions(&state.store, &user, current.as_ref()).await?;
    Ok(Json(sessions))
}

/// `DELETE /api/v1/sessions/{id}`: ends one of the caller's sessions; ending the request's own
/// also clears its cookie (signed out).
pub async fn revoke_session(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<SessionId>,
) -> Result<Response, OpError> {
    let cookie_name = state.config.session_cookie();
    let current = credential_hash(&headers, cookie_name);
    let was_current =
        ops::users::revoke_session(&state.store, &state.hub, &user, id, current.as_ref()).await?;
    if was_current {
        let expired = set_cookie(&state, cookie_name, "", "/", Duration::ZERO);
        return Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]).into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/api-tokens`: the caller's API tokens, the request's own marked.
pub async fn api_tokens(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    headers: HeaderMap,
) -> Result<Json<Vec<ApiTokenInfo>>, OpError> {
    let current = credential_hash(&headers, state.config.session_cookie());
    let tokens = ops::users::api_tokens(&state.store, &user, current.as_ref()).await?;
    Ok(Json(tokens))
}

/// `DELETE /api/v1/api-tokens/{id}`.
pub async fn revoke_api_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ApiTokenId>,
) -> Result<StatusCode, OpError> {
    ops::users::revoke_api_token(&state.store, &state.hub, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
