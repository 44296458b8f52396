//! Streaming a project's container logs to the server.
//!
//! One `compose logs -f --tail N --timestamps --no-log-prefix <service>` process runs per
//! service, so every line is known to belong to its service without parsing Compose's prefixes.
//! Lines pass the [`Redactor`], then a bounded queue, then a batcher that sends a
//! [`LogBatch`] at least every [`BATCH_WINDOW`] (or sooner when it is full). When the receiver
//! cannot keep up the queue fills and further lines are dropped and counted; the next batch
//! carries the count, which the dashboard shows as "N lines skipped". Memory stays bounded.
//!
//! Dropping the future returned by [`stream`] kills every `compose logs` process it started
//! (the runner kills their process groups), so a stop request or a lost connection leaves no
//! orphan behind.

use crate::runner::{self, OutputLine, Redactor};
use crate::system::Compose;
use shared::protocol::{LogBatch, LogMessage, LogStream};
use shared::{AgentToServer, JobId, ProjectName, ServiceName};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest a line waits in the agent before it is sent.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Lines waiting to be batched; beyond this they are dropped and counted.
const QUEUE_LINES: usize = 2_000;
/// A batch is sent once it holds this many bytes of text, keeping frames well below the
/// server's message cap.
const BATCH_BYTES: usize = 64 * 1024;
/// A single line longer than this is cut (with a marker) before it is queued.
const MAX_LINE_BYTES: usize = 16 * 1024;

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
}

/// Streams until every `logs -f` process ends or the future is dropped.
pub async fn stream(
    request: LogRequest,
    compose: Compose,
    redactor: Redactor,
    out: mpsc::Sender<AgentToServer>,
) {
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
    let spec = compose
        .command(args)
        .current_dir(&request.project_dir)
        .no_timeout();
    let result = runner::run(&spec, redactor, |line| {
        let (stream, text) = match line {
            OutputLine::Stdout(text) => (LogStream::Stdout, text),
            OutputLine::Stderr(text) => (LogStream::Stderr, text),
        };
        let (timestamp, text) = split_timestamp(&text);
        let message = LogMessage {
            project: request.project.clone(),
            service: service.clone(),
            stream,
            timestamp: timestamp.map(str::to_string),
            line: truncate(text),
        };
        if lines.try_send(message).is_err() {
            skipped.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, service = %service, "log stream ended with an error");
    }
}

/// Collects lines into batches: sent when [`BATCH_WINDOW`] has passed since the first line of
/// the batch, or when it reaches [`BATCH_BYTES`].
async fn batch(
    stream_id: JobId,
    mut lines: mpsc::Receiver<LogMessage>,
    skipped: Arc<AtomicU64>,
    out: mpsc::Sender<AgentToServer>,
) {
    while let Some(first) = lines.recv().await {
        let mut bytes = first.line.len();
        let mut messages = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while bytes < BATCH_BYTES {
            match tokio::time::timeout_at(deadline, lines.recv()).await {
                Ok(Some(message)) => {
                    bytes += message.line.len();
                    messages.push(message);
                }
                Ok(None) | Err(_) => break,
            }
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
            if first.len() >= 20 && first.as_bytes()[4] == b'-' && first.contains('T') =>
        {
            (Some(first), rest)
        }
        _ => (None, line),
    }
}

fn truncate(line: &str) -> String {
    if line.len() <= MAX_LINE_BYTES {
        return line.to_string();
    }
    let mut end = MAX_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [line cut at 16 KiB]", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn very_long_lines_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_LINE_BYTES);
        let cut = truncate(&long);
        assert!(cut.len() < MAX_LINE_BYTES + 40);
        assert!(cut.ends_with("[line cut at 16 KiB]"));
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
