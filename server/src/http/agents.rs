//! `/agents`: register, list and revoke the hosts a user deploys to.

use super::{ApiJson, ApiPath, CurrentUser};
use crate::ops::{self, Actor, OpError};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::{AgentCreated, AgentSummary, CreateAgent};
use shared::AgentId;

pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<(StatusCode, Json<AgentCreated>), OpError> {
    let created = ops::agents::register(&state.store, &state.hub, Actor::User(&user), body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<AgentSummary>>, OpError> {
    let agents = ops::agents::list(&state.store, &state.hub, Actor::User(&user)).await?;
    Ok(Json(agents))
}

/// Revokes the agent's token and closes its live session at once.
pub async fn revoke(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<AgentId>,
) -> Result<StatusCode, OpError> {
    ops::agents::revoke(&state.store, &state.hub, Actor::User(&user), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
