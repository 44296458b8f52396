//! Benchmark, not a test (ignored; `scripts/bench-hostile-agent.sh` runs it and prints figures):
//! a hostile agent sending at its maximum for 60 s while another person works.
//!
//! A real `stagely-server` process (SQLite, default limits). Mallory's agent is a raw socket
//! speaking the agent protocol: for `BENCH_SECS` (60) it sends log batches of ~960 KiB for the
//! stream of her watched project and a 16 KiB output line of her deployment after each, as fast
//! as its socket takes them (kept under the frame-rate limit, which would end its connection);
//! her own tab reads everything it is sent. Meanwhile Alice's agent sends one output line of her
//! deployment every 100 ms, stamped with the time it was sent, and Alice's tab, watching her
//! project, receives them: the latency figures are from send to receipt. The server's memory is
//! read from `/proc/<pid>/status` every second; what the server accepted and dropped of
//! Mallory's bytes is the `Agent Throttled` line it logs when her session ends.

use crate::bench_slowloris::server_rss_kib;
use crate::helpers::{hello, send_frame, ApiClient, RawSocket, ServerProcess};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use shared::api::{DashboardEvent, DashboardRequest, DeployAccepted, Deployment, Project};
use shared::protocol::{JobEvent, JobUpdate, LogBatch, LogMessage, LogStream, PROTOCOL_VERSION};
use shared::{AgentToServer, JobId, ServerToAgent};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run scripts/bench-hostile-agent.sh"]
async fn bench_hostile_agent() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(60);
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(data_dir.path(), None, &[]).await;
    let alice = Person::new(&server, "alice").await;
    let mallory = Person::new(&server, "mallory").await;

    let mut alice_agent = alice.agent(&server).await;
    let mut mallory_agent = mallory.agent(&server).await;
    let alice_job = alice.queued_job().await;
    let mallory_job = mallory.queued_job().await;
    let mut alice_feed = alice.feed(&server).await;
    let mut mallory_feed = mallory.feed(&server).await;
    let stream_id = loop {
        if let ServerToAgent::StartLogs(start) = next_message(&mut mallory_agent).await {
            break start.stream_id;
        }
    };

    // Alice's tab: latency of each of her lines.
    let latencies = tokio::spawn(async move {
        let mut samples = Vec::new();
        while let Some(Ok(frame)) = alice_feed.next().await {
            let Message::Text(text) = frame else { continue };
            if let Ok(DashboardEvent::DeploymentEvent { event, .. }) = serde_json::from_str(&text) {
                if let Some(sent) = event.body.strip_prefix("sent-at-ns ") {
                    let sent: u128 = sent.parse().unwrap();
                    samples.push(Duration::from_nanos((now_ns() - sent) as u64));
                }
            }
        }
        samples
    });
    // Mallory's tab reads everything (as a browser would), counting what it is shown.
    let shown = Arc::new(AtomicU64::new(0));
    let skipped = Arc::new(AtomicU64::new(0));
    let reader = {
        let (shown, skipped) = (shown.clone(), skipped.clone());
        tokio::spawn(async move {
            while let Some(Ok(frame)) = mallory_feed.next().await {
                let Message::Text(text) = frame else { continue };
                if let Ok(DashboardEvent::Logs(lines)) = serde_json::from_str(&text) {
                    shown.fetch_add(lines.lines.len() as u64, Ordering::Relaxed);
                    skipped.fetch_add(lines.skipped, Ordering::Relaxed);
                }
            }
        })
    };
    // Mallory's agent also drains what the server sends it, as a real one would.
    let memory = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (memory, stop) = (memory.clone(), stop.clone());
        let pid = server.pid().unwrap();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let rss = rss_kib(pid);
                memory.fetch_max(rss, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let before = rss_kib(server.pid().unwrap());

    let flood = {
        let stop = stop.clone();
        let project = mallory.project.name.clone();
        tokio::spawn(async move {
            let messages = (0..960)
                .map(|n| LogMessage {
                    project: project.clone(),
                    service: shared::ServiceName::parse("web").unwrap(),
                    stream: LogStream::Stdout,
                    timestamp: None,
                    line: format!("{n:>4} {}", "m".repeat(1000)),
                })
                .collect();
            let batch = serde_json::to_string(&AgentToServer::Log(LogBatch {
                stream_id,
                messages,
                skipped: 0,
            }))
            .unwrap();
            let output = serde_json::to_string(&AgentToServer::JobUpdate(JobUpdate {
                job_id: mallory_job,
                event: JobEvent::Output {
                    line: "o".repeat(16 * 1024 - 100),
                },
            }))
            .unwrap();
            let (mut offered, mut frames) = (0u64, 0u64);
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // At most 400 frames a second: the server ends a connection over 500.
                let due = started + Duration::from_micros(frames * 2_500);
                tokio::time::sleep_until(due.into()).await;
                for frame in [&batch, &output] {
                    if mallory_agent
                        .send(Message::text(frame.as_str()))
                        .await
                        .is_err()
                    {
                        return (offered, frames, started.elapsed(), false);
                    }
                    offered += frame.len() as u64;
                    frames += 1;
                }
                // Drain anything the server sent meanwhile.
                while let Some(Some(Ok(_))) = mallory_agent.now_or_never_ready() {}
            }
            let _ = mallory_agent.close(None).await;
            (offered, frames, started.elapsed(), true)
        })
    };

    // Alice's agent: a line every 100 ms for the whole flood.
    let end = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0;
    while Instant::now() < end {
        sent += 1;
        let line = format!("sent-at-ns {}", now_ns());
        let update = JobUpdate {
            job_id: alice_job,
            event: JobEvent::Output { line },
        };
        send_frame(&mut alice_agent, &AgentToServer::JobUpdate(update)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (offered, frames, flooded_for, stayed_connected) = flood.await.unwrap();
    sampler.await.unwrap();
    // Let Alice's last lines arrive, then close her tab.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = memory.load(Ordering::Relaxed);
    let status = server_rss_kib(&server);
    drop(server);
    let mut samples = tokio::time::timeout(Duration::from_secs(10), latencies)
        .await
        .map(|samples| samples.unwrap())
        .unwrap_or_default();
    reader.abort();
    let log = std::fs::read_to_string(data_dir.path().join("server.log")).unwrap_or_default();
    let throttled = log
        .lines()
        .rev()
        .find(|line| line.contains("Agent Throttled"))
        .map(|line| {
            let field = |name: &str| {
                line.split(&format!("{name}="))
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or("?")
                    .to_string()
            };
            (field("accepted_bytes"), field("dropped_bytes"))
        });

    samples.sort();
    let percentile = |p: f64| {
        let n = samples.len().max(1);
        samples
            .get(((n as f64 * p).ceil() as usize).clamp(1, n) - 1)
            .copied()
            .unwrap_or_default()
    };
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!("hostile agent: {secs} s flood; server with default limits (1 MiB/s per agent after an 8 MiB burst)");
    println!(
        "  mallory's agent offered {:.0} MiB in {frames} frames over {:.1} s ({:.1} MiB/s), {}",
        mib(offered),
        flooded_for.as_secs_f64(),
        mib(offered) / flooded_for.as_secs_f64(),
        if stayed_connected {
            "and stayed connected"
        } else {
            "and was disconnected"
        }
    );
    match throttled {
        Some((accepted, dropped)) => println!(
            "  server accepted {accepted} bytes of it and dropped {dropped} bytes (its Agent Throttled log line)"
        ),
        None => println!("  the server logged no throttling"),
    }
    println!(
        "  mallory's tab was shown {} log lines and told {} were skipped",
        shown.load(Ordering::Relaxed),
        skipped.load(Ordering::Relaxed)
    );
    println!(
        "  alice's lines on her tab ({} of {sent}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        ms(percentile(0.50)),
        ms(percentile(0.99)),
        ms(samples.last().copied().unwrap_or_default())
    );
    println!(
        "  server memory: VmRSS {before} kB before, highest VmRSS sampled {peak} kB; at the end {status}"
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A person with an API token, an agent and a project on it.
struct Person {
    api: ApiClient,
    token: String,
    agent_token: String,
    project: Project,
}

impl Person {
    async fn new(server: &ServerProcess, login: &str) -> Self {
        server.cli(&["users", "add", login]);
        let token = server.cli(&["tokens", "create", login]);
        let api = ApiClient::new(&server.url(), &token);
        let created: shared::api::AgentCreated = api
            .expect(
                Method::POST,
                "/agents",
                Some(serde_json::json!({"name": format!("{login}-host")})),
                201,
            )
            .await;
        let body =
            serde_json::json!({"name": "shop", "agent_id": created.agent.id, "path": "/srv/shop"});
        let project = api.expect(Method::POST, "/projects", Some(body), 201).await;
        Self {
            api,
            token,
            agent_token: created.token,
            project,
        }
    }

    async fn agent(&self, server: &ServerProcess) -> RawSocket {
        let url = format!("ws://{}/api/v1/stream", server.address);
        let mut socket = crate::helpers::raw_agent(&url, &self.agent_token).await;
        assert!(matches!(
            hello(&mut socket, PROTOCOL_VERSION).await,
            ServerToAgent::Welcome(_)
        ));
        socket
    }

    /// A deploy, sent to the (fake) agent, which never runs it: its job id.
    async fn queued_job(&self) -> JobId {
        let accepted: DeployAccepted = self
            .api
            .expect(
                Method::POST,
                &format!("/deploy/{}", self.project.id),
                None,
                202,
            )
            .await;
        let deployment: Deployment = self
            .api
            .expect(
                Method::GET,
                &format!("/deployments/{}", accepted.deployment_id),
                None,
                200,
            )
            .await;
        deployment.job_id
    }

    /// A tab's live feed, watching the person's project.
    async fn feed(&self, server: &ServerProcess) -> RawSocket {
        let mut request = format!("ws://{}/api/v1/events", server.address)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        let mut feed = tokio_tungstenite::connect_async(request).await.unwrap().0;
        let watch = DashboardRequest::Watch {
            project_id: self.project.id,
            resume: None,
        };
        feed.send(Message::text(serde_json::to_string(&watch).unwrap()))
            .await
            .unwrap();
        feed
    }
}

async fn next_message(socket: &mut RawSocket) -> ServerToAgent {
    crate::helpers::next_message(socket).await
}

/// Polls a stream once without waiting.
trait NowOrNever: StreamExt + Unpin {
    fn now_or_never_ready(&mut self) -> Option<Option<Self::Item>> {
        futures_util::FutureExt::now_or_never(self.next())
    }
}

impl<S: StreamExt + Unpin> NowOrNever for S {}
