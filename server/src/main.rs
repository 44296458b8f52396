//! `stagely-server`: parses the command line and configuration, then serves or runs an admin
//! command against the same database.

use anyhow::Context;
use clap::{Parser, Subcommand};
use server::config::Config;
use server::db::Store;
use server::hub::Hub;
use server::ops::{self, Actor, OpError};
use server::AppState;
use shared::api::CreateAgent;
use shared::{AgentName, Login};

/// Server-side rendering allocates and frees many small objects per page; glibc's malloc took
/// about a quarter of a page view's CPU (docs/BENCHMARKS.md, "Page speed").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ENVIRONMENT_HELP: &str = "\
Configuration (environment variables):
  STAGELY_BIND            address to listen on                [default: 127.0.0.1:3000]
  STAGELY_DATA_DIR        SQLite database and generated key   [default: ./data]
  DATABASE_URL            postgres://… to use PostgreSQL instead of SQLite; several
                          replicas share one (README, \"Running several replicas\")
  STAGELY_PUBLIC_URL      URL browsers and agents use         [default: http://<bind>]
                          https://… behind a TLS proxy; plain http only to loopback
  STAGELY_ALLOW_INSECURE_HTTP=1
                          allow a plain http public URL to another host anyway
  APP_MASTER_KEY          base64 of 32 bytes; encrypts secrets (generated in the data dir
                          when unset and using SQLite)
  STAGELY_SITE_ROOT       dashboard assets built by cargo-leptos [default: target/site]
  STAGELY_HEARTBEAT_SECS  agent heartbeat interval             [default: 30]
  STAGELY_JOB_EXPIRY_SECS an open deployment with no word from its agent for this long
                          is marked timed out                   [default: 3600]
  APP_MASTER_KEY_PREVIOUS the key before a rotation (see rotate-key)
  RUST_LOG                log filter                           [default: info]
  STAGELY_GITHUB_CLIENT_ID / STAGELY_GITHUB_CLIENT_SECRET
                          a GitHub OAuth app: enables \"Sign in with GitHub\"
  STAGELY_GITHUB_ALLOWED_USERS / STAGELY_GITHUB_ALLOWED_ORGS
                          comma-separated logins / organizations allowed in
  STAGELY_GITHUB_URL / STAGELY_GITHUB_API_URL
                          GitHub Enterprise [default: https://github.com, https://api.github.com]
  STAGELY_DOWNLOADS_DIR   the static agent binaries install.sh downloads
                          [default: downloads/ beside the binary, else target/downloads]
  STAGELY_NOTIFY_OFFLINE_GRACE_SECS / _QUIET_SECS / _TIMEOUT_MS / _RETRY_MS / _MAX_RETRY_SECS /
  _MAX_ATTEMPTS / _MAX_AGE_SECS / _QUEUE / _POLL_MS
                          notifications [default: 30, 30, 10000, 2000, 300, 20, 86400, 500, 1000]
APP_MASTER_KEY, APP_MASTER_KEY_PREVIOUS, DATABASE_URL and STAGELY_GITHUB_CLIENT_SECRET may instead be read from a file named by <NAME>_FILE.";

/// The Stagely server: dashboard, API and the hub every agent connects to.
#[derive(Parser)]
#[command(name = "stagely-server", version, after_help = ENVIRONMENT_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Manage agents.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage API tokens.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Re-encrypt every secret under APP_MASTER_KEY; the old key is APP_MASTER_KEY_PREVIOUS.
    /// Safe to interrupt and run again: every row stays readable with the two keys.
    RotateKey,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a local user.
    Add {
        #[arg(value_parser = |login: &str| Login::parse(login))]
        login: Login,
        /// Give the user every agent registered from the command line, and admin rights.
        #[arg(long)]
        admin: bool,
        /// Read the password from this file (without it the user can only use API tokens).
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create an API token for a user and print it on stdout (shown only this once).
    Create { login: String },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Register an agent and print its token on stdout. The token is shown only this once.
    Add {
        /// A name for the host, shown in the dashboard.
        #[arg(value_parser = |name: &str| AgentName::parse(name))]
        name: AgentName,
    },
    /// List registered agents.
    List,
    /// Revoke an agent's token; its live session is closed within about a second.
    Revoke {
        /// The agent's id (from `agents list`).
        id: shared::AgentId,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let config = Config::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Agents { command } => agents(command, config).await,
        Command::Users { command } => users(command, config).await,
        Command::Tokens { command } => tokens(command, config).await,
        Command::RotateKey => rotate_key(config).await,
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    // Logs go to stderr so stdout stays clean for what commands print (tokens, lists).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(
        ?config,
        "starting stagely-server {}",
        env!("CARGO_PKG_VERSION")
    );
    raise_open_file_limit();
    let bind = config.bind;
    let public_url = config.public_url.clone();
    let state = AppState::build(config).await?;
    tracing::info!(backend = state.store.backend(), "database ready");
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (STAGELY_BIND)"))?;
    tracing::info!("dashboard at {public_url}");
    server::run(listener, state, shutdown_signal()).await
}

/// Every connected agent holds a socket: raise the soft limit on open files to the hard limit,
/// and say how many agents the result allows when it is low.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass and nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    if limit.rlim_cur < 65_536 {
        tracing::warn!(
            limit = limit.rlim_cur,
            "the open-file limit caps this server at about {} agents; raise it (e.g. LimitNOFILE= in the systemd unit) for a larger fleet",
            limit.rlim_cur.saturating_sub(100)
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}

/// The CLI's answer to a refused operation: its message, as the dashboard would show it.
fn refused(error: OpError) -> anyhow::Error {
    match error {
        OpError::Internal(error) => error,
        other => anyhow::anyhow!("{other}"),
    }
}

async fn agents(command: AgentsCommand, config: Config) -> anyhow::Result<()> {
    let store = Store::connect(config.database_url.as_deref(), &config.data_dir).await?;
    // This process holds no agent sessions; a running server sees revocations in the database.
    let hub = Hub::new();
    match command {
        AgentsCommand::Add { name } => {
            let input = CreateAgent { name };
            let created = ops::agents::register(&store, &hub, Actor::Operator, input)
                .await
                .map_err(refused)?;
            println!("{}", created.token);
            eprintln!(
                "Registered agent {:?} ({}). The token above is shown only once.\n\
                 Save it in a file only the agent's user can read (or put it in the agent's \
                 environment as STAGELY_AGENT_TOKEN; never on its command line) and start the \
                 agent with:\n  stagely-agent --server {} --token-file <file>",
                created.agent.name, created.agent.id, config.public_url
            );
        }
        AgentsCommand::Revoke { id } => {
            match ops::agents::revoke(&store, &hub, Actor::Operator, id).await {
                Ok(()) => {}
                Err(OpError::NotFound) => anyhow::bail!("no active agent has the id {id}"),
                Err(other) => return Err(refused(other)),
            }
            eprintln!("Revoked agent {id}; a running server closes its session within a second.");
        }
        AgentsCommand::List => {
            let agents = ops::agents::list(&store, &hub, Actor::Operator)
                .await
                .map_err(refused)?;
            for agent in agents {
                let seen = agent
                    .last_seen
                    .map(|at| at.to_string())
                    .unwrap_or_else(|| "never".into());
                println!("{}\t{}\tlast seen {seen}", agent.id, agent.name);
            }
        }
    }
    store.close().await;
    Ok(())
}

async fn users(command: UsersCommand, config: Config) -> anyhow::Result<()> {
    let store = Store::connect(config.database_url.as_deref(), &config.data_dir).await?;
    match command {
        UsersCommand::Add {
            login,
            admin,
            password_file,
        } => {
            let password = match password_file {
                Some(path) => {
                    let password = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading the password from {}", path.display()))?;
                    Some(password.trim_end_matches(['\n', '\r']).to_string())
                }
                None => None,
            };
            let input = ops::users::NewUser {
                login,
                password,
                admin,
            };
            let user = ops::users::add(&store, input).await.map_err(refused)?;
            eprintln!(
                "Created user {} ({}){}",
                user.login,
                user.id,
                if admin { " as admin" } else { "" }
            );
        }
    }
    store.close().await;
    Ok(())
}

async fn tokens(command: TokensCommand, config: Config) -> anyhow::Result<()> {
    let store = Store::connect(config.database_url.as_deref(), &config.data_dir).await?;
    match command {
        TokensCommand::Create { login } => {
            let token = ops::users::create_api_token(&store, &login)
                .await
                .map_err(refused)?;
            println!("{}", token.expose());
            eprintln!("Created an API token for {login}; it is shown only this once.");
        }
    }
    store.close().await;
    Ok(())
}

/// Re-encrypts every secret under the current key; safe to interrupt and run again.
async fn rotate_key(config: Config) -> anyhow::Result<()> {
    if config.master_key_previous.is_none() {
        anyhow::bail!(
            "set APP_MASTER_KEY to the new key and APP_MASTER_KEY_PREVIOUS to the old one"
        );
    }
    let store = Store::connect(config.database_url.as_deref(), &config.data_dir).await?;
    let mut config = config;
    let vault = server::state::open_vault(&mut config)?;
    let done = ops::secrets::rotate_all(&store, &vault)
        .await
        .map_err(refused)?;
    let channels = ops::notifications::rotate_all(&store, &vault)
        .await
        .map_err(refused)?;
    let hooks = ops::webhooks::rotate_all(&store, &vault)
        .await
        .map_err(refused)?;
    let sources = ops::sources::rotate_all(&store, &vault)
        .await
        .map_err(refused)?;
    let registries = ops::registries::rotate_all(&store, &vault)
        .await
        .map_err(refused)?;
    eprintln!(
        "Rotated {} secret(s), {} notification channel credential(s), {} webhook secret(s), \
         {} Git credential(s) and {} registry credential(s) to key {}; {} were already under \
         it. APP_MASTER_KEY_PREVIOUS can now be removed.",
        done.rotated,
        channels.rotated,
        hooks.rotated,
        sources.rotated,
        registries.rotated,
        vault.current_key_id(),
        done.current + channels.current + hooks.current + sources.current + registries.current
    );
    store.close().await;
    Ok(())
}
