//! Server configuration: defaults that work out of the box, overridden by the environment.
//!
//! Secrets (`APP_MASTER_KEY`, `DATABASE_URL`) can also come from a file named by the same
//! variable with a `_FILE` suffix, which is how Docker and systemd hand out credentials.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `stagely-server` reads from its environment.
#[derive(Clone)]
pub struct Config {
    /// `STAGELY_BIND`: where the HTTP server listens.
    pub bind: SocketAddr,
    /// `STAGELY_DATA_DIR`: the SQLite database and the generated master key live here.
    pub data_dir: PathBuf,
    /// `DATABASE_URL`: `postgres://…` selects PostgreSQL; unset means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// `STAGELY_PUBLIC_URL`: how browsers and agents reach this server.
    pub public_url: String,
    /// `APP_MASTER_KEY`: base64 of 32 bytes; `None` means "use or create the one in data_dir".
    /// Taken out (and wiped) when the server opens its vault, so the running server's config no
    /// longer holds it.
    pub master_key: Option<SecretSetting>,
    /// `STAGELY_SITE_ROOT`: the directory cargo-leptos wrote the WASM, JS and CSS into.
    pub site_root: PathBuf,
    /// `STAGELY_HEARTBEAT_SECS`: how often agents send a heartbeat.
    pub heartbeat_interval: Duration,
    /// `APP_MASTER_KEY_PREVIOUS`: the key before a rotation, still accepted for decryption;
    /// taken out like `master_key`.
    pub master_key_previous: Option<SecretSetting>,
    /// `STAGELY_JOB_EXPIRY_SECS`: an open deployment with no word from its agent for this long
    /// is marked timed out.
    pub job_expiry: Duration,
    /// GitHub sign-in, when `STAGELY_GITHUB_CLIENT_ID` is set.
    pub github: Option<GitHubConfig>,
    /// `STAGELY_DOWNLOADS_DIR`: the static agent binaries `install.sh` downloads
    /// (`stagely-agent-x86_64`, `stagely-agent-aarch64`).
    pub downloads_dir: PathBuf,
    /// `STAGELY_NOTIFY_*`: how notifications are derived and delivered.
    pub notifications: NotifyConfig,
    /// `STAGELY_KEEP_*`, `STAGELY_PURGE_INTERVAL_SECS`: how much history is kept.
    pub retention: RetentionConfig,
    /// `STAGELY_ALLOW_INSECURE_HTTP` (`0`): whether `STAGELY_PUBLIC_URL` may be plain http to a
    /// host that is not loopback. Off, such a URL stops the server at start.
    pub allow_insecure_http: bool,
    /// `STAGELY_TRUSTED_PROXIES`: comma-separated addresses or CIDR ranges of the reverse
    /// proxies in front of Stagely (e.g. `127.0.0.1,::1` or `172.16.0.0/12`). Only a request
    /// from one of them has its `X-Forwarded-For` believed when the client's address is needed
    /// (sign-in throttling, the session list); empty (the default), the peer address counts.
    pub trusted_proxies: Vec<IpRange>,
    /// `STAGELY_HEADER_TIMEOUT_SECS`, `STAGELY_MAX_CONNECTIONS`, `STAGELY_AGENT_*`, …: what one
    /// client, agent or tab can make the server hold.
    pub limits: LimitsConfig,
}

/// An address or a CIDR range: `10.0.0.1`, `10.0.0.0/8`, `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: std::net::IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: std::net::IpAddr = address.trim().parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.trim().parse().ok().filter(|bits| *bits <= max)?,
            None => max,
        };
        Some(Self { network, prefix })
    }

    pub fn contains(&self, address: std::net::IpAddr) -> bool {
        let address = match address {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, Into::into),
            v4 => v4,
        };
        let (network, address, bits) = match (self.network, address) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(a)), 32)
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                (u128::from(n), u128::from(a), 128)
            }
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        if shift >= 128 {
            return true;
        }
        network >> shift == address >> shift
    }
}

/// `STAGELY_GITHUB_*`: an OAuth app on GitHub (or a GitHub Enterprise / compatible server).
#[derive(Clone)]
pub struct GitHubConfig {
    pub client_id: String,
    /// `STAGELY_GITHUB_CLIENT_SECRET` (or `_FILE`).
    pub client_secret: String,
    /// `STAGELY_GITHUB_URL`: where people authorize (`/login/oauth/authorize`) and the server
    /// trades codes (`/login/oauth/access_token`); default `https://github.com`.
    pub web_url: String,
    /// `STAGELY_GITHUB_API_URL`: the REST API (`/user`, `/user/orgs`); default
    /// `https://api.github.com`.
    pub api_url: String,
    /// `STAGELY_GITHUB_ALLOWED_USERS`: comma-separated GitHub users who may sign in: numeric
    /// user ids (`12345`, which survive a rename) or logins.
    pub allowed_users: Vec<String>,
    /// `STAGELY_GITHUB_ALLOWED_ORGS`: comma-separated organizations whose members may sign in.
    pub allowed_orgs: Vec<String>,
}

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not valid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("{name}_FILE names {path:?}, which cannot be read: {source}")]
    File {
        name: &'static str,
        path: String,
        source: std::io::Error,
    },
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests can supply their own environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let bind = match non_empty("STAGELY_BIND") {
            Some(value) => value.parse().map_err(|_| ConfigError::Invalid {
                name: "STAGELY_BIND",
                reason: format!("{value:?} is not an address like 127.0.0.1:3000"),
            })?,
            None => SocketAddr::from(([127, 0, 0, 1], 3000)),
        };
        let data_dir =
            PathBuf::from(non_empty("STAGELY_DATA_DIR").unwrap_or_else(|| "./data".into()));
        let database_url = secret(&lookup, "DATABASE_URL")?;
        if let Some(url) = &database_url {
            if !is_postgres(url) && !url.starts_with("sqlite:") {
                return Err(ConfigError::Invalid {
                    name: "DATABASE_URL",
                    reason: "use postgres://… (or leave it unset for SQLite in STAGELY_DATA_DIR)"
                        .into(),
                });
            }
        }
        let public_url = non_empty("STAGELY_PUBLIC_URL")
            .unwrap_or_else(|| format!("http://{bind}"))
            .trim_end_matches('/')
            .to_string();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                name: "STAGELY_PUBLIC_URL",
                reason: format!("{public_url:?} must start with http:// or https://"),
            });
        }
        let allow_insecure_http = flag(&non_empty, shared::transport::ALLOW_INSECURE_HTTP)?;
        if shared::transport::is_cleartext_to_another_host(&public_url) && !allow_insecure_http {
            return Err(ConfigError::Invalid {
                name: "STAGELY_PUBLIC_URL",
                reason: format!(
                    "{public_url:?} is plain http to another host: sessions, agent and join \
                     tokens and secret values would cross the network in the clear. Put a TLS \
                     terminating reverse proxy in front of Stagely (Caddy or nginx; the README \
                     shows both under \"Behind a reverse proxy\"), keep STAGELY_BIND on \
                     127.0.0.1 and set STAGELY_PUBLIC_URL=https://<your host>. On a network you \
                     trust, STAGELY_ALLOW_INSECURE_HTTP=1 allows plain http anyway."
                ),
            });
        }
        let site_root = PathBuf::from(
            non_empty("STAGELY_SITE_ROOT").unwrap_or_else(|| beside_exe_or("site", "target/site")),
        );
        let heartbeat_secs = match non_empty("STAGELY_HEARTBEAT_SECS") {
            Some(value) => value
                .parse::<u64>()
                .ok()
                .filter(|secs| (1..=3600).contains(secs))
                .ok_or_else(|| ConfigError::Invalid {
                    name: "STAGELY_HEARTBEAT_SECS",
                    reason: format!("{value:?} is not a number of seconds from 1 to 3600"),
                })?,
            None => 30,
        };
        let job_expiry_secs = match non_empty("STAGELY_JOB_EXPIRY_SECS") {
            Some(value) => value
                .parse::<u64>()
                .ok()
                .filter(|secs| *secs >= 5)
                .ok_or_else(|| ConfigError::Invalid {
                    name: "STAGELY_JOB_EXPIRY_SECS",
                    reason: format!("{value:?} is not a number of seconds (at least 5)"),
                })?,
            None => 3600,
        };

        let github = match non_empty("STAGELY_GITHUB_CLIENT_ID") {
            None => None,
            Some(client_id) => Some(GitHubConfig {
                client_id: client_id.trim().to_string(),
                client_secret: secret(&lookup, "STAGELY_GITHUB_CLIENT_SECRET")?.ok_or(
                    ConfigError::Invalid {
                        name: "STAGELY_GITHUB_CLIENT_SECRET",
                        reason: "is required when STAGELY_GITHUB_CLIENT_ID is set".into(),
                    },
                )?,
                web_url: base_url(&non_empty, "STAGELY_GITHUB_URL", "https://github.com")?,
                api_url: base_url(
                    &non_empty,
                    "STAGELY_GITHUB_API_URL",
                    "https://api.github.com",
                )?,
                allowed_users: list(non_empty("STAGELY_GITHUB_ALLOWED_USERS")),
                allowed_orgs: list(non_empty("STAGELY_GITHUB_ALLOWED_ORGS")),
            }),
        };

        let trusted_proxies = list(non_empty("STAGELY_TRUSTED_PROXIES"))
            .into_iter()
            .map(|item| {
                IpRange::parse(&item).ok_or_else(|| ConfigError::Invalid {
                    name: "STAGELY_TRUSTED_PROXIES",
                    reason: format!(
                        "{item:?} is not an IP address or a CIDR range like 10.0.0.0/8"
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Self {
            bind,
            data_dir,
            database_url,
            public_url,
            master_key: secret(&lookup, "APP_MASTER_KEY")?.map(SecretSetting::from),
            site_root,
            heartbeat_interval: Duration::from_secs(heartbeat_secs),
            master_key_previous: secret(&lookup, "APP_MASTER_KEY_PREVIOUS")?
                .map(SecretSetting::from),
            job_expiry: Duration::from_secs(job_expiry_secs),
            github,
            downloads_dir: PathBuf::from(
                non_empty("STAGELY_DOWNLOADS_DIR")
                    .unwrap_or_else(|| beside_exe_or("downloads", "target/downloads")),
            ),
            notifications: NotifyConfig::from_lookup(&non_empty)?,
            retention: RetentionConfig::from_lookup(&non_empty)?,
            allow_insecure_http,
            trusted_proxies,
            limits: LimitsConfig::from_lookup(&non_empty)?,
        })
    }

    /// True when browsers reach the server over https, so cookies must be `Secure`.
    pub fn is_https(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// The name of the session cookie: `__Host-…` over https.
    pub fn session_cookie(&self) -> &'static str {
        shared::session_cookie_name(self.is_https())
    }

    /// True when the database is PostgreSQL (shared by replicas) rather than embedded SQLite.
    pub fn uses_postgres(&self) -> bool {
        self.database_url.as_deref().is_some_and(is_postgres)
    }
}

fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// An http(s) base URL from `name`, without a trailing slash.
fn base_url(
    non_empty: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: &str,
) -> Result<String, ConfigError> {
    let url = non_empty(name).unwrap_or_else(|| default.into());
    let url = url.trim().trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{url:?} must start with http:// or https://"),
        });
    }
    Ok(url)
}

/// `"a, b,,c"` → `["a", "b", "c"]`.
fn list(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// A secret setting (a master key): wiped from memory when dropped, and never printed.
#[derive(Clone)]
pub struct SecretSetting(zeroize::Zeroizing<String>);

impl SecretSetting {
    /// The value, for the one place that parses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretSetting {
    fn from(value: String) -> Self {
        Self(zeroize::Zeroizing::new(value))
    }
}

impl From<&str> for SecretSetting {
    fn from(value: &str) -> Self {
        Self::from(value.to_string())
    }
}

impl fmt::Debug for SecretSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads `NAME`, or the file `NAME_FILE` points to (trailing newline removed).
fn secret(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<String>, ConfigError> {
    if let Some(mut value) = lookup(name).filter(|value| !value.trim().is_empty()) {
        let trimmed = value.trim().to_string();
        zeroize::Zeroize::zeroize(&mut value);
        return Ok(Some(trimmed));
    }
    let Some(path) = lookup(&format!("{name}_FILE")).filter(|path| !path.is_empty()) else {
        return Ok(None);
    };
    match std::fs::read_to_string(&path) {
        Ok(mut contents) => {
            let trimmed = contents.trim().to_string();
            zeroize::Zeroize::zeroize(&mut contents);
            Ok(Some(trimmed))
        }
        Err(source) => Err(ConfigError::File { name, path, source }),
    }
}

/// `<name>/` beside the executable when the server was installed with it, otherwise
/// cargo-leptos's / the build scripts' output directory in the workspace.
fn beside_exe_or(name: &str, workspace_dir: &str) -> String {
    let beside_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|dir| dir.is_dir());
    match beside_exe {
        Some(dir) => dir.to_string_lossy().into_owned(),
        None => workspace_dir.into(),
    }
}

/// Shows every setting with the secrets hidden: this is what the server logs at start.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database = match &self.database_url {
            Some(url) => redact_url_password(url),
            None => format!("sqlite in {}", self.data_dir.display()),
        };
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("database", &database)
            .field("public_url", &self.public_url)
            .field("master_key", &self.master_key.as_ref().map(|_| "***"))
            .field("site_root", &self.site_root)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field(
                "master_key_previous",
                &self.master_key_previous.as_ref().map(|_| "***"),
            )
            .field("job_expiry", &self.job_expiry)
            .field("downloads_dir", &self.downloads_dir)
            .field("notifications", &self.notifications)
            .field("retention", &self.retention)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("limits", &self.limits)
            .field(
                "github",
                &self.github.as_ref().map(|github| {
                    format!(
                        "client {} at {} (API {}), users {:?}, orgs {:?}",
                        github.client_id,
                        github.web_url,
                        github.api_url,
                        github.allowed_users,
                        github.allowed_orgs
                    )
                }),
            )
            .finish()
    }
}

/// `STAGELY_NOTIFY_*`: the timings of notifications, short in tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifyConfig {
    /// `STAGELY_NOTIFY_OFFLINE_GRACE_SECS` (30): an agent disconnected this long is offline.
    pub offline_grace: Duration,
    /// `STAGELY_NOTIFY_QUIET_SECS` (30): container exits within this long after a stop, down
    /// or restart the person asked for are not reported.
    pub quiet_after_lifecycle: Duration,
    /// `STAGELY_NOTIFY_TIMEOUT_MS` (10000): one attempt to reach a receiver.
    pub timeout: Duration,
    /// `STAGELY_NOTIFY_RETRY_MS` (2000): the wait after a first failed attempt, doubled after
    /// each one.
    pub first_retry: Duration,
    /// `STAGELY_NOTIFY_MAX_RETRY_SECS` (300): the longest wait between attempts.
    pub max_retry: Duration,
    /// `STAGELY_NOTIFY_MAX_ATTEMPTS` (20): a delivery is given up after this many attempts…
    pub max_attempts: u32,
    /// `STAGELY_NOTIFY_MAX_AGE_SECS` (86400): …or once it is this old.
    pub max_age: Duration,
    /// `STAGELY_NOTIFY_QUEUE` (500): pending deliveries kept per channel, counting one being
    /// sent; beyond it the oldest waiting ones are dropped. When sends in flight fill it, the
    /// newest delivery still waits.
    pub queue_per_channel: u32,
    /// `STAGELY_NOTIFY_POLL_MS` (1000): how often the worker looks for due deliveries when
    /// nothing woke it (a retry coming due, another replica's queue).
    pub poll: Duration,
    /// `STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS` (`0`): whether a channel may point at this host
    /// or a private network (a LAN ntfy). Off, any signed-in person could otherwise make the
    /// server send requests to services only it can reach.
    pub allow_private_networks: bool,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            offline_grace: Duration::from_secs(30),
            quiet_after_lifecycle: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            first_retry: Duration::from_secs(2),
            max_retry: Duration::from_secs(300),
            max_attempts: 20,
            max_age: Duration::from_secs(24 * 3600),
            queue_per_channel: 500,
            poll: Duration::from_secs(1),
            allow_private_networks: false,
        }
    }
}

impl NotifyConfig {
    fn from_lookup(non_empty: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let number = |name, min, max| whole_number(non_empty, name, min, max);
        let defaults = Self::default();
        let secs = |name, default: Duration, max| {
            Ok::<_, ConfigError>(number(name, 0, max)?.map_or(default, Duration::from_secs))
        };
        let millis = |name, default: Duration, min, max| {
            Ok::<_, ConfigError>(number(name, min, max)?.map_or(default, Duration::from_millis))
        };
        Ok(Self {
            offline_grace: secs(
                "STAGELY_NOTIFY_OFFLINE_GRACE_SECS",
                defaults.offline_grace,
                86_400,
            )?,
            quiet_after_lifecycle: secs(
                "STAGELY_NOTIFY_QUIET_SECS",
                defaults.quiet_after_lifecycle,
                86_400,
            )?,
            timeout: millis("STAGELY_NOTIFY_TIMEOUT_MS", defaults.timeout, 100, 600_000)?,
            first_retry: millis(
                "STAGELY_NOTIFY_RETRY_MS",
                defaults.first_retry,
                10,
                3_600_000,
            )?,
            max_retry: secs("STAGELY_NOTIFY_MAX_RETRY_SECS", defaults.max_retry, 86_400)?,
            max_attempts: number("STAGELY_NOTIFY_MAX_ATTEMPTS", 1, 1000)?
                .map_or(defaults.max_attempts, |n| n as u32),
            max_age: secs("STAGELY_NOTIFY_MAX_AGE_SECS", defaults.max_age, 30 * 86_400)?,
            queue_per_channel: number("STAGELY_NOTIFY_QUEUE", 1, 100_000)?
                .map_or(defaults.queue_per_channel, |n| n as u32),
            poll: millis("STAGELY_NOTIFY_POLL_MS", defaults.poll, 10, 60_000)?,
            allow_private_networks: flag(non_empty, "STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS")?,
        })
    }
}

/// `name` as a whole number from `min` to `max`; `None` when it is not set.
fn whole_number(
    non_empty: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ConfigError> {
    non_empty(name)
        .map(|value| {
            value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|number| (min..=max).contains(number))
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    reason: format!("{value:?} is not a whole number from {min} to {max}"),
                })
        })
        .transpose()
}

/// `STAGELY_KEEP_*`: how much history the server keeps; housekeeping purges the rest every
/// `purge_interval` (see `ops::retention`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// `STAGELY_KEEP_DEPLOYMENTS` (100): finished jobs kept per project, with their output.
    /// Older ones go, except the newest successful deploy and any a kept job redeploys.
    pub deployments_per_project: u32,
    /// `STAGELY_KEEP_SECRET_VERSIONS` (10): versions kept per secret besides its current one
    /// and those a kept deployment ran.
    pub secret_versions: u32,
    /// `STAGELY_KEEP_AUDIT_DAYS` (365): audit entries older than this go.
    pub audit: Duration,
    /// `STAGELY_KEEP_DELIVERIES_DAYS` (30): finished notification deliveries older than this
    /// go (each channel also keeps at most its newest `STAGELY_NOTIFY_QUEUE`).
    pub deliveries: Duration,
    /// `STAGELY_PURGE_INTERVAL_SECS` (300): how often a purge pass runs.
    pub purge_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            deployments_per_project: 100,
            secret_versions: 10,
            audit: Duration::from_secs(365 * DAY),
            deliveries: Duration::from_secs(30 * DAY),
            purge_interval: Duration::from_secs(300),
        }
    }
}

const DAY: u64 = 86_400;

impl RetentionConfig {
    fn from_lookup(non_empty: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let count = |name, default: u32| {
            Ok::<_, ConfigError>(
                whole_number(non_empty, name, 1, 1_000_000)?.map_or(default, |n| n as u32),
            )
        };
        let days = |name, default: Duration| {
            Ok::<_, ConfigError>(
                whole_number(non_empty, name, 1, 36_500)?
                    .map_or(default, |days| Duration::from_secs(days * DAY)),
            )
        };
        Ok(Self {
            deployments_per_project: count(
                "STAGELY_KEEP_DEPLOYMENTS",
                defaults.deployments_per_project,
            )?,
            secret_versions: count("STAGELY_KEEP_SECRET_VERSIONS", defaults.secret_versions)?,
            audit: days("STAGELY_KEEP_AUDIT_DAYS", defaults.audit)?,
            deliveries: days("STAGELY_KEEP_DELIVERIES_DAYS", defaults.deliveries)?,
            purge_interval: whole_number(non_empty, "STAGELY_PURGE_INTERVAL_SECS", 1, DAY)?
                .map_or(defaults.purge_interval, Duration::from_secs),
        })
    }
}

/// What one client, agent or browser tab can make the server hold (README, "Limits").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// `STAGELY_HEADER_TIMEOUT_SECS` (10): a request's headers must arrive whole within this
    /// long after the server starts waiting for them, or the connection is closed. Also bounds
    /// how long a kept-alive connection may wait before its next request starts.
    pub header_timeout: Duration,
    /// `STAGELY_IDLE_TIMEOUT_SECS` (60): an HTTP connection that moves no byte for this long
    /// is closed (a request still being answered first finishes). WebSockets are not HTTP
    /// connections any more once upgraded: their own heartbeats decide.
    pub idle_timeout: Duration,
    /// `STAGELY_MAX_CONNECTIONS` (10000): open connections, WebSockets included; beyond it a
    /// new connection waits in the listen queue until one closes.
    pub max_connections: usize,
    /// `STAGELY_AGENT_BYTES_PER_SEC` (1048576): sustained bytes of log batches, command output
    /// and container state reports an agent may send (as frames on its socket); beyond it and
    /// the burst, those frames are dropped and the lines they held counted.
    pub agent_bytes_per_sec: u64,
    /// `STAGELY_AGENT_BURST_BYTES` (8388608): what an agent may send at once above the rate.
    pub agent_burst_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            agent_bytes_per_sec: 1 << 20,
            agent_burst_bytes: 8 << 20,
        }
    }
}

impl LimitsConfig {
    fn from_lookup(non_empty: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let number = |name, min, max, default: u64| {
            Ok::<_, ConfigError>(whole_number(non_empty, name, min, max)?.unwrap_or(default))
        };
        let secs = |name, default: Duration| {
            Ok::<_, ConfigError>(Duration::from_secs(number(
                name,
                1,
                3600,
                default.as_secs(),
            )?))
        };
        Ok(Self {
            header_timeout: secs("STAGELY_HEADER_TIMEOUT_SECS", defaults.header_timeout)?,
            idle_timeout: secs("STAGELY_IDLE_TIMEOUT_SECS", defaults.idle_timeout)?,
            max_connections: number(
                "STAGELY_MAX_CONNECTIONS",
                1,
                10_000_000,
                defaults.max_connections as u64,
            )? as usize,
            agent_bytes_per_sec: number(
                "STAGELY_AGENT_BYTES_PER_SEC",
                1024,
                1 << 40,
                defaults.agent_bytes_per_sec,
            )?,
            // At least one whole frame, or a frame could never be let through.
            agent_burst_bytes: number(
                "STAGELY_AGENT_BURST_BYTES",
                shared::protocol::MAX_FRAME_BYTES as u64,
                1 << 40,
                defaults.agent_burst_bytes,
            )?,
        })
    }
}

/// An on/off setting: `1`/`true` or `0`/`false`, off when unset.
fn flag(
    non_empty: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<bool, ConfigError> {
    match non_empty(name).as_deref().map(str::trim) {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(other) => Err(ConfigError::Invalid {
            name,
            reason: format!("{other:?} is not 1 or 0"),
        }),
    }
}

/// `postgres://user:pw@host/db` → `postgres://user:***@host/db`.
fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_just_work() {
        let config = config(&[]).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:3000");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.public_url, "http://127.0.0.1:3000");
        assert!(!config.uses_postgres());
        assert_eq!(config.heartbeat_interval, Duration::from_secs(30));
    }

    #[test]
    fn secrets_come_from_files_and_never_show_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "c2VjcmV0LWtleQ==\n").unwrap();
        let config = config(&[
            ("APP_MASTER_KEY_FILE", key_file.to_str().unwrap()),
            ("DATABASE_URL", "postgres://stagely:pa55word@db/stagely"),
        ])
        .unwrap();
        assert_eq!(
            config.master_key.as_ref().map(SecretSetting::expose),
            Some("c2VjcmV0LWtleQ==")
        );
        assert!(config.uses_postgres());
        let printed = format!("{config:?}");
        assert!(!printed.contains("pa55word"), "{printed}");
        assert!(!printed.contains("c2VjcmV0"), "{printed}");
        assert!(
            printed.contains("postgres://stagely:***@db/stagely"),
            "{printed}"
        );
    }

    #[test]
    fn notification_timings_come_from_the_environment() {
        assert_eq!(config(&[]).unwrap().notifications, NotifyConfig::default());
        let fast = config(&[
            ("STAGELY_NOTIFY_RETRY_MS", "200"),
            ("STAGELY_NOTIFY_OFFLINE_GRACE_SECS", "1"),
            ("STAGELY_NOTIFY_QUEUE", "3"),
        ])
        .unwrap()
        .notifications;
        assert_eq!(fast.first_retry, Duration::from_millis(200));
        assert_eq!(fast.offline_grace, Duration::from_secs(1));
        assert_eq!(fast.queue_per_channel, 3);
        for (name, value) in [
            ("STAGELY_NOTIFY_QUEUE", "0"),
            ("STAGELY_NOTIFY_TIMEOUT_MS", "ten"),
            ("STAGELY_NOTIFY_MAX_ATTEMPTS", "-1"),
        ] {
            let error = config(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(name), "{name}={value}: {error}");
        }
    }

    #[test]
    fn retention_comes_from_the_environment() {
        assert_eq!(config(&[]).unwrap().retention, RetentionConfig::default());
        let short = config(&[
            ("STAGELY_KEEP_DEPLOYMENTS", "5"),
            ("STAGELY_KEEP_SECRET_VERSIONS", "2"),
            ("STAGELY_KEEP_AUDIT_DAYS", "7"),
            ("STAGELY_KEEP_DELIVERIES_DAYS", "1"),
            ("STAGELY_PURGE_INTERVAL_SECS", "60"),
        ])
        .unwrap()
        .retention;
        assert_eq!(short.deployments_per_project, 5);
        assert_eq!(short.secret_versions, 2);
        assert_eq!(short.audit, Duration::from_secs(7 * 86_400));
        assert_eq!(short.deliveries, Duration::from_secs(86_400));
        assert_eq!(short.purge_interval, Duration::from_secs(60));
        for (name, value) in [
            ("STAGELY_KEEP_DEPLOYMENTS", "0"),
            ("STAGELY_KEEP_AUDIT_DAYS", "a year"),
            ("STAGELY_PURGE_INTERVAL_SECS", "0"),
        ] {
            let error = config(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(name), "{name}={value}: {error}");
        }
    }

    #[test]
    fn plain_http_to_another_host_stops_the_server_unless_allowed() {
        for url in ["http://deploy.example.com", "http://10.0.0.5:3000"] {
            let error = config(&[("STAGELY_PUBLIC_URL", url)])
                .unwrap_err()
                .to_string();
            assert!(error.contains("STAGELY_PUBLIC_URL"), "{url}: {error}");
            assert!(error.contains("reverse proxy"), "{url}: {error}");
            assert!(
                error.contains("STAGELY_ALLOW_INSECURE_HTTP=1"),
                "{url}: {error}"
            );
        }
        // Listening on every interface without saying how people reach the server is the same.
        let error = config(&[("STAGELY_BIND", "0.0.0.0:3000")]).unwrap_err();
        assert!(
            error.to_string().contains("\"http://0.0.0.0:3000\""),
            "{error}"
        );

        let allowed = config(&[
            ("STAGELY_PUBLIC_URL", "http://deploy.example.com"),
            ("STAGELY_ALLOW_INSECURE_HTTP", "1"),
        ])
        .unwrap();
        assert!(allowed.allow_insecure_http);
        for url in [
            "https://deploy.example.com",
            "http://127.0.0.1:3000",
            "http://localhost:3000",
            "http://[::1]:3000",
        ] {
            let config = config(&[("STAGELY_PUBLIC_URL", url)]).unwrap();
            assert_eq!(config.public_url, url);
        }
    }

    #[test]
    fn the_session_cookie_is_host_prefixed_over_https_only() {
        let https = config(&[("STAGELY_PUBLIC_URL", "https://deploy.example.com")]).unwrap();
        assert_eq!(https.session_cookie(), "__Host-stagely_session");
        assert_eq!(config(&[]).unwrap().session_cookie(), "stagely_session");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases = [
            (("STAGELY_BIND", "localhost"), "STAGELY_BIND"),
            (("DATABASE_URL", "mysql://x"), "DATABASE_URL"),
            (("STAGELY_PUBLIC_URL", "example.com"), "STAGELY_PUBLIC_URL"),
            (
                ("STAGELY_ALLOW_INSECURE_HTTP", "yes"),
                "STAGELY_ALLOW_INSECURE_HTTP",
            ),
            (("STAGELY_HEARTBEAT_SECS", "0"), "STAGELY_HEARTBEAT_SECS"),
            (("STAGELY_MAX_CONNECTIONS", "0"), "STAGELY_MAX_CONNECTIONS"),
            (
                ("STAGELY_HEADER_TIMEOUT_SECS", "ten"),
                "STAGELY_HEADER_TIMEOUT_SECS",
            ),
            (
                ("STAGELY_AGENT_BURST_BYTES", "1024"),
                "STAGELY_AGENT_BURST_BYTES",
            ),
            (
                ("STAGELY_GITHUB_CLIENT_ID", "Iv1.abc"),
                "STAGELY_GITHUB_CLIENT_SECRET",
            ),
            (
                ("APP_MASTER_KEY_FILE", "/nonexistent/key"),
                "APP_MASTER_KEY_FILE",
            ),
        ];
        for ((name, value), expected) in cases {
            let error = config(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(expected), "{name}={value}: {error}");
        }
    }
}
