//! `/users`: what an admin does to other people's accounts (list, disable, enable).

use super::{ApiPath, CurrentUser};
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use shared::api::UserSummary;
use shared::UserId;

/// `GET /api/v1/users` (admins).
pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<UserSummary>>, OpError> {
    Ok(Json(ops::users::list(&state.store, &user).await?))
}

/// `POST /api/v1/users/{id}/disable` (admins): ends the user's sessions, tokens and feeds.
pub async fn disable(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<UserId>,
) -> Result<Json<UserSummary>, OpError> {
    Ok(Json(
        ops::users::disable(&state.store, &state.hub, &user, id).await?,
    ))
}

/// `POST /api/v1/users/{id}/enable` (admins).
pub async fn enable(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<UserId>,
) -> Result<Json<UserSummary>, OpError> {
    Ok(Json(ops::users::enable(&state.store, &user, id).await?))
}
