//! `spawn_app()` and friends: start the real server on `127.0.0.1:0` with a fresh database,
//! register agents, run real `stagely-agent` processes next to it.

use server::config::Config;
use server::db::Store;
use server::token::Token;
use server::AppState;
use shared::AgentId;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Once;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// A fresh, empty database for one test.
pub enum TestDb {
    /// SQLite in the test's data directory.
    Sqlite,
    /// A newly created PostgreSQL database with this URL.
    Postgres(String),
}

impl TestDb {
    /// Every backend this run can test: SQLite, plus PostgreSQL when `TEST_DATABASE_URL` is set.
    pub async fn all() -> Vec<TestDb> {
        let mut backends = vec![TestDb::Sqlite];
        if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
            backends.push(TestDb::Postgres(fresh_postgres_database(&url).await));
        }
        backends
    }

    /// A fresh PostgreSQL database when `TEST_DATABASE_URL` is set.
    pub async fn postgres() -> Option<TestDb> {
        let url = std::env::var("TEST_DATABASE_URL").ok()?;
        Some(TestDb::Postgres(fresh_postgres_database(&url).await))
    }

    pub fn url(&self) -> Option<&str> {
        match self {
            TestDb::Sqlite => None,
            TestDb::Postgres(url) => Some(url),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            TestDb::Sqlite => "sqlite",
            TestDb::Postgres(_) => "postgres",
        }
    }
}

/// Creates `stagely_test_<random>` on the server `TEST_DATABASE_URL` points to.
async fn fresh_postgres_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("stagely_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("TEST_DATABASE_URL must point to a reachable PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("creating a test database");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("TEST_DATABASE_URL ends with /<database>");
    format!("{base}/{name}")
}

pub fn init_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            tracing_subscriber::fmt()
                .with_env_filter("info,sqlx=warn")
                .with_test_writer()
                .init();
        }
    });
}

/// The server running inside this test process.
pub struct TestApp {
    pub address: SocketAddr,
    pub state: AppState,
    pub data_dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

pub struct AppOptions {
    pub heartbeat_secs: u64,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self { heartbeat_secs: 30 }
    }
}

pub async fn spawn_app(db: &TestDb) -> TestApp {
    spawn_app_with(db, AppOptions::default()).await
}

pub async fn spawn_app_with(db: &TestDb, options: AppOptions) -> TestApp {
    spawn_app_with_env(db, options, &[]).await
}

/// [`spawn_app_with`], with more settings for the server's config (`STAGELY_NOTIFY_*`, …).
pub async fn spawn_app_with_env(db: &TestDb, options: AppOptions, env: &[(&str, &str)]) -> TestApp {
    init_logs();
    let data_dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut vars = vec![
        ("STAGELY_BIND", address.to_string()),
        ("STAGELY_DATA_DIR", data_dir.path().display().to_string()),
        ("STAGELY_HEARTBEAT_SECS", options.heartbeat_secs.to_string()),
        ("DATABASE_URL", db.url().unwrap_or_default().to_string()),
    ];
    vars.extend(env.iter().map(|(name, value)| (*name, value.to_string())));
    let config = Config::from_lookup(|name| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    })
    .unwrap();
    // The binaries scripts/build-agent.sh built, unless the test names another directory.
    let downloads = if env.iter().any(|(name, _)| *name == "STAGELY_DOWNLOADS_DIR") {
        config.downloads_dir.clone()
    } else {
        downloads_dir()
    };
    let config = Config {
        downloads_dir: downloads,
        master_key: db
            .url()
            .map(|_| "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into()),
        ..config
    };
    let state = AppState::build(config).await.expect("building the app");
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn({
        let state = state.clone();
        async move {
            let shutdown = async move {
                let _ = shutdown_rx.await;
            };
            server::run(listener, state, shutdown)
                .await
                .expect("server failed");
        }
    });
    TestApp {
        address,
        state,
        data_dir,
        shutdown: Some(shutdown_tx),
        server,
    }
}

impl TestApp {
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn stream_url(&self) -> String {
        format!("ws://{}/api/v1/stream", self.address)
    }

    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Registers an agent the way `stagely-server agents add` does.
    pub async fn add_agent(&self, name: &str) -> (AgentId, Token) {
        let token = Token::generate();
        let agent = self
            .store()
            .create_agent(name, &token.hash(), None)
            .await
            .unwrap();
        (agent.id, token)
    }

    /// Registers an agent, starts a real agent process for it and waits until it is connected.
    pub async fn connected_agent(&self, name: &str) -> (AgentId, Token, AgentProcess) {
        let (agent_id, token) = self.add_agent(name).await;
        let agent = AgentProcess::spawn(&self.url(), token.expose(), self.data_dir.path());
        eventually(Duration::from_secs(10), "the agent to connect", || async {
            self.state.hub.is_connected(agent_id)
        })
        .await;
        (agent_id, token, agent)
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = http_get(self.address, path).await;
        (response.0, response.1)
    }

    /// A dashboard page as a signed-in admin's browser gets it.
    pub async fn get_page(&self, path: &str) -> (u16, String) {
        let cookie = self.admin_session("page-reader").await;
        let response = http_request(self.address, "GET", path, &[("Cookie", &cookie)], "").await;
        (response.status, response.body)
    }

    /// Stops the server gracefully and waits for it; the data directory outlives it.
    pub async fn stop(self) -> TempDir {
        let TestApp {
            shutdown,
            server,
            data_dir,
            ..
        } = self;
        if let Some(shutdown) = shutdown {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server did not shut down within 10 s")
            .unwrap();
        data_dir
    }
}

/// A minimal HTTP/1.0 GET over a raw socket (no chunked encoding to undo), so tests need no HTTP client crate.
pub async fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let response = http_request(address, "GET", path, &[], "").await;
    (response.status, response.body)
}

/// An HTTP answer as a browser would see it, before following any redirect.
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// `name=value` of the cookie the response sets, without its attributes.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            let pair = value.trim().split(';').next()?;
            (key.trim().eq_ignore_ascii_case("set-cookie") && pair.starts_with(&format!("{name}=")))
                .then(|| pair.to_string())
        })
    }
}

/// One raw HTTP/1.0 request, so redirects and cookies can be checked one step at a time.
pub async fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {address}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    RawResponse {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// Where `scripts/build-agent.sh` puts the static agent the server hands to new hosts.
pub fn downloads_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/downloads")
}

/// A real `stagely-agent` process; killed when dropped.
pub struct AgentProcess {
    child: tokio::process::Child,
    pub log: PathBuf,
}

/// The agent binary cargo built next to the server binary.
pub fn agent_binary() -> PathBuf {
    let server = Path::new(env!("CARGO_BIN_EXE_stagely-server"));
    let agent = server.with_file_name("stagely-agent");
    assert!(
        agent.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p agent` first)",
        agent.display()
    );
    agent
}

impl AgentProcess {
    /// An agent with its token in its environment (`STAGELY_AGENT_TOKEN`).
    pub fn spawn(server_url: &str, token: &str, log_dir: &Path) -> Self {
        Self::spawn_with(
            &["--server", server_url],
            &[("STAGELY_AGENT_TOKEN", token)],
            log_dir,
        )
    }

    /// An agent started with `args` and `env` (and a state directory in `log_dir`).
    pub fn spawn_with(args: &[&str], env: &[(&str, &str)], log_dir: &Path) -> Self {
        let log = log_dir.join(format!("agent-{}.log", uuid::Uuid::new_v4().simple()));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(agent_binary())
            .args(args)
            .envs(env.iter().copied())
            .env("STAGELY_STATE_DIR", log_dir.join("agent-state"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("starting stagely-agent");
        Self { child, log }
    }

    /// SIGKILL: the agent gets no chance to say goodbye.
    pub async fn kill_9(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process has ended (it refused to start, or crashed).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Polls `check` every 50 ms until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A real `stagely-server` process, for tests about processes (kill -9, restart).
pub struct ServerProcess {
    child: tokio::process::Child,
    pub address: SocketAddr,
    data_dir: PathBuf,
}

impl ServerProcess {
    /// Starts the server on `address` (or a free loopback port) with SQLite in `data_dir`, and
    /// waits until `/healthz` answers.
    pub async fn start(data_dir: &Path, address: Option<SocketAddr>) -> Self {
        Self::start_with(data_dir, address, &[]).await
    }

    /// Like [`start`](Self::start), with extra environment variables.
    pub async fn start_with(
        data_dir: &Path,
        address: Option<SocketAddr>,
        env: &[(&str, &str)],
    ) -> Self {
        let address = match address {
            Some(address) => address,
            None => {
                let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                probe.local_addr().unwrap()
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stagely-server"))
            .envs(env.iter().copied())
            .env("STAGELY_BIND", address.to_string())
            .env("STAGELY_DATA_DIR", data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting stagely-server");
        let server = Self {
            child,
            address,
            data_dir: data_dir.to_path_buf(),
        };
        eventually(
            Duration::from_secs(20),
            "the server to answer /healthz",
            || async {
                tokio::net::TcpStream::connect(address).await.is_ok()
                    && http_get(address, "/healthz").await.0 == 200
            },
        )
        .await;
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The server's process id, to read its memory from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Runs the admin CLI (`stagely-server <args>`) against the same data directory, as an
    /// operator would, and returns what it printed on stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_stagely-server"))
            .args(args)
            .env("STAGELY_DATA_DIR", &self.data_dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// `stagely-server agents add <name>`: the new agent's token.
    pub fn add_agent(&self, name: &str) -> String {
        self.cli(&["agents", "add", name])
    }

    /// Creates a user and an API token with the admin CLI, as an operator would.
    pub fn api_user(&self, login: &str) -> ApiClient {
        self.cli(&["users", "add", login]);
        let token = self.cli(&["tokens", "create", login]);
        ApiClient::new(&self.url(), &token)
    }

    /// Whether the server-rendered dashboard lists `name` with `status`.
    pub async fn dashboard_shows(&self, name: &str, status: &str) -> bool {
        let cookie = self.sign_in_admin().await;
        let page = http_request(self.address, "GET", "/", &[("Cookie", &cookie)], "").await;
        page.status == 200
            && dashboard_row(&page.body, name)
                .is_some_and(|row| row.contains(&format!(">{status}<")))
    }

    /// Signs in through the login form as an admin the CLI created (once per data directory),
    /// and returns the session cookie.
    pub async fn sign_in_admin(&self) -> String {
        let password_file = self.data_dir.join("admin-password");
        if !password_file.exists() {
            std::fs::write(&password_file, "page-reader-password").unwrap();
            let args = ["users", "add", "page-reader", "--admin", "--password-file"];
            self.cli(&[&args[..], &[password_file.to_str().unwrap()]].concat());
        }
        let form = "login=page-reader&password=page-reader-password";
        http_request(self.address, "POST", "/auth/login", &[], form)
            .await
            .cookie("stagely_session")
            .unwrap_or_default()
    }

    pub async fn kill_9(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM, as a service manager stops it, then waits (up to 30 s) for it to exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("the server is running") as libc::pid_t;
        // SAFETY: sends a signal to our own child process, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the server did not exit within 30 s of SIGTERM")
            .unwrap()
    }
}

/// The HTML of the dashboard table row that names `name`.
pub fn dashboard_row<'a>(html: &'a str, name: &str) -> Option<&'a str> {
    html.split("<tr")
        .find(|row| row.contains(&format!(">{name}<")))
}

/// A TCP relay between agents and the server that a test can cut and restore, to play a
/// network blip: cutting drops every relayed connection and refuses new ones until restored.
pub struct Relay {
    pub address: SocketAddr,
    state: std::sync::Arc<RelayState>,
}

struct RelayState {
    up: std::sync::atomic::AtomicBool,
    connections: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = std::sync::Arc::new(RelayState {
            up: std::sync::atomic::AtomicBool::new(true),
            connections: std::sync::Mutex::new(Vec::new()),
        });
        let accept_state = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_state.up.load(Ordering::SeqCst) {
                    drop(inbound); // refused: the link is down
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accept_state.connections.lock().unwrap().push(task);
            }
        });
        Self { address, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Drops every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.state
            .up
            .store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.state.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.state
            .up
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A user's view of the REST API: every call carries their API token.
#[derive(Clone)]
pub struct ApiClient {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// The same client, sending `cookie` with every call (e.g. a load balancer's stickiness
    /// cookie).
    pub fn with_cookie(mut self, cookie: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::COOKIE, cookie.parse().unwrap());
        self.http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        self
    }

    /// Sends a request and returns the status and the JSON body (`null` when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        (status, json)
    }

    /// Registers an agent (without running it) and a project `shop` in `/srv/shop` on it.
    pub async fn shop_project(&self) -> (shared::api::AgentCreated, shared::api::Project) {
        let body = serde_json::json!({"name": "a"});
        let agent: shared::api::AgentCreated = self
            .expect(reqwest::Method::POST, "/agents", Some(body), 201)
            .await;
        let body =
            serde_json::json!({"name": "shop", "agent_id": agent.agent.id, "path": "/srv/shop"});
        let project = self
            .expect(reqwest::Method::POST, "/projects", Some(body), 201)
            .await;
        (agent, project)
    }

    /// Registers an agent (`host-1`) through the API, starts a real agent process with its token
    /// against the server at `base` (logging into `log_dir`) and waits until the API lists it
    /// Connected.
    pub async fn connected_agent(
        &self,
        base: &str,
        log_dir: &Path,
    ) -> (shared::api::AgentCreated, AgentProcess) {
        let body = serde_json::json!({"name": "host-1"});
        let created: shared::api::AgentCreated = self
            .expect(reqwest::Method::POST, "/agents", Some(body), 201)
            .await;
        let agent = AgentProcess::spawn(base, &created.token, log_dir);
        let id = created.agent.id;
        eventually(Duration::from_secs(10), "the agent to connect", || async {
            let agents: Vec<shared::api::AgentSummary> = self
                .expect(reqwest::Method::GET, "/agents", None, 200)
                .await;
            agents
                .iter()
                .any(|agent| agent.id == id && agent.status == shared::api::AgentStatus::Connected)
        })
        .await;
        (created, agent)
    }

    /// Creates the project of a [`HostProject`] on `agent`.
    pub async fn create_project(
        &self,
        agent: &shared::api::AgentCreated,
        host: &HostProject,
    ) -> shared::api::Project {
        let body =
            serde_json::json!({"name": host.name, "agent_id": agent.agent.id, "path": host.path()});
        self.expect(reqwest::Method::POST, "/projects", Some(body), 201)
            .await
    }

    /// A project's secrets as listed (values masked).
    pub async fn secrets_of(&self, project: shared::ProjectId) -> Vec<shared::api::SecretSummary> {
        let path = format!("/projects/{project}/secrets");
        self.expect(reqwest::Method::GET, &path, None, 200).await
    }

    /// Reveals a secret's value (recorded in the audit trail).
    pub async fn reveal(&self, secret: shared::SecretId) -> shared::api::RevealedSecret {
        let path = format!("/secrets/{secret}/reveal");
        self.expect(reqwest::Method::POST, &path, None, 200).await
    }

    /// Adds a global secret to a project.
    pub async fn add_secret(
        &self,
        project: shared::ProjectId,
        key: &str,
        value: &str,
    ) -> shared::api::SecretSummary {
        let body = serde_json::json!({"project_id": project, "key": key, "value": value, "scope": "global"});
        self.expect(reqwest::Method::POST, "/secrets", Some(body), 201)
            .await
    }

    /// A call that must answer `expected`, decoded into `T`.
    pub async fn expect<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        expected: u16,
    ) -> T {
        let (status, json) = self.call(method.clone(), path, body).await;
        assert_eq!(status, expected, "{method} {path}: {json}");
        serde_json::from_value(json).unwrap()
    }
}

impl TestApp {
    /// Creates a user with an API token, as `stagely-server users add` + `tokens create` do.
    /// A signed-in dashboard session of a new admin, as the `Cookie` header value.
    pub async fn admin_session(&self, login: &str) -> String {
        let user = self.store().create_user(login, None, true).await.unwrap();
        let token = Token::generate();
        self.store()
            .create_session(user.id, &token.hash(), std::time::Duration::from_secs(600))
            .await
            .unwrap();
        format!("{}={}", self.state.config.session_cookie(), token.expose())
    }

    pub async fn user(&self, login: &str) -> (server::db::User, ApiClient) {
        let user = self.store().create_user(login, None, false).await.unwrap();
        let token = Token::generate();
        self.store()
            .create_api_token(user.id, &token.hash())
            .await
            .unwrap();
        (user, ApiClient::new(&self.url(), token.expose()))
    }
}

/// A compose project on this host for deploy tests; its containers are removed on drop.
pub struct HostProject {
    pub name: String,
    pub dir: TempDir,
}

impl HostProject {
    /// Writes `compose.yaml` (`{image}` becomes the locally built test image).
    pub async fn new(compose_yaml: &str) -> Self {
        let image = agent::testing::test_image().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("compose.yaml"),
            compose_yaml.replace("{image}", image),
        )
        .unwrap();
        let name = format!(
            "stagely-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Self { name, dir }
    }

    pub fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    pub async fn env(&self, service: &str) -> Vec<String> {
        agent::testing::container_env(&self.name, service).await
    }
}

impl Drop for HostProject {
    fn drop(&mut self) {
        agent::testing::remove_project(&self.name);
    }
}

/// Two services that idle until stopped.
pub use agent::testing::TWO_IDLE_SERVICES as WEB_AND_WORKER;

/// Polls a deployment until it is final; returns it.
pub async fn wait_for_deployment(
    api: &ApiClient,
    id: shared::DeploymentId,
    timeout: Duration,
) -> shared::api::Deployment {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let deployment: shared::api::Deployment = api
            .expect(
                reqwest::Method::GET,
                &format!("/deployments/{id}"),
                None,
                200,
            )
            .await;
        if deployment.status.is_final() {
            return deployment;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deployment still {:?} after {timeout:?}: {:?}",
            deployment.status,
            deployment.events
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A WebSocket as a test drives it by hand (a hostile or fake agent, a browser tab).
pub type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the agent stream at `url` with `token`, without saying hello.
pub async fn raw_agent(url: &str, token: &str) -> RawSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// Sends one agent frame.
pub async fn send_frame(socket: &mut RawSocket, frame: &shared::AgentToServer) {
    use futures_util::SinkExt;
    let text = serde_json::to_string(frame).unwrap();
    socket
        .send(tokio_tungstenite::tungstenite::Message::text(text))
        .await
        .unwrap();
}

/// Says hello with `protocol_version` and returns the server's answer.
pub async fn hello(socket: &mut RawSocket, protocol_version: u32) -> shared::ServerToAgent {
    let hello = shared::AgentToServer::Hello(shared::protocol::Hello {
        protocol_version,
        agent_version: "test".into(),
        hostname: "test-host".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        docker_version: None,
        compose_version: None,
    });
    send_frame(socket, &hello).await;
    next_message(socket).await
}

/// Says hello on `socket` as an agent of `version` and waits for the welcome.
pub async fn hello_as(socket: &mut RawSocket, version: &str) {
    let hello = shared::AgentToServer::Hello(shared::protocol::Hello {
        protocol_version: shared::protocol::PROTOCOL_VERSION,
        agent_version: version.into(),
        hostname: "old-host".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        docker_version: None,
        compose_version: None,
    });
    send_frame(socket, &hello).await;
    let answer = next_message(socket).await;
    assert!(
        matches!(answer, shared::ServerToAgent::Welcome(_)),
        "{answer:?}"
    );
}

/// Waits until no agent of `api`'s person is connected (a dropped raw socket's session ended).
pub async fn no_agent_connected(api: &ApiClient) {
    eventually(
        Duration::from_secs(10),
        "the old session to end",
        || async {
            let agents: Vec<shared::api::AgentSummary> =
                api.expect(reqwest::Method::GET, "/agents", None, 200).await;
            agents
                .iter()
                .all(|agent| agent.status != shared::api::AgentStatus::Connected)
        },
    )
    .await;
}

/// The next message the server sends an agent socket (within 10 s).
pub async fn next_message(socket: &mut RawSocket) -> shared::ServerToAgent {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no message")
            .unwrap()
            .unwrap()
        {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => continue,
        }
    }
}

impl TestApp {
    /// Stores a deploy of `project` requested by `user`, as the Deploy button does, without
    /// sending it anywhere.
    pub async fn queue_deploy(
        &self,
        project: shared::ProjectId,
        user: shared::UserId,
    ) -> (shared::DeploymentId, shared::JobId) {
        self.store()
            .create_job(&server::db::NewJob {
                project,
                agent: self.store().project_by_id(project).await.unwrap().agent_id,
                created_at: server::db::now_ms(),
                requested_by: user,
                kind: shared::runtime::JobKind::Deploy,
                service: None,
                remove_volumes: false,
                redeploy_of: None,
                secrets: Vec::new(),
            })
            .await
            .unwrap()
    }

    /// A dashboard tab's live feed (`/api/v1/events`) for `user`, signed in with a session.
    pub async fn feed(&self, user: &server::db::User) -> RawSocket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let session = Token::generate();
        self.store()
            .create_session(user.id, &session.hash(), Duration::from_secs(600))
            .await
            .unwrap();
        let mut request = format!("ws://{}/api/v1/events", self.address)
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("origin", self.url().parse().unwrap());
        let cookie = format!(
            "{}={}",
            self.state.config.session_cookie(),
            session.expose()
        );
        headers.insert("cookie", cookie.parse().unwrap());
        tokio_tungstenite::connect_async(request).await.unwrap().0
    }
}

/// Whether a dashboard feed is closed by the server within `timeout` (what it sends before is
/// read and dropped).
pub async fn closes_within(feed: &mut RawSocket, timeout: Duration) -> bool {
    use futures_util::StreamExt;
    tokio::time::timeout(timeout, async {
        loop {
            match feed.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// The next event a dashboard feed sends, within `timeout`; `None` if none came.
pub async fn next_event_within(
    feed: &mut RawSocket,
    timeout: Duration,
) -> Option<shared::api::DashboardEvent> {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let frame = tokio::time::timeout_at(deadline, feed.next()).await.ok()?;
        let frame = frame.expect("the feed closed").unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            return Some(serde_json::from_str(&text).unwrap());
        }
    }
}

/// The next event a dashboard feed sends (within 10 s).
pub async fn next_event(feed: &mut RawSocket) -> shared::api::DashboardEvent {
    next_event_within(feed, Duration::from_secs(10))
        .await
        .expect("no event within 10 s")
}
