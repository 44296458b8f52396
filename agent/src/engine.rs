//! What the Docker engine says about containers and images, read with `docker ps`,
//! `docker inspect` and `docker image inspect` through the [`crate::runner`].
//!
//! The live states, the images a deploy reports and the check of pinned images all read the
//! engine the same way: list container ids by label, then inspect them in a few calls (a
//! container removed in between is simply missing from the answer).

use crate::health::{self, InspectedContainer};
use crate::runner::{self, CommandSpec, Redactor};
use std::time::Duration;

/// Longest one read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Containers inspected per `docker inspect` call, so an argv stays short.
const INSPECT_CHUNK: usize = 100;

/// Why the engine could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Command(#[from] runner::RunError),
    #[error("`{command}` exited with {exit_code:?}: {stderr}")]
    Failed {
        command: String,
        exit_code: Option<i32>,
        stderr: String,
    },
    #[error("unexpected output of `{command}`: {source}")]
    Parse {
        command: String,
        source: serde_json::Error,
    },
}

/// Every container (running or not) matching all `label_filters` (`key` or `key=value`).
pub async fn containers(
    label_filters: &[String],
    redactor: &Redactor,
) -> Result<Vec<InspectedContainer>, EngineError> {
    let mut argv = vec![
        "ps".to_owned(),
        "-a".into(),
        "-q".into(),
        "--no-trunc".into(),
    ];
    for filter in label_filters {
        argv.push("--filter".into());
        argv.push(format!("label={filter}"));
    }
    let list = CommandSpec::new("docker", argv)
        .timeout(READ_TIMEOUT)
        .read_by_agent();
    let output = runner::run(&list, redactor, |_| {}).await?;
    if !output.success() {
        return Err(EngineError::Failed {
            command: output.command,
            exit_code: output.exit_code,
            stderr: output.stderr.trim().to_owned(),
        });
    }
    let ids: Vec<&str> = output.stdout.split_whitespace().collect();
    let inspect = ["inspect", "--format", health::INSPECT_FORMAT];
    inspect_in_chunks(&inspect, &ids, redactor, health::parse_inspected).await
}

/// Runs `docker <command…> <ids…>` in chunks of [`INSPECT_CHUNK`] and parses each answer. An
/// object removed since it was listed makes `docker` exit 1 after printing the others; only an
/// answer without any JSON is a failure.
async fn inspect_in_chunks<T>(
    command: &[&str],
    ids: &[&str],
    redactor: &Redactor,
    parse: fn(&str) -> Result<Vec<T>, serde_json::Error>,
) -> Result<Vec<T>, EngineError> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(INSPECT_CHUNK) {
        let argv = command.iter().chain(chunk).copied();
        let inspect = CommandSpec::new("docker", argv)
            .timeout(READ_TIMEOUT)
            .read_by_agent();
        let output = runner::run(&inspect, redactor, |_| {}).await?;
        match parse(&output.stdout) {
            Ok(parsed) => found.extend(parsed),
            Err(_) if !output.success() && output.stderr.contains("No such") => {}
            Err(source) if output.success() => {
                return Err(EngineError::Parse {
                    command: output.command,
                    source,
                })
            }
            Err(_) => {
                return Err(EngineError::Failed {
                    command: output.command,
                    exit_code: output.exit_code,
                    stderr: output.stderr.trim().to_owned(),
                })
            }
        }
    }
    Ok(found)
}

/// An image as `docker image inspect` describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Image {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "RepoDigests", default)]
    pub repo_digests: Option<Vec<String>>,
}

impl Image {
    /// The registry digest of the repository `reference` names (`registry/app:1.0` →
    /// `registry/app@sha256:…`): an image pulled from several repositories has one each, and a
    /// pin must pull from the one the service names. `None` when it has none there.
    pub fn repo_digest_of(&self, reference: &str) -> Option<String> {
        let repository = repository_of(reference);
        self.repo_digests
            .as_ref()?
            .iter()
            .find(|digest| {
                digest
                    .split_once('@')
                    .is_some_and(|(name, _)| same_repository(name, repository))
            })
            .cloned()
    }
}

/// The repository of an image reference: without its digest and its tag (a `:` after the
/// last `/`; one before it is a registry's port).
pub fn repository_of(reference: &str) -> &str {
    let named = reference
        .split_once('@')
        .map_or(reference, |(named, _)| named);
    match named.rfind(':') {
        Some(colon) if !named[colon..].contains('/') => &named[..colon],
        _ => named,
    }
}

/// Whether two repository names are the same, the way Docker writes them: `app`,
/// `library/app` and `docker.io/library/app` name one repository.
fn same_repository(a: &str, b: &str) -> bool {
    fn full(name: &str) -> String {
        let (first, rest) = name.split_once('/').unwrap_or(("", name));
        let has_registry = first.contains('.') || first.contains(':') || first == "localhost";
        let (registry, path) = if has_registry {
            (first, rest)
        } else {
            ("docker.io", name)
        };
        let registry = if registry == "index.docker.io" {
            "docker.io"
        } else {
            registry
        };
        if registry == "docker.io" && !path.contains('/') {
            format!("docker.io/library/{path}")
        } else {
            format!("{registry}/{path}")
        }
    }
    full(a) == full(b)
}

/// The images among `ids` (ids or references) that are on this host; missing ones are left
/// out.
pub async fn images(ids: &[&str], redactor: &Redactor) -> Result<Vec<Image>, EngineError> {
    inspect_in_chunks(&["image", "inspect"], ids, redactor, parse_images).await
}

/// Parses `docker image inspect <images…>`.
pub fn parse_images(output: &str) -> Result<Vec<Image>, serde_json::Error> {
    let trimmed = output.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(trimmed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_of_the_repository_a_service_names_is_chosen() {
        let digest = |name: &str| format!("{name}@sha256:{}", "0a".repeat(32));
        let image = Image {
            id: format!("sha256:{}", "1b".repeat(32)),
            repo_digests: Some(vec![
                digest("mirror.local:5000/team/app"),
                digest("registry.local:5000/team/app"),
                digest("app"),
            ]),
        };
        assert_eq!(
            image.repo_digest_of("registry.local:5000/team/app:1.0"),
            Some(digest("registry.local:5000/team/app"))
        );
        assert_eq!(
            image.repo_digest_of("docker.io/library/app:latest"),
            Some(digest("app"))
        );
        assert_eq!(image.repo_digest_of("docker.io/app:1"), Some(digest("app")));
        assert_eq!(
            image.repo_digest_of("index.docker.io/library/app"),
            Some(digest("app"))
        );
        assert_eq!(image.repo_digest_of("other/app:1"), None);
        assert_eq!(
            repository_of("registry.local:5000/app"),
            "registry.local:5000/app"
        );
        assert_eq!(repository_of("app:1@sha256:00"), "app");
    }

    #[test]
    fn image_inspect_output_gives_the_id_and_the_repo_digest_of_the_named_repository() {
        let json = r#"[{"Id":"sha256:aaaa","RepoTags":["app:1.0"],"RepoDigests":["reg/app@sha256:bbbb","reg/app@sha256:cccc"],"Size":1},
                       {"Id":"sha256:dddd","RepoTags":[],"RepoDigests":[]},
                       {"Id":"sha256:eeee","RepoDigests":null}]"#;
        let images = parse_images(json).unwrap();
        let digests: Vec<_> = images
            .iter()
            .map(|image| image.repo_digest_of("reg/app:1.0"))
            .collect();
        assert_eq!(
            digests,
            [Some("reg/app@sha256:bbbb".to_owned()), None, None]
        );
        assert_eq!(images[1].id, "sha256:dddd");
        // `docker image inspect` of nothing found prints an empty array.
        assert_eq!(parse_images("[]\n").unwrap(), vec![]);
        assert_eq!(parse_images("").unwrap(), vec![]);
    }
}
