//! `/secrets`: encrypted at rest, listed masked, revealed only by an audited call.

use super::{ApiJson, ApiPath, CurrentUser};
use crate::crypto::SecretAad;
use crate::db::{DbError, StoredSecret, User};
use crate::error::AppError;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use shared::api::{CreateSecret, RevealedSecret, SecretSummary, UpdateSecret};
use shared::{ProjectId, SecretId, SecretValue};
use uuid::Uuid;

/// Largest secret value accepted.
const MAX_VALUE_BYTES: usize = 64 * 1024;
const MASK: &str = "********";

fn check_value(value: &SecretValue) -> Result<(), AppError> {
    if value.expose().len() > MAX_VALUE_BYTES {
        return Err(AppError::BadRequest(format!(
            "a secret value may be at most {} KiB",
            MAX_VALUE_BYTES / 1024
        )));
    }
    if value.expose().contains('\0') {
        return Err(AppError::BadRequest(
            "a secret value cannot contain a NUL byte".into(),
        ));
    }
    Ok(())
}

fn summary(secret: StoredSecret) -> SecretSummary {
    SecretSummary {
        id: secret.id,
        project_id: secret.project_id,
        key: secret.key,
        scope: secret.scope,
        value: MASK.into(),
        updated_at: secret.updated_at,
    }
}

pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(body): ApiJson<CreateSecret>,
) -> Result<(StatusCode, Json<SecretSummary>), AppError> {
    let created = create_secret(&state, &user, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn create_secret(
    state: &AppState,
    user: &User,
    body: CreateSecret,
) -> Result<SecretSummary, AppError> {
    check_value(&body.value)?;
    let project = state.store.project(user, body.project_id).await?;
    let id = SecretId(Uuid::new_v4());
    let aad = SecretAad::for_row(project.id, id, &body.key);
    let stored = StoredSecret {
        id,
        project_id: project.id,
        key: body.key.clone(),
        scope: body.scope.clone(),
        ciphertext: state.keyring.encrypt(body.value.expose().as_bytes(), &aad),
        updated_at: time::OffsetDateTime::now_utc(),
    };
    state
        .store
        .insert_secret(&stored)
        .await
        .map_err(|error| match error {
            DbError::Conflict(_) => AppError::Conflict(format!(
                "secret {} with scope {} already exists in this project; update it instead",
                body.key, body.scope
            )),
            other => other.into(),
        })?;
    Ok(summary(stored))
}

pub async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project): ApiPath<ProjectId>,
) -> Result<Json<Vec<SecretSummary>>, AppError> {
    Ok(Json(list_secrets(&state, &user, project).await?))
}

pub async fn list_secrets(
    state: &AppState,
    user: &User,
    project: ProjectId,
) -> Result<Vec<SecretSummary>, AppError> {
    let project = state.store.project(user, project).await?;
    let secrets = state.store.secrets_of_project(project.id).await?;
    Ok(secrets.into_iter().map(summary).collect())
}

pub async fn update(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<SecretId>,
    ApiJson(body): ApiJson<UpdateSecret>,
) -> Result<Json<SecretSummary>, AppError> {
    Ok(Json(update_secret(&state, &user, id, body).await?))
}

pub async fn update_secret(
    state: &AppState,
    user: &User,
    id: SecretId,
    body: UpdateSecret,
) -> Result<SecretSummary, AppError> {
    check_value(&body.value)?;
    let current = state.store.secret(user, id).await?;
    let aad = SecretAad::for_row(current.project_id, current.id, &current.key);
    let ciphertext = state.keyring.encrypt(body.value.expose().as_bytes(), &aad);
    if !state
        .store
        .replace_ciphertext(id, &current.ciphertext, &ciphertext)
        .await?
    {
        return Err(AppError::Conflict(
            "the secret changed meanwhile; try again".into(),
        ));
    }
    Ok(summary(state.store.secret(user, id).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<SecretId>,
) -> Result<StatusCode, AppError> {
    state.store.delete_secret(&user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Returns the plaintext and records who asked.
pub async fn reveal(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(id): ApiPath<SecretId>,
) -> Result<Json<RevealedSecret>, AppError> {
    Ok(Json(reveal_secret(&state, &user, id).await?))
}

pub async fn reveal_secret(
    state: &AppState,
    user: &User,
    id: SecretId,
) -> Result<RevealedSecret, AppError> {
    let secret = state.store.secret(user, id).await?;
    let aad = SecretAad::for_row(secret.project_id, secret.id, &secret.key);
    let plaintext = state
        .keyring
        .decrypt(&secret.ciphertext, &aad)
        .map_err(|error| AppError::Unreadable(error.to_string()))?;
    let value = String::from_utf8(plaintext.to_vec())
        .map_err(|_| AppError::Unreadable("the secret is not valid UTF-8".into()))?;
    state
        .store
        .audit(user.id, "reveal_secret", &format!("secret:{id}"))
        .await?;
    tracing::info!(user = %user.login, secret_id = %id, key = %secret.key, "secret revealed");
    Ok(RevealedSecret {
        id,
        key: secret.key,
        value: SecretValue::new(value),
    })
}
