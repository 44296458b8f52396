//! The log feeds of watched projects: which projects tabs watch, and their recent lines.
//!
//! Container logs are streamed only while someone watches: the first tab that watches a project
//! starts `compose logs -f` on its agent (`StartLogs`, sent by `ops::logs`); the last one to
//! leave stops it. Lines arrive in batches, get a sequence number and go to the
//! watching tabs over the hub's event bus; the last [`BUFFER_LINES`] are kept so that a tab
//! that reconnects gets exactly the lines it missed (its [`LogCursor`]) and no line twice.
//!
//! The stream is restarted when the agent reconnects and when a deploy has (re)created the
//! containers, asking for the recent past again. Docker's timestamps tell which of those lines
//! were already sent: per service, a line not newer than the newest one sent before the restart
//! is dropped. Lines of a running stream are never dropped, even out of order (stdout and
//! stderr, or two replicas of a service, interleave).

use shared::api::{LogCursor, LogLine, LogLines, Project};
use shared::protocol::LogBatch;
use shared::{AgentId, JobId, ProjectId, ServiceName};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Lines kept per watched project for tabs that reconnect.
pub const BUFFER_LINES: usize = 1_000;

/// The longest line kept or relayed, in bytes: the agent's own budget for one line, enforced
/// again here because a hostile agent need not keep to it. With [`BUFFER_LINES`] it bounds a
/// watched project's buffer to about 16 MiB.
pub const MAX_LINE_BYTES: usize = shared::protocol::budget::LINE;

/// `text` as it is when it fits `max` bytes; otherwise as much of its start as fits, cut at a
/// character boundary, followed by `… N bytes cut` as the agent writes it.
pub fn cut_line(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    // The marker's length for the longest cut this text can need.
    let room = max.saturating_sub(format!("… {} bytes cut", text.len()).len());
    let mut end = room.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("… {cut} bytes cut"));
    text
}

/// The log feeds of watched projects; cheap to clone.
#[derive(Clone, Default)]
pub struct LogFeeds {
    feeds: Arc<Mutex<HashMap<ProjectId, Feed>>>,
}

struct Feed {
    agent_id: AgentId,
    stream_id: JobId,
    epoch: u64,
    next_seq: u64,
    buffer: VecDeque<LogLine>,
    watchers: usize,
    /// The newest Docker timestamp sent per service (RFC 3339 with nanoseconds, which sorts
    /// as text because Docker always prints it in UTC with the same width).
    newest: HashMap<ServiceName, String>,
    /// `newest` as it was when the stream last restarted: the replayed tail up to here was
    /// already sent.
    sent_before_restart: HashMap<ServiceName, String>,
}

impl LogFeeds {
    fn lock(&self) -> MutexGuard<'_, HashMap<ProjectId, Feed>> {
        self.feeds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a watcher. Returns what the tab should show first (the buffered lines after its
    /// cursor) and, for the first watcher, the stream to start.
    pub fn watch(&self, project: &Project, resume: Option<LogCursor>) -> (LogLines, Option<JobId>) {
        let mut feeds = self.lock();
        let mut started = None;
        let feed = feeds.entry(project.id).or_insert_with(|| {
            let stream_id = JobId(uuid::Uuid::new_v4());
            started = Some(stream_id);
            Feed {
                agent_id: project.agent_id,
                stream_id,
                epoch: rand::random::<u32>().into(),
                next_seq: 1,
                buffer: VecDeque::new(),
                watchers: 0,
                newest: HashMap::new(),
                sent_before_restart: HashMap::new(),
            }
        });
        feed.watchers += 1;
        let after = match resume {
            Some(cursor) if cursor.epoch == feed.epoch => cursor.seq,
            _ => 0,
        };
        let lines = feed
            .buffer
            .iter()
            .filter(|line| line.seq > after)
            .cloned()
            .collect();
        let replay = LogLines {
            project_id: project.id,
            epoch: feed.epoch,
            lines,
            skipped: 0,
        };
        (replay, started)
    }

    /// Removes a watcher; returns the stream to stop when it was the last.
    pub fn unwatch(&self, project: ProjectId) -> Option<(AgentId, JobId)> {
        let mut feeds = self.lock();
        let feed = feeds.get_mut(&project)?;
        feed.watchers = feed.watchers.saturating_sub(1);
        if feed.watchers > 0 {
            return None;
        }
        let feed = feeds.remove(&project)?;
        Some((feed.agent_id, feed.stream_id))
    }

    /// The stream of a watched project.
    pub fn stream_of(&self, project: ProjectId) -> Option<JobId> {
        self.lock().get(&project).map(|feed| feed.stream_id)
    }

    /// Marks a restart of the project's stream: what was sent so far will be replayed and
    /// must be dropped then.
    pub fn restarting(&self, project: ProjectId) -> Option<JobId> {
        let mut feeds = self.lock();
        let feed = feeds.get_mut(&project)?;
        feed.sent_before_restart = feed.newest.clone();
        Some(feed.stream_id)
    }

    /// The watched projects of an agent.
    pub fn projects_of(&self, agent: AgentId) -> Vec<ProjectId> {
        self.lock()
            .iter()
            .filter(|(_, feed)| feed.agent_id == agent)
            .map(|(project, _)| *project)
            .collect()
    }

    /// Numbers the new lines of a batch and keeps them; `None` when nothing is new or nobody
    /// watches that stream any more.
    pub fn record(&self, agent: AgentId, batch: LogBatch) -> Option<LogLines> {
        let mut feeds = self.lock();
        let (project_id, feed) = feeds
            .iter_mut()
            .find(|(_, feed)| feed.stream_id == batch.stream_id && feed.agent_id == agent)?;
        let mut lines = Vec::with_capacity(batch.messages.len());
        for message in batch.messages {
            if let Some(timestamp) = &message.timestamp {
                let replayed = feed
                    .sent_before_restart
                    .get(&message.service)
                    .is_some_and(|sent| timestamp.as_str() <= sent.as_str());
                if replayed {
                    continue;
                }
                let newest = feed.newest.entry(message.service.clone()).or_default();
                if timestamp.as_str() > newest.as_str() {
                    newest.clone_from(timestamp);
                }
            }
            let line = LogLine {
                seq: feed.next_seq,
                service: message.service,
                stderr: message.stream == shared::protocol::LogStream::Stderr,
                timestamp: message.timestamp,
                text: cut_line(message.line, MAX_LINE_BYTES),
            };
            feed.next_seq += 1;
            if feed.buffer.len() == BUFFER_LINES {
                feed.buffer.pop_front();
            }
            feed.buffer.push_back(line.clone());
            lines.push(line);
        }
        (!lines.is_empty() || batch.skipped > 0).then_some(LogLines {
            project_id: *project_id,
            epoch: feed.epoch,
            lines,
            skipped: batch.skipped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::protocol::{LogMessage, LogStream};
    use shared::{ProjectName, ServiceName};

    fn project() -> Project {
        Project {
            id: ProjectId(uuid::Uuid::new_v4()),
            name: ProjectName::parse("shop").unwrap(),
            agent_id: AgentId(uuid::Uuid::new_v4()),
            path: shared::ProjectPath::parse("/srv/shop").unwrap(),
            compose_file: None,
            created_at: time::OffsetDateTime::now_utc(),
            name_clash: false,
            source: None,
            pull_policy: Default::default(),
            target: Default::default(),
            secrets_as: Default::default(),
        }
    }

    fn batch(stream_id: JobId, lines: &[(&str, &str)]) -> LogBatch {
        LogBatch {
            stream_id,
            messages: lines
                .iter()
                .map(|(timestamp, line)| LogMessage {
                    project: ProjectName::parse("shop").unwrap(),
                    service: ServiceName::parse("web").unwrap(),
                    stream: LogStream::Stdout,
                    timestamp: Some(timestamp.to_string()),
                    line: line.to_string(),
                })
                .collect(),
            skipped: 0,
        }
    }

    fn texts(lines: &LogLines) -> Vec<&str> {
        lines.lines.iter().map(|line| line.text.as_str()).collect()
    }

    #[test]
    fn a_restarted_stream_sends_only_lines_newer_than_those_already_sent() {
        let feeds = LogFeeds::default();
        let project = project();
        let (_, started) = feeds.watch(&project, None);
        let stream = started.expect("the first watcher starts the stream");
        let first = feeds.record(
            project.agent_id,
            batch(
                stream,
                &[
                    ("2026-01-01T00:00:01.000000001Z", "a"),
                    ("2026-01-01T00:00:02.000000001Z", "b"),
                ],
            ),
        );
        assert_eq!(texts(&first.unwrap()), ["a", "b"]);
        // A running stream keeps lines that arrive out of order (stdout and stderr interleave).
        let interleaved = feeds.record(
            project.agent_id,
            batch(stream, &[("2026-01-01T00:00:01.500000001Z", "from stderr")]),
        );
        assert_eq!(texts(&interleaved.unwrap()), ["from stderr"]);
        // After a restart the agent sends its tail again, then what is new.
        assert_eq!(feeds.restarting(project.id), Some(stream));
        let again = feeds.record(
            project.agent_id,
            batch(
                stream,
                &[
                    ("2026-01-01T00:00:01.000000001Z", "a"),
                    ("2026-01-01T00:00:02.000000001Z", "b"),
                    ("2026-01-01T00:00:03.000000001Z", "c"),
                ],
            ),
        );
        let again = again.unwrap();
        assert_eq!(texts(&again), ["c"]);
        assert_eq!(again.lines[0].seq, 4);
        // Another agent cannot write into this project's feed.
        assert!(feeds
            .record(
                AgentId(uuid::Uuid::new_v4()),
                batch(stream, &[("2026-01-01T00:00:09Z", "x")])
            )
            .is_none());
    }

    #[test]
    fn a_line_longer_than_the_limit_is_cut_before_it_is_kept() {
        let feeds = LogFeeds::default();
        let project = project();
        let stream = feeds.watch(&project, None).1.unwrap();
        // An agent that ignores its budget: a 1 MiB line, with a character across the limit.
        let long = format!(
            "{}é{}",
            "a".repeat(MAX_LINE_BYTES - 20),
            "b".repeat(1 << 20)
        );
        let relayed = feeds
            .record(
                project.agent_id,
                batch(stream, &[("2026-01-01T00:00:01Z", long.as_str())]),
            )
            .unwrap();
        let text = &relayed.lines[0].text;
        assert!(text.len() <= MAX_LINE_BYTES, "{} bytes", text.len());
        assert!(text.ends_with("bytes cut"), "{}", &text[text.len() - 40..]);
        let (replay, _) = feeds.watch(&project, None);
        assert_eq!(&replay.lines[0].text, text, "the buffer keeps the cut line");
        assert_eq!(cut_line("short".into(), 16), "short");
        assert_eq!(cut_line("é".repeat(10), 18), "é… 18 bytes cut");
    }

    #[test]
    fn a_tab_that_reconnects_gets_exactly_the_lines_it_missed() {
        let feeds = LogFeeds::default();
        let project = project();
        let (_, started) = feeds.watch(&project, None);
        let stream = started.unwrap();
        let shown = feeds
            .record(
                project.agent_id,
                batch(
                    stream,
                    &[("2026-01-01T00:00:01Z", "a"), ("2026-01-01T00:00:02Z", "b")],
                ),
            )
            .unwrap();
        // The tab drops; a line arrives meanwhile; another tab keeps the stream alive.
        let (_, restarted) = feeds.watch(&project, None);
        assert!(restarted.is_none(), "one stream per project");
        assert!(
            feeds.unwatch(project.id).is_none(),
            "the other tab still watches"
        );
        feeds.record(
            project.agent_id,
            batch(stream, &[("2026-01-01T00:00:03Z", "c")]),
        );
        let cursor = LogCursor {
            epoch: shown.epoch,
            seq: 2,
        };
        let (replay, _) = feeds.watch(&project, Some(cursor));
        assert_eq!(texts(&replay), ["c"]);
        // A cursor from another epoch (a restarted server) gets the whole buffer to start over.
        let (replay, _) = feeds.watch(
            &project,
            Some(LogCursor {
                epoch: shown.epoch + 1,
                seq: 2,
            }),
        );
        assert_eq!(texts(&replay), ["a", "b", "c"]);
        // When the last tab leaves, the stream is stopped.
        assert!(feeds.unwatch(project.id).is_none());
        assert!(feeds.unwatch(project.id).is_none());
        assert_eq!(feeds.unwatch(project.id), Some((project.agent_id, stream)));
    }
}
