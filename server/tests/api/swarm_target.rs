//! A project's deploy target (`compose` or `swarm`) and, for a Swarm stack, how it receives
//! its secrets: set at creation, changed like any other field, stored on both backends, and a
//! name the server does not know refused with a clear message.

use crate::helpers::{spawn_app, TestDb};
use reqwest::Method;
use serde_json::json;
use shared::api::Project;
use shared::target::{DeployTarget, SecretsAs};

#[tokio::test]
async fn a_projects_target_and_secret_mode_are_stored_changed_and_checked() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (agent, project) = api.shop_project().await;
        assert_eq!(project.target, DeployTarget::Compose, "{}", db.name());
        assert_eq!(project.secrets_as, SecretsAs::Environment);

        let body = json!({"name": "stack", "agent_id": agent.agent.id, "path": "/srv/stack",
            "target": "swarm", "secrets_as": "swarm_secrets"});
        let stack: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
        assert_eq!(stack.target, DeployTarget::Swarm);
        assert_eq!(stack.secrets_as, SecretsAs::SwarmSecrets);
        let read: Project = api
            .expect(Method::GET, &format!("/projects/{}", stack.id), None, 200)
            .await;
        assert_eq!(
            (read.target, read.secrets_as),
            (stack.target, stack.secrets_as)
        );

        // Lifecycle jobs run `docker compose`, which finds no container of a stack: refused
        // with what to do instead, rather than a stop that stops nothing.
        for action in ["stop", "start", "restart", "down"] {
            let (status, answer) = api
                .call(
                    Method::POST,
                    &format!("/projects/{}/actions", stack.id),
                    Some(json!({"action": action})),
                )
                .await;
            assert_eq!(status, 409, "{action}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("docker stack rm stack"), "{answer}");
        }

        let changed: Project = api
            .expect(
                Method::PATCH,
                &format!("/projects/{}", stack.id),
                Some(json!({"secrets_as": "environment"})),
                200,
            )
            .await;
        assert_eq!(changed.target, DeployTarget::Swarm, "unchanged");
        assert_eq!(changed.secrets_as, SecretsAs::Environment);

        for body in [
            json!({"target": "kubernetes"}),
            json!({"secrets_as": "files"}),
        ] {
            let (status, answer) = api
                .call(
                    Method::PATCH,
                    &format!("/projects/{}", stack.id),
                    Some(body),
                )
                .await;
            assert_eq!(status, 400, "{answer}");
        }
        let after: Project = api
            .expect(Method::GET, &format!("/projects/{}", stack.id), None, 200)
            .await;
        assert_eq!(
            (after.target, after.secrets_as),
            (DeployTarget::Swarm, SecretsAs::Environment)
        );
    }
}
