//! `stagely-agent`: runs on every host, keeps a link to the Stagely server and runs its jobs.

use agent::backoff::Backoff;
use agent::link::{self, LinkConfig};
use agent::system;
use anyhow::Context;
use clap::Parser;
use shared::protocol::Hello;
use shared::PROTOCOL_VERSION;

/// The Stagely agent: connects this host to a Stagely server and deploys its Compose projects.
#[derive(Parser)]
#[command(name = "stagely-agent", version)]
struct Cli {
    /// The server's URL, e.g. https://stagely.example.com
    #[arg(long, env = "STAGELY_SERVER_URL")]
    server: String,
    /// This agent's token (prefer --token-file or STAGELY_AGENT_TOKEN_FILE: command lines are
    /// visible to every user of the host).
    #[arg(
        long,
        env = "STAGELY_AGENT_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding this agent's token.
    #[arg(long, env = "STAGELY_AGENT_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let token = match (cli.token, cli.token_file) {
        (Some(token), _) => token,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading the agent token from {}", path.display()))?
            .trim()
            .to_string(),
        (None, None) => anyhow::bail!(
            "no agent token: pass --token-file (or --token), or set STAGELY_AGENT_TOKEN_FILE"
        ),
    };
    if token.is_empty() {
        anyhow::bail!("the agent token is empty");
    }
    let stream_url = link::stream_url(&cli.server).map_err(anyhow::Error::msg)?;

    let (docker_version, compose) =
        tokio::join!(system::docker_version(), system::detect_compose());
    match (&docker_version, &compose) {
        (Some(docker), Some((_, compose))) => {
            tracing::info!(%docker, %compose, "found Docker and Compose")
        }
        _ => {
            tracing::warn!(?docker_version, compose = ?compose.as_ref().map(|c| &c.1), "Docker or Compose not found; deploys will fail until they are installed")
        }
    }
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: system::hostname(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        docker_version,
        compose_version: compose.map(|(_, version)| version),
    };
    let config = LinkConfig {
        stream_url,
        token,
        hello,
        backoff: Backoff::default(),
    };
    tracing::info!(
        ?config,
        "starting stagely-agent {}",
        env!("CARGO_PKG_VERSION")
    );
    link::run(config, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the agent");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
