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
    BUILT
        .get_or_init(|| async {
            let inspect = CommandSpec::new("docker", ["image", "inspect", TEST_IMAGE]);
            if run_ok(inspect).await.is_ok() {
                return;
            }
            let busybox = ["/bin/busybox", "/usr/bin/busybox"]
                .into_iter()
                .map(Path::new)
                .find(|path| path.exists())
                .expect("busybox is missing: install Debian's busybox-static");
            let context = tempfile::tempdir().expect("a temporary directory");
            std::fs::copy(busybox, context.path().join("busybox")).expect("copying busybox");
            std::fs::write(
                context.path().join("Dockerfile"),
                "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
            )
            .expect("writing the Dockerfile");
            let context_path = context.path().display().to_string();
            let build = CommandSpec::new("docker", ["build", "-t", TEST_IMAGE, context_path.as_str()]);
            if let Err(output) = run_ok(build).await {
                panic!("building the test image failed: {output}");
            }
        })
        .await;
    TEST_IMAGE
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
