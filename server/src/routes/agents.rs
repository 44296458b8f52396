//! `/agents`: register, list and revoke the hosts a user deploys to.

use super::{ApiJson, ApiPath, CurrentUser};
use crate::dashboard::summarize;
use crate::db::User;
use crate::error::AppError;
use crate::token::Token;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::{AgentCreated, AgentSummary, CreateAgent};
use shared::AgentId;

/// Agent names: 1 to 64 printable characters.
pub fn validate_name(name: &str) -> Result<&str, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(AppError::BadRequest(
            "the agent name must be 1 to 64 printable characters".into(),
        ));
    }
    Ok(name)
}

pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<(StatusCode, Json<AgentCreated>), AppError> {
    let name = validate_name(&body.name)?;
    let token = Token::generate();
    let agent = state
        .store
        .create_agent(name, &token.hash(), Some(user.id))
        .await?;
    let created = AgentCreated {
        agent: summarize(agent, &state.hub),
        token: token.expose().to_string(),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
) -> Result<Json<Vec<AgentSummary>>, AppError> {
    Ok(Json(list_agents(&state, &user).await?))
}

pub async fn list_agents(state: &AppState, user: &User) -> Result<Vec<AgentSummary>, AppError> {
    let agents = state.store.agents_visible_to(user).await?;
    Ok(agents
        .into_iter()
        .map(|agent| summarize(agent, &state.hub))
        .collect())
}

/// Revokes the agent's token and closes its live session at once.
pub async fn revoke(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<AgentId>,
) -> Result<StatusCode, AppError> {
    revoke_agent(&state, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn revoke_agent(state: &AppState, user: &User, id: AgentId) -> Result<(), AppError> {
    state.store.agent_visible_to(user, id).await?;
    state.store.revoke_agent(id).await?;
    state.hub.disconnect(id, "agent token revoked");
    Ok(())
}
