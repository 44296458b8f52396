//! `/deploy` and `/deployments`: start a deployment, follow it, read the history.

use super::{ApiPath, CurrentUser};
use crate::db::User;
use crate::error::AppError;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::{DeployAccepted, Deployment, DeploymentStatus};
use shared::{DeploymentId, ProjectId};

/// Queues a deployment and hands it to the agent if it is connected: 202 with its id.
pub async fn deploy(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project_id): ApiPath<ProjectId>,
) -> Result<(StatusCode, Json<DeployAccepted>), AppError> {
    let accepted = start_deploy(&state, &user, project_id).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

pub async fn start_deploy(
    state: &AppState,
    user: &User,
    project_id: ProjectId,
) -> Result<DeployAccepted, AppError> {
    let project = state.store.project(user, project_id).await?;
    let (deployment_id, job_id) = state.store.create_deployment(project.id, user.id).await?;
    if let Err(error) = crate::jobs::dispatch(state, deployment_id, job_id, &project).await {
        // Nothing was sent: say so on the deployment instead of leaving it queued for good.
        let message = format!("the deploy could not be prepared: {error}");
        crate::jobs::set_status(
            state,
            deployment_id,
            project.id,
            DeploymentStatus::Failed,
            Some(&message),
        )
        .await?;
        return Err(error);
    }
    Ok(DeployAccepted { deployment_id })
}

pub async fn show(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<DeploymentId>,
) -> Result<Json<Deployment>, AppError> {
    Ok(Json(state.store.deployment(&user, id).await?))
}

pub async fn history(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project): ApiPath<ProjectId>,
) -> Result<Json<Vec<Deployment>>, AppError> {
    Ok(Json(
        state.store.deployments_of_project(&user, project).await?,
    ))
}
