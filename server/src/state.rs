//! `AppState`: what the adapters (REST handlers, server functions, sockets, background tasks)
//! hand to the operations. Operations themselves never take it whole: each takes only the parts
//! it uses (`&Store`, `&Hub`, `&Vault`, …), so its signature says what it touches.

use crate::config::{Config, SecretSetting};
use crate::crypto::{KeyOrigin, Keyring, MasterKey};
use crate::db::Store;
use crate::hub::Hub;
use crate::log_feeds::LogFeeds;
use crate::ops::throttle::Throttle;
use crate::ops::webhooks::WebhookGate;
use crate::relay::Relay;
use crate::vault::Vault;
use axum::extract::FromRef;
use leptos::config::LeptosOptions;
use std::path::Path;
use std::sync::Arc;

/// Agent handshakes (authentication, hello, welcome) in progress at once; beyond this new agents
/// are told to come back later (503) before any database work, which bounds both the load and the
/// memory of a reconnect storm.
pub const MAX_HANDSHAKES: usize = 256;

/// Everything a request handler or server function may need.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub store: Store,
    pub hub: Hub,
    pub config: Arc<Config>,
    /// Seals and opens secrets: `APP_MASTER_KEY`, plus `APP_MASTER_KEY_PREVIOUS` during a key
    /// rotation.
    pub vault: Vault,
    /// Agent handshakes allowed at once (see [`MAX_HANDSHAKES`]).
    pub handshakes: Arc<tokio::sync::Semaphore>,
    /// Container logs of the projects dashboard tabs are watching.
    pub logs: LogFeeds,
    /// Password attempts per client address and account (see [`Throttle`]).
    pub throttle: Arc<Throttle>,
    pub leptos_options: LeptosOptions,
    /// Serializes the push webhooks' "deploy now or when the running one ends" decisions.
    pub webhooks: WebhookGate,
}

impl AppState {
    /// Opens the database (applying migrations) and resolves the master key.
    pub async fn build(mut config: Config) -> anyhow::Result<Self> {
        let store = Store::connect(config.database_url.as_deref(), &config.data_dir).await?;
        let vault = open_vault(&mut config)?;
        // With PostgreSQL, this server may be one of several replicas: link it to the others.
        let hub = Hub::with_relay(Relay::start(&store).await?);
        // A build that hashed its file names left their hashes in the site root; pages then
        // name `stagely.<hash>.js` and the rest (see `assets`).
        let hash_file = hash_file(&config.site_root);
        let leptos_options = LeptosOptions::builder()
            .output_name("stagely")
            .site_root(config.site_root.to_string_lossy().into_owned())
            .site_pkg_dir("pkg")
            .site_addr(config.bind)
            .hash_files(hash_file.is_some())
            .hash_file(Arc::<str>::from(hash_file.unwrap_or_default()))
            .build();
        Ok(Self {
            store,
            hub,
            config: Arc::new(config),
            vault,
            handshakes: Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES)),
            logs: LogFeeds::default(),
            throttle: Arc::new(Throttle::default()),
            leptos_options,
            webhooks: WebhookGate::default(),
        })
    }
}

/// The file, in the site root, where `cargo leptos build` wrote the hashes of the JS, WASM and
/// CSS it named after their content (`hash-file-name` in the workspace metadata points there);
/// absolute, as Leptos joins it to the binary's directory.
fn hash_file(site_root: &Path) -> Option<String> {
    let path = site_root.join("hash.txt");
    path.is_file()
        .then(|| std::path::absolute(&path).unwrap_or(path))
        .map(|path| path.to_string_lossy().into_owned())
}

/// The vault over the configured master key (generated on first use in embedded mode) and,
/// during a rotation, the previous one. The keys' text is taken out of `config` and wiped.
pub fn open_vault(config: &mut Config) -> anyhow::Result<Vault> {
    let configured = config.master_key.take();
    let (master_key, origin) = MasterKey::resolve(
        configured.as_ref().map(SecretSetting::expose),
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
        .take()
        .map(|encoded| MasterKey::parse(encoded.expose(), "APP_MASTER_KEY_PREVIOUS"))
        .transpose()?;
    Ok(Vault::new(Keyring::new(master_key, previous)))
}
