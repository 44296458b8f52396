//! `stagely-server` as a library: the binary's `main` and the integration tests both build the
//! app through [`AppState::build`], [`router`] and [`run`], so tests exercise the real thing.
//!
//! The layers, top to bottom (docs/ARCHITECTURE.md has the whole picture; a test in
//! `tests/api/layers.rs` keeps imports pointing downwards and free of cycles):
//!
//! 1. adapters — [`http`] (REST API), [`dashboard`] (server functions), [`ws`] (the agent,
//!    join and browser sockets), [`housekeeping`] (background tasks), [`security_headers`]
//!    (CSP and friends on every response), [`assets`] (the static files and their caching),
//!    [`connections`] (the accept loop and its slow-client limits), [`cluster`] (the work of
//!    a replica among several), and `main.rs` (admin CLI);
//! 2. [`auth`] — every credential question; [`error_response`] — `OpError` as an HTTP answer;
//! 3. [`state`] — what adapters hand to operations;
//! 4. [`ops`] — the operations, one module per resource;
//! 5. [`hub`], [`log_feeds`], [`vault`] — live sessions, watched log feeds, sealed secrets;
//! 6. [`relay`] — the link between replicas sharing one PostgreSQL;
//! 7. [`db`], [`crypto`], [`token`], [`config`] — storage, ciphers, tokens, settings.

pub mod assets;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod crypto;
pub mod dashboard;
pub mod db;
pub mod error_response;
pub mod housekeeping;
pub mod http;
pub mod hub;
pub mod log_feeds;
pub mod notifier;
pub mod ops;
pub mod relay;
pub mod security_headers;
pub mod state;
mod sync;
pub mod token;
pub mod vault;
pub mod ws;

pub use state::AppState;

use app::ssr::DashboardContext;
use axum::routing::{get, post};
use axum::Router;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::future::Future;
use std::sync::Arc;

/// The whole HTTP surface: dashboard pages, server functions, health, the API and the sockets,
/// every response with the security headers.
pub fn router(state: AppState) -> Router {
    let dashboard = DashboardContext(Arc::new(dashboard::ServerDashboard {
        state: state.clone(),
    }));
    let options = state.leptos_options.clone();
    let headers = security_headers::SecurityHeaders::new(&state.config);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/stream", get(ws::agent::agent_stream))
        .route("/api/v1/events", get(ws::browser::browser_events))
        .route("/api/v1/join", get(ws::join::join))
        .route("/api/v1/hooks/{hook_id}", post(http::webhooks::receive))
        .route("/install.sh", get(http::downloads::install_script))
        .route("/downloads/{file}", get(http::downloads::download))
        .nest("/api/v1", http::api())
        .nest_service("/pkg", assets::service(&state.config.site_root))
        .merge(auth::routes())
        .leptos_routes_with_context(
            &state,
            generate_route_list(app::App),
            move || {
                provide_context(dashboard.clone());
                security_headers::provide_request_nonce();
            },
            move || app::shell(options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler_with_context::<
            AppState,
            _,
        >(
            security_headers::provide_request_nonce, app::shell
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ))
        // Outermost, so the redirects and refusals of the session guard carry the headers too.
        .layer(axum::middleware::from_fn_with_state(
            headers,
            security_headers::security_headers,
        ))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Serves until `shutdown` resolves, then closes agent sessions (they reconnect, to another
/// replica when there are several), finishes the requests in flight, flushes last-seen times,
/// gives up this replica's agent leases and closes the database.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Where the other replicas hold their agents, before the first request asks: a tab's log
    // stream or a job for an agent held elsewhere would otherwise find it nowhere (and wait for
    // a reconnect or a sweep) until the first lease renewal.
    if let Some(relay) = state.hub.relay() {
        if let Some(held) = relay.held_elsewhere().await {
            state.hub.set_held_elsewhere(held);
        }
        // And whether others are up: the reconnect advice its first agents get depends on it.
        relay.live_replicas().await;
    }
    let housekeeping = housekeeping::spawn(&state);
    let hub = state.hub.clone();
    let shutdown = async move {
        shutdown.await;
        // Agent sockets never end on their own: close them so the graceful shutdown can finish.
        hub.shut_down();
    };
    connections::serve(
        listener,
        router(state.clone()),
        &state.config.limits,
        shutdown,
    )
    .await;
    // The agents were told to go: let their sessions end (each says so to the other replicas
    // and gives up its lease) before the link to them closes.
    state
        .hub
        .sessions_ended(std::time::Duration::from_secs(5))
        .await;
    drop(housekeeping);
    state.hub.flush_last_seen(&state.store).await;
    if let Some(relay) = state.hub.relay() {
        relay.close().await;
    }
    state.store.close().await;
    Ok(())
}
