//! How browsers may cache the dashboard's static files.
//!
//! `cargo leptos build` names the JS, WASM and CSS after a hash of their content
//! (`stagely.<hash>.wasm`, with `hash-files` in the workspace metadata) and writes the hashes to
//! `hash.txt` in the site root, where the pages' `<script>` and `<link>` read them (see
//! `AppState::build`). A hashed
//! name never changes content, so it is cached for a year without asking again (`immutable`);
//! a new build has new names, so a reload after an upgrade never mixes old WASM with new HTML.
//! Anything else under the site root is revalidated on every use (`no-cache`: the browser keeps
//! it, and the file's `Last-Modified` turns the check into a bodyless 304).
//!
//! The files themselves, and their precompressed `.br` / `.gz` twins (`--precompress` in release
//! builds), are served by `leptos_axum`'s file handler, which picks the twin the browser
//! accepts; it does not say so, so [`cache_control`] adds `Vary: accept-encoding` as well.

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// A year: what browsers keep a hashed file for.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
/// Kept, but checked with the server before each use.
const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");

/// Whether a file name carries a content hash the way cargo-leptos writes it: a name, 22
/// characters of unpadded URL-safe base64 (an MD5), an extension.
fn is_hashed(file_name: &str) -> bool {
    let mut parts = file_name.split('.');
    let (Some(name), Some(hash), Some(_extension), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !name.is_empty()
        && hash.len() == 22
        && hash
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// Adds `Cache-Control` and `Vary` to the static files under `/pkg/`; pages and the API are
/// left alone.
pub async fn cache_control(request: Request, next: Next) -> Response {
    let cacheable = matches!(*request.method(), Method::GET | Method::HEAD);
    let file_name = request
        .uri()
        .path()
        .strip_prefix("/pkg/")
        .map(|rest| rest.rsplit('/').next().unwrap_or_default().to_string());
    let mut response = next.run(request).await;
    let Some(file_name) = file_name.filter(|_| cacheable) else {
        return response;
    };
    if matches!(
        response.status(),
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
    ) {
        let policy = if is_hashed(&file_name) {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, policy);
        // The same URL answers brotli, gzip or plain bytes: a shared cache must keep them apart.
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_hashed;

    #[test]
    fn only_names_with_a_content_hash_are_immutable() {
        assert!(is_hashed("stagely.Ab-_0123456789abcdefgh.wasm"));
        assert!(!is_hashed("stagely.wasm"));
        assert!(!is_hashed("stagely_bg.wasm.d.ts"));
        assert!(!is_hashed("stagely.short.js"));
        assert!(!is_hashed("stagely.Ab+/0123456789abcdefgh.js"));
        assert!(!is_hashed(".Ab-_0123456789abcdefgh.js"));
    }
}
