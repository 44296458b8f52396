//! Provisioning a new host for real: the install script served by the server runs in a
//! throw-away busybox container on the host network (its own root file system, no systemd),
//! downloads the static agent, trades the join token and the agent connects.

use crate::helpers::{
    downloads_dir, eventually, spawn_app, spawn_app_with_env, AgentProcess, ApiClient, AppOptions,
    TestDb,
};
use agent::testing::test_image;
use sha2::Digest;
use shared::api::{AgentStatus, AgentSummary, JoinTokenCreated};
use std::process::Output;
use std::time::Duration;

/// The command the API hands out, with wget (busybox has no curl).
fn with_wget(created: &JoinTokenCreated) -> String {
    created.command.replace("curl -fsSL", "wget -qO-")
}

/// Runs docker without blocking the runtime: the server under test shares it and must answer
/// the container's downloads meanwhile.
async fn docker(args: &[&str]) -> Output {
    tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("running docker")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A container that outlives one command, removed on drop.
struct Host(String);

impl Host {
    async fn start() -> Self {
        let image = test_image().await;
        let output = docker(&["run", "-d", "--network", "host", image, "sleep", "600"]).await;
        assert!(output.status.success(), "{}", text(&output));
        Host(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    async fn sh(&self, script: &str) -> Output {
        docker(&["exec", &self.0, "sh", "-c", script]).await
    }

    /// Starts the installed agent the way the script says to when systemd is absent.
    async fn start_agent(&self) {
        let script =
            "set -a; . /etc/stagely/agent.env; set +a; exec stagely-agent 2>/var/lib/stagely-agent/log";
        let output = docker(&["exec", "-d", &self.0, "sh", "-c", script]).await;
        assert!(output.status.success(), "{}", text(&output));
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

async fn join_token(client: &ApiClient) -> JoinTokenCreated {
    client
        .expect(
            reqwest::Method::POST,
            "/join-tokens",
            Some(serde_json::json!({})),
            201,
        )
        .await
}

async fn agents(client: &ApiClient) -> Vec<AgentSummary> {
    client
        .expect(reqwest::Method::GET, "/agents", None, 200)
        .await
}

/// The server hands out what `scripts/build-agent.sh` built.
fn require_static_agent() {
    for arch in ["x86_64", "aarch64"] {
        assert!(
            downloads_dir().join(format!("stagely-agent-{arch}")).exists(),
            "target/downloads/stagely-agent-{arch} is missing: run scripts/build-agent.sh (scripts/test.sh does)"
        );
    }
}

/// `e_machine` of an ELF file (little-endian), e.g. 62 for x86_64 and 183 for AArch64.
fn elf_machine(bytes: &[u8]) -> u16 {
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    u16::from_le_bytes([bytes[18], bytes[19]])
}

#[tokio::test]
async fn each_architecture_downloads_its_own_agent_and_the_installer_picks_it_by_uname() {
    require_static_agent();
    let app = spawn_app(&TestDb::Sqlite).await;
    let http = reqwest::Client::new();
    for (arch, machine) in [("x86_64", 62), ("aarch64", 183)] {
        let name = format!("stagely-agent-{arch}");
        let url = format!("{}/downloads/{name}", app.url());
        let binary = http.get(&url).send().await.unwrap();
        assert_eq!(binary.status(), 200, "{url}");
        let binary = binary.bytes().await.unwrap();
        assert_eq!(
            binary.as_ref(),
            std::fs::read(downloads_dir().join(&name)).unwrap(),
            "{url} is the file build-agent.sh built"
        );
        assert_eq!(elf_machine(&binary), machine, "{url} is built for {arch}");
        let sum = http
            .get(format!("{url}.sha256"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let digest: String = sha2::Sha256::digest(&binary)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(sum, format!("{digest}  {name}\n"));
    }

    // An arm64 host (`uname -m` says aarch64, or arm64 on some systems): the installer fetches
    // the aarch64 agent and its checksum, which match, and runs it to register. This host is
    // x86_64, so that run fails at exec; everything before it is what an arm64 host does.
    // BusyBox's `uname` is an applet no PATH entry overrides; a shell function does.
    let host = Host::start().await;
    for reported in ["aarch64", "arm64"] {
        let script = format!(
            "{{ echo 'uname() {{ echo {reported}; }}'; wget -qO- {}/install.sh; }} | STAGELY_JOIN_TOKEN=stj_unused sh",
            app.url()
        );
        let install = host.sh(&script).await;
        let said = text(&install);
        assert!(!install.status.success(), "{reported}: {said}");
        assert!(
            said.contains(&format!(
                "downloading the agent for aarch64 from {}",
                app.url()
            )),
            "{reported}: {said}"
        );
        assert!(!said.contains("corrupt"), "{reported}: {said}");
        assert!(
            said.contains("could not register this host"),
            "{reported}: {said}"
        );
    }
}

#[tokio::test]
async fn a_server_without_an_agent_binary_says_how_to_build_it_and_not_where_it_looked() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().display().to_string();
    let app = spawn_app_with_env(
        &TestDb::Sqlite,
        AppOptions::default(),
        &[("STAGELY_DOWNLOADS_DIR", dir.as_str())],
    )
    .await;
    for file in ["stagely-agent-aarch64", "stagely-agent-x86_64.sha256"] {
        let response = reqwest::get(format!("{}/downloads/{file}", app.url()))
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{file}");
        let said = response.text().await.unwrap();
        assert!(said.contains("scripts/build-agent.sh"), "{file}: {said}");
        assert!(!said.contains(&dir), "{file}: {said} names {dir}");
    }
}

#[tokio::test]
async fn the_one_line_command_installs_an_agent_that_registers_and_connects() {
    require_static_agent();
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, client) = app.user("ops").await;
    let created = join_token(&client).await;
    // The join token reaches the script through the environment of `sh`, not its arguments.
    assert!(created.command.starts_with(&format!(
        "curl -fsSL {}/install.sh | STAGELY_JOIN_TOKEN=stj_",
        app.url()
    )));
    assert!(created.command.ends_with(" sh"), "{}", created.command);

    let host = Host::start().await;
    let install = host.sh(&with_wget(&created)).await;
    let said = text(&install);
    assert!(install.status.success(), "{said}");
    assert!(said.contains("registered as agent"), "{said}");
    assert!(said.contains("systemd is not running here"), "{said}");
    // The agent keeps its own token in a file only root can read.
    let token_file = text(
        &host
            .sh("stat -c '%a %s' /var/lib/stagely-agent/agent.token")
            .await,
    );
    assert!(token_file.starts_with("600 "), "{token_file}");

    host.start_agent().await;
    eventually(
        Duration::from_secs(20),
        "the new agent to connect",
        || async {
            let agents = agents(&client).await;
            agents.len() == 1 && agents[0].status == AgentStatus::Connected
        },
    )
    .await;

    // Running the script again upgrades in place and keeps the registration.
    let again = host
        .sh(&format!("wget -qO- {}/install.sh | sh", app.url()))
        .await;
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("upgrading the agent in place"),
        "{}",
        text(&again)
    );
    assert_eq!(agents(&client).await.len(), 1, "no second registration");

    // A revoked host is added back with a new join token: the script registers it again and
    // replaces the old token.
    let old = agents(&client).await.remove(0);
    let path = format!("/agents/{}", old.id);
    let _: serde_json::Value = client
        .expect(reqwest::Method::DELETE, &path, None, 204)
        .await;
    let renewed = join_token(&client).await;
    let rejoin = host.sh(&with_wget(&renewed)).await;
    assert!(rejoin.status.success(), "{}", text(&rejoin));
    let listed = agents(&client).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_ne!(listed[0].id, old.id, "a new registration");

    // --uninstall removes the binary, its configuration and its state.
    let removed = host
        .sh(&format!(
            "wget -qO- {}/install.sh | sh -s -- --uninstall",
            app.url()
        ))
        .await;
    assert!(removed.status.success(), "{}", text(&removed));
    let left = host
        .sh("ls /usr/local/bin/stagely-agent /etc/stagely /var/lib/stagely-agent 2>&1")
        .await;
    assert!(!left.status.success(), "left behind: {}", text(&left));
}

#[tokio::test]
async fn the_cloud_init_file_registers_a_host_with_the_join_token_read_from_a_root_only_file() {
    require_static_agent();
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, client) = app.user("ops").await;
    let created = join_token(&client).await;
    let user_data: serde_yaml::Value = serde_yaml::from_str(&created.cloud_init).unwrap();
    let runcmd = user_data["runcmd"][0].as_str().expect("one runcmd entry");
    assert!(!runcmd.contains(&created.token), "{runcmd}");

    // What cloud-init does on the first boot: `write_files` first, then each `runcmd` entry as
    // `sh -c '<entry>'`.
    let host = Host::start().await;
    let staged = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    for file in user_data["write_files"].as_sequence().expect("write_files") {
        let path = file["path"].as_str().expect("a path");
        let permissions = file["permissions"]
            .as_str()
            .expect("permissions as a string");
        let local = staged.path().join("content");
        std::fs::write(&local, file["content"].as_str().unwrap_or_default()).unwrap();
        let dir = std::path::Path::new(path)
            .parent()
            .unwrap()
            .display()
            .to_string();
        assert!(host.sh(&format!("mkdir -p {dir}")).await.status.success());
        let copy = docker(&["cp", local.to_str().unwrap(), &format!("{}:{path}", host.0)]).await;
        assert!(copy.status.success(), "{}", text(&copy));
        let chmod = host.sh(&format!("chmod {permissions} {path}")).await;
        assert!(chmod.status.success(), "{}", text(&chmod));
        written.push(path.to_string());
    }
    assert_eq!(written.len(), 1, "{}", created.cloud_init);

    let install = host.sh(&runcmd.replace("curl -fsSL", "wget -qO-")).await;
    let said = text(&install);
    assert!(install.status.success(), "{said}");
    assert!(said.contains("registered as agent"), "{said}");
    assert!(!said.contains(&created.token), "{said}");
    let left = host.sh(&format!("test -e {}", written[0])).await;
    assert!(
        !left.status.success(),
        "the join token file is deleted once the join succeeded"
    );
    let listed = agents(&client).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test]
async fn a_used_or_expired_join_token_is_refused_and_the_script_says_why() {
    require_static_agent();
    let app = spawn_app(&TestDb::Sqlite).await;
    let (user, client) = app.user("ops").await;
    let created = join_token(&client).await;

    let first = Host::start().await;
    assert!(first.sh(&with_wget(&created)).await.status.success());
    let second = Host::start().await;
    let reused = second.sh(&with_wget(&created)).await;
    assert!(!reused.status.success());
    assert!(
        text(&reused).contains("this join token was already used"),
        "{}",
        text(&reused)
    );
    // Nothing was installed on the refused host.
    assert!(!second
        .sh("test -e /usr/local/bin/stagely-agent")
        .await
        .status
        .success());

    let expired = server::token::Token::join();
    let an_hour_ago = server::db::now_ms() - 3_600_000;
    app.store()
        .create_join_token(&expired.hash(), user.id, None, an_hour_ago)
        .await
        .unwrap();
    let command = format!(
        "wget -qO- {}/install.sh | sh -s -- --token {}",
        app.url(),
        expired.expose()
    );
    let late = second.sh(&command).await;
    assert!(!late.status.success());
    assert!(
        text(&late).contains("this join token expired at"),
        "{}",
        text(&late)
    );

    // A token file that is not there is named, before anything is downloaded.
    let command = format!(
        "wget -qO- {}/install.sh | STAGELY_JOIN_TOKEN_FILE=/run/no-such-token sh",
        app.url()
    );
    let missing = second.sh(&command).await;
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("/run/no-such-token"),
        "{}",
        text(&missing)
    );
    assert!(!second
        .sh("test -e /usr/local/bin/stagely-agent")
        .await
        .status
        .success());

    assert_eq!(
        agents(&client).await.len(),
        1,
        "only the first host registered"
    );
}

#[tokio::test]
async fn the_script_sends_no_token_over_plain_http_to_another_host_and_holds_https_to_tls() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let host = Host::start().await;
    let fetched = host
        .sh(&format!(
            "mkdir -p /tmp && wget -qO /tmp/install.sh {}/install.sh",
            app.url()
        ))
        .await;
    assert!(fetched.status.success(), "{}", text(&fetched));
    let installed = || async {
        host.sh("test -e /usr/local/bin/stagely-agent || test -e /etc/stagely/agent.env")
            .await
            .status
            .success()
    };

    // Plain http to another host: refused before anything is downloaded or sent.
    for server in [
        "http://stagely.example.invalid",
        "http://10.1.2.3:3000/stagely",
    ] {
        let refused = host
            .sh(&format!(
                "STAGELY_JOIN_TOKEN=stj_secret sh /tmp/install.sh --server {server}"
            ))
            .await;
        let said = text(&refused);
        assert!(!refused.status.success(), "{server}: {said}");
        assert!(said.contains("refusing plain http"), "{server}: {said}");
        assert!(
            said.contains("STAGELY_ALLOW_INSECURE_HTTP=1"),
            "{server}: {said}"
        );
        assert!(!said.contains("downloading"), "{server}: {said}");
        assert!(!installed().await, "{server}");
    }
    // With the opt-in it goes on (and fails only because nothing answers there).
    let allowed = host
        .sh(
            "STAGELY_ALLOW_INSECURE_HTTP=1 STAGELY_JOIN_TOKEN=stj_secret \
             sh /tmp/install.sh --server http://stagely.example.invalid",
        )
        .await;
    let said = text(&allowed);
    assert!(said.contains("plain http"), "{said}");
    assert!(
        said.contains("downloading the agent for x86_64 from http://stagely.example.invalid"),
        "{said}"
    );

    // Over https, curl is asked for https only (redirects included) and TLS 1.2 or later: a
    // stand-in curl records what it was asked.
    let stand_in = "mkdir -p /usr/local/bin && printf '#!/bin/sh\\necho \"$*\" >>/tmp/curl-args\\nexit 22\\n' \
                    >/usr/local/bin/curl && chmod +x /usr/local/bin/curl";
    assert!(host.sh(stand_in).await.status.success());
    let https = host
        .sh("STAGELY_JOIN_TOKEN=stj_secret sh /tmp/install.sh --server https://stagely.example.invalid")
        .await;
    assert!(!https.status.success(), "{}", text(&https));
    let asked = text(&host.sh("cat /tmp/curl-args").await);
    assert!(
        asked.starts_with(
            "--proto =https --proto-redir =https --tlsv1.2 -fsSL \
             https://stagely.example.invalid/downloads/stagely-agent-x86_64 -o "
        ),
        "{asked}"
    );
    // BusyBox wget follows any redirect and cannot be limited to https: refused for https.
    assert!(host.sh("rm /usr/local/bin/curl").await.status.success());
    let busybox = host
        .sh("STAGELY_JOIN_TOKEN=stj_secret sh /tmp/install.sh --server https://stagely.example.invalid")
        .await;
    let said = text(&busybox);
    assert!(!busybox.status.success(), "{said}");
    assert!(said.contains("cannot be limited to https"), "{said}");
    assert!(!installed().await);
}

#[tokio::test]
async fn a_join_token_needs_no_body_and_a_bad_name_is_refused_with_the_rule() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, client) = app.user("ops").await;
    // `curl -X POST` with no body and no content type: every field has a default.
    let created: JoinTokenCreated = client
        .expect(reqwest::Method::POST, "/join-tokens", None, 201)
        .await;
    assert!(created.token.starts_with("stj_"), "{}", created.token);
    // A blank name is no name, as in the dashboard's form.
    let body = serde_json::json!({"name": "   "});
    let _: JoinTokenCreated = client
        .expect(reqwest::Method::POST, "/join-tokens", Some(body), 201)
        .await;
    let body = serde_json::json!({"name": "x".repeat(65)});
    let (status, json) = client
        .call(reqwest::Method::POST, "/join-tokens", Some(body))
        .await;
    assert_eq!(status, 400, "{json}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("1 to 64"), "{message}");
}

#[tokio::test]
async fn a_running_agent_never_has_its_token_on_its_command_line() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let state = app.data_dir.path();
    let url = app.url();

    // Every way an agent could be handed its token; each must connect or refuse to start.
    let (in_env, env_token) = app.add_agent("from-env").await;
    let (in_file, file_token) = app.add_agent("from-file").await;
    let (on_argv, argv_token) = app.add_agent("from-argv").await;
    let token_file = state.join("from-file.token");
    std::fs::write(&token_file, file_token.expose()).unwrap();
    let token_file = token_file.to_str().unwrap();
    let ways = [
        (
            in_env,
            env_token.expose(),
            AgentProcess::spawn_with(
                &["--server", &url],
                &[("STAGELY_AGENT_TOKEN", env_token.expose())],
                state,
            ),
        ),
        (
            in_file,
            file_token.expose(),
            AgentProcess::spawn_with(&["--server", &url, "--token-file", token_file], &[], state),
        ),
        (
            on_argv,
            argv_token.expose(),
            AgentProcess::spawn_with(
                &["--server", &url, "--token", argv_token.expose()],
                &[],
                state,
            ),
        ),
    ];

    let mut connected = Vec::new();
    for (agent_id, token, mut agent) in ways {
        eventually(
            Duration::from_secs(20),
            "the agent to connect or to refuse to start",
            || {
                let done = agent.has_exited() || app.state.hub.is_connected(agent_id);
                async move { done }
            },
        )
        .await;
        if agent.has_exited() {
            assert!(
                !app.state.hub.is_connected(agent_id),
                "{}",
                agent.log_text()
            );
            continue;
        }
        let pid = agent.pid().expect("a running agent has a pid");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(token),
            "a running agent shows its token to every user: {cmdline}"
        );
        assert!(
            !agent.log_text().contains(token),
            "the agent logged its token: {}",
            agent.log_text()
        );
        connected.push(agent_id);
    }
    assert_eq!(
        connected,
        [in_env, in_file],
        "the environment and the token file still work"
    );
}

#[tokio::test]
async fn adding_an_agent_at_the_command_line_shows_how_to_start_it_without_its_token_in_argv() {
    let data = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stagely-server"))
        .args(["agents", "add", "web-1"])
        .env("STAGELY_DATA_DIR", data.path())
        .output()
        .unwrap();
    let hint = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{hint}");
    let token = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(token.starts_with("stg_"), "{token}");
    assert!(hint.contains("--token-file"), "{hint}");
    assert!(!hint.contains("--token "), "{hint}");
    assert!(!hint.contains(&token), "{hint}");
}
