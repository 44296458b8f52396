//! A compose project name is a namespace on the agent's host: one agent runs one project per
//! name, whoever owns it, and saying so leaks nothing about the other project.

use crate::helpers::{
    eventually, spawn_app, wait_for_deployment, AgentProcess, ApiClient, HostProject, TestApp,
    TestDb, WEB_AND_WORKER,
};
use reqwest::Method;
use serde_json::json;
use server::db::Store;
use server::token::Token;
use shared::api::{AgentCreated, ApiError, DeployAccepted, DeploymentStatus, Project};
use std::time::Duration;

/// An administrator with an API token: the one kind of person who can put a project on an agent
/// someone else registered.
async fn admin(app: &TestApp, login: &str) -> ApiClient {
    let user = app.store().create_user(login, None, true).await.unwrap();
    let token = Token::generate();
    app.store()
        .create_api_token(user.id, &token.hash())
        .await
        .unwrap();
    ApiClient::new(&app.url(), token.expose())
}

async fn agent(api: &ApiClient, name: &str) -> AgentCreated {
    api.expect(Method::POST, "/agents", Some(json!({ "name": name })), 201)
        .await
}

/// A call that must be refused with 409; returns the message.
async fn conflict(api: &ApiClient, method: Method, path: &str, body: serde_json::Value) -> String {
    let (status, json) = api.call(method.clone(), path, Some(body.clone())).await;
    assert_eq!(status, 409, "{method} {path} {body}: {json}");
    let error: ApiError = serde_json::from_value(json).unwrap();
    assert_eq!(error.error.code, "conflict");
    error.error.message
}

#[tokio::test]
async fn one_agent_runs_one_project_per_name_whoever_owns_it() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, alice) = app.user("alice").await;
        let root = admin(&app, "root").await;
        let host = agent(&alice, "host-1").await;
        let host_id = host.agent.id;
        let shop: Project = alice
            .expect(
                Method::POST,
                "/projects",
                Some(json!({"name": "shop", "agent_id": host_id, "path": "/srv/alice-shop"})),
                201,
            )
            .await;

        // Create: the same name on the same agent, by someone else.
        let message = conflict(
            &root,
            Method::POST,
            "/projects",
            json!({"name": "shop", "agent_id": host_id, "path": "/srv/other"}),
        )
        .await;
        assert_eq!(
            message,
            "agent host-1 already runs a project named shop",
            "{}",
            db.name()
        );
        for private in ["alice", "/srv/alice-shop", &shop.id.to_string()] {
            assert!(!message.contains(private), "{message} leaks {private}");
        }

        // Update: renamed onto the name, or moved onto the agent.
        let blog: Project = root
            .expect(
                Method::POST,
                "/projects",
                Some(json!({"name": "blog", "agent_id": host_id, "path": "/srv/blog"})),
                201,
            )
            .await;
        let path = format!("/projects/{}", blog.id);
        let message = conflict(&root, Method::PATCH, &path, json!({"name": "shop"})).await;
        assert_eq!(message, "agent host-1 already runs a project named shop");
        let elsewhere = agent(&root, "host-2").await;
        let other_shop: Project = root
            .expect(
                Method::POST,
                "/projects",
                Some(json!({"name": "shop", "agent_id": elsewhere.agent.id, "path": "/srv/shop"})),
                201,
            )
            .await;
        let message = conflict(
            &root,
            Method::PATCH,
            &format!("/projects/{}", other_shop.id),
            json!({"agent_id": host_id}),
        )
        .await;
        assert_eq!(message, "agent host-1 already runs a project named shop");

        // Nothing refused was written.
        let roots: Vec<Project> = root.expect(Method::GET, "/projects", None, 200).await;
        let mut placed: Vec<(String, bool)> = roots
            .iter()
            .map(|project| (project.name.to_string(), project.agent_id == host_id))
            .collect();
        placed.sort();
        assert_eq!(
            placed,
            [("blog".to_string(), true), ("shop".to_string(), false)]
        );

        // A person's own names stay unique across their agents, with the message they had.
        let second = agent(&alice, "host-3").await;
        let message = conflict(
            &alice,
            Method::POST,
            "/projects",
            json!({"name": "shop", "agent_id": second.agent.id, "path": "/srv/x"}),
        )
        .await;
        assert_eq!(message, "you already have a project named shop");

        // A project is no conflict with itself.
        let moved: Project = alice
            .expect(
                Method::PATCH,
                &format!("/projects/{}", shop.id),
                Some(json!({"name": "shop", "path": "/srv/shop-v2"})),
                200,
            )
            .await;
        assert_eq!(moved.path.to_string(), "/srv/shop-v2");
    }
}

/// A database as the server before names were unique per agent could leave it: `users`,
/// `agents` and two projects named `shop` on one agent (alice's, then bob's), migrated up to
/// 0005 only.
async fn database_with_a_name_clash(db: &TestDb, dir: &std::path::Path) {
    use sqlx::migrate::Migrator;
    use std::borrow::Cow;

    fn before_0006(mut migrator: Migrator) -> Migrator {
        let earlier: Vec<_> = migrator
            .migrations
            .iter()
            .filter(|migration| migration.version < 6)
            .cloned()
            .collect();
        migrator.migrations = Cow::Owned(earlier);
        migrator
    }
    let rows = [
        "INSERT INTO users (id, login, created_at) VALUES \
         ('00000000-0000-0000-0000-00000000000a', 'alice', 1), \
         ('00000000-0000-0000-0000-00000000000b', 'bob', 1)",
        "INSERT INTO agents (id, owner_id, name, token_hash, created_at) VALUES \
         ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-00000000000a', \
          'host-1', 'hash', 1)",
        "INSERT INTO projects (id, owner_id, agent_id, name, path, created_at) VALUES \
         ('00000000-0000-0000-0000-0000000000f1', '00000000-0000-0000-0000-00000000000a', \
          '00000000-0000-0000-0000-0000000000a1', 'shop', '/srv/alice', 10), \
         ('00000000-0000-0000-0000-0000000000f2', '00000000-0000-0000-0000-00000000000b', \
          '00000000-0000-0000-0000-0000000000a1', 'shop', '/srv/bob', 20)",
    ];
    match db.url() {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            before_0006(sqlx::migrate!("../migrations/postgres"))
                .run(&pool)
                .await
                .unwrap();
            for sql in rows {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        None => {
            use sqlx::sqlite::SqliteConnectOptions;
            let options = SqliteConnectOptions::new()
                .filename(dir.join("stagely.db"))
                .create_if_missing(true)
                .foreign_keys(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            before_0006(sqlx::migrate!("../migrations/sqlite"))
                .run(&pool)
                .await
                .unwrap();
            for sql in rows {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
    }
}

#[tokio::test]
async fn an_existing_name_clash_survives_the_upgrade_and_no_new_one_can_be_made() {
    use server::ops::{projects, OpError};
    use shared::api::{CreateProject, UpdateProject};
    use shared::{ProjectName, ProjectPath};

    for db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        database_with_a_name_clash(&db, dir.path()).await;
        // Starting the server applies 0006 to it.
        let store = Store::connect(db.url(), dir.path())
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", db.name()));
        let alice = store.user_by_login("alice").await.unwrap();
        let bob = store.user_by_login("bob").await.unwrap();
        let alices = store.projects(&alice).await.unwrap();
        let bobs = store.projects(&bob).await.unwrap();
        assert_eq!((alices.len(), bobs.len()), (1, 1), "{}", db.name());
        assert_eq!(
            (alices[0].name.as_str(), bobs[0].name.as_str()),
            ("shop", "shop")
        );
        let (shop, clashing) = (alices[0].clone(), bobs[0].clone());

        // Both keep working: the later one can still be edited without touching its name.
        let edit = UpdateProject {
            path: Some(ProjectPath::parse("/srv/bob-v2").unwrap()),
            ..UpdateProject::default()
        };
        projects::update(&store, &bob, clashing.id, edit)
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", db.name()));

        // No third one, in either the checked way or straight into the table.
        let root = store.create_user("root", None, true).await.unwrap();
        let third = CreateProject {
            name: ProjectName::parse("shop").unwrap(),
            agent_id: shop.agent_id,
            path: Some(ProjectPath::parse("/srv/third").unwrap()),
            compose_file: None,
            source: None,
            pull_policy: Default::default(),
            target: Default::default(),
            secrets_as: Default::default(),
        };
        match projects::create(&store, &root, third.clone()).await {
            Err(OpError::Conflict(message)) => {
                assert_eq!(message, "agent host-1 already runs a project named shop")
            }
            other => panic!("{}: {other:?}", db.name()),
        }
        let unchecked = store.create_project(&root, &third).await;
        assert!(
            matches!(unchecked, Err(server::db::DbError::Conflict(_))),
            "{}: the index let a third one in: {unchecked:?}",
            db.name()
        );
        // Once renamed, the clash is gone for good: renaming back is refused.
        let rename = |name: &str| UpdateProject {
            name: Some(ProjectName::parse(name).unwrap()),
            ..UpdateProject::default()
        };
        projects::update(&store, &bob, clashing.id, rename("bob-shop"))
            .await
            .unwrap();
        let back = projects::update(&store, &bob, clashing.id, rename("shop")).await;
        assert!(
            matches!(&back, Err(OpError::Conflict(message)) if message == "agent host-1 already runs a project named shop"),
            "{}: {back:?}",
            db.name()
        );
        store.close().await;
    }
}

#[tokio::test]
async fn every_container_a_deploy_makes_carries_its_projects_id() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let host = agent(&api, "host-1").await;
    let _process = AgentProcess::spawn(&app.url(), &host.token, app.data_dir.path());
    eventually(Duration::from_secs(10), "the agent to connect", || async {
        app.state.hub.is_connected(host.agent.id)
    })
    .await;
    let compose = HostProject::new(WEB_AND_WORKER).await;
    let body = json!({"name": compose.name, "agent_id": host.agent.id, "path": compose.path()});
    let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;

    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
        .await;
    let done = wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(60)).await;
    assert_eq!(
        done.status,
        DeploymentStatus::Succeeded,
        "{:?}",
        done.events
    );

    let filter = format!("label=com.docker.compose.project={}", compose.name);
    let format = "{{.Label \"dev.stagely.project-id\"}} {{.Label \"dev.stagely.project\"}}";
    let listed = std::process::Command::new("docker")
        .args(["ps", "-a", "--filter", filter.as_str(), "--format", format])
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    let labels: Vec<&str> = listed.lines().collect();
    let expected = format!("{} {}", project.id, compose.name);
    assert_eq!(
        labels,
        [expected.as_str(), expected.as_str()],
        "web and worker"
    );
}

/// Runs `sql` on the app's database, beside the running server.
async fn execute(app: &TestApp, db: &TestDb, sql: &str) {
    match db.url() {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        None => {
            let file = app.data_dir.path().join("stagely.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
                .await
                .unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

#[tokio::test]
async fn a_project_still_sharing_its_name_on_its_agent_streams_no_logs_and_says_to_rename_it() {
    use crate::helpers::http_request;
    use crate::redaction::{agent_link, log_requests, watched};
    use shared::api::CreateProject;
    use shared::{ProjectName, ProjectPath};

    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (alice, alice_api) = app.user("alice").await;
        let (bob, bob_api) = app.user("bob").await;
        let (host, _) = app.add_agent("host-1").await;
        // Alice's `shop`, then Bob's on the same agent, as migration 0006 leaves such a pair:
        // the later one marked and left out of the unique index.
        let new = CreateProject {
            name: ProjectName::parse("shop").unwrap(),
            agent_id: host,
            path: Some(ProjectPath::parse("/srv/alice").unwrap()),
            compose_file: None,
            source: None,
            pull_policy: Default::default(),
            target: Default::default(),
            secrets_as: Default::default(),
        };
        let shop = app.store().create_project(&alice, &new).await.unwrap();
        let clashing = uuid::Uuid::new_v4();
        let sql = format!(
            "INSERT INTO projects (id, owner_id, agent_id, name, path, created_at, legacy_name_clash) \
             VALUES ('{clashing}', '{}', '{host}', 'shop', '/srv/bob', {}, TRUE)",
            bob.id,
            server::db::now_ms()
        );
        execute(&app, &db, &sql).await;

        // The API and the Project page say so, to its owner only.
        let (_, shown) = bob_api
            .call(Method::GET, &format!("/projects/{clashing}"), None)
            .await;
        assert_eq!(shown["name_clash"], true, "{}: {shown}", db.name());
        let (_, shown) = alice_api
            .call(Method::GET, &format!("/projects/{}", shop.id), None)
            .await;
        assert_eq!(shown["name_clash"], false, "{}: {shown}", db.name());
        let page_of = |user: server::db::User, project: String| {
            let app = &app;
            async move {
                let token = Token::generate();
                app.store()
                    .create_session(user.id, &token.hash(), Duration::from_secs(600))
                    .await
                    .unwrap();
                let cookie = format!("{}={}", app.state.config.session_cookie(), token.expose());
                let path = format!("/projects/{project}");
                let page =
                    http_request(app.address, "GET", &path, &[("Cookie", &cookie)], "").await;
                assert_eq!(page.status, 200);
                page.body
            }
        };
        let rename = "Rename this project";
        let page = page_of(bob.clone(), clashing.to_string()).await;
        assert!(page.contains(rename), "{}: {page}", db.name());
        let page = page_of(alice.clone(), shop.id.to_string()).await;
        assert!(!page.contains(rename), "{}", db.name());

        // Both are watched; only the one that owns the name gets a log stream, since
        // `compose logs -p shop` would show the other's containers too.
        let mut link = agent_link(&app, host);
        let _bobs_tab = watched(&bob_api, shared::ProjectId(clashing)).await;
        let _alices_tab = watched(&alice_api, shop.id).await;
        let streams: Vec<String> = log_requests(&mut link)
            .into_iter()
            .map(|request| request.directory)
            .collect();
        assert_eq!(streams, ["/srv/alice"], "{}", db.name());
    }
}
