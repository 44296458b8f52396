//! `/notification-channels` and `/projects/{id}/notifications`: a person's channels, their
//! deliveries, and which events of a project go to which channel.

use super::{ApiJson, ApiPath, CurrentUser};
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::notify::{
    ChannelCreated, ChannelId, ChannelSummary, CreateChannel, Delivery, ProjectNotifications,
    TestQueued,
};
use shared::ProjectId;

/// Adds a channel: 201, with a webhook's signing secret shown this once.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateChannel>,
) -> Result<(StatusCode, Json<ChannelCreated>), OpError> {
    let created = ops::notifications::create_channel(
        &state.store,
        &state.vault,
        &state.config.notifications,
        &user,
        body,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<ChannelSummary>>, OpError> {
    Ok(Json(
        ops::notifications::list_channels(&state.store, &user).await?,
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ChannelId>,
) -> Result<StatusCode, OpError> {
    ops::notifications::delete_channel(&state.store, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queues a test notification: 202 with the delivery's id.
pub async fn test(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ChannelId>,
) -> Result<(StatusCode, Json<TestQueued>), OpError> {
    let config = &state.config.notifications;
    let queued = ops::notifications::send_test(&state.store, config, &user, id).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

pub async fn deliveries(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ChannelId>,
) -> Result<Json<Vec<Delivery>>, OpError> {
    Ok(Json(
        ops::notifications::deliveries(&state.store, &user, id).await?,
    ))
}

pub async fn rules(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project): ApiPath<ProjectId>,
) -> Result<Json<ProjectNotifications>, OpError> {
    Ok(Json(
        ops::notifications::project_rules(&state.store, &user, project).await?,
    ))
}

pub async fn set_rules(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project): ApiPath<ProjectId>,
    ApiJson(body): ApiJson<ProjectNotifications>,
) -> Result<Json<ProjectNotifications>, OpError> {
    Ok(Json(
        ops::notifications::set_project_rules(&state.store, &user, project, body).await?,
    ))
}
