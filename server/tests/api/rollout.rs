//! A start-first rollout (`dev.stagely.rollout: start-first`) through the server: its progress
//! is in the deployment's history (what the dashboard's deploy view shows and streams), a failed
//! one ends the deployment Failed with the reason, and no secret value shows in either.

use crate::helpers::{spawn_app, wait_for_deployment, ApiClient, HostProject, TestDb};
use reqwest::Method;
use serde_json::json;
use shared::api::{DeployAccepted, Deployment, DeploymentStatus, SecretSummary};
use shared::ProjectId;
use std::time::Duration;

/// Serves its `GREETING`; the healthcheck fails for a greeting that starts with `broken`.
const START_FIRST_WEB: &str = r#"services:
  web:
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && echo \"$$GREETING\" > /www/index.html && httpd -f -p 80 -h /www & trap 'exit 0' TERM; wait"]
    labels:
      dev.stagely.rollout: start-first
    healthcheck:
      test: ["CMD", "sh", "-c", "case \"$$GREETING\" in broken*) exit 1;; esac; wget -qO- http://127.0.0.1/ >/dev/null"]
      interval: 1s
      timeout: 1s
      retries: 2
"#;

async fn deploy(api: &ApiClient, project: ProjectId) -> Deployment {
    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{project}"), None, 202)
        .await;
    wait_for_deployment(api, accepted.deployment_id, Duration::from_secs(120)).await
}

fn bodies(deployment: &Deployment) -> Vec<&str> {
    deployment
        .events
        .iter()
        .map(|event| event.body.as_str())
        .collect()
}

#[tokio::test]
async fn a_start_first_rollout_shows_its_progress_and_its_failure_in_the_deployment() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (agent, _process) = api.connected_agent(&app.url(), app.data_dir.path()).await;
        let host = HostProject::new(START_FIRST_WEB).await;
        let project = api.create_project(&agent, &host).await;
        let secret = api
            .add_secret(project.id, "GREETING", "first-greeting-4c1d")
            .await;
        let first = deploy(&api, project.id).await;
        assert_eq!(
            first.status,
            DeploymentStatus::Succeeded,
            "{:?}",
            first.events
        );

        let change = |value: &'static str| {
            let api = &api;
            let path = format!("/secrets/{}", secret.id);
            async move {
                let _: SecretSummary = api
                    .expect(Method::PATCH, &path, Some(json!({ "value": value })), 200)
                    .await;
            }
        };
        change("second-greeting-9e2a").await;
        let rolled = deploy(&api, project.id).await;
        let lines = bodies(&rolled);
        assert_eq!(rolled.status, DeploymentStatus::Succeeded, "{lines:#?}");
        for expected in [
            "web: start-first: starting 1 new container(s) beside the 1 old",
            "web: start-first 1/1 new container(s) healthy",
            "web: start-first done: 1 old container(s) removed, 1 new serving",
        ] {
            assert!(
                lines.contains(&expected),
                "{db:?} {expected}: {lines:#?}",
                db = db.name()
            );
        }
        assert!(host
            .env("web")
            .await
            .contains(&"GREETING=second-greeting-9e2a".to_string()));

        change("broken-greeting-77b0").await;
        let failed = deploy(&api, project.id).await;
        assert_eq!(
            failed.status,
            DeploymentStatus::Failed,
            "{:?}",
            failed.events
        );
        let message = failed.message.clone().unwrap_or_default();
        assert!(
            message.contains("web: the start-first rollout failed")
                && message.contains("unhealthy")
                && message.contains("the old ones keep serving"),
            "{message}"
        );
        assert!(host
            .env("web")
            .await
            .contains(&"GREETING=second-greeting-9e2a".to_string()));
        for text in bodies(&first)
            .into_iter()
            .chain(lines.iter().copied())
            .chain(bodies(&failed))
            .chain([message.as_str()])
        {
            assert!(
                !text.contains("-greeting-"),
                "a secret value in the deployment: {text}"
            );
        }
    }
}
