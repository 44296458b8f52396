//! `/projects/{id}/webhook` (a project's push webhook: create, show, rotate its secret, delete)
//! and `POST /api/v1/hooks/{hook_id}`, where Git hosts deliver pushes.
//!
//! The delivery endpoint takes no API token (a Git host has none): the hook's secret proves
//! the sender, checked by `ops::webhooks::receive` over the raw body. This adapter only bounds
//! the body before it is read whole ([`MAX_BODY_BYTES`], 413), so a flood of forged deliveries
//! can neither make the server hash large bodies nor hold them in memory. Its path parameter is
//! not a UUID, so it sits outside the route table (like the sockets) and out of the OpenAPI
//! document, whose operations all take an API token.

use super::{ApiPath, CurrentUser};
use crate::ops::webhooks::{DeliveryHeaders, MAX_BODY_BYTES};
use crate::ops::{self, OpError};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shared::webhooks::{DeliveryOutcome, Webhook, WebhookCreated};
use shared::ProjectId;

/// Creates the project's webhook: 201 with its URL and its secret, shown only here.
pub async fn create(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project): ApiPath<ProjectId>,
) -> Result<(StatusCode, Json<WebhookCreated>), OpError> {
    let created = ops::webhooks::create(
        &state.store,
        &state.vault,
        &state.config.public_url,
        &user,
        project,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn show(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project): ApiPath<ProjectId>,
) -> Result<Json<Webhook>, OpError> {
    let hook = ops::webhooks::show(&state.store, &state.config.public_url, &user, project).await?;
    Ok(Json(hook))
}

/// Replaces the webhook's secret: the new one is shown only here.
pub async fn rotate(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project): ApiPath<ProjectId>,
) -> Result<Json<WebhookCreated>, OpError> {
    let rotated = ops::webhooks::rotate(
        &state.store,
        &state.vault,
        &state.config.public_url,
        &user,
        project,
    )
    .await?;
    Ok(Json(rotated))
}

pub async fn delete(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiPath(project): ApiPath<ProjectId>,
) -> Result<StatusCode, OpError> {
    ops::webhooks::delete(&state.store, &user, project).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A delivery: 202 when it started (or queued) a deploy, 200 for a ping, a duplicate or a
/// push that is ignored; 401 for any failed proof, 404 for an unknown hook, 413 for a body
/// over [`MAX_BODY_BYTES`], 400 for a signed body that is not the event's JSON.
pub async fn receive(
    State(state): State<AppState>,
    Path(hook_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The hook first: an unknown one is 404 before any of the body is read.
    let target = match ops::webhooks::target(&state.store, &hook_id).await {
        Ok(target) => target,
        Err(error) => return error.into_response(),
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return too_large();
    }
    // Also bounds a chunked body that never declared its length.
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return too_large();
    };
    let delivery = delivery_headers(&headers);
    let received = ops::webhooks::receive(
        &state.store,
        &state.vault,
        &state.hub,
        &state.webhooks,
        target,
        &delivery,
        &body,
    )
    .await;
    match received {
        Ok(receipt) => {
            let status = match receipt.outcome {
                DeliveryOutcome::Deployed | DeliveryOutcome::Pending => StatusCode::ACCEPTED,
                DeliveryOutcome::Duplicate | DeliveryOutcome::Ignored | DeliveryOutcome::Ping => {
                    StatusCode::OK
                }
                // Only a waiting deploy's later failure is recorded so; no receipt says it.
                DeliveryOutcome::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, Json(receipt)).into_response()
        }
        Err(error) => error.into_response(),
    }
}

fn too_large() -> Response {
    let message = format!("the delivery's body is over {MAX_BODY_BYTES} bytes");
    let body = serde_json::json!({ "error": { "code": "payload_too_large", "message": message } });
    (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response()
}

/// The headers `ops::webhooks` reads, as text.
fn delivery_headers(headers: &HeaderMap) -> DeliveryHeaders {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    DeliveryHeaders {
        github_event: text("x-github-event"),
        github_delivery: text("x-github-delivery"),
        hub_signature_256: text("x-hub-signature-256"),
        gitlab_event: text("x-gitlab-event"),
        gitlab_token: text("x-gitlab-token"),
        gitlab_event_uuid: text("x-gitlab-event-uuid"),
        gitea_event: text("x-gitea-event"),
        gitea_delivery: text("x-gitea-delivery"),
        gitea_signature: text("x-gitea-signature"),
        forgejo_event: text("x-forgejo-event"),
        forgejo_delivery: text("x-forgejo-delivery"),
        forgejo_signature: text("x-forgejo-signature"),
        idempotency_key: text("idempotency-key"),
        authorization: text("authorization"),
        content_type: text("content-type"),
    }
}
