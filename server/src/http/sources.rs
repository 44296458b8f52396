//! `/projects/{id}/source/…`: a Git project's credentials and pinned host key. The repository
//! settings themselves are set with the project (`POST /projects`, `PATCH /projects/{id}`).

use super::{ApiJson, ApiPath, CurrentUser};
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use shared::source::{GitSourceView, SetGitToken};
use shared::ProjectId;

/// Generates a new SSH deploy key; the answer shows its public half (never the private one).
pub async fn generate_deploy_key(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
) -> Result<Json<GitSourceView>, OpError> {
    let view = ops::sources::generate_deploy_key(&state.store, &state.vault, &user, id).await?;
    Ok(Json(view))
}

/// Sets or removes the https access token; the answer says only whether one is set.
pub async fn set_token(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
    ApiJson(body): ApiJson<SetGitToken>,
) -> Result<Json<GitSourceView>, OpError> {
    let view = ops::sources::set_token(&state.store, &state.vault, &user, id, body).await?;
    Ok(Json(view))
}

/// Forgets the pinned SSH host key: the next deploy trusts the key it meets.
pub async fn forget_host_key(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<ProjectId>,
) -> Result<Json<GitSourceView>, OpError> {
    Ok(Json(
        ops::sources::forget_host_key(&state.store, &user, id).await?,
    ))
}
