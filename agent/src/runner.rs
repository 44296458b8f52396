//! The one way the agent runs a program (`docker`, `docker compose`, `docker-compose`).
//!
//! - argv only, never a shell string, so no value is ever parsed by a shell;
//! - secrets never go on the command line (they travel in files the runner does not see), and
//!   every captured or streamed line passes through a [`Redactor`] first;
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

/// At most this much of each stream is kept in [`CommandOutput`] (the tail is dropped).
const CAPTURE_LIMIT: usize = 1 << 20;
/// A line longer than this is handed over in pieces of this size, so a program that prints
/// megabytes without a newline cannot make the agent buffer them.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Splits a pipe into lines without trusting it: bytes that are not UTF-8 are replaced (a
/// Latin-1 build log must not abort a deploy) and lines are bounded in length.
struct Lines<R> {
    reader: BufReader<R>,
    buffer: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> Lines<R> {
    fn new(reader: R) -> Self {
        Self {
            reader: BufReader::new(reader),
            buffer: Vec::new(),
        }
    }

    /// The next line, or `None` at the end of the stream.
    ///
    /// Cancel-safe, as `select!` between stdout and stderr needs: bytes read by a call that
    /// is dropped stay in `buffer` and the next call carries on from them.
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        use tokio::io::AsyncReadExt;
        let room = MAX_LINE_BYTES.saturating_sub(self.buffer.len()) as u64;
        let limited = (&mut self.reader).take(room);
        tokio::pin!(limited);
        let read = limited.read_until(b'\n', &mut self.buffer).await?;
        if read == 0 && self.buffer.is_empty() {
            return Ok(None);
        }
        if self.buffer.last() == Some(&b'\n') {
            self.buffer.pop();
            if self.buffer.last() == Some(&b'\r') {
                self.buffer.pop();
            }
        }
        let line = String::from_utf8_lossy(&self.buffer).into_owned();
        self.buffer.clear();
        Ok(Some(line))
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
        }
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

/// Replaces secret values with `***` in text that leaves the host.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    values: Vec<String>,
}

impl Redactor {
    /// Values shorter than 4 characters are not redacted: they would mangle ordinary output
    /// while hiding nothing an attacker could not guess.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        // Output is redacted line by line, so a multi-line secret (a PEM key) is also matched by
        // each of its lines.
        let mut values: Vec<String> = values
            .into_iter()
            .map(Into::into)
            .flat_map(|value: String| {
                let lines: Vec<String> = if value.contains('\n') {
                    value
                        .lines()
                        .map(|line| line.trim_end_matches('\r').to_string())
                        .collect()
                } else {
                    Vec::new()
                };
                std::iter::once(value).chain(lines)
            })
            .filter(|value| value.chars().count() >= 4)
            .collect();
        values.sort_by_key(|value| std::cmp::Reverse(value.len()));
        values.dedup();
        Self { values }
    }

    pub fn redact(&self, line: &str) -> String {
        let mut line = line.to_string();
        for value in &self.values {
            if line.contains(value.as_str()) {
                line = line.replace(value.as_str(), "***");
            }
        }
        line
    }
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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.current_dir {
        child_command.current_dir(dir);
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

    // Both pipes exist: they were requested as piped above.
    let mut stdout = child.stdout.take().map(Lines::new);
    let mut stderr = child.stderr.take().map(Lines::new);
    let mut captured_out = String::new();
    let mut captured_err = String::new();

    let finished = with_timeout(spec.timeout, async {
        while stdout.is_some() || stderr.is_some() {
            tokio::select! {
                line = async { stdout.as_mut()?.next_line().await.transpose() }, if stdout.is_some() => {
                    match line {
                        Some(line) => {
                            let line = redactor.redact(&line.map_err(io_error)?);
                            capture(&mut captured_out, &line);
                            on_line(OutputLine::Stdout(line));
                        }
                        None => stdout = None,
                    }
                }
                line = async { stderr.as_mut()?.next_line().await.transpose() }, if stderr.is_some() => {
                    match line {
                        Some(line) => {
                            let line = redactor.redact(&line.map_err(io_error)?);
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

    #[test]
    fn every_line_of_a_multi_line_secret_is_redacted() {
        let key = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX\n-----END KEY-----";
        let redactor = Redactor::new([key]);
        assert_eq!(
            redactor.redact("MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX"),
            "***"
        );
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
