//! `/projects`: a compose project on one agent's host.

use super::{ApiJson, ApiPath, CurrentUser};
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::{CreateProject, Project, UpdateProject};
use shared::ProjectId;

pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Json<Project>), OpError> {
    let project = ops::projects::create(&state.store, &user, body).await?;
    Ok((StatusCode::CREATED, Json(project)))
}

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<Project>>, OpError> {
    Ok(Json(ops::projects::list(&state.store, &user).await?))
}

pub async fn show(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
) -> Result<Json<Project>, OpError> {
    Ok(Json(ops::projects::show(&state.store, &user, id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
    ApiJson(changes): ApiJson<UpdateProject>,
) -> Result<Json<Project>, OpError> {
    Ok(Json(
        ops::projects::update(&state.store, &user, id, changes).await?,
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
) -> Result<StatusCode, OpError> {
    ops::projects::delete(&state.store, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
