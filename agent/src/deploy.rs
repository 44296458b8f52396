//! One deploy of a Compose project, start to finish:
//!
//! 1. **parse** the user's compose file to learn its services (nothing runs on a bad file);
//!    a redeploy first checks that every image it pins is still on the host (`crate::images`);
//! 2. **render** the secrets into an override file in the agent's private directory, with the
//!    labels that mark every service as this project's (and, for a redeploy, the image id each
//!    pinned service runs);
//! 3. **claim** the compose project name: if containers of another stack already use it, stop
//!    here and touch nothing (`crate::claim`);
//! 4. **pull**, under the `always` policy: `pull <services>` for the services that are not
//!    built (nor pinned), so a tag pushed again is fetched. Under `missing` there is no pull
//!    step: `up` pulls what the host lacks, on Compose v2 and v1 alike, and leaves a tag the
//!    host has alone (`compose pull --policy missing` would not: Compose v2 always pulls a
//!    `:latest` tag there). Registry credentials reach Compose in a per-run `DOCKER_CONFIG`
//!    (`crate::registry_auth`), given to pull, build and up alone and removed when this
//!    returns. A registry that refuses fails the deploy here, before any container changes;
//! 5. **build**: `build [--pull] <services>` for the services with a `build:` section (with
//!    `--pull` under `always`, so their base images are fresh too); a failed build also stops
//!    the deploy before any container changes;
//! 6. **roll out** (Compose v2): each service labelled `dev.stagely.rollout: start-first` whose
//!    running containers are out of date gets new containers beside the old ones, waits for
//!    them to turn healthy and only then removes the old ones; a failure removes the new ones,
//!    leaves the old serving and fails the deploy (`crate::rollout`). The `up` that follows
//!    finds these services up to date and leaves them alone;
//! 7. **up**: `compose -p <project> -f <user file> -f <override> --project-directory <dir>
//!    up -d --remove-orphans`, streaming its output line by line. Compose recreates only the
//!    containers whose configuration changed (a pulled or built image that changed is such a
//!    change), so a redeploy with the same secrets and images restarts nothing and a change
//!    scoped to one service restarts only that service;
//! 8. **health**: wait until every container runs (and is healthy where it has a healthcheck)
//!    and has been up for a short settle time, counted from its own start
//!    ([`health::settle_left`]: a container `up` left alone has long settled, one it started
//!    or a restart policy restarted waits); a container that exits with an error fails the
//!    deploy with its exit code and last lines. Then the image each service runs is read
//!    for the result, so the deployment can be redeployed exactly later.
//!
//! The override file and the registry credentials are removed when this returns or is
//! cancelled, whatever happened. Every line that leaves this module has the project's secret
//! values and registry passwords replaced by `***`.

use crate::claim::{self, ClaimError};
use crate::compose::{self, ComposeError, ComposeProject};
use crate::engine;
use crate::health::{self, ContainerState, InspectedContainer, Verdict};
use crate::images::{self, PinError};
use crate::override_file::{self, OverrideError, OverrideFile, Owner};
use crate::registry_auth::{self, DockerConfig, RegistryAuthError};
use crate::rollout::{RolloutError, Rollouts};
use crate::runner::{self, CommandSpec, OutputLine, Redactor, RunError};
use crate::swarm::{self, SwarmError};
use crate::system::Compose;
use crate::wire;
use shared::protocol::{budget, DeployStep, JobEvent};
use shared::registry::{PullPolicy, RegistryCredential};
use shared::runtime::ServiceImage;
use shared::target::{DeployTarget, SecretsAs};
use shared::{ProjectId, ProjectName, Secret, ServiceName};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How the agent deploys; fixed for its lifetime.
#[derive(Clone, Debug)]
pub struct DeployOptions {
    pub compose: Compose,
    /// Projects must live under one of these (empty: anywhere).
    pub allowed_roots: Vec<PathBuf>,
    /// Where override files are written (0700); swept at start.
    pub private_dir: PathBuf,
    /// Longest `up` may take (it may build or pull images).
    pub up_timeout: Duration,
    /// Longest to wait for containers to run and turn healthy after `up`.
    pub health_timeout: Duration,
    /// How long every container must stay up before the deploy counts as done: a container
    /// that is "running" for a moment and then crashes must fail the deploy, not pass it.
    pub settle: Duration,
    /// The largest working copy of a Git project this host keeps (`STAGELY_GIT_MAX_BYTES`);
    /// a job may ask for less.
    pub git_max_bytes: u64,
}

/// Whether the project of `request` may bind-mount its files writable: not when it is a Git
/// checkout, which lives in the agent's private directory (a directory project never may).
pub fn bind_mounts(request: &DeployRequest<'_>, options: &DeployOptions) -> compose::BindMounts {
    match request.directory.starts_with(&options.private_dir) {
        true => compose::BindMounts::ReadOnly,
        false => compose::BindMounts::AsWritten,
    }
}

/// A deploy to run: the same fields the server sends in `DeployPayload`.
#[derive(Clone, Debug)]
pub struct DeployRequest<'a> {
    pub project: &'a ProjectName,
    pub directory: &'a Path,
    pub compose_file: Option<&'a str>,
    pub secrets: &'a [Secret],
    /// The Stagely project, labelled on every container; `None` for a deploy without a server.
    pub project_id: Option<ProjectId>,
    /// A redeploy: the image id each listed service must run (empty for a plain deploy).
    pub pinned_images: &'a [ServiceImage],
    /// When to pull the images of services that are not built.
    pub pull_policy: PullPolicy,
    /// Credentials to pull and build with, one per registry.
    pub registry_credentials: &'a [RegistryCredential],
    /// A Compose project, or a Swarm stack (`crate::swarm` deploys it).
    pub target: DeployTarget,
    /// On a Swarm stack: secrets as environment or as Swarm secrets.
    pub secrets_as: SecretsAs,
}

/// What a successful deploy left running.
#[derive(Clone, Debug)]
pub struct Deployed {
    pub containers: Vec<ContainerState>,
    /// The image each service runs, for the job's result.
    pub images: Vec<ServiceImage>,
}

/// Why a deploy failed; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Compose(#[from] ComposeError),
    #[error(transparent)]
    Override(#[from] OverrideError),
    #[error(transparent)]
    Claim(#[from] ClaimError),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error(transparent)]
    RegistryAuth(#[from] RegistryAuthError),
    #[error(transparent)]
    Command(#[from] RunError),
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    #[error(
        "pulling the images failed (exit code {exit_code:?}); the running containers were not \
         changed:\n{output}"
    )]
    Pull {
        exit_code: Option<i32>,
        output: String,
    },
    #[error(
        "building the images failed (exit code {exit_code:?}); the running containers were not \
         changed:\n{output}"
    )]
    Build {
        exit_code: Option<i32>,
        output: String,
    },
    #[error("`docker compose up` failed (exit code {exit_code:?}):\n{output}")]
    Up {
        exit_code: Option<i32>,
        output: String,
    },
    #[error("{reason}; its last log lines:\n{logs}")]
    ServiceFailed {
        service: String,
        exit_code: Option<i64>,
        reason: String,
        logs: String,
    },
    #[error("services were not ready after {} s: waiting for {waiting}", timeout.as_secs())]
    HealthTimeout { timeout: Duration, waiting: String },
    #[error("reading container states: {0}")]
    State(String),
}

impl DeployError {
    /// The failing service's exit code, when a container exit is what failed the deploy.
    pub fn exit_code(&self) -> Option<i64> {
        match self {
            Self::ServiceFailed { exit_code, .. } => *exit_code,
            _ => None,
        }
    }
}

/// Runs the deploy, reporting each step and output line through `report`.
pub async fn deploy(
    request: &DeployRequest<'_>,
    options: &DeployOptions,
    mut report: impl FnMut(JobEvent),
) -> Result<Deployed, DeployError> {
    let redactor = redactor_of(request);
    if request.target == DeployTarget::Swarm {
        return swarm::deploy(request, options, &redactor, &mut report).await;
    }

    report(step(DeployStep::Parse));
    // Before anything else: a redeploy whose image is gone must touch nothing.
    let pull_policy_never = options.compose == Compose::V2;
    let pins = images::check_pinned(request.pinned_images, pull_policy_never, &redactor).await?;
    // On a blocking thread: a big project takes a while to read.
    let project = compose::load_in_background(
        request.directory.to_owned(),
        request.compose_file.map(str::to_owned),
        options.allowed_roots.clone(),
        bind_mounts(request, options),
    )
    .await?;

    report(step(DeployStep::Render));
    let environment = override_file::environment_by_service(&project.services, request.secrets)?;
    let owner = Owner {
        project: request.project,
        project_id: request.project_id,
    };
    images::report_unused_pins(pins.images.keys(), &project.services, &mut report);
    let rendered =
        override_file::render_pinned(&project.services, &environment, &pins, &owner, false);
    // Removed on drop: when this function returns, fails or is cancelled.
    let override_file = OverrideFile::write(&options.private_dir, request.project, &rendered)?;

    let compose = ProjectCommand {
        compose: &options.compose,
        name: request.project,
        project: &project,
        override_file: override_file.path(),
    };

    report(step(DeployStep::Claim));
    claim::claim(request.project, request.project_id, &project.dir, &redactor).await?;

    // Removed on drop, like the override file.
    let docker_config = DockerConfig::write(
        &options.private_dir,
        request.project,
        request.registry_credentials,
    )?;
    let with_config = |spec: CommandSpec| match &docker_config {
        Some(config) => spec.docker_config(config.dir()),
        None => spec,
    };

    let plan = ImagePlan::new(&project, &pins, request.pull_policy);
    if let Some(args) = plan.pull_args() {
        report(step(DeployStep::Pull));
        let pull = with_config(compose.command_with(args)).timeout(options.up_timeout);
        let (exit_code, output) = streamed(&pull, &redactor, &mut report).await?;
        if exit_code != Some(0) {
            return Err(DeployError::Pull { exit_code, output });
        }
    }
    if let Some(args) = plan.build_args() {
        report(step(DeployStep::Build));
        let build = with_config(compose.command_with(args)).timeout(options.up_timeout);
        let (exit_code, output) = streamed(&build, &redactor, &mut report).await?;
        if exit_code != Some(0) {
            return Err(DeployError::Build { exit_code, output });
        }
    }

    report(step(DeployStep::Up));
    if options.compose == Compose::V2 {
        let command = |args: Vec<String>| with_config(compose.command_with(args));
        let rollouts = Rollouts {
            project: request.project,
            compose: &command,
            redactor: &redactor,
            up_timeout: options.up_timeout,
            ready_timeout: options.health_timeout,
        };
        rollouts.run(&mut report).await?;
    }
    let up =
        with_config(compose.command(["up", "-d", "--remove-orphans"])).timeout(options.up_timeout);
    let (exit_code, output) = streamed(&up, &redactor, &mut report).await?;
    if exit_code != Some(0) {
        return Err(DeployError::Up { exit_code, output });
    }
    drop(docker_config);

    report(step(DeployStep::Health));
    let deadline = tokio::time::Instant::now() + options.health_timeout;
    let mut ready_since = None;
    loop {
        let inspected = compose.containers(&redactor).await?;
        let containers: Vec<ContainerState> = inspected.iter().map(ContainerState::from).collect();
        match health::judge(&containers) {
            Verdict::Ready => {
                let seen_ready_for = ready_since
                    .get_or_insert_with(tokio::time::Instant::now)
                    .elapsed();
                let left = health::settle_left(
                    &containers,
                    options.settle,
                    SystemTime::now(),
                    seen_ready_for,
                );
                if left.is_zero() {
                    let images =
                        match images::of_containers(&inspected, request.pinned_images, &redactor)
                            .await
                        {
                            Ok(images) => images,
                            Err(error) => {
                                // The deploy worked; only an exact redeploy of it will not. The
                                // reason may quote the engine's answer: masked.
                                let error = redactor.redact(&error.to_string());
                                tracing::warn!(%error, "could not read the images the deploy runs");
                                let line = wire::cut(
                                    &format!("could not read the images the services run: {error}"),
                                    budget::LINE,
                                );
                                report(JobEvent::Output { line });
                                Vec::new()
                            }
                        };
                    return Ok(Deployed { containers, images });
                }
                tokio::time::sleep(left.min(HEALTH_POLL)).await;
            }
            Verdict::Failed {
                service,
                exit_code,
                reason,
            } => {
                let logs = compose.last_logs(&service, &redactor).await;
                return Err(DeployError::ServiceFailed {
                    service,
                    exit_code,
                    reason,
                    logs,
                });
            }
            Verdict::Waiting(waiting) if tokio::time::Instant::now() >= deadline => {
                return Err(DeployError::HealthTimeout {
                    timeout: options.health_timeout,
                    waiting,
                });
            }
            Verdict::Waiting(_) => {
                ready_since = None;
                tokio::time::sleep(HEALTH_POLL).await;
            }
        }
    }
}

/// The redactor of a deploy: the project's secret values, and each registry password with the
/// `auth` string it becomes in the Docker configuration.
pub fn redactor_of(request: &DeployRequest<'_>) -> Redactor {
    let auths: Vec<String> = request
        .registry_credentials
        .iter()
        .map(registry_auth::auth_value)
        .collect();
    let values = request
        .secrets
        .iter()
        .map(|secret| secret.value.expose())
        .chain(
            request
                .registry_credentials
                .iter()
                .map(|credential| credential.password.expose()),
        )
        .chain(auths.iter().map(String::as_str));
    Redactor::new(values)
}

/// What a deploy pulls and builds: services with a `build:` section are built, the others
/// pulled, and pinned services neither (they run the exact image they ran before).
#[derive(Debug)]
struct ImagePlan {
    pulled: Vec<ServiceName>,
    built: Vec<ServiceName>,
    policy: PullPolicy,
}

impl ImagePlan {
    fn new(project: &ComposeProject, pins: &images::Pins, policy: PullPolicy) -> Self {
        let free = |service: &&ServiceName| !pins.images.contains_key(*service);
        Self {
            pulled: project
                .services
                .iter()
                .filter(free)
                .filter(|service| !project.built.contains(*service))
                .cloned()
                .collect(),
            built: project.built.iter().filter(free).cloned().collect(),
            policy,
        }
    }

    /// `pull …` under `always`; `None` under `missing` (`up` pulls what is missing) or when
    /// every service is built or pinned.
    fn pull_args(&self) -> Option<Vec<String>> {
        if self.pulled.is_empty() || self.policy == PullPolicy::Missing {
            return None;
        }
        let mut args = vec!["pull".to_owned()];
        args.extend(
            self.pulled
                .iter()
                .map(|service| service.as_str().to_owned()),
        );
        Some(args)
    }

    /// `build [--pull] …`, or `None` when no service is built.
    fn build_args(&self) -> Option<Vec<String>> {
        if self.built.is_empty() {
            return None;
        }
        let mut args = vec!["build".to_owned()];
        if self.policy == PullPolicy::Always {
            args.push("--pull".to_owned());
        }
        args.extend(self.built.iter().map(|service| service.as_str().to_owned()));
        Some(args)
    }
}

/// Runs `spec`, reporting each line as deploy output; returns its exit code and, for a failure
/// message, its last [`TAIL_LINES`] lines within [`TAIL_BUDGET`].
pub(crate) async fn streamed(
    spec: &CommandSpec,
    redactor: &Redactor,
    report: &mut impl FnMut(JobEvent),
) -> Result<(Option<i32>, String), DeployError> {
    let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
    let output = runner::run(spec, redactor, |line| {
        let text = match line {
            OutputLine::Stdout(text) | OutputLine::Stderr(text) => text,
        };
        let line = wire::cut(&text, budget::LINE);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        report(JobEvent::Output { line });
    })
    .await?;
    let lines = Vec::from(tail).join("\n");
    Ok((output.exit_code, wire::cut_keeping_end(&lines, TAIL_BUDGET)))
}

/// How often the health step reads the containers' states again.
const HEALTH_POLL: Duration = Duration::from_millis(250);

/// How many of its last lines a failed command or service shows.
const TAIL_LINES: usize = 50;
/// Those lines, encoded, at most: with the sentence before them they fit a job's result
/// message ([`budget::MESSAGE`]).
const TAIL_BUDGET: usize = budget::MESSAGE - 1024;

fn step(name: DeployStep) -> JobEvent {
    JobEvent::Step { name }
}

/// Builds Compose commands that see the user's file, the override and the user's directory.
struct ProjectCommand<'a> {
    compose: &'a Compose,
    name: &'a ProjectName,
    project: &'a ComposeProject,
    override_file: &'a Path,
}

impl ProjectCommand<'_> {
    fn command<const N: usize>(&self, args: [&str; N]) -> CommandSpec {
        self.command_with(args)
    }

    fn command_with<I, S>(&self, args: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut argv: Vec<OsString> = vec![
            "-p".into(),
            self.name.as_str().into(),
            "-f".into(),
            self.project.file.clone().into(),
            "-f".into(),
            self.override_file.into(),
            "--project-directory".into(),
            self.project.dir.clone().into(),
        ];
        argv.extend(args.into_iter().map(Into::into));
        self.compose.command(argv).current_dir(&self.project.dir)
    }

    /// Every container of the project (not `compose run` ones), read from the engine:
    /// `docker inspect` says when each started (`compose ps` does not) and which image it runs.
    async fn containers(
        &self,
        redactor: &Redactor,
    ) -> Result<Vec<InspectedContainer>, DeployError> {
        let filters = [
            format!("com.docker.compose.project={}", self.name),
            "com.docker.compose.oneoff=False".to_owned(),
        ];
        engine::containers(&filters, redactor)
            .await
            .map_err(|error| DeployError::State(error.to_string()))
    }

    /// The last lines a service printed, for the failure message, within [`TAIL_BUDGET`].
    async fn last_logs(&self, service: &str, redactor: &Redactor) -> String {
        let tail = TAIL_LINES.to_string();
        let spec = self
            .command(["logs", "--no-color", "--tail", tail.as_str()])
            .arg(service);
        match runner::run(&spec.timeout(Duration::from_secs(30)), redactor, |_| {}).await {
            Ok(output) => {
                let logs = format!("{}{}", output.stdout, output.stderr);
                wire::cut_keeping_end(logs.trim_end(), TAIL_BUDGET)
            }
            Err(error) => format!("(could not read the logs: {error})"),
        }
    }
}
