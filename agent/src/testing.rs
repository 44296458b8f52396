//! Support for tests that need a real Docker engine, shared by the agent's and the server's
//! test suites: a tiny image built locally from Debian's static busybox, since no image can be
//! pulled on the machines Stagely is tested on.

use crate::runner::{self, CommandSpec, Redactor};
use std::path::Path;
use std::time::Duration;
use tokio::sync::OnceCell;

/// `FROM scratch` + busybox: sh, sleep, httpd, wget and friends.
pub const TEST_IMAGE: &str = "stagely-test/busybox:latest";

/// A compose file with two services, `web` and `worker`, that idle until stopped and stop
/// promptly on SIGTERM; `{image}` stands for [`TEST_IMAGE`].
pub const TWO_IDLE_SERVICES: &str = r#"services:
  web:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
  worker:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;

/// Builds [`TEST_IMAGE`] once per process (skipped when the engine already has it).
pub async fn test_image() -> &'static str {
    static BUILT: OnceCell<()> = OnceCell::const_new();
    build_once(&BUILT, TEST_IMAGE, |context| {
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|path| path.exists())
            .expect("busybox is missing: install Debian's busybox-static");
        std::fs::copy(busybox, context.join("busybox")).expect("copying busybox");
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"
    })
    .await
}

/// `FROM scratch` + Debian's HAProxy and the libraries it links: a proxy in front of a service,
/// as in production. Its entry point is `haproxy`.
pub const PROXY_IMAGE: &str = "stagely-test/haproxy:latest";

/// Builds [`PROXY_IMAGE`] once per process (skipped when the engine already has it).
pub async fn proxy_image() -> &'static str {
    static BUILT: OnceCell<()> = OnceCell::const_new();
    build_once(&BUILT, PROXY_IMAGE, |context| {
        let haproxy = Path::new("/usr/sbin/haproxy");
        assert!(
            haproxy.exists(),
            "haproxy is missing: install Debian's haproxy"
        );
        let ldd = std::process::Command::new("ldd")
            .arg(haproxy)
            .output()
            .expect("ldd haproxy");
        assert!(ldd.status.success(), "ldd haproxy: {ldd:?}");
        let ldd = String::from_utf8_lossy(&ldd.stdout);
        let libraries = ldd
            .split_whitespace()
            .filter(|word| word.starts_with('/'))
            .map(Path::new);
        for file in libraries.chain([haproxy]) {
            let copy = context.join(file.strip_prefix("/").expect("absolute"));
            std::fs::create_dir_all(copy.parent().expect("a directory"))
                .expect("creating the image's directories");
            // `copy` follows symbolic links: the library itself goes in, under its name.
            std::fs::copy(file, &copy).expect("copying haproxy and its libraries");
        }
        "FROM scratch\nCOPY . /\nENTRYPOINT [\"/usr/sbin/haproxy\"]\n"
    })
    .await
}

/// Builds `tag` once per process, from a build context that `fill` puts in the directory it is
/// given (returning the Dockerfile); skipped when the engine already has `tag`.
async fn build_once(
    built: &'static OnceCell<()>,
    tag: &'static str,
    fill: impl FnOnce(&Path) -> &'static str,
) -> &'static str {
    built
        .get_or_init(|| async {
            let inspect = CommandSpec::new("docker", ["image", "inspect", tag]);
            if run_ok(inspect).await.is_ok() {
                return;
            }
            let context = tempfile::tempdir().expect("a temporary directory");
            let dockerfile = fill(context.path());
            std::fs::write(context.path().join("Dockerfile"), dockerfile)
                .expect("writing the Dockerfile");
            let context_path = context.path().display().to_string();
            let build = CommandSpec::new("docker", ["build", "-q", "-t", tag, &context_path]);
            if let Err(output) = run_ok(build).await {
                panic!("building {tag} failed: {output}");
            }
        })
        .await;
    tag
}

/// Builds `tag` from [`TEST_IMAGE`] with `/version` holding `version` (so each version is a
/// different image); returns its id.
pub async fn build_version_image(tag: &str, version: &str) -> String {
    let base = test_image().await;
    let context = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        context.path().join("Dockerfile"),
        // The tag (random per test) goes into the image too: with the same content, the build
        // cache would give another run's image (another worktree's tests on the same Docker
        // daemon) this very id, and removing our tag would then leave the image in place.
        format!("FROM {base}\nRUN echo {version} {tag} > /version\n"),
    )
    .expect("writing the Dockerfile");
    let dir = context.path().display().to_string();
    let build = CommandSpec::new("docker", ["build", "-q", "-t", tag, dir.as_str()]);
    run_ok(build).await.expect("docker build");
    image_id(tag).await
}

/// The id (`sha256:…`) of the image `reference` names.
pub async fn image_id(reference: &str) -> String {
    let spec = CommandSpec::new("docker", ["image", "inspect", "-f", "{{.Id}}", reference]);
    run_ok(spec)
        .await
        .expect("docker image inspect")
        .trim()
        .to_owned()
}

/// The id of the image the one container of `service` in `project` runs.
pub async fn container_image(project: &str, service: &str) -> String {
    let id = container_of(project, service).await;
    let inspect = CommandSpec::new("docker", ["inspect", "-f", "{{.Image}}", id.as_str()]);
    run_ok(inspect)
        .await
        .expect("docker inspect")
        .trim()
        .to_owned()
}

/// The ids of every container of `project`, running or not.
pub async fn container_ids(project: &str) -> Vec<String> {
    let filter = format!("label=com.docker.compose.project={project}");
    let list = CommandSpec::new("docker", ["ps", "-aq", "--filter", filter.as_str()]);
    let ids = run_ok(list).await.expect("docker ps");
    ids.split_whitespace().map(str::to_owned).collect()
}

/// The id of the one container of `service` in `project`.
async fn container_of(project: &str, service: &str) -> String {
    let project = format!("label=com.docker.compose.project={project}");
    let service = format!("label=com.docker.compose.service={service}");
    let list = CommandSpec::new(
        "docker",
        [
            "ps",
            "-aq",
            "--filter",
            project.as_str(),
            "--filter",
            service.as_str(),
        ],
    );
    let ids = run_ok(list).await.expect("docker ps");
    ids.split_whitespace()
        .next()
        .expect("a container")
        .to_string()
}

/// Runs a command and returns its stdout, or its whole output as the error.
pub async fn run_ok(spec: CommandSpec) -> Result<String, String> {
    let spec = spec.timeout(Duration::from_secs(300));
    match runner::run(&spec, &Redactor::default(), |_| {}).await {
        Ok(output) if output.success() => Ok(output.stdout),
        Ok(output) => Err(format!(
            "`{}` exited with {:?}\n{}\n{}",
            output.command, output.exit_code, output.stdout, output.stderr
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// The environment (`KEY=VALUE` entries) of the one container of `service` in `project`.
pub async fn container_env(project: &str, service: &str) -> Vec<String> {
    let id = container_of(project, service).await;
    let inspect = CommandSpec::new(
        "docker",
        ["inspect", "-f", "{{json .Config.Env}}", id.as_str()],
    );
    serde_json::from_str(&run_ok(inspect).await.expect("docker inspect")).expect("a JSON list")
}

/// Removes every container and network of a Compose project, whatever made it.
pub fn remove_project(project: &str) {
    let filter = format!("label=com.docker.compose.project={project}");
    if let Ok(output) = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", filter.as_str()])
        .output()
    {
        let ids = String::from_utf8_lossy(&output.stdout);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
    let _ = std::process::Command::new("docker")
        .args(["network", "rm", &format!("{project}_default")])
        .output();
}

/// A Distribution registry (Debian's `docker-registry`) started for one test on a free loopback
/// port, with its storage in a temporary directory, optionally behind htpasswd basic auth. The
/// Docker engine trusts loopback registries over plain http. Stopped when dropped.
pub struct TestRegistry {
    /// `127.0.0.1:<port>`, as image references name it.
    pub host: String,
    /// The username and password that pass its auth, if it has one.
    pub login: Option<(String, String)>,
    dir: tempfile::TempDir,
    _process: tokio::process::Child,
}

impl TestRegistry {
    /// Starts a registry; `login` puts it behind basic auth with that one account (bcrypt, as
    /// the registry requires, from `htpasswd -B`).
    pub async fn start(login: Option<(&str, &str)>) -> Self {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:0\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = login {
            let htpasswd = std::process::Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) runs");
            assert!(htpasswd.status.success(), "{htpasswd:?}");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &htpasswd.stdout).expect("writing htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: stagely-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).expect("writing the registry's config");
        let mut process = tokio::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry (Debian's docker-registry package) starts");
        let stderr = process.stderr.take().expect("piped stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        // It binds port 0 and says which port it got once it listens.
        let host = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("reading the registry's log") {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    return rest
                        .split(|c: char| c == '"' || c.is_whitespace())
                        .next()
                        .map(str::to_owned);
                }
            }
            None
        })
        .await
        .expect("the registry listens within 30 s")
        .expect("the registry says where it listens");
        // Keep reading its log, so a full pipe never stalls it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            host,
            login: login.map(|(user, password)| (user.to_owned(), password.to_owned())),
            dir,
            _process: process,
        }
    }

    /// Tags the local image `image` as `<host>/<repository>:<tag>`, pushes it (logged in through
    /// a Docker configuration of this registry's own, never the host's), removes that local tag
    /// again and returns the pushed reference and its repo digest (`<host>/<repository>@sha256:…`).
    pub async fn push(&self, image: &str, repository: &str, tag: &str) -> (String, String) {
        let reference = format!("{}/{repository}:{tag}", self.host);
        run_ok(CommandSpec::new(
            "docker",
            ["tag", image, reference.as_str()],
        ))
        .await
        .expect("docker tag");
        let mut push = CommandSpec::new("docker", ["push", reference.as_str()]);
        if let Some((user, password)) = &self.login {
            let config = self.dir.path().join("client");
            std::fs::create_dir_all(&config).expect("a client config directory");
            let auth = base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{password}"),
            );
            let json = serde_json::json!({"auths": {self.host.as_str(): {"auth": auth}}});
            std::fs::write(config.join("config.json"), json.to_string()).expect("config.json");
            push = push.docker_config(config);
        }
        let output = run_ok(push).await.expect("docker push");
        let digest = output
            .split_whitespace()
            .find(|word| word.starts_with("sha256:"))
            .expect("docker push prints the digest")
            .to_owned();
        run_ok(CommandSpec::new("docker", ["rmi", reference.as_str()]))
            .await
            .expect("docker rmi of the pushed tag");
        (reference, format!("{}/{repository}@{digest}", self.host))
    }
}
