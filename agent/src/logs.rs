//! Streaming a project's container logs to the server.
//!
//! One `compose logs -f --tail N --timestamps --no-log-prefix <service>` process runs per
//! service, so every line is known to belong to its service without parsing Compose's prefixes;
//! for a Swarm stack it is `docker service logs -f --tail N --timestamps --raw
//! <stack>_<service>`, every task of the service on every node, without the task prefix.
//! Lines pass the [`Redactor`], then a bounded queue, then a batcher that sends a
//! [`LogBatch`] at least every [`BATCH_WINDOW`] (or sooner when it is full: a line is cut to
//! [`budget::LINE`] and a batch to [`budget::LOG_BATCH`], as encoded JSON, so every frame fits
//! the server's limit). When the receiver
//! cannot keep up the queue fills and further lines are dropped and counted; the next batch
//! carries the count, which the dashboard shows as "N lines skipped". Memory stays bounded.
//!
//! Dropping the future returned by [`stream`] kills every `compose logs` process it started
//! (the runner kills their process groups), so a stop request or a lost connection leaves no
//! orphan behind.

use crate::runner::{self, OutputLine, Redactor};
use crate::system::Compose;
use crate::wire;
use shared::protocol::{budget, LogBatch, LogMessage, LogStream};
use shared::target::DeployTarget;
use shared::{AgentToServer, JobId, ProjectId, ProjectName, ServiceName};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest a line waits in the agent before it is sent.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Lines waiting to be batched; beyond this they are dropped and counted.
const QUEUE_LINES: usize = 2_000;
/// Longest a first word may be to count as Docker's timestamp (RFC 3339 with nanoseconds and
/// an offset takes 35).
const MAX_TIMESTAMP_BYTES: usize = 40;

/// What to stream.
#[derive(Clone, Debug)]
pub struct LogRequest {
    pub stream_id: JobId,
    pub project: ProjectName,
    /// Compose file arguments, as a deploy passes them (`-f <file>` …) — needed by v1.
    pub files: Vec<PathBuf>,
    pub project_dir: PathBuf,
    pub services: Vec<ServiceName>,
    pub tail: u32,
    /// A Compose project, or a Swarm stack whose services' logs are read through the manager.
    pub target: DeployTarget,
    /// The Stagely project: a stack of that name must be its own (see [`stream`]).
    pub project_id: Option<ProjectId>,
}

/// Streams until every `logs -f` process ends or the future is dropped.
pub async fn stream(
    request: LogRequest,
    compose: Compose,
    redactor: Redactor,
    out: mpsc::Sender<AgentToServer>,
) {
    // A stack name is Swarm-wide: the stack of that name may be another project's (deployed
    // through another manager's agent) or one started by hand, whose lines are not this
    // project's to read. It is checked as a deploy checks it; refused, nothing is streamed.
    if request.target == DeployTarget::Swarm {
        if let Err(error) = crate::swarm::check_owner(&request.project, request.project_id).await {
            tracing::warn!(%error, project = %request.project, "not streaming the stack's logs");
            return;
        }
    }
    let (lines_tx, lines_rx) = mpsc::channel::<LogMessage>(QUEUE_LINES);
    let skipped = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = request
        .services
        .iter()
        .map(|service| {
            let lines = lines_tx.clone();
            read_service(
                &request,
                &compose,
                service.clone(),
                &redactor,
                lines,
                skipped.clone(),
            )
        })
        .collect();
    drop(lines_tx);
    let readers = futures_util::future::join_all(readers);
    let batcher = batch(request.stream_id, lines_rx, skipped, out);
    // The batcher ends once every reader has ended (all senders dropped) and it has flushed.
    let ((), ()) = tokio::join!(
        async {
            readers.await;
        },
        batcher
    );
}

async fn read_service(
    request: &LogRequest,
    compose: &Compose,
    service: ServiceName,
    redactor: &Redactor,
    lines: mpsc::Sender<LogMessage>,
    skipped: Arc<AtomicU64>,
) {
    let spec = match request.target {
        DeployTarget::Compose => compose_logs(request, compose, &service),
        DeployTarget::Swarm => service_logs(request, &service),
    };
    let result = runner::run(&spec, redactor, |line| {
        let message = log_message(&request.project, &service, line);
        if lines.try_send(message).is_err() {
            skipped.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, service = %service, "log stream ended with an error");
    }
}

/// `docker service logs` of the stack's service: every task's lines, with the timestamps
/// first as `compose logs` prints them.
fn service_logs(request: &LogRequest, service: &ServiceName) -> runner::CommandSpec {
    let tail = request.tail.to_string();
    let name = format!("{}_{service}", request.project);
    runner::CommandSpec::new(
        "docker",
        [
            "service",
            "logs",
            "-f",
            "--timestamps",
            "--raw",
            "--no-trunc",
            "--tail",
            tail.as_str(),
            name.as_str(),
        ],
    )
    .no_timeout()
}

/// `compose logs` of one service of the project.
fn compose_logs(
    request: &LogRequest,
    compose: &Compose,
    service: &ServiceName,
) -> runner::CommandSpec {
    let mut args: Vec<std::ffi::OsString> = vec!["-p".into(), request.project.as_str().into()];
    for file in &request.files {
        args.push("-f".into());
        args.push(file.clone().into());
    }
    args.push("--project-directory".into());
    args.push(request.project_dir.clone().into());
    let tail = request.tail.to_string();
    for arg in [
        "logs",
        "-f",
        "--no-color",
        "--timestamps",
        "--no-log-prefix",
        "--tail",
        tail.as_str(),
    ] {
        args.push(arg.into());
    }
    args.push(service.as_str().into());
    compose
        .command(args)
        .current_dir(&request.project_dir)
        .no_timeout()
}

/// One line of `compose logs --timestamps` as a message, its text within [`budget::LINE`].
fn log_message(project: &ProjectName, service: &ServiceName, line: OutputLine) -> LogMessage {
    let (stream, text) = match line {
        OutputLine::Stdout(text) => (LogStream::Stdout, text),
        OutputLine::Stderr(text) => (LogStream::Stderr, text),
    };
    let (timestamp, text) = split_timestamp(&text);
    LogMessage {
        project: project.clone(),
        service: service.clone(),
        stream,
        timestamp: timestamp.map(str::to_string),
        line: wire::cut(text, budget::LINE),
    }
}

/// Collects lines into batches: sent when [`BATCH_WINDOW`] has passed since the first line of
/// the batch, or when the next line would take its messages over [`budget::LOG_BATCH`] bytes
/// of JSON (that line then starts the next batch).
async fn batch(
    stream_id: JobId,
    mut lines: mpsc::Receiver<LogMessage>,
    skipped: Arc<AtomicU64>,
    out: mpsc::Sender<AgentToServer>,
) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(message) => message,
            None => match lines.recv().await {
                Some(message) => message,
                None => return,
            },
        };
        let mut bytes = wire::encoded_len(&first);
        let mut messages = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, lines.recv()).await {
            // The message and the comma before it.
            let size = wire::encoded_len(&message) + 1;
            if bytes + size > budget::LOG_BATCH {
                next = Some(message);
                break;
            }
            bytes += size;
            messages.push(message);
        }
        let batch = LogBatch {
            stream_id,
            messages,
            skipped: skipped.swap(0, Ordering::Relaxed),
        };
        if out.send(AgentToServer::Log(batch)).await.is_err() {
            return; // the connection is gone
        }
    }
}

/// `2026-11-26T19:11:12.123456789Z rest` → (timestamp, rest).
fn split_timestamp(line: &str) -> (Option<&str>, &str) {
    match line.split_once(' ') {
        Some((first, rest))
            if (20..=MAX_TIMESTAMP_BYTES).contains(&first.len())
                && first.as_bytes()[4] == b'-'
                && first.contains('T') =>
        {
            (Some(first), rest)
        }
        _ => (None, line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::MAX_FRAME_BYTES;
    use uuid::Uuid;

    fn message(line: &str) -> LogMessage {
        LogMessage {
            project: ProjectName::parse("shop").unwrap(),
            service: ServiceName::parse("web").unwrap(),
            stream: LogStream::Stdout,
            timestamp: None,
            line: line.into(),
        }
    }

    #[test]
    fn docker_timestamps_are_split_off() {
        let (at, rest) = split_timestamp("2026-11-26T19:11:12.123456789Z hello world");
        assert_eq!(at, Some("2026-11-26T19:11:12.123456789Z"));
        assert_eq!(rest, "hello world");
        assert_eq!(
            split_timestamp("no timestamp here"),
            (None, "no timestamp here")
        );
    }

    #[test]
    fn a_first_word_too_long_to_be_a_timestamp_stays_in_the_line() {
        let line = format!("2026-11-26T{} rest", "x".repeat(100));
        assert_eq!(split_timestamp(&line), (None, line.as_str()));
    }

    #[tokio::test(start_paused = true)]
    async fn every_log_frame_fits_its_budget_however_the_lines_look_and_none_is_lost() {
        // Lines as the runner hands them over (at most 64 KiB): quotes and control characters
        // take two and six bytes as JSON, and a long first word may look like a timestamp.
        let piece = 64 * 1024;
        let fake_timestamp = format!("2026-11-26T{} x", "\u{1}".repeat(piece - 20));
        let hostile = [
            fake_timestamp.clone(),
            fake_timestamp.clone(),
            fake_timestamp,
            "\"".repeat(piece),
            "\u{1}".repeat(piece),
            format!(
                "2026-11-26T19:11:12.123456789Z {}",
                "\u{1}".repeat(piece - 40)
            ),
            "é".repeat(piece / 2),
            "short".into(),
        ];
        let (project, service) = (
            ProjectName::parse("shop").unwrap(),
            ServiceName::parse("web").unwrap(),
        );
        let (lines_tx, lines_rx) = mpsc::channel(QUEUE_LINES);
        let (out_tx, mut out_rx) = mpsc::channel(QUEUE_LINES);
        let batcher = tokio::spawn(batch(
            JobId(Uuid::new_v4()),
            lines_rx,
            Arc::default(),
            out_tx,
        ));
        for _ in 0..50 {
            for line in &hostile {
                let message = log_message(&project, &service, OutputLine::Stdout(line.clone()));
                lines_tx.send(message).await.unwrap();
            }
        }
        drop(lines_tx);

        let mut received = 0;
        while let Some(frame) = out_rx.recv().await {
            let text = serde_json::to_string(&frame).unwrap();
            assert!(
                text.len() <= MAX_FRAME_BYTES,
                "a frame of {} bytes",
                text.len()
            );
            assert!(
                text.len() <= budget::LOG_BATCH + 512,
                "a frame of {} bytes",
                text.len()
            );
            let AgentToServer::Log(batch) = frame else {
                panic!("not a log batch")
            };
            received += batch.messages.len();
        }
        assert_eq!(received, 50 * hostile.len());
        batcher.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn lines_are_batched_within_the_window_and_carry_the_skipped_count() {
        let (lines_tx, lines_rx) = mpsc::channel(16);
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let skipped = Arc::new(AtomicU64::new(7));
        let stream_id = JobId(Uuid::new_v4());
        let batcher = tokio::spawn(batch(stream_id, lines_rx, skipped, out_tx));

        lines_tx.send(message("one")).await.unwrap();
        lines_tx.send(message("two")).await.unwrap();
        tokio::time::sleep(BATCH_WINDOW * 2).await;
        lines_tx.send(message("three")).await.unwrap();
        drop(lines_tx);

        let Some(AgentToServer::Log(first)) = out_rx.recv().await else {
            panic!("no batch")
        };
        let lines: Vec<_> = first.messages.iter().map(|m| m.line.as_str()).collect();
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(first.skipped, 7);
        let Some(AgentToServer::Log(second)) = out_rx.recv().await else {
            panic!("no batch")
        };
        assert_eq!(second.messages.len(), 1);
        assert_eq!(second.skipped, 0);
        batcher.await.unwrap();
    }
}
