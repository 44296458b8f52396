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
            Self::NoSuch(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_reference"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
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
        if let Self::Throttled { retry_after } = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                retry_after_secs(retry_after).into(),
            );
        }
        response
    }
}

/// `Retry-After` in whole seconds, rounded up (at least 1).
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

impl From<JsonRejection> for OpError {
    fn from(rejection: JsonRejection) -> Self {
        OpError::Invalid(without_type_names(&rejection.body_text()))
    }
}

impl From<PathRejection> for OpError {
    fn from(rejection: PathRejection) -> Self {
        OpError::Invalid(without_type_names(&rejection.body_text()))
    }
}

impl From<QueryRejection> for OpError {
    fn from(rejection: QueryRejection) -> Self {
        OpError::Invalid(without_type_names(&rejection.body_text()))
    }
}

/// serde's words with the server's Rust type names taken out: `expected struct CreateProject`
/// becomes `expected an object`, `expected enum X` becomes `expected one of its values`.
/// What the client sent and which field it was stay, since they say what to fix.
fn without_type_names(text: &str) -> String {
    const KINDS: [(&str, &str); 4] = [
        ("expected tuple struct ", "expected a list"),
        ("expected unit struct ", "expected null"),
        ("expected struct ", "expected an object"),
        ("expected enum ", "expected one of its values"),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        for (kind, replacement) in KINDS {
            if let Some(after) = rest.strip_prefix(kind) {
                let name_len = after
                    .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | ':' | '<' | '>')))
                    .unwrap_or(after.len());
                out.push_str(replacement);
                rest = &after[name_len..];
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::without_type_names;

    #[test]
    fn rejection_texts_lose_the_servers_type_names() {
        assert_eq!(
            without_type_names(
                "Failed to deserialize the JSON body into the target type: invalid type: \
                 string \"x\", expected struct CreateProject at line 1 column 3"
            ),
            "Failed to deserialize the JSON body into the target type: invalid type: \
             string \"x\", expected an object at line 1 column 3"
        );
        assert_eq!(
            without_type_names("scope: invalid type: integer `1`, expected enum SecretScope"),
            "scope: invalid type: integer `1`, expected one of its values"
        );
        let plain = "name: unknown variant `x`, expected `global` or `service`";
        assert_eq!(without_type_names(plain), plain);
    }
}
