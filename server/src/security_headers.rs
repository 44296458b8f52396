//! The headers every response carries, whatever answered it: pages, server functions, the API,
//! the sockets' refusals and static assets.
//!
//! The Content-Security-Policy lets a page run only the dashboard's own code: the JS and WASM
//! under `/pkg`, and the inline `<script>`s Leptos writes for hydration and streamed resources,
//! which carry a fresh nonce per response. [`security_headers`] draws that nonce, hands it to
//! the renderer through the request's extensions ([`provide_request_nonce`] puts it where
//! `leptos::nonce::use_nonce` finds it) and names it in the policy, so an injected script,
//! which cannot know it, does not run.
//!
//! Why each directive:
//! - `script-src 'self' 'nonce-…' 'wasm-unsafe-eval'`: the module script imports `/pkg/*.js`,
//!   which compiles `/pkg/*.wasm`; no `unsafe-inline`, no `unsafe-eval`.
//! - `style-src 'self'` with `style-src-attr 'unsafe-inline'`: the stylesheet is `/pkg`'s; log
//!   lines are coloured by `style="color:…"` attributes (ANSI colours, any of 16 million), which
//!   cannot run code or load anything `img-src`/`font-src` would not allow. `<style>` elements
//!   stay forbidden.
//! - `connect-src 'self'` plus the public URL's `ws(s)://` origin: server functions and the
//!   live feed (`/api/v1/events`). CSP 3 lets `'self'` match the same host's `ws:`/`wss:`, but
//!   browsers that predate it (Safari before 15.4) need the origin spelled out.
//! - `frame-ancestors 'none'` (and `X-Frame-Options: DENY` for older browsers): no other site
//!   can frame the dashboard to trick clicks.
//! - `form-action 'self'`: the sign-in forms post here only. "Sign in with GitHub" is a link,
//!   not a form, so its redirect to GitHub is not a form action.
//! - `Referrer-Policy: same-origin`: other sites (links in logs, GitHub) learn nothing of the
//!   dashboard's URLs. Not `no-referrer`: under it browsers send `Origin: null` even on this
//!   server's own form posts and server-function calls, which the cross-origin check refuses.
//! - `Strict-Transport-Security` only when the public URL is https: over plain http (loopback,
//!   or allowed by `STAGELY_ALLOW_INSECURE_HTTP`) browsers ignore it, and it would pin a host
//!   that is not behind TLS.

use crate::config::Config;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use leptos::nonce::Nonce;
use std::sync::Arc;

/// How long browsers remember to use https only: one year.
const HSTS: &str = "max-age=31536000";

/// What [`security_headers`] adds, worked out once from the configuration.
#[derive(Clone, Debug)]
pub struct SecurityHeaders {
    /// The policy after the script nonce: `'wasm-unsafe-eval'; style-src …`.
    csp_rest: Arc<str>,
    /// Whether to send `Strict-Transport-Security`.
    https: bool,
}

impl SecurityHeaders {
    pub fn new(config: &Config) -> Self {
        // The public URL's origin as a socket URL: `https://host:port/prefix` → `wss://host:port`.
        let (socket_scheme, rest) = match config.public_url.split_once("://") {
            Some(("https", rest)) => ("wss", rest),
            Some((_, rest)) => ("ws", rest),
            None => ("ws", config.public_url.as_str()),
        };
        let host = rest.split('/').next().unwrap_or_default();
        let csp_rest = format!(
            "'wasm-unsafe-eval'; style-src 'self'; style-src-attr 'unsafe-inline'; \
             img-src 'self' data:; font-src 'self'; connect-src 'self' {socket_scheme}://{host}; \
             object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        );
        Self {
            csp_rest: csp_rest.into(),
            https: config.is_https(),
        }
    }

    /// The Content-Security-Policy for a response whose inline scripts carry `nonce`.
    pub fn content_security_policy(&self, nonce: &str) -> String {
        format!(
            "default-src 'self'; script-src 'self' 'nonce-{nonce}' {}",
            self.csp_rest
        )
    }
}

/// Middleware: draws the response's script nonce for the renderer and sets the security headers
/// on whatever answers.
pub async fn security_headers(
    State(policy): State<SecurityHeaders>,
    mut request: Request,
    next: Next,
) -> Response {
    let nonce = Nonce::new();
    request.extensions_mut().insert(nonce.clone());
    let mut response = next.run(request).await;
    let csp = policy.content_security_policy(&nonce);
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 3] = [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    match HeaderValue::from_str(&csp) {
        Ok(value) => {
            headers.insert(header::CONTENT_SECURITY_POLICY, value);
        }
        // The nonce is URL-safe base64 and the rest comes from a URL that was checked at start;
        // should a host name still not fit in a header, refuse to serve without a policy.
        Err(error) => {
            tracing::error!(%error, "cannot write the Content-Security-Policy header");
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
            );
        }
    }
    if policy.https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}

/// Hands the nonce [`security_headers`] drew for this request to the renderer: called in the
/// Leptos context of every page and server function, after `leptos_axum` provided its own.
pub fn provide_request_nonce() {
    let nonce = leptos::prelude::use_context::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Nonce>().cloned());
    if let Some(nonce) = nonce {
        leptos::prelude::provide_context(nonce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(public_url: &str) -> Config {
        Config::from_lookup(|name| (name == "STAGELY_PUBLIC_URL").then(|| public_url.to_string()))
            .unwrap()
    }

    #[test]
    fn the_policy_names_the_nonce_and_the_public_socket_origin() {
        let https = SecurityHeaders::new(&config("https://deploy.example.com/stagely"));
        let csp = https.content_security_policy("abc123");
        assert!(
            csp.contains("script-src 'self' 'nonce-abc123' 'wasm-unsafe-eval';"),
            "{csp}"
        );
        assert!(
            csp.contains("connect-src 'self' wss://deploy.example.com;"),
            "{csp}"
        );
        let script_src = csp
            .split(';')
            .find(|directive| directive.trim().starts_with("script-src"))
            .unwrap();
        assert!(!script_src.contains("'unsafe-inline'"), "{csp}");
        assert!(!script_src.contains("'unsafe-eval'"), "{csp}");
        assert!(https.https);

        let local = SecurityHeaders::new(&config("http://127.0.0.1:3000"));
        let csp = local.content_security_policy("n");
        assert!(
            csp.contains("connect-src 'self' ws://127.0.0.1:3000;"),
            "{csp}"
        );
        assert!(!local.https);
    }
}
