//! `/secrets`: encrypted at rest, listed masked, revealed only by an audited call.

use super::{ApiJson, ApiPath, CurrentUser};
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::{CreateSecret, RevealedSecret, SecretSummary, SecretVersion, UpdateSecret};
use shared::{ProjectId, SecretId};

pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateSecret>,
) -> Result<(StatusCode, Json<SecretSummary>), OpError> {
    let created = ops::secrets::create(&state.store, &state.vault, &user, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project): ApiPath<ProjectId>,
) -> Result<Json<Vec<SecretSummary>>, OpError> {
    Ok(Json(
        ops::secrets::list(&state.store, &state.vault, &user, project).await?,
    ))
}

pub async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<SecretId>,
    ApiJson(body): ApiJson<UpdateSecret>,
) -> Result<Json<SecretSummary>, OpError> {
    let updated = ops::secrets::update(&state.store, &state.vault, &user, id, body).await?;
    Ok(Json(updated))
}

pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<SecretId>,
) -> Result<StatusCode, OpError> {
    ops::secrets::delete(&state.store, &state.vault, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Returns the plaintext and records who asked.
pub async fn reveal(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<SecretId>,
) -> Result<Json<RevealedSecret>, OpError> {
    let revealed = ops::secrets::reveal(&state.store, &state.vault, &user, id).await?;
    Ok(Json(revealed))
}

/// The values a secret has had, newest first, hidden.
pub async fn versions(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<SecretId>,
) -> Result<Json<Vec<SecretVersion>>, OpError> {
    Ok(Json(ops::secrets::versions(&state.store, &user, id).await?))
}

/// Returns one earlier value's plaintext and records who asked.
pub async fn reveal_version(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath((id, version)): ApiPath<(SecretId, i64)>,
) -> Result<Json<RevealedSecret>, OpError> {
    let revealed =
        ops::secrets::reveal_version(&state.store, &state.vault, &user, id, version).await?;
    Ok(Json(revealed))
}
