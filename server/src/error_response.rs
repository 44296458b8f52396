//! How an [`OpError`] becomes an HTTP answer: the one place that maps errors to status codes,
//! for the REST API and for every other HTTP handler (sign-in pages, socket upgrades).
//!
//! The body is always `{"error": {"code", "message"}}`. Client errors say what to fix; a server
//! error says only "internal error" and the cause chain goes to the log.

use crate::ops::OpError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

impl IntoResponse for OpError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::Unreadable(_) => (StatusCode::INTERNAL_SERVER_ERROR, "secret_unreadable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = match &self {
            Self::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let body = serde_json::json!({ "error": { "code": code, "message": message } });
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Self::Busy(_)) {
            // Jittered, so the refused do not all return in the same second.
            let retry_after = u16::from(rand::random::<u8>() % 5 + 1);
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, retry_after.into());
        }
        response
    }
}

impl From<JsonRejection> for OpError {
    fn from(rejection: JsonRejection) -> Self {
        OpError::Invalid(rejection.body_text())
    }
}

impl From<PathRejection> for OpError {
    fn from(rejection: PathRejection) -> Self {
        OpError::Invalid(rejection.body_text())
    }
}

impl From<QueryRejection> for OpError {
    fn from(rejection: QueryRejection) -> Self {
        OpError::Invalid(rejection.body_text())
    }
}
