//! A Git project over http with an access token: a bare repository served by the real
//! `git http-backend` (CGI) behind a small HTTP server of the test's that asks for Basic
//! authentication with one token, a real agent, real containers.

use crate::git_sources::{commit_and_push, deploy, new_repository, Cleanup, WEB_ONLY};
use crate::helpers::*;
use base64::Engine;
use reqwest::Method;
use serde_json::json;
use shared::api::{DeploymentStatus, Project};
use shared::source::GitSourceView;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A bare repository, a clone to push from, and an HTTP server on loopback that runs
/// `git http-backend` for requests carrying the right token.
struct HttpGitServer {
    dir: TempDir,
    port: u16,
    server: tokio::task::JoinHandle<()>,
}

impl HttpGitServer {
    /// Serves `shop.git` to requests authenticated as `user` with `token`.
    async fn start(user: &str, token: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        new_repository(dir.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))
        );
        let root = dir.path().to_owned();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (root, expected) = (root.clone(), expected.clone());
                tokio::spawn(async move {
                    if let Err(error) = serve(stream, &root, &expected).await {
                        if std::env::var("TEST_LOG").is_ok() {
                            eprintln!("git http server: {error}");
                        }
                    }
                });
            }
        });
        Self { dir, port, server }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/shop.git", self.port)
    }

    /// Commits `files` with `message` and pushes to `main`; returns the sha.
    fn commit(&self, files: &[(&str, &[u8])], message: &str) -> String {
        commit_and_push(&self.dir.path().join("work"), files, message)
    }
}

impl Drop for HttpGitServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One request on one connection (answered with `Connection: close`): a request without the
/// expected `Authorization` gets 401; any other runs `git http-backend` as CGI.
async fn serve(stream: TcpStream, root: &Path, expected: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let body = match header("content-length") {
        Some(length) => {
            let mut body = vec![0; length.parse().unwrap_or(0)];
            reader.read_exact(&mut body).await?;
            body
        }
        None if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) => {
            let mut body = Vec::new();
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).await?;
                let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
            body
        }
        None => Vec::new(),
    };
    let mut stream = reader.into_inner();
    if header("authorization").as_deref() != Some(expected) {
        let answer = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                      Content-Length: 0\r\nConnection: close\r\n\r\n";
        stream.write_all(answer.as_bytes()).await?;
        return stream.shutdown().await;
    }
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let mut cgi = tokio::process::Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "git")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (header_name, variable) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(value) = header(header_name) {
            cgi.env(variable, value);
        }
    }
    let mut child = cgi.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&body).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    let split = output
        .stdout
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| {
            output
                .stdout
                .windows(2)
                .position(|window| window == b"\n\n")
                .map(|at| (at, 2))
        })
        .unwrap_or((output.stdout.len(), 0));
    let head = String::from_utf8_lossy(&output.stdout[..split.0]).to_string();
    let content = &output.stdout[(split.0 + split.1).min(output.stdout.len())..];
    let mut status = "200 OK".to_string();
    let mut answer = String::new();
    for line in head.lines().filter(|line| !line.trim().is_empty()) {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_string()
            }
            _ => {
                answer.push_str(line.trim_end());
                answer.push_str("\r\n");
            }
        }
    }
    let head = format!(
        "HTTP/1.1 {status}\r\n{answer}Content-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(content).await?;
    stream.shutdown().await
}

/// Every file under `dir` whose bytes contain one of `needles`, with the needle.
fn files_containing(dir: &Path, needles: &[&str]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                for needle in needles {
                    if bytes
                        .windows(needle.len())
                        .any(|window| window == needle.as_bytes())
                    {
                        found.push((path.clone(), needle.to_string()));
                    }
                }
            }
        }
    }
    found
}

async fn set_token(api: &ApiClient, project: &Project, token: &str) {
    api.expect::<GitSourceView>(
        Method::PUT,
        &format!("/projects/{}/source/token", project.id),
        Some(json!({ "token": token })),
        200,
    )
    .await;
}

/// The right token clones; a wrong one fails the deploy with git's words and without either
/// token; and no token is left anywhere in the agent's state or its log after the jobs.
#[tokio::test(flavor = "multi_thread")]
async fn a_project_deploys_over_http_with_its_token_and_the_token_stays_nowhere() {
    let image = agent::testing::test_image().await;
    for db in TestDb::all().await {
        let token = format!("ghp_{}", uuid::Uuid::new_v4().simple());
        let wrong = format!("ghp_{}", uuid::Uuid::new_v4().simple());
        let repo = HttpGitServer::start("x-access-token", &token).await;
        let first = repo.commit(
            &[(
                "compose.yaml",
                WEB_ONLY.replace("{image}", image).as_bytes(),
            )],
            "Serve the shop",
        );
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let logs = tempfile::tempdir().unwrap();
        let (created, agent_process) = api.connected_agent(&app.url(), logs.path()).await;
        let name = format!(
            "stagely-githttp-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let _cleanup = Cleanup(vec![name.clone()]);
        let project: Project = api
            .expect(
                Method::POST,
                "/projects",
                Some(json!({
                    "name": name,
                    "agent_id": created.agent.id,
                    "source": {"url": repo.url(), "ref": "main"},
                })),
                201,
            )
            .await;

        // Without a token the server asks for one.
        let anonymous = deploy(&api, &project).await;
        assert_eq!(anonymous.status, DeploymentStatus::Failed, "{anonymous:?}");

        set_token(&api, &project, &token).await;
        let deployed = deploy(&api, &project).await;
        assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
        assert_eq!(deployed.commit.unwrap().sha, first);
        assert_eq!(agent::testing::container_ids(&name).await.len(), 1);

        set_token(&api, &project, &wrong).await;
        let failed = deploy(&api, &project).await;
        assert_eq!(failed.status, DeploymentStatus::Failed, "{failed:?}");
        let message = failed.message.clone().unwrap_or_default();
        assert!(
            ["Authentication failed", "could not read Username", "401"]
                .iter()
                .any(|words| message.contains(words)),
            "git's reason is shown: {message}"
        );
        let basic = |token: &str| {
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
        };
        let secrets = [token.clone(), wrong.clone(), basic(&token), basic(&wrong)];
        let shown = format!("{failed:?}{anonymous:?}");
        for secret in &secrets {
            assert!(!shown.contains(secret.as_str()), "a token in: {shown}");
        }
        assert_eq!(agent::testing::container_ids(&name).await.len(), 1);

        // Nothing of either token in the agent's state directory (checkouts, ledger, private
        // files) or in its log.
        let needles: Vec<&str> = secrets.iter().map(String::as_str).collect();
        let state = logs.path().join("agent-state");
        assert!(state.join("private").is_dir());
        assert_eq!(files_containing(&state, &needles), []);
        drop(agent_process);
        assert_eq!(files_containing(logs.path(), &needles), []);
        app.stop().await;
    }
}
