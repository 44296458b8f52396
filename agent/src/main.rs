//! `stagely-agent`: runs on every host, keeps a link to the Stagely server and runs its jobs.
//! `render` and `deploy` run the same deploy code locally, without a server, for people who want
//! to see or try what the agent would do.

use agent::backoff::Backoff;
use agent::deploy::{self, DeployOptions, DeployRequest};
use agent::jobs::Executor;
use agent::link::{self, LinkConfig};
use agent::system::{self, Compose};
use agent::{compose, override_file};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use shared::protocol::{Hello, JobEvent};
use shared::{ProjectName, Secret, PROTOCOL_VERSION};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Stagely agent: connects this host to a Stagely server and deploys its Compose projects.
#[derive(Parser)]
#[command(
    name = "stagely-agent",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the server and serve it (the default).
    Run(RunArgs),
    /// Print the override file a deploy would write (values masked unless --show-values).
    Render {
        #[command(flatten)]
        project: LocalProject,
        /// Print the real values, e.g. to pipe into `docker compose config`.
        #[arg(long)]
        show_values: bool,
    },
    /// Deploy a project on this host now, without a server, with progress on the terminal.
    Deploy {
        #[command(flatten)]
        project: LocalProject,
    },
    /// Register this host with a single-use join token and save the agent's own token
    /// (install.sh runs this once).
    Join {
        /// The server's URL, e.g. https://stagely.example.com
        #[arg(long, env = "STAGELY_SERVER_URL")]
        server: String,
        /// The join token from the dashboard (Servers → Add server).
        #[arg(long, env = "STAGELY_JOIN_TOKEN", hide_env_values = true)]
        join_token: String,
        /// Where to save the agent token (created 0600).
        #[arg(long, env = "STAGELY_AGENT_TOKEN_FILE")]
        token_file: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The server's URL, e.g. https://stagely.example.com
    #[arg(long, env = "STAGELY_SERVER_URL")]
    server: Option<String>,
    /// This agent's token (prefer --token-file: command lines are visible to every user).
    #[arg(
        long,
        env = "STAGELY_AGENT_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding this agent's token.
    #[arg(long, env = "STAGELY_AGENT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Args)]
struct LocalProject {
    /// The project directory (holding the compose file).
    #[arg(long)]
    dir: PathBuf,
    /// A JSON file with the secrets: [{"key":"K","value":"V","scope":"global"}, …]; a scope may
    /// also be {"service":"web"}.
    #[arg(long)]
    secrets: PathBuf,
    /// The compose file inside --dir (default: found as Compose finds it).
    #[arg(long)]
    file: Option<String>,
    /// The Compose project name (default: the directory's name, as Compose does).
    #[arg(long)]
    project: Option<String>,
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

    match cli.command {
        None => run(cli.run).await,
        Some(Command::Run(args)) => run(args).await,
        Some(Command::Render {
            project,
            show_values,
        }) => render(project, show_values),
        Some(Command::Deploy { project }) => deploy_locally(project).await,
        Some(Command::Join {
            server,
            join_token,
            token_file,
        }) => join(&server, &join_token, &token_file).await,
    }
}

async fn join(server: &str, join_token: &str, token_file: &Path) -> anyhow::Result<()> {
    let (docker_version, compose) =
        tokio::join!(system::docker_version(), system::detect_compose());
    let hello = hello(docker_version, compose.map(|(_, version)| version));
    let joined = agent::join::join(server, join_token.trim(), hello)
        .await
        .map_err(|reason| anyhow::anyhow!("could not join {server}: {reason}"))?;
    agent::join::save_token(token_file, &joined.token)
        .with_context(|| format!("saving the agent token to {}", token_file.display()))?;
    println!(
        "stagely: registered as agent {:?} ({}); its token is in {}",
        joined.name,
        joined.agent_id,
        token_file.display()
    );
    Ok(())
}

/// How this agent introduces itself to the server.
fn hello(docker_version: Option<String>, compose_version: Option<String>) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: system::hostname(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        docker_version,
        compose_version,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let server = args
        .server
        .context("no server: pass --server <url> or set STAGELY_SERVER_URL")?;
    let token = match (args.token, args.token_file) {
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
    let stream_url = link::stream_url(&server).map_err(anyhow::Error::msg)?;

    let (docker_version, compose) =
        tokio::join!(system::docker_version(), system::detect_compose());
    let detected_compose = compose.as_ref().map(|(compose, _)| compose.clone());
    match (&docker_version, &compose) {
        (Some(docker), Some((_, compose))) => {
            tracing::info!(%docker, %compose, "found Docker and Compose")
        }
        _ => tracing::warn!(
            ?docker_version,
            compose = ?compose.as_ref().map(|c| &c.1),
            "Docker or Compose not found; deploys will fail until they are installed"
        ),
    }
    let hello = hello(docker_version, compose.map(|(_, version)| version));
    let config = LinkConfig {
        stream_url,
        token,
        hello,
        backoff: Backoff::default(),
    };
    let ledger = state_dir().join("jobs.json");
    let (executor, events) = Executor::new(deploy_options(detected_compose)?, Some(ledger));
    tracing::info!(
        ?config,
        "starting stagely-agent {}",
        env!("CARGO_PKG_VERSION")
    );
    link::run(config, link::Jobs { executor, events }, shutdown_signal()).await;
    Ok(())
}

/// How this host deploys; the private directory is swept of files left by dead runs.
fn deploy_options(detected: Option<Compose>) -> anyhow::Result<DeployOptions> {
    Ok(DeployOptions {
        compose: compose_setting(detected)?,
        allowed_roots: allowed_roots(),
        private_dir: swept_private_dir(),
        up_timeout: Duration::from_secs(600),
        health_timeout: Duration::from_secs(120),
        settle: Duration::from_millis(1500),
    })
}

/// `STAGELY_COMPOSE` (v2 or v1) when set, else what was detected (v2 when in doubt).
fn compose_setting(detected: Option<Compose>) -> anyhow::Result<Compose> {
    match std::env::var("STAGELY_COMPOSE") {
        Ok(setting) => Compose::from_setting(&setting)
            .with_context(|| format!("STAGELY_COMPOSE={setting:?}: use v2 or v1")),
        Err(_) => Ok(detected.unwrap_or(Compose::V2)),
    }
}

/// `STAGELY_ALLOWED_ROOTS`: colon-separated directories projects must live under; unset means
/// anywhere on the host.
fn allowed_roots() -> Vec<PathBuf> {
    std::env::var("STAGELY_ALLOWED_ROOTS")
        .map(|roots| {
            roots
                .split(':')
                .filter(|r| !r.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The directory override files are written to, cleared of files left by dead runs.
fn swept_private_dir() -> PathBuf {
    let private_dir = state_dir().join("private");
    let swept = override_file::sweep(&private_dir);
    if swept > 0 {
        tracing::info!(swept, dir = %private_dir.display(), "removed override files left by an earlier run");
    }
    private_dir
}

/// `STAGELY_STATE_DIR`, else `$XDG_RUNTIME_DIR/stagely`, else `/tmp/stagely-<uid>`: the agent's
/// private working files (override files live in its `private/` directory, 0700).
fn state_dir() -> PathBuf {
    if let Ok(state) = std::env::var("STAGELY_STATE_DIR") {
        return PathBuf::from(state);
    }
    if let Ok(runtime) = std::env::var("XDG_RUNTIME_DIR") {
        return Path::new(&runtime).join("stagely");
    }
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("stagely-{uid}"))
}

/// The secrets file, the project name and the services, as a deploy would see them.
fn read_local(project: &LocalProject) -> anyhow::Result<(Vec<Secret>, ProjectName)> {
    let text = std::fs::read_to_string(&project.secrets)
        .with_context(|| format!("reading the secrets file {}", project.secrets.display()))?;
    let secrets: Vec<Secret> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a list of secrets", project.secrets.display()))?;
    let name = match &project.project {
        Some(name) => ProjectName::parse(name.as_str())?,
        None => default_project_name(&project.dir)?,
    };
    Ok((secrets, name))
}

fn render(project: LocalProject, show_values: bool) -> anyhow::Result<()> {
    let (secrets, _) = read_local(&project)?;
    let found = compose::load(&project.dir, project.file.as_deref(), &[])?;
    let environment = override_file::environment_by_service(&found.services, &secrets)?;
    print!("{}", override_file::render(&environment, !show_values));
    Ok(())
}

async fn deploy_locally(project: LocalProject) -> anyhow::Result<()> {
    let (secrets, name) = read_local(&project)?;
    let detected = system::detect_compose().await.map(|(compose, _)| compose);
    if detected.is_none() && std::env::var("STAGELY_COMPOSE").is_err() {
        anyhow::bail!("neither `docker compose` nor `docker-compose` answers");
    }
    let options = deploy_options(detected)?;
    let request = DeployRequest {
        project: &name,
        directory: &project.dir,
        compose_file: project.file.as_deref(),
        secrets: &secrets,
    };
    let result = deploy::deploy(&request, &options, |event| match event {
        JobEvent::Step { name } => eprintln!("==> {name}"),
        JobEvent::Output { line } => eprintln!("    {line}"),
        JobEvent::Received | JobEvent::Finished { .. } => {}
    })
    .await;
    match result {
        Ok(containers) => {
            eprintln!(
                "==> deployed {name}: {} container(s) running",
                containers.len()
            );
            Ok(())
        }
        Err(error) => {
            eprintln!("==> deploy of {name} failed: {error}");
            std::process::exit(1);
        }
    }
}

/// Compose's default project name: the directory's name, lowercased, with every character
/// outside `[a-z0-9_-]` removed.
fn default_project_name(dir: &Path) -> anyhow::Result<ProjectName> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("the project directory {} does not exist", dir.display()))?;
    let base = dir
        .file_name()
        .map(|name| name.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let normalized: String = base
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    let normalized = normalized.trim_start_matches(['_', '-']);
    ProjectName::parse(normalized).with_context(|| {
        format!(
            "{} gives no valid project name: pass --project",
            dir.display()
        )
    })
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
