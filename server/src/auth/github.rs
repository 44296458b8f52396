//! "Sign in with GitHub": the OAuth authorization-code flow with PKCE (S256).
//!
//! `/auth/github` stores a fresh `state` and PKCE verifier under the hash of a short-lived
//! pre-login cookie and redirects to GitHub. `/auth/github/callback` takes that row (deleting
//! it: each is used once), checks the `state`, trades the code and verifier for a token, asks
//! the API who the person is, checks them against the allowed users and organizations and
//! signs them in. Every failure sends the person back to the login page with the reason.

use super::pages::{back_with_error, sign_in};
use super::{cookie, set_cookie, ClientIp};
use crate::config::GitHubConfig;
use crate::ops::OpError;
use crate::state::AppState;
use crate::token::{Token, TokenHash};
use anyhow::Context;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse, TokenUrl,
};
use serde::Deserialize;
use shared::api::SignInError;
use std::time::Duration;

/// The pre-login cookie, scoped to the GitHub routes.
const LOGIN_COOKIE: &str = "stagely_github_login";
/// How long a person may take on GitHub's consent page.
pub const ATTEMPT_LIFETIME: Duration = crate::ops::users::SIGN_IN_ATTEMPT_LIFETIME;
const COOKIE_PATH: &str = "/auth/github";

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

fn client(github: &GitHubConfig, public_url: &str) -> anyhow::Result<Client> {
    Ok(BasicClient::new(ClientId::new(github.client_id.clone()))
        .set_client_secret(ClientSecret::new(github.client_secret.clone()))
        .set_auth_type(AuthType::RequestBody)
        .set_auth_uri(AuthUrl::new(format!(
            "{}/login/oauth/authorize",
            github.web_url
        ))?)
        .set_token_uri(TokenUrl::new(format!(
            "{}/login/oauth/access_token",
            github.web_url
        ))?)
        .set_redirect_uri(RedirectUrl::new(format!(
            "{public_url}/auth/github/callback"
        ))?))
}

/// The GitHub settings, or `None` with the page to send the person back to.
fn configured(state: &AppState) -> Option<&GitHubConfig> {
    state.config.github.as_ref()
}

fn not_configured() -> Response {
    back_with_error("/login", SignInError::GitHubNotConfigured)
}

/// Redirects to GitHub's consent page.
pub async fn start(State(state): State<AppState>) -> Result<Response, OpError> {
    let Some(github) = configured(&state) else {
        return Ok(not_configured());
    };
    let client = client(github, &state.config.public_url)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("read:user".into()))
        .set_pkce_challenge(challenge);
    if !github.allowed_orgs.is_empty() {
        request = request.add_scope(Scope::new("read:org".into()));
    }
    let (url, csrf) = request.url();
    let browser = Token::generate();
    state
        .store
        .save_login_attempt(&browser.hash(), csrf.secret(), verifier.secret())
        .await?;
    let cookie = set_cookie(
        &state,
        LOGIN_COOKIE,
        browser.expose(),
        COOKIE_PATH,
        ATTEMPT_LIFETIME,
    );
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(url.as_str())).into_response())
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// GitHub sends the person back here with a code (or an error).
pub async fn callback(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Result<Response, OpError> {
    let Some(github) = configured(&state) else {
        return Ok(not_configured());
    };
    let clear = set_cookie(&state, LOGIN_COOKIE, "", COOKIE_PATH, Duration::ZERO);
    let outcome = finish(&state, github, &headers, callback).await;
    let mut response = match outcome {
        Ok(user) => sign_in(&state, &user, client, &headers).await?,
        Err(Refusal(error)) => {
            tracing::info!(reason = error.message(), "GitHub sign-in refused");
            back_with_error("/login", error)
        }
    };
    // Appended: the sign-in's session cookie is in the same response.
    response.headers_mut().append(header::SET_COOKIE, clear);
    Ok(response)
}

/// Why a GitHub sign-in did not happen: one of the fixed codes the login page words.
struct Refusal(SignInError);

impl From<OpError> for Refusal {
    fn from(error: OpError) -> Self {
        tracing::error!(error = format!("{error:#}"), "GitHub sign-in failed");
        Refusal(SignInError::ServerError)
    }
}

async fn finish(
    state: &AppState,
    github: &GitHubConfig,
    headers: &HeaderMap,
    callback: Callback,
) -> Result<crate::db::User, Refusal> {
    if let Some(error) = callback.error {
        // GitHub's words come from the URL, which anyone can write: logged, not shown.
        let detail = callback.error_description.unwrap_or(error);
        tracing::info!(%detail, "GitHub did not sign the person in");
        return Err(Refusal(SignInError::GitHubDenied));
    }
    let expired = || Refusal(SignInError::Expired);
    let browser = cookie(headers, LOGIN_COOKIE).ok_or_else(expired)?;
    let attempt = state
        .store
        .take_login_attempt(&TokenHash::of(browser))
        .await
        .map_err(OpError::from)?
        .ok_or_else(expired)?;
    if crate::db::now_ms() - attempt.created_at > ATTEMPT_LIFETIME.as_millis() as i64 {
        return Err(expired());
    }
    let returned_state = callback.state.unwrap_or_default();
    if !constant_time_eq(returned_state.as_bytes(), attempt.state.as_bytes()) {
        return Err(Refusal(SignInError::Mismatch));
    }
    let code = callback.code.ok_or(Refusal(SignInError::NoCode))?;

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .context("building the HTTP client")
        .map_err(OpError::from)?;
    let token = client(github, &state.config.public_url)
        .map_err(OpError::from)?
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(attempt.pkce_verifier))
        .request_async(&http)
        .await
        .map_err(|error| {
            tracing::warn!(error = %error, "GitHub refused the authorization code");
            Refusal(SignInError::GitHubRejectedCode)
        })?;
    let access = token.access_token().secret();
    let person: GitHubUser = api_get(&http, github, access, "/user").await?;
    if !allowed(&http, github, access, &person).await? {
        tracing::info!(login = %person.login, id = person.id, "GitHub account not allowed to sign in");
        return Err(Refusal(SignInError::NotAllowed));
    }
    let store = &state.store;
    match store.github_user(person.id, &person.login).await {
        Ok((user, false)) => Ok(user),
        Ok((_, true)) => {
            tracing::info!(login = %person.login, "GitHub sign-in of a disabled account refused");
            Err(Refusal(SignInError::Disabled))
        }
        // Someone new here whose GitHub login another user has: a local account, or the
        // GitHub account that had this login before a rename (matched by its id, it keeps its
        // Stagely account; the newcomer does not get it).
        Err(crate::db::DbError::Conflict(_)) => {
            let github = store
                .login_is_github(&person.login)
                .await
                .map_err(OpError::from)?;
            tracing::info!(login = %person.login, id = person.id, "a user has this GitHub login");
            Err(Refusal(if github {
                SignInError::NameTaken
            } else {
                SignInError::LocalAccountExists
            }))
        }
        Err(other) => Err(OpError::from(other).into()),
    }
}

#[derive(Deserialize)]
struct GitHubUser {
    id: i64,
    login: String,
}

#[derive(Deserialize)]
struct GitHubOrg {
    login: String,
}

/// Whether the allow-list names this GitHub user: by numeric id (which survives a rename) or
/// by login.
fn listed(allowed_users: &[String], person: &GitHubUser) -> bool {
    allowed_users.iter().any(|entry| {
        let entry = entry.trim();
        match entry.parse::<i64>() {
            Ok(id) => id == person.id,
            Err(_) => entry.eq_ignore_ascii_case(&person.login),
        }
    })
}

/// Allowed when the user is listed, or belongs to a listed organization.
async fn allowed(
    http: &reqwest::Client,
    github: &GitHubConfig,
    access: &str,
    person: &GitHubUser,
) -> Result<bool, Refusal> {
    if listed(&github.allowed_users, person) {
        return Ok(true);
    }
    if github.allowed_orgs.is_empty() {
        return Ok(false);
    }
    let orgs: Vec<GitHubOrg> = api_get(http, github, access, "/user/orgs?per_page=100").await?;
    Ok(orgs.iter().any(|org| {
        github
            .allowed_orgs
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(&org.login))
    }))
}

async fn api_get<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    github: &GitHubConfig,
    access: &str,
    path: &str,
) -> Result<T, Refusal> {
    let url = format!("{}{path}", github.api_url);
    let response = http
        .get(&url)
        .bearer_auth(access)
        .header(header::ACCEPT, "application/vnd.github+json")
        .header(header::USER_AGENT, "stagely")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))
        .map_err(OpError::from)?;
    Ok(response
        .json()
        .await
        .with_context(|| format!("reading GET {url}"))
        .map_err(OpError::from)?)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_matches_numeric_ids_and_logins() {
        let allowed = vec!["583231".to_string(), "Octocat".to_string()];
        let person = |id, login: &str| GitHubUser {
            id,
            login: login.into(),
        };
        assert!(listed(&allowed, &person(583231, "renamed-login")));
        assert!(listed(&allowed, &person(1, "octocat")));
        assert!(!listed(&allowed, &person(2, "someone")));
        // A login that looks like a number is not an id of someone else.
        assert!(!listed(&["42".to_string()], &person(7, "42x")));
    }
}
