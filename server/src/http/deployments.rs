//! `/deploy` and `/deployments`: start a deployment, follow it, read the history.

use super::{ApiPath, CurrentUser};
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::{DeployAccepted, Deployment};
use shared::{DeploymentId, ProjectId};

/// Queues a deployment and hands it to the agent if it is connected: 202 with its id.
pub async fn deploy(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project_id): ApiPath<ProjectId>,
) -> Result<(StatusCode, Json<DeployAccepted>), OpError> {
    let (store, vault, hub) = (&state.store, &state.vault, &state.hub);
    let accepted = ops::deployments::start(store, vault, hub, &user, project_id).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

pub async fn show(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<DeploymentId>,
) -> Result<Json<Deployment>, OpError> {
    Ok(Json(ops::deployments::show(&state.store, &user, id).await?))
}

pub async fn history(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project): ApiPath<ProjectId>,
) -> Result<Json<Vec<Deployment>>, OpError> {
    Ok(Json(
        ops::deployments::history(&state.store, &user, project).await?,
    ))
}

/// Runs an earlier successful deployment again, exactly: 202 with the new deployment's id.
pub async fn redeploy(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<DeploymentId>,
) -> Result<(StatusCode, Json<DeployAccepted>), OpError> {
    let (store, vault, hub) = (&state.store, &state.vault, &state.hub);
    let accepted = ops::deployments::redeploy(store, vault, hub, &user, id).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}
