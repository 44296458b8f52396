//! `stagely-loadgen`: measures the agent link at scale against a real `stagely-server` process.
//!
//! It starts the server binary on a free `127.0.0.1` port with a fresh SQLite data directory,
//! registers N agents straight into the database (one transaction instead of N
//! `stagely-server agents add` processes; the server's own code path is unchanged), then opens
//! N simulated agents that speak the real protocol: WebSocket to `/api/v1/stream` with the
//! bearer token, `Hello`, `Welcome`, heartbeats at the interval the server asks for. It prints
//! what the issue "Agent link … held at 50,000 agents" asks about: how many connect, the
//! server's memory per connected agent, the heartbeat round trip, with `--restart-test` how the
//! agents come back after a `kill -9` and restart of the server, each using the real agent's
//! [`Backoff`], and the dispatch latency: from `POST /api/v1/deploy/{project}` to the agent
//! receiving the `Deploy` frame, both timed in this process on one clock. For that it creates
//! an admin user and an API token with the server's own admin commands (same data directory,
//! the server keeps running) and one project for each sampled agent.
//!
//! One machine cannot open more than ~28k connections from one source address to one server
//! port (the ephemeral port range), so agent `i` binds its socket to `127.0.0.(2 + i % 253)`
//! first. Both this process and the server need one file descriptor per agent: the loadgen
//! raises `RLIMIT_NOFILE` as far as the system lets it before spawning the server, which
//! inherits the limit.
//!
//! With `--database-url` it runs on a fresh PostgreSQL database of its own instead, and with
//! `--replicas N` starts N servers on it (issue 17): the deploys of `--dispatch` then go to the
//! last replica while the agents are on the first (cross-replica dispatch),
//! `--failover-test` puts HAProxy (`deploy/haproxy.cfg`) in front of three and `kill -9`s one,
//! and `--spread` connects agent `i` to replica `i % N`. Scripts: `scripts/bench-replicas.sh`,
//! `scripts/bench-failover.sh`, `scripts/bench-replicas-idle.sh`.
//!
//! Only ever run it against loopback addresses; it starts its own server and never reaches
//! anything else.

#[path = "stagely-loadgen/worker.rs"]
mod worker;

use agent::backoff::Backoff;
use anyhow::{bail, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use server::token::Token;
use shared::api::{DeployAccepted, Project};
use shared::protocol::{Heartbeat, Hello, JobEvent, JobUpdate, Welcome};
use shared::{AgentToServer, ServerToAgent, PROTOCOL_VERSION};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The same limit the real agent puts on the TCP + WebSocket handshake and on the welcome.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Timed heartbeats each sampled agent sends, spread over [`PROBE_WINDOW`].
const PROBES_PER_AGENT: usize = 5;
const PROBE_WINDOW: Duration = Duration::from_secs(5);
/// Targets from the issue, printed next to the figures.
const TARGET_RSS_PER_AGENT_KIB: f64 = 15.0;
const TARGET_HEARTBEAT_P99: Duration = Duration::from_millis(10);
const TARGET_DISPATCH_P99: Duration = Duration::from_millis(20);
/// With `--replicas`: the API on one replica, the agent on another.
const TARGET_CROSS_DISPATCH_P99: Duration = Duration::from_millis(50);
const TARGET_RECONNECT_99: Duration = Duration::from_secs(90);
/// With `--failover-test`: one of three replicas killed, its agents back on the others.
const TARGET_FAILOVER_99: Duration = Duration::from_secs(60);
const TARGET_MAX_SHARE_PER_SECOND: f64 = 0.05;
/// How a refused upgrade reads when the server is busy (`AppError::Busy`).
const BUSY: &str = "HTTP 503 Service Unavailable";

/// Load generator for the agent link: starts a real server and connects N simulated agents.
#[derive(Parser)]
#[command(name = "stagely-loadgen", version)]
struct Args {
    /// How many agents to register and connect.
    #[arg(short = 'n', long = "agents", default_value_t = 1000)]
    agents: usize,
    /// After the idle and heartbeat measurements, kill -9 the server, restart it on the same
    /// port and data directory, and measure how the agents come back.
    #[arg(long)]
    restart_test: bool,
    /// The `stagely-server` binary to start.
    #[arg(long, default_value = "target/release/stagely-server")]
    server_bin: PathBuf,
    /// Seconds every agent stays connected and idle before the server's memory is read.
    #[arg(long, default_value_t = 5)]
    idle_secs: u64,
    /// Handshakes in flight at once while the agents first connect (the server admits this
    /// many; an agent told 503 backs off and tries again, like the real agent).
    #[arg(long, default_value_t = server::state::MAX_HANDSHAKES)]
    concurrency: usize,
    /// How many agents send timed heartbeats.
    #[arg(long, default_value_t = 1000)]
    heartbeat_sample: usize,
    /// How many deploys to time, each to its own randomly chosen connected agent (0: none).
    #[arg(long, default_value_t = 1000)]
    dispatch: usize,
    /// Deploy requests per second while measuring dispatch latency.
    #[arg(long, default_value_t = 200.0)]
    dispatch_rate: f64,
    /// Give up on agents still connecting after this many seconds.
    #[arg(long, default_value_t = 120)]
    connect_timeout_secs: u64,
    /// Give up waiting for agents to come back after the restart after this many seconds.
    #[arg(long, default_value_t = 180)]
    reconnect_timeout_secs: u64,
    /// A PostgreSQL server (`postgres://user:password@127.0.0.1:5432/postgres`): the run creates
    /// a fresh database `stagely_loadgen_<random>` on it for the servers and drops it at the end.
    /// Without it each run uses SQLite in a temporary directory.
    #[arg(long)]
    database_url: Option<String>,
    /// Control-plane replicas to start on that one database (needs `--database-url`). Every
    /// agent connects to the first; the deploys of `--dispatch` go to the last one's REST API,
    /// so each crosses from one replica to another through PostgreSQL.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// With `--replicas 3`: put HAProxy (`deploy/haproxy.cfg`) in front, connect every agent
    /// through it, then `kill -9` the last replica and follow its agents back on the others.
    #[arg(long)]
    failover_test: bool,
    /// With `--replicas`: agent `i` connects straight to replica `i % replicas` (no balancer),
    /// to measure idle agents spread over several replicas; the RSS per agent is then the
    /// replicas' growth together, divided by the agents.
    #[arg(long)]
    spread: bool,
    /// The HAProxy configuration for `--failover-test`.
    #[arg(long, default_value = "deploy/haproxy.cfg")]
    haproxy_config: PathBuf,
    /// Simulate the agents in this many child processes of this program (each holds one
    /// descriptor per agent it runs, so a fleet larger than the open-file limit needs several);
    /// idle and heartbeat measurements only (with `--dispatch 0`, no restart or failover test).
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Internal: run as one of `--processes`, taking its agents on stdin and reporting on
    /// stdout.
    #[arg(long, hide = true)]
    worker: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.worker {
        return worker::run().await;
    }
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if args.replicas == 0 || (args.replicas > 1 && args.database_url.is_none()) {
        bail!("--replicas needs at least 1, and more than one needs --database-url");
    }
    if args.failover_test && args.replicas != 3 {
        bail!("--failover-test needs --replicas 3 (deploy/haproxy.cfg names three)");
    }
    if args.spread && (args.failover_test || args.dispatch > 0) {
        bail!("--spread is for idle agents: not with --failover-test, and add --dispatch 0");
    }
    if args.failover_test && args.dispatch > 0 {
        bail!("--failover-test kills the replica --dispatch sends to: add --dispatch 0");
    }
    if args.replicas > 1 && args.restart_test {
        bail!("--restart-test restarts the one server: use it without --replicas");
    }
    if args.processes == 0
        || (args.processes > 1 && (args.dispatch > 0 || args.restart_test || args.failover_test))
    {
        bail!(
            "--processes needs at least 1; more than one is for idle agents and heartbeats: add \
             --dispatch 0, without --restart-test or --failover-test"
        );
    }
    // Set before the server is spawned: the child inherits the limit.
    let fd_limit = raise_fd_limit(args.agents as u64 + 1024)?;
    let data_dir = std::env::temp_dir().join(format!("stagely-loadgen-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let database = match &args.database_url {
        Some(admin_url) => Some(FreshDatabase::create(admin_url).await?),
        None => None,
    };
    let result = run(&args, fd_limit, &data_dir, database.as_ref()).await;
    if let Some(database) = database {
        database.drop_it().await;
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn run(
    args: &Args,
    fd_limit: u64,
    data_dir: &Path,
    database: Option<&FreshDatabase>,
) -> anyhow::Result<()> {
    let n = args.agents;
    // One master key for every replica: they read each other's sealed values.
    let master_key = {
        use base64::Engine;
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        base64::engine::general_purpose::STANDARD.encode(key)
    };
    let mut launchers = Vec::with_capacity(args.replicas);
    for replica in 1..=args.replicas {
        let dir = data_dir.join(format!("r{replica}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        launchers.push(Launcher {
            bin: args.server_bin.clone(),
            data_dir: dir.clone(),
            address: free_port()?,
            log: dir.join("server.log"),
            database_url: database.map(|db| db.url.clone()),
            master_key: master_key.clone(),
            max_connections: fd_limit.saturating_sub(256).max(1),
        });
    }
    let launcher = &launchers[0];
    let api_launcher = &launchers[launchers.len() - 1];
    println!(
        "stagely-loadgen: {n} agents against {} on {} (fd limit {fd_limit} for this process and \
         the server; database: {})",
        launcher.bin.display(),
        launcher.address,
        database.map_or("SQLite".to_string(), |db| format!("PostgreSQL {}", db.name))
    );
    if args.replicas > 1 {
        println!(
            "replicas: {} on {}; {}",
            args.replicas,
            launchers
                .iter()
                .map(|l| l.address.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if args.failover_test {
                "the agents connect through HAProxy"
            } else if args.spread {
                "agent i connects to replica i % replicas"
            } else {
                "the agents connect to the first, deploys go to the last"
            }
        );
    }
    // One descriptor per agent in the process simulating it and in the server it dials.
    let per_server = if args.spread {
        n.div_ceil(args.replicas)
    } else {
        n
    };
    let busiest = n.div_ceil(args.processes).max(per_server);
    if fd_limit < busiest as u64 + 100 {
        println!(
            "warning: RLIMIT_NOFILE is {fd_limit} and could not be raised (raising the hard \
             limit needs CAP_SYS_RESOURCE); a server and a process simulating agents each \
             need one descriptor per agent they hold ({busiest} here), so some agents will \
             not connect"
        );
    }
    if args.processes > 1 {
        println!(
            "the agents are simulated in {} processes of about {} each",
            args.processes,
            n.div_ceil(args.processes)
        );
    }

    // Start once so the server creates the schema, stop it, fill the table, start again.
    launcher.start().await?.stop().await;
    let started = Instant::now();
    let (agent_ids, tokens) = register_agents(launcher, n).await?;
    println!(
        "registered {n} agents in the database in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let mut server = launcher.start().await?;
    let mut others = Vec::new();
    for other in &launchers[1..] {
        others.push(other.start().await?);
    }
    let balancer = if args.failover_test {
        Some(Balancer::start(&args.haproxy_config, &launchers, data_dir, n).await?)
    } else {
        None
    };
    let dial: Vec<SocketAddr> = match (&balancer, args.spread) {
        (Some(balancer), _) => vec![balancer.address],
        (None, true) => launchers.iter().map(|l| l.address).collect(),
        (None, false) => vec![launcher.address],
    };
    sleep(Duration::from_secs(1)).await;
    let rss_before = server.memory()?;
    println!("server RSS before connecting: {rss_before}");
    let others_before = others
        .iter()
        .map(ServerProcess::memory)
        .collect::<anyhow::Result<Vec<_>>>()?;

    let (events_tx, events) = mpsc::unbounded_channel();
    let (stop_tx, stop) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        dial,
        ramp: Semaphore::new(args.concurrency.max(1)),
        events: events_tx,
        stop,
    });
    let mut monitor = Monitor {
        events,
        tally: Tally::default(),
    };
    let mut probes = if args.processes > 1 {
        let events = ctx.events.clone();
        Probes::Workers(worker::Workers::spawn(args, &ctx.dial, tokens, events).await?)
    } else {
        Probes::Local(spawn_agents(&ctx, tokens, 0, args.heartbeat_sample))
    };
    connect_all(args, &mut monitor).await;
    if monitor.tally.connected == 0 {
        server.print_log_summary();
        bail!("no agent connected");
    }

    monitor.drain_for(Duration::from_secs(args.idle_secs)).await;
    report_idle_memory(&server, &rss_before, monitor.tally.live(), args.idle_secs)?;
    if !others.is_empty() {
        let mut grown = server.memory()?.rss_kib.saturating_sub(rss_before.rss_kib);
        for (i, (other, before)) in others.iter().zip(&others_before).enumerate() {
            let idle = other.memory()?;
            println!("replica {} RSS: {before} before, {idle} idle", i + 2);
            grown += idle.rss_kib.saturating_sub(before.rss_kib);
        }
        let per_agent = grown as f64 / monitor.tally.live().max(1) as f64;
        println!(
            "all {} replicas: RSS grew {:.1} MiB, {per_agent:.1} KiB per connected agent — \
             target ≤ {TARGET_RSS_PER_AGENT_KIB} KiB: {}",
            args.replicas,
            grown as f64 / 1024.0,
            verdict(per_agent <= TARGET_RSS_PER_AGENT_KIB)
        );
    }
    measure_heartbeats(&mut monitor, &mut probes).await;

    if args.restart_test {
        server = restart_test(args, launcher, server, &mut monitor).await?;
    }
    if args.failover_test {
        if let Some(victim) = others.pop() {
            failover_test(args, victim, &mut monitor).await;
        }
    }
    // After the restart test, so the open deployments it leaves are not re-sent during it.
    if args.dispatch > 0 {
        measure_dispatch(args, api_launcher, &agent_ids, &mut monitor).await?;
    }

    let _ = stop_tx.send(true);
    drop(probes);
    server.print_log_summary();
    server.stop().await;
    for other in others {
        other.print_log_summary();
        other.stop().await;
    }
    drop(balancer);
    Ok(())
}

/// Where each sampled agent receives its cue to send a timed heartbeat.
type ProbeCues = Vec<mpsc::Sender<()>>;

/// How the sampled agents are told to send a timed heartbeat: straight, or through the child
/// processes simulating them (each schedules its own, see [`worker`]).
enum Probes {
    Local(ProbeCues),
    Workers(worker::Workers),
}

/// Spawns one task per agent, numbered from `first`; `sample` of them (chosen at random) take
/// part in the heartbeat measurement.
fn spawn_agents(ctx: &Arc<Ctx>, tokens: Vec<String>, first: usize, sample: usize) -> ProbeCues {
    let n = tokens.len();
    let mut sampled = vec![false; n];
    for index in rand::seq::index::sample(&mut rand::thread_rng(), n, sample.min(n)) {
        sampled[index] = true;
    }
    let mut cues = Vec::new();
    for (index, token) in tokens.into_iter().enumerate() {
        let probes = sampled[index].then(|| {
            let (tx, rx) = mpsc::channel(PROBES_PER_AGENT);
            cues.push(tx);
            rx
        });
        tokio::spawn(run_agent(ctx.clone(), first + index, token, probes));
    }
    cues
}

/// Waits until every agent has connected or given up (at most `--connect-timeout-secs`).
async fn connect_all(args: &Args, monitor: &mut Monitor) {
    let n = args.agents;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.connect_timeout_secs);
    let settled = |tally: &Tally| tally.connected + tally.failed_count() >= n;
    let progress = |tally: &Tally| {
        println!(
            "  … {} connected, {} failed after {:.0} s",
            tally.connected,
            tally.failed_count(),
            started.elapsed().as_secs_f64()
        )
    };
    if !monitor
        .wait_until(deadline, Duration::from_secs(5), settled, progress)
        .await
    {
        let tally = &monitor.tally;
        println!(
            "  gave up after {} s with {} agents still connecting",
            args.connect_timeout_secs,
            n - tally.connected - tally.failed_count()
        );
    }
    let ramp = started.elapsed();
    let tally = &monitor.tally;
    println!(
        "connected: {} of {n} in {:.1} s ({:.0} handshakes/s, {} in flight at most)",
        tally.connected,
        ramp.as_secs_f64(),
        tally.connected as f64 / ramp.as_secs_f64(),
        args.concurrency
    );
    print_counts("  failed", &tally.failed);
    print_counts("  retried", &tally.ramp_retried);
}

fn report_idle_memory(
    server: &ServerProcess,
    before: &Memory,
    live: usize,
    idle_secs: u64,
) -> anyhow::Result<()> {
    let idle = server.memory()?;
    let per_agent = |after: u64, before: u64| after.saturating_sub(before) as f64 / live as f64;
    let rss_per_agent = per_agent(idle.rss_kib, before.rss_kib);
    println!("server RSS after {idle_secs} s idle with {live} agents: {idle}");
    println!(
        "server RSS per connected agent: {rss_per_agent:.1} KiB ((after - before) / {live}; \
         anon {:.1} KiB, file {:.1} KiB, shmem {:.1} KiB) — target ≤ {TARGET_RSS_PER_AGENT_KIB} \
         KiB: {}",
        per_agent(idle.anon_kib, before.anon_kib),
        per_agent(idle.file_kib, before.file_kib),
        per_agent(idle.shmem_kib, before.shmem_kib),
        verdict(rss_per_agent <= TARGET_RSS_PER_AGENT_KIB)
    );
    if let Some(own) = Memory::of("self") {
        println!("loadgen RSS: {own}");
    }
    Ok(())
}

/// Has every sampled agent send `PROBES_PER_AGENT` timed heartbeats at random moments of the
/// probe window, waits for the answers and prints the round-trip percentiles.
async fn measure_heartbeats(monitor: &mut Monitor, probes: &mut Probes) {
    let scheduler = match probes {
        Probes::Local(cues) => Some(schedule_probes(std::mem::take(cues))),
        Probes::Workers(workers) => {
            workers.probe().await;
            None
        }
    };
    monitor
        .drain_for(PROBE_WINDOW + Duration::from_millis(100))
        .await;
    let (sent, agents) = match (scheduler, probes) {
        (Some(scheduler), _) => scheduler.await.unwrap_or_default(),
        (None, Probes::Workers(workers)) => {
            let count = workers.count();
            let deadline = Instant::now() + Duration::from_secs(5);
            let reported = |tally: &Tally| tally.probe_reports >= count;
            monitor
                .wait_until(deadline, Duration::from_secs(60), reported, |_| {})
                .await;
            (monitor.tally.probes_sent, monitor.tally.probing_agents)
        }
        (None, Probes::Local(_)) => (0, 0),
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let answered = |tally: &Tally| tally.round_trips.len() >= sent;
    monitor
        .wait_until(deadline, Duration::from_secs(60), answered, |_| {})
        .await;

    let mut rtts = std::mem::take(&mut monitor.tally.round_trips);
    rtts.sort();
    let Some(max) = rtts.last().copied() else {
        println!("heartbeat round trip: no answer to {sent} timed heartbeats");
        return;
    };
    let p99 = percentile(&rtts, 0.99);
    println!(
        "heartbeat round trip ({} answered of {sent} sent by {agents} agents over {} s): \
         p50 {}, p90 {}, p99 {}, max {} — target p99 ≤ {}: {}",
        rtts.len(),
        PROBE_WINDOW.as_secs(),
        ms(percentile(&rtts, 0.50)),
        ms(percentile(&rtts, 0.90)),
        ms(p99),
        ms(max),
        ms(TARGET_HEARTBEAT_P99),
        verdict(p99 <= TARGET_HEARTBEAT_P99 && rtts.len() == sent)
    );
}

/// Cues each sampled agent `PROBES_PER_AGENT` times at random moments of the probe window,
/// starting now; ends with how many cues went out and to how many agents.
fn schedule_probes(cues: ProbeCues) -> tokio::task::JoinHandle<(usize, usize)> {
    use rand::Rng;
    let start = Instant::now() + Duration::from_millis(100);
    let mut rng = rand::thread_rng();
    // An agent that never connected has dropped its receiver: it is not part of the sample.
    let cues: ProbeCues = cues.into_iter().filter(|tx| !tx.is_closed()).collect();
    let agents = cues.len();
    let mut schedule: Vec<(Instant, mpsc::Sender<()>)> = cues
        .iter()
        .flat_map(|tx| std::iter::repeat_n(tx, PROBES_PER_AGENT))
        .map(|tx| {
            (
                start + rng.gen_range(Duration::ZERO..PROBE_WINDOW),
                tx.clone(),
            )
        })
        .collect();
    schedule.sort_by_key(|(at, _)| *at);
    tokio::spawn(async move {
        let mut sent = 0;
        for (at, tx) in schedule {
            sleep_until(at).await;
            // A full queue or an agent gone since just means one probe less.
            if tx.try_send(()).is_ok() {
                sent += 1;
            }
        }
        (sent, agents)
    })
}

/// Kills the server with SIGKILL, starts it again and follows the agents back.
async fn restart_test(
    args: &Args,
    launcher: &Launcher,
    server: ServerProcess,
    monitor: &mut Monitor,
) -> anyhow::Result<ServerProcess> {
    monitor.drain_for(Duration::ZERO).await;
    let expected = monitor.tally.live();
    let before = monitor.tally.reconnected.len();
    let killed_at = Instant::now();
    server.kill().await;
    let server = launcher.start().await?;
    println!(
        "restart: kill -9 with {expected} agents connected; the restarted server answered \
         /healthz {} after the kill",
        ms(killed_at.elapsed())
    );
    follow_reconnections(args, monitor, killed_at, before, expected).await;
    print_counts("  failed reconnect attempts", &monitor.tally.retry_failed);
    if let Ok(memory) = server.memory() {
        println!("server RSS with the agents back: {memory}");
    }
    Ok(server)
}

/// `kill -9` of one of three replicas behind HAProxy: its agents lose their link and come
/// back through the balancer on the two others, each with the real agent's [`Backoff`].
async fn failover_test(args: &Args, victim: ServerProcess, monitor: &mut Monitor) {
    monitor.drain_for(Duration::ZERO).await;
    let live = monitor.tally.live();
    let lost_before = monitor.tally.lost;
    let before = monitor.tally.reconnected.len();
    let killed_at = Instant::now();
    victim.kill().await;
    // The kernel resets the dead replica's sockets at once and HAProxy closes the agents' side:
    // every agent it held has seen its link end well within a second.
    monitor.drain_for(Duration::from_secs(1)).await;
    let expected = monitor.tally.lost - lost_before;
    println!(
        "failover: kill -9 of one of three replicas; {expected} of {live} agents lost their link"
    );
    if expected == 0 {
        return;
    }
    follow_reconnections(args, monitor, killed_at, before, expected).await;
    print_counts("  failed reconnect attempts", &monitor.tally.retry_failed);
}

/// Waits for `expected` reconnections counted from `before` and prints them per second since
/// `killed_at`, when 99% were back and the busiest second's share.
async fn follow_reconnections(
    args: &Args,
    monitor: &mut Monitor,
    killed_at: Instant,
    before: usize,
    expected: usize,
) {
    let deadline = killed_at + Duration::from_secs(args.reconnect_timeout_secs);
    let back = |tally: &Tally| tally.reconnected.len() - before >= expected;
    let progress = |tally: &Tally| {
        println!(
            "  … {} of {expected} back after {:.0} s",
            tally.reconnected.len() - before,
            killed_at.elapsed().as_secs_f64()
        )
    };
    if !monitor
        .wait_until(deadline, Duration::from_secs(10), back, progress)
        .await
    {
        println!("  gave up waiting after {} s", args.reconnect_timeout_secs);
    }

    let mut offsets: Vec<Duration> = monitor.tally.reconnected[before..]
        .iter()
        .map(|at| at.saturating_duration_since(killed_at))
        .collect();
    offsets.sort();
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    for offset in &offsets {
        *per_second.entry(offset.as_secs()).or_default() += 1;
    }
    let busiest = per_second.values().copied().max().unwrap_or(0);
    println!("reconnections per second after the kill (agents back in that second):");
    let last = per_second.keys().last().copied().unwrap_or(0);
    for second in 0..=last {
        let count = per_second.get(&second).copied().unwrap_or(0);
        let bar = "#".repeat((count * 50).div_ceil(busiest.max(1)));
        println!(
            "  {second:>4} s {count:>7} {:>5.1}% {bar}",
            100.0 * count as f64 / expected as f64
        );
    }
    let share = busiest as f64 / expected as f64;
    let needed = (expected as f64 * 0.99).ceil() as usize;
    let target = if args.failover_test {
        TARGET_FAILOVER_99
    } else {
        TARGET_RECONNECT_99
    };
    let t99 = offsets.get(needed.saturating_sub(1)).copied();
    println!(
        "reconnect: {} of {expected} back; 99% back {} — target ≤ {} s: {}; largest share in \
         one second {:.1}% — target ≤ {:.0}%: {}",
        offsets.len(),
        t99.map(|t| format!("after {:.1} s", t.as_secs_f64()))
            .unwrap_or_else(|| "never".into()),
        target.as_secs(),
        verdict(t99.is_some_and(|t| t <= target)),
        share * 100.0,
        TARGET_MAX_SHARE_PER_SECOND * 100.0,
        verdict(share <= TARGET_MAX_SHARE_PER_SECOND)
    );
}

/// Times deploys: one project per sampled connected agent, then `POST /api/v1/deploy/{id}` at
/// random moments of a window (`--dispatch-rate` per second on average) and the arrival of the
/// matching `Deploy` frame at the agent.
async fn measure_dispatch(
    args: &Args,
    launcher: &Launcher,
    agent_ids: &[String],
    monitor: &mut Monitor,
) -> anyhow::Result<()> {
    use futures_util::TryStreamExt;
    use rand::Rng;
    monitor.drain_for(Duration::ZERO).await;
    let online: Vec<usize> = monitor.tally.online.iter().copied().collect();
    let count = args.dispatch.min(online.len());
    if count == 0 {
        println!("dispatch latency: no agent connected");
        return Ok(());
    }
    // Agents inserted straight into the database have no owner: only an admin sees them.
    launcher
        .admin(&["users", "add", "bench", "--admin"])
        .await?;
    let token = launcher.admin(&["tokens", "create", "bench"]).await?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let api = format!("http://{}/api/v1", launcher.address);
    let sample: Vec<usize> = rand::seq::index::sample(&mut rand::thread_rng(), online.len(), count)
        .into_iter()
        .map(|at| online[at])
        .collect();

    let started = Instant::now();
    let projects: Vec<Project> = futures_util::stream::iter(sample.iter().map(|&agent| {
        let request = http
            .post(format!("{api}/projects"))
            .bearer_auth(&token)
            .json(&serde_json::json!({
                "name": format!("bench-{agent}"),
                "agent_id": agent_ids[agent],
                "path": format!("/srv/bench-{agent}"),
            }));
        async move {
            let response = request.send().await?.error_for_status()?;
            response.json::<Project>().await
        }
    }))
    .buffer_unordered(8)
    .try_collect()
    .await
    .context("creating the projects to deploy")?;
    println!(
        "dispatch: created {} projects in {:.1} s",
        projects.len(),
        started.elapsed().as_secs_f64()
    );

    let window = Duration::from_secs_f64((count as f64 / args.dispatch_rate.max(1.0)).max(1.0));
    let start = Instant::now() + Duration::from_millis(100);
    let mut rng = rand::thread_rng();
    let mut requests = tokio::task::JoinSet::new();
    for project in projects {
        let at = start + rng.gen_range(Duration::ZERO..window);
        let request = http
            .post(format!("{api}/deploy/{}", project.id))
            .bearer_auth(&token);
        requests.spawn(async move {
            sleep_until(at).await;
            let sent_at = Instant::now();
            let outcome = match request.send().await {
                Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                    match response.json::<DeployAccepted>().await {
                        Ok(_) => Ok(sent_at.elapsed()),
                        Err(error) => Err(format!("reading the answer: {error}")),
                    }
                }
                Ok(response) => Err(format!("HTTP {}", response.status())),
                Err(error) => Err(error.to_string()),
            };
            (project.name.to_string(), sent_at, outcome)
        });
    }
    let mut collect = tokio::spawn(async move {
        let mut done = Vec::new();
        while let Some(result) = requests.join_next().await {
            if let Ok(result) = result {
                done.push(result);
            }
        }
        done
    });
    monitor.drain_for(window + Duration::from_millis(100)).await;
    let done: Vec<(String, Instant, Result<Duration, String>)> = loop {
        tokio::select! {
            biased;
            Some(event) = monitor.events.recv() => monitor.tally.absorb(event),
            done = &mut collect => break done.unwrap_or_default(),
        }
    };
    let accepted = done.iter().filter(|(.., outcome)| outcome.is_ok()).count();
    let deadline = Instant::now() + Duration::from_secs(5);
    let arrived = |tally: &Tally| tally.deploys.len() >= accepted;
    monitor
        .wait_until(deadline, Duration::from_secs(60), arrived, |_| {})
        .await;

    let mut first_arrival: HashMap<&str, Instant> = HashMap::new();
    for (project, at) in &monitor.tally.deploys {
        let entry = first_arrival.entry(project.as_str()).or_insert(*at);
        *entry = (*entry).min(*at);
    }
    let mut latencies = Vec::new();
    let mut after_accepted = Vec::new();
    let mut before_accepted = 0;
    let mut responses = Vec::new();
    let mut refused: HashMap<String, usize> = HashMap::new();
    for (name, sent_at, outcome) in &done {
        match outcome {
            Ok(response) => {
                responses.push(*response);
                if let Some(at) = first_arrival.get(name.as_str()) {
                    latencies.push(at.saturating_duration_since(*sent_at));
                    let accepted_at = *sent_at + *response;
                    if *at < accepted_at {
                        before_accepted += 1;
                    }
                    after_accepted.push(at.saturating_duration_since(accepted_at));
                }
            }
            Err(error) => *refused.entry(error.clone()).or_default() += 1,
        }
    }
    latencies.sort();
    responses.sort();
    let Some(max) = latencies.last().copied() else {
        println!("dispatch latency: no deploy arrived ({accepted} accepted of {count})");
        print_counts("  deploy requests failed", &refused);
        return Ok(());
    };
    let p99 = percentile(&latencies, 0.99);
    let (target, route) = if args.replicas > 1 {
        (
            TARGET_CROSS_DISPATCH_P99,
            " (request to the last replica, agent on the first)",
        )
    } else {
        (TARGET_DISPATCH_P99, "")
    };
    println!(
        "dispatch latency{route}, request sent → agent has the job ({} arrived of {accepted} \
         accepted, {count} sent over {:.1} s): p50 {}, p90 {}, p99 {}, max {} — target p99 ≤ \
         {}: {}",
        latencies.len(),
        window.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(p99),
        ms(max),
        ms(target),
        verdict(p99 <= target && latencies.len() == count)
    );
    after_accepted.sort();
    println!(
        "  202 received → agent has the job: p50 {}, p90 {}, p99 {}, max {} ({before_accepted} \
         arrived before the 202 did, counted as 0)",
        ms(percentile(&after_accepted, 0.50)),
        ms(percentile(&after_accepted, 0.90)),
        ms(percentile(&after_accepted, 0.99)),
        ms(after_accepted.last().copied().unwrap_or_default())
    );
    println!(
        "  202 answer after: p50 {}, p99 {}, max {}",
        ms(percentile(&responses, 0.50)),
        ms(percentile(&responses, 0.99)),
        ms(responses.last().copied().unwrap_or_default())
    );
    print_counts("  deploy requests failed", &refused);
    Ok(())
}

/// The coordinator's view of the agents: the events they report, folded into a [`Tally`].
struct Monitor {
    events: mpsc::UnboundedReceiver<Event>,
    tally: Tally,
}

impl Monitor {
    /// Takes in events until `done` holds (true) or `deadline` passes (false), calling
    /// `progress` every `every`.
    async fn wait_until(
        &mut self,
        deadline: Instant,
        every: Duration,
        done: impl Fn(&Tally) -> bool,
        progress: impl Fn(&Tally),
    ) -> bool {
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        while !done(&self.tally) {
            tokio::select! {
                biased;
                Some(event) = self.events.recv() => self.tally.absorb(event),
                _ = tick.tick() => progress(&self.tally),
                _ = sleep_until(deadline) => return false,
            }
        }
        true
    }

    /// Takes in events for `time`.
    async fn drain_for(&mut self, time: Duration) {
        let deadline = Instant::now() + time;
        loop {
            tokio::select! {
                biased;
                Some(event) = self.events.recv() => self.tally.absorb(event),
                _ = sleep_until(deadline) => return,
            }
        }
    }
}

/// What the simulated agents report to the coordinator.
enum Event {
    /// The first connection of this agent succeeded.
    Connected(usize),
    /// The first connection failed; the agent gives up.
    Failed(String),
    /// The server was busy (503) at the first connection; the agent backs off and tries again.
    RampRetried(String),
    /// A live connection of this agent ended.
    Lost(usize),
    /// This agent was welcomed again after a loss, at this moment.
    Reconnected(usize, Instant),
    /// A reconnection attempt failed; the agent backs off and tries again.
    RetryFailed(String),
    /// A timed heartbeat was answered after this long.
    RoundTrip(Duration),
    /// A `Deploy` for this project arrived at this moment.
    DeployArrived(String, Instant),
    /// A child process simulating agents sent this many timed heartbeats from this many agents.
    ProbesSent(usize, usize),
}

#[derive(Default)]
struct Tally {
    connected: usize,
    failed: HashMap<String, usize>,
    ramp_retried: HashMap<String, usize>,
    lost: usize,
    reconnected: Vec<Instant>,
    retry_failed: HashMap<String, usize>,
    round_trips: Vec<Duration>,
    /// Agents connected right now, by index.
    online: HashSet<usize>,
    /// Every `Deploy` received: project name and arrival.
    deploys: Vec<(String, Instant)>,
    /// Timed heartbeats the child processes sent, from how many agents, and how many of the
    /// processes have said so.
    probes_sent: usize,
    probing_agents: usize,
    probe_reports: usize,
}

impl Tally {
    fn absorb(&mut self, event: Event) {
        match event {
            Event::Connected(index) => {
                self.connected += 1;
                self.online.insert(index);
            }
            Event::Failed(error) => *self.failed.entry(error).or_default() += 1,
            Event::RampRetried(error) => *self.ramp_retried.entry(error).or_default() += 1,
            Event::Lost(index) => {
                self.lost += 1;
                self.online.remove(&index);
            }
            Event::Reconnected(index, at) => {
                self.reconnected.push(at);
                self.online.insert(index);
            }
            Event::RetryFailed(error) => *self.retry_failed.entry(error).or_default() += 1,
            Event::RoundTrip(rtt) => self.round_trips.push(rtt),
            Event::DeployArrived(project, at) => self.deploys.push((project, at)),
            Event::ProbesSent(sent, agents) => {
                self.probes_sent += sent;
                self.probing_agents += agents;
                self.probe_reports += 1;
            }
        }
    }

    fn failed_count(&self) -> usize {
        self.failed.values().sum()
    }

    /// Agents connected right now.
    fn live(&self) -> usize {
        (self.connected + self.reconnected.len()).saturating_sub(self.lost)
    }
}

/// What every simulated agent shares.
struct Ctx {
    /// Agent `i` connects to `dial[i % dial.len()]`.
    dial: Vec<SocketAddr>,
    /// Bounds the handshakes in flight during the first connection.
    ramp: Semaphore,
    events: mpsc::UnboundedSender<Event>,
    stop: watch::Receiver<bool>,
}

impl Ctx {
    fn report(&self, event: Event) {
        // The coordinator outlives the agents; a send can only fail while exiting.
        let _ = self.events.send(event);
    }
}

type Socket = WebSocketStream<TcpStream>;

/// One simulated agent: connects once under the ramp limit, then behaves like the real agent
/// (heartbeats, and on loss reconnects after [`Backoff`] delays) until told to stop.
async fn run_agent(
    ctx: Arc<Ctx>,
    index: usize,
    token: String,
    mut probes: Option<mpsc::Receiver<()>>,
) {
    let mut stop = ctx.stop.clone();
    let mut backoff = Backoff::default();
    let mut state = LinkState::default();
    let first = {
        let Ok(_permit) = ctx.ramp.acquire().await else {
            return;
        };
        loop {
            state.attempt_started = Instant::now();
            let attempt = tokio::select! {
                connected = connect(&ctx, index, &token) => connected,
                _ = stopped(&mut stop) => return,
            };
            match attempt {
                // The server admits a bounded number of handshakes at once; like the real
                // agent, back off and try again. Any other failure ends this agent.
                Err(error) if error.ends_with(BUSY) => {
                    ctx.report(Event::RampRetried(error));
                    backoff.connection_ended(state.attempt_started.elapsed());
                    tokio::select! {
                        _ = sleep(backoff.next_delay()) => {}
                        _ = stopped(&mut stop) => return,
                    }
                }
                other => break other,
            }
        }
    };
    let mut connection = match first {
        Ok(connection) => connection,
        Err(error) => return ctx.report(Event::Failed(error)),
    };
    ctx.report(Event::Connected(index));
    loop {
        let (socket, welcome) = connection;
        // As the real agent does: the server sizes the first reconnect window to its fleet.
        backoff.set_window(Duration::from_secs(welcome.reconnect_window_secs));
        if serve(
            &ctx,
            socket,
            welcome.heartbeat_interval_secs,
            &mut state,
            &mut probes,
            &mut stop,
        )
        .await
            == Ended::Stopped
        {
            return;
        }
        ctx.report(Event::Lost(index));
        // Exactly the real agent's loop (`agent::link::run`): the time since the attempt
        // started decides whether the curve resets, then wait the next delay and dial again.
        backoff.connection_ended(state.attempt_started.elapsed());
        connection = loop {
            tokio::select! {
                _ = sleep(backoff.next_delay()) => {}
                _ = stopped(&mut stop) => return,
            }
            state.attempt_started = Instant::now();
            let attempt = tokio::select! {
                connected = connect(&ctx, index, &token) => connected,
                _ = stopped(&mut stop) => return,
            };
            match attempt {
                Ok(connection) => {
                    ctx.report(Event::Reconnected(index, Instant::now()));
                    break connection;
                }
                Err(error) => {
                    ctx.report(Event::RetryFailed(error));
                    backoff.connection_ended(state.attempt_started.elapsed());
                }
            }
        };
    }
}

/// What outlives one connection of a simulated agent.
struct LinkState {
    attempt_started: Instant,
    seq: u64,
    /// Timed heartbeats waiting for their answer.
    in_flight: Vec<(u64, Instant)>,
}

impl Default for LinkState {
    fn default() -> Self {
        Self {
            attempt_started: Instant::now(),
            seq: 0,
            in_flight: Vec::new(),
        }
    }
}

#[derive(PartialEq, Eq)]
enum Ended {
    Stopped,
    Lost,
}

/// Heartbeats like the real agent and answers probe requests until the link breaks or the run
/// stops. Takes the socket so it is closed (and its descriptor freed) before any reconnect.
async fn serve(
    ctx: &Ctx,
    mut socket: Socket,
    heartbeat_secs: u64,
    state: &mut LinkState,
    probes: &mut Option<mpsc::Receiver<()>>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let interval = Duration::from_secs(heartbeat_secs.max(1));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                state.seq += 1;
                if send(&mut socket, &AgentToServer::Heartbeat(Heartbeat { seq: state.seq })).await.is_err() {
                    return Ended::Lost;
                }
            }
            Some(()) = next_probe(probes) => {
                state.seq += 1;
                state.in_flight.push((state.seq, Instant::now()));
                if send(&mut socket, &AgentToServer::Heartbeat(Heartbeat { seq: state.seq })).await.is_err() {
                    return Ended::Lost;
                }
            }
            frame = socket.next() => match frame {
                Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                    Ok(ServerToAgent::HeartbeatAck(Heartbeat { seq })) => {
                        if let Some(at) = state.in_flight.iter().position(|(sent, _)| *sent == seq) {
                            let (_, sent_at) = state.in_flight.swap_remove(at);
                            ctx.report(Event::RoundTrip(sent_at.elapsed()));
                        }
                    }
                    Ok(ServerToAgent::Deploy(job)) => {
                        ctx.report(Event::DeployArrived(job.project.to_string(), Instant::now()));
                        // What the real agent says first; the job then stays `received`.
                        let received = JobUpdate { job_id: job.job_id, event: JobEvent::Received };
                        if send(&mut socket, &AgentToServer::JobUpdate(received)).await.is_err() {
                            return Ended::Lost;
                        }
                    }
                    _ => {}
                },
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Ended::Lost,
                Some(Ok(_)) => {}
            },
            _ = stopped(stop) => return Ended::Stopped,
        }
    }
}

async fn next_probe(probes: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match probes {
        Some(probes) => probes.recv().await,
        None => std::future::pending().await,
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// TCP from this agent's own loopback address, WebSocket upgrade with the bearer token,
/// `Hello`, `Welcome`. Returns the socket and the heartbeat interval the server asked for.
async fn connect(ctx: &Ctx, index: usize, token: &str) -> Result<(Socket, Welcome), String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake(ctx, index, token)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no welcome within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

async fn handshake(ctx: &Ctx, index: usize, token: &str) -> Result<(Socket, Welcome), String> {
    let server = ctx.dial[index % ctx.dial.len()];
    let tcp = TcpSocket::new_v4().map_err(|error| format!("socket: {error}"))?;
    bind_address_no_port(&tcp).map_err(|error| format!("IP_BIND_ADDRESS_NO_PORT: {error}"))?;
    tcp.bind(SocketAddr::from((source_address(index), 0)))
        .map_err(|error| format!("bind: {error}"))?;
    let stream = tcp
        .connect(server)
        .await
        .map_err(|error| format!("TCP connect: {error}"))?;

    let mut request = format!("ws://{server}/api/v1/stream")
        .into_client_request()
        .map_err(|error| error.to_string())?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| "token is not a valid header value".to_string())?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    // Small buffers keep 50,000 client sockets affordable; they do not change what the server does.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (mut socket, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|error| match error {
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    format!("WebSocket upgrade: HTTP {}", response.status())
                }
                other => format!("WebSocket upgrade: {other}"),
            })?;

    send(&mut socket, &AgentToServer::Hello(hello(index))).await?;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return match serde_json::from_str(&text) {
                    Ok(ServerToAgent::Welcome(welcome)) => Ok((socket, welcome)),
                    Ok(ServerToAgent::Rejected(rejected)) => {
                        Err(format!("rejected: {}", rejected.reason))
                    }
                    Ok(_) => Err("expected a welcome".into()),
                    Err(error) => Err(format!("malformed message: {error}")),
                };
            }
            Some(Ok(Message::Close(_))) | None => {
                return Err("closed before the welcome".into());
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(format!("before the welcome: {error}")),
        }
    }
}

fn hello(index: usize) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: format!("loadgen-{}", env!("CARGO_PKG_VERSION")),
        hostname: format!("loadgen-{index}"),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        docker_version: None,
        compose_version: None,
    }
}

async fn send(socket: &mut Socket, message: &AgentToServer) -> Result<(), String> {
    let text = serde_json::to_string(message).map_err(|error| error.to_string())?;
    socket
        .send(Message::text(text))
        .await
        .map_err(|error| format!("sending: {error}"))
}

/// `127.0.0.2` … `127.0.0.254`: 253 source addresses, each with its own ephemeral port range.
fn source_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (index % 253) as u8)
}

/// Lets `connect` pick the source port per destination (4-tuple) instead of `bind` reserving
/// one per source address, so ports are not the limit.
fn bind_address_no_port(socket: &TcpSocket) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor owned by `socket`, and a pointer to an int that lives for the
    // call with its exact size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Raises the soft `RLIMIT_NOFILE` to `wanted` (raising the hard limit too when allowed), else
/// as far as the hard limit. Returns the limit now in force.
fn raise_fd_limit(wanted: u64) -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and keeps no pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading RLIMIT_NOFILE");
    }
    if limit.rlim_cur >= wanted {
        return Ok(limit.rlim_cur);
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(wanted);
    let raised = libc::rlimit {
        rlim_cur: wanted.min(nr_open),
        rlim_max: limit.rlim_max.max(wanted.min(nr_open)),
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(raised.rlim_cur);
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE: settle for the hard limit.
    let capped = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
        return Err(std::io::Error::last_os_error()).context("raising RLIMIT_NOFILE");
    }
    Ok(limit.rlim_max)
}

/// Inserts `n` agents in one transaction the way `Store::create_agent` does (UUID id, name,
/// hex SHA-256 of a freshly generated token, created now) and returns their ids and tokens.
async fn register_agents(
    launcher: &Launcher,
    n: usize,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let now = server::db::now_ms();
    let mut ids = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut rows = Vec::with_capacity(n);
    for index in 0..n {
        let token = Token::generate();
        let id = uuid::Uuid::new_v4().to_string();
        rows.push((
            id.clone(),
            format!("loadgen-{index}"),
            token.hash().0.clone(),
        ));
        ids.push(id);
        tokens.push(token.expose().to_string());
    }
    const INSERT: &str =
        "INSERT INTO agents (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)";
    match &launcher.database_url {
        Some(url) => {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .context("connecting to the run's PostgreSQL database")?;
            let mut tx = pool.begin().await?;
            for (id, name, hash) in &rows {
                sqlx::query(INSERT)
                    .bind(id)
                    .bind(name)
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .context("inserting agents")?;
            }
            tx.commit().await?;
            pool.close().await;
        }
        None => {
            let db = launcher.data_dir.join("stagely.db");
            let options = SqliteConnectOptions::new()
                .filename(&db)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .with_context(|| format!("opening {}", db.display()))?;
            let mut tx = pool.begin().await?;
            for (id, name, hash) in &rows {
                sqlx::query(INSERT)
                    .bind(id)
                    .bind(name)
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .context("inserting agents")?;
            }
            tx.commit().await?;
            pool.close().await;
        }
    }
    Ok((ids, tokens))
}

/// A database of its own for this run on the PostgreSQL server `--database-url` names.
struct FreshDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl FreshDatabase {
    async fn create(admin_url: &str) -> anyhow::Result<Self> {
        use sqlx::Connection;
        let name = format!("stagely_loadgen_{}", uuid::Uuid::new_v4().simple());
        let (base, _) = admin_url
            .rsplit_once('/')
            .context("--database-url must end with /<database>")?;
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .context("connecting to --database-url")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .context("creating the run's database")?;
        Ok(Self {
            admin_url: admin_url.to_string(),
            url: format!("{base}/{name}"),
            name,
        })
    }

    /// Drops the run's database (the servers are stopped by then; FORCE ends what is left).
    async fn drop_it(self) {
        use sqlx::Connection;
        // What the replicas handed each other during the run (the statistics of the table
        // that carries the messages; the replicas have stopped and flushed theirs by now).
        if let Ok(mut run) = sqlx::PgConnection::connect(&self.url).await {
            let inserted: Result<(i64,), _> = sqlx::query_as(
                "SELECT COALESCE(SUM(n_tup_ins), 0)::BIGINT FROM pg_stat_user_tables \
                 WHERE relname = 'replica_messages'",
            )
            .fetch_one(&mut run)
            .await;
            if let Ok((inserted,)) = inserted {
                println!(
                    "messages handed between replicas (rows into replica_messages): {inserted}"
                );
            }
            let _ = run.close().await;
        }
        if let Ok(mut admin) = sqlx::PgConnection::connect(&self.admin_url).await {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(error) = sqlx::query(&drop).execute(&mut admin).await {
                println!("warning: could not drop {}: {error}", self.name);
            }
        }
    }
}

/// How to start the server: always the same binary, address and data directory.
struct Launcher {
    bin: PathBuf,
    data_dir: PathBuf,
    address: SocketAddr,
    log: PathBuf,
    /// PostgreSQL shared by every replica; `None`: SQLite in `data_dir`.
    database_url: Option<String>,
    /// The same for every replica (only used with PostgreSQL).
    master_key: String,
    /// `STAGELY_MAX_CONNECTIONS`: what the open-file limit allows.
    max_connections: u64,
}

impl Launcher {
    /// Starts the server (SQLite in the data directory, logs appended to `server.log`) and
    /// waits until `/healthz` answers.
    async fn start(&self) -> anyhow::Result<ServerProcess> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = self.command();
        command
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                print_log_tail(&self.log);
                bail!("the server exited with {status} before answering /healthz");
            }
            if healthy(self.address).await {
                break;
            }
            if Instant::now() > deadline {
                print_log_tail(&self.log);
                bail!("the server did not answer /healthz within 30 s");
            }
            sleep(Duration::from_millis(10)).await;
        }
        Ok(ServerProcess {
            child,
            pid,
            log: self.log.clone(),
        })
    }

    /// Runs an admin command (`users add …`) against the same data directory and returns what
    /// it printed on stdout.
    async fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = tokio::time::timeout(
            Duration::from_secs(60),
            self.command().args(args).kill_on_drop(true).output(),
        )
        .await
        .with_context(|| format!("`stagely-server {}` took over 60 s", args.join(" ")))?
        .with_context(|| format!("starting {}", self.bin.display()))?;
        if !output.status.success() {
            bail!(
                "`stagely-server {}` failed ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// The server binary with this run's address and data directory, and nothing inherited
    /// that would point it elsewhere.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .env("STAGELY_BIND", self.address.to_string())
            .env("STAGELY_DATA_DIR", &self.data_dir)
            // The server's own cap (10,000 by default) would hold the rest in the listen queue:
            // here the open-file limit is the cap.
            .env("STAGELY_MAX_CONNECTIONS", self.max_connections.to_string());
        for name in [
            "DATABASE_URL",
            "DATABASE_URL_FILE",
            "APP_MASTER_KEY",
            "APP_MASTER_KEY_FILE",
            "STAGELY_PUBLIC_URL",
            "STAGELY_HEARTBEAT_SECS",
        ] {
            command.env_remove(name);
        }
        if let Some(url) = &self.database_url {
            command
                .env("DATABASE_URL", url)
                .env("APP_MASTER_KEY", &self.master_key);
        }
        command
    }
}

/// HAProxy with `deploy/haproxy.cfg` in front of the three replicas, on a free port.
struct Balancer {
    address: SocketAddr,
    _process: Child,
}

impl Balancer {
    async fn start(
        config: &Path,
        replicas: &[Launcher],
        data_dir: &Path,
        agents: usize,
    ) -> anyhow::Result<Self> {
        let address = free_port()?;
        let log = std::fs::File::create(data_dir.join("haproxy.log"))?;
        let mut command = Command::new("haproxy");
        command
            .arg("-db")
            .arg("-f")
            .arg(config)
            .env("STAGELY_LB_BIND", address.to_string())
            // Two sockets per agent, and room for the rest.
            .env("STAGELY_LB_MAXCONN", (agents + 1000).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        for (i, replica) in replicas.iter().enumerate() {
            command.env(
                format!("STAGELY_REPLICA_{}", i + 1),
                replica.address.to_string(),
            );
        }
        let mut process = command
            .spawn()
            .context("starting haproxy (apt-get install haproxy)")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !healthy(address).await {
            if let Some(status) = process.try_wait()? {
                print_log_tail(&data_dir.join("haproxy.log"));
                bail!("haproxy exited with {status}");
            }
            if Instant::now() > deadline {
                bail!("haproxy did not answer /healthz within 10 s");
            }
            sleep(Duration::from_millis(20)).await;
        }
        println!("balancer: HAProxy on {address} in front of the three replicas");
        Ok(Self {
            address,
            _process: process,
        })
    }
}

async fn healthy(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(address).await else {
        return false;
    };
    let request = format!("GET /healthz HTTP/1.0\r\nHost: {address}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response));
    // `HTTP/1.0 200` from the server itself, `HTTP/1.1 200` through HAProxy.
    matches!(read.await, Ok(Ok(_)))
        && response.starts_with(b"HTTP/1.")
        && response.get(8..12) == Some(b" 200".as_slice())
}

struct ServerProcess {
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl ServerProcess {
    fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(&self.pid.to_string()).context("reading the server's /proc/<pid>/status")
    }

    /// `kill -9`: no graceful shutdown, sockets reset by the kernel.
    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then SIGKILL if the graceful shutdown takes more than 10 s.
    async fn stop(mut self) {
        // SAFETY: signals our own child, which has not been reaped yet (we hold it).
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Counts the server's warnings and errors (all its runs), grouped by message.
    fn print_log_summary(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for line in text.lines() {
            let Some(at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else {
                continue;
            };
            // `LEVEL target: message key=value …`: keep the level, target and message.
            let entry = line[at..].trim();
            let message = match entry.find('=') {
                Some(field) => entry[..field]
                    .rsplit_once(' ')
                    .map_or(entry, |(head, _)| head),
                None => entry,
            };
            *kinds.entry(message.to_string()).or_default() += 1;
        }
        println!(
            "server log: {} warnings or errors",
            kinds.values().sum::<usize>()
        );
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
        for (message, count) in kinds {
            println!("  {count} × {message}");
        }
    }
}

fn print_log_tail(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(20)..] {
        eprintln!("  server: {line}");
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`, in KiB.
struct Memory {
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    shmem_kib: u64,
}

impl Memory {
    fn of(pid: &str) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|line| line.starts_with(name))?;
            line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        Some(Self {
            rss_kib: field("VmRSS:")?,
            anon_kib: field("RssAnon:").unwrap_or(0),
            file_kib: field("RssFile:").unwrap_or(0),
            shmem_kib: field("RssShmem:").unwrap_or(0),
        })
    }
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |kib: u64| kib as f64 / 1024.0;
        write!(
            f,
            "{:.1} MiB (anon {:.1}, file {:.1}, shmem {:.1})",
            mib(self.rss_kib),
            mib(self.anon_kib),
            mib(self.file_kib),
            mib(self.shmem_kib)
        )
    }
}

/// A port that was free a moment ago; the server binds it right after.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

fn print_counts(label: &str, counts: &HashMap<String, usize>) {
    let mut counts: Vec<_> = counts.iter().collect();
    counts.sort_by_key(|(_, count)| std::cmp::Reverse(**count));
    for (error, count) in counts {
        println!("{label}: {count} × {error}");
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
