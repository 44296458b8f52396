//! `stagely-server` as a library: the binary's `main` and the integration tests both build the
//! app through [`AppState::build`], [`router`] and [`run`], so tests exercise the real thing.

pub mod auth;
pub mod config;
pub mod crypto;
pub mod dashboard;
pub mod db;
pub mod error;
pub mod events;
pub mod hub;
pub mod jobs;
pub mod live_logs;
pub mod provisioning;
pub mod routes;
pub mod stream;
pub mod token;

use crate::config::Config;
use crate::crypto::{KeyOrigin, Keyring, MasterKey};
use crate::db::Store;
use crate::hub::Hub;
use anyhow::Context;
use app::ssr::DashboardContext;
use axum::extract::FromRef;
use axum::routing::get;
use axum::Router;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{generate_route_list, LeptosRoutes};
use std::future::Future;
use std::sync::Arc;

/// Everything a request handler or server function may need.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub store: Store,
    pub hub: Hub,
    pub config: Arc<Config>,
    /// Encrypts and decrypts secrets: `APP_MASTER_KEY`, plus `APP_MASTER_KEY_PREVIOUS` during a
    /// key rotation.
    pub keyring: Arc<Keyring>,
    /// Agent handshakes allowed at once (see `stream::MAX_HANDSHAKES`).
    pub handshakes: Arc<tokio::sync::Semaphore>,
    /// Container logs of the projects dashboard tabs are watching.
    pub logs: live_logs::LogFeeds,
    pub leptos_options: LeptosOptions,
}

impl AppState {
    /// Opens the database (applying migrations) and resolves the master key.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = Store::connect(config.database_url.as_deref(), &config.data_dir).await?;
        let (master_key, origin) = MasterKey::resolve(
            config.master_key.as_deref(),
            &config.data_dir,
            !config.uses_postgres(),
        )?;
        match origin {
            KeyOrigin::Generated(path) => tracing::warn!(
                path = %path.display(),
                "no APP_MASTER_KEY given: generated a new master key; back this file up, \
                 secrets cannot be decrypted without it"
            ),
            KeyOrigin::File(path) => {
                tracing::info!(path = %path.display(), "using the master key file")
            }
            KeyOrigin::Environment => tracing::info!("using the master key from APP_MASTER_KEY"),
        }
        let previous = config
            .master_key_previous
            .as_deref()
            .map(|encoded| MasterKey::parse(encoded, "APP_MASTER_KEY_PREVIOUS"))
            .transpose()?;
        let keyring = Keyring::new(master_key, previous);
        let leptos_options = LeptosOptions::builder()
            .output_name("stagely")
            .site_root(config.site_root.to_string_lossy().into_owned())
            .site_pkg_dir("pkg")
            .site_addr(config.bind)
            .build();
        Ok(Self {
            store,
            hub: Hub::new(),
            config: Arc::new(config),
            keyring: Arc::new(keyring),
            handshakes: Arc::new(tokio::sync::Semaphore::new(stream::MAX_HANDSHAKES)),
            logs: live_logs::LogFeeds::default(),
            leptos_options,
        })
    }
}

/// The whole HTTP surface: dashboard pages, server functions, health and the agent stream.
pub fn router(state: AppState) -> Router {
    let dashboard = DashboardContext(Arc::new(dashboard::ServerDashboard {
        state: state.clone(),
    }));
    let options = state.leptos_options.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/stream", get(stream::agent_stream))
        .route("/api/v1/events", get(events::browser_events))
        .route("/api/v1/join", get(provisioning::join))
        .route("/install.sh", get(provisioning::install_script))
        .route("/downloads/{file}", get(provisioning::download))
        .nest("/api/v1", routes::api())
        .merge(auth::routes())
        .leptos_routes_with_context(
            &state,
            generate_route_list(app::App),
            move || provide_context(dashboard.clone()),
            move || app::shell(options.clone()),
        )
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(
            app::shell,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ))
        .with_state(state)
}

/// Every 10 s, times out deployments whose agent stopped answering; every minute, forgets
/// expired sessions and abandoned GitHub sign-ins.
fn spawn_job_expiry(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        for round in 0u64.. {
            tick.tick().await;
            jobs::expire_stale(&state).await;
            if round % 6 == 0 {
                let lifetime = auth::github::ATTEMPT_LIFETIME;
                if let Err(error) = state.store.delete_expired_logins(lifetime).await {
                    tracing::warn!(%error, "could not delete expired sessions");
                }
            }
        }
    })
}

async fn healthz() -> &'static str {
    "ok"
}

/// Serves until `shutdown` resolves, then closes agent sessions, flushes last-seen times and
/// closes the database.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let housekeeping = state.hub.spawn_housekeeping(state.store.clone());
    let expiry = spawn_job_expiry(state.clone());
    let hub = state.hub.clone();
    let shutdown = async move {
        shutdown.await;
        // Agent sockets never end on their own: close them so the graceful shutdown can finish.
        hub.shut_down();
    };
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    housekeeping.abort();
    expiry.abort();
    state.hub.flush_last_seen(&state.store).await;
    state.store.close().await;
    Ok(())
}
