//! After the click, through the REST API and the live feed: secret versions, lifecycle jobs,
//! exact redeploys, deleting with `down`, and the live state of containers as agents report it.
//! The tests that need containers run a real agent against the real Docker engine.

use crate::helpers::{
    hello, next_event_within, raw_agent, send_frame, spawn_app, wait_for_deployment, ApiClient,
    HostProject, RawSocket, TestDb, WEB_AND_WORKER,
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
        let history = history(&api, project.id).await;
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
        replicas: None,
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

/// Deploys a project through the API and waits for the result.
async fn deploy(api: &ApiClient, project: ProjectId) -> Deployment {
    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{project}"), None, 202)
        .await;
    wait_for_deployment(api, accepted.deployment_id, Duration::from_secs(90)).await
}

/// Runs an earlier deployment again through the API and waits for the result.
async fn redeploy(api: &ApiClient, earlier: shared::DeploymentId) -> Deployment {
    let accepted: DeployAccepted = api
        .expect(
            Method::POST,
            &format!("/deployments/{earlier}/redeploy"),
            None,
            202,
        )
        .await;
    wait_for_deployment(api, accepted.deployment_id, Duration::from_secs(90)).await
}

/// A project's jobs, newest first.
async fn history(api: &ApiClient, project: ProjectId) -> Vec<Deployment> {
    api.expect(
        Method::GET,
        &format!("/projects/{project}/deployments"),
        None,
        200,
    )
    .await
}

/// Runs a lifecycle action through the API and waits for the job to end.
async fn act(api: &ApiClient, project: ProjectId, body: serde_json::Value) -> Deployment {
    let accepted: DeployAccepted = api
        .expect(
            Method::POST,
            &format!("/projects/{project}/actions"),
            Some(body),
            202,
        )
        .await;
    wait_for_deployment(api, accepted.deployment_id, Duration::from_secs(90)).await
}

/// Waits until the project's containers, as the API reports them, pass `check`.
async fn services_until(
    api: &ApiClient,
    project: ProjectId,
    what: &str,
    check: impl Fn(&[ServiceState]) -> bool,
) -> Vec<ServiceState> {
    let path = format!("/projects/{project}/services");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let services: ProjectServices = api.expect(Method::GET, &path, None, 200).await;
        if check(&services.containers) {
            return services.containers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            services.containers
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn state_of<'a>(states: &'a [ServiceState], service: &str) -> &'a ServiceState {
    states
        .iter()
        .find(|state| state.service.as_str() == service)
        .unwrap_or_else(|| panic!("no {service} in {states:?}"))
}

fn all_are(states: &[ServiceState], status: ContainerStatus) -> bool {
    states.len() == 2 && states.iter().all(|state| state.status == status)
}

#[tokio::test]
async fn lifecycle_jobs_act_on_the_containers_and_deleting_with_down_leaves_nothing() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (agent, _process) = api.connected_agent(&app.url(), app.data_dir.path()).await;
        let host = HostProject::new(WEB_AND_WORKER).await;
        let project = api.create_project(&agent, &host).await;
        let deployed = deploy(&api, project.id).await;
        assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
        services_until(
            &api,
            project.id,
            "both running after the deploy",
            |states| all_are(states, ContainerStatus::Running),
        )
        .await;

        let stopped = act(&api, project.id, json!({"action": "stop"})).await;
        assert_eq!(stopped.status, DeploymentStatus::Succeeded, "{stopped:?}");
        assert_eq!(stopped.kind, JobKind::Stop);
        services_until(&api, project.id, "both exited after stop", |states| {
            all_are(states, ContainerStatus::Exited)
        })
        .await;

        let started = act(&api, project.id, json!({"action": "start"})).await;
        assert_eq!(started.status, DeploymentStatus::Succeeded, "{started:?}");
        let before = services_until(&api, project.id, "both running after start", |states| {
            all_are(states, ContainerStatus::Running)
        })
        .await;

        let restarted = act(
            &api,
            project.id,
            json!({"action": "restart", "service": "web"}),
        )
        .await;
        assert_eq!(
            restarted.status,
            DeploymentStatus::Succeeded,
            "{restarted:?}"
        );
        let web_before = state_of(&before, "web").clone();
        let after = services_until(&api, project.id, "web started again", |states| {
            all_are(states, ContainerStatus::Running)
                && state_of(states, "web").started_at != web_before.started_at
        })
        .await;
        assert_eq!(
            state_of(&after, "web").container_id,
            web_before.container_id,
            "a restart keeps the container"
        );
        assert_eq!(
            state_of(&after, "worker"),
            state_of(&before, "worker"),
            "only the one service was restarted"
        );

        let down = act(&api, project.id, json!({"action": "down"})).await;
        assert_eq!(down.status, DeploymentStatus::Succeeded, "{down:?}");
        assert_eq!(
            agent::testing::container_ids(&host.name).await,
            Vec::<String>::new()
        );
        services_until(
            &api,
            project.id,
            "no containers after down",
            <[_]>::is_empty,
        )
        .await;

        let history = history(&api, project.id).await;
        let kinds: Vec<JobKind> = history.iter().map(|job| job.kind).collect();
        assert_eq!(
            kinds,
            [
                JobKind::Down,
                JobKind::Restart,
                JobKind::Start,
                JobKind::Stop,
                JobKind::Deploy
            ]
        );

        // Deleting with down takes the containers down first, then the project goes.
        let redeployed = deploy(&api, project.id).await;
        assert_eq!(redeployed.status, DeploymentStatus::Succeeded);
        assert_eq!(agent::testing::container_ids(&host.name).await.len(), 2);
        let path = format!("/projects/{}", project.id);
        let (status, answer) = api
            .call(Method::DELETE, &format!("{path}?down=true"), None)
            .await;
        assert_eq!(status, 204, "{answer}");
        assert_eq!(
            agent::testing::container_ids(&host.name).await,
            Vec::<String>::new()
        );
        let (status, _) = api.call(Method::GET, &path, None).await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn a_redeploy_runs_the_earlier_secret_values_and_image_exactly() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (agent, _process) = api.connected_agent(&app.url(), app.data_dir.path()).await;
        let tag = format!(
            "stagely-test/redeploy-{}:app",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let v1 = agent::testing::build_version_image(&tag, "one").await;
        let host = HostProject::new(&format!(
            "services:\n  web:\n    image: {tag}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
        ))
        .await;
        let project = api.create_project(&agent, &host).await;
        let secret = api.add_secret(project.id, "TOKEN", "value-A-first").await;
        let first = deploy(&api, project.id).await;
        assert_eq!(first.status, DeploymentStatus::Succeeded, "{first:?}");
        assert_eq!(first.images.len(), 1, "{:?}", first.images);
        assert_eq!(first.images[0].image_id, v1);
        assert_eq!(first.images[0].image, tag);

        // v2: another secret value, and the tag moved to another build.
        let (status, _) = api
            .call(
                Method::PATCH,
                &format!("/secrets/{}", secret.id),
                Some(json!({"value": "value-B-second"})),
            )
            .await;
        assert_eq!(status, 200);
        let v2 = agent::testing::build_version_image(&tag, "two").await;
        assert_ne!(v1, v2);
        let second = deploy(&api, project.id).await;
        assert_eq!(second.status, DeploymentStatus::Succeeded, "{second:?}");
        assert!(host
            .env("web")
            .await
            .contains(&"TOKEN=value-B-second".to_string()));
        assert_eq!(agent::testing::container_image(&host.name, "web").await, v2);

        // Redeploy v1: its secret value and its image, whatever the tag and the secret say now.
        let third = redeploy(&api, first.id).await;
        assert_eq!(third.status, DeploymentStatus::Succeeded, "{third:?}");
        assert!(
            host.env("web")
                .await
                .contains(&"TOKEN=value-A-first".to_string()),
            "{:?}",
            host.env("web").await
        );
        assert_eq!(agent::testing::container_image(&host.name, "web").await, v1);
        let history = history(&api, project.id).await;
        assert_eq!(history.len(), 3);
        assert_eq!(history[0].id, third.id);
        assert_eq!(history[0].redeploy_of, Some(first.id));
        assert_eq!(history[1].redeploy_of, None);
        // The stored secret is unchanged, and the value the containers run again stays masked.
        assert_eq!(api.reveal(secret.id).await.value.expose(), "value-B-second");
        let masked =
            server::ops::secrets::values_to_redact(&app.state.store, &app.state.vault, project.id)
                .await
                .unwrap();
        assert!(masked.iter().any(|value| value.expose() == "value-A-first"));

        // A snapshot whose image is gone fails with that reason and changes nothing.
        let gone = std::process::Command::new("docker")
            .args(["rmi", "-f", tag.as_str()])
            .output()
            .unwrap();
        assert!(gone.status.success(), "{gone:?}");
        let fourth = redeploy(&api, second.id).await;
        assert_eq!(fourth.status, DeploymentStatus::Failed, "{fourth:?}");
        let message = fourth.message.clone().unwrap_or_default();
        assert!(message.contains("no longer on this host"), "{message}");
        assert_eq!(agent::testing::container_image(&host.name, "web").await, v1);

        agent::testing::remove_project(&host.name);
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", v1.as_str()])
            .output();
    }
}

#[tokio::test]
async fn a_container_that_dies_after_a_deploy_shows_on_the_owners_feed() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (alice, api) = app.user("alice").await;
    let (agent, _process) = api.connected_agent(&app.url(), app.data_dir.path()).await;
    let host = HostProject::new(WEB_AND_WORKER).await;
    let project = api.create_project(&agent, &host).await;
    let deployed = deploy(&api, project.id).await;
    assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
    services_until(&api, project.id, "both running", |states| {
        all_are(states, ContainerStatus::Running)
    })
    .await;
    let mut feed = app.feed(&alice).await;

    let killed = std::process::Command::new("docker")
        .args(["kill", &format!("{}-web-1", host.name)])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let states = states_on_feed(&mut feed, project.id)
            .await
            .expect("no container states on the feed");
        let web = state_of(&states, "web");
        if web.status == ContainerStatus::Exited {
            assert_eq!(web.exit_code, Some(137), "{web:?}");
            assert_eq!(state_of(&states, "worker").status, ContainerStatus::Running);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{states:?}");
    }
}
