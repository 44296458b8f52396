//! Several replicas on one PostgreSQL (README, "Running several replicas"): real server
//! processes behind a real HAProxy (`deploy/haproxy.cfg`, as shipped), a real agent, a real
//! Docker deploy. The agent and the person are pinned to different replicas: the balancer's
//! stickiness cookie sends the person's calls and live feed to one, and the agent reaches
//! another because that one was the only replica up when it connected.
//!
//! These run only with `TEST_DATABASE_URL` (several replicas need PostgreSQL); without it each
//! says so and passes.

use crate::helpers::{
    eventually, next_event_within, spawn_app, wait_for_deployment, AgentProcess, ApiClient,
    HostProject, RawSocket, ServerProcess, TestDb,
};
use futures_util::SinkExt;
use reqwest::Method;
use shared::api::{
    AgentStatus, AgentSummary, DashboardEvent, DashboardRequest, DeployAccepted, Deployment,
    DeploymentStatus, EventKind, Project,
};
use shared::{DeploymentId, ProjectId};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tempfile::TempDir;

const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A deploy that takes a few seconds (its health check passes after ~4 s) and whose service
/// writes a numbered line every 200 ms.
const SLOW_AND_CHATTY: &str = r#"services:
  web:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 4; touch /ready; i=0; while true; do i=$$((i+1)); echo line-$$i; sleep 0.2; done"]
    healthcheck:
      test: ["CMD-SHELL", "[ -f /ready ]"]
      interval: 1s
      retries: 30
"#;

fn free_address() -> SocketAddr {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

/// Three replica addresses, HAProxy in front of them and the shared database.
struct Cluster {
    database_url: String,
    dir: TempDir,
    addresses: [SocketAddr; 3],
    replicas: [Option<ServerProcess>; 3],
    balancer: SocketAddr,
    _haproxy: tokio::process::Child,
}

impl Cluster {
    /// HAProxy on a free port with the shipped config; no replica runs yet.
    async fn new(db: &TestDb) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addresses = [free_address(), free_address(), free_address()];
        let balancer = free_address();
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let haproxy = tokio::process::Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
            .env("STAGELY_LB_BIND", balancer.to_string())
            .env("STAGELY_REPLICA_1", addresses[0].to_string())
            .env("STAGELY_REPLICA_2", addresses[1].to_string())
            .env("STAGELY_REPLICA_3", addresses[2].to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting haproxy (Debian package haproxy; scripts/test.sh installs it)");
        eventually(Duration::from_secs(10), "HAProxy to listen", || async {
            tokio::net::TcpStream::connect(balancer).await.is_ok()
        })
        .await;
        Self {
            database_url: db.url().unwrap().to_string(),
            dir,
            addresses,
            replicas: [None, None, None],
            balancer,
            _haproxy: haproxy,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.balancer)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("APP_MASTER_KEY", MASTER_KEY.to_string()),
            ("STAGELY_PUBLIC_URL", self.url()),
            ("STAGELY_HEARTBEAT_SECS", "2".to_string()),
        ]
    }

    fn data_dir(&self, replica: usize) -> PathBuf {
        let dir = self.dir.path().join(format!("r{}", replica + 1));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Starts replica `i` (0-based) and waits until HAProxy sends its cookie's calls to it.
    async fn start(&mut self, i: usize) {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let server =
            ServerProcess::start_with(&self.data_dir(i), Some(self.addresses[i]), &env).await;
        self.replicas[i] = Some(server);
        let name = format!("r{}", i + 1);
        let http = reqwest::Client::new();
        let url = format!("{}/healthz", self.url());
        eventually(
            Duration::from_secs(15),
            "HAProxy to see the replica up",
            || async {
                let answer = http
                    .get(&url)
                    .header("cookie", format!("stagely_replica={name}"))
                    .send()
                    .await;
                answer.is_ok_and(|answer| {
                    answer
                        .headers()
                        .get("x-stagely-replica")
                        .is_some_and(|served_by| served_by == name.as_str())
                })
            },
        )
        .await;
    }

    fn replica(&mut self, i: usize) -> &mut ServerProcess {
        self.replicas[i].as_mut().expect("that replica runs")
    }

    /// The admin CLI against the shared database.
    fn cli(&self, args: &[&str]) -> String {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_stagely-server"))
            .args(args)
            .envs(self.env())
            .env("STAGELY_DATA_DIR", self.dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// A person's API client, through HAProxy, pinned to replica `i` by its cookie.
    fn person_on(&self, i: usize) -> ApiClient {
        self.cli(&["users", "add", "alice"]);
        let token = self.cli(&["tokens", "create", "alice"]);
        ApiClient::new(&self.url(), &token).with_cookie(&format!("stagely_replica=r{}", i + 1))
    }

    /// A dashboard tab's live feed through HAProxy, pinned to the same replica as `api`.
    async fn feed(&self, api: &ApiClient, cookie_replica: usize) -> RawSocket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/api/v1/events", self.balancer)
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert(
            "authorization",
            format!("Bearer {}", api.token).parse().unwrap(),
        );
        headers.insert(
            "cookie",
            format!("stagely_replica=r{}", cookie_replica + 1)
                .parse()
                .unwrap(),
        );
        tokio_tungstenite::connect_async(request).await.unwrap().0
    }

    /// The replica log lines that say which agent connected, for failure messages.
    fn logs(&self) -> String {
        (0..3)
            .map(|i| {
                let log = self.data_dir(i).join("server.log");
                format!(
                    "--- r{} ---\n{}",
                    i + 1,
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A store on a fresh PostgreSQL database (and the data directory it needs), as a replica
/// has.
async fn postgres_store() -> (TestDb, TempDir, server::db::Store) {
    let db = TestDb::postgres().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = server::db::Store::connect(db.url(), dir.path())
        .await
        .unwrap();
    (db, dir, store)
}

fn skip() -> bool {
    if std::env::var("TEST_DATABASE_URL").is_err() {
        eprintln!(
            "skipped: several replicas need PostgreSQL; set TEST_DATABASE_URL to run this test"
        );
        return true;
    }
    false
}

/// Registers an agent through the API and starts it against the balancer; waits until the
/// person's replica lists it connected.
async fn agent_through(
    cluster: &Cluster,
    api: &ApiClient,
) -> (shared::api::AgentCreated, AgentProcess) {
    let body = serde_json::json!({"name": "host-1"});
    let created: shared::api::AgentCreated =
        api.expect(Method::POST, "/agents", Some(body), 201).await;
    let agent = AgentProcess::spawn(&cluster.url(), &created.token, cluster.dir.path());
    let id = created.agent.id;
    eventually(
        Duration::from_secs(20),
        "the agent to show connected",
        || async {
            let agents: Vec<AgentSummary> = api.expect(Method::GET, "/agents", None, 200).await;
            agents
                .iter()
                .any(|agent| agent.id == id && agent.status == AgentStatus::Connected)
        },
    )
    .await;
    (created, agent)
}

/// Starts watching `project` on a feed and returns the first (replay) message.
async fn watch(feed: &mut RawSocket, project: ProjectId) {
    let watch = DashboardRequest::Watch {
        project_id: project,
        resume: None,
    };
    feed.send(tokio_tungstenite::tungstenite::Message::Text(
        serde_json::to_string(&watch).unwrap().into(),
    ))
    .await
    .unwrap();
}

/// What a tab saw of one deployment and of the project's container logs.
#[derive(Default)]
struct Seen {
    statuses: Vec<DeploymentStatus>,
    events: Vec<shared::api::DeploymentEvent>,
    log_lines: Vec<String>,
}

impl Seen {
    fn take(&mut self, deployment: DeploymentId, event: DashboardEvent) {
        match event {
            DashboardEvent::DeploymentStatus {
                deployment_id,
                status,
                ..
            } if deployment_id == deployment => self.statuses.push(status),
            DashboardEvent::DeploymentEvent {
                deployment_id,
                event,
            } if deployment_id == deployment => self.events.push(event),
            DashboardEvent::Logs(lines) => self
                .log_lines
                .extend(lines.lines.into_iter().map(|line| line.text)),
            _ => {}
        }
    }

    fn finals(&self) -> usize {
        self.statuses.iter().filter(|s| s.is_final()).count()
    }
}

/// Reads the feed until `done` holds (or `timeout`).
async fn follow(
    feed: &mut RawSocket,
    seen: &mut Seen,
    deployment: DeploymentId,
    timeout: Duration,
    done: impl Fn(&Seen) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        match next_event_within(feed, left).await {
            Some(event) => seen.take(deployment, event),
            None => return false,
        }
    }
    true
}

/// The history, as stored, must say each thing once: one of each step, one final status.
fn assert_told_once(deployment: &Deployment) {
    let steps: Vec<&str> = deployment
        .events
        .iter()
        .filter(|event| event.kind == EventKind::Step)
        .map(|event| event.body.as_str())
        .collect();
    let mut unique = steps.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        steps.len(),
        "a step was recorded twice: {steps:?}"
    );
    let finals = deployment
        .events
        .iter()
        .filter(|event| {
            event.kind == EventKind::Status
                && ["succeeded", "failed", "timed_out", "cancelled"].contains(&event.body.as_str())
        })
        .count();
    assert!(
        finals <= 1,
        "more than one final status: {:?}",
        deployment.events
    );
}

#[tokio::test]
async fn an_agent_on_one_replica_serves_a_person_on_another_through_haproxy() {
    if skip() {
        return;
    }
    let db = TestDb::postgres().await.unwrap();
    let mut cluster = Cluster::new(&db).await;
    // Only r1 is up: the agent can only land there.
    cluster.start(0).await;
    let on_r1 = cluster.person_on(0);
    let (agent, _agent_process) = agent_through(&cluster, &on_r1).await;
    cluster.start(1).await;
    cluster.start(2).await;
    // The person is pinned to r2; the agent stays on r1.
    let api = ApiClient::new(&cluster.url(), &on_r1.token).with_cookie("stagely_replica=r2");

    // Status: r2 knows the agent r1 holds.
    let agents: Vec<AgentSummary> = api.expect(Method::GET, "/agents", None, 200).await;
    assert_eq!(
        agents[0].status,
        AgentStatus::Connected,
        "{}",
        cluster.logs()
    );

    let host = HostProject::new(SLOW_AND_CHATTY).await;
    let body =
        serde_json::json!({"name": host.name, "agent_id": agent.agent.id, "path": host.path()});
    let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
    let mut feed = cluster.feed(&api, 1).await;
    watch(&mut feed, project.id).await;

    // Deploy, from r2, to the agent on r1; its progress reaches the tab on r2 live.
    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
        .await;
    let mut seen = Seen::default();
    let finished = follow(
        &mut feed,
        &mut seen,
        accepted.deployment_id,
        Duration::from_secs(90),
        |seen| seen.finals() > 0,
    )
    .await;
    assert!(
        finished,
        "the tab saw {:?}\n{}",
        seen.statuses,
        cluster.logs()
    );
    let stored = wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(5)).await;
    assert_eq!(
        seen.statuses.last(),
        Some(&DeploymentStatus::Succeeded),
        "{:?}",
        stored.message
    );
    assert!(
        seen.events
            .iter()
            .any(|event| event.kind == EventKind::Step),
        "the tab saw no step of the deploy: {:?}",
        seen.events
    );
    assert_told_once(&stored);

    // Container logs: the stream runs on r1's agent, the lines reach the tab on r2.
    let got_lines = follow(
        &mut feed,
        &mut seen,
        accepted.deployment_id,
        Duration::from_secs(30),
        |seen| seen.log_lines.iter().any(|line| line.starts_with("line-")),
    )
    .await;
    assert!(
        got_lines,
        "no container log line reached the tab on r2: {:?}\n{}",
        seen.log_lines,
        cluster.logs()
    );
}

#[tokio::test]
async fn a_deploy_survives_the_kill_of_the_replica_holding_its_agent() {
    if skip() {
        return;
    }
    let db = TestDb::postgres().await.unwrap();
    let mut cluster = Cluster::new(&db).await;
    cluster.start(0).await;
    let on_r1 = cluster.person_on(0);
    let (agent, mut agent_process) = agent_through(&cluster, &on_r1).await;
    cluster.start(1).await;
    cluster.start(2).await;
    let api = ApiClient::new(&cluster.url(), &on_r1.token).with_cookie("stagely_replica=r2");

    let host = HostProject::new(SLOW_AND_CHATTY).await;
    let body =
        serde_json::json!({"name": host.name, "agent_id": agent.agent.id, "path": host.path()});
    let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
    let mut feed = cluster.feed(&api, 1).await;
    watch(&mut feed, project.id).await;
    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
        .await;
    let id = accepted.deployment_id;
    let mut seen = Seen::default();
    // Mid-deploy: the agent is running it (and waits ~4 s for the health check).
    let running = follow(&mut feed, &mut seen, id, Duration::from_secs(60), |seen| {
        seen.statuses.contains(&DeploymentStatus::Running)
    })
    .await;
    assert!(running, "saw {:?}\n{}", seen.statuses, cluster.logs());
    cluster.replica(0).kill_9().await;

    // The agent comes back through HAProxy to r2 or r3 and the deploy ends, once.
    let finished = follow(&mut feed, &mut seen, id, Duration::from_secs(90), |seen| {
        seen.finals() > 0
    })
    .await;
    assert!(
        finished,
        "saw {:?}; agent log:\n{}\n{}",
        seen.statuses,
        agent_process.log_text(),
        cluster.logs()
    );
    assert!(!agent_process.has_exited());
    let stored = wait_for_deployment(&api, id, Duration::from_secs(5)).await;
    assert_eq!(
        stored.status,
        DeploymentStatus::Succeeded,
        "{:?}",
        stored.events
    );
    assert_told_once(&stored);
    // Nothing more arrives about it: a final status is said once.
    follow(&mut feed, &mut seen, id, Duration::from_secs(3), |_| false).await;
    assert_eq!(seen.finals(), 1, "{:?}", seen.statuses);
    // What the tab was shown is the stored history, in order, without a repeat; only what
    // r1 had taken in when it died may be missing from the tab (never from the history).
    let shown: Vec<_> = seen
        .events
        .iter()
        .map(|event| (&event.kind, &event.body))
        .collect();
    let kept: Vec<_> = stored
        .events
        .iter()
        .filter(|event| event.kind != EventKind::Status)
        .map(|event| (&event.kind, &event.body))
        .collect();
    let mut rest = kept.iter();
    for event in &shown {
        assert!(
            rest.any(|kept| kept == event),
            "the tab was shown {event:?} out of order or twice: shown {shown:?}, kept {kept:?}"
        );
    }
    let agents: Vec<AgentSummary> = api.expect(Method::GET, "/agents", None, 200).await;
    assert_eq!(agents[0].status, AgentStatus::Connected);
    // The container's log keeps coming to the tab from the agent's new replica, and no line
    // is missing between the first the tab saw and the last.
    let flowing = follow(&mut feed, &mut seen, id, Duration::from_secs(30), |seen| {
        numbered(&seen.log_lines).len() >= 20
    })
    .await;
    assert!(flowing, "{:?}\n{}", seen.log_lines, cluster.logs());
    let lines = numbered(&seen.log_lines);
    let (first, last) = (lines[0], *lines.last().unwrap());
    let missing: Vec<u64> = (first..=last).filter(|n| !lines.contains(n)).collect();
    assert!(missing.is_empty(), "lines lost: {missing:?}");
}

#[tokio::test]
async fn a_rolling_restart_of_every_replica_loses_no_job_and_no_watched_log_line() {
    if skip() {
        return;
    }
    let db = TestDb::postgres().await.unwrap();
    let mut cluster = Cluster::new(&db).await;
    for i in 0..3 {
        cluster.start(i).await;
    }
    let api = cluster.person_on(1);
    let (agent, agent_process) = agent_through(&cluster, &api).await;
    let host = HostProject::new(SLOW_AND_CHATTY).await;
    let body =
        serde_json::json!({"name": host.name, "agent_id": agent.agent.id, "path": host.path()});
    let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
    let mut feed = cluster.feed(&api, 1).await;
    watch(&mut feed, project.id).await;
    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
        .await;
    let id = accepted.deployment_id;
    // Each replica in turn, the tab's own (r2) last: SIGTERM (it drains: stops taking
    // connections, sends its agents elsewhere, finishes its requests, gives up its leases),
    // then back up.
    let mut seen = Seen::default();
    for i in [0, 2] {
        let status = cluster.replica(i).terminate().await;
        assert!(status.success(), "r{} exited with {status}", i + 1);
        cluster.start(i).await;
    }
    let finished = follow(&mut feed, &mut seen, id, Duration::from_secs(90), |seen| {
        seen.finals() > 0 && numbered(&seen.log_lines).len() >= 10
    })
    .await;
    assert!(
        finished,
        "saw {:?} and {} lines\nagent:\n{}\n{}",
        seen.statuses,
        seen.log_lines.len(),
        agent_process.log_text(),
        cluster.logs()
    );
    assert_eq!(seen.finals(), 1, "{:?}", seen.statuses);
    let stored = wait_for_deployment(&api, id, Duration::from_secs(5)).await;
    assert_eq!(
        stored.status,
        DeploymentStatus::Succeeded,
        "{:?}",
        stored.events
    );
    assert_told_once(&stored);

    // The tab's replica restarts too: the tab reconnects (to the new r2) and watches again.
    let status = cluster.replica(1).terminate().await;
    assert!(status.success(), "r2 exited with {status}");
    cluster.start(1).await;
    drop(feed);
    let before = numbered(&seen.log_lines);
    let last_before = *before.last().unwrap();
    let mut feed = cluster.feed(&api, 1).await;
    watch(&mut feed, project.id).await;
    let caught_up = follow(&mut feed, &mut seen, id, Duration::from_secs(60), |seen| {
        numbered(&seen.log_lines)
            .last()
            .is_some_and(|last| *last > last_before + 10)
    })
    .await;
    assert!(
        caught_up,
        "no new lines after the restart\n{}",
        cluster.logs()
    );
    // Every line from the first the tab saw to the last is there: none was lost over the
    // restarts (the reconnected tab is sent the recent past again, so some come twice).
    let lines = numbered(&seen.log_lines);
    let (first, last) = (lines[0], *lines.last().unwrap());
    let missing: Vec<u64> = (first..=last).filter(|n| !lines.contains(n)).collect();
    assert!(missing.is_empty(), "lines lost: {missing:?}");

    // And a deploy after the restarts works too.
    let again: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
        .await;
    let stored = wait_for_deployment(&api, again.deployment_id, Duration::from_secs(90)).await;
    assert_eq!(
        stored.status,
        DeploymentStatus::Succeeded,
        "{:?}",
        stored.events
    );
}

/// The numbers of the container's `line-N` lines, sorted and without repeats.
fn numbered(lines: &[String]) -> Vec<u64> {
    let mut numbers: Vec<u64> = lines
        .iter()
        .filter_map(|line| line.trim().strip_prefix("line-")?.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    numbers
}

#[tokio::test]
async fn an_inspection_is_answered_by_the_replica_holding_the_agent() {
    if skip() {
        return;
    }
    let db = TestDb::postgres().await.unwrap();
    let holder = spawn_app(&db).await;
    let other = spawn_app(&db).await;
    let (agent_id, _token, _agent) = holder.connected_agent("host-1").await;
    let host = HostProject::new(crate::helpers::WEB_AND_WORKER).await;
    let user = other
        .store()
        .create_user("alice", None, true)
        .await
        .unwrap();
    let new: shared::api::CreateProject = serde_json::from_value(
        serde_json::json!({"name": host.name, "agent_id": agent_id, "path": host.path()}),
    )
    .unwrap();
    let project = other.store().create_project(&user, &new).await.unwrap();
    eventually(
        Duration::from_secs(15),
        "the other replica to see the agent",
        || async { other.state.hub.is_connected(agent_id) },
    )
    .await;
    assert!(!matches!(
        other.state.hub.holder(agent_id),
        server::hub::Holder::Here
    ));
    let services =
        server::ops::projects::services(&other.state.store, &other.state.hub, &user, project.id)
            .await
            .unwrap();
    let names: Vec<String> = services.iter().map(ToString::to_string).collect();
    assert_eq!(names, ["web", "worker"]);

    // The holder goes away: the question gets a clear answer, not a hang.
    drop(_agent);
    holder.stop().await;
    let error =
        server::ops::projects::services(&other.state.store, &other.state.hub, &user, project.id)
            .await
            .unwrap_err();
    assert!(
        error.to_string().contains("not connected") || error.to_string().contains("did not answer"),
        "{error}"
    );
}

/// An agent that reconnected through the balancer to replica B while A still had its old,
/// half-open socket: A's renewals leave B's lease alone (else the others would hand B's agent's
/// jobs to A, which pushes them into the dead socket), and a hello anywhere takes it over.
#[tokio::test]
async fn a_renewal_never_takes_an_agent_back_from_the_replica_it_reconnected_to() {
    if skip() {
        return;
    }
    let (_db, _dir, store) = postgres_store().await;
    let agent = shared::AgentId(uuid::Uuid::new_v4());
    // The replica holding the agent, as a third one sees it.
    let holder = || {
        let store = store.clone();
        async move {
            let elsewhere = store
                .agents_held_elsewhere("c", server::db::now_ms())
                .await
                .unwrap();
            elsewhere
                .into_iter()
                .find(|(held, _)| *held == agent)
                .map(|(_, replica)| replica)
        }
    };
    let now = server::db::now_ms();
    let later = now + 30_000;
    store.take_agents("a", &[agent], later).await.unwrap();
    store.take_agents("b", &[agent], later).await.unwrap();
    assert_eq!(
        holder().await.as_deref(),
        Some("b"),
        "the newest hello wins"
    );
    store
        .renew_agents("a", &[agent], now, later + 1)
        .await
        .unwrap();
    assert_eq!(
        holder().await.as_deref(),
        Some("b"),
        "a stale renewal took it back"
    );
    store
        .renew_agents("b", &[agent], now, later + 1)
        .await
        .unwrap();
    assert_eq!(holder().await.as_deref(), Some("b"));
    // B's lease ran out (B died): a renewal may pick it up again.
    store
        .renew_agents("a", &[agent], later + 2, later + 30_000)
        .await
        .unwrap();
    assert_eq!(holder().await.as_deref(), Some("a"));
    // Gone from A: only A's own lease is released.
    store
        .take_agents("b", &[agent], later + 30_000)
        .await
        .unwrap();
    store.release_agents("a", &[agent]).await.unwrap();
    assert_eq!(
        holder().await.as_deref(),
        Some("b"),
        "A's release dropped B's lease"
    );
}

#[tokio::test]
async fn housekeeping_runs_on_one_replica_at_a_time() {
    if skip() {
        return;
    }
    let db = TestDb::postgres().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = server::db::Store::connect(db.url(), dir.path())
        .await
        .unwrap();
    let b = server::db::Store::connect(db.url(), dir.path())
        .await
        .unwrap();
    let lock_a = server::db::HousekeepingLock::default();
    let lock_b = server::db::HousekeepingLock::default();
    assert!(
        a.housekeeping_turn(&lock_a).await,
        "the first replica to ask has it"
    );
    assert!(
        !b.housekeeping_turn(&lock_b).await,
        "two replicas did the housekeeping at once"
    );
    assert!(a.housekeeping_turn(&lock_a).await, "a held lock stays held");
    // The replica that had it goes away (its session ends): the next one takes over.
    drop(lock_a);
    eventually(Duration::from_secs(10), "the lock to pass on", || async {
        b.housekeeping_turn(&lock_b).await
    })
    .await;
    // SQLite: one replica, always its turn.
    let sqlite = server::db::Store::connect(None, dir.path()).await.unwrap();
    assert!(
        sqlite
            .housekeeping_turn(&server::db::HousekeepingLock::default())
            .await
    );
}

#[tokio::test]
async fn a_log_stream_for_a_replica_that_went_away_is_stopped() {
    if skip() {
        return;
    }
    let db = TestDb::postgres().await.unwrap();
    let holder = spawn_app(&db).await;
    let watcher = spawn_app(&db).await;
    let (agent_id, _token, _agent) = holder.connected_agent("host-1").await;
    let host = HostProject::new(crate::helpers::WEB_AND_WORKER).await;
    let user = watcher
        .store()
        .create_user("alice", None, true)
        .await
        .unwrap();
    let new: shared::api::CreateProject = serde_json::from_value(
        serde_json::json!({"name": host.name, "agent_id": agent_id, "path": host.path()}),
    )
    .unwrap();
    let project = watcher.store().create_project(&user, &new).await.unwrap();
    eventually(
        Duration::from_secs(15),
        "the watching replica to see the agent",
        || async { watcher.state.hub.is_connected(agent_id) },
    )
    .await;
    // A tab on the watching replica opens the project's logs: the holder starts the stream.
    let s = &watcher.state;
    server::ops::logs::watch(&s.store, &s.vault, &s.hub, &s.logs, &project, None).await;
    let stream = s.logs.stream_of(project.id).unwrap();
    let relay = holder.state.hub.relay().unwrap().clone();
    eventually(
        Duration::from_secs(10),
        "the holder to start the stream",
        || async { relay.origin_of_stream(stream).is_some() },
    )
    .await;
    // The watching replica stops without its tab ever saying goodbye to the stream.
    watcher.state.logs.unwatch(project.id);
    watcher.stop().await;
    eventually(
        Duration::from_secs(30),
        "the holder to stop the stream nobody watches",
        || async { relay.origin_of_stream(stream).is_none() },
    )
    .await;
}

/// A person's credentials revoked on one replica (here: their account disabled by an admin)
/// close their live feeds on every replica at once, not at each feed's periodic check (30 s):
/// a tab on another replica would otherwise keep receiving deploy and container logs.
#[tokio::test]
async fn a_revocation_on_one_replica_closes_the_feeds_on_another_at_once() {
    if skip() {
        return;
    }
    let db = TestDb::postgres().await.unwrap();
    let here = spawn_app(&db).await;
    let there = spawn_app(&db).await;
    let root = here.store().create_user("root", None, true).await.unwrap();
    let bob = here.store().create_user("bob", None, false).await.unwrap();
    let agent = here
        .store()
        .create_agent(
            "host-1",
            &server::token::Token::generate().hash(),
            Some(bob.id),
        )
        .await
        .unwrap();
    let new: shared::api::CreateProject = serde_json::from_value(
        serde_json::json!({"name": "shop", "agent_id": agent.id, "path": "/srv/shop"}),
    )
    .unwrap();
    let project = here.store().create_project(&bob, &new).await.unwrap();
    let mut feed = there.feed(&bob).await;
    // The feed listens (for revocations too) once it answers a watch.
    watch(&mut feed, project.id).await;
    let replay = next_event_within(&mut feed, Duration::from_secs(10)).await;
    assert!(
        matches!(replay, Some(DashboardEvent::Logs(_))),
        "{replay:?}"
    );

    server::ops::users::disable(here.store(), &here.state.hub, &root, bob.id)
        .await
        .unwrap();
    let closed = crate::helpers::closes_within(&mut feed, Duration::from_secs(10)).await;
    assert!(
        closed,
        "the feed on the other replica stayed open after the revocation"
    );
}

/// A replica that starts (a rolling restart) knows which replica holds each agent before it
/// serves its first request: a tab that reconnected to it at once and watched a project got no
/// log stream, and a deploy waited for the sweep, until the first lease renewal (seen once in
/// the rolling-restart test: "no new lines after the restart").
#[tokio::test]
async fn a_replica_that_starts_knows_where_the_agents_are_before_its_first_request() {
    if skip() {
        return;
    }
    let db = TestDb::postgres().await.unwrap();
    let holder = spawn_app(&db).await;
    let (agent_id, _token, _agent) = holder.connected_agent("host-1").await;
    eventually(Duration::from_secs(15), "the agent's lease", || async {
        holder
            .store()
            .agents_held_elsewhere("no-such-replica", server::db::now_ms())
            .await
            .unwrap()
            .iter()
            .any(|(agent, _)| *agent == agent_id)
    })
    .await;
    let started = spawn_app(&db).await;
    let (status, _) = started.get_text("/healthz").await;
    assert_eq!(status, 200);
    assert!(
        matches!(
            started.state.hub.holder(agent_id),
            server::hub::Holder::Replica(_)
        ),
        "the new replica does not know where the agent is"
    );
}

/// The replica link writes what queues up in one statement: every message of a batch reaches
/// its channel (the one for every replica, or its target's), notified in the order posted, and
/// a targeted one is read (and removed) by its target only.
#[tokio::test]
async fn a_batch_of_messages_is_notified_in_order_each_on_its_channel() {
    if skip() {
        return;
    }
    let db = TestDb::postgres().await.unwrap();
    let app = spawn_app(&db).await;
    let store = app.store();
    let mut listener = store
        .listen(&["test_all", "test_one_r2"])
        .await
        .unwrap()
        .unwrap();
    let messages: Vec<(Option<String>, String)> = (0..300)
        .map(|i| {
            let target = (i % 3 == 0).then(|| "r2".to_string());
            (target, format!("message-{i}"))
        })
        .collect();
    store
        .post_messages("r1", &messages, "test_all", "test_one_")
        .await
        .unwrap();
    let mut ids = Vec::new();
    let (mut targeted, mut all) = (Vec::new(), Vec::new());
    for i in 0..300 {
        let notice = tokio::time::timeout(Duration::from_secs(10), listener.next())
            .await
            .expect("a notice per message")
            .unwrap()
            .unwrap();
        let expected = if i % 3 == 0 {
            "test_one_r2"
        } else {
            "test_all"
        };
        assert_eq!(notice.channel, expected, "message {i}");
        let id: i64 = notice.payload.parse().unwrap();
        if i % 3 == 0 {
            targeted.push(id);
        } else {
            all.push(id);
        }
        ids.push(id);
    }
    // Another replica reads none of r2's own.
    let others = store.read_messages(&targeted, &[], "r3").await.unwrap();
    assert!(
        others.is_empty(),
        "{} of r2's messages read by r3",
        others.len()
    );
    // Read together, as the listener does with the notices of one round.
    let read = store.read_messages(&targeted, &all, "r2").await.unwrap();
    let bodies: Vec<String> = read.iter().map(|posted| posted.body.clone()).collect();
    let posted: Vec<String> = messages.iter().map(|(_, body)| body.clone()).collect();
    assert_eq!(bodies, posted, "every message, in the order posted");
    // r2's own are gone once read; those for every replica stay for the others.
    let again = store.read_messages(&targeted, &all, "r2").await.unwrap();
    assert_eq!(again.len(), all.len());
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
}

/// A fleet reconnecting at once can outrun the replica link's writer (the database busy or
/// slow): which replica holds each agent, and each agent's status for the others' tabs and
/// routing, wait for the writer instead of overflowing its queue and being dropped. The
/// database is held still (its tables locked) while 20,000 agents connect on replica A, more
/// than the link's queue holds.
#[tokio::test]
async fn a_burst_of_connections_that_outruns_the_link_loses_no_lease_and_no_status() {
    use sqlx::Connection;
    if skip() {
        return;
    }
    let (db, _dir, store) = postgres_store().await;
    let a = server::relay::Relay::start(&store).await.unwrap().unwrap();
    let b = server::relay::Relay::start(&store).await.unwrap().unwrap();
    let mut heard_by_b = b.take_incoming().unwrap();
    let hub = server::hub::Hub::with_relay(Some(a.clone()));
    let mut blocker = sqlx::PgConnection::connect(db.url().unwrap())
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE replica_messages, agent_leases IN EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let agents: Vec<shared::AgentId> = (0..20_000)
        .map(|_| shared::AgentId(uuid::Uuid::new_v4()))
        .collect();
    for agent in &agents {
        a.held(*agent);
        hub.publish(server::hub::HubEvent::AgentStatus {
            agent_id: *agent,
            status: AgentStatus::Connected,
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    hear_every_status(&mut heard_by_b, a.id(), agents.len(), "connected", deadline).await;
    let held = b.held_elsewhere().await.unwrap();
    let held_by_a = agents
        .iter()
        .filter(|agent| held.get(agent) == Some(a.id()))
        .count();
    assert_eq!(held_by_a, agents.len(), "agents B knows A holds");

    // A stops with all of them: each one's last word ("disconnected") still reaches B, though
    // far more than one round of the link's writer.
    for agent in &agents {
        a.released(*agent);
        hub.publish(server::hub::HubEvent::AgentStatus {
            agent_id: *agent,
            status: AgentStatus::Disconnected,
        });
    }
    a.close().await;
    hear_every_status(
        &mut heard_by_b,
        a.id(),
        agents.len(),
        "disconnected",
        deadline,
    )
    .await;
    b.close().await;
}

/// Reads what replica `from` hands over until `agents` distinct agents' `status` were heard,
/// by `deadline`.
async fn hear_every_status(
    heard: &mut tokio::sync::mpsc::Receiver<server::relay::Envelope>,
    from: &server::relay::ReplicaId,
    agents: usize,
    status: &str,
    deadline: tokio::time::Instant,
) {
    let mut heard_of = std::collections::HashSet::new();
    while heard_of.len() < agents {
        let envelope = tokio::time::timeout_at(deadline, heard.recv())
            .await
            .unwrap_or_else(|_| panic!("heard {} of {agents} agents' {status}", heard_of.len()))
            .unwrap();
        assert_eq!(envelope.from, *from);
        if let server::relay::Message::Event(event) = envelope.message {
            assert_eq!(event["status"], status, "{event}");
            let agent: uuid::Uuid = event["agent_id"].as_str().unwrap().parse().unwrap();
            heard_of.insert(agent);
        }
    }
}
