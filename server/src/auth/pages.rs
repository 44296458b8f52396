//! The sign-in pages' form targets (first-admin setup, local sign-in, sign-out) and the guard
//! that keeps pages behind a session.
//!
//! The login and setup pages are plain HTML forms that post here and are redirected back, so
//! signing in works without JavaScript; errors come back as `?error=<code>`, one of the fixed
//! [`SignInError`] codes, whose sentence the page shows next to the form (never text from the
//! URL). Every sign-in issues a new session token, so a session id planted before login is
//! worthless. Password attempts (sign-in and setup) pass the sign-in throttle
//! ([`crate::ops::throttle`]) before any hashing; a refused one is answered 429 with
//! `Retry-After` and a page saying how long to wait. Pages are guarded by [`require_session`]:
//! without a session a fresh instance sends people to `/setup` (which creates the first admin),
//! any other to `/login`.

use super::{
    bearer_token, cookie, same_origin, session_user, set_cookie, ClientIp, SESSION_LIFETIME,
};
use crate::db::{SessionClient, User, MAX_USER_AGENT_CHARS};
use crate::ops::users::LocalSignIn;
use crate::ops::{self, OpError};
use crate::state::AppState;
use crate::token::{Token, TokenHash};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use shared::api::SignInError;
use shared::Login;
use std::time::Duration;

/// `/auth/...`: the form targets and the GitHub redirects.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/setup", post(setup))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/github", get(super::github::start))
        .route("/auth/github/callback", get(super::github::callback))
}

/// Starts a fresh session for `user` and sends the browser to the dashboard. The session
/// keeps the browser's `User-Agent` and address, so its owner can tell it apart in their list.
pub async fn sign_in(
    state: &AppState,
    user: &User,
    ClientIp(ip): ClientIp,
    headers: &HeaderMap,
) -> Result<Response, OpError> {
    let token = Token::generate();
    let client = SessionClient {
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|agent| agent.chars().take(MAX_USER_AGENT_CHARS).collect()),
        ip: ip.map(|ip| ip.to_string()),
    };
    state
        .store
        .create_session_from(user.id, &token.hash(), SESSION_LIFETIME, &client)
        .await?;
    tracing::info!(user = %user.login, "signed in");
    let name = state.config.session_cookie();
    let cookie = set_cookie(state, name, token.expose(), "/", SESSION_LIFETIME);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response())
}

/// The answer to a sign-in form the throttle refused: 429 with `Retry-After`, and a page that
/// says so in words (the browser shows this page, since it posted the form).
pub fn too_many_attempts(retry_after: Duration, page: &str) -> Response {
    let seconds = crate::error_response::retry_after_secs(retry_after);
    let wait = if seconds >= 120 {
        format!("{} minutes", seconds.div_ceil(60))
    } else {
        format!("{seconds} seconds")
    };
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Too many sign-in attempts - Stagely</title>\
         <link rel=\"stylesheet\" href=\"/pkg/stagely.css\"></head>\
         <body><main><section class=\"panel narrow\"><h1>Too many sign-in attempts</h1>\
         <p class=\"error\" role=\"alert\">{}</p><p>Try again in {wait}.</p>\
         <p><a class=\"btn\" href=\"{page}\">Back</a></p></section></main></body></html>\n",
        SignInError::TooManyAttempts.message()
    );
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (header::RETRY_AFTER, HeaderValue::from(seconds)),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
        ],
        body,
    )
        .into_response()
}

/// Back to a form page with the sentence of `error` shown next to it.
pub fn back_with_error(page: &str, error: SignInError) -> Response {
    Redirect::to(&format!("{page}?error={}", error.code())).into_response()
}

#[derive(Deserialize)]
struct SetupForm {
    login: String,
    password: String,
    password_confirm: String,
}

/// Creates the first admin of a fresh instance and signs them in.
async fn setup(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
    Form(form): Form<SetupForm>,
) -> Result<Response, OpError> {
    // The message never repeats what was typed: it ends up in the URL (and browser history),
    // and people do type a password into the wrong field.
    let Ok(login) = Login::parse(form.login) else {
        return Ok(back_with_error("/setup", SignInError::BadUsername));
    };
    if ops::users::check_password(&form.password).is_err() {
        return Ok(back_with_error("/setup", SignInError::ShortPassword));
    }
    if form.password != form.password_confirm {
        return Ok(back_with_error("/setup", SignInError::PasswordsDiffer));
    }
    let created = ops::users::set_up_first_admin(
        &state.store,
        &state.throttle,
        client.0,
        login,
        form.password,
    )
    .await;
    match created {
        Ok(Some(admin)) => {
            tracing::info!(user = %admin.login, "first admin created through the setup page");
            sign_in(&state, &admin, client, &headers).await
        }
        Ok(None) => Ok(back_with_error("/login", SignInError::AlreadySetUp)),
        Err(OpError::Throttled { retry_after }) => Ok(too_many_attempts(retry_after, "/setup")),
        Err(error) => Err(error),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    login: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, OpError> {
    let outcome = ops::users::sign_in_local(
        &state.store,
        &state.throttle,
        client.0,
        &form.login,
        form.password,
    )
    .await;
    match outcome {
        Ok(LocalSignIn::Accepted(user)) => sign_in(&state, &user, client, &headers).await,
        Ok(LocalSignIn::Refused) => {
            tracing::info!(login = %form.login.trim(), "failed sign-in");
            Ok(back_with_error("/login", SignInError::WrongPassword))
        }
        Ok(LocalSignIn::Disabled) => {
            tracing::info!(login = %form.login.trim(), "sign-in of a disabled account refused");
            Ok(back_with_error("/login", SignInError::Disabled))
        }
        Err(OpError::Throttled { retry_after }) => {
            tracing::info!(login = %form.login.trim(), ip = ?client.0, "sign-in throttled");
            Ok(too_many_attempts(retry_after, "/login"))
        }
        Err(error) => Err(error),
    }
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, OpError> {
    let name = state.config.session_cookie();
    if let Some(token) = cookie(&headers, name) {
        // The person's open feeds on this session close now, on every replica.
        if let Some(user) = state.store.delete_session(&TokenHash::of(token)).await? {
            state.hub.credentials_revoked(user);
        }
    }
    let expired = set_cookie(&state, name, "", "/", Duration::ZERO);
    Ok(([(header::SET_COOKIE, expired)], Redirect::to("/login")).into_response())
}

/// Paths anyone may load: the sign-in pages, their form targets, assets and the APIs (which
/// authenticate each request themselves).
fn is_public(path: &str) -> bool {
    ["/auth/", "/api/", "/pkg/", "/downloads/"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
        || matches!(path, "/healthz" | "/favicon.ico" | "/install.sh")
}

/// Sends people without a session to `/login` (or `/setup` on a fresh instance), and people
/// with one away from those pages.
pub async fn require_session(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    // Cross-site request forgery: a page of another origin (even a sibling subdomain, which
    // SameSite=Lax lets through) may not post the sign-in forms or call server functions with
    // the visitor's cookie. API clients with a bearer token carry no ambient authority.
    let has_bearer = bearer_token(request.headers()).is_some();
    if !reads && !has_bearer && !same_origin(request.headers(), &state.config.public_url) {
        return OpError::Forbidden("cross-origin requests are refused".into()).into_response();
    }
    if !reads || is_public(path) {
        return next.run(request).await;
    }
    let cookie_name = state.config.session_cookie();
    let signed_in = match session_user(&state.store, request.headers(), cookie_name).await {
        Ok(user) => user.is_some(),
        Err(error) => return error.into_response(),
    };
    let sign_in_page = matches!(path, "/login" | "/setup");
    if signed_in {
        return if sign_in_page {
            Redirect::to("/").into_response()
        } else {
            next.run(request).await
        };
    }
    let has_users = match state.store.has_users().await {
        Ok(has_users) => has_users,
        Err(error) => return OpError::from(error).into_response(),
    };
    // With GitHub sign-in configured the first person may arrive through GitHub, so the login
    // page stays reachable on a fresh instance too.
    let github = state.config.github.is_some();
    match (path, has_users) {
        ("/setup", false) | ("/login", true) => next.run(request).await,
        ("/login", false) if github => next.run(request).await,
        (_, false) if !github => Redirect::to("/setup").into_response(),
        _ => Redirect::to("/login").into_response(),
    }
}
