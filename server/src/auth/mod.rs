//! Signing in to the dashboard: local accounts (the embedded default), GitHub OAuth, sessions.
//!
//! A session is a random token in an HttpOnly, SameSite=Lax cookie (Secure over https); the
//! database keeps only its hash. Every sign-in issues a new token, so a session id planted
//! before login is worthless. The login and setup pages are plain HTML forms that post here
//! and are redirected back, so signing in works without JavaScript; errors come back as
//! `?error=…` and are shown next to the form.
//!
//! Pages are guarded by [`require_session`]: without a session a fresh instance sends people
//! to `/setup` (which creates the first admin), any other to `/login`.

pub mod github;

use crate::db::User;
use crate::error::AppError;
use crate::token::{Token, TokenHash};
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use std::time::Duration;

/// The session cookie.
pub const SESSION_COOKIE: &str = "stagely_session";
/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(14 * 24 * 3600);

/// `/auth/...`: the form targets and the GitHub redirects.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/setup", post(setup))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/github", get(github::start))
        .route("/auth/github/callback", get(github::callback))
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| shared::cookie_value(value, name))
}

/// A `Set-Cookie` value: HttpOnly and SameSite=Lax always, Secure when served over https.
pub fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    max_age: Duration,
) -> HeaderValue {
    let secure = if state.config.is_https() {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        max_age.as_secs()
    );
    HeaderValue::from_str(&cookie).expect("cookie values are URL-safe base64")
}

/// The user whose session cookie the request carries, if it is valid.
pub async fn session_user(state: &AppState, headers: &HeaderMap) -> Result<Option<User>, AppError> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    Ok(state.store.user_by_session(&TokenHash::of(token)).await?)
}

/// A browser sends `Origin`; it must be this server, as the browser reached it (`Host`) or as
/// configured (`STAGELY_PUBLIC_URL`). Requests without one do not come from a web page.
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let origin_host = origin
        .split_once("://")
        .map(|(_, host)| host)
        .unwrap_or(origin);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    origin == public_url || Some(origin_host) == host
}

/// Starts a fresh session for `user` and sends the browser to the dashboard.
pub async fn sign_in(state: &AppState, user: &User) -> Result<Response, AppError> {
    let token = Token::generate();
    state
        .store
        .create_session(user.id, &token.hash(), SESSION_LIFETIME)
        .await?;
    tracing::info!(user = %user.login, "signed in");
    let cookie = set_cookie(state, SESSION_COOKIE, token.expose(), "/", SESSION_LIFETIME);
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response())
}

/// Back to a form page with a message shown next to it.
pub fn back_with_error(page: &str, message: &str) -> Response {
    let query = shared::percent_encode(message);
    Redirect::to(&format!("{page}?error={query}")).into_response()
}

/// Local logins: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn validate_login(login: &str) -> Result<&str, String> {
    let login = login.trim();
    let valid = !login.is_empty()
        && login.len() <= 64
        && login
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(login)
    } else {
        Err("The username must be 1 to 64 letters, digits, dots, dashes or underscores.".into())
    }
}

/// The shortest password a local account accepts (the CLI enforces the same).
pub const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Deserialize)]
struct SetupForm {
    login: String,
    password: String,
    password_confirm: String,
}

/// Creates the first admin of a fresh instance and signs them in.
async fn setup(
    State(state): State<AppState>,
    Form(form): Form<SetupForm>,
) -> Result<Response, AppError> {
    let login = match validate_login(&form.login) {
        Ok(login) => login,
        Err(message) => return Ok(back_with_error("/setup", &message)),
    };
    if form.password.chars().count() < MIN_PASSWORD_CHARS {
        let message = format!("The password must be at least {MIN_PASSWORD_CHARS} characters.");
        return Ok(back_with_error("/setup", &message));
    }
    if form.password != form.password_confirm {
        return Ok(back_with_error("/setup", "The two passwords differ."));
    }
    let password = form.password.clone();
    let hash = slow_hash(move || crate::crypto::hash_password(&password))
        .await?
        .map_err(anyhow::Error::from)?;
    match state.store.create_first_admin(login, &hash).await? {
        Some(admin) => {
            tracing::info!(user = %admin.login, "first admin created through the setup page");
            sign_in(&state, &admin).await
        }
        None => Ok(back_with_error(
            "/login",
            "This instance is already set up; sign in instead.",
        )),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    login: String,
    password: String,
}

/// A hash checked when the login is unknown, so that a wrong username takes as long to refuse
/// as a wrong password.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::crypto::hash_password("no account has this password").unwrap_or_default()
});

async fn login(
    State(state): State<AppState>,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let account = state.store.local_account(form.login.trim()).await?;
    let stored = match &account {
        Some((_, Some(hash))) => hash.clone(),
        _ => DUMMY_HASH.clone(),
    };
    let password = form.password.clone();
    let matches = slow_hash(move || crate::crypto::verify_password(&password, &stored)).await?;
    let verified = match &account {
        Some((user, Some(_))) if matches => Some(user),
        _ => None,
    };
    match verified {
        Some(user) => sign_in(&state, user).await,
        None => {
            tracing::info!(login = %form.login.trim(), "failed sign-in");
            Ok(back_with_error("/login", "Wrong username or password."))
        }
    }
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, AppError> {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        state.store.delete_session(&TokenHash::of(token)).await?;
    }
    let expired = set_cookie(&state, SESSION_COOKIE, "", "/", Duration::ZERO);
    Ok(([(header::SET_COOKIE, expired)], Redirect::to("/login")).into_response())
}

/// Password hashing takes tens of milliseconds of CPU and ~19 MiB: it runs on the blocking
/// pool, two at a time, so a flood of sign-in attempts cannot stall the agents' sockets.
async fn slow_hash<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    static PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _permit = PERMITS
        .acquire()
        .await
        .map_err(|error| AppError::Internal(error.into()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| AppError::Internal(error.into()))
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
    let has_bearer = crate::stream::bearer_token(request.headers()).is_some();
    if !reads && !has_bearer && !same_origin(request.headers(), &state.config.public_url) {
        return AppError::Forbidden("cross-origin requests are refused".into()).into_response();
    }
    if !reads || is_public(path) {
        return next.run(request).await;
    }
    let signed_in = match session_user(&state, request.headers()).await {
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
        Err(error) => return AppError::from(error).into_response(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; stagely_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "stagely"), None);
        headers.insert(header::COOKIE, "stagely_session=".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE), None);
    }

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_pages_of_this_server_count_as_same_origin() {
        let public = "https://deploy.example.com";
        assert!(same_origin(
            &headers(Some("http://127.0.0.1:3000"), "127.0.0.1:3000"),
            public
        ));
        assert!(same_origin(
            &headers(Some("https://deploy.example.com"), "10.0.0.5:3000"),
            public
        ));
        assert!(same_origin(&headers(None, "127.0.0.1:3000"), public));
        assert!(!same_origin(
            &headers(Some("https://evil.example"), "127.0.0.1:3000"),
            public
        ));
    }
}
