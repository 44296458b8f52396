//! Projects deployed from a Git repository: a bare repository served by a real `sshd` (its own
//! config, host key and port, key-only) that the test pushes commits to, a real agent that
//! checks it out with the deploy key the server generated, and real containers.

use crate::helpers::*;
use reqwest::Method;
use serde_json::json;
use shared::api::{DeployAccepted, Deployment, DeploymentStatus, Project};
use shared::source::GitSourceView;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::AsyncBufReadExt;

pub(crate) const WEB_ONLY: &str = r#"services:
  web:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;

/// Runs the test's own `git` (never the agent's) and returns its stdout.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Ada Lovelace")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada Lovelace")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .expect("running git");
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// A bare repository, a working clone to push from, and an `sshd` serving it on loopback.
struct GitServer {
    dir: TempDir,
    port: u16,
    sshd: Option<tokio::process::Child>,
}

impl GitServer {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        new_repository(dir.path());
        std::fs::write(dir.path().join("authorized_keys"), "").unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut server = Self {
            dir,
            port,
            sshd: None,
        };
        server.new_host_key("ed25519");
        server.start_sshd().await;
        server
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self) -> String {
        format!(
            "ssh://root@127.0.0.1:{}{}",
            self.port,
            self.path("shop.git").display()
        )
    }

    /// A new host key of `kind` for the server (it takes effect at the next start).
    fn new_host_key(&self, kind: &str) {
        let key = self.path("host_key");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn host_public_key(&self) -> String {
        let text = std::fs::read_to_string(self.path("host_key.pub")).unwrap();
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts `sshd -D -e` and waits until it says it listens.
    async fn start_sshd(&mut self) {
        // sshd's privilege separation directory; a fresh machine may not have it.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nAuthorizedKeysFile {keys}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile none\n\
             LogLevel VERBOSE\n",
            port = self.port,
            key = self.path("host_key").display(),
            keys = self.path("authorized_keys").display(),
        );
        std::fs::write(self.path("sshd_config"), config).unwrap();
        let mut child = tokio::process::Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting sshd");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let listening = format!("port {}", self.port);
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("Server listening") && line.contains(&listening) {
                    return;
                }
            }
            panic!("sshd ended before listening");
        })
        .await
        .expect("sshd listens");
        // Keep reading its log so it never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if std::env::var("TEST_LOG").is_ok() {
                    eprintln!("sshd: {line}");
                }
            }
        });
        self.sshd = Some(child);
    }

    /// Stops `sshd`: the repository can no longer be fetched.
    async fn stop(&mut self) {
        if let Some(mut sshd) = self.sshd.take() {
            sshd.kill().await.unwrap();
        }
    }

    /// Restarts `sshd` with only a new host key of `kind` (`ed25519`, `ecdsa`, `rsa`).
    async fn restart_with_new_host_key(&mut self, kind: &str) {
        if let Some(mut sshd) = self.sshd.take() {
            sshd.kill().await.unwrap();
        }
        self.new_host_key(kind);
        self.start_sshd().await;
    }

    fn authorize(&self, public_key: &str) {
        std::fs::write(self.path("authorized_keys"), format!("{public_key}\n")).unwrap();
    }

    /// Commits `compose` as `compose.yaml` with `message` and pushes to `main`; returns the sha.
    fn commit_compose(&self, compose: &str, message: &str) -> String {
        self.commit(&[("compose.yaml", compose.as_bytes())], message)
    }

    /// Commits `files` (name, content) with `message` and pushes to `main`; returns the sha.
    fn commit(&self, files: &[(&str, &[u8])], message: &str) -> String {
        commit_and_push(&self.path("work"), files, message)
    }
}

/// Makes `dir/shop.git`, a bare repository whose branch is `main`, and `dir/work`, a clone of
/// it to commit in.
pub(crate) fn new_repository(dir: &Path) {
    let bare = dir.join("shop.git");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(
        dir,
        &["init", "--quiet", "--bare", "-b", "main", "shop.git"],
    );
    git(&work, &["init", "--quiet", "-b", "main"]);
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
}

/// Commits `files` (name, content) in the clone `work` with `message` and pushes to `main`;
/// returns the sha.
pub(crate) fn commit_and_push(work: &Path, files: &[(&str, &[u8])], message: &str) -> String {
    for (name, content) in files {
        std::fs::write(work.join(name), content).unwrap();
        git(work, &["add", "--", name]);
    }
    git(work, &["commit", "--quiet", "-m", message]);
    git(work, &["push", "--quiet", "origin", "main"]);
    git(work, &["rev-parse", "HEAD"]).trim().to_string()
}

/// Compose project names the test made; their containers are removed on drop.
pub(crate) struct Cleanup(pub(crate) Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            agent::testing::remove_project(name);
        }
    }
}

pub(crate) async fn deploy(api: &ApiClient, project: &Project) -> Deployment {
    let accepted: DeployAccepted = api
        .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
        .await;
    wait_for_deployment(api, accepted.deployment_id, Duration::from_secs(180)).await
}

/// Files the agent keeps in its private directory that hold credentials or secrets.
fn leftovers(private: &Path) -> Vec<String> {
    std::fs::read_dir(private)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".git-credential") || name.ends_with(".yml"))
                .collect()
        })
        .unwrap_or_default()
}

async fn set_source(api: &ApiClient, project: &Project, source: serde_json::Value) {
    let body = json!({ "source": { "git": source } });
    let (status, answer) = api
        .call(
            Method::PATCH,
            &format!("/projects/{}", project.id),
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
}

/// A failed deploy: its message says `why`, the containers are those that ran before and
/// nothing with a credential is left in the agent's private directory.
async fn fails_and_changes_nothing(
    api: &ApiClient,
    project: &Project,
    private: &Path,
    why: &[&str],
    running: &[String],
) -> Deployment {
    let failed = deploy(api, project).await;
    assert_eq!(failed.status, DeploymentStatus::Failed, "{failed:?}");
    let message = failed.message.clone().unwrap_or_default();
    assert!(
        why.iter().any(|why| message.contains(why)),
        "expected one of {why:?} in: {message}"
    );
    let mut now = agent::testing::container_ids(project.name.as_str()).await;
    now.sort();
    assert_eq!(now, running, "the running containers are untouched");
    assert_eq!(
        leftovers(private),
        Vec::<String>::new(),
        "nothing left on disk"
    );
    failed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_project_deploys_from_git_over_ssh_with_a_generated_deploy_key() {
    let image = agent::testing::test_image().await;
    for db in TestDb::all().await {
        let mut repo = GitServer::start().await;
        let first = repo.commit_compose(&WEB_ONLY.replace("{image}", image), "Add the web service");

        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let logs = tempfile::tempdir().unwrap();
        let body = json!({"name": "host-1"});
        let created: shared::api::AgentCreated =
            api.expect(Method::POST, "/agents", Some(body), 201).await;
        let _agent = AgentProcess::spawn_with(
            &["--server", &app.url()],
            &[
                ("STAGELY_AGENT_TOKEN", created.token.as_str()),
                ("STAGELY_GIT_MAX_BYTES", "1048576"),
            ],
            logs.path(),
        );
        let private = logs.path().join("agent-state/private");
        let agent_id = created.agent.id;
        eventually(Duration::from_secs(10), "the agent to connect", || async {
            let agents: Vec<shared::api::AgentSummary> =
                api.expect(Method::GET, "/agents", None, 200).await;
            agents.iter().any(|agent| {
                agent.id == agent_id && agent.status == shared::api::AgentStatus::Connected
            })
        })
        .await;

        let name = format!(
            "stagely-git-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let _cleanup = Cleanup(vec![name.clone()]);
        let body = json!({
            "name": name,
            "agent_id": agent_id,
            "source": {"url": repo.url(), "ref": "main", "compose_file": "compose.yaml"},
        });
        let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
        let source = project
            .source
            .clone()
            .expect("a Git project shows its source");
        assert!(!source.has_token && source.deploy_public_key.is_none());

        // The server makes the deploy key; only its public half ever comes back.
        let (status, answer) = api
            .call(
                Method::POST,
                &format!("/projects/{}/source/deploy-key", project.id),
                None,
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert!(!answer.to_string().contains("PRIVATE"), "{answer}");
        let view: GitSourceView = serde_json::from_value(answer).unwrap();
        let public_key = view.deploy_public_key.expect("the public key is shown");
        assert!(public_key.starts_with("ssh-ed25519 "), "{public_key}");
        repo.authorize(&public_key);

        // 1. The committed compose file runs, and the history names the commit.
        let deployed = deploy(&api, &project).await;
        assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
        let commit = deployed.commit.clone().expect("the commit is recorded");
        assert_eq!(commit.sha, first);
        assert_eq!(commit.subject, "Add the web service");
        assert_eq!(commit.author, "Ada Lovelace <ada@example.com>");
        assert_eq!(agent::testing::container_ids(&name).await.len(), 1);
        let shown: Project = api
            .expect(Method::GET, &format!("/projects/{}", project.id), None, 200)
            .await;
        let pinned = shown
            .source
            .unwrap()
            .pinned_host_key
            .expect("pinned on first use");
        assert!(pinned.contains(&repo.host_public_key()), "{pinned}");
        assert!(
            shown.path.as_str().starts_with(private.to_str().unwrap()),
            "the project lives in the agent's own checkout: {}",
            shown.path
        );
        assert_eq!(leftovers(&private), Vec::<String>::new());

        // 2. A pushed commit that adds a service: the new service runs, the history says so.
        let second = repo.commit_compose(
            &WEB_AND_WORKER.replace("{image}", image),
            "Add a worker\n\nIt idles, for now.",
        );
        let deployed = deploy(&api, &project).await;
        assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
        let commit = deployed.commit.clone().unwrap();
        assert_eq!(
            (commit.sha.as_str(), commit.subject.as_str()),
            (second.as_str(), "Add a worker")
        );
        assert_eq!(agent::testing::container_ids(&name).await.len(), 2);
        let history: Vec<Deployment> = api
            .expect(
                Method::GET,
                &format!("/projects/{}/deployments", project.id),
                None,
                200,
            )
            .await;
        let shas: Vec<_> = history
            .iter()
            .filter_map(|deployment| deployment.commit.as_ref().map(|c| c.sha.clone()))
            .collect();
        assert_eq!(shas, [second.clone(), first.clone()], "newest first");
        let first_deployment = history.last().unwrap().id;

        // 3. A redeploy of the first deployment checks out exactly its commit.
        let accepted: DeployAccepted = api
            .expect(
                Method::POST,
                &format!("/deployments/{first_deployment}/redeploy"),
                None,
                202,
            )
            .await;
        let redeployed =
            wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(180)).await;
        assert_eq!(
            redeployed.status,
            DeploymentStatus::Succeeded,
            "{redeployed:?}"
        );
        assert_eq!(redeployed.commit.unwrap().sha, first);
        assert_eq!(agent::testing::container_ids(&name).await.len(), 1);

        let deployed = deploy(&api, &project).await;
        assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
        let mut running = agent::testing::container_ids(&name).await;
        running.sort();
        assert_eq!(running.len(), 2);

        // 4. What goes wrong fails the deploy with git's words and touches nothing.
        let main = json!({"url": repo.url(), "ref": "main", "compose_file": "compose.yaml"});
        set_source(
            &api,
            &project,
            json!({"url": repo.url(), "ref": "no-such-branch", "compose_file": "compose.yaml"}),
        )
        .await;
        fails_and_changes_nothing(
            &api,
            &project,
            &private,
            &["couldn't find remote ref", "no-such-branch"],
            &running,
        )
        .await;

        set_source(
            &api,
            &project,
            json!({"url": repo.url(), "ref": "main", "compose_file": "missing.yaml"}),
        )
        .await;
        fails_and_changes_nothing(&api, &project, &private, &["missing.yaml"], &running).await;
        set_source(&api, &project, main.clone()).await;

        // Incompressible bytes, so the fetch really grows past the agent's 1 MiB limit.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let big: Vec<u8> = (0..2 * 1024 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        repo.commit(&[("big.bin", &big)], "Add a big file");
        fails_and_changes_nothing(&api, &project, &private, &["over the size limit"], &running)
            .await;
        let work = repo.path("work");
        git(&work, &["rm", "--quiet", "big.bin"]);
        git(&work, &["commit", "--quiet", "-m", "Remove the big file"]);
        git(
            &work,
            &["push", "--quiet", "--force", "origin", "HEAD~2:main"],
        );

        // A deploy key the repository does not know.
        api.expect::<GitSourceView>(
            Method::POST,
            &format!("/projects/{}/source/deploy-key", project.id),
            None,
            200,
        )
        .await;
        fails_and_changes_nothing(
            &api,
            &project,
            &private,
            &["Permission denied", "publickey"],
            &running,
        )
        .await;
        let view: GitSourceView = api
            .expect(
                Method::POST,
                &format!("/projects/{}/source/deploy-key", project.id),
                None,
                200,
            )
            .await;
        repo.authorize(&view.deploy_public_key.unwrap());
        let deployed = deploy(&api, &project).await;
        assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
        running = agent::testing::container_ids(&name).await;
        running.sort();

        // The repository's server now shows another host key than the one pinned.
        repo.restart_with_new_host_key("ed25519").await;
        fails_and_changes_nothing(
            &api,
            &project,
            &private,
            &["the host key of 127.0.0.1 changed"],
            &running,
        )
        .await;
        // A server (or a man in the middle) showing only a key of another type than the pinned
        // ed25519 key: ssh knows no key of that type for the host, which is no reason to trust it.
        repo.restart_with_new_host_key("ecdsa").await;
        fails_and_changes_nothing(
            &api,
            &project,
            &private,
            &["the host key of 127.0.0.1 changed"],
            &running,
        )
        .await;
        let shown: Project = api
            .expect(Method::GET, &format!("/projects/{}", project.id), None, 200)
            .await;
        let still = shown.source.unwrap().pinned_host_key.unwrap();
        assert!(still.contains("ssh-ed25519 "), "the pin stays: {still}");
        assert!(
            !still.contains("ecdsa"),
            "the other key is not pinned: {still}"
        );
        // Once the person says the change is real, the new key is trusted and pinned.
        api.expect::<GitSourceView>(
            Method::DELETE,
            &format!("/projects/{}/source/host-key", project.id),
            None,
            200,
        )
        .await;
        let deployed = deploy(&api, &project).await;
        assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
        let shown: Project = api
            .expect(Method::GET, &format!("/projects/{}", project.id), None, 200)
            .await;
        let pinned = shown.source.unwrap().pinned_host_key.unwrap();
        assert!(pinned.contains(&repo.host_public_key()), "{pinned}");

        // Another ref keeps the pin; another port of the same host is another server: the pin
        // for this one says nothing about it and is forgotten.
        set_source(
            &api,
            &project,
            json!({"url": repo.url(), "ref": "main", "compose_file": "missing.yaml"}),
        )
        .await;
        let shown: Project = api
            .expect(Method::GET, &format!("/projects/{}", project.id), None, 200)
            .await;
        assert_eq!(shown.source.unwrap().pinned_host_key, Some(pinned));
        let other_port = repo.url().replace(
            &format!(":{}/", repo.port),
            &format!(":{}/", repo.port.wrapping_add(1).max(1)),
        );
        assert_ne!(other_port, repo.url());
        set_source(
            &api,
            &project,
            json!({"url": other_port, "ref": "main", "compose_file": "compose.yaml"}),
        )
        .await;
        let shown: Project = api
            .expect(Method::GET, &format!("/projects/{}", project.id), None, 200)
            .await;
        assert_eq!(shown.source.unwrap().pinned_host_key, None);

        // A token belongs to one host: another ref keeps it, another host forgets it.
        api.expect::<GitSourceView>(
            Method::PUT,
            &format!("/projects/{}/source/token", project.id),
            Some(json!({"token": "ghp_ForTheFirstHostOnly1234"})),
            200,
        )
        .await;
        let has_token = |project: Project| project.source.unwrap().has_token;
        set_source(
            &api,
            &project,
            json!({"url": other_port, "ref": "main", "compose_file": "missing.yaml"}),
        )
        .await;
        let shown: Project = api
            .expect(Method::GET, &format!("/projects/{}", project.id), None, 200)
            .await;
        assert!(has_token(shown), "the same host keeps the token");
        set_source(
            &api,
            &project,
            json!({"url": "https://attacker.example/shop.git", "ref": "main"}),
        )
        .await;
        let shown: Project = api
            .expect(Method::GET, &format!("/projects/{}", project.id), None, 200)
            .await;
        assert!(!has_token(shown), "another host never gets the token");

        // A Git project's path is the agent's checkout: no one sets it, and switching to a
        // directory source needs a path of its own.
        for body in [
            json!({"path": "/srv/elsewhere"}),
            json!({"source": "directory"}),
        ] {
            let (status, answer) = api
                .call(
                    Method::PATCH,
                    &format!("/projects/{}", project.id),
                    Some(body.clone()),
                )
                .await;
            assert_eq!(status, 400, "{body} -> {answer}");
            assert!(answer.to_string().contains("path"), "{answer}");
        }
        let unchanged: Project = api
            .expect(Method::GET, &format!("/projects/{}", project.id), None, 200)
            .await;
        assert!(
            unchanged
                .path
                .as_str()
                .starts_with(private.to_str().unwrap()),
            "{}",
            unchanged.path
        );
        assert!(unchanged.source.is_some());

        app.stop().await;
    }
}

#[tokio::test]
async fn hostile_repository_urls_and_refs_are_refused_before_anything_runs() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("mallory").await;
        let (agent, project) = api.shop_project().await;
        let marker = tempfile::tempdir().unwrap();
        let pwned = marker.path().join("pwned");
        let hostile_urls = [
            format!("--upload-pack=touch {}", pwned.display()),
            format!("ext::sh -c touch% {}", pwned.display()),
            format!("file://{}", marker.path().display()),
            marker.path().display().to_string(),
            "ssh://-oProxyCommand=touch/repo".to_string(),
        ];
        for url in &hostile_urls {
            let body = json!({
                "name": "evil",
                "agent_id": agent.agent.id,
                "source": {"url": url},
            });
            let (status, answer) = api.call(Method::POST, "/projects", Some(body)).await;
            assert!(status == 400 || status == 422, "{url}: {status} {answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("not accepted"), "{url}: {message}");
        }
        for git_ref in ["--upload-pack=touch /tmp/x", "-b", "main..dev"] {
            let body =
                json!({"source": {"git": {"url": "https://example.com/shop.git", "ref": git_ref}}});
            let (status, answer) = api
                .call(
                    Method::PATCH,
                    &format!("/projects/{}", project.id),
                    Some(body),
                )
                .await;
            assert!(
                status == 400 || status == 422,
                "{git_ref}: {status} {answer}"
            );
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("not accepted"), "{git_ref}: {message}");
        }
        let projects: Vec<Project> = api.expect(Method::GET, "/projects", None, 200).await;
        assert_eq!(projects.len(), 1, "nothing was created");
        assert!(projects[0].source.is_none(), "nothing was changed");
        assert!(!pwned.exists());
        app.stop().await;
    }
}

/// Creates a Git project named `name` on `agent_id` deploying `repo`'s `main`, with a deploy
/// key the server generated and the repository trusts.
async fn trusted_git_project(
    api: &ApiClient,
    repo: &GitServer,
    agent_id: shared::AgentId,
    name: &str,
) -> Project {
    let body = json!({
        "name": name,
        "agent_id": agent_id,
        "source": {"url": repo.url(), "ref": "main", "compose_file": "compose.yaml"},
    });
    let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
    let view: GitSourceView = api
        .expect(
            Method::POST,
            &format!("/projects/{}/source/deploy-key", project.id),
            None,
            200,
        )
        .await;
    repo.authorize(&view.deploy_public_key.expect("the public key is shown"));
    project
}

/// A server on `db` with the user `alice`, a connected agent, and a trusted Git project of
/// `repo` on it named `<prefix>-<random>`; the project's containers are removed when dropped.
struct GitProjectOnAgent {
    app: TestApp,
    user: server::db::User,
    api: ApiClient,
    project: Project,
    agent_id: shared::AgentId,
    /// The Compose project name.
    name: String,
    /// The agent's private directory.
    private: PathBuf,
    _cleanup: Cleanup,
    _agent: AgentProcess,
    _logs: TempDir,
}

impl GitProjectOnAgent {
    async fn start(db: &TestDb, repo: &GitServer, prefix: &str) -> Self {
        let app = spawn_app(db).await;
        let (user, api) = app.user("alice").await;
        let logs = tempfile::tempdir().unwrap();
        let (created, agent) = api.connected_agent(&app.url(), logs.path()).await;
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        let cleanup = Cleanup(vec![name.clone()]);
        let project = trusted_git_project(&api, repo, created.agent.id, &name).await;
        Self {
            app,
            user,
            api,
            project,
            agent_id: created.agent.id,
            name,
            private: logs.path().join("agent-state/private"),
            _cleanup: cleanup,
            _agent: agent,
            _logs: logs,
        }
    }
}

/// The commits whose working trees the agent keeps for `project`.
fn kept_trees(private: &Path, project: &Project) -> Vec<String> {
    let trees = private
        .join("checkouts")
        .join(project.id.to_string())
        .join("trees");
    let mut names: Vec<String> = std::fs::read_dir(trees)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A pushed commit whose deploy fails leaves the commit that runs current: the services the
/// agent reads and a restart use its compose file, not the broken one's, and only its tree is
/// kept; the next success makes the new commit current and removes the old tree.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_deploy_leaves_the_running_commits_checkout_current() {
    let image = agent::testing::test_image().await;
    for db in TestDb::all().await {
        let mut repo = GitServer::start().await;
        let first = repo.commit_compose(&WEB_ONLY.replace("{image}", image), "Add the web service");
        let GitProjectOnAgent {
            app,
            user,
            api,
            project,
            agent_id,
            name,
            private,
            _cleanup,
            _agent,
            _logs,
        } = GitProjectOnAgent::start(&db, &repo, "stagely-gitcur").await;
        let deployed = deploy(&api, &project).await;
        assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
        let running = agent::testing::container_ids(&name).await;
        assert_eq!(running.len(), 1);

        // A directory project on the same agent aimed at this project's checkout (its path is
        // shown by the API): every job is refused before the checkout is read.
        let shown: Project = api
            .expect(Method::GET, &format!("/projects/{}", project.id), None, 200)
            .await;
        let intruder: Project = api
            .expect(
                Method::POST,
                "/projects",
                Some(json!({
                    "name": format!("{name}-x"),
                    "agent_id": agent_id,
                    "path": shown.path.as_str(),
                })),
                201,
            )
            .await;
        let refused = "inside the agent's private directory";
        let accepted: DeployAccepted = api
            .expect(
                Method::POST,
                &format!("/projects/{}/actions", intruder.id),
                Some(json!({"action": "restart"})),
                202,
            )
            .await;
        let restart =
            wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(60)).await;
        assert_eq!(restart.status, DeploymentStatus::Failed, "{restart:?}");
        assert!(restart.message.unwrap().contains(refused));
        let inspected =
            server::ops::projects::services(&app.state.store, &app.state.hub, &user, intruder.id)
                .await
                .unwrap_err();
        assert!(inspected.to_string().contains(refused), "{inspected}");

        // A service whose image no registry serves (nothing listens on port 1).
        let broken_compose = format!(
            "{}  payments:\n    image: 127.0.0.1:1/stagely-missing:never\n",
            WEB_ONLY.replace("{image}", image)
        );
        let broken = repo.commit_compose(&broken_compose, "Add payments");
        let failed = deploy(&api, &project).await;
        assert_eq!(failed.status, DeploymentStatus::Failed, "{failed:?}");
        assert_eq!(
            failed.commit.as_ref().map(|c| c.sha.as_str()),
            Some(broken.as_str())
        );

        let services =
            server::ops::projects::services(&app.state.store, &app.state.hub, &user, project.id)
                .await
                .unwrap();
        let names: Vec<_> = services.iter().map(|service| service.as_str()).collect();
        assert_eq!(names, ["web"], "the running commit's compose file is read");
        // The failed commit's tree stays until a deploy succeeds: containers of a deploy that
        // failed halfway may bind-mount it.
        let mut kept = vec![first.clone(), broken.clone()];
        kept.sort();
        assert_eq!(kept_trees(&private, &project), kept);

        let accepted: DeployAccepted = api
            .expect(
                Method::POST,
                &format!("/projects/{}/actions", project.id),
                Some(json!({"action": "restart"})),
                202,
            )
            .await;
        let restarted =
            wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(120)).await;
        assert_eq!(
            restarted.status,
            DeploymentStatus::Succeeded,
            "{restarted:?}"
        );
        let mut now = agent::testing::container_ids(&name).await;
        now.sort();
        let mut before = running.clone();
        before.sort();
        assert_eq!(now, before, "the same containers, restarted");

        // A fixed commit deploys, becomes current, and the old tree goes.
        let fixed = repo.commit_compose(
            &WEB_AND_WORKER.replace("{image}", image),
            "Add a worker instead",
        );
        let deployed = deploy(&api, &project).await;
        assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
        assert_eq!(kept_trees(&private, &project), std::slice::from_ref(&fixed));
        let services =
            server::ops::projects::services(&app.state.store, &app.state.hub, &user, project.id)
                .await
                .unwrap();
        assert_eq!(services.len(), 2, "{services:?}");

        // The object store keeps what the kept tree and the last five successful deploys need
        // (a redeploy of one of them works without the Git host), nothing else: it does not
        // grow with every deploy until it alone is over the size limit. It is pruned once the
        // deploy's result is sent, so the test waits for it.
        let store = private
            .join("checkouts")
            .join(project.id.to_string())
            .join("git");
        let stored = |sha: &str| {
            std::process::Command::new("git")
                .arg("--git-dir")
                .arg(&store)
                .args(["cat-file", "-e", &format!("{sha}^{{commit}}")])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        };
        let pruned = |gone: &[&str]| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while gone.iter().any(|sha| stored(sha)) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "never pruned from the store: {gone:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        pruned(&[&broken]);
        assert!(
            stored(&first) && stored(&fixed),
            "the successful deploys' commits are kept"
        );
        let mut later = Vec::new();
        let mut oldest_kept = None;
        for round in 0..5 {
            let compose = format!(
                "# round {round}\n{}",
                WEB_AND_WORKER.replace("{image}", image)
            );
            later.push(repo.commit_compose(&compose, "A comment"));
            let deployed = deploy(&api, &project).await;
            assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
            oldest_kept.get_or_insert(deployed.id);
        }
        pruned(&[&first, &fixed]);
        assert!(
            later.iter().all(|sha| stored(sha)),
            "the last five successful deploys' commits are kept"
        );
        // With the Git host down, the oldest of them is redeployed from the store.
        repo.stop().await;
        let accepted: DeployAccepted = api
            .expect(
                Method::POST,
                &format!("/deployments/{}/redeploy", oldest_kept.unwrap()),
                None,
                202,
            )
            .await;
        let redeployed =
            wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(120)).await;
        assert_eq!(
            redeployed.status,
            DeploymentStatus::Succeeded,
            "{redeployed:?}"
        );
        assert_eq!(redeployed.commit.unwrap().sha, later[0]);
        app.stop().await;
    }
}

/// A container that bind-mounts its checkout (`./:/src`, allowed: the tree is the project's
/// root) can write the tree's `.git` file. Pointed at a repository of its making, whose
/// configuration has a filter command and whose objects are the store's, the agent's next
/// checkout of that commit (a redeploy, or a deploy of an unchanged branch) ran the command on
/// the host, as the agent. The agent now tells git where the tree's repository is and never
/// reads the tree's `.git`.
#[tokio::test]
async fn a_container_that_rewrites_its_checkouts_git_file_runs_nothing_on_the_host() {
    let image = agent::testing::test_image().await;
    let db = TestDb::Sqlite;
    let repo = GitServer::start().await;
    let sha = repo.commit_compose(&WEB_ONLY.replace("{image}", image), "Add the web service");
    let GitProjectOnAgent {
        app,
        api,
        project,
        private,
        _cleanup,
        _agent,
        _logs: logs,
        ..
    } = GitProjectOnAgent::start(&db, &repo, "stagely-gitdot").await;
    let deployed = deploy(&api, &project).await;
    assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");

    // What the container writes through its mount of the tree.
    let tree = private
        .join("checkouts")
        .join(project.id.to_string())
        .join("trees")
        .join(&sha);
    let marker = logs.path().join("filter-ran");
    let evil = tree.join("evil");
    for dir in ["objects/info", "refs", "info"] {
        std::fs::create_dir_all(evil.join(dir)).unwrap();
    }
    std::fs::write(evil.join("HEAD"), format!("{sha}\n")).unwrap();
    std::fs::write(
        evil.join("config"),
        format!(
            "[core]\n\trepositoryformatversion = 0\n[filter \"x\"]\n\t\
             smudge = \"touch {}; cat\"\n\trequired = true\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::write(evil.join("info/attributes"), "* filter=x\n").unwrap();
    std::fs::write(
        evil.join("objects/info/alternates"),
        "../../../../git/objects\n",
    )
    .unwrap();
    std::fs::write(tree.join(".git"), format!("gitdir: {}\n", evil.display())).unwrap();

    // The same commit deploys again: the tree is reused, checked out and cleaned.
    let again = deploy(&api, &project).await;
    assert_eq!(again.status, DeploymentStatus::Succeeded, "{again:?}");
    assert_eq!(again.commit.map(|commit| commit.sha), Some(sha));
    assert!(
        !marker.exists(),
        "the container's filter command ran on the host"
    );
    app.stop().await;
}

/// Nor may a container write its checkout in the first place: a project from Git may bind-mount
/// its files read-only only. A writable mount fails the deploy before anything runs, saying
/// why; the same mount read-only deploys.
#[tokio::test]
async fn a_project_from_git_may_mount_its_checkout_read_only_only() {
    let image = agent::testing::test_image().await;
    let db = TestDb::Sqlite;
    let repo = GitServer::start().await;
    let with_mount = |mode: &str| {
        format!(
            "{}    volumes: [\"./:/src{mode}\"]\n",
            WEB_ONLY.replace("{image}", image)
        )
    };
    repo.commit_compose(&with_mount(""), "Mount the checkout");
    let GitProjectOnAgent {
        app,
        api,
        project,
        name,
        _cleanup,
        _agent,
        _logs,
        ..
    } = GitProjectOnAgent::start(&db, &repo, "stagely-gitro").await;
    let refused = deploy(&api, &project).await;
    assert_eq!(refused.status, DeploymentStatus::Failed, "{refused:?}");
    let message = refused.message.unwrap_or_default();
    assert!(
        message.contains("services.web.volumes ./ is mounted writable")
            && message.contains("read-only"),
        "{message}"
    );
    assert!(agent::testing::container_ids(&name).await.is_empty());

    repo.commit_compose(&with_mount(":ro"), "Mount it read-only");
    let deployed = deploy(&api, &project).await;
    assert_eq!(deployed.status, DeploymentStatus::Succeeded, "{deployed:?}");
    app.stop().await;
}

/// An agent from before Git sources, image pulls and Swarm stacks would ignore those fields and
/// deploy the project's directory with Compose instead: the server refuses such a deploy to it, naming the version
/// needed, whether the agent is connected when it is asked or says hello later.
#[tokio::test]
async fn an_agent_too_old_for_git_sources_is_refused_their_deploys_naming_the_version() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        let created: shared::api::AgentCreated = api
            .expect(Method::POST, "/agents", Some(json!({"name": "old-1"})), 201)
            .await;
        let git_project: Project = api
            .expect(
                Method::POST,
                "/projects",
                Some(json!({
                    "name": "shop",
                    "agent_id": created.agent.id,
                    "source": {"url": "ssh://git@example.com/shop.git", "ref": "main"},
                })),
                201,
            )
            .await;
        let pulling: Project = api
            .expect(
                Method::POST,
                "/projects",
                Some(json!({
                    "name": "blog",
                    "agent_id": created.agent.id,
                    "path": "/srv/blog",
                    "pull_policy": "always",
                })),
                201,
            )
            .await;
        let stack: Project = api
            .expect(
                Method::POST,
                "/projects",
                Some(json!({
                    "name": "stack",
                    "agent_id": created.agent.id,
                    "path": "/srv/stack",
                    "target": "swarm",
                    "secrets_as": "swarm_secrets",
                })),
                201,
            )
            .await;

        // Asked while the agent has never said hello: queued, judged at its hello.
        let queued: DeployAccepted = api
            .expect(
                Method::POST,
                &format!("/deploy/{}", git_project.id),
                None,
                202,
            )
            .await;
        let mut socket = raw_agent(&app.stream_url(), &created.token).await;
        hello_as(&mut socket, "0.1.0").await;
        let failed = wait_for_deployment(&api, queued.deployment_id, Duration::from_secs(20)).await;
        assert_eq!(failed.status, DeploymentStatus::Failed, "{failed:?}");
        let message = failed.message.unwrap_or_default();
        for words in ["0.1.0", "Git repository", "0.2.0 or later"] {
            assert!(message.contains(words), "{words:?} in: {message}");
        }

        // Asked while it is connected: refused at once, with the same words, and nothing sent.
        for (project, what) in [
            (&git_project, "Git repository"),
            (&pulling, "pull policy always"),
            (&stack, "Docker Swarm stack"),
        ] {
            let (status, answer) = api
                .call(Method::POST, &format!("/deploy/{}", project.id), None)
                .await;
            assert_eq!(status, 409, "{answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(what), "{what:?} in: {answer}");
            assert!(message.contains("0.2.0 or later"), "{answer}");
        }
        // It would stop a stack with `docker compose stop`, which finds nothing to stop.
        let (status, answer) = api
            .call(
                Method::POST,
                &format!("/projects/{}/actions", stack.id),
                Some(json!({"action": "stop"})),
            )
            .await;
        assert_eq!(status, 409, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        let needed = format!("{} or later", shared::protocol::since::SWARM_LIFECYCLE);
        for words in ["take down a Docker Swarm stack", needed.as_str()] {
            assert!(message.contains(words), "{words:?} in: {answer}");
        }
        let history: Vec<Deployment> = api
            .expect(
                Method::GET,
                &format!("/projects/{}/deployments", pulling.id),
                None,
                200,
            )
            .await;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].status, DeploymentStatus::Failed);

        // The same agent, updated, gets the job.
        drop(socket);
        no_agent_connected(&api).await;
        let mut socket = raw_agent(&app.stream_url(), &created.token).await;
        hello_as(&mut socket, env!("CARGO_PKG_VERSION")).await;
        api.expect::<DeployAccepted>(
            Method::POST,
            &format!("/deploy/{}", git_project.id),
            None,
            202,
        )
        .await;
        loop {
            if let shared::ServerToAgent::Deploy(job) = next_message(&mut socket).await {
                assert!(job.source.is_some());
                break;
            }
        }
        // And a lifecycle job on the stack says it is one.
        api.expect::<DeployAccepted>(
            Method::POST,
            &format!("/projects/{}/actions", stack.id),
            Some(json!({"action": "restart", "service": "web"})),
            202,
        )
        .await;
        loop {
            if let shared::ServerToAgent::Lifecycle(job) = next_message(&mut socket).await {
                assert_eq!(job.target, shared::target::DeployTarget::Swarm);
                assert_eq!(job.action, shared::runtime::LifecycleAction::Restart);
                break;
            }
        }
        app.stop().await;
    }
}
