//! `stagely-agent`: runs on every host, keeps a link to the Stagely server and runs its jobs.
//! `render` and `deploy` run the same deploy code locally, without a server, for people who want
//! to see or try what the agent would do.

use agent::backoff::Backoff;
use agent::deploy::{self, DeployOptions, DeployRequest};
use agent::jobs::Executor;
use agent::link::{self, AgentToken, LinkConfig, PlainHttp};
use agent::system::{self, Compose};
use agent::{compose, override_file, private_fs, registry_auth};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use shared::protocol::{Hello, JobEvent};
use shared::{ProjectName, Secret, PROTOCOL_VERSION};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

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
    /// Register this host with the single-use join token in STAGELY_JOIN_TOKEN (from the
    /// dashboard: Servers → Add server) and save the agent's own token (install.sh runs this
    /// once).
    Join {
        /// The server's URL, e.g. https://stagely.example.com
        #[arg(long, env = "STAGELY_SERVER_URL")]
        server: String,
        /// Where to save the agent token (created 0600).
        #[arg(long, env = "STAGELY_AGENT_TOKEN_FILE")]
        token_file: PathBuf,
        #[command(flatten)]
        insecure: InsecureHttp,
        /// Refused: tokens are never taken from the command line.
        #[arg(long = "join-token", hide = true)]
        refused_join_token: Option<String>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The server's URL, e.g. https://stagely.example.com
    #[arg(long, env = "STAGELY_SERVER_URL")]
    server: Option<String>,
    /// A file holding this agent's token (or set STAGELY_AGENT_TOKEN in the environment).
    #[arg(long, env = "STAGELY_AGENT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Refused: tokens are never taken from the command line.
    #[arg(long = "token", hide = true)]
    refused_token: Option<String>,
    #[command(flatten)]
    insecure: InsecureHttp,
}

#[derive(Args)]
struct InsecureHttp {
    /// Allow a plain http:// (ws://) server on another host: the agent's token and the
    /// secrets it deploys then cross the network in the clear. Loopback needs no opt-in.
    #[arg(
        long = "allow-insecure-http",
        env = "STAGELY_ALLOW_INSECURE_HTTP",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    allowed: bool,
}

impl InsecureHttp {
    fn plain_http(&self) -> PlainHttp {
        if self.allowed {
            PlainHttp::Allowed
        } else {
            PlainHttp::LoopbackOnly
        }
    }
}

/// Why a token on the command line is refused, and what to do instead.
fn token_flag_refused(flag: &str, instead: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{flag} is not accepted: a command line is visible to every user of this host (ps, \
         /proc). {instead}"
    )
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
            token_file,
            insecure,
            refused_join_token,
        }) => {
            if refused_join_token.is_some() {
                return Err(token_flag_refused(
                    "--join-token",
                    "Set STAGELY_JOIN_TOKEN in the environment instead.",
                ));
            }
            let join_token = std::env::var("STAGELY_JOIN_TOKEN")
                .ok()
                .map(Zeroizing::new)
                .filter(|token| !token.trim().is_empty())
                .context(
                    "no join token: set STAGELY_JOIN_TOKEN (the dashboard gives one under \
                     Servers → Add server)",
                )?;
            join(&server, insecure.plain_http(), &join_token, &token_file).await
        }
    }
}

async fn join(
    server: &str,
    plain_http: PlainHttp,
    join_token: &str,
    token_file: &Path,
) -> anyhow::Result<()> {
    // Checked before the single-use join token is spent, like the server URL.
    agent::join::join_url(server, plain_http).map_err(anyhow::Error::msg)?;
    agent::join::prepare_token_dir(token_file)
        .with_context(|| format!("cannot save the agent token at {}", token_file.display()))?;
    let (docker_version, compose) =
        tokio::join!(system::docker_version(), system::detect_compose());
    let hello = hello(docker_version, compose.map(|(_, version)| version));
    let joined = agent::join::join(server, plain_http, join_token.trim(), hello)
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
    if args.refused_token.is_some() {
        return Err(token_flag_refused(
            "--token",
            "Put the token in a file only the agent's user can read and pass --token-file \
             <file> (or set STAGELY_AGENT_TOKEN_FILE), or set STAGELY_AGENT_TOKEN in the \
             agent's environment.",
        ));
    }
    let server = args
        .server
        .context("no server: pass --server <url> or set STAGELY_SERVER_URL")?;
    let stream_url =
        link::stream_url(&server, args.insecure.plain_http()).map_err(anyhow::Error::msg)?;
    let state = prepared_state_dir()?;
    let token = agent_token(args.token_file.as_deref())?;
    sweep_temporaries(&state, args.token_file.as_deref());

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
    let ledger = state.join("jobs.json");
    let (executor, events) = Executor::new(deploy_options(detected_compose, &state)?, Some(ledger));
    tracing::info!(
        ?config,
        "starting stagely-agent {}",
        env!("CARGO_PKG_VERSION")
    );
    // Container states are watched for the agent's whole life; frames queue while the link is
    // down, and every welcome asks for a full list.
    tokio::spawn(executor.watch_states());
    link::run(config, link::Jobs { executor, events }, shutdown_signal()).await;
    Ok(())
}

/// The agent token: from `STAGELY_AGENT_TOKEN`, or read from `token_file`.
fn agent_token(token_file: Option<&Path>) -> anyhow::Result<AgentToken> {
    let from_env = std::env::var("STAGELY_AGENT_TOKEN")
        .ok()
        .map(Zeroizing::new)
        .filter(|token| !token.trim().is_empty());
    let token = match (from_env, token_file) {
        (Some(_), Some(_)) => anyhow::bail!(
            "both STAGELY_AGENT_TOKEN and a token file are set: keep only one of them"
        ),
        (Some(token), None) => token,
        (None, Some(path)) => Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the agent token from {}", path.display()))?,
        ),
        (None, None) => anyhow::bail!(
            "no agent token: pass --token-file <file> (or set STAGELY_AGENT_TOKEN_FILE), or set \
             STAGELY_AGENT_TOKEN"
        ),
    };
    let token = token.trim();
    if token.is_empty() {
        anyhow::bail!("the agent token is empty");
    }
    Ok(AgentToken::from(token))
}

/// Removes the temporaries a crash left beside the job ledger and the token file before they
/// were renamed into place: they may hold a token.
fn sweep_temporaries(state: &Path, token_file: Option<&Path>) {
    let files = std::iter::once(state.join("jobs.json")).chain(token_file.map(Path::to_owned));
    for file in files {
        let Some(name) = file.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        let dir = file
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        match private_fs::sweep_temporaries(dir, name) {
            Ok(0) => {}
            Ok(swept) => {
                tracing::info!(swept, dir = %dir.display(), "removed temporary files an earlier run left")
            }
            // Not a directory the agent writes to (a token file someone else keeps): nothing
            // of the agent's can be in it.
            Err(error) => tracing::debug!(%error, "not looking for temporary files"),
        }
    }
}

/// The state directory and its `private/`, created if missing (0700) and checked: the agent
/// will not start in a directory that another user owns or could write to.
fn prepared_state_dir() -> anyhow::Result<PathBuf> {
    let uid = private_fs::current_uid();
    let state = private_fs::state_dir(uid, |name| std::env::var_os(name)).context(
        "no place for the agent's state: set STAGELY_STATE_DIR (or HOME) to a directory of \
         this user's",
    )?;
    for dir in [state.clone(), state.join("private")] {
        private_fs::ensure_private_dir(&dir).with_context(|| {
            format!(
                "refusing to start: the agent's state directory {} is not safe to use \
                 (STAGELY_STATE_DIR chooses another)",
                state.display()
            )
        })?;
    }
    Ok(state)
}

/// How this host deploys; the private directory is swept of files left by dead runs.
fn deploy_options(detected: Option<Compose>, state: &Path) -> anyhow::Result<DeployOptions> {
    // A Git project's jobs are confined to its own checkout (`agent::placement`), whatever
    // these say.
    let roots = allowed_roots(std::env::var_os("STAGELY_ALLOWED_ROOTS").as_deref())?;
    Ok(DeployOptions {
        compose: compose_setting(detected)?,
        allowed_roots: roots,
        private_dir: swept_private_dir(state.join("private")),
        up_timeout: Duration::from_secs(600),
        health_timeout: Duration::from_secs(120),
        settle: Duration::from_millis(1500),
        git_max_bytes: git_max_bytes(std::env::var("STAGELY_GIT_MAX_BYTES").ok().as_deref())?,
    })
}

/// `STAGELY_GIT_MAX_BYTES`: the largest working copy of a Git project, in bytes.
fn git_max_bytes(setting: Option<&str>) -> anyhow::Result<u64> {
    match setting {
        None => Ok(agent::git::DEFAULT_MAX_BYTES),
        Some(value) => value.trim().parse::<u64>().ok().filter(|bytes| *bytes > 0).with_context(|| {
            format!("STAGELY_GIT_MAX_BYTES={value:?}: give the largest Git working copy in bytes, like 536870912")
        }),
    }
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
/// anywhere on the host. Set to no directory at all (`""`, `":"`) is a mistake, not "anywhere".
fn allowed_roots(setting: Option<&OsStr>) -> anyhow::Result<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let Some(setting) = setting else {
        return Ok(Vec::new());
    };
    let roots: Vec<PathBuf> = setting
        .as_bytes()
        .split(|&byte| byte == b':')
        .filter(|root| !root.is_empty())
        .map(|root| PathBuf::from(OsStr::from_bytes(root)))
        .collect();
    if roots.is_empty() {
        anyhow::bail!(
            "STAGELY_ALLOWED_ROOTS={setting:?} names no directory: list the directories projects \
             may live in, separated by ':', or unset it to allow the whole host"
        );
    }
    Ok(roots)
}

/// The directory override files are written to, cleared of files left by dead runs, here and
/// where older agents kept them by default.
fn swept_private_dir(private_dir: PathBuf) -> PathBuf {
    let swept = override_file::sweep(&private_dir) + agent::git::sweep(&private_dir);
    if swept > 0 {
        tracing::info!(swept, dir = %private_dir.display(), "removed override files left by an earlier run");
    }
    let swept = registry_auth::sweep(&private_dir);
    if swept > 0 {
        tracing::info!(swept, dir = %private_dir.display(), "removed registry credentials left by an earlier run");
    }
    let uid = private_fs::current_uid();
    for old in private_fs::old_private_dirs(uid, |name| std::env::var_os(name)) {
        if old == private_dir {
            continue;
        }
        match override_file::sweep_old_location(&old) {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(removed, dir = %old.display(), "removed override files an older agent left where it kept them")
            }
            Err(left) => tracing::warn!("{left}"),
        }
    }
    private_dir
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

/// Prints the override file `deploy` would write for `project`, by the same renderer: the owner
/// labels (no project id, as `deploy` has none) and the environment.
fn render(project: LocalProject, show_values: bool) -> anyhow::Result<()> {
    let (secrets, name) = read_local(&project)?;
    let found = compose::load(&project.dir, project.file.as_deref(), &[])?;
    let environment = override_file::environment_by_service(&found.services, &secrets)?;
    let owner = override_file::Owner {
        project: &name,
        project_id: None,
    };
    let text = override_file::render_deploy(&found.services, &environment, &owner, !show_values);
    print!("{}", text.as_str());
    Ok(())
}

async fn deploy_locally(project: LocalProject) -> anyhow::Result<()> {
    let (secrets, name) = read_local(&project)?;
    // `STAGELY_COMPOSE` decides when set: nothing to detect, so no `version` call to wait for
    // (a running agent detects once, at start).
    let detected = if std::env::var_os("STAGELY_COMPOSE").is_some() {
        None
    } else {
        let detected = system::detect_compose().await.map(|(compose, _)| compose);
        if detected.is_none() {
            anyhow::bail!("neither `docker compose` nor `docker-compose` answers");
        }
        detected
    };
    let options = deploy_options(detected, &prepared_state_dir()?)?;
    let request = DeployRequest {
        project: &name,
        directory: &project.dir,
        compose_file: project.file.as_deref(),
        secrets: &secrets,
        project_id: None,
        pinned_images: &[],
        pull_policy: Default::default(),
        registry_credentials: &[],
        target: Default::default(),
        secrets_as: Default::default(),
    };
    let result = deploy::deploy(&request, &options, |event| match event {
        JobEvent::Step { name } => eprintln!("==> {name}"),
        JobEvent::Output { line } => eprintln!("    {line}"),
        JobEvent::Received | JobEvent::Finished { .. } => {}
    })
    .await;
    match result {
        Ok(deployed) => {
            eprintln!(
                "==> deployed {name}: {} container(s) running",
                deployed.containers.len()
            );
            Ok(())
        }
        Err(error) => {
            let error = deploy::redactor_of(&request).redact(&error.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn plain_http_is_allowed_by_the_flag_alone_from_the_command_line() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            match cli.command {
                Some(Command::Join { insecure, .. }) => insecure.plain_http(),
                _ => cli.run.insecure.plain_http(),
            }
        };
        assert_eq!(
            parse(&["stagely-agent", "--server", "http://10.0.0.5:3000"]),
            PlainHttp::LoopbackOnly
        );
        assert_eq!(
            parse(&[
                "stagely-agent",
                "--server",
                "http://10.0.0.5",
                "--allow-insecure-http"
            ]),
            PlainHttp::Allowed
        );
        assert_eq!(
            parse(&[
                "stagely-agent",
                "join",
                "--server",
                "http://10.0.0.5",
                "--token-file",
                "/tmp/t",
                "--allow-insecure-http"
            ]),
            PlainHttp::Allowed
        );
    }

    #[test]
    fn allowed_roots_set_to_nothing_stop_the_agent_naming_the_variable() {
        for setting in ["", ":", "::"] {
            let error = match allowed_roots(Some(OsStr::new(setting))) {
                Ok(roots) => panic!("{setting:?} was taken as {roots:?}"),
                Err(error) => error.to_string(),
            };
            assert!(
                error.contains("STAGELY_ALLOWED_ROOTS"),
                "{setting:?}: {error}"
            );
        }
    }

    #[test]
    fn an_allowed_root_that_is_not_text_still_confines() {
        // Once taken as unset, which allows everything.
        let root = OsStr::from_bytes(b"/srv/\xff");
        assert_eq!(allowed_roots(Some(root)).unwrap(), [PathBuf::from(root)]);
    }

    #[test]
    fn allowed_roots_are_the_directories_listed_or_anywhere_when_unset() {
        assert_eq!(allowed_roots(None).unwrap(), Vec::<PathBuf>::new());
        assert_eq!(
            allowed_roots(Some(OsStr::new("/srv/apps::/opt/stacks:"))).unwrap(),
            [PathBuf::from("/srv/apps"), PathBuf::from("/opt/stacks")]
        );
    }
}
