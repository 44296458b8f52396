//! The one way the agent runs a program (`docker`, `docker compose`, `docker-compose`).
//!
//! - argv only, never a shell string, so no value is ever parsed by a shell;
//! - secrets never go on the command line (they travel in files the runner does not see), and
//!   every captured or streamed line passes through a [`Redactor`] first, before a line that is
//!   too long is cut, so a cut cannot split a value into two pieces that each escape it;
//! - a child gets a cleared environment plus the few variables Docker needs
//!   ([`CHILD_ENVIRONMENT`]): a compose file that lists `STAGELY_AGENT_TOKEN` (or anything else
//!   the agent was started with) under `environment:` without a value, or interpolates it as
//!   `${…}`, finds nothing;
//! - a timeout, and cancellation by dropping the future, both kill the whole process group, so a
//!   `docker compose` that spawned helpers leaves nothing behind;
//! - output is delivered line by line as it is printed, and also captured (bounded) into a
//!   [`CommandOutput`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

pub use crate::redact::Redactor;

/// The variables of the agent's own environment a child process is given (when set); nothing
/// else is passed on.
pub const CHILD_ENVIRONMENT: [&str; 8] = [
    "PATH",
    "HOME",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "LANG",
];

/// The value a child process sees for `name`: the agent's own, for the variables of
/// [`CHILD_ENVIRONMENT`]; no other is set.
pub fn child_variable(name: &str) -> Option<String> {
    CHILD_ENVIRONMENT
        .contains(&name)
        .then(|| std::env::var(name).ok())
        .flatten()
}

/// At most this much of each stream is kept in [`CommandOutput`] (the tail is dropped).
const CAPTURE_LIMIT: usize = 1 << 20;
/// A line longer than this is handed over in pieces of this size (or of the longest span a
/// secret can take, if that is more), so a program that prints megabytes without a newline
/// cannot make the agent buffer them.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Splits a pipe into redacted lines without trusting it: bytes that are not UTF-8 are replaced
/// (a Latin-1 build log must not abort a deploy) and lines are bounded in length.
///
/// A longer line is redacted before it is cut: the last [`Redactor::widest_occurrence`] bytes
/// before each cut stay in the buffer and are searched again with what follows, so a secret
/// that straddles a cut is found whole and masked on both sides of it.
struct Lines<R> {
    reader: BufReader<R>,
    buffer: Vec<u8>,
    /// How many bytes at the start of `buffer` were already handed over (kept as context).
    handed_over: usize,
    /// The longest piece of a line handed over at once ([`MAX_LINE_BYTES`]; less in tests).
    max_line: usize,
}

impl<R: tokio::io::AsyncRead + Unpin> Lines<R> {
    fn new(reader: R) -> Self {
        Self::with_max_line(reader, MAX_LINE_BYTES)
    }

    /// Hands over lines longer than `max_line` bytes (taken as at least 1) in pieces.
    fn with_max_line(reader: R, max_line: usize) -> Self {
        Self {
            reader: BufReader::new(reader),
            buffer: Vec::new(),
            handed_over: 0,
            max_line: max_line.max(1),
        }
    }

    /// The next line (or piece of a long one), redacted, or `None` at the end of the stream.
    ///
    /// Cancel-safe, as `select!` between stdout and stderr needs: bytes read by a call that
    /// is dropped stay in `buffer` and the next call carries on from them.
    async fn next_line(&mut self, redactor: &Redactor) -> std::io::Result<Option<String>> {
        use tokio::io::AsyncReadExt;
        let context = redactor.widest_occurrence();
        // Never shorter than the context, so every piece moves the line forward.
        let piece = self.max_line.max(context);
        let full = self.handed_over + piece + context;
        // Two bytes more are read before cutting, so a line that ends right after a piece
        // (`\n` or `\r\n`) is handed over whole, not followed by an empty piece. A line cut
        // before its end of line was handed over keeps it in `buffer`: nothing more is read
        // until that line is done.
        if self.buffer.last() != Some(&b'\n') {
            let room = (full + 2).saturating_sub(self.buffer.len()) as u64;
            let limited = (&mut self.reader).take(room);
            tokio::pin!(limited);
            limited.read_until(b'\n', &mut self.buffer).await?;
        }
        let start = self.handed_over;
        let ended = self.buffer.last() == Some(&b'\n');
        // Where the text of the line ends: before its `\n` or `\r\n`.
        let mut end = self.buffer.len();
        if ended {
            end -= 1;
            if end > start && self.buffer[end - 1] == b'\r' {
                end -= 1;
            }
        }
        if end > start + piece {
            // More than a piece to hand over (no end of line in reach, or the stream ended, or
            // the line ends just beyond): hand over one piece, and keep what follows it plus
            // `context` bytes before it, to be searched again with the rest of the line.
            let cut = start + piece;
            let line = redactor.redact_part(&self.buffer, start..cut);
            let keep_from = cut - context;
            self.buffer.drain(..keep_from);
            self.handed_over = cut - keep_from;
            return Ok(Some(line));
        }
        if !ended && self.buffer.len() == start {
            self.buffer.clear();
            self.handed_over = 0;
            return Ok(None);
        }
        let line = redactor.redact_part(&self.buffer, start..end);
        self.buffer.clear();
        self.handed_over = 0;
        Ok(Some(line))
    }
}

/// The lines [`run`] hands over for output that arrives in `chunks`, one read each, with lines
/// longer than `max_line_bytes` handed over in pieces: the runner's own splitting and
/// redaction, without a process. For tests and fuzzing (`fuzz/fuzz_targets/redactor.rs`).
pub fn split_output(chunks: &[&[u8]], max_line_bytes: usize, redactor: &Redactor) -> Vec<String> {
    use futures_util::FutureExt;
    let mut lines = Lines::with_max_line(Chunks(chunks.to_vec()), max_line_bytes);
    let mut out = Vec::new();
    // Reading from memory never waits, so each call completes when first polled; `None` would
    // mean it waited, which cannot happen, and ends the output rather than looping.
    while let Some(Ok(Some(line))) = lines.next_line(redactor).now_or_never() {
        out.push(line);
    }
    out
}

/// Bytes in memory, read back at most one chunk per read, as a pipe delivers what was written.
struct Chunks<'a>(Vec<&'a [u8]>);

impl tokio::io::AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        // An empty chunk would read as the end of the stream.
        self.0.retain(|chunk| !chunk.is_empty());
        if let Some(chunk) = self.0.first_mut() {
            let size = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..size]);
            *chunk = &chunk[size..];
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// A program and its arguments, plus how to run it.
#[derive(Clone, Debug)]
pub struct CommandSpec {
    program: OsString,
    args: Vec<OsString>,
    current_dir: Option<PathBuf>,
    /// `None` for commands that run until cancelled (`logs -f`).
    timeout: Option<Duration>,
    /// The child's whole environment, instead of [`CHILD_ENVIRONMENT`] from the agent's own.
    environment: Option<Vec<(OsString, OsString)>>,
    /// A per-run Docker configuration directory (registry credentials) given as
    /// `DOCKER_CONFIG` instead of the agent's own.
    docker_config: Option<PathBuf>,
    /// Bytes written to the child's stdin (then closed), for values that must never be an
    /// argument (`docker secret create NAME -`); wiped when the spec is dropped.
    stdin: Option<std::sync::Arc<zeroize::Zeroizing<Vec<u8>>>>,
    /// Stdout is read by the agent (ids, JSON, YAML), not shown: see [`Self::read_by_agent`].
    stdout_read_by_agent: bool,
}

impl CommandSpec {
    /// `program` with `args`, a 10 minute timeout, in the agent's working directory.
    pub fn new<I, S>(program: impl Into<OsString>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            current_dir: None,
            timeout: Some(Duration::from_secs(600)),
            environment: None,
            docker_config: None,
            stdin: None,
            stdout_read_by_agent: false,
        }
    }

    /// Marks stdout as machine output the agent parses (ids, JSON, YAML) and never shows: it
    /// is captured and handed to `on_line` exactly as printed. Masking there would corrupt
    /// it: a secret `8080` inside a process id, or a short value inside a hex id, turns valid
    /// JSON into an error, and with too many secrets every line would be masked whole. Whatever
    /// the caller derives from it for a person to read must be redacted by the caller; stderr
    /// is redacted as always.
    pub fn read_by_agent(mut self) -> Self {
        self.stdout_read_by_agent = true;
        self
    }

    /// Writes `bytes` to the child's stdin and closes it (stdin is empty otherwise).
    pub fn stdin(mut self, bytes: zeroize::Zeroizing<Vec<u8>>) -> Self {
        self.stdin = Some(std::sync::Arc::new(bytes));
        self
    }

    /// Appends one more argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs until it ends or the future is dropped; for streams such as `logs -f`.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Gives the child exactly these variables and nothing of the agent's environment (`git`
    /// runs with a private `HOME` and no user or system configuration).
    pub fn environment<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.environment = Some(vars);
        self
    }

    /// Runs with `DOCKER_CONFIG` set to `dir` (see `crate::registry_auth`).
    pub fn docker_config(mut self, dir: impl Into<PathBuf>) -> Self {
        self.docker_config = Some(dir.into());
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// The command as a person would type it, for logs and errors.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|part| part.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Which stream a line came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputLine {
    Stdout(String),
    Stderr(String),
}

/// What a finished command did.
#[derive(Clone, Debug)]
pub struct CommandOutput {
    pub command: String,
    pub stdout: String,
    pub stderr: String,
    /// `None` when the process was ended by a signal.
    pub exit_code: Option<i32>,
    pub started_at: SystemTime,
    pub finished_at: SystemTime,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` did not finish within {} s and was killed", timeout.as_secs())]
    TimedOut { command: String, timeout: Duration },
    #[error("reading the output of `{command}`: {source}")]
    Io {
        command: String,
        source: std::io::Error,
    },
}

/// Kills the process group on drop unless disarmed: covers timeouts, cancellation and panics.
struct GroupKiller {
    pgid: Option<i32>,
}

impl GroupKiller {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: kill(2) with a negative pid signals the process group we created for the
            // child (process_group(0) makes its pid the group id); it touches no memory.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `spec` to completion, handing every (redacted) line to `on_line` as it is printed.
///
/// Dropping the returned future kills the process group.
pub async fn run(
    spec: &CommandSpec,
    redactor: &Redactor,
    mut on_line: impl FnMut(OutputLine),
) -> Result<CommandOutput, RunError> {
    let command = spec.display();
    let mut child_command = Command::new(&spec.program);
    child_command
        .args(&spec.args)
        .env_clear()
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    match &spec.environment {
        Some(vars) => {
            child_command.envs(vars.iter().map(|(k, v)| (k, v)));
        }
        None => {
            child_command.envs(
                CHILD_ENVIRONMENT
                    .iter()
                    .filter_map(|name| std::env::var_os(name).map(|value| (name, value))),
            );
        }
    }
    if let Some(dir) = &spec.current_dir {
        child_command.current_dir(dir);
    }
    if let Some(dir) = &spec.docker_config {
        child_command.env("DOCKER_CONFIG", dir);
    }
    let started_at = SystemTime::now();
    let mut child = child_command.spawn().map_err(|source| RunError::Spawn {
        command: command.clone(),
        source,
    })?;
    let mut killer = GroupKiller {
        pgid: child.id().and_then(|pid| i32::try_from(pid).ok()),
    };
    let io_error = |source| RunError::Io {
        command: command.clone(),
        source,
    };

    if let (Some(bytes), Some(mut pipe)) = (spec.stdin.clone(), child.stdin.take()) {
        // Written beside the output loop, so a child that prints before reading cannot stall.
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = pipe.write_all(&bytes).await;
            let _ = pipe.shutdown().await;
        });
    }
    // Both pipes exist: they were requested as piped above.
    let mut stdout = child.stdout.take().map(Lines::new);
    let mut stderr = child.stderr.take().map(Lines::new);
    let mut captured_out = String::new();
    let mut captured_err = String::new();
    let unmasked = Redactor::default();
    let stdout_redactor = if spec.stdout_read_by_agent {
        &unmasked
    } else {
        redactor
    };

    let finished = with_timeout(spec.timeout, async {
        while stdout.is_some() || stderr.is_some() {
            tokio::select! {
                line = async { stdout.as_mut()?.next_line(stdout_redactor).await.transpose() }, if stdout.is_some() => {
                    match line {
                        Some(line) => {
                            let line = line.map_err(io_error)?;
                            capture(&mut captured_out, &line);
                            on_line(OutputLine::Stdout(line));
                        }
                        None => stdout = None,
                    }
                }
                line = async { stderr.as_mut()?.next_line(redactor).await.transpose() }, if stderr.is_some() => {
                    match line {
                        Some(line) => {
                            let line = line.map_err(io_error)?;
                            capture(&mut captured_err, &line);
                            on_line(OutputLine::Stderr(line));
                        }
                        None => stderr = None,
                    }
                }
            }
        }
        child.wait().await.map_err(io_error)
    })
    .await;

    let status = match finished {
        Ok(status) => status?,
        Err(_) => {
            killer.kill();
            let _ = child.wait().await;
            return Err(RunError::TimedOut {
                command,
                timeout: spec.timeout.unwrap_or_default(),
            });
        }
    };
    // The leader exited; anything it left in its group is ended with it.
    killer.kill();
    Ok(CommandOutput {
        command,
        stdout: captured_out,
        stderr: captured_err,
        exit_code: status.code(),
        started_at,
        finished_at: SystemTime::now(),
    })
}

async fn with_timeout<T>(
    timeout: Option<Duration>,
    work: impl std::future::Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    match timeout {
        Some(timeout) => tokio::time::timeout(timeout, work).await,
        None => Ok(work.await),
    }
}

fn capture(buffer: &mut String, line: &str) {
    if buffer.len() + line.len() < CAPTURE_LIMIT {
        buffer.push_str(line);
        buffer.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_exactly_as_long_as_a_piece_is_not_followed_by_an_empty_line() {
        let redactor = Redactor::default();
        for output in [&b"abcd\nef\n"[..], b"abcd\r\nef\n"] {
            assert_eq!(split_output(&[output], 4, &redactor), ["abcd", "ef"]);
        }
        let pieces = split_output(&[b"ab", b"cdefgh", b"\r\nij"], 4, &redactor);
        assert_eq!(pieces, ["abcd", "efgh", "ij"]);
    }

    #[test]
    fn a_line_longer_than_a_piece_is_cut_even_when_it_ends_within_the_context() {
        // A value of 4 bytes: pieces of 24 bytes, and 24 bytes of context.
        let redactor = Redactor::new(["abcd"]);
        let line = "x".repeat(40);
        for output in [format!("{line}\n"), line.clone()] {
            let pieces = split_output(&[output.as_bytes()], 1, &redactor);
            assert_eq!(pieces, [&line[..24], &line[24..]], "{output:?}");
        }
    }

    #[test]
    fn a_json_escaped_secret_after_an_escaped_backslash_is_masked_across_a_cut() {
        // Four control characters: JSON-escaped they take the longest span a value of 4 bytes
        // can (24 bytes), which is both the piece size here and the context kept at a cut.
        let redactor = Redactor::new(["\u{1}\u{2}\u{3}\u{4}"]);
        // An escaped backslash (`\\`) at 23..25, then the value at 25..49: the second cut is at
        // 48, and the context kept for the third piece starts at 24, between the two backslashes.
        let line = format!(r#"{}\\\u0001\u0002\u0003\u0004 tail"#, "a".repeat(23));
        let pieces = split_output(&[line.as_bytes()], 1, &redactor);
        assert_eq!(
            pieces,
            [
                format!("{}\\", "a".repeat(23)),
                "\\***".into(),
                "*** tail".into()
            ]
        );
    }

    #[tokio::test]
    async fn lines_arrive_in_order_and_are_captured() {
        let spec = CommandSpec::new("sh", ["-c", "echo one; echo two >&2; echo three; exit 3"]);
        let mut lines = Vec::new();
        let output = run(&spec, &Redactor::default(), |line| lines.push(line))
            .await
            .unwrap();
        assert_eq!(output.exit_code, Some(3));
        assert_eq!(output.stdout, "one\nthree\n");
        assert_eq!(output.stderr, "two\n");
        assert!(lines.contains(&OutputLine::Stderr("two".into())));
    }

    #[tokio::test]
    async fn secrets_are_redacted_before_anyone_sees_the_line() {
        let spec = CommandSpec::new("echo", ["password=hunter22 and abc"]);
        let redactor = Redactor::new(["hunter22", "abc"]);
        let mut lines = Vec::new();
        let output = run(&spec, &redactor, |line| lines.push(line))
            .await
            .unwrap();
        assert_eq!(
            output.stdout, "password=*** and abc\n",
            "short values are left alone"
        );
        assert_eq!(lines, [OutputLine::Stdout("password=*** and abc".into())]);
    }

    #[tokio::test]
    async fn output_the_agent_reads_is_kept_as_printed_and_stderr_is_still_masked() {
        let script = r#"echo '{"Running":true,"Pid":18080}'; echo 'error: true' >&2"#;
        let spec = CommandSpec::new("sh", ["-c", script]).read_by_agent();
        let redactor = Redactor::new(["true", "8080"]);
        let mut lines = Vec::new();
        let output = run(&spec, &redactor, |line| lines.push(line))
            .await
            .unwrap();
        assert_eq!(output.stdout, "{\"Running\":true,\"Pid\":18080}\n");
        assert_eq!(output.stderr, "error: ***\n");
        assert!(lines.contains(&OutputLine::Stderr("error: ***".into())));
    }

    #[tokio::test]
    async fn a_line_split_across_writes_survives_output_on_the_other_stream() {
        // stdout's line arrives in two writes with a stderr line in between: the read of the
        // first half is interrupted (select! picks stderr) and must not lose it.
        let script = "for i in 1 2 3; do printf 'first-half-'; sleep 0.05; echo \"err $i\" >&2; \
                      sleep 0.05; echo \"second-half $i\"; done";
        let spec = CommandSpec::new("sh", ["-c", script]);
        let output = run(&spec, &Redactor::default(), |_| {}).await.unwrap();
        assert_eq!(
            output.stdout,
            "first-half-second-half 1\nfirst-half-second-half 2\nfirst-half-second-half 3\n"
        );
        assert_eq!(output.stderr, "err 1\nerr 2\nerr 3\n");
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_and_endless_lines_do_not_break_a_run() {
        // Latin-1 "café", then 200 KiB without a newline, then a normal line.
        let script =
            "printf 'caf\\351\\n'; head -c 204800 /dev/zero | tr '\\0' x; printf '\\ndone\\n'";
        let spec = CommandSpec::new("sh", ["-c", script]);
        let mut lines = Vec::new();
        let output = run(&spec, &Redactor::default(), |line| lines.push(line))
            .await
            .unwrap();
        assert!(output.success());
        assert_eq!(lines[0], OutputLine::Stdout("caf\u{fffd}".into()));
        assert_eq!(lines.last(), Some(&OutputLine::Stdout("done".into())));
        let longest = lines
            .iter()
            .map(|line| match line {
                OutputLine::Stdout(text) | OutputLine::Stderr(text) => text.len(),
            })
            .max();
        assert_eq!(longest, Some(MAX_LINE_BYTES));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-survived");
        // The grandchild would create the marker after 2 s unless the group is killed.
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let spec =
            CommandSpec::new("sh", ["-c", script.as_str()]).timeout(Duration::from_millis(300));
        let error = run(&spec, &Redactor::default(), |_| {}).await.unwrap_err();
        assert!(matches!(error, RunError::TimedOut { .. }), "{error}");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "a process of the group outlived the timeout"
        );
    }

    #[tokio::test]
    async fn dropping_the_future_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let script = format!("sleep 1; touch {}", marker.display());
        let spec = CommandSpec::new("sh", ["-c", script.as_str()]);
        let redactor = Redactor::default();
        let cancelled =
            tokio::time::timeout(Duration::from_millis(200), run(&spec, &redactor, |_| {})).await;
        assert!(cancelled.is_err());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !marker.exists(),
            "the command kept running after cancellation"
        );
    }

    #[tokio::test]
    async fn a_secret_written_in_two_pieces_is_masked() {
        let script = "printf %s first-half; sleep 0.2; printf '%s\\n' second-half";
        let spec = CommandSpec::new("sh", ["-c", script]);
        let redactor = Redactor::new(["first-halfsecond-half"]);
        let mut lines = Vec::new();
        let output = run(&spec, &redactor, |line| lines.push(line))
            .await
            .unwrap();
        assert_eq!(output.stdout, "***\n");
        assert_eq!(lines, [OutputLine::Stdout("***".into())]);
    }

    #[tokio::test]
    async fn a_secret_straddling_the_line_length_cap_is_still_masked() {
        // The runner hands over an endless line in pieces; wherever the first cut falls inside
        // the value (or inside its encoded form), no piece may carry part of it in the clear.
        let value = "straddling-secret-value";
        let escaped = "straddling\\u002dsecret\\u002Dvalue";
        let redactor = Redactor::new([value]);
        let after = "y".repeat(4096);
        for (form, printed) in [("plain", value), ("json-escaped", escaped)] {
            for before_cap in 1..printed.len() {
                let padding = MAX_LINE_BYTES - before_cap;
                let script = format!(
                    "head -c {padding} /dev/zero | tr '\\0' x; printf '%s%s\\nnext\\n' '{printed}' {after}"
                );
                let spec = CommandSpec::new("sh", ["-c", script.as_str()]);
                let output = run(&spec, &redactor, |_| {}).await.unwrap();
                let pieces: Vec<&str> = output.stdout.lines().collect();
                assert!(
                    pieces.len() > 2,
                    "{form}: the line was not cut: {}",
                    pieces.len()
                );
                // Each piece masks its side of the value: `***` then `***`.
                let joined = pieces.concat();
                let masked = joined.trim_start_matches('x');
                let rest = masked.trim_start_matches('*');
                assert!(
                    masked.starts_with("***") && rest == format!("{after}next"),
                    "{form}, {before_cap} bytes before the cap: {:?}",
                    &masked[..masked.len().min(64)]
                );
            }
        }
    }

    #[tokio::test]
    async fn children_see_only_the_allowed_environment() {
        // The test process has plenty more (CARGO_*, RUST_*, …); none of it may reach a child.
        let spec = CommandSpec::new("env", Vec::<String>::new());
        let output = run(&spec, &Redactor::default(), |_| {}).await.unwrap();
        let names: Vec<&str> = output
            .stdout
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        let allowed = [
            "PATH",
            "HOME",
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_CONFIG",
            "DOCKER_CERT_PATH",
            "DOCKER_TLS_VERIFY",
            "LANG",
        ];
        assert!(
            names.iter().all(|name| allowed.contains(name)),
            "a child saw {names:?}"
        );
        if std::env::var_os("PATH").is_some() {
            assert!(names.contains(&"PATH"), "PATH is passed on: {names:?}");
        }
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let spec = CommandSpec::new("stagely-no-such-program", ["x"]);
        let error = run(&spec, &Redactor::default(), |_| {}).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("could not start `stagely-no-such-program x`"),
            "{error}"
        );
    }
}
