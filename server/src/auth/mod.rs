//! Every credential question, answered once: who a request is (an API token or the session
//! cookie), whether it comes from this server's own pages, which agent a bearer token names,
//! and the session cookie itself.
//!
//! The sign-in pages and the page guard live in [`pages`], GitHub's OAuth flow in [`github`].
//! A session is a random token in an HttpOnly, SameSite=Lax cookie (over https `Secure` and
//! named `__Host-stagely_session`, see [`Config::session_cookie`]); the database keeps only its
//! hash.

pub mod github;
pub mod pages;

#[cfg(doc)]
use crate::config::Config;
use crate::config::IpRange;
use crate::db::{Agent, Store, User};
use crate::ops::OpError;
use crate::state::AppState;
use crate::token::TokenHash;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use pages::{require_session, routes};

/// How long a session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(14 * 24 * 3600);

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

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The user a session token belongs to, if the session is valid.
pub async fn user_of_session(store: &Store, token: &str) -> Result<Option<User>, OpError> {
    Ok(store.user_by_session(&TokenHash::of(token)).await?)
}

/// The user whose session cookie (named `cookie_name`, [`Config::session_cookie`]) the request
/// carries, if it is valid.
pub async fn session_user(
    store: &Store,
    headers: &HeaderMap,
    cookie_name: &str,
) -> Result<Option<User>, OpError> {
    match cookie(headers, cookie_name) {
        Some(token) => user_of_session(store, token).await,
        None => Ok(None),
    }
}

/// Whom a request's credentials name: its API token when it carries one, else its session
/// cookie `cookie_name`. (Where the request came from is the caller's to check: see
/// [`CurrentUser`].)
pub async fn user_of(
    store: &Store,
    headers: &HeaderMap,
    cookie_name: &str,
) -> Result<Option<User>, OpError> {
    match bearer_token(headers) {
        Some(token) => Ok(store.user_by_api_token(&TokenHash::of(token)).await?),
        None => session_user(store, headers, cookie_name).await,
    }
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

/// The address a request comes from: the peer's, or, when the peer is one of the reverse
/// proxies `STAGELY_TRUSTED_PROXIES` names, the nearest address in `X-Forwarded-For` that is
/// not one of them (the proxies append, so addresses further left could be the client's own
/// invention). `None` when the server was started without peer addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// From the peer address and the request's headers.
    pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpRange]) -> Self {
        let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
        let Some(peer) = peer else {
            return Self(None);
        };
        if !is_trusted(peer) {
            return Self(Some(peer));
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for item in forwarded.iter().rev() {
            // Something that is not an address: the hop before it is the last one to believe.
            let Ok(ip) = item.parse::<IpAddr>() else {
                break;
            };
            client = ip;
            if !is_trusted(ip) {
                break;
            }
        }
        Self(Some(client))
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip());
        Ok(Self::resolve(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        ))
    }
}

/// The hash of the credential a request authenticates with (its API token, else its session
/// cookie), to mark "this session" / "this token" in the lists.
pub fn credential_hash(headers: &HeaderMap, cookie_name: &str) -> Option<TokenHash> {
    bearer_token(headers)
        .or_else(|| cookie(headers, cookie_name))
        .map(TokenHash::of)
}

/// The authenticated user of an API call or live feed: `Authorization: Bearer <user API
/// token>`, or the dashboard's session cookie. A cookie only counts on requests from this
/// server's own pages, so another site cannot act with the visitor's session.
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = OpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, OpError> {
        let bearer = bearer_token(&parts.headers).is_some();
        if !bearer && !same_origin(&parts.headers, &state.config.public_url) {
            return Err(OpError::Forbidden(
                "cross-origin requests are refused".into(),
            ));
        }
        let cookie_name = state.config.session_cookie();
        match user_of(&state.store, &parts.headers, cookie_name).await? {
            Some(user) => Ok(CurrentUser(user)),
            None if bearer => Err(OpError::Unauthorized("unknown API token".into())),
            None => Err(OpError::Unauthorized(
                "missing `Authorization: Bearer <API token>` header or session".into(),
            )),
        }
    }
}

/// The agent token an agent's connection presents: only in the `Authorization` header, never
/// in the URL (where proxies and logs would keep it).
pub fn agent_token<'a>(headers: &'a HeaderMap, uri: &Uri) -> Result<&'a str, OpError> {
    if uri.query().is_some_and(|query| query.contains("token")) {
        return Err(OpError::Unauthorized(
            "send the agent token in the Authorization header, never in the URL".into(),
        ));
    }
    bearer_token(headers).ok_or_else(|| {
        OpError::Unauthorized("missing `Authorization: Bearer <agent token>` header".into())
    })
}

/// The live agent an agent token names.
pub async fn agent_of_token(store: &Store, token: &str) -> Result<Agent, OpError> {
    store
        .agent_by_token(&TokenHash::of(token))
        .await?
        .ok_or_else(|| OpError::Unauthorized("unknown or revoked agent token".into()))
}

/// The join token a new host presents, as stored (hashed).
pub fn join_token(headers: &HeaderMap) -> Result<TokenHash, OpError> {
    bearer_token(headers).map(TokenHash::of).ok_or_else(|| {
        OpError::Unauthorized("missing `Authorization: Bearer <join token>` header".into())
    })
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
        assert_eq!(cookie(&headers, shared::SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, shared::SECURE_SESSION_COOKIE), None);
        assert_eq!(cookie(&headers, "stagely"), None);
        headers.insert(header::COOKIE, "stagely_session=".parse().unwrap());
        assert_eq!(cookie(&headers, shared::SESSION_COOKIE), None);
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer stg_abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("stg_abc"));
        headers.insert(header::AUTHORIZATION, "Basic stg_abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
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
    fn forwarded_addresses_count_only_from_a_trusted_proxy() {
        let trusted = [
            IpRange::parse("127.0.0.1").unwrap(),
            IpRange::parse("10.0.0.0/8").unwrap(),
        ];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7, 10.1.2.3".parse().unwrap(),
        );
        let peer = |ip: &str| Some(ip.parse::<IpAddr>().unwrap());
        let ip = |text: &str| ClientIp(peer(text));
        // Through the trusted proxies: the nearest address that is not one of them.
        assert_eq!(
            ClientIp::resolve(peer("127.0.0.1"), &headers, &trusted),
            ip("203.0.113.7")
        );
        // From anyone else the header is ignored.
        assert_eq!(
            ClientIp::resolve(peer("198.51.100.1"), &headers, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            ClientIp::resolve(peer("127.0.0.1"), &headers, &[]),
            ip("127.0.0.1")
        );
        // A trusted proxy without the header is the client.
        assert_eq!(
            ClientIp::resolve(peer("127.0.0.1"), &HeaderMap::new(), &trusted),
            ip("127.0.0.1")
        );
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
