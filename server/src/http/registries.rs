//! `/projects/{id}/registry-credentials` and `/agents/{id}/registry-credentials`: the
//! credentials a deploy pulls and builds images with, set per registry, never read back.

use super::{ApiJson, ApiPath, CurrentUser};
use crate::db::RegistryOwner;
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::registry::{RegistryCredentialSummary, SetRegistryCredential};
use shared::{AgentId, ProjectId, RegistryHost};

pub async fn list_of_project(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
) -> Result<Json<Vec<RegistryCredentialSummary>>, OpError> {
    Ok(Json(
        ops::registries::list_of_project(&state.store, &user, id).await?,
    ))
}

pub async fn set_for_project(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
    ApiJson(body): ApiJson<SetRegistryCredential>,
) -> Result<Json<RegistryCredentialSummary>, OpError> {
    let owner = RegistryOwner::Project(id);
    let set = ops::registries::set(&state.store, &state.vault, &user, owner, body).await?;
    Ok(Json(set))
}

pub async fn delete_of_project(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath((id, registry)): ApiPath<(ProjectId, RegistryHost)>,
) -> Result<StatusCode, OpError> {
    let owner = RegistryOwner::Project(id);
    ops::registries::delete(&state.store, &user, owner, &registry).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_of_agent(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<AgentId>,
) -> Result<Json<Vec<RegistryCredentialSummary>>, OpError> {
    Ok(Json(
        ops::registries::list_of_agent(&state.store, &user, id).await?,
    ))
}

pub async fn set_for_agent(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<AgentId>,
    ApiJson(body): ApiJson<SetRegistryCredential>,
) -> Result<Json<RegistryCredentialSummary>, OpError> {
    let owner = RegistryOwner::Agent(id);
    let set = ops::registries::set(&state.store, &state.vault, &user, owner, body).await?;
    Ok(Json(set))
}

pub async fn delete_of_agent(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath((id, registry)): ApiPath<(AgentId, RegistryHost)>,
) -> Result<StatusCode, OpError> {
    let owner = RegistryOwner::Agent(id);
    ops::registries::delete(&state.store, &user, owner, &registry).await?;
    Ok(StatusCode::NO_CONTENT)
}
