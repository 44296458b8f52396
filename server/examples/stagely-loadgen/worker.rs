//! `--processes`: the simulated agents spread over child processes of the load generator, so
//! a fleet larger than one process's open-file limit can be measured (issue 17: 50,000 agents
//! under a limit of 20,000).
//!
//! The coordinator (which started the servers and registered the agents) writes each child one
//! JSON line, its [`Job`], then keeps its stdin open for commands: `probe` (cue the sampled
//! agents' timed heartbeats, as the coordinator does with its own) and end of input (stop).
//! The child runs the very agents a single process runs ([`super::run_agent`]) and writes each
//! [`Event`] as one line on stdout, which the coordinator folds into the same tally as its own.
//! An event's moment is taken when the coordinator reads it (the same machine; the idle and
//! heartbeat figures do not use it).

use super::{schedule_probes, spawn_agents, Args, Ctx, Event, ProbeCues};
use anyhow::Context;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

/// What one child simulates.
#[derive(serde::Serialize, serde::Deserialize)]
struct Job {
    /// Agent `i` dials `dial[i % dial.len()]`, as in one process.
    dial: Vec<SocketAddr>,
    /// The number of this child's first agent among all of them.
    first: usize,
    tokens: Vec<String>,
    /// How many of its agents take part in the heartbeat measurement.
    sample: usize,
    /// Its share of the handshakes in flight at once.
    concurrency: usize,
}

/// The children, from the coordinator's side.
pub struct Workers {
    children: Vec<(Child, ChildStdin)>,
}

impl Workers {
    /// Starts `--processes` children of this program, each with an equal share of the agents,
    /// and forwards what they report to `events`.
    pub async fn spawn(
        args: &Args,
        dial: &[SocketAddr],
        tokens: Vec<String>,
        events: mpsc::UnboundedSender<Event>,
    ) -> anyhow::Result<Self> {
        let program = std::env::current_exe().context("finding this program")?;
        let share = tokens.len().div_ceil(args.processes);
        let mut children = Vec::with_capacity(args.processes);
        for (k, tokens) in tokens.chunks(share).enumerate() {
            let mut child = Command::new(&program)
                .arg("--worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting a process to simulate agents")?;
            let mut stdin = child.stdin.take().context("its stdin")?;
            let stdout = child.stdout.take().context("its stdout")?;
            let job = Job {
                dial: dial.to_vec(),
                first: k * share,
                tokens: tokens.to_vec(),
                sample: args.heartbeat_sample.div_ceil(args.processes),
                concurrency: args.concurrency.div_ceil(args.processes),
            };
            let mut line = serde_json::to_vec(&job)?;
            line.push(b'\n');
            stdin
                .write_all(&line)
                .await
                .context("handing a process its agents")?;
            tokio::spawn(forward(BufReader::new(stdout), events.clone()));
            children.push((child, stdin));
        }
        Ok(Self { children })
    }

    pub fn count(&self) -> usize {
        self.children.len()
    }

    /// Tells every child to cue its sampled agents' timed heartbeats now; each answers with
    /// [`Event::ProbesSent`] once its probe window is over.
    pub async fn probe(&mut self) {
        for (_, stdin) in &mut self.children {
            // A child that is gone just reports nothing; the wait for reports times out.
            let _ = stdin.write_all(b"probe\n").await;
        }
    }
}

/// Reads a child's events until it exits.
async fn forward(
    stdout: BufReader<tokio::process::ChildStdout>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut lines = stdout.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match decode(&line) {
            Some(event) => {
                if events.send(event).is_err() {
                    return;
                }
            }
            None => eprintln!("stagely-loadgen: a worker said something unexpected: {line}"),
        }
    }
}

/// The child: `stagely-loadgen --worker`.
pub async fn run() -> anyhow::Result<()> {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let job: Job = serde_json::from_str(
        &input
            .next_line()
            .await?
            .context("no job on stdin (this mode is started by stagely-loadgen --processes)")?,
    )
    .context("reading the job")?;
    // One descriptor per agent of this child.
    super::raise_fd_limit(job.tokens.len() as u64 + 256)?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (stop_tx, stop) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        dial: job.dial,
        ramp: Semaphore::new(job.concurrency.max(1)),
        events: events_tx,
        stop,
    });
    let mut cues: ProbeCues = spawn_agents(&ctx, job.tokens, job.first, job.sample);
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let mut out = tokio::io::BufWriter::new(tokio::io::stdout());
    loop {
        tokio::select! {
            Some(event) = events.recv() => {
                write(&mut out, &event).await?;
                // What else is ready goes in the same write.
                while let Ok(event) = events.try_recv() {
                    write(&mut out, &event).await?;
                }
                out.flush().await?;
            }
            Some(event) = reports.recv() => {
                write(&mut out, &event).await?;
                out.flush().await?;
            }
            command = input.next_line() => match command?.as_deref() {
                Some("probe") => {
                    let scheduler = schedule_probes(std::mem::take(&mut cues));
                    let report = report_tx.clone();
                    tokio::spawn(async move {
                        let (sent, agents) = scheduler.await.unwrap_or_default();
                        let _ = report.send(Event::ProbesSent(sent, agents));
                    });
                }
                Some(other) => anyhow::bail!("unknown command {other:?}"),
                None => break,
            },
        }
    }
    let _ = stop_tx.send(true);
    // The agents close their sockets as they stop.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

async fn write(
    out: &mut tokio::io::BufWriter<tokio::io::Stdout>,
    event: &Event,
) -> anyhow::Result<()> {
    if let Some(line) = encode(event) {
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await?;
    }
    Ok(())
}

/// One event as a line: a word, then its value (an error's text on one line).
fn encode(event: &Event) -> Option<String> {
    let one_line = |text: &str| text.replace(['\n', '\r'], " ");
    Some(match event {
        Event::Connected(index) => format!("connected {index}"),
        Event::Failed(error) => format!("failed {}", one_line(error)),
        Event::RampRetried(error) => format!("ramp_retried {}", one_line(error)),
        Event::Lost(index) => format!("lost {index}"),
        Event::Reconnected(index, _) => format!("reconnected {index}"),
        Event::RetryFailed(error) => format!("retry_failed {}", one_line(error)),
        Event::RoundTrip(rtt) => format!("rtt {}", rtt.as_nanos()),
        Event::ProbesSent(sent, agents) => format!("probes_sent {sent} {agents}"),
        // Not simulated in a child (`--processes` needs `--dispatch 0`).
        Event::DeployArrived(..) => return None,
    })
}

fn decode(line: &str) -> Option<Event> {
    let (word, value) = line.split_once(' ')?;
    let index = || value.parse::<usize>().ok();
    Some(match word {
        "connected" => Event::Connected(index()?),
        "failed" => Event::Failed(value.to_string()),
        "ramp_retried" => Event::RampRetried(value.to_string()),
        "lost" => Event::Lost(index()?),
        "reconnected" => Event::Reconnected(index()?, Instant::now()),
        "retry_failed" => Event::RetryFailed(value.to_string()),
        "rtt" => Event::RoundTrip(Duration::from_nanos(value.parse().ok()?)),
        "probes_sent" => {
            let (sent, agents) = value.split_once(' ')?;
            Event::ProbesSent(sent.parse().ok()?, agents.parse().ok()?)
        }
        _ => return None,
    })
}
