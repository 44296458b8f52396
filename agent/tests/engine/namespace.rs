//! A compose project name on a host belongs to one stack: the agent labels what it deploys and
//! refuses to deploy into a name that another stack's containers already use.

use crate::helpers::{leftovers, run_ok, TestProject, IDLE_COMMAND};
use agent::deploy::{self, DeployError, DeployOptions, DeployRequest};
use agent::override_file::{self, Owner, ServiceEnvironment, PROJECT_ID_LABEL, PROJECT_LABEL};
use agent::runner::CommandSpec;
use agent::system::Compose;
use serde_yaml::Value;
use shared::protocol::JobEvent;
use shared::ProjectId;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

fn one_service() -> String {
    format!("services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n")
}

fn options(compose: Compose, private_dir: &Path) -> DeployOptions {
    DeployOptions {
        compose,
        allowed_roots: Vec::new(),
        private_dir: private_dir.to_path_buf(),
        up_timeout: Duration::from_secs(120),
        health_timeout: Duration::from_secs(30),
        settle: Duration::from_millis(500),
        git_max_bytes: agent::git::DEFAULT_MAX_BYTES,
    }
}

/// Deploys `project`'s directory under the compose project name `name`, as the project `id`.
async fn deploy_as(
    project: &TestProject,
    name: &str,
    id: Option<ProjectId>,
    private: &Path,
) -> (Result<agent::deploy::Deployed, DeployError>, Vec<JobEvent>) {
    let name = shared::ProjectName::parse(name).unwrap();
    let request = DeployRequest {
        project: &name,
        directory: project.dir.path(),
        compose_file: None,
        secrets: &[],
        project_id: id,
        pinned_images: &[],
        pull_policy: Default::default(),
        registry_credentials: &[],
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

/// `(id, started at)` of every container of a compose project, straight from the engine.
async fn containers_of(name: &str) -> Vec<(String, String)> {
    let filter = format!("label=com.docker.compose.project={name}");
    let list = CommandSpec::new(
        "docker",
        ["ps", "-aq", "--no-trunc", "--filter", filter.as_str()],
    );
    let ids = run_ok(list).await.unwrap();
    let mut containers = Vec::new();
    for id in ids.split_whitespace() {
        let inspect = CommandSpec::new("docker", ["inspect", "-f", "{{.State.StartedAt}}", id]);
        containers.push((
            id.to_string(),
            run_ok(inspect).await.unwrap().trim().to_string(),
        ));
    }
    containers.sort();
    containers
}

#[tokio::test]
async fn a_deploy_into_a_name_used_by_a_stack_started_by_hand_elsewhere_is_refused() {
    // Someone ran `docker compose -p <name> up` by hand in another directory.
    let theirs = TestProject::new(Compose::V2, &one_service()).await;
    run_ok(theirs.command(&["up", "-d"])).await.unwrap();
    let before = containers_of(&theirs.name).await;
    assert_eq!(before.len(), 1);

    let ours = TestProject::new(Compose::V2, &one_service()).await;
    let private = tempfile::tempdir().unwrap();
    let id = ProjectId(Uuid::new_v4());
    let (result, events) = deploy_as(&ours, &theirs.name, Some(id), private.path()).await;

    let message = match result {
        Ok(_) => panic!("the deploy took over another stack's containers"),
        Err(error) => error.to_string(),
    };
    assert!(message.contains(&theirs.name), "{message}");
    assert!(
        message.contains(&format!("{}-web-1", theirs.name)),
        "the message names a container: {message}"
    );
    assert!(
        message.contains("rename") && message.contains("remove"),
        "the message says how to resolve it: {message}"
    );
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, JobEvent::Step { name } if name == "up")),
        "compose up ran: {events:?}"
    );
    assert_eq!(
        containers_of(&theirs.name).await,
        before,
        "the other stack's containers were touched"
    );
    assert_eq!(leftovers(private.path()), Vec::<String>::new());
}

/// `label → value` of the one container of `service` in `project`.
async fn labels_of(project: &TestProject, service: &str) -> BTreeMap<String, String> {
    let id = project.container_id(service).await;
    let inspect = CommandSpec::new(
        "docker",
        ["inspect", "-f", "{{json .Config.Labels}}", id.as_str()],
    );
    serde_json::from_str(&run_ok(inspect).await.unwrap()).unwrap()
}

async fn stagely_labels_merge_with_the_users_own_as_compose_merges_files(compose: Compose) {
    let user = "services:
  web:
    image: {image}
    labels:
      - com.example.team=blue
      - dev.stagely.project=spoofed
      - dev.stagely.project-id=spoofed
  db:
    image: {image}
    labels:
      com.example.tier: data
  plain:
    image: {image}
";
    let project = TestProject::new(compose, user).await;
    let found = agent::compose::load(project.dir.path(), None, &[]).unwrap();
    let name = project.project_name();
    let id = ProjectId(Uuid::new_v4());
    let owner = Owner {
        project: &name,
        project_id: Some(id),
    };
    let rendered =
        override_file::render_deploy(&found.services, &ServiceEnvironment::new(), &owner, false);
    let private = tempfile::tempdir().unwrap();
    let override_path = private.path().join("override.yml");
    std::fs::write(&override_path, rendered).unwrap();

    let config = project.command(&[
        "-f",
        found.file.to_str().unwrap(),
        "-f",
        override_path.to_str().unwrap(),
        "config",
    ]);
    let merged: Value = serde_yaml::from_str(&run_ok(config).await.unwrap()).unwrap();
    let labels = |service: &str| -> BTreeMap<String, String> {
        serde_yaml::from_value(merged["services"][service]["labels"].clone()).unwrap()
    };
    let ours = [
        (PROJECT_LABEL.to_string(), project.name.clone()),
        (PROJECT_ID_LABEL.to_string(), id.to_string()),
    ];
    let with = |own: &[(&str, &str)]| -> BTreeMap<String, String> {
        own.iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .chain(ours.iter().cloned())
            .collect()
    };
    assert_eq!(
        labels("web"),
        with(&[("com.example.team", "blue")]),
        "list form"
    );
    assert_eq!(
        labels("db"),
        with(&[("com.example.tier", "data")]),
        "mapping form"
    );
    assert_eq!(labels("plain"), with(&[]), "no labels of its own");
}

#[tokio::test]
async fn v2_stagely_labels_merge_with_the_users_own_as_compose_merges_files() {
    stagely_labels_merge_with_the_users_own_as_compose_merges_files(Compose::V2).await;
}

#[tokio::test]
async fn v1_stagely_labels_merge_with_the_users_own_as_compose_merges_files() {
    stagely_labels_merge_with_the_users_own_as_compose_merges_files(Compose::V1).await;
}

#[tokio::test]
async fn containers_an_older_agent_deployed_from_the_same_directory_are_adopted_and_labelled() {
    let yaml = format!(
        "services:\n  web:\n    image: {{image}}\n    command: {IDLE_COMMAND}\n    labels: [com.example.team=blue]\n"
    );
    let project = TestProject::new(Compose::V2, &yaml).await;
    // What an agent from before the labels left behind: the same name, the same directory.
    run_ok(project.command(&["up", "-d"])).await.unwrap();
    assert!(!labels_of(&project, "web")
        .await
        .contains_key(PROJECT_ID_LABEL));

    let private = tempfile::tempdir().unwrap();
    let id = ProjectId(Uuid::new_v4());
    let (result, _) = deploy_as(&project, &project.name, Some(id), private.path()).await;
    result.unwrap();
    let labels = labels_of(&project, "web").await;
    assert_eq!(labels[PROJECT_ID_LABEL], id.to_string());
    assert_eq!(labels[PROJECT_LABEL], project.name);
    assert_eq!(labels["com.example.team"], "blue");

    // Labelled now: the next deploy of the same project goes ahead without recreating anything;
    // another project under the same name does not.
    let container = project.container_id("web").await;
    let (again, _) = deploy_as(&project, &project.name, Some(id), private.path()).await;
    again.unwrap();
    assert_eq!(project.container_id("web").await, container);
    let other = ProjectId(Uuid::new_v4());
    let (refused, _) = deploy_as(&project, &project.name, Some(other), private.path()).await;
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains(&format!(
            "another Stagely project on this agent uses the compose project name {}",
            project.name
        )),
        "{message}"
    );
    assert!(
        !message.contains(&format!("{}-web-1", project.name)),
        "the other project's containers are not named: {message}"
    );
    assert_eq!(project.container_id("web").await, container);
}
