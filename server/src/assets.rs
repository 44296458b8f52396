//! The dashboard's static files under `/pkg`, and how long browsers may keep them.
//!
//! `cargo leptos build` names the JS, WASM and CSS, and with `--split` every page's chunk, after
//! an MD5 of their content (`chunk_7.<hash>.wasm`, with `hash-files` in the workspace metadata)
//! and writes the main files' hashes to `hash.txt` in the site root, where the pages' `<script>`
//! and `<link>` read them (see `AppState::build`). A name that is the hash of its content never
//! changes content, so it is cached for a year without asking again (`immutable`), and a new
//! build has new names, so an upgrade never mixes old WASM with new pages.
//!
//! Only names checked against their content get that: cargo-leptos hashes the main JS, the main
//! WASM and the split manifest *before* it rewrites them to name the split loader, so their
//! names can stay the same while their content changes. [`StaticFiles::scan`] reads every file
//! once at start and keeps the names that match; everything else is revalidated on every use
//! (`no-cache`: the browser keeps it, and its `Last-Modified` turns the check into a bodyless
//! 304).
//!
//! The files, and their precompressed `.br` / `.gz` twins (`--precompress` in release builds),
//! are served by tower-http's `ServeDir`, which answers conditional and range requests and picks
//! the twin the browser accepts; [`cache_control`] adds `Vary: accept-encoding`, which it does
//! not. A missing file is a plain 404, not a rendered page.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use md5::{Digest, Md5};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use tower_http::services::ServeDir;

/// A year: what browsers keep a file whose name is its content's hash for.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
/// Kept, but checked with the server before each use.
const REVALIDATE: HeaderValue = HeaderValue::from_static("no-cache");

/// The files under `/pkg` whose names carry the hash of their content.
#[derive(Clone, Debug, Default)]
pub struct StaticFiles {
    content_named: Arc<HashSet<String>>,
}

impl StaticFiles {
    /// Reads every file of `pkg_dir` (not its precompressed twins) and keeps the names whose
    /// hash part is the MD5 of the content. A directory that cannot be read names none.
    pub fn scan(pkg_dir: &Path) -> Self {
        let mut content_named = HashSet::new();
        let Ok(entries) = std::fs::read_dir(pkg_dir) else {
            return Self::default();
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hash) = name_hash(&name) else {
                continue;
            };
            if name.ends_with(".br") || name.ends_with(".gz") {
                continue;
            }
            let Ok(content) = std::fs::read(entry.path()) else {
                continue;
            };
            if URL_SAFE_NO_PAD.encode(Md5::digest(&content)) == hash {
                content_named.insert(name);
            }
        }
        Self {
            content_named: Arc::new(content_named),
        }
    }

    fn is_content_named(&self, name: &str) -> bool {
        self.content_named.contains(name)
    }
}

/// The hash part of a name as cargo-leptos writes it: a name, 22 characters of unpadded
/// URL-safe base64 (an MD5), an extension.
fn name_hash(file_name: &str) -> Option<&str> {
    let mut parts = file_name.split('.');
    let (Some(name), Some(hash), Some(_extension), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let well_formed = !name.is_empty()
        && hash.len() == 22
        && hash
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    well_formed.then_some(hash)
}

/// `/pkg` of the site at `site_root`: the files, their precompressed twins, and the caching
/// headers. Nested under `/pkg` by the router.
pub fn service(site_root: &Path) -> Router {
    let pkg_dir = site_root.join("pkg");
    let files = StaticFiles::scan(&pkg_dir);
    let serve = ServeDir::new(&pkg_dir)
        .precompressed_br()
        .precompressed_gzip();
    Router::new()
        .fallback_service(serve)
        .layer(axum::middleware::from_fn_with_state(files, cache_control))
}

/// Adds `Cache-Control` and `Vary` to the files `/pkg` serves.
async fn cache_control(State(files): State<StaticFiles>, request: Request, next: Next) -> Response {
    let cacheable = matches!(*request.method(), Method::GET | Method::HEAD);
    // Nested under `/pkg`, the path is the file's: `/chunk_7.<hash>.wasm`.
    let name = request.uri().path().trim_start_matches('/').to_string();
    let mut response = next.run(request).await;
    let served = matches!(
        response.status(),
        StatusCode::OK | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
    );
    if cacheable && served {
        let policy = if files.is_content_named(&name) {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, policy);
        // The same URL answers brotli, gzip or plain bytes: a shared cache must keep them apart.
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::name_hash;

    #[test]
    fn a_hash_is_the_middle_of_three_parts_and_22_url_safe_characters() {
        assert_eq!(
            name_hash("stagely.Ab-_0123456789abcdefgh.wasm"),
            Some("Ab-_0123456789abcdefgh")
        );
        assert_eq!(name_hash("stagely.wasm"), None);
        assert_eq!(name_hash("stagely_bg.wasm.d.ts"), None);
        assert_eq!(name_hash("stagely.short.js"), None);
        assert_eq!(name_hash("stagely.Ab+/0123456789abcdefgh.js"), None);
        assert_eq!(name_hash(".Ab-_0123456789abcdefgh.js"), None);
    }
}
