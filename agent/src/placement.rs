//! Where a job may read a project, whatever the server asks.
//!
//! The agent's private directory holds its job ledger, credential files while a job runs,
//! override files and, under `checkouts/<project id>`, the working copies of Git projects. It
//! is nobody's project directory, so every job kind (deploy, lifecycle, log stream,
//! inspection) is judged by the same rule before anything reads a compose file:
//!
//! 1. a directory outside the private directory is read under the configured allowed roots,
//!    minus any inside the private directory (so no `include`, `extends` or bind mount of a
//!    confined project reaches a checkout either);
//! 2. a directory inside it is refused, unless the job names the Git project whose checkout
//!    it is (`<private>/checkouts/<project id>`, as written and as resolved): then that
//!    checkout is the job's only root;
//! 3. a deploy of a directory project (no Git source) never gets the exception of 2.
//!
//! Paths are compared as written and as resolved, so a symlink of someone's own that points
//! into the private directory is refused like the path itself.

use crate::git::Layout;
use shared::ProjectId;
use std::path::{Component, Path, PathBuf};

/// The job's directory is the agent's own: the error the job fails with.
#[derive(Debug, thiserror::Error)]
#[error(
    "refusing to use {directory}: it is inside the agent's private directory (where the \
     checkouts of Git projects live) and is not this project's own checkout; a directory \
     project must live elsewhere"
)]
pub struct PrivateDirRefused {
    pub directory: String,
}

/// The roots a job about `project_id` may read the project at `directory` under, given the
/// agent's `allowed_roots` (empty: anywhere) and its `private_dir`.
pub fn roots_for(
    directory: &Path,
    project_id: Option<ProjectId>,
    allowed_roots: &[PathBuf],
    private_dir: &Path,
) -> Result<Vec<PathBuf>, PrivateDirRefused> {
    if inside(directory, private_dir) {
        let own = project_id.map(|id| Layout::new(private_dir, id).base);
        return match own {
            Some(base) if inside_resolved(directory, &base) => Ok(vec![base]),
            _ => Err(refused(directory)),
        };
    }
    directory_roots(directory, allowed_roots, private_dir)
}

/// The roots a directory project's deploy may read the project at `directory` under: never
/// inside the private directory.
pub fn directory_roots(
    directory: &Path,
    allowed_roots: &[PathBuf],
    private_dir: &Path,
) -> Result<Vec<PathBuf>, PrivateDirRefused> {
    if inside(directory, private_dir) {
        return Err(refused(directory));
    }
    let roots: Vec<PathBuf> = allowed_roots
        .iter()
        .filter(|root| !inside(root, private_dir))
        .cloned()
        .collect();
    if roots.is_empty() && !allowed_roots.is_empty() {
        // Every configured root was the agent's own: none is left, which is not "anywhere".
        return Err(refused(directory));
    }
    Ok(roots)
}

fn refused(directory: &Path) -> PrivateDirRefused {
    PrivateDirRefused {
        directory: directory.display().to_string(),
    }
}

/// Whether `path` is (or resolves to) a place inside `dir`.
pub fn inside(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir) || resolved(path).starts_with(resolved(dir))
}

/// Whether `path` is inside `dir` both as written (with no `.` or `..`) and as resolved: a
/// symlink that leaves `dir` fails the second.
fn inside_resolved(path: &Path, dir: &Path) -> bool {
    let plain = path
        .components()
        .all(|part| matches!(part, Component::RootDir | Component::Normal(_)));
    plain && path.starts_with(dir) && resolved(path).starts_with(resolved(dir))
}

/// `path` with its symlinks resolved, or as written when it cannot be (it does not exist).
fn resolved(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> ProjectId {
        ProjectId(uuid::Uuid::new_v4())
    }

    #[test]
    fn only_a_git_projects_own_checkout_is_read_inside_the_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        let (victim, attacker) = (project(), project());
        let checkout = Layout::new(&private, victim).base;
        std::fs::create_dir_all(checkout.join("repo")).unwrap();
        let own = roots_for(&checkout.join("repo"), Some(victim), &[], &private).unwrap();
        assert_eq!(own, std::slice::from_ref(&checkout));

        let link = dir.path().join("mine");
        std::os::unix::fs::symlink(checkout.join("repo"), &link).unwrap();
        let escape = Layout::new(&private, attacker)
            .base
            .join("..")
            .join(victim.to_string());
        for (directory, project_id) in [
            (checkout.join("repo"), Some(attacker)),
            (checkout.join("repo"), None),
            (link.clone(), Some(victim)),
            (escape, Some(attacker)),
            (private.clone(), Some(victim)),
            (private.join("jobs.json"), Some(victim)),
        ] {
            let error = roots_for(&directory, project_id, &[], &private).unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("inside the agent's private directory"),
                "{directory:?}: {error}"
            );
        }
        assert!(directory_roots(&checkout.join("repo"), &[], &private).is_err());
    }

    #[test]
    fn a_directory_project_keeps_the_allowed_roots_outside_the_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        let apps = dir.path().join("apps");
        let roots = [apps.clone(), private.join("checkouts")];
        assert_eq!(
            roots_for(&apps.join("shop"), Some(project()), &roots, &private).unwrap(),
            std::slice::from_ref(&apps)
        );
        assert_eq!(
            directory_roots(&apps.join("shop"), &[], &private).unwrap(),
            Vec::<PathBuf>::new(),
            "no roots configured: anywhere else"
        );
        assert!(directory_roots(&apps, &[private.join("checkouts")], &private).is_err());
    }
}
