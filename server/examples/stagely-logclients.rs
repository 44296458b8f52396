//! `stagely-logclients`: the browser side of the log pipeline benchmark
//! (`scripts/bench-log-pipeline.sh`). Opens N WebSocket clients of `/api/v1/events` with an API
//! token, each watching one project like a dashboard tab (`DashboardRequest::Watch`), and for a
//! measured window counts the log lines that reach each client, their latency and the lines
//! the pipeline reported skipped.
//!
//! Latency is from the container's write to the client's receipt: every line carries Docker's
//! timestamp (`compose logs --timestamps`, taken by the engine when it reads the line from the
//! container's stdout, on this host's clock), and the client subtracts it from its own clock
//! when the frame arrives. The line's text is the container's own sequence number (`seq`
//! output), so the lines written in the window are known too: per service, the highest minus
//! the lowest number seen.

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use shared::api::DashboardRequest;
use shared::ProjectId;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
struct Args {
    /// The server, e.g. http://127.0.0.1:3000
    #[arg(long)]
    server: String,
    /// The project to watch.
    #[arg(long)]
    project: ProjectId,
    /// How many tabs.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Seconds before measuring (the stream starts, the replay arrives).
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    secs: u64,
}

/// Latency histogram: 0.1 ms buckets up to 60 s, and the rest counted above it.
struct Histogram {
    buckets: Vec<u64>,
    above: u64,
    max: Duration,
}

const BUCKET: Duration = Duration::from_micros(100);
const BUCKETS: usize = 600_000;

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            above: 0,
            max: Duration::ZERO,
        }
    }

    fn add(&mut self, latency: Duration) {
        self.max = self.max.max(latency);
        let bucket = (latency.as_micros() / BUCKET.as_micros()) as usize;
        match self.buckets.get_mut(bucket) {
            Some(count) => *count += 1,
            None => self.above += 1,
        }
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.above += other.above;
        self.max = self.max.max(other.max);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().sum::<u64>() + self.above
    }

    /// The upper edge of the bucket holding the `p`th percentile.
    fn percentile(&self, p: f64) -> String {
        let total = self.count();
        if total == 0 {
            return "-".into();
        }
        let wanted = ((total as f64) * p / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return format!("{:.1} ms", ((bucket + 1) as f64) * 0.1);
            }
        }
        format!("> {} s", BUCKETS / 10_000)
    }
}

/// What one client saw in the measured window.
struct Seen {
    lines: u64,
    skipped: u64,
    resyncs: u64,
    latency: Histogram,
    /// Per service: the lowest and highest sequence number seen.
    numbers: HashMap<String, (u64, u64)>,
    closed: Option<String>,
}

/// A `logs` event, reading only what is measured (nothing is copied).
#[derive(Deserialize)]
struct LogsEvent<'a> {
    #[serde(borrow)]
    data: LogLinesView<'a>,
}

#[derive(Deserialize)]
struct LogLinesView<'a> {
    #[serde(borrow)]
    lines: Vec<LineView<'a>>,
    #[serde(default)]
    skipped: u64,
}

#[derive(Deserialize)]
struct LineView<'a> {
    #[serde(borrow)]
    service: &'a str,
    #[serde(borrow, default)]
    timestamp: Option<&'a str>,
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
}

async fn client(args: &Args, token: &str, start: Instant, end: Instant) -> anyhow::Result<Seen> {
    let url = format!(
        "{}/api/v1/events",
        args.server.replacen("http", "ws", 1).trim_end_matches('/')
    );
    let mut request = url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("connecting to /api/v1/events")?;
    let watch = DashboardRequest::Watch {
        project_id: args.project,
        resume: None,
    };
    socket
        .send(Message::Text(serde_json::to_string(&watch)?.into()))
        .await?;
    let mut seen = Seen {
        lines: 0,
        skipped: 0,
        resyncs: 0,
        latency: Histogram::new(),
        numbers: HashMap::new(),
        closed: None,
    };
    let mut replayed = false;
    loop {
        let message = match tokio::time::timeout_at(end.into(), socket.next()).await {
            Err(_) => break,
            Ok(None) => {
                seen.closed = Some("the server closed the feed".into());
                break;
            }
            Ok(Some(Err(error))) => {
                seen.closed = Some(error.to_string());
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        let received = time::OffsetDateTime::now_utc();
        let measuring = Instant::now() >= start;
        let Message::Text(text) = message else {
            continue;
        };
        if text.starts_with(r#"{"type":"resync""#) {
            seen.resyncs += u64::from(measuring);
            continue;
        }
        if !text.starts_with(r#"{"type":"logs""#) {
            continue;
        }
        let event: LogsEvent = serde_json::from_str(&text).context("reading a logs event")?;
        // The first one is the replay of the buffer, sent when the tab starts watching.
        if !replayed {
            replayed = true;
            continue;
        }
        if !measuring {
            continue;
        }
        seen.skipped += event.data.skipped;
        for line in event.data.lines {
            seen.lines += 1;
            if let Some(at) = line.timestamp.and_then(|at| {
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
            }) {
                let latency = received - at;
                seen.latency
                    .add(latency.try_into().unwrap_or(Duration::ZERO));
            }
            if let Ok(number) = line.text.trim().parse::<u64>() {
                let range = seen
                    .numbers
                    .entry(line.service.to_string())
                    .or_insert((number, number));
                range.0 = range.0.min(number);
                range.1 = range.1.max(number);
            }
        }
    }
    let _ = socket.close(None).await;
    Ok(seen)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = std::env::var("STAGELY_API_TOKEN").context("set STAGELY_API_TOKEN")?;
    let start = Instant::now() + Duration::from_secs(args.warmup_secs);
    let end = start + Duration::from_secs(args.secs);
    let runs = (0..args.clients).map(|_| client(&args, &token, start, end));
    let results = futures_util::future::join_all(runs).await;
    let mut latency = Histogram::new();
    let (mut lines, mut skipped, mut resyncs, mut written) = (0u64, 0u64, 0u64, Vec::new());
    for (index, result) in results.into_iter().enumerate() {
        let seen = result.with_context(|| format!("client {index}"))?;
        if let Some(reason) = &seen.closed {
            bail!("client {index} lost its feed: {reason}");
        }
        lines += seen.lines;
        skipped += seen.skipped;
        resyncs += seen.resyncs;
        latency.merge(&seen.latency);
        written.push(
            seen.numbers
                .values()
                .map(|(low, high)| high - low + 1)
                .sum::<u64>(),
        );
    }
    let secs = args.secs as f64;
    let per_client = lines as f64 / args.clients as f64 / secs;
    let most_written = written.iter().copied().max().unwrap_or(0);
    println!(
        "clients {} | lines received {} ({:.0} lines/s per client, {:.0} lines/s in all) | \
         written by the containers in the window (seen by the busiest client) {} ({:.0} lines/s) | \
         skipped (reported by the agent, summed over clients) {} | resyncs {}",
        args.clients,
        lines,
        per_client,
        lines as f64 / secs,
        most_written,
        most_written as f64 / secs,
        skipped,
        resyncs
    );
    println!(
        "latency write → client: p50 {} | p90 {} | p99 {} | max {:.1} ms | over 60 s {}",
        latency.percentile(50.0),
        latency.percentile(90.0),
        latency.percentile(99.0),
        latency.max.as_secs_f64() * 1000.0,
        latency.above
    );
    Ok(())
}
