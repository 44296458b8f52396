//! Lifecycle jobs: start, stop, restart or take down a deployed project's containers.
//!
//! 1. **check** the request: `down` is for the whole project, never one service;
//! 2. **find** the project's compose file as a deploy does (same confinement). When the
//!    directory or the file is gone, `stop` and `down` still work with Compose v2, which can
//!    act on a project by its name alone (`-p <project>`); Compose v1 needs the file, and the
//!    job fails saying so;
//! 3. **claim**: every container under the compose project name must be this Stagely project's
//!    (`crate::claim`, the same rule a deploy follows); another stack's containers are never
//!    touched;
//! 4. **act**: `compose -p <project> -f <file> --project-directory <dir> start|stop|restart
//!    [service]`, or `down --remove-orphans [--volumes]`, its output streamed line by line.
//!
//! The payload carries no secret values, so the [`Redactor`] its output passes is empty: a line a
//! container prints while it stops is not forwarded (only Compose's own lines are). The executor
//! refreshes the project's live state when this returns.

use crate::claim::{self, ClaimError};
use crate::compose::{self, ComposeError};
use crate::deploy::DeployOptions;
use crate::runner::{self, OutputLine, Redactor, RunError};
use crate::system::Compose;
use crate::wire;
use shared::protocol::{budget, DeployStep, JobEvent};
use shared::runtime::LifecycleAction;
use shared::target::DeployTarget;
use shared::{ProjectId, ProjectName, ServiceName};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A lifecycle job to run: the fields the server sends in `LifecyclePayload`.
#[derive(Clone, Debug)]
pub struct LifecycleRequest<'a> {
    pub project: &'a ProjectName,
    pub project_id: ProjectId,
    pub directory: &'a Path,
    pub compose_file: Option<&'a str>,
    pub action: LifecycleAction,
    /// One service, or the whole project.
    pub service: Option<&'a ServiceName>,
    /// With `down`: remove the named volumes too.
    pub remove_volumes: bool,
    /// A Compose project, or a Swarm stack (`crate::swarm::lifecycle`).
    pub target: DeployTarget,
}

/// Why a lifecycle job failed; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("`down` takes down the whole project; it cannot be limited to service {service}")]
    DownWithService { service: ServiceName },
    #[error(
        "the containers of compose project {name} on this host are not this project's (another \
         Stagely project's, or a stack started by hand); nothing was done"
    )]
    NotOurs { name: ProjectName },
    #[error(transparent)]
    Claim(ClaimError),
    #[error(transparent)]
    Compose(#[from] ComposeError),
    #[error(
        "cannot {action} the project without its compose file ({source}); restore it and try \
         again"
    )]
    NeedsFile {
        action: &'static str,
        source: ComposeError,
    },
    #[error(
        "cannot {action} the project without its compose file ({source}): Compose v1 needs it. \
         Restore the file, or remove the containers by hand (`docker rm -f`)"
    )]
    NeedsFileV1 {
        action: &'static str,
        source: ComposeError,
    },
    #[error(transparent)]
    Command(#[from] RunError),
    #[error(transparent)]
    Stack(#[from] crate::swarm::lifecycle::StackActionError),
    #[error("`{command}` failed (exit code {exit_code:?}):\n{output}")]
    Failed {
        command: String,
        exit_code: Option<i32>,
        output: String,
    },
}

impl From<ClaimError> for LifecycleError {
    fn from(error: ClaimError) -> Self {
        match error {
            ClaimError::TakenByProject { name } | ClaimError::Taken { name, .. } => {
                Self::NotOurs { name }
            }
            other => Self::Claim(other),
        }
    }
}

/// How many of its last lines a failed command shows.
const TAIL_LINES: usize = 50;

/// Runs the job, reporting its step and output lines through `report`; returns what was done.
pub async fn run(
    request: &LifecycleRequest<'_>,
    options: &DeployOptions,
    mut report: impl FnMut(JobEvent),
) -> Result<String, LifecycleError> {
    let action = request.action;
    report(JobEvent::Step {
        name: DeployStep::Other(action.as_str().to_owned()),
    });
    if let (LifecycleAction::Down, Some(service)) = (action, request.service) {
        return Err(LifecycleError::DownWithService {
            service: service.clone(),
        });
    }
    if request.target == DeployTarget::Swarm {
        // A stack is acted on by its name; its file is not needed.
        crate::swarm::lifecycle::run(request, options.up_timeout, &mut report).await?;
        return Ok(done(request));
    }
    let redactor = Redactor::new(std::iter::empty::<&str>());

    // The file, or (v2, stop and down only) the project name alone.
    // Lifecycle jobs create no mounts: what a deploy mounts was checked when it ran.
    let files = match compose::load_in_background(
        request.directory.to_owned(),
        request.compose_file.map(str::to_owned),
        options.allowed_roots.clone(),
        compose::BindMounts::AsWritten,
    )
    .await
    {
        Ok(project) => Some((project.file, project.dir)),
        Err(error)
            if is_gone(&error) && within_roots(request.directory, &options.allowed_roots) =>
        {
            let by_name_only = matches!(action, LifecycleAction::Stop | LifecycleAction::Down);
            match (&options.compose, by_name_only) {
                (Compose::V2, true) => {
                    report(JobEvent::Output {
                        line: wire::cut(
                            &format!("{error}; acting on the compose project by its name"),
                            budget::LINE,
                        ),
                    });
                    None
                }
                (Compose::V2, false) => {
                    return Err(LifecycleError::NeedsFile {
                        action: action.as_str(),
                        source: error,
                    })
                }
                (Compose::V1, _) => {
                    return Err(LifecycleError::NeedsFileV1 {
                        action: action.as_str(),
                        source: error,
                    })
                }
            }
        }
        Err(error) => return Err(error.into()),
    };

    let dir = files
        .as_ref()
        .map_or_else(|| request.directory.to_owned(), |(_, dir)| dir.clone());
    claim::claim(request.project, Some(request.project_id), &dir, &redactor).await?;

    let spec = command(request, &options.compose, files.as_ref()).timeout(options.up_timeout);
    let mut tail = std::collections::VecDeque::with_capacity(TAIL_LINES);
    let output = runner::run(&spec, &redactor, |line| {
        let (OutputLine::Stdout(text) | OutputLine::Stderr(text)) = line;
        let line = wire::cut(&text, budget::LINE);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        report(JobEvent::Output { line });
    })
    .await?;
    if !output.success() {
        let lines = Vec::from(tail).join("\n");
        return Err(LifecycleError::Failed {
            command: output.command,
            exit_code: output.exit_code,
            output: wire::cut_keeping_end(&lines, budget::MESSAGE - 1024),
        });
    }
    Ok(done(request))
}

/// Whether reading the project failed because its directory or file is gone (not because it
/// is refused: a project outside the allowed roots is never acted on by name).
fn is_gone(error: &ComposeError) -> bool {
    match error {
        ComposeError::Resolve { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        ComposeError::NoComposeFile { .. } => true,
        _ => false,
    }
}

/// Whether `dir`, which no longer exists, was inside one of `roots` (all of them when there
/// are none): a path is compared as written and against each root as written and resolved.
fn within_roots(dir: &Path, roots: &[PathBuf]) -> bool {
    roots.is_empty()
        || roots.iter().any(|root| {
            dir.starts_with(root)
                || std::fs::canonicalize(root).is_ok_and(|resolved| dir.starts_with(resolved))
        })
}

/// `compose -p <project> [-f <file> --project-directory <dir>] <action…> [service]`.
fn command(
    request: &LifecycleRequest<'_>,
    compose: &Compose,
    files: Option<&(PathBuf, PathBuf)>,
) -> runner::CommandSpec {
    let mut argv: Vec<OsString> = vec!["-p".into(), request.project.as_str().into()];
    if let Some((file, dir)) = files {
        argv.extend([
            "-f".into(),
            file.into(),
            "--project-directory".into(),
            dir.into(),
        ]);
    }
    match request.action {
        LifecycleAction::Start => argv.push("start".into()),
        LifecycleAction::Stop => argv.push("stop".into()),
        LifecycleAction::Restart => argv.push("restart".into()),
        LifecycleAction::Down => {
            argv.extend(["down".into(), "--remove-orphans".into()]);
            if request.remove_volumes {
                argv.push("--volumes".into());
            }
        }
    }
    if let Some(service) = request.service {
        argv.push(service.as_str().into());
    }
    // Without a file, Compose must not find one where it runs: `/` has no parent to search.
    let cwd = files.map_or_else(|| PathBuf::from("/"), |(_, dir)| dir.clone());
    compose.command(argv).current_dir(cwd)
}

/// What the job did, for its result.
fn done(request: &LifecycleRequest<'_>) -> String {
    let what = match request.service {
        Some(service) => format!("service {service}"),
        None => "the project".to_owned(),
    };
    match request.action {
        LifecycleAction::Start => format!("started {what}"),
        LifecycleAction::Stop => format!("stopped {what}"),
        LifecycleAction::Restart => format!("restarted {what}"),
        LifecycleAction::Down if request.remove_volumes => {
            "took the project down and removed its volumes".to_owned()
        }
        LifecycleAction::Down => "took the project down".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn request<'a>(
        name: &'a ProjectName,
        action: LifecycleAction,
        service: Option<&'a ServiceName>,
        remove_volumes: bool,
    ) -> LifecycleRequest<'a> {
        LifecycleRequest {
            project: name,
            project_id: ProjectId(Uuid::new_v4()),
            directory: Path::new("/srv/shop"),
            compose_file: None,
            action,
            service,
            remove_volumes,
            target: DeployTarget::Compose,
        }
    }

    #[test]
    fn commands_are_built_as_argv_for_each_action() {
        let name = ProjectName::parse("shop").unwrap();
        let web = ServiceName::parse("web").unwrap();
        let files = (
            PathBuf::from("/srv/shop/compose.yaml"),
            PathBuf::from("/srv/shop"),
        );
        let cases = [
            (
                request(&name, LifecycleAction::Restart, Some(&web), false),
                Some(&files),
                "docker compose -p shop -f /srv/shop/compose.yaml --project-directory /srv/shop restart web",
            ),
            (
                request(&name, LifecycleAction::Down, None, true),
                Some(&files),
                "docker compose -p shop -f /srv/shop/compose.yaml --project-directory /srv/shop down --remove-orphans --volumes",
            ),
            (
                request(&name, LifecycleAction::Stop, None, false),
                None,
                "docker compose -p shop stop",
            ),
        ];
        for (request, files, expected) in cases {
            assert_eq!(command(&request, &Compose::V2, files).display(), expected);
        }
        let v1 = command(
            &request(&name, LifecycleAction::Start, None, false),
            &Compose::V1,
            Some(&files),
        );
        assert_eq!(
            v1.display(),
            "docker-compose -p shop -f /srv/shop/compose.yaml --project-directory /srv/shop start"
        );
    }

    #[tokio::test]
    async fn a_gone_directory_outside_the_allowed_roots_is_not_acted_on_by_name() {
        let name = ProjectName::parse("shop").unwrap();
        let root = tempfile::tempdir().unwrap();
        let options = DeployOptions {
            compose: Compose::V2,
            allowed_roots: vec![root.path().to_owned()],
            private_dir: root.path().join("private"),
            up_timeout: std::time::Duration::from_secs(1),
            health_timeout: std::time::Duration::from_secs(1),
            settle: std::time::Duration::ZERO,
            git_max_bytes: crate::git::DEFAULT_MAX_BYTES,
        };
        let mut events = Vec::new();
        let error = run(
            &request(&name, LifecycleAction::Down, None, false),
            &options,
            |event| events.push(event),
        )
        .await
        .unwrap_err();
        assert!(matches!(error, LifecycleError::Compose(_)), "{error}");
        assert!(within_roots(
            &root.path().join("gone"),
            &options.allowed_roots
        ));
        assert!(within_roots(Path::new("/anywhere"), &[]));
    }

    #[tokio::test]
    async fn down_for_one_service_is_refused_before_anything_runs() {
        let name = ProjectName::parse("shop").unwrap();
        let web = ServiceName::parse("web").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let options = DeployOptions {
            compose: Compose::V2,
            allowed_roots: vec![dir.path().to_owned()],
            private_dir: dir.path().join("private"),
            up_timeout: std::time::Duration::from_secs(1),
            health_timeout: std::time::Duration::from_secs(1),
            settle: std::time::Duration::ZERO,
            git_max_bytes: crate::git::DEFAULT_MAX_BYTES,
        };
        let mut events = Vec::new();
        let error = run(
            &request(&name, LifecycleAction::Down, Some(&web), false),
            &options,
            |event| events.push(event),
        )
        .await
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("cannot be limited to service web"),
            "{error}"
        );
        assert!(!events
            .iter()
            .any(|event| matches!(event, JobEvent::Output { .. })));
    }
}
