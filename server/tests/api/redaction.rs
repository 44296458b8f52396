//! Redaction that holds, seen from the server: short values are flagged, a replaced value stays
//! masked in the live logs of containers that still run it, and no form of a value printed by a
//! container is ever stored, logged or sent anywhere by the server.

use crate::helpers::{
    eventually, http_request, spawn_app, wait_for_deployment, AgentProcess, ApiClient, HostProject,
    ServerProcess, TestApp, TestDb,
};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::json;
use shared::api::{
    AgentCreated, AgentStatus, AgentSummary, DashboardEvent, DashboardRequest, DeployAccepted,
    DeploymentStatus, Project, SecretSummary,
};
use shared::ProjectId;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Feed =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Which of a project's secrets, by key, are flagged as not reliably masked.
fn flags(secrets: &[SecretSummary]) -> Vec<(String, bool)> {
    let mut flags: Vec<(String, bool)> = secrets
        .iter()
        .map(|secret| (secret.key.to_string(), secret.weak_redaction))
        .collect();
    flags.sort();
    flags
}

#[tokio::test]
async fn a_value_shorter_than_six_characters_is_flagged_as_not_reliably_masked() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let (_, project) = api.shop_project().await;

    let pin = api.add_secret(project.id, "PIN", "12345").await;
    let token = api.add_secret(project.id, "TOKEN", "123456").await;
    // Five characters in ten bytes: the rule counts what a person typed.
    let word = api.add_secret(project.id, "WORD", "éèêëà").await;
    assert!(pin.weak_redaction, "5 characters are flagged when created");
    assert!(!token.weak_redaction, "6 characters are not");
    assert!(word.weak_redaction, "characters are counted, not bytes");
    assert_eq!(
        flags(&api.secrets_of(project.id).await),
        [
            ("PIN".to_string(), true),
            ("TOKEN".to_string(), false),
            ("WORD".to_string(), true)
        ]
    );

    // A new value brings its own flag.
    let longer: SecretSummary = api
        .expect(
            Method::PATCH,
            &format!("/secrets/{}", pin.id),
            Some(json!({"value": "123456789"})),
            200,
        )
        .await;
    assert!(!longer.weak_redaction);
    let shorter: SecretSummary = api
        .expect(
            Method::PATCH,
            &format!("/secrets/{}", token.id),
            Some(json!({"value": "abc"})),
            200,
        )
        .await;
    assert!(shorter.weak_redaction);
    assert_eq!(
        flags(&api.secrets_of(project.id).await),
        [
            ("PIN".to_string(), false),
            ("TOKEN".to_string(), true),
            ("WORD".to_string(), true)
        ]
    );

    // The REST API names the field, and still never the value.
    let (_, listed) = api
        .call(
            Method::GET,
            &format!("/projects/{}/secrets", project.id),
            None,
        )
        .await;
    let text = listed.to_string();
    assert!(text.contains("\"weak_redaction\":true"), "{text}");
    // As JSON string values: a uuid in the listing may well contain "abc".
    assert!(
        !text.contains("\"abc\"") && !text.contains("éèêëà"),
        "{text}"
    );
}

#[tokio::test]
async fn a_secret_stored_before_the_flag_existed_is_flagged_once_listed() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let (_, project) = api.shop_project().await;
    api.add_secret(project.id, "PIN", "1234").await;
    api.add_secret(project.id, "TOKEN", "long-enough").await;
    // Rows written before the flag was stored have none.
    let url = format!(
        "sqlite://{}",
        app.data_dir.path().join("stagely.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE secrets SET weak_redaction = NULL")
        .execute(&pool)
        .await
        .unwrap();

    for _ in 0..2 {
        assert_eq!(
            flags(&api.secrets_of(project.id).await),
            [("PIN".to_string(), true), ("TOKEN".to_string(), false)]
        );
    }
    let unknown: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM secrets WHERE weak_redaction IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(unknown, 0, "the flag is worked out once, then stored");
    pool.close().await;
}

/// A signed-in dashboard session of `user`, as the `Cookie` header value.
async fn session_of(app: &TestApp, user: &server::db::User) -> String {
    let token = server::token::Token::generate();
    app.store()
        .create_session(user.id, &token.hash(), Duration::from_secs(600))
        .await
        .unwrap();
    format!("{}={}", app.state.config.session_cookie(), token.expose())
}

#[tokio::test]
async fn the_project_page_marks_a_short_secret_as_possibly_unmasked_in_logs() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (alice, api) = app.user("alice").await;
    let (_, project) = api.shop_project().await;
    api.add_secret(project.id, "PIN", "1234").await;
    api.add_secret(project.id, "API_KEY", "long-enough-value")
        .await;

    let cookie = session_of(&app, &alice).await;
    let path = format!("/projects/{}", project.id);
    let page = http_request(app.address, "GET", &path, &[("Cookie", &cookie)], "").await;
    assert_eq!(page.status, 200);
    let row = |key: &str| {
        page.body
            .split("<tr")
            .find(|row| row.contains(&format!("data-secret-key=\"{key}\"")))
            .and_then(|row| row.split("</tr>").next())
            .unwrap_or_else(|| panic!("no row for {key}: {}", page.body))
            .to_string()
    };
    let warning = "may not be masked in logs";
    assert!(row("PIN").contains(warning), "{}", row("PIN"));
    assert!(!row("API_KEY").contains(warning), "{}", row("API_KEY"));
}

async fn deploy(api: &ApiClient, project: ProjectId) -> shared::api::Deployment {
    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{project}"), None, 202)
        .await;
    wait_for_deployment(api, accepted.deployment_id, Duration::from_secs(90)).await
}

/// Opens the live feed with `api`'s token, as a tab would, and watches `project`.
async fn watch(api: &ApiClient, project: ProjectId) -> Feed {
    let url = format!("{}/api/v1/events", api.base.replacen("http", "ws", 1));
    let mut request = url.into_client_request().unwrap();
    let bearer = format!("Bearer {}", api.token);
    request
        .headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (mut feed, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let watch = DashboardRequest::Watch {
        project_id: project,
        resume: None,
    };
    let text = serde_json::to_string(&watch).unwrap();
    feed.send(Message::Text(text.into())).await.unwrap();
    feed
}

/// Reads the feed's container log lines until one satisfies `wanted`; returns every line read.
async fn log_lines_until(feed: &mut Feed, mut wanted: impl FnMut(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let frame = tokio::time::timeout_at(deadline, feed.next())
            .await
            .unwrap_or_else(|_| panic!("no wanted log line within 60 s; saw {seen:#?}"))
            .expect("the feed closed")
            .unwrap();
        let Message::Text(text) = frame else {
            continue;
        };
        if let Ok(DashboardEvent::Logs(logs)) = serde_json::from_str(&text) {
            for line in logs.lines {
                let done = wanted(&line.text);
                seen.push(line.text);
                if done {
                    return seen;
                }
            }
        }
    }
}

/// Prints both secrets every second until stopped.
const PRINTS_ITS_SECRETS: &str = r#"services:
  app:
    image: {image}
    command:
      - sh
      - -c
      - |
        trap 'exit 0' TERM
        while true; do echo "token=$$TOKEN other=$$OTHER"; sleep 1; done
"#;

#[tokio::test]
async fn a_container_still_running_a_replaced_value_has_it_masked_in_the_live_logs() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let (agent, _process) = api.connected_agent(&app.url(), app.data_dir.path()).await;
    let host = HostProject::new(PRINTS_ITS_SECRETS).await;
    let project = api.create_project(&agent, &host).await;
    let token = api
        .add_secret(project.id, "TOKEN", "first-token-value-1f2e")
        .await;
    let other = api
        .add_secret(project.id, "OTHER", "other-value-8d7c")
        .await;
    let deployed = deploy(&api, project.id).await;
    assert_eq!(
        deployed.status,
        DeploymentStatus::Succeeded,
        "{:?}",
        deployed.events
    );

    // The values change on the server; the running container still has the old ones.
    let _: SecretSummary = api
        .expect(
            Method::PATCH,
            &format!("/secrets/{}", token.id),
            Some(json!({"value": "second-token-value-3a4b"})),
            200,
        )
        .await;
    let (status, _) = api
        .call(Method::DELETE, &format!("/secrets/{}", other.id), None)
        .await;
    assert_eq!(status, 204);

    let mut feed = watch(&api, project.id).await;
    let mut printed = 0;
    let lines = log_lines_until(&mut feed, |line| {
        printed += usize::from(line.contains("token="));
        printed >= 3
    })
    .await;
    let leaked: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("first-token-value") || line.contains("other-value-8d7c"))
        .collect();
    assert!(leaked.is_empty(), "an earlier value shows: {leaked:#?}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("token=*** other=***")),
        "{lines:#?}"
    );
    assert_eq!(
        app.store()
            .previous_values_of_project(project.id)
            .await
            .unwrap()
            .len(),
        2,
        "both earlier values are kept while a container may run them"
    );

    // A deploy replaces the containers: from then on only the current values can be running.
    let redeployed = deploy(&api, project.id).await;
    assert_eq!(
        redeployed.status,
        DeploymentStatus::Succeeded,
        "{:?}",
        redeployed.events
    );
    // The new container prints the new value (masked) and no OTHER at all.
    let lines = log_lines_until(&mut feed, |line| line.trim_end() == "token=*** other=").await;
    assert!(
        !lines.iter().any(|line| line.contains("-token-value-")),
        "{lines:#?}"
    );
    assert!(
        app.store()
            .previous_values_of_project(project.id)
            .await
            .unwrap()
            .is_empty(),
        "the earlier values are forgotten once no container can run them"
    );

    // Deleting the project takes whatever it still kept with it.
    let _: SecretSummary = api
        .expect(
            Method::PATCH,
            &format!("/secrets/{}", token.id),
            Some(json!({"value": "third-token-value-5c6d"})),
            200,
        )
        .await;
    assert_eq!(
        app.store()
            .previous_values_of_project(project.id)
            .await
            .unwrap()
            .len(),
        1
    );
    let (status, _) = api
        .call(Method::DELETE, &format!("/projects/{}", project.id), None)
        .await;
    assert_eq!(status, 204);
    assert!(app
        .store()
        .previous_values_of_project(project.id)
        .await
        .unwrap()
        .is_empty());
}

/// A value whose forms (below) all differ: its base64 has both `+` and `/`, and it needs
/// escaping in a URL and in JSON. Its length is a multiple of 3, so base64 has no padding.
const LEAKY: &str = "h\"unter/2+&=?>>>>?";

/// `value` as a program might print it: plainly, in base64 (standard and URL-safe),
/// URL-encoded and escaped inside a JSON string.
fn forms_of(value: &str) -> Vec<(&'static str, String)> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use base64::Engine;
    let url_encoded: String = value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect();
    let json = serde_json::to_string(value).unwrap();
    vec![
        ("plain", value.to_string()),
        ("base64", STANDARD.encode(value)),
        ("base64url", URL_SAFE.encode(value)),
        ("urlencoded", url_encoded),
        ("json", json[1..json.len() - 1].to_string()),
    ]
}

/// A container that prints its secret in every form above, then fails.
fn prints_every_form_and_fails() -> String {
    let mut script = String::from("printf '%s\\n' \"plain: $$LEAKY_PASSWORD\"\n");
    for (name, form) in forms_of(LEAKY).into_iter().skip(1) {
        assert!(!form.contains('\'') && !form.contains('$'), "{name}");
        script.push_str(&format!("printf '%s\\n' '{name}: {form}'\n"));
    }
    script.push_str("exit 3\n");
    let script: String = script
        .lines()
        .map(|line| format!("        {line}\n"))
        .collect();
    format!(
        "services:\n  app:\n    image: {{image}}\n    command:\n      - sh\n      - -c\n      - |\n{script}"
    )
}

/// A user's API client that keeps every response body it receives.
struct Recorder {
    api: ApiClient,
    http: reqwest::Client,
    bodies: Mutex<Vec<String>>,
}

impl Recorder {
    fn new(api: ApiClient) -> Self {
        Self {
            api,
            http: reqwest::Client::new(),
            bodies: Mutex::new(Vec::new()),
        }
    }

    async fn expect<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        expected: u16,
    ) -> T {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/api/v1{path}", self.api.base))
            .bearer_auth(&self.api.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        self.bodies.lock().unwrap().push(text.clone());
        assert_eq!(status, expected, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }
}

/// `text`, and when it is JSON, each string in it as decoded (so an escaped copy counts too).
fn readings_of(text: &str) -> Vec<String> {
    fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::String(text) => out.push(text.clone()),
            serde_json::Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
            serde_json::Value::Object(fields) => {
                fields.values().for_each(|field| strings(field, out))
            }
            _ => {}
        }
    }
    let mut readings = vec![text.to_string()];
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        strings(&value, &mut readings);
    }
    readings
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn no_form_of_a_secret_a_container_prints_is_stored_logged_or_sent_by_the_server() {
    let forms = forms_of(LEAKY);
    for (i, (name, form)) in forms.iter().enumerate() {
        for (other, other_form) in &forms[i + 1..] {
            assert_ne!(form, other_form, "{name} and {other} are the same text");
        }
    }
    for db in TestDb::all().await {
        let data = tempfile::tempdir().unwrap();
        // The user and their API token, written before the server starts.
        let store = server::db::Store::connect(db.url(), data.path())
            .await
            .unwrap();
        let alice = store.create_user("alice", None, false).await.unwrap();
        let token = server::token::Token::generate();
        store
            .create_api_token(alice.id, &token.hash())
            .await
            .unwrap();
        store.close().await;
        let mut env = vec![];
        if let Some(url) = db.url() {
            env.push(("DATABASE_URL", url));
            env.push((
                "APP_MASTER_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ));
        }
        // The server's own log goes to `server.log` in its data directory.
        let server = ServerProcess::start_with(data.path(), None, &env).await;
        let client = ApiClient::new(&server.url(), token.expose());
        let api = Recorder::new(client.clone());

        let agent: AgentCreated = api
            .expect(
                Method::POST,
                "/agents",
                Some(json!({"name": "leak-host"})),
                201,
            )
            .await;
        let _process = AgentProcess::spawn(&server.url(), &agent.token, data.path());
        eventually(Duration::from_secs(10), "the agent to connect", || async {
            let agents: Vec<AgentSummary> = api.expect(Method::GET, "/agents", None, 200).await;
            agents.iter().any(|listed| {
                listed.id == agent.agent.id && listed.status == AgentStatus::Connected
            })
        })
        .await;
        let host = HostProject::new(&prints_every_form_and_fails()).await;
        let body = json!({"name": host.name, "agent_id": agent.agent.id, "path": host.path()});
        let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
        let body = json!({"project_id": project.id, "key": "LEAKY_PASSWORD", "value": LEAKY, "scope": "global"});
        let _: SecretSummary = api.expect(Method::POST, "/secrets", Some(body), 201).await;

        // A tab watches the project and keeps every frame it is sent.
        let frames = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut feed = watch(&client, project.id).await;
        let tab = tokio::spawn({
            let frames = frames.clone();
            async move {
                while let Some(Ok(frame)) = feed.next().await {
                    if let Message::Text(text) = frame {
                        frames.lock().unwrap().push(text.to_string());
                    }
                }
            }
        });
        eventually(
            Duration::from_secs(10),
            "the watch to be answered",
            || async { !frames.lock().unwrap().is_empty() },
        )
        .await;

        let accepted: DeployAccepted = api
            .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
            .await;
        let path = format!("/deployments/{}", accepted.deployment_id);
        let mut deployment: shared::api::Deployment;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            deployment = api.expect(Method::GET, &path, None, 200).await;
            if deployment.status.is_final() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{deployment:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            deployment.status,
            DeploymentStatus::Failed,
            "{deployment:?}"
        );
        let message = deployment.message.clone().unwrap_or_default();
        for (name, _) in &forms {
            assert!(
                message.contains(&format!("{name}: ")),
                "the failure shows the container's last lines: {message}"
            );
        }
        assert!(message.contains("plain: ***"), "{message}");
        eventually(
            Duration::from_secs(10),
            "the tab to see the failure",
            || async {
                frames
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|frame| frame.contains("\"failed\""))
            },
        )
        .await;
        let _: Vec<shared::api::Deployment> = api
            .expect(
                Method::GET,
                &format!("/projects/{}/deployments", project.id),
                None,
                200,
            )
            .await;
        let _: Vec<SecretSummary> = api
            .expect(
                Method::GET,
                &format!("/projects/{}/secrets", project.id),
                None,
                200,
            )
            .await;
        tab.abort();

        // Everything the server stored, logged or sent.
        let mut places: Vec<(String, Vec<u8>)> = Vec::new();
        match &db {
            TestDb::Sqlite => {
                for file in ["stagely.db", "stagely.db-wal", "stagely.db-shm"] {
                    let bytes = std::fs::read(data.path().join(file)).unwrap_or_default();
                    places.push((format!("the database file {file}"), bytes));
                }
            }
            TestDb::Postgres(url) => {
                let dump = std::process::Command::new("pg_dump")
                    .arg(url)
                    .output()
                    .expect("pg_dump runs");
                assert!(
                    dump.status.success(),
                    "{}",
                    String::from_utf8_lossy(&dump.stderr)
                );
                places.push(("the PostgreSQL dump".into(), dump.stdout));
            }
        }
        let log = std::fs::read(data.path().join("server.log")).unwrap();
        assert!(!log.is_empty(), "the server logs to server.log");
        places.push(("the server's log".into(), log));
        for (n, body) in api.bodies.lock().unwrap().iter().enumerate() {
            for reading in readings_of(body) {
                places.push((format!("API response {n}"), reading.into_bytes()));
            }
        }
        let frames = frames.lock().unwrap().clone();
        assert!(frames.len() > 1, "{frames:?}");
        for (n, frame) in frames.iter().enumerate() {
            for reading in readings_of(frame) {
                places.push((format!("live feed frame {n}"), reading.into_bytes()));
            }
        }
        let backend = db.name();
        let leaks: Vec<String> = places
            .iter()
            .flat_map(|(place, bytes)| {
                forms
                    .iter()
                    .filter(|(_, form)| contains(bytes, form))
                    .map(move |(name, _)| format!("{backend}: the {name} form in {place}"))
            })
            .collect();
        assert!(leaks.is_empty(), "{leaks:#?}");
    }
}

#[tokio::test]
async fn a_key_rotation_keeps_replaced_values_maskable_under_the_new_key_alone() {
    use server::crypto::{Keyring, MasterKey};
    use server::ops::secrets;
    use server::vault::Vault;
    use shared::api::{CreateProject, CreateSecret, UpdateSecret};

    let data = tempfile::tempdir().unwrap();
    let store = server::db::Store::connect(None, data.path()).await.unwrap();
    let alice = store.create_user("alice", None, false).await.unwrap();
    let token = server::token::Token::generate();
    let agent = store
        .create_agent("a", &token.hash(), Some(alice.id))
        .await
        .unwrap();
    let new_project: CreateProject =
        serde_json::from_value(json!({"name": "shop", "agent_id": agent.id, "path": "/srv/shop"}))
            .unwrap();
    let project = store.create_project(&alice, &new_project).await.unwrap();
    let (old, new) = (MasterKey::generate(), MasterKey::generate());

    let vault = Vault::new(Keyring::new(old.clone(), None));
    let create: CreateSecret = serde_json::from_value(
        json!({"project_id": project.id, "key": "TOKEN", "value": "first-value", "scope": "global"}),
    )
    .unwrap();
    let secret = secrets::create(&store, &vault, &alice, create)
        .await
        .unwrap();
    let update: UpdateSecret = serde_json::from_value(json!({"value": "second-value"})).unwrap();
    secrets::update(&store, &vault, &alice, secret.id, update)
        .await
        .unwrap();

    let rotating = Vault::new(Keyring::new(new.clone(), Some(old)));
    let done = secrets::rotate_all(&store, &rotating).await.unwrap();
    // The secret, the value it replaced, and its two versions.
    assert_eq!((done.rotated, done.current), (4, 0), "{done:?}");
    let after = Vault::new(Keyring::new(new, None));
    let first = secrets::reveal_version(&store, &after, &alice, secret.id, 1)
        .await
        .unwrap();
    assert_eq!(
        first.value.expose(),
        "first-value",
        "versions open under the new key alone"
    );
    let values = secrets::values_to_redact(&store, &after, project.id)
        .await
        .unwrap();
    let values: Vec<&str> = values.iter().map(|value| value.expose()).collect();
    assert_eq!(values, ["first-value", "second-value"]);
    store.close().await;
}

/// Stands in for `agent`'s connection: whatever the server sends that agent waits in this queue.
pub(crate) fn agent_link(app: &TestApp, agent: shared::AgentId) -> server::hub::Session {
    app.state
        .hub
        .register(agent)
        .expect("the server is running")
}

/// The messages the server queued for the agent so far.
pub(crate) fn sent_to_agent(link: &mut server::hub::Session) -> Vec<shared::ServerToAgent> {
    std::iter::from_fn(|| link.outbound.try_recv().ok())
        .map(|message| *message)
        .collect()
}

/// The log streams the server asked the agent for so far.
pub(crate) fn log_requests(link: &mut server::hub::Session) -> Vec<shared::protocol::StartLogs> {
    sent_to_agent(link)
        .into_iter()
        .filter_map(|message| match message {
            shared::ServerToAgent::StartLogs(request) => Some(request),
            _ => None,
        })
        .collect()
}

/// A tab watching `project` whose watch was answered: whatever the server asks the agent for on
/// its behalf is queued by then.
pub(crate) async fn watched(api: &ApiClient, project: ProjectId) -> Feed {
    let mut feed = watch(api, project).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, feed.next())
            .await
            .expect("the watch is answered within 10 s")
            .expect("the feed closed")
            .unwrap();
        let Message::Text(text) = frame else {
            continue;
        };
        if let Ok(DashboardEvent::Logs(logs)) = serde_json::from_str(&text) {
            if logs.project_id == project {
                return feed;
            }
        }
    }
}

/// Stores a global secret as the server did before a project's secrets were capped.
async fn store_secret(app: &TestApp, project: ProjectId, key: &str, value: &str) {
    let id = shared::SecretId(uuid::Uuid::new_v4());
    let key = shared::EnvKey::parse(key).unwrap();
    let row = server::vault::SecretRow {
        project_id: project,
        secret_id: id,
        key: &key,
    };
    let secret = server::db::StoredSecret {
        id,
        project_id: project,
        ciphertext: app.state.vault.seal(row, &shared::SecretValue::new(value)),
        key,
        scope: shared::SecretScope::Global,
        updated_at: time::OffsetDateTime::now_utc(),
        weak_redaction: Some(false),
        current_version: None,
    };
    app.store().insert_secret(&secret, None).await.unwrap();
}

/// The masked values, as the sorted list of their first `n` characters.
fn prefixes(values: &[shared::SecretValue], n: usize) -> Vec<String> {
    let mut prefixes: Vec<String> = values
        .iter()
        .map(|value| value.expose().chars().take(n).collect())
        .collect();
    prefixes.sort();
    prefixes
}

#[tokio::test]
async fn a_secret_changed_many_times_without_a_deploy_keeps_only_its_latest_values_for_masking() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (agent, project) = api.shop_project().await;
        let mut link = agent_link(&app, agent.agent.id);
        // As large as a value may be, of a control character that JSON spells in six bytes:
        // 46 of them used to make a `StartLogs` larger than the agent reads.
        let value = |n: usize| format!("{n:02}{}", "\u{1}".repeat(64 * 1024 - 2));
        let token = api.add_secret(project.id, "TOKEN", &value(0)).await;
        for n in 1..=45 {
            let _: SecretSummary = api
                .expect(
                    Method::PATCH,
                    &format!("/secrets/{}", token.id),
                    Some(json!({ "value": value(n) })),
                    200,
                )
                .await;
        }
        let kept = app
            .store()
            .previous_values_of_project(project.id)
            .await
            .unwrap();
        assert_eq!(kept.len(), 3, "{}: the three latest are kept", db.name());

        let _tab = watched(&api, project.id).await;
        let requests = log_requests(&mut link);
        assert_eq!(requests.len(), 1, "{}: the logs are streamed", db.name());
        assert_eq!(
            prefixes(&requests[0].redact, 2),
            ["42", "43", "44", "45"],
            "{}: the current value and the three before it are masked",
            db.name()
        );
        let request = shared::ServerToAgent::StartLogs(requests[0].clone());
        let size = serde_json::to_vec(&request).unwrap().len();
        assert!(
            size <= shared::protocol::MAX_FRAME_TO_AGENT_BYTES,
            "{}: {size} bytes",
            db.name()
        );
    }
}

#[tokio::test]
async fn the_values_a_project_replaced_are_kept_within_one_mebibyte_dropping_the_oldest_first() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (_, project) = api.shop_project().await;
        // Twelve secrets of 60,000 bytes each, changed twice: 24 replaced values, 1.44 MB.
        let value = |key: usize, round: usize| {
            let prefix = format!("K{key:02}-v{round}-");
            format!("{prefix}{}", "x".repeat(60_000 - prefix.len()))
        };
        let mut secrets = Vec::new();
        for key in 0..12 {
            let secret = api
                .add_secret(project.id, &format!("K{key:02}"), &value(key, 0))
                .await;
            secrets.push(secret);
        }
        for round in 1..=2 {
            for (key, secret) in secrets.iter().enumerate() {
                let _: SecretSummary = api
                    .expect(
                        Method::PATCH,
                        &format!("/secrets/{}", secret.id),
                        Some(json!({ "value": value(key, round) })),
                        200,
                    )
                    .await;
            }
        }

        let kept = app
            .store()
            .previous_values_of_project(project.id)
            .await
            .unwrap();
        assert_eq!(
            kept.len(),
            17,
            "{}: 17 values of 60,000 bytes fit in 1 MiB, 18 do not",
            db.name()
        );
        let masked =
            server::ops::secrets::values_to_redact(app.store(), &app.state.vault, project.id)
                .await
                .unwrap();
        let masked = prefixes(&masked, 6);
        for key in 0..12 {
            for round in [1, 2] {
                let wanted = format!("K{key:02}-v{round}");
                assert!(
                    masked.contains(&wanted),
                    "{}: {wanted} in {masked:?}",
                    db.name()
                );
            }
        }
        // The first values of the first secrets changed are the oldest: they go first.
        for key in 0..6 {
            let oldest = format!("K{key:02}-v0");
            assert!(
                !masked.contains(&oldest),
                "{}: {oldest} in {masked:?}",
                db.name()
            );
        }
    }
}

#[tokio::test]
async fn a_project_may_hold_at_most_1000_secrets_of_one_mebibyte_together() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let (_, project) = api.shop_project().await;
    let refused = |status: u16, body: serde_json::Value| {
        assert_eq!(status, 400, "{body}");
        let error: shared::api::ApiError = serde_json::from_value(body).unwrap();
        error.error.message
    };

    // Sixteen values as large as a value may be are exactly 1 MiB.
    let large = "v".repeat(64 * 1024);
    let mut secrets = Vec::new();
    for n in 0..16 {
        secrets.push(
            api.add_secret(project.id, &format!("LARGE_{n}"), &large)
                .await,
        );
    }
    let body =
        json!({"project_id": project.id, "key": "ONE_MORE", "value": "x", "scope": "global"});
    let (status, body) = api.call(Method::POST, "/secrets", Some(body)).await;
    assert_eq!(
        refused(status, body),
        "a project's secrets may hold at most 1 MiB together; this one would make it 1048577 bytes"
    );
    // After making room, a change that takes more than it made is refused too.
    let path = format!("/secrets/{}", secrets[0].id);
    let _: SecretSummary = api
        .expect(Method::PATCH, &path, Some(json!({"value": "small"})), 200)
        .await;
    api.add_secret(project.id, "ONE_MORE", "x").await;
    let (status, body) = api
        .call(Method::PATCH, &path, Some(json!({ "value": large })))
        .await;
    assert_eq!(
        refused(status, body),
        "a project's secrets may hold at most 1 MiB together; this one would make it 1048577 bytes"
    );

    // And at most 1,000 of them.
    let body = json!({"name": "many", "agent_id": project.agent_id, "path": "/srv/many"});
    let many: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
    for n in 0..999 {
        store_secret(&app, many.id, &format!("KEY_{n}"), "value").await;
    }
    api.add_secret(many.id, "KEY_999", "value").await;
    let body =
        json!({"project_id": many.id, "key": "KEY_1000", "value": "value", "scope": "global"});
    let (status, body) = api.call(Method::POST, "/secrets", Some(body)).await;
    assert_eq!(
        refused(status, body),
        "a project may have at most 1000 secrets"
    );
}

#[tokio::test]
async fn a_project_whose_secrets_the_agent_could_not_read_in_one_frame_is_refused_with_the_sizes() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let (agent, project) = api.shop_project().await;
        let mut link = agent_link(&app, agent.agent.id);
        // Stored before a project's secrets were capped: 50 values of 64 KiB of a control
        // character, about 19 MiB as JSON.
        for n in 0..50 {
            let value = format!("{n:02}{}", "\u{1}".repeat(64 * 1024 - 2));
            store_secret(&app, project.id, &format!("LARGE_{n}"), &value).await;
        }

        let (status, body) = api
            .call(Method::POST, &format!("/deploy/{}", project.id), None)
            .await;
        assert_eq!(status, 400, "{}: {body}", db.name());
        let error: shared::api::ApiError = serde_json::from_value(body).unwrap();
        let message = error.error.message;
        let limit = shared::protocol::MAX_FRAME_TO_AGENT_BYTES;
        let size: usize = message
            .strip_prefix("the project's secrets are too large to send (")
            .and_then(|rest| rest.strip_suffix(&format!(" bytes, limit {limit})")))
            .unwrap_or_else(|| panic!("{}: {message}", db.name()))
            .parse()
            .unwrap();
        assert!(size > limit, "{}: {message}", db.name());
        let history: Vec<shared::api::Deployment> = api
            .expect(
                Method::GET,
                &format!("/projects/{}/deployments", project.id),
                None,
                200,
            )
            .await;
        assert_eq!(history.len(), 1, "{}", db.name());
        assert_eq!(history[0].status, DeploymentStatus::Failed);
        let said = history[0].message.clone().unwrap_or_default();
        assert!(said.contains(&message), "{}: {said}", db.name());

        // Nor are its logs streamed: the agent would drop the connection over that request.
        let _tab = watched(&api, project.id).await;
        let sent = sent_to_agent(&mut link);
        assert!(
            sent.iter().all(|message| !matches!(
                message,
                shared::ServerToAgent::Deploy(_) | shared::ServerToAgent::StartLogs(_)
            )),
            "{}: {:?}",
            db.name(),
            sent.iter().map(std::mem::discriminant).collect::<Vec<_>>()
        );

        // Its owner can bring it back within the limits: a smaller value is taken, a larger
        // one, or one more secret, is not.
        let secrets = api.secrets_of(project.id).await;
        let path = format!("/secrets/{}", secrets[0].id);
        let _: SecretSummary = api
            .expect(Method::PATCH, &path, Some(json!({"value": "smaller"})), 200)
            .await;
        let (status, _) = api
            .call(Method::PATCH, &path, Some(json!({"value": "larger-again"})))
            .await;
        assert_eq!(status, 400, "{}", db.name());
        let body =
            json!({"project_id": project.id, "key": "MORE", "value": "x", "scope": "global"});
        let (status, _) = api.call(Method::POST, "/secrets", Some(body)).await;
        assert_eq!(status, 400, "{}", db.name());
    }
}

#[tokio::test]
async fn a_replaced_value_that_cannot_be_opened_leaves_the_others_masked_and_the_logs_streaming() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let (agent, project) = api.shop_project().await;
    let mut link = agent_link(&app, agent.agent.id);
    let token = api
        .add_secret(project.id, "TOKEN", "first-value-aaaa")
        .await;
    for value in ["second-value-bbbb", "third-value-cccc"] {
        let _: SecretSummary = api
            .expect(
                Method::PATCH,
                &format!("/secrets/{}", token.id),
                Some(json!({ "value": value })),
                200,
            )
            .await;
    }
    // The oldest kept value's row is modified.
    let kept = app
        .store()
        .previous_values_of_project(project.id)
        .await
        .unwrap();
    assert_eq!(kept.len(), 2);
    let mut tampered = kept[0].ciphertext.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(app
        .store()
        .replace_previous_ciphertext(kept[0].id, &kept[0].ciphertext, &tampered)
        .await
        .unwrap());

    let _tab = watched(&api, project.id).await;
    let requests = log_requests(&mut link);
    assert_eq!(requests.len(), 1, "the logs are still streamed");
    let masked: Vec<&str> = requests[0]
        .redact
        .iter()
        .map(|value| value.expose())
        .collect();
    assert_eq!(masked, ["second-value-bbbb", "third-value-cccc"]);
}
