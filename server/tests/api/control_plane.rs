//! The control plane through its REST API: projects, secrets, deploys and their history, with a
//! real agent process deploying to the real Docker engine.

use crate::helpers::{
    eventually, spawn_app, wait_for_deployment, AgentProcess, ApiClient, HostProject, TestDb,
    WEB_AND_WORKER,
};
use reqwest::Method;
use serde_json::json;
use shared::api::{
    AgentCreated, ApiError, DeployAccepted, Deployment, DeploymentStatus, Project, SecretSummary,
};
use std::time::Duration;

#[tokio::test]
async fn a_deploy_through_the_api_puts_each_secret_where_it_belongs() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (agent, _process) = api.connected_agent(&app.url(), app.data_dir.path()).await;
        let host = HostProject::new(WEB_AND_WORKER).await;
        let project = api.create_project(&agent, &host).await;

        let secrets = [
            json!({"project_id": project.id, "key": "DB_PASSWORD", "value": "global-pw-$1", "scope": "global"}),
            json!({"project_id": project.id, "key": "PORT", "value": "8080", "scope": {"service": "web"}}),
            json!({"project_id": project.id, "key": "DB_PASSWORD", "value": "worker-pw", "scope": {"service": "worker"}}),
        ];
        for secret in secrets {
            let created: SecretSummary = api
                .expect(Method::POST, "/secrets", Some(secret), 201)
                .await;
            assert_eq!(created.value, "********", "values are never echoed");
        }
        let listed: Vec<SecretSummary> = api.secrets_of(project.id).await;
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|secret| secret.value == "********"));

        let accepted: DeployAccepted = api
            .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
            .await;
        let deployment =
            wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(60)).await;
        assert_eq!(
            deployment.status,
            DeploymentStatus::Succeeded,
            "{} {:?}",
            db.name(),
            deployment.events
        );

        let web = host.env("web").await;
        assert!(
            web.contains(&"DB_PASSWORD=global-pw-$1".to_string()),
            "{web:?}"
        );
        assert!(web.contains(&"PORT=8080".to_string()), "{web:?}");
        let worker = host.env("worker").await;
        assert!(
            worker.contains(&"DB_PASSWORD=worker-pw".to_string()),
            "{worker:?}"
        );
        assert!(
            !worker.iter().any(|entry| entry.starts_with("PORT=")),
            "{worker:?}"
        );

        // The history shows every state it went through, the steps, and compose's output.
        let statuses: Vec<&str> = deployment
            .events
            .iter()
            .filter(|event| event.kind == "status")
            .map(|event| event.body.as_str())
            .collect();
        assert_eq!(
            statuses,
            ["queued", "sent", "received", "running", "succeeded"]
        );
        let steps: Vec<&str> = deployment
            .events
            .iter()
            .filter(|e| e.kind == "step")
            .map(|e| e.body.as_str())
            .collect();
        assert_eq!(steps, ["parse", "render", "claim", "up", "health"]);
        assert!(deployment
            .events
            .iter()
            .any(|e| e.kind == "output" && e.body.contains("web")));
        assert!(
            !deployment
                .events
                .iter()
                .any(|e| e.body.contains("global-pw") || e.body.contains("worker-pw")),
            "a secret value reached the deployment's history"
        );
        let history: Vec<Deployment> = api
            .expect(
                Method::GET,
                &format!("/projects/{}/deployments", project.id),
                None,
                200,
            )
            .await;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].id, accepted.deployment_id);
    }
}

#[tokio::test]
async fn another_users_things_answer_404_and_no_token_answers_401() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, alice) = app.user("alice").await;
    let (_, bob) = app.user("bob").await;
    let (agent, project) = alice.shop_project().await;
    let secret = alice.add_secret(project.id, "K", "v").await;
    let deployment: DeployAccepted = alice
        .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
        .await;

    let p = project.id;
    let s = secret.id;
    let cases: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, format!("/projects/{p}"), None),
        (
            Method::PATCH,
            format!("/projects/{p}"),
            Some(json!({"path": "/tmp"})),
        ),
        (Method::DELETE, format!("/projects/{p}"), None),
        (Method::GET, format!("/projects/{p}/secrets"), None),
        (Method::GET, format!("/projects/{p}/deployments"), None),
        (
            Method::PATCH,
            format!("/secrets/{s}"),
            Some(json!({"value": "stolen"})),
        ),
        (Method::DELETE, format!("/secrets/{s}"), None),
        (Method::POST, format!("/secrets/{s}/reveal"), None),
        (Method::POST, format!("/deploy/{p}"), None),
        (
            Method::GET,
            format!("/deployments/{}", deployment.deployment_id),
            None,
        ),
        (Method::DELETE, format!("/agents/{}", agent.agent.id), None),
    ];
    for (method, path, body) in cases {
        let (status, json) = bob.call(method.clone(), &path, body).await;
        assert_eq!(status, 404, "bob {method} {path}: {json}");
        let error: ApiError = serde_json::from_value(json).unwrap();
        assert_eq!(error.error.code, "not_found");
    }
    // Bob cannot put a project on Alice's agent either.
    let (status, _) = bob
        .call(
            Method::POST,
            "/projects",
            Some(json!({"name": "x", "agent_id": agent.agent.id, "path": "/srv/x"})),
        )
        .await;
    // Well formed, naming an agent that is not his: the same answer as for no such agent.
    assert_eq!(status, 422);
    let listed: Vec<serde_json::Value> = bob.expect(Method::GET, "/projects", None, 200).await;
    assert!(listed.is_empty());
    let agents: Vec<serde_json::Value> = bob.expect(Method::GET, "/agents", None, 200).await;
    assert!(agents.is_empty());

    // Alice still has everything, untouched.
    assert_eq!(alice.reveal(s).await.value.expose(), "v");
    let anonymous = ApiClient::new(&app.url(), "stg_not-a-token");
    let (status, json) = anonymous.call(Method::GET, "/projects", None).await;
    assert_eq!(status, 401, "{json}");
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message_and_nothing_is_written() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let (agent, project) = api.shop_project().await;
    let p = project.id;
    let cases = [
        (
            "/projects",
            json!({"name": "Shop!", "agent_id": agent.agent.id, "path": "/srv/x"}),
            400,
            "project name",
        ),
        (
            "/projects",
            json!({"name": "x", "agent_id": agent.agent.id, "path": "relative/dir"}),
            400,
            "absolute",
        ),
        (
            "/projects",
            json!({"name": "x", "agent_id": agent.agent.id, "path": "/srv/x", "compose_file": "../up.yml"}),
            400,
            "inside the project",
        ),
        (
            "/projects",
            json!({"name": "shop", "agent_id": agent.agent.id, "path": "/srv/x"}),
            409,
            "already have a project",
        ),
        (
            "/secrets",
            json!({"project_id": p, "key": "1BAD", "value": "v", "scope": "global"}),
            400,
            "environment variable name",
        ),
        (
            "/secrets",
            json!({"project_id": p, "key": "OK", "value": "v", "scope": {"service": "-web"}}),
            400,
            "service name",
        ),
        (
            "/secrets",
            json!({"project_id": p, "key": "OK", "value": "v", "scope": "everywhere"}),
            400,
            "unknown variant",
        ),
        (
            "/secrets",
            json!({"project_id": p, "key": "BIG", "value": "x".repeat(70_000), "scope": "global"}),
            400,
            "at most 64 KiB",
        ),
        ("/agents", json!({"name": ""}), 400, "1 to 64"),
    ];
    for (path, body, expected, message) in cases {
        let (status, json) = api.call(Method::POST, path, Some(body.clone())).await;
        assert_eq!(status, expected, "{path} {body}: {json}");
        assert_no_internals(&format!("{path} {body}"), &json.to_string());
        let error: ApiError = serde_json::from_value(json).unwrap();
        assert!(
            error.error.message.contains(message),
            "{path} {body}: {}",
            error.error.message
        );
    }
    // Bodies serde or axum refuse, paths that do not parse, a file this server lacks: the
    // answer says what is wrong, in the API's words, and names no type, table or directory.
    let http = reqwest::Client::new();
    let raw_cases: [(Method, String, Option<&str>, u16, &str); 5] = [
        (
            Method::POST,
            "/api/v1/projects".into(),
            Some("\"shop\""),
            400,
            "expected an object",
        ),
        (
            Method::POST,
            "/api/v1/projects".into(),
            Some("{\"name\": "),
            400,
            "EOF",
        ),
        (
            Method::POST,
            "/api/v1/secrets".into(),
            Some("{\"project_id\": 7}"),
            400,
            "invalid type",
        ),
        (
            Method::GET,
            "/api/v1/projects/not-a-uuid".into(),
            None,
            400,
            "UUID",
        ),
        (
            Method::DELETE,
            format!("/api/v1/projects/{p}/x"),
            None,
            404,
            "",
        ),
    ];
    for (method, path, body, expected, message) in raw_cases {
        let mut request = http
            .request(method.clone(), format!("{}{path}", app.url()))
            .bearer_auth(&api.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, expected, "{method} {path} {body:?}: {text}");
        assert!(text.contains(message), "{method} {path} {body:?}: {text}");
        assert_no_internals(&format!("{method} {path} {body:?}"), &text);
        for dir in [
            app.data_dir.path(),
            app.state.config.downloads_dir.as_path(),
        ] {
            let dir = dir.display().to_string();
            assert!(!text.contains(&dir), "{method} {path}: {text} names {dir}");
        }
    }
    let projects: Vec<Project> = api.expect(Method::GET, "/projects", None, 200).await;
    assert_eq!(projects.len(), 1, "a refused project was written");
    assert!(
        api.secrets_of(p).await.is_empty(),
        "a refused secret was written"
    );
}

#[tokio::test]
async fn a_job_for_an_offline_agent_waits_queued_and_runs_once_when_it_connects() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let agent: AgentCreated = api
        .expect(Method::POST, "/agents", Some(json!({"name": "later"})), 201)
        .await;
    let host = HostProject::new(WEB_AND_WORKER).await;
    let project = api.create_project(&agent, &host).await;
    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
        .await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting: Deployment = api
        .expect(
            Method::GET,
            &format!("/deployments/{}", accepted.deployment_id),
            None,
            200,
        )
        .await;
    assert_eq!(waiting.status, DeploymentStatus::Queued);

    let process = AgentProcess::spawn(&app.url(), &agent.token, app.data_dir.path());
    let done = wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(60)).await;
    assert_eq!(
        done.status,
        DeploymentStatus::Succeeded,
        "{:?}",
        done.events
    );
    let received = format!("Received Job {}", waiting.job_id);
    assert_eq!(
        process.log_text().matches(&received).count(),
        1,
        "{}",
        process.log_text()
    );
}

#[tokio::test]
async fn a_server_killed_mid_deploy_leaves_no_deployment_running_after_restart() {
    use crate::helpers::ServerProcess;
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), None).await;
    let address = server.address;
    let api = server.api_user("alice");
    let agent: AgentCreated = api
        .expect(Method::POST, "/agents", Some(json!({"name": "h"})), 201)
        .await;
    let process = AgentProcess::spawn(&server.url(), &agent.token, data.path());
    // Healthy only after 4 s, so the deploy is still running when the server dies.
    let host = HostProject::new(
        r#"services:
  web:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 4; touch /ready; while true; do sleep 1; done"]
    healthcheck:
      test: ["CMD", "test", "-f", "/ready"]
      interval: 1s
      retries: 60
"#,
    )
    .await;
    let project = api.create_project(&agent, &host).await;
    eventually(Duration::from_secs(10), "the agent to connect", || async {
        server.dashboard_shows("h", "Connected").await
    })
    .await;
    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
        .await;
    let path = format!("/deployments/{}", accepted.deployment_id);
    eventually(
        Duration::from_secs(30),
        "the deploy to be running",
        || async {
            let deployment: Deployment = api.expect(Method::GET, &path, None, 200).await;
            deployment.status == DeploymentStatus::Running
        },
    )
    .await;

    let mut server = server;
    server.kill_9().await;
    let server = ServerProcess::start(data.path(), Some(address)).await;
    let client = ApiClient::new(&server.url(), &api.token);
    let finished = tokio::spawn({
        let client = client.clone();
        async move {
            wait_for_deployment(&client, accepted.deployment_id, Duration::from_secs(90)).await
        }
    })
    .await;
    let done = finished.unwrap_or_else(|_| {
        panic!(
            "agent log:\n{}\nserver log:\n{}",
            process.log_text(),
            std::fs::read_to_string(data.path().join("server.log")).unwrap_or_default()
        )
    });
    assert_eq!(
        done.status,
        DeploymentStatus::Succeeded,
        "{:?}",
        done.events
    );
    // The re-sent job and its repeated `Received` never moved the status backwards.
    let statuses: Vec<&str> = done
        .events
        .iter()
        .filter(|e| e.kind == "status")
        .map(|e| e.body.as_str())
        .collect();
    assert_eq!(
        statuses,
        ["queued", "sent", "received", "running", "succeeded"],
        "{statuses:?}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_with_resolvable_schemas() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (status, body) = crate::helpers::http_get(app.address, "/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/agents", "post"),
        ("/join-tokens", "post"),
        ("/projects/{id}", "patch"),
        ("/projects/{id}/secrets", "get"),
        ("/secrets/{id}/reveal", "post"),
        ("/deploy/{project_id}", "post"),
        ("/deployments/{id}", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    let schemas = &doc["components"]["schemas"];
    let project = &schemas["Project"]["properties"];
    for field in [
        "id",
        "name",
        "agent_id",
        "path",
        "compose_file",
        "created_at",
    ] {
        assert!(
            project[field].is_object(),
            "Project.{field} missing: {project}"
        );
    }
    let scope = schemas["SecretScope"].to_string();
    assert!(
        scope.contains("global") && scope.contains("service"),
        "{scope}"
    );

    // Every reference points at a schema the document defines.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().unwrap();
        let name = target.strip_prefix("#/components/schemas/").expect(target);
        assert!(schemas[name].is_object(), "dangling reference {target}");
    }
}

#[tokio::test]
async fn a_service_that_dies_printing_megabytes_fails_the_deploy_with_a_cut_message() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let (agent, process) = api.connected_agent(&app.url(), app.data_dir.path()).await;
    // 50 lines of 64 KiB of quotes, as a service logging escaped JSON prints them, then exit 1.
    // Encoded as JSON the tail Compose hands back is far over the server's 1 MiB frame limit.
    let host = HostProject::new(
        r#"services:
  noisy:
    image: {image}
    command: ["sh", "-c", "for i in $$(seq 50); do head -c 65536 /dev/zero | tr '\\0' '\"'; echo; done; exit 1"]
"#,
    )
    .await;
    let project = api.create_project(&agent, &host).await;

    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
        .await;
    let done = wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(90)).await;

    assert_eq!(
        done.status,
        DeploymentStatus::Failed,
        "agent log:\n{}",
        process.log_text()
    );
    let message = done.message.unwrap_or_default();
    assert!(
        message.starts_with("service noisy exited with code 1"),
        "{}",
        message.chars().take(300).collect::<String>()
    );
    // The end of what the service printed is kept (it says why it failed); what was cut is
    // counted in a marker before it.
    let cut = message
        .split_once("… ")
        .and_then(|(_, rest)| rest.split_once(" bytes cut\n"))
        .map(|(count, _)| count)
        .unwrap_or_default();
    assert!(
        cut.parse::<usize>().is_ok_and(|cut| cut > 0),
        "the message has no cut marker: {}",
        message.chars().take(300).collect::<String>()
    );
    assert!(
        // Encoded, without its quotes.
        serde_json::to_string(&message).unwrap().len() - 2 <= shared::protocol::budget::MESSAGE,
        "the message is larger than its budget"
    );
    let log = process.log_text();
    assert!(
        !log.contains("lost the link") && !log.contains("reconnected"),
        "the agent lost its link:\n{log}"
    );
}

/// What no error body may contain: the database's words, file-system paths, Rust internals.
const INTERNALS: [&str; 19] = [
    "UNIQUE constraint",
    "unique constraint",
    "duplicate key",
    "violates",
    "FOREIGN KEY",
    "sqlx",
    "SQLSTATE",
    "sqlite",
    "postgres",
    "/tmp/",
    "/var/",
    "/work/",
    "/home/",
    ".rs:",
    "panicked",
    "INSERT INTO",
    "SELECT ",
    "expected struct",
    "expected enum",
];

pub fn assert_no_internals(what: &str, body: &str) {
    for internal in INTERNALS {
        assert!(
            !body.contains(internal),
            "{what}: {body} shows {internal:?}"
        );
    }
}

#[tokio::test]
async fn a_conflict_the_database_reports_reaches_the_client_without_its_words() {
    use axum::response::IntoResponse;
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        app.store().create_user("twice", None, false).await.unwrap();
        let error = app
            .store()
            .create_user("twice", None, false)
            .await
            .unwrap_err();
        assert!(
            matches!(error, server::db::DbError::Conflict(_)),
            "{}: {error:?}",
            db.name()
        );
        let response = server::ops::OpError::from(error).into_response();
        assert_eq!(response.status(), 409);
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert_no_internals(db.name(), &body);
        assert!(body.contains("already exists"), "{body}");
        assert!(
            !body.contains("users"),
            "{}: {body} names the table",
            db.name()
        );
    }
}
