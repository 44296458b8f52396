//! Claiming a compose project name before `up`.
//!
//! A compose project name (`-p`) is a namespace on the host, not a property of a directory: `up`
//! adopts, recreates or (with `--remove-orphans`) removes every container labelled
//! `com.docker.compose.project=<name>`, whoever started it. So before `up` the agent lists the
//! containers already in that namespace and goes ahead only when each of them is this project's:
//!
//! - it carries this project's id ([`PROJECT_ID_LABEL`]), written by an earlier deploy;
//! - or it carries no id and Compose started it from this project's directory
//!   (`com.docker.compose.project.working_dir`): a deploy by an agent from before the labels, or
//!   a person running Compose by hand in the project. It is the same stack, and this deploy's
//!   `up` relabels it.
//!
//! Anything else is another stack's: another Stagely project's id, an id where this deploy has
//! none, a stack started by hand from another directory, a container with the label and no
//! working directory at all (`docker run --label`). Then the deploy stops, says how to resolve
//! it, and nothing is touched. The message is shown to whoever deployed, who may not be the one
//! whose stack it is: another Stagely project is named only as that, without its containers
//! (their names are its service names) or its directory; a stack started by hand, by the host's
//! owner, is named by one of its containers, which is what `docker rm` needs.
//!
//! The check and `up` are two steps, so a container started in between is not seen; what this
//! guards against is a name already in use, which is how two stacks collide in practice.

use crate::override_file::PROJECT_ID_LABEL;
use crate::runner::{self, CommandSpec, Redactor, RunError};
use shared::{ProjectId, ProjectName};
use std::path::Path;
use std::time::Duration;

/// The label Compose puts on every container of a project.
const COMPOSE_PROJECT_LABEL: &str = "com.docker.compose.project";

/// The label Compose puts on every container: the project directory it ran with.
const WORKING_DIR_LABEL: &str = "com.docker.compose.project.working_dir";

/// A container already in the namespace, as far as the claim cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    /// [`PROJECT_ID_LABEL`]; `None` when missing or empty.
    pub project_id: Option<String>,
    /// The working directory Compose recorded; `None` when missing or empty.
    pub working_dir: Option<String>,
}

/// Why a deploy may not use the name.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "another Stagely project on this agent uses the compose project name {name}. To deploy \
         here, rename the project"
    )]
    TakenByProject { name: ProjectName },
    #[error(
        "the compose project name {name} is already used on this host by another stack: \
         container {container} {why}{more}. To deploy here, rename the project, or remove that \
         stack's containers (`docker compose -p {name} down` where it was started, or \
         `docker rm -f {container}`)",
        more = match others {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        }
    )]
    Taken {
        name: ProjectName,
        container: String,
        why: &'static str,
        /// How many more containers are not this project's.
        others: usize,
    },
    #[error("listing the containers of compose project {name}: {reason}")]
    List { name: ProjectName, reason: String },
    #[error(transparent)]
    Command(#[from] RunError),
}

/// Checks that every container already using the compose project name `name` belongs to the
/// project `id` in `dir` (canonical); returns how many there are.
pub async fn claim(
    name: &ProjectName,
    id: Option<ProjectId>,
    dir: &Path,
    redactor: &Redactor,
) -> Result<usize, ClaimError> {
    let containers = list(name, redactor).await?;
    match judge(name, &containers, id, dir) {
        // The other stack's container is named in a message a person reads.
        Err(ClaimError::Taken {
            name,
            container,
            why,
            others,
        }) => Err(ClaimError::Taken {
            name,
            container: redactor.redact(&container),
            why,
            others,
        }),
        judged => judged.map(|()| containers.len()),
    }
}

/// The containers labelled with the compose project `name`, running or not.
async fn list(name: &ProjectName, redactor: &Redactor) -> Result<Vec<Container>, ClaimError> {
    let filter = format!("label={COMPOSE_PROJECT_LABEL}={name}");
    // One JSON array per container: a label value may hold any character, a newline included.
    let fields = [
        ".Names".to_owned(),
        format!("(.Label \"{PROJECT_ID_LABEL}\")"),
        format!("(.Label \"{WORKING_DIR_LABEL}\")"),
    ]
    .map(|field| format!("{{{{json {field}}}}}"));
    let format = format!("[{}]", fields.join(","));
    let spec = CommandSpec::new(
        "docker",
        [
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            filter.as_str(),
            "--format",
            format.as_str(),
        ],
    )
    .timeout(Duration::from_secs(60))
    // Names and directories are compared, not shown as printed: a secret value inside a
    // working directory must not make the project's own containers look foreign.
    .read_by_agent();
    let output = runner::run(&spec, redactor, |_| {}).await?;
    let failed = |reason: String| ClaimError::List {
        name: name.clone(),
        reason,
    };
    if !output.success() {
        return Err(failed(format!(
            "`docker ps` exited with {:?}: {}",
            output.exit_code,
            output.stderr.trim()
        )));
    }
    output
        .stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, project_id, working_dir): (String, String, String) =
                serde_json::from_str(line)
                    .map_err(|error| failed(format!("unexpected `docker ps` line: {error}")))?;
            let present = |value: String| Some(value).filter(|value| !value.is_empty());
            Ok(Container {
                name,
                project_id: present(project_id),
                working_dir: present(working_dir),
            })
        })
        .collect()
}

/// Whether every container is the project's (see the module doc); `dir` must be canonical.
pub fn judge(
    name: &ProjectName,
    containers: &[Container],
    id: Option<ProjectId>,
    dir: &Path,
) -> Result<(), ClaimError> {
    let id = id.map(|id| id.to_string());
    let another_project = containers.iter().any(|container| {
        container
            .project_id
            .as_ref()
            .is_some_and(|theirs| Some(theirs) != id.as_ref())
    });
    if another_project {
        return Err(ClaimError::TakenByProject { name: name.clone() });
    }
    // Only containers without a Stagely id are left to judge.
    let foreign: Vec<(&Container, &'static str)> = containers
        .iter()
        .filter(|container| container.project_id.is_none())
        .filter_map(|container| {
            let why = match &container.working_dir {
                Some(working_dir) if same_dir(Path::new(working_dir), dir) => return None,
                Some(_) => "was started by Compose from another directory",
                None => "was not started by Compose",
            };
            Some((container, why))
        })
        .collect();
    match foreign.first() {
        None => Ok(()),
        Some((container, why)) => Err(ClaimError::Taken {
            name: name.clone(),
            container: container.name.clone(),
            why,
            others: foreign.len() - 1,
        }),
    }
}

/// Whether `recorded` (as Compose wrote it) is the directory `dir` (canonical).
fn same_dir(recorded: &Path, dir: &Path) -> bool {
    recorded == dir || std::fs::canonicalize(recorded).is_ok_and(|recorded| recorded == dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn container(name: &str, project_id: Option<&str>, working_dir: Option<&str>) -> Container {
        Container {
            name: name.to_owned(),
            project_id: project_id.map(str::to_owned),
            working_dir: working_dir.map(str::to_owned),
        }
    }

    #[test]
    fn only_this_projects_containers_let_a_deploy_claim_the_name() {
        let name = ProjectName::parse("shop").unwrap();
        let ours = ProjectId(Uuid::new_v4());
        let ours_text = ours.to_string();
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        let here = dir.to_str().unwrap();
        // The same directory spelled through a symlink is still this project's.
        let link_parent = tempfile::tempdir().unwrap();
        let link = link_parent.path().join("via-link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let via_link = link.to_str().unwrap();

        let allowed: [(&str, Option<ProjectId>, Vec<Container>); 6] = [
            ("nothing there yet", Some(ours), vec![]),
            (
                "labelled with this project's id",
                Some(ours),
                vec![container("shop-web-1", Some(&ours_text), Some("/moved"))],
            ),
            (
                "unlabelled, from this directory (an older agent)",
                Some(ours),
                vec![container("shop-web-1", None, Some(here))],
            ),
            (
                "unlabelled, from this directory through a symlink",
                Some(ours),
                vec![container("shop-web-1", None, Some(via_link))],
            ),
            (
                "a local deploy over its own earlier one",
                None,
                vec![container("shop-web-1", None, Some(here))],
            ),
            (
                "a mix of both kinds of ours",
                Some(ours),
                vec![
                    container("shop-web-1", Some(&ours_text), Some(here)),
                    container("shop-db-1", None, Some(here)),
                ],
            ),
        ];
        for (case, id, containers) in allowed {
            assert!(judge(&name, &containers, id, &dir).is_ok(), "{case}");
        }

        // Another Stagely project's containers: see the next test.
        let refused: [(&str, Option<ProjectId>, Vec<Container>, &str); 3] = [
            (
                "started by hand from another directory",
                Some(ours),
                vec![container("shop-web-1", None, Some("/home/someone/shop"))],
                "was started by Compose from another directory",
            ),
            (
                "labelled by hand, not by Compose",
                Some(ours),
                vec![container("impostor", None, None)],
                "was not started by Compose",
            ),
            (
                "one foreign container among ours",
                Some(ours),
                vec![
                    container("shop-web-1", Some(&ours_text), Some(here)),
                    container("shop-worker-1", None, Some("/elsewhere")),
                ],
                "container shop-worker-1 was started",
            ),
        ];
        for (case, id, containers, expected) in refused {
            let error = judge(&name, &containers, id, &dir).unwrap_err();
            let message = error.to_string();
            assert!(message.contains(expected), "{case}: {message}");
            assert!(
                message.starts_with("the compose project name shop is already used"),
                "{case}: {message}"
            );
            assert!(message.contains("rename the project"), "{case}: {message}");
        }
    }

    #[test]
    fn the_message_counts_the_other_foreign_containers() {
        let name = ProjectName::parse("shop").unwrap();
        let containers = [
            container("shop-web-1", None, Some("/a")),
            container("shop-db-1", None, Some("/a")),
            container("shop-cache-1", None, None),
        ];
        let error = judge(&name, &containers, None, Path::new("/b")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(
                "container shop-web-1 was started by Compose from another directory (and 2 more)"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_name_another_stagely_project_uses_is_refused_without_showing_its_containers() {
        let name = ProjectName::parse("shop").unwrap();
        let ours = ProjectId(Uuid::new_v4());
        let theirs = ProjectId(Uuid::new_v4()).to_string();
        for (case, id, containers) in [
            (
                "another project's stack",
                Some(ours),
                vec![
                    container("shop-payments-1", Some(&theirs), Some("/srv/alice/shop")),
                    container("shop-ledger-1", Some(&theirs), Some("/srv/alice/shop")),
                ],
            ),
            (
                "deployed over without an id",
                None,
                vec![container(
                    "shop-payments-1",
                    Some(&theirs),
                    Some("/srv/alice/shop"),
                )],
            ),
            (
                "beside a container started by hand",
                Some(ours),
                vec![
                    container("shop-payments-1", Some(&theirs), Some("/srv/alice/shop")),
                    container("shop-debug-1", None, Some("/home/admin/shop")),
                ],
            ),
        ] {
            let error = judge(&name, &containers, id, Path::new("/srv/bob/shop")).unwrap_err();
            let message = error.to_string();
            assert!(
                message.starts_with(
                    "another Stagely project on this agent uses the compose project name shop"
                ),
                "{case}: {message}"
            );
            assert!(message.contains("rename the project"), "{case}: {message}");
            for hidden in [
                "payments",
                "ledger",
                "debug",
                "/srv/alice",
                "docker rm",
                " more",
            ] {
                assert!(!message.contains(hidden), "{case}: {message}");
            }
        }
    }
}
