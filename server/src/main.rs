//! `stagely-server`: parses the command line and configuration, then serves or runs an admin
//! command against the same database.

use anyhow::Context;
use clap::{Parser, Subcommand};
use server::config::Config;
use server::db::Store;
use server::token::Token;
use server::AppState;

const ENVIRONMENT_HELP: &str = "\
Configuration (environment variables):
  STAGELY_BIND            address to listen on                [default: 127.0.0.1:3000]
  STAGELY_DATA_DIR        SQLite database and generated key   [default: ./data]
  DATABASE_URL            postgres://… to use PostgreSQL instead of SQLite
  STAGELY_PUBLIC_URL      URL browsers and agents use         [default: http://<bind>]
  APP_MASTER_KEY          base64 of 32 bytes; encrypts secrets (generated in the data dir
                          when unset and using SQLite)
  STAGELY_SITE_ROOT       dashboard assets built by cargo-leptos [default: target/site]
  STAGELY_HEARTBEAT_SECS  agent heartbeat interval             [default: 30]
  RUST_LOG                log filter                           [default: info]
APP_MASTER_KEY and DATABASE_URL may instead be read from a file named by <NAME>_FILE.";

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
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Register an agent and print its token on stdout. The token is shown only this once.
    Add {
        /// A name for the host, shown in the dashboard.
        name: String,
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

async fn agents(command: AgentsCommand, config: Config) -> anyhow::Result<()> {
    let store = Store::connect(config.database_url.as_deref(), &config.data_dir).await?;
    match command {
        AgentsCommand::Add { name } => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
                anyhow::bail!("the agent name must be 1 to 64 printable characters");
            }
            let token = Token::generate();
            let agent = store.create_agent(name, &token.hash()).await?;
            println!("{}", token.expose());
            eprintln!(
                "Registered agent {name:?} ({}). The token above is shown only once.\n\
                 Start the agent with:\n  stagely-agent --server {} --token <token>",
                agent.id, config.public_url
            );
        }
        AgentsCommand::Revoke { id } => {
            if !store.revoke_agent(id).await? {
                anyhow::bail!("no active agent has the id {id}");
            }
            eprintln!("Revoked agent {id}; a running server closes its session within a second.");
        }
        AgentsCommand::List => {
            for agent in store.list_agents().await? {
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
