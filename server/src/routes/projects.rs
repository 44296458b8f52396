//! `/projects`: a compose project on one agent's host.

use super::{ApiJson, ApiPath, CurrentUser};
use crate::db::User;
use crate::error::AppError;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::{CreateProject, Project, UpdateProject};
use shared::ProjectId;

/// The project directory: an absolute path on the agent's host.
fn validate_path(path: &str) -> Result<(), AppError> {
    if !path.starts_with('/') || path.len() > 4096 || path.contains('\0') {
        return Err(AppError::BadRequest(format!(
            "path {path:?} must be an absolute directory on the agent's host, like /srv/shop"
        )));
    }
    Ok(())
}

/// The compose file: a file name relative to the project directory, inside it.
fn validate_compose_file(file: &str) -> Result<(), AppError> {
    let climbs = file.split('/').any(|part| part == "..");
    if file.starts_with('/') || climbs || file.len() > 255 || file.contains('\0') {
        return Err(AppError::BadRequest(format!(
            "compose_file {file:?} must be a file name inside the project directory, like compose.prod.yaml"
        )));
    }
    Ok(())
}

pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Json<Project>), AppError> {
    let project = create_project(&state, &user, body).await?;
    Ok((StatusCode::CREATED, Json(project)))
}

pub async fn create_project(
    state: &AppState,
    user: &User,
    body: CreateProject,
) -> Result<Project, AppError> {
    validate_path(&body.path)?;
    if let Some(file) = &body.compose_file {
        validate_compose_file(file)?;
    }
    state
        .store
        .agent_visible_to(user, body.agent_id)
        .await
        .map_err(|_| AppError::BadRequest(format!("agent {} does not exist", body.agent_id)))?;
    let project = state
        .store
        .create_project(user, &body)
        .await
        .map_err(|error| match error {
            crate::db::DbError::Conflict(_) => {
                AppError::Conflict(format!("you already have a project named {}", body.name))
            }
            other => other.into(),
        })?;
    Ok(project)
}

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<Project>>, AppError> {
    Ok(Json(state.store.projects(&user).await?))
}

pub async fn show(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
) -> Result<Json<Project>, AppError> {
    Ok(Json(state.store.project(&user, id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
    ApiJson(changes): ApiJson<UpdateProject>,
) -> Result<Json<Project>, AppError> {
    if let Some(path) = &changes.path {
        validate_path(path)?;
    }
    if let Some(file) = changes
        .compose_file
        .as_deref()
        .filter(|file| !file.is_empty())
    {
        validate_compose_file(file)?;
    }
    if let Some(agent_id) = changes.agent_id {
        state
            .store
            .agent_visible_to(&user, agent_id)
            .await
            .map_err(|_| AppError::BadRequest(format!("agent {agent_id} does not exist")))?;
    }
    Ok(Json(state.store.update_project(&user, id, &changes).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
) -> Result<StatusCode, AppError> {
    state.store.delete_project(&user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
