//! One deploy of a Docker Swarm stack (a project whose target is `swarm`), start to finish:
//!
//! 1. **parse** the user's compose file for its services and for the services that say how
//!    they update themselves; check that this host is a Swarm manager (stacks are deployed
//!    through a manager, and only a manager sees every node's tasks);
//! 2. **render** the override (`render`): the owner labels, the secrets as environment or as
//!    this deploy's Swarm secrets (created here through stdin, never an argument, each under a
//!    new versioned name), and a start-first, health-gated rolling update with rollback for
//!    every service whose file does not set its own;
//! 3. **up**: `docker stack deploy --prune -c <user file> -c <override> <project>`, with
//!    `--with-registry-auth` and the per-run `DOCKER_CONFIG` when the project has registry
//!    credentials (so every node pulls with them);
//! 4. **health**: poll `docker service inspect` until every service the deploy changed has
//!    completed its update, streaming "n/m updated" per service; an update Swarm rolled back
//!    or paused fails the deploy with Swarm's reason and the tasks' errors
//!    (`docker service ps --no-trunc`);
//! 5. remove the project's Swarm secrets that no service of the stack uses any more (after a
//!    rollback that is this deploy's new ones).
//!
//! The override file and the registry credentials are removed when this returns or is
//! cancelled, whatever happened; every line that leaves it is redacted.

pub mod lifecycle;
mod render;
pub mod status;

use crate::compose;
use crate::deploy::{DeployError, DeployOptions, DeployRequest, Deployed};
use crate::engine;
use crate::health::ContainerState;
use crate::images;
use crate::override_file::{self, OverrideFile, Owner};
use crate::registry_auth::DockerConfig;
use crate::runner::{self, CommandSpec, Redactor};
use crate::wire;
use render::{Placement, SecretMount};
use shared::protocol::{budget, DeployStep, JobEvent};
use shared::registry::PullPolicy;
use shared::runtime::ServiceImage;
use shared::target::SecretsAs;
use shared::{ProjectName, SecretScope, ServiceName};
use status::{Progress, ServiceInfo, UpdateStatus};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// How long Swarm watches each updated task for a failure before it moves on.
pub const MONITOR: Duration = Duration::from_secs(5);

/// The longest a Swarm secret's name may be.
const MAX_SECRET_NAME: usize = 64;

/// The label that marks a Swarm secret as one of a project's.
const SECRET_PROJECT_LABEL: &str = "dev.stagely.project";

/// Why a stack deploy failed; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error(
        "this host is not a Docker Swarm manager (its swarm state is {0:?}); a project whose \
         target is swarm needs its agent on a manager node"
    )]
    NotAManager(String),
    #[error(
        "the Swarm secret name {name:?} would be longer than {MAX_SECRET_NAME} characters; \
         shorten the project name or the key"
    )]
    SecretNameTooLong { name: String },
    #[error("creating the Swarm secret for {key} failed: {output}")]
    CreateSecret { key: String, output: String },
    #[error("`docker stack deploy` failed (exit code {exit_code:?}):\n{output}")]
    Deploy {
        exit_code: Option<i32>,
        output: String,
    },
    #[error("{}", failures.join("\n"))]
    UpdateFailed { failures: Vec<String> },
    #[error("the rolling update did not finish within {} s: waiting for {waiting}{}", timeout.as_secs(), listed(errors))]
    Timeout {
        timeout: Duration,
        waiting: String,
        /// The latest errors of the tasks this deploy started for the services waited for (a
        /// job that keeps failing, a task no node can take).
        errors: Vec<String>,
    },
    #[error("reading the stack's services: {0}")]
    State(String),
    #[error(
        "another Stagely project on this Swarm uses the stack name {name}. To deploy here, \
         rename the project"
    )]
    TakenByProject { name: ProjectName },
    #[error(
        "the stack name {name} is already used on this Swarm by a stack this project did not \
         deploy (service {service}). Deploying here would replace or prune its services: rename \
         the project, or remove that stack (`docker stack rm {name}`)"
    )]
    Taken { name: ProjectName, service: String },
}

/// Runs a Swarm deploy, reporting each step and output line through `report`.
pub async fn deploy(
    request: &DeployRequest<'_>,
    options: &DeployOptions,
    redactor: &Redactor,
    report: &mut impl FnMut(JobEvent),
) -> Result<Deployed, DeployError> {
    report(step(DeployStep::Parse));
    // Before anything else: a redeploy whose image is gone must touch nothing.
    let pins = images::check_pinned_for_stack(request.pinned_images, redactor).await?;
    let project = compose::load_in_background(
        request.directory.to_owned(),
        request.compose_file.map(str::to_owned),
        options.allowed_roots.clone(),
        crate::deploy::bind_mounts(request, options),
    )
    .await?;
    let user_file = std::fs::read_to_string(&project.file).unwrap_or_default();
    // The variables the stack deploy below is run with (the runner passes on only these).
    let policies = render::user_policies(&user_file, &runner::child_variable);
    ensure_manager(redactor).await?;

    // Before anything is created: `--prune` removes the services of the stack the file does
    // not name, so a name taken by a stack this project did not deploy is refused.
    let before = services_of(request.project, redactor).await?;
    let owner = Owner {
        project: request.project,
        project_id: request.project_id,
    };
    judge_stack(&owner, &before)?;
    // Every task each service has before the deploy (a job's completed ones too): none of
    // them is this deploy's. Read before `stack deploy`, which starts new ones at once.
    let mut old_tasks: HashMap<String, BTreeSet<String>> = HashMap::new();
    for service in &before {
        let tasks = tasks_of(&service.id, redactor).await?;
        let ids = tasks.into_iter().map(|task| task.id).collect();
        old_tasks.insert(service.id.clone(), ids);
    }

    report(step(DeployStep::Render));
    let environment = override_file::environment_by_service(&project.services, request.secrets)?;
    let mounts = match request.secrets_as {
        SecretsAs::Environment => None,
        SecretsAs::SwarmSecrets => {
            Some(create_secrets(request, &project.services, redactor).await?)
        }
    };
    let placement = match &mounts {
        None => Placement::Environment(&environment),
        Some(mounts) => Placement::Files(mounts),
    };
    images::report_unused_pins(pins.keys(), &project.services, report);
    if !pins.is_empty() {
        for service in project.services.iter().filter(|s| !pins.contains_key(*s)) {
            let line = format!(
                "service {service}: that deployment recorded no image for it; it is deployed \
                 as the compose file says"
            );
            report(JobEvent::Output { line });
        }
    }
    let rendered = render::render(
        &project.services,
        &placement,
        &pins,
        &policies,
        &owner,
        MONITOR,
    );
    // Both removed on drop: when this function returns, fails or is cancelled.
    let files = (|| -> Result<_, DeployError> {
        let override_file = OverrideFile::write(&options.private_dir, request.project, &rendered)?;
        let docker_config = DockerConfig::write(
            &options.private_dir,
            request.project,
            request.registry_credentials,
        )?;
        Ok((override_file, docker_config))
    })();
    drop(rendered);
    let (override_file, docker_config) = match files {
        Ok(files) => files,
        Err(error) => {
            // This deploy's new Swarm secrets are mounted by no service yet.
            remove_unused_secrets(&owner, redactor, report).await;
            return Err(error);
        }
    };
    report(step(DeployStep::Up));
    let file = project.file.display().to_string();
    let override_path = override_file.path().display().to_string();
    // A pinned reference is exact already (an id cannot be looked up in a registry at all);
    // a node that lacks a digest-pinned image still pulls it.
    let resolve = match request.pull_policy {
        PullPolicy::Always if pins.is_empty() => "always",
        PullPolicy::Always | PullPolicy::Missing => "never",
    };
    let mut argv = vec![
        "stack",
        "deploy",
        "--prune",
        "--detach=true",
        "--resolve-image",
        resolve,
        "-c",
        file.as_str(),
        "-c",
        override_path.as_str(),
    ];
    if docker_config.is_some() {
        argv.push("--with-registry-auth");
    }
    argv.push(request.project.as_str());
    let mut spec = CommandSpec::new("docker", argv)
        .current_dir(&project.dir)
        .timeout(options.up_timeout);
    if let Some(config) = &docker_config {
        spec = spec.docker_config(config.dir());
    }
    let output = runner::run(&spec, redactor, |line| {
        let text = match line {
            runner::OutputLine::Stdout(text) | runner::OutputLine::Stderr(text) => text,
        };
        report(JobEvent::Output {
            line: wire::cut(&text, budget::LINE),
        });
    })
    .await;
    drop(docker_config);
    drop(override_file);
    let output = match output {
        Ok(output) => output,
        Err(error) => {
            remove_unused_secrets(&owner, redactor, report).await;
            return Err(error.into());
        }
    };
    if !output.success() {
        remove_unused_secrets(&owner, redactor, report).await;
        let text = format!("{}{}", output.stdout, output.stderr);
        return Err(SwarmError::Deploy {
            exit_code: output.exit_code,
            output: wire::cut_keeping_end(text.trim_end(), budget::MESSAGE - 1024),
        }
        .into());
    }

    report(step(DeployStep::Health));
    let waited = wait_for_update(
        request.project,
        &before,
        &old_tasks,
        options,
        redactor,
        report,
    )
    .await;
    remove_unused_secrets(&owner, redactor, report).await;
    let containers = waited?;
    let images = match stack_images(request.project, request.pinned_images, redactor, report).await
    {
        Ok(images) => images,
        Err(error) => {
            // The deploy worked; only an exact redeploy of it will not.
            let error = redactor.redact(&error.to_string());
            tracing::warn!(%error, "could not read the images the stack runs");
            let line = format!("could not read the images the services run: {error}");
            report(JobEvent::Output {
                line: wire::cut(&line, budget::LINE),
            });
            Vec::new()
        }
    };
    Ok(Deployed { containers, images })
}

/// The image each service of the stack runs now, for an exact redeploy later: the image of
/// its running tasks' containers on this host (what a tag named when those tasks were created,
/// however it has moved since), or, with none here, the image its spec's registry digest names
/// (as `--resolve-image always` writes it). A service pinned by the redeploy keeps the
/// reference it was pinned with. A service whose image cannot be told here (its tasks run on
/// other nodes, by a tag only) is left out, saying so.
async fn stack_images(
    project: &ProjectName,
    pinned: &[ServiceImage],
    redactor: &Redactor,
    report: &mut impl FnMut(JobEvent),
) -> Result<Vec<ServiceImage>, DeployError> {
    let engine_error = |error: engine::EngineError| SwarmError::State(error.to_string());
    let label = format!("{}={project}", crate::health::SWARM_STACK_LABEL);
    let containers = engine::containers(&[label], redactor)
        .await
        .map_err(engine_error)?;
    let prefix = format!("{project}_");
    let mut by_service = BTreeMap::new();
    for service in services_of(project, redactor).await? {
        let Some(name) = service
            .spec
            .name
            .strip_prefix(&prefix)
            .and_then(|name| ServiceName::parse(name).ok())
        else {
            continue;
        };
        let Some(reference) = service.image() else {
            continue;
        };
        let (written, digest) = status::split_digest(reference);
        // The tasks that run it now; for a job (a migration), those that ran to completion too.
        let current: BTreeSet<String> = tasks_of(&service.id, redactor)
            .await?
            .into_iter()
            .filter(|task| task.is_running() || (service.is_job() && task.is_complete()))
            .map(|task| task.id)
            .collect();
        // The newest of their containers here (a job's earlier runs are complete tasks too).
        let here = containers
            .iter()
            .filter(|container| {
                container
                    .labels
                    .get(crate::health::SWARM_TASK_LABEL)
                    .is_some_and(|task| current.contains(task))
                    && !container.image_id.is_empty()
            })
            .max_by(|a, b| a.started_at.cmp(&b.started_at));
        let lookup = match (here, &digest) {
            (Some(container), _) => container.image_id.clone(),
            (None, Some(digest)) => digest.clone(),
            (None, None) => {
                let line = format!(
                    "service {name}: its tasks run on other nodes, so an exact redeploy of this \
                     deployment will not pin its image"
                );
                report(JobEvent::Output {
                    line: wire::cut(&line, budget::LINE),
                });
                continue;
            }
        };
        let Some(image) = engine::images(&[lookup.as_str()], redactor)
            .await
            .map_err(engine_error)?
            .into_iter()
            .next()
        else {
            let line = format!(
                "service {name}: its image is not on this host, so an exact redeploy of this \
                 deployment will not pin it"
            );
            report(JobEvent::Output {
                line: wire::cut(&line, budget::LINE),
            });
            continue;
        };
        let recorded = match pinned
            .iter()
            .find(|pin| pin.service == name && pin.image_id == image.id)
        {
            Some(pin) => pin.clone(),
            None => ServiceImage {
                service: name.clone(),
                image: written.to_owned(),
                repo_digest: digest.or_else(|| image.repo_digest_of(written)),
                image_id: image.id,
            },
        };
        by_service.insert(name, recorded);
    }
    Ok(images::within_budget(by_service.into_values()))
}

/// Whether every service already in the stack is this project's, by the owner labels its
/// tasks carry: this project's id; or, for a deploy without an id (`stagely-agent deploy` on
/// the host), no id and this project's name. A Swarm keeps no working directory to compare as
/// [`crate::claim`] does for Compose, so a stack without this project's id is never taken by a
/// deploy that has one. Another Stagely project's stack is refused without naming its
/// services; any other stack is named by one of them, which is what `docker stack rm` needs.
fn judge_stack(owner: &Owner<'_>, services: &[ServiceInfo]) -> Result<(), SwarmError> {
    let id = owner.project_id.map(|id| id.to_string());
    for service in services {
        let present = |key| {
            service
                .container_label(key)
                .filter(|value| !value.is_empty())
        };
        let theirs_id = present(override_file::PROJECT_ID_LABEL);
        let theirs_name = present(override_file::PROJECT_LABEL);
        match (theirs_id, id.as_deref()) {
            (Some(theirs), Some(ours)) if theirs == ours => {}
            (Some(_), _) => {
                return Err(SwarmError::TakenByProject {
                    name: owner.project.clone(),
                })
            }
            (None, None) if theirs_name == Some(owner.project.as_str()) => {}
            (None, _) => {
                return Err(SwarmError::Taken {
                    name: owner.project.clone(),
                    service: service.spec.name.clone(),
                })
            }
        }
    }
    Ok(())
}

/// Fails unless the stack named after the project is the project's own (or absent), by the
/// rules of a deploy; for what only reads a stack (its container logs).
pub async fn check_owner(
    project: &ProjectName,
    project_id: Option<shared::ProjectId>,
) -> Result<(), DeployError> {
    let services = services_of(project, &Redactor::default()).await?;
    let owner = Owner {
        project,
        project_id,
    };
    judge_stack(&owner, &services).map_err(Into::into)
}

fn step(name: DeployStep) -> JobEvent {
    JobEvent::Step { name }
}

/// Fails unless the engine is an active Swarm manager.
async fn ensure_manager(redactor: &Redactor) -> Result<(), DeployError> {
    let spec = CommandSpec::new(
        "docker",
        [
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
        ],
    );
    let stdout = quiet(&spec, redactor).await?;
    let state = stdout.trim();
    if state == "active true" {
        Ok(())
    } else {
        Err(SwarmError::NotAManager(state.to_owned()).into())
    }
}

/// Creates this deploy's Swarm secrets, one per secret of the project, each under a new
/// versioned name, and says which service mounts which (a service-scoped secret wins over a
/// global one with the same key, as for environment).
async fn create_secrets(
    request: &DeployRequest<'_>,
    services: &BTreeSet<ServiceName>,
    redactor: &Redactor,
) -> Result<BTreeMap<ServiceName, Vec<SecretMount>>, DeployError> {
    let version = version();
    let mut named = Vec::new();
    for secret in request.secrets {
        let name = match &secret.scope {
            SecretScope::Global => format!("{}_{}_{version}", request.project, secret.key),
            SecretScope::Service(service) => {
                format!("{}_{service}_{}_{version}", request.project, secret.key)
            }
        };
        if name.len() > MAX_SECRET_NAME {
            return Err(SwarmError::SecretNameTooLong { name }.into());
        }
        named.push((secret, name));
    }
    let label = format!("{SECRET_PROJECT_LABEL}={}", request.project);
    let id_label = request
        .project_id
        .map(|id| format!("{}={id}", override_file::PROJECT_ID_LABEL));
    for (secret, name) in &named {
        let mut argv = vec!["secret", "create", "--label", label.as_str()];
        if let Some(id_label) = &id_label {
            argv.extend(["--label", id_label.as_str()]);
        }
        argv.extend([name.as_str(), "-"]);
        let bytes = zeroize::Zeroizing::new(secret.value.expose().as_bytes().to_vec());
        let spec = CommandSpec::new("docker", argv)
            .stdin(bytes)
            .timeout(Duration::from_secs(60));
        let output = runner::run(&spec, redactor, |_| {}).await?;
        if !output.success() {
            // The ones made before are no service's yet: removed with the rest.
            let owner = Owner {
                project: request.project,
                project_id: request.project_id,
            };
            remove_unused_secrets(&owner, redactor, &mut |_| {}).await;
            return Err(SwarmError::CreateSecret {
                key: secret.key.to_string(),
                output: output.stderr.trim().to_owned(),
            }
            .into());
        }
    }
    let mut mounts: BTreeMap<ServiceName, BTreeMap<_, SecretMount>> = BTreeMap::new();
    for pass_scoped in [false, true] {
        for (secret, name) in &named {
            let targets: Vec<&ServiceName> = match &secret.scope {
                SecretScope::Global if !pass_scoped => services.iter().collect(),
                SecretScope::Service(service) if pass_scoped => vec![service],
                _ => continue,
            };
            for service in targets {
                mounts.entry(service.clone()).or_default().insert(
                    secret.key.clone(),
                    SecretMount {
                        key: secret.key.clone(),
                        secret_name: name.clone(),
                    },
                );
            }
        }
    }
    Ok(mounts
        .into_iter()
        .map(|(service, by_key)| (service, by_key.into_values().collect()))
        .collect())
}

/// A version for this deploy's secret names: milliseconds since the epoch and a random part,
/// in hex (so names sort by age and two deploys in one millisecond still differ).
fn version() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis())
        .unwrap_or_default();
    format!("v{millis:x}{:04x}", rand::random::<u16>())
}

/// The stack's services as they are now.
async fn services_of(
    project: &ProjectName,
    redactor: &Redactor,
) -> Result<Vec<ServiceInfo>, DeployError> {
    let filter = format!("label=com.docker.stack.namespace={project}");
    let list = CommandSpec::new(
        "docker",
        ["service", "ls", "-q", "--filter", filter.as_str()],
    );
    let ids = quiet(&list, redactor).await?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let inspect = CommandSpec::new("docker", ["service", "inspect"].into_iter().chain(ids));
    let stdout = quiet(&inspect, redactor).await?;
    status::parse_services(&stdout).map_err(|error| SwarmError::State(error.to_string()).into())
}

/// The tasks of one service.
async fn tasks_of(
    service: &str,
    redactor: &Redactor,
) -> Result<Vec<status::TaskLine>, DeployError> {
    let spec = CommandSpec::new(
        "docker",
        [
            "service",
            "ps",
            "--no-trunc",
            "--format",
            "{{json .}}",
            service,
        ],
    );
    let stdout = quiet(&spec, redactor).await?;
    status::parse_tasks(&stdout).map_err(|error| SwarmError::State(error.to_string()).into())
}

/// Waits until every service the deploy changed has finished its update; returns the running
/// tasks as containers, or the failures with their tasks' errors.
async fn wait_for_update(
    project: &ProjectName,
    before: &[ServiceInfo],
    old_tasks: &HashMap<String, BTreeSet<String>>,
    options: &DeployOptions,
    redactor: &Redactor,
    report: &mut impl FnMut(JobEvent),
) -> Result<Vec<ContainerState>, DeployError> {
    let earlier: HashMap<&str, &ServiceInfo> = before
        .iter()
        .map(|service| (service.id.as_str(), service))
        .collect();
    let timeout = options.up_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut shown: HashMap<String, String> = HashMap::new();
    loop {
        let now = services_of(project, redactor).await?;
        let mut waiting = Vec::new();
        let mut waiting_errors = Vec::new();
        let mut failures = Vec::new();
        let mut containers = Vec::new();
        for service in &now {
            let previous = earlier.get(service.id.as_str());
            let changed = previous.is_none_or(|old| old.version.index != service.version.index);
            let tasks = tasks_of(&service.id, redactor).await?;
            let running: Vec<&status::TaskLine> =
                tasks.iter().filter(|task| task.is_running()).collect();
            containers.extend(running.iter().map(|_| ContainerState {
                service: service.spec.name.clone(),
                state: "running".into(),
                health: None,
                exit_code: None,
                started_at: None,
            }));
            if !changed {
                continue;
            }
            let old = old_tasks.get(&service.id);
            let new_tasks = || {
                tasks
                    .iter()
                    .filter(|task| old.is_none_or(|old| !old.contains(&task.id)))
            };
            let (progress, line) = if service.is_job() {
                let run = status::JobRun {
                    active: new_tasks().filter(|task| task.is_active()).count() as u64,
                    completed: new_tasks().filter(|task| task.is_complete()).count() as u64,
                };
                let iteration = previous.and_then(|old| old.job_iteration());
                let progress = status::judge_job(service, iteration, previous.is_none(), run);
                let line = format!(
                    "{}: {} completed, {} running (job)",
                    service.spec.name, run.completed, run.active
                );
                (progress, line)
            } else {
                let before_status: Option<&UpdateStatus> =
                    previous.and_then(|old| old.update_status.as_ref());
                let progress = status::judge(
                    service,
                    before_status,
                    running.len() as u64,
                    previous.is_none(),
                );
                let updated = running
                    .iter()
                    .filter(|task| old.is_none_or(|old| !old.contains(&task.id)))
                    .count();
                let desired = service
                    .desired()
                    .map_or_else(|| running.len().to_string(), |n| n.to_string());
                let state = service
                    .update_status
                    .as_ref()
                    .map_or("creating", |status| status.state.as_str());
                let line = format!(
                    "{}: {updated}/{desired} updated ({state})",
                    service.spec.name
                );
                (progress, line)
            };
            if shown.get(&service.id) != Some(&line) {
                report(JobEvent::Output {
                    line: wire::cut(&line, budget::LINE),
                });
                shown.insert(service.id.clone(), line);
            }
            match progress {
                Progress::Done => {}
                Progress::Updating => {
                    waiting.push(service.spec.name.clone());
                    waiting_errors.push(task_errors(new_tasks(), redactor));
                }
                Progress::Failed {
                    rolled_back,
                    message,
                } => {
                    let errors = task_errors(tasks.iter(), redactor);
                    let what = if rolled_back {
                        "the update failed and Swarm rolled it back"
                    } else {
                        "the update failed and Swarm paused it"
                    };
                    let message = redactor.redact(&message);
                    let text = format!("service {}: {what}: {message}", service.spec.name);
                    failures.push(format!("{text}{}", listed(&errors)));
                }
            }
        }
        if waiting.is_empty() {
            if failures.is_empty() {
                return Ok(containers);
            }
            return Err(SwarmError::UpdateFailed { failures }.into());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SwarmError::Timeout {
                timeout,
                waiting: waiting.join(", "),
                errors: taking_turns(waiting_errors, MOST_TASK_ERRORS),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Most task errors a failure or a timeout lists.
const MOST_TASK_ERRORS: usize = 5;

/// The errors of `tasks` that have one (at most [`MOST_TASK_ERRORS`]), one line each, redacted.
fn task_errors<'a>(
    tasks: impl Iterator<Item = &'a status::TaskLine>,
    redactor: &Redactor,
) -> Vec<String> {
    tasks
        .filter(|task| !task.error.is_empty())
        .take(MOST_TASK_ERRORS)
        .map(|task| {
            let error = redactor.redact(&task.error);
            format!("  {} ({}): {error}", task.name, task.id)
        })
        .collect()
}

/// Up to `most` of the services' errors, one of each service in turn, so one service's many
/// do not hide another's.
fn taking_turns(per_service: Vec<Vec<String>>, most: usize) -> Vec<String> {
    let mut lists: Vec<std::vec::IntoIter<String>> =
        per_service.into_iter().map(Vec::into_iter).collect();
    let mut taken = Vec::new();
    while taken.len() < most {
        let before = taken.len();
        for list in &mut lists {
            if taken.len() < most {
                taken.extend(list.next());
            }
        }
        if taken.len() == before {
            break;
        }
    }
    taken
}

/// `errors` under a heading, on lines of their own after the message; nothing when none.
fn listed(errors: &[String]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    format!("\n task errors:\n{}", errors.join("\n"))
}

/// Removes the project's Swarm secrets that no service of its stack mounts any more. One that
/// cannot be removed (a task of another stack uses it, the engine refuses) is left and said.
async fn remove_unused_secrets(
    owner: &Owner<'_>,
    redactor: &Redactor,
    report: &mut impl FnMut(JobEvent),
) {
    let project = owner.project;
    // By the project's id where there is one: another project of the same name on the Swarm
    // (through another manager's agent) keeps its secrets.
    let mut argv = vec![
        "secret".to_owned(),
        "ls".into(),
        "--filter".into(),
        format!("label={SECRET_PROJECT_LABEL}={project}"),
    ];
    if let Some(id) = owner.project_id {
        argv.push("--filter".into());
        argv.push(format!("label={}={id}", override_file::PROJECT_ID_LABEL));
    }
    argv.extend(["--format".into(), "{{.Name}}".into()]);
    let list = CommandSpec::new("docker", argv);
    let Ok(names) = quiet(&list, redactor).await else {
        return;
    };
    let Ok(services) = services_of(project, redactor).await else {
        return;
    };
    let used: BTreeSet<&str> = services
        .iter()
        .flat_map(ServiceInfo::secret_names)
        .collect();
    for name in names.split_whitespace() {
        if used.contains(name) {
            continue;
        }
        let remove = CommandSpec::new("docker", ["secret", "rm", name]);
        if let Err(error) = quiet(&remove, redactor).await {
            let line = format!("could not remove the unused Swarm secret {name}: {error}");
            report(JobEvent::Output {
                line: wire::cut(&line, budget::LINE),
            });
        }
    }
}

/// Where each service of the stack `stack` stands (running and desired tasks, and a failing
/// one's latest task error), by compose service name, and which of its tasks Swarm has
/// replaced or stopped, for the live service state. Needs a manager, as every `docker stack`
/// command does.
pub async fn stack_state(stack: &str, redactor: &Redactor) -> Result<StackState, DeployError> {
    let services = CommandSpec::new(
        "docker",
        ["stack", "services", "--format", "{{json .}}", stack],
    );
    let tasks = CommandSpec::new(
        "docker",
        ["stack", "ps", "--no-trunc", "--format", "{{json .}}", stack],
    );
    let (services, tasks) = tokio::try_join!(quiet(&services, redactor), quiet(&tasks, redactor))?;
    let services = status::parse_service_lines(&services)
        .map_err(|error| SwarmError::State(error.to_string()))?;
    let tasks =
        status::parse_tasks(&tasks).map_err(|error| SwarmError::State(error.to_string()))?;
    Ok(StackState {
        replicas: status::replicas(stack, &services, &tasks),
        shut_down: tasks
            .into_iter()
            .filter(status::TaskLine::is_shut_down)
            .map(|task| task.id)
            .collect(),
    })
}

/// A stack's services as the live service state shows them.
#[derive(Clone, Debug, Default)]
pub struct StackState {
    /// By compose service name.
    pub replicas: BTreeMap<String, shared::runtime::Replicas>,
    /// The tasks Swarm wants shut down: replaced by an update, failed and replaced, or
    /// stopped (scaled to 0). Their containers are history, kept by Swarm for a while.
    pub shut_down: BTreeSet<String>,
}

/// The nodes of the Swarm this engine manages: empty when it is no manager (`docker node ls`
/// says so); an error when Docker does not answer, so a passing outage does not clear them.
pub async fn nodes(redactor: &Redactor) -> Result<Vec<shared::target::SwarmNode>, DeployError> {
    let spec = CommandSpec::new("docker", ["node", "ls", "--format", "{{json .}}"])
        .timeout(Duration::from_secs(60))
        .read_by_agent();
    let output = runner::run(&spec, redactor, |_| {}).await?;
    if !output.success() {
        if output.stderr.contains("not a swarm manager") {
            return Ok(Vec::new());
        }
        return Err(SwarmError::State(format!(
            "`{}` exited with {:?}: {}",
            output.command,
            output.exit_code,
            output.stderr.trim()
        ))
        .into());
    }
    let mut nodes = status::parse_nodes(&output.stdout, budget::HELLO_FIELD)
        .map_err(|error| SwarmError::State(error.to_string()))?;
    nodes.truncate(budget::SWARM_NODES);
    Ok(nodes)
}

/// Runs a read-only command and returns its stdout, failing on a non-zero exit.
async fn quiet(spec: &CommandSpec, redactor: &Redactor) -> Result<String, DeployError> {
    let output = runner::run(
        &spec
            .clone()
            .timeout(Duration::from_secs(60))
            .read_by_agent(),
        redactor,
        |_| {},
    )
    .await?;
    if output.success() {
        Ok(output.stdout)
    } else {
        Err(SwarmError::State(format!(
            "`{}` exited with {:?}: {}",
            output.command,
            output.exit_code,
            output.stderr.trim()
        ))
        .into())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_errors_of_several_waiting_services_take_turns() {
        let list = |service: &str, n: usize| -> Vec<String> {
            (0..n).map(|i| format!("{service}{i}")).collect()
        };
        let taken = super::taking_turns(vec![list("a", 9), list("b", 1), list("c", 2)], 5);
        assert_eq!(taken, ["a0", "b0", "c0", "a1", "c1"]);
        let taken = super::taking_turns(vec![list("a", 9)], 5);
        assert_eq!(taken, ["a0", "a1", "a2", "a3", "a4"]);
        assert!(super::taking_turns(vec![Vec::new(), Vec::new()], 5).is_empty());
    }

    use super::*;
    use shared::ProjectId;

    fn service(name: &str, labels: serde_json::Value) -> ServiceInfo {
        let json = serde_json::json!([{
            "ID": "s1",
            "Version": {"Index": 1},
            "Spec": {"Name": name, "TaskTemplate": {"ContainerSpec": {"Labels": labels}}},
        }]);
        status::parse_services(&json.to_string()).unwrap().remove(0)
    }

    #[test]
    fn a_stack_is_deployed_over_only_when_every_service_is_the_projects() {
        let name = ProjectName::parse("shop").unwrap();
        let id = ProjectId(uuid::Uuid::new_v4());
        let ours = Owner {
            project: &name,
            project_id: Some(id),
        };
        let mine = service(
            "shop_web",
            serde_json::json!({"dev.stagely.project": "shop", "dev.stagely.project-id": id.to_string()}),
        );
        let by_the_cli = service(
            "shop_web",
            serde_json::json!({"dev.stagely.project": "shop"}),
        );
        let other = service(
            "shop_db",
            serde_json::json!({"dev.stagely.project": "shop", "dev.stagely.project-id": ProjectId(uuid::Uuid::new_v4()).to_string()}),
        );
        let by_hand = service("shop_db", serde_json::json!({"app": "db"}));
        let bare = service("shop_db", serde_json::Value::Null);

        let empty_id = service(
            "shop_web",
            serde_json::json!({"dev.stagely.project": "shop", "dev.stagely.project-id": ""}),
        );
        assert!(judge_stack(&ours, &[]).is_ok());
        assert!(judge_stack(&ours, std::slice::from_ref(&mine)).is_ok());
        // No working directory to compare: a stack without the id is not taken by a deploy
        // that has one, even under the project's name (deployed by hand from elsewhere).
        for without_id in [&by_the_cli, &empty_id] {
            let refused = judge_stack(&ours, &[mine.clone(), without_id.clone()]).unwrap_err();
            assert!(matches!(refused, SwarmError::Taken { .. }), "{refused}");
        }
        let refused = judge_stack(&ours, &[mine.clone(), other.clone()]).unwrap_err();
        assert!(matches!(refused, SwarmError::TakenByProject { .. }));
        assert!(
            !refused.to_string().contains("shop_db"),
            "another project's services are not named: {refused}"
        );
        for foreign in [&by_hand, &bare] {
            let refused = judge_stack(&ours, &[mine.clone(), foreign.clone()]).unwrap_err();
            let text = refused.to_string();
            assert!(matches!(refused, SwarmError::Taken { .. }), "{text}");
            assert!(
                text.contains("shop_db") && text.contains("docker stack rm shop"),
                "{text}"
            );
        }
        // A deploy without an id (the local CLI) takes no stack that has one.
        let no_id = Owner {
            project: &name,
            project_id: None,
        };
        assert!(judge_stack(&no_id, &[by_the_cli, empty_id]).is_ok());
        assert!(judge_stack(&no_id, &[mine]).is_err());
    }
}
