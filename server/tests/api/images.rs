//! Images of a deploy through the whole stack: a project's pull policy, registry credentials
//! set per agent and per project over the API (sealed at rest, never read back), and a real
//! registry (Debian's `docker-registry`, with basic auth) that a real agent pulls from.

use crate::helpers::{spawn_app, wait_for_deployment, ApiClient, HostProject, TestDb};
use reqwest::Method;
use serde_json::json;
use shared::api::{DeployAccepted, Deployment, DeploymentStatus, Project};
use shared::registry::{PullPolicy, RegistryCredentialSummary};
use shared::ProjectId;
use std::path::{Path, PathBuf};
use std::time::Duration;

const AGENT_PW: &str = "agent-wide-pw-9c41e0";
const GH_PW: &str = "ghcr-token-77ab12cd";
const PROJECT_PW: &str = "project-pw-first-3e9f";
const PROJECT_PW_2: &str = "project-pw-second-b2d8";

/// What the database holds, as text: the SQLite files, or a `pg_dump`.
async fn dump(app: &crate::helpers::TestApp, db: &TestDb) -> String {
    match db {
        TestDb::Sqlite => {
            app.store().close().await; // checkpoint the WAL into the main file
            let mut bytes = std::fs::read(app.data_dir.path().join("stagely.db")).unwrap();
            bytes.extend(
                std::fs::read(app.data_dir.path().join("stagely.db-wal")).unwrap_or_default(),
            );
            String::from_utf8_lossy(&bytes).into_owned()
        }
        TestDb::Postgres(url) => {
            let output = std::process::Command::new("pg_dump")
                .arg(url)
                .output()
                .expect("pg_dump runs");
            assert!(output.status.success());
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    }
}

async fn set(api: &ApiClient, owner: &str, registry: &str, user: &str, password: &str) {
    let body = json!({"registry": registry, "username": user, "password": password});
    let set: RegistryCredentialSummary = api
        .expect(
            Method::PUT,
            &format!("{owner}/registry-credentials"),
            Some(body),
            200,
        )
        .await;
    assert_eq!(set.registry, registry);
    assert_eq!(set.username, user);
}

#[tokio::test]
async fn registry_credentials_are_sealed_never_read_back_and_a_projects_own_wins() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (agent, project) = api.shop_project().await;
        let agent_path = format!("/agents/{}", agent.agent.id);
        let project_path = format!("/projects/{}", project.id);
        let local = "registry.example.com:5000";
        set(&api, &agent_path, local, "agent-user", AGENT_PW).await;
        set(&api, &agent_path, "ghcr.io", "agent-gh", GH_PW).await;
        set(&api, &project_path, local, "ci", PROJECT_PW).await;
        // Set again: replaced, not added.
        set(&api, &project_path, local, "ci-2", PROJECT_PW_2).await;

        let (status, listed) = api
            .call(
                Method::GET,
                &format!("{project_path}/registry-credentials"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        let (_, agent_listed) = api
            .call(
                Method::GET,
                &format!("{agent_path}/registry-credentials"),
                None,
            )
            .await;
        let text = format!("{listed}{agent_listed}");
        for password in [AGENT_PW, GH_PW, PROJECT_PW, PROJECT_PW_2] {
            assert!(!text.contains(password), "{}: {text}", db.name());
        }
        let listed: Vec<RegistryCredentialSummary> = serde_json::from_value(listed).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].username, "ci-2");

        // A deploy carries the project's own for its registry, the agent's for the other.
        let chosen = |credentials: Vec<shared::registry::RegistryCredential>| {
            credentials
                .into_iter()
                .map(|c| {
                    (
                        c.registry.to_string(),
                        c.username.to_string(),
                        c.password.expose().to_owned(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let for_deploy = server::ops::registries::for_deploy(
            &app.state.store,
            &app.state.vault,
            agent.agent.id,
            project.id,
        )
        .await
        .unwrap();
        assert_eq!(
            chosen(for_deploy),
            [
                (
                    "ghcr.io".to_string(),
                    "agent-gh".to_string(),
                    GH_PW.to_string()
                ),
                (
                    local.to_string(),
                    "ci-2".to_string(),
                    PROJECT_PW_2.to_string()
                ),
            ]
        );

        // Bad input: one clear message each, nothing stored.
        for (body, says) in [
            (
                json!({"registry": "https://ghcr.io", "username": "u", "password": "p"}),
                "registry",
            ),
            (
                json!({"registry": "ghcr.io/org", "username": "u", "password": "p"}),
                "registry",
            ),
            (
                json!({"registry": "ghcr.io", "username": "a:b", "password": "p"}),
                "registry username",
            ),
            (
                json!({"registry": "ghcr.io", "username": "u", "password": ""}),
                "cannot be empty",
            ),
            (
                json!({"registry": "ghcr.io", "username": "u", "password": "x".repeat(5000)}),
                "at most 4 KiB",
            ),
        ] {
            let (status, answer) = api
                .call(
                    Method::PUT,
                    &format!("{project_path}/registry-credentials"),
                    Some(body.clone()),
                )
                .await;
            assert_eq!(status, 400, "{body}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{body}: {message}");
        }

        // Another person reaches neither the project's nor the agent's credentials.
        let (_, bob) = app.user("bob").await;
        for owner in [&project_path, &agent_path] {
            let path = format!("{owner}/registry-credentials");
            let (status, _) = bob.call(Method::GET, &path, None).await;
            assert_eq!(status, 404);
            let body = json!({"registry": "ghcr.io", "username": "bob", "password": "bobs-pw"});
            let (status, _) = bob.call(Method::PUT, &path, Some(body)).await;
            assert_eq!(status, 404);
            let (status, _) = bob
                .call(Method::DELETE, &format!("{path}/ghcr.io"), None)
                .await;
            assert_eq!(status, 404);
        }

        // Removing the project's own brings the agent's back for that registry.
        let delete = format!("{project_path}/registry-credentials/{local}");
        let (status, _) = api.call(Method::DELETE, &delete, None).await;
        assert_eq!(status, 204);
        let (status, _) = api.call(Method::DELETE, &delete, None).await;
        assert_eq!(status, 404);
        let for_deploy = server::ops::registries::for_deploy(
            &app.state.store,
            &app.state.vault,
            agent.agent.id,
            project.id,
        )
        .await
        .unwrap();
        assert_eq!(chosen(for_deploy)[1].1, "agent-user");

        // The pull policy is set at creation and changed like any other field.
        let body = json!({"name": "nightly", "agent_id": agent.agent.id, "path": "/srv/nightly", "pull_policy": "always"});
        let nightly: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
        assert_eq!(nightly.pull_policy, PullPolicy::Always);
        assert_eq!(project.pull_policy, PullPolicy::Missing);
        let changed: Project = api
            .expect(
                Method::PATCH,
                &format!("/projects/{}", nightly.id),
                Some(json!({"pull_policy": "missing"})),
                200,
            )
            .await;
        assert_eq!(changed.pull_policy, PullPolicy::Missing);
        let (status, answer) = api
            .call(
                Method::PATCH,
                &format!("/projects/{}", nightly.id),
                Some(json!({"pull_policy": "sometimes"})),
            )
            .await;
        assert_eq!(status, 400, "{answer}");

        let dump = dump(&app, &db).await;
        assert!(
            dump.contains("agent-gh"),
            "{}: no credentials table",
            db.name()
        );
        for password in [AGENT_PW, GH_PW, PROJECT_PW, PROJECT_PW_2] {
            assert!(
                !dump.contains(password),
                "{}: a registry password is stored in plaintext",
                db.name()
            );
        }
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

async fn deploy(api: &ApiClient, project: ProjectId) -> Deployment {
    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{project}"), None, 202)
        .await;
    wait_for_deployment(api, accepted.deployment_id, Duration::from_secs(120)).await
}

/// Every path under `dir` whose name is `config.json` or a per-run Docker configuration.
fn docker_configs_under(dir: &Path) -> Vec<PathBuf> {
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
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "config.json" || name.ends_with(".docker-config") {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn a_deploy_pulls_a_new_latest_with_the_projects_credentials_and_records_its_digest() {
    let password = "registry-pw-e2e-51c7";
    let wrong_password = "wrong-pw-e2e-0a9d";
    let registry = agent::testing::TestRegistry::start(Some(("ci", password))).await;
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (agent, process) = api.connected_agent(&app.url(), app.data_dir.path()).await;
        let unique = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let local = format!("stagely-test/e2e-{unique}:build");
        let repository = format!("stagely-test-e2e-{unique}");
        let v1 = agent::testing::build_version_image(&local, "one").await;
        let mut images = Images(vec![local.clone(), v1.clone()]);
        let (reference, digest_1) = registry.push(&local, &repository, "latest").await;
        images.0.push(reference.clone());
        let host = HostProject::new(&format!(
            "services:\n  web:\n    image: {reference}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
        ))
        .await;
        let body = json!({"name": host.name, "agent_id": agent.agent.id, "path": host.path(), "pull_policy": "always"});
        let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
        let project_path = format!("/projects/{}", project.id);
        // The agent's credential is wrong; the project's own wins for this registry.
        let agent_path = format!("/agents/{}", agent.agent.id);
        set(&api, &agent_path, &registry.host, "ci", wrong_password).await;
        set(&api, &project_path, &registry.host, "ci", password).await;

        let first = deploy(&api, project.id).await;
        assert_eq!(first.status, DeploymentStatus::Succeeded, "{first:?}");
        assert_eq!(first.images[0].image_id, v1);
        assert_eq!(
            first.images[0].repo_digest.as_deref(),
            Some(digest_1.as_str())
        );
        assert!(first
            .events
            .iter()
            .any(|e| e.kind == "step" && e.body == "pull"));

        // CI pushes a new build under the same tag: the next deploy runs it and records it.
        let v2 = agent::testing::build_version_image(&local, "two").await;
        images.0.push(v2.clone());
        let (_, digest_2) = registry.push(&local, &repository, "latest").await;
        let second = deploy(&api, project.id).await;
        assert_eq!(second.status, DeploymentStatus::Succeeded, "{second:?}");
        assert_eq!(agent::testing::container_image(&host.name, "web").await, v2);
        assert_eq!(second.images[0].image_id, v2);
        assert_eq!(
            second.images[0].repo_digest.as_deref(),
            Some(digest_2.as_str())
        );

        // The project's credential goes wrong: Failed with the registry's word, the container
        // keeps running v2.
        let v3 = agent::testing::build_version_image(&local, "three").await;
        images.0.push(v3);
        registry.push(&local, &repository, "latest").await;
        set(&api, &project_path, &registry.host, "ci", wrong_password).await;
        let third = deploy(&api, project.id).await;
        assert_eq!(third.status, DeploymentStatus::Failed, "{third:?}");
        let message = third.message.clone().unwrap_or_default();
        assert!(message.contains("pulling the images failed"), "{message}");
        assert!(
            message.contains("unauthorized") || message.contains("authentication required"),
            "{message}"
        );
        assert_eq!(agent::testing::container_image(&host.name, "web").await, v2);

        // No password in the history, the agent's log, or a file left on the agent's disk.
        let mut seen = format!("{:?}{:?}{:?}", first.events, second.events, third.events);
        seen.push_str(&message);
        seen.push_str(&process.log_text());
        for secret in [password, wrong_password] {
            assert!(!seen.contains(secret), "{}: {seen}", db.name());
        }
        let left = docker_configs_under(&app.data_dir.path().join("agent-state"));
        assert!(left.is_empty(), "{}: left behind: {left:?}", db.name());

        agent::testing::remove_project(&host.name);
        drop(images);
    }
}

#[tokio::test]
async fn a_key_rotation_reseals_registry_passwords_and_they_still_open() {
    use server::crypto::{Keyring, MasterKey};
    use server::vault::Vault;
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (user, api) = app.user("alice").await;
        let (agent, project) = api.shop_project().await;
        let old = MasterKey::generate();
        let before = Vault::new(Keyring::new(old.clone(), None));
        let input = |password: &str| shared::registry::SetRegistryCredential {
            registry: shared::RegistryHost::parse("ghcr.io").unwrap(),
            username: shared::RegistryUsername::parse("ci").unwrap(),
            password: shared::SecretValue::new(password),
        };
        let owner = server::db::RegistryOwner::Project(project.id);
        server::ops::registries::set(app.store(), &before, &user, owner, input(GH_PW))
            .await
            .unwrap();
        let after = Vault::new(Keyring::new(MasterKey::generate(), Some(old)));
        let done = server::ops::registries::rotate_all(app.store(), &after)
            .await
            .unwrap();
        assert_eq!((done.rotated, done.current), (1, 0), "{}", db.name());
        let again = server::ops::registries::rotate_all(app.store(), &after)
            .await
            .unwrap();
        assert_eq!((again.rotated, again.current), (0, 1), "{}", db.name());
        let opened =
            server::ops::registries::for_deploy(app.store(), &after, agent.agent.id, project.id)
                .await
                .unwrap();
        assert_eq!(opened[0].password.expose(), GH_PW);
        // Under the new key alone (the old one removed), it still opens.
        let stored = app.store().all_registry_credentials().await.unwrap();
        assert!(!after.needs_rotation(&stored[0].password));
    }
}
