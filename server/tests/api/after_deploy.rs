//! After the click, through the REST API and the live feed: secret versions, lifecycle jobs,
//! exact redeploys, deleting with `down`, and the live state of containers as agents report it.
//! The tests that need containers run a real agent against the real Docker engine.

use crate::helpers::{
    hello, next_event_within, raw_agent, send_frame, spawn_app, RawSocket, TestDb,
};
use reqwest::Method;
use serde_json::json;
use shared::api::{
    DashboardEvent, DeployAccepted, Deployment, DeploymentStatus, ProjectServices, RevealedSecret,
    SecretVersion,
};
use shared::protocol::{ProjectContainers, ServiceStates};
use shared::runtime::{ContainerStatus, JobKind, ServiceState};
use shared::{AgentToServer, ProjectId, ServiceName, PROTOCOL_VERSION};
use std::time::Duration;

#[tokio::test]
async fn every_value_of_a_secret_is_kept_as_a_version_and_revealing_one_is_audited() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (_, project) = api.shop_project().await;
        let secret = api
            .add_secret(project.id, "DB_PASSWORD", "first-value")
            .await;
        for value in ["second-value", "third-value"] {
            let (status, body) = api
                .call(
                    Method::PATCH,
                    &format!("/secrets/{}", secret.id),
                    Some(json!({ "value": value })),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }

        let path = format!("/secrets/{}/versions", secret.id);
        let (status, listed) = api.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "{listed}");
        let text = listed.to_string();
        assert!(!text.contains("-value"), "a listing shows no value: {text}");
        let versions: Vec<SecretVersion> = serde_json::from_value(listed).unwrap();
        let numbers: Vec<i64> = versions.iter().map(|version| version.version).collect();
        assert_eq!(numbers, [3, 2, 1], "{}", db.name());
        let current: Vec<bool> = versions.iter().map(|version| version.current).collect();
        assert_eq!(current, [true, false, false]);
        assert!(versions
            .iter()
            .all(|version| version.created_by.as_deref() == Some("alice")));

        let first: RevealedSecret = api
            .expect(
                Method::POST,
                &format!("/secrets/{}/versions/1/reveal", secret.id),
                None,
                200,
            )
            .await;
        assert_eq!(first.value.expose(), "first-value");
        let trail = app
            .store()
            .audit_trail(&format!("secret:{}/version:1", secret.id))
            .await
            .unwrap();
        assert_eq!(
            trail,
            [("alice".to_string(), "reveal_secret_version".to_string())]
        );

        let (status, _) = api
            .call(
                Method::POST,
                &format!("/secrets/{}/versions/9/reveal", secret.id),
                None,
            )
            .await;
        assert_eq!(status, 404, "no such version");
        let (_, bob) = app.user("bob").await;
        for (method, path) in [
            (Method::GET, path.clone()),
            (
                Method::POST,
                format!("/secrets/{}/versions/1/reveal", secret.id),
            ),
        ] {
            let (status, _) = bob.call(method, &path, None).await;
            assert_eq!(status, 404, "another person's secret: {path}");
        }
    }
}

#[tokio::test]
async fn lifecycle_requests_are_checked_and_queued_as_jobs_of_the_history() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        // The agent is registered but never connects: the jobs wait, queued.
        let (_, project) = api.shop_project().await;
        let actions = format!("/projects/{}/actions", project.id);
        for (body, why) in [
            (
                json!({"action": "down", "service": "web"}),
                "the whole project",
            ),
            (
                json!({"action": "stop", "remove_volumes": true}),
                "down action only",
            ),
            (json!({"action": "explode"}), "unknown variant"),
            (json!({"action": "stop", "service": "../x"}), "service"),
        ] {
            let (status, answer) = api.call(Method::POST, &actions, Some(body)).await;
            assert_eq!(status, 400, "{answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains(why), "{why}: {message}");
        }

        let stop: DeployAccepted = api
            .expect(
                Method::POST,
                &actions,
                Some(json!({"action": "stop", "service": "web"})),
                202,
            )
            .await;
        let history: Vec<Deployment> = api
            .expect(
                Method::GET,
                &format!("/projects/{}/deployments", project.id),
                None,
                200,
            )
            .await;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].id, stop.deployment_id);
        assert_eq!(history[0].kind, JobKind::Stop);
        assert_eq!(
            history[0].service.as_ref().map(ServiceName::as_str),
            Some("web")
        );
        assert_eq!(history[0].status, DeploymentStatus::Queued);
        assert_eq!(history[0].requested_by.as_deref(), Some("alice"));

        let (_, bob) = app.user("bob").await;
        let (status, _) = bob
            .call(Method::POST, &actions, Some(json!({"action": "start"})))
            .await;
        assert_eq!(status, 404, "another person's project");
        let (status, _) = bob
            .call(
                Method::POST,
                &format!("/deployments/{}/redeploy", stop.deployment_id),
                None,
            )
            .await;
        assert_eq!(status, 404, "another person's deployment");
        let (status, answer) = api
            .call(
                Method::POST,
                &format!("/deployments/{}/redeploy", stop.deployment_id),
                None,
            )
            .await;
        assert_eq!(status, 409, "{answer}");
        assert!(answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only a deployment that succeeded"));
    }
}

#[tokio::test]
async fn deleting_with_down_while_the_agent_is_offline_keeps_the_project_and_says_why() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (_, project) = api.shop_project().await;
        let path = format!("/projects/{}", project.id);
        let (status, answer) = api
            .call(Method::DELETE, &format!("{path}?down=true"), None)
            .await;
        assert_eq!(status, 409, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not connected"),
            "{answer}"
        );
        let (status, _) = api.call(Method::GET, &path, None).await;
        assert_eq!(status, 200, "the project is kept");
        let (status, answer) = api
            .call(Method::DELETE, &format!("{path}?down=maybe"), None)
            .await;
        assert_eq!(status, 400, "{answer}");
        let (status, _) = api.call(Method::DELETE, &path, None).await;
        assert_eq!(status, 204, "without down it is deleted at once");
    }
}

fn container(service: &str, status: ContainerStatus, exit_code: Option<i64>) -> ServiceState {
    ServiceState {
        service: ServiceName::parse(service).unwrap(),
        container_id: "0123456789ab".into(),
        status,
        exit_code,
        health: None,
        started_at: Some("2026-11-30T10:00:00Z".into()),
        restart_count: 0,
        image_id: Some(format!("sha256:{}", "a".repeat(64))),
    }
}

async fn report(agent: &mut RawSocket, full: bool, project: ProjectId, states: Vec<ServiceState>) {
    let frame = AgentToServer::ServiceStates(ServiceStates {
        full,
        projects: vec![ProjectContainers {
            project_id: project,
            containers: states,
        }],
    });
    send_frame(agent, &frame).await;
}

/// Waits for the feed to bring `project`'s containers; other events are skipped.
async fn states_on_feed(feed: &mut RawSocket, project: ProjectId) -> Option<Vec<ServiceState>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_event_within(feed, left).await? {
            DashboardEvent::ServiceStates {
                project_id,
                containers,
            } if project_id == project => return Some(containers),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn an_agent_reports_container_states_of_its_own_projects_only() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (alice, alice_api) = app.user("alice").await;
        let (alice_agent, alice_project) = alice_api.shop_project().await;
        let (bob, bob_api) = app.user("bob").await;
        let (bob_agent, bob_project) = bob_api.shop_project().await;
        let mut alice_feed = app.feed(&alice).await;
        let mut bob_feed = app.feed(&bob).await;

        // Bob's agent is hostile: it reports on Alice's project, then honestly on Bob's.
        let mut hostile = raw_agent(&app.stream_url(), &bob_agent.token).await;
        assert!(matches!(
            hello(&mut hostile, PROTOCOL_VERSION).await,
            shared::ServerToAgent::Welcome(_)
        ));
        let lie = vec![container("web", ContainerStatus::Dead, Some(137))];
        report(&mut hostile, false, alice_project.id, lie).await;
        let worker = vec![container("worker", ContainerStatus::Exited, Some(1))];
        report(&mut hostile, false, bob_project.id, worker.clone()).await;

        assert_eq!(
            states_on_feed(&mut bob_feed, bob_project.id).await,
            Some(worker.clone()),
            "the owner's tab gets the report, pushed"
        );
        let bob_view: ProjectServices = bob_api
            .expect(
                Method::GET,
                &format!("/projects/{}/services", bob_project.id),
                None,
                200,
            )
            .await;
        assert_eq!(bob_view.containers, worker);
        assert!(bob_view.updated_at.is_some());

        let alice_view: ProjectServices = alice_api
            .expect(
                Method::GET,
                &format!("/projects/{}/services", alice_project.id),
                None,
                200,
            )
            .await;
        assert!(
            alice_view.containers.is_empty() && alice_view.updated_at.is_none(),
            "{} another agent's report about Alice's project was stored: {alice_view:?}",
            db.name()
        );
        assert_eq!(
            states_on_feed(&mut alice_feed, alice_project.id).await,
            None,
            "nor pushed to Alice's tab"
        );
        assert_eq!(
            states_on_feed(&mut alice_feed, bob_project.id).await,
            None,
            "and Bob's containers are not shown to Alice"
        );

        // Alice's own agent: a full report that no longer lists a project clears it.
        let mut honest = raw_agent(&app.stream_url(), &alice_agent.token).await;
        hello(&mut honest, PROTOCOL_VERSION).await;
        let web = vec![container("web", ContainerStatus::Running, None)];
        report(&mut honest, false, alice_project.id, web.clone()).await;
        assert_eq!(
            states_on_feed(&mut alice_feed, alice_project.id).await,
            Some(web)
        );
        let nothing = AgentToServer::ServiceStates(ServiceStates {
            full: true,
            projects: Vec::new(),
        });
        send_frame(&mut honest, &nothing).await;
        assert_eq!(
            states_on_feed(&mut alice_feed, alice_project.id).await,
            Some(Vec::new()),
            "a full report without the project means it has no containers left"
        );
        let overview: Vec<ProjectServices> = bob_api
            .expect(Method::GET, "/service-states", None, 200)
            .await;
        assert_eq!(overview.len(), 1);
        assert_eq!(overview[0].project_id, bob_project.id);
    }
}
