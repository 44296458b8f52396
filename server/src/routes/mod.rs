//! The REST API under `/api/v1`: JSON in and out, errors as `{"error": {"code", "message"}}`.
//!
//! Every request is authenticated ([`CurrentUser`]) and every lookup goes through the user, so
//! another user's id answers 404 exactly like an id that does not exist.

pub mod agents;
pub mod deployments;
pub mod openapi;
pub mod projects;
pub mod secrets;

use crate::error::AppError;
use crate::token::TokenHash;
use crate::AppState;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;

/// The API's routes, to be nested under `/api/v1`.
pub fn api() -> Router<AppState> {
    Router::new()
        .route("/agents", post(agents::create).get(agents::list))
        .route("/agents/{id}", axum::routing::delete(agents::revoke))
        .route("/join-tokens", post(crate::provisioning::create))
        .route("/projects", post(projects::create).get(projects::list))
        .route(
            "/projects/{id}",
            get(projects::show)
                .patch(projects::update)
                .delete(projects::delete),
        )
        .route("/projects/{id}/secrets", get(secrets::list))
        .route("/projects/{id}/deployments", get(deployments::history))
        .route("/secrets", post(secrets::create))
        .route(
            "/secrets/{id}",
            axum::routing::patch(secrets::update).delete(secrets::delete),
        )
        .route("/secrets/{id}/reveal", post(secrets::reveal))
        .route("/deploy/{project_id}", post(deployments::deploy))
        .route("/deployments/{id}", get(deployments::show))
        .route("/openapi.json", get(openapi::document))
        .fallback(|| async { AppError::NotFound })
}

/// The authenticated user: `Authorization: Bearer <user API token>`, or the dashboard's
/// session cookie. A cookie only counts on requests from this server's own pages, so another
/// site cannot act with the visitor's session.
pub struct CurrentUser(pub crate::db::User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let bearer = crate::stream::bearer_token(&parts.headers).is_some();
        if !bearer && !crate::auth::same_origin(&parts.headers, &state.config.public_url) {
            return Err(AppError::Forbidden(
                "cross-origin requests are refused".into(),
            ));
        }
        match user_of(state, &parts.headers).await? {
            Some(user) => Ok(CurrentUser(user)),
            None if bearer => Err(AppError::Unauthorized("unknown API token".into())),
            None => Err(AppError::Unauthorized(
                "missing `Authorization: Bearer <API token>` header or session".into(),
            )),
        }
    }
}

/// Whom a request's credentials name: its API token when it carries one, else its session
/// cookie. (Where the request came from is the caller's to check.)
pub async fn user_of(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<crate::db::User>, AppError> {
    match crate::stream::bearer_token(headers) {
        Some(token) => Ok(state.store.user_by_api_token(&TokenHash::of(token)).await?),
        None => crate::auth::session_user(state, headers).await,
    }
}

/// `Json` whose rejections (bad JSON, a field that fails validation) are API errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct ApiJson<T>(pub T);

/// `Path` whose rejections (an id that is not a UUID) are API errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct ApiPath<T>(pub T);

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        AppError::BadRequest(rejection.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        AppError::BadRequest(rejection.body_text())
    }
}
