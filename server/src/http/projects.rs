//! `/projects`: a compose project on one agent's host.

use super::{ApiJson, ApiPath, ApiQuery, CurrentUser};
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::{
    CreateProject, DeleteProject, DeployAccepted, LifecycleRequest, Project, ProjectServices,
    UpdateProject,
};
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
    ApiQuery(options): ApiQuery<DeleteProject>,
) -> Result<StatusCode, OpError> {
    let (store, vault, hub) = (&state.store, &state.vault, &state.hub);
    ops::projects::delete(store, vault, hub, &user, id, options).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queues a lifecycle job (start, stop, restart, down): 202 with its id.
pub async fn act(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
    ApiJson(request): ApiJson<LifecycleRequest>,
) -> Result<(StatusCode, Json<DeployAccepted>), OpError> {
    let (store, vault, hub) = (&state.store, &state.vault, &state.hub);
    let accepted = ops::deployments::act(store, vault, hub, &user, id, request).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

pub async fn services(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
) -> Result<Json<ProjectServices>, OpError> {
    Ok(Json(
        ops::services::of_project(&state.store, &user, id).await?,
    ))
}

pub async fn services_overview(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<ProjectServices>>, OpError> {
    Ok(Json(ops::services::overview(&state.store, &user).await?))
}
