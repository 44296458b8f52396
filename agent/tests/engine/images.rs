//! Pull policies, registry credentials and builds, against a real registry (Debian's
//! `docker-registry`, started per test on a loopback port) and the real engine.

use crate::helpers::{run_ok, test_image, TestProject, IDLE_COMMAND};
use agent::deploy::{self, DeployError, DeployOptions, DeployRequest, Deployed};
use agent::runner::CommandSpec;
use agent::system::Compose;
use agent::testing::{build_version_image, container_image, image_id, TestRegistry};
use shared::protocol::JobEvent;
use shared::registry::{PullPolicy, RegistryCredential};
use shared::{RegistryHost, RegistryUsername, SecretValue};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn options(compose: Compose, private_dir: &Path) -> DeployOptions {
    DeployOptions {
        compose,
        allowed_roots: Vec::new(),
        private_dir: private_dir.to_path_buf(),
        up_timeout: Duration::from_secs(180),
        health_timeout: Duration::from_secs(30),
        settle: Duration::from_millis(500),
        git_max_bytes: agent::git::DEFAULT_MAX_BYTES,
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn credential(registry: &TestRegistry, user: &str, password: &str) -> RegistryCredential {
    RegistryCredential {
        registry: RegistryHost::parse(registry.host.as_str()).unwrap(),
        username: RegistryUsername::parse(user).unwrap(),
        password: SecretValue::new(password),
    }
}

/// Removes the images (tags or ids) a test made when it ends, however it ends.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", image.as_str()])
                .output();
        }
    }
}

async fn deploy_with(
    project: &TestProject,
    private: &Path,
    policy: PullPolicy,
    credentials: &[RegistryCredential],
) -> (Result<Deployed, DeployError>, Vec<JobEvent>) {
    let name = project.project_name();
    let request = DeployRequest {
        project: &name,
        directory: project.dir.path(),
        compose_file: None,
        secrets: &[],
        project_id: None,
        pinned_images: &[],
        pull_policy: policy,
        registry_credentials: credentials,
        target: Default::default(),
        secrets_as: Default::default(),
    };
    let mut events = Vec::new();
    let result = deploy::deploy(
        &request,
        &options(project.compose.clone(), private),
        |event| events.push(event),
    )
    .await;
    (result, events)
}

fn steps(events: &[JobEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            JobEvent::Step { name } => Some(name.to_string()),
            _ => None,
        })
        .collect()
}

fn output(events: &[JobEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            JobEvent::Output { line } => Some(line.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every file under `dir`, recursively (symlinks not followed).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                stack.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

async fn a_new_image_under_the_same_tag_is_pulled_under_always_only(compose: Compose) {
    let registry = TestRegistry::start(None).await;
    let local = format!("stagely-test/{}:build", unique("pull"));
    let repository = unique("stagely-test-app");
    let v1 = build_version_image(&local, "one").await;
    let mut images = Images(vec![local.clone()]);
    let (reference, digest_1) = registry.push(&local, &repository, "latest").await;
    images.0.push(reference.clone());
    let project = TestProject::new(
        compose.clone(),
        &format!("services:\n  web:\n    image: {reference}\n    command: {IDLE_COMMAND}\n"),
    )
    .await;
    let private = tempfile::tempdir().unwrap();

    // Not on the host yet: pulled under either policy.
    let (first, events) = deploy_with(&project, private.path(), PullPolicy::Always, &[]).await;
    let first = first.unwrap_or_else(|error| panic!("{error}\n{}", output(&events)));
    assert!(steps(&events).contains(&"pull".to_owned()), "{events:?}");
    assert_eq!(container_image(&project.name, "web").await, v1);
    assert_eq!(
        first.images[0].repo_digest.as_deref(),
        Some(digest_1.as_str())
    );

    // CI pushes a new build under the same tag; the host still has the old one as :latest.
    let v2 = build_version_image(&local, "two").await;
    images.0.push(v1.clone());
    assert_ne!(v1, v2);
    let (_, digest_2) = registry.push(&local, &repository, "latest").await;
    assert_ne!(digest_1, digest_2);
    run_ok(CommandSpec::new(
        "docker",
        ["tag", v1.as_str(), reference.as_str()],
    ))
    .await
    .unwrap();

    let (missing, events) = deploy_with(&project, private.path(), PullPolicy::Missing, &[]).await;
    missing.unwrap_or_else(|error| panic!("{error}\n{}", output(&events)));
    assert_eq!(
        container_image(&project.name, "web").await,
        v1,
        "`missing` pulled a tag the host already has"
    );

    let (always, events) = deploy_with(&project, private.path(), PullPolicy::Always, &[]).await;
    let always = always.unwrap_or_else(|error| panic!("{error}\n{}", output(&events)));
    assert_eq!(container_image(&project.name, "web").await, v2);
    assert_eq!(always.images[0].image_id, v2);
    assert_eq!(
        always.images[0].repo_digest.as_deref(),
        Some(digest_2.as_str())
    );
    assert_eq!(image_id(&reference).await, v2);
}

#[tokio::test]
async fn v2_a_new_image_under_the_same_tag_is_pulled_under_always_only() {
    a_new_image_under_the_same_tag_is_pulled_under_always_only(Compose::V2).await;
}

#[tokio::test]
async fn v1_a_new_image_under_the_same_tag_is_pulled_under_always_only() {
    a_new_image_under_the_same_tag_is_pulled_under_always_only(Compose::V1).await;
}

#[tokio::test]
async fn a_registry_with_auth_takes_the_jobs_credentials_and_a_wrong_one_changes_nothing() {
    let password = "registry-pw-7f3a9c";
    let registry = TestRegistry::start(Some(("ci", password))).await;
    let local = format!("stagely-test/{}:build", unique("auth"));
    let repository = unique("stagely-test-private");
    let v1 = build_version_image(&local, "one").await;
    let mut images = Images(vec![local.clone(), v1.clone()]);
    let (reference, _) = registry.push(&local, &repository, "latest").await;
    images.0.push(reference.clone());
    let project = TestProject::new(
        Compose::V2,
        &format!("services:\n  web:\n    image: {reference}\n    command: {IDLE_COMMAND}\n"),
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    let private = state.path().join("private");

    // Without credentials the registry refuses.
    let (refused, events) = deploy_with(&project, &private, PullPolicy::Always, &[]).await;
    let error = refused.expect_err("pulled from an auth registry without credentials");
    assert!(matches!(error, DeployError::Pull { .. }), "{error}");
    assert!(project.container_states().await.is_empty(), "{events:?}");

    let good = [credential(&registry, "ci", password)];
    let (deployed, events) = deploy_with(&project, &private, PullPolicy::Always, &good).await;
    deployed.unwrap_or_else(|error| panic!("{error}\n{}", output(&events)));
    let running = project.container_id("web").await;
    assert_eq!(container_image(&project.name, "web").await, v1);

    // A new image is pushed, and the credential goes wrong: the deploy fails at the pull,
    // saying what the registry said, and the container keeps running the old image.
    let v2 = build_version_image(&local, "two").await;
    registry.push(&local, &repository, "latest").await;
    images.0.push(v2);
    let wrong_password = "wrong-pw-5d1e8b22";
    let wrong = [credential(&registry, "ci", wrong_password)];
    let (failed, events) = deploy_with(&project, &private, PullPolicy::Always, &wrong).await;
    let error = failed.expect_err("a wrong password pulled");
    let message = error.to_string();
    assert!(matches!(error, DeployError::Pull { .. }), "{message}");
    assert!(
        message.contains("unauthorized") || message.contains("authentication required"),
        "{message}"
    );
    assert!(message.contains("not changed"), "{message}");
    assert_eq!(project.container_id("web").await, running);
    assert_eq!(container_image(&project.name, "web").await, v1);

    // Neither password shows anywhere, and no Docker configuration is left on disk.
    let everything = format!("{message}\n{events:?}");
    for secret in [password, wrong_password] {
        assert!(!everything.contains(secret), "{everything}");
    }
    let left: Vec<_> = files_under(state.path())
        .into_iter()
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name == "config.json" || name.ends_with(".docker-config")
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn a_password_that_shows_in_the_tools_output_is_masked() {
    // An attacker who controls a compose file cannot make the password print: an image named
    // after it is refused, and the message says `***` where the name had it.
    let password = "leakyregistrypw42";
    let registry = TestRegistry::start(Some(("ci", password))).await;
    let project = TestProject::new(
        Compose::V2,
        &format!(
            "services:\n  web:\n    image: {}/{password}:latest\n    command: {IDLE_COMMAND}\n",
            registry.host
        ),
    )
    .await;
    let private = tempfile::tempdir().unwrap();
    let good = [credential(&registry, "ci", password)];
    let (failed, events) = deploy_with(&project, private.path(), PullPolicy::Missing, &good).await;
    let message = failed
        .expect_err("an image that does not exist")
        .to_string();
    let everything = format!("{message}\n{events:?}");
    assert!(!everything.contains(password), "{everything}");
    assert!(message.contains("***"), "{message}");
    assert!(project.container_states().await.is_empty());
}

#[tokio::test]
async fn a_service_with_build_is_built_and_a_failing_build_changes_nothing() {
    let base = test_image().await;
    let tag = format!("stagely-test/{}:built", unique("build"));
    let _images = Images(vec![tag.clone()]);
    let project = TestProject::new(
        Compose::V2,
        &format!(
            "services:\n  web:\n    build: .\n    image: {tag}\n    command: {IDLE_COMMAND}\n"
        ),
    )
    .await;
    let dockerfile = project.dir.path().join("Dockerfile");
    std::fs::write(
        &dockerfile,
        format!("FROM {base}\nRUN echo one {tag} > /version\n"),
    )
    .unwrap();
    let private = tempfile::tempdir().unwrap();

    let (built, events) = deploy_with(&project, private.path(), PullPolicy::Missing, &[]).await;
    let built = built.unwrap_or_else(|error| panic!("{error}\n{}", output(&events)));
    let steps = steps(&events);
    assert!(steps.contains(&"build".to_owned()), "{steps:?}");
    assert!(!steps.contains(&"pull".to_owned()), "{steps:?}");
    let first = image_id(&tag).await;
    assert_eq!(container_image(&project.name, "web").await, first);
    assert_eq!(built.images[0].image_id, first);
    let version = run_ok(project.command(&["exec", "-T", "web", "cat", "/version"]))
        .await
        .unwrap();
    assert!(version.starts_with("one"), "{version}");
    let running = project.container_id("web").await;

    // A change that does not build fails the deploy with the builder's message.
    std::fs::write(
        &dockerfile,
        format!("FROM {base}\nRUN echo the-build-broke-here && false\n"),
    )
    .unwrap();
    let (failed, events) = deploy_with(&project, private.path(), PullPolicy::Missing, &[]).await;
    let error = failed.expect_err("a failing build deployed");
    let message = error.to_string();
    assert!(matches!(error, DeployError::Build { .. }), "{message}");
    assert!(
        output(&events).contains("the-build-broke-here"),
        "{events:?}"
    );
    assert_eq!(project.container_id("web").await, running);
    assert_eq!(container_image(&project.name, "web").await, first);
}
