//! A tiny local image and throwaway Compose projects that clean up after themselves.

use agent::runner::CommandSpec;
use agent::system::Compose;
use std::path::Path;
use tempfile::TempDir;

pub use agent::testing::{run_ok, test_image};

/// A compose project in a temporary directory, torn down (`down -v`) when dropped.
pub struct TestProject {
    pub name: String,
    pub dir: TempDir,
    pub compose: Compose,
}

impl TestProject {
    /// Writes `compose_yaml` (with `{image}` replaced by the test image) as `compose.yaml`.
    pub async fn new(compose: Compose, compose_yaml: &str) -> Self {
        let image = test_image().await;
        let dir = tempfile::tempdir().unwrap();
        let file = if compose == Compose::V1 {
            "docker-compose.yml"
        } else {
            "compose.yaml"
        };
        std::fs::write(
            dir.path().join(file),
            compose_yaml.replace("{image}", image),
        )
        .unwrap();
        let name = format!(
            "stagely-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Self { name, dir, compose }
    }

    /// `docker compose -p <name> <args…>` in the project directory.
    pub fn command(&self, args: &[&str]) -> CommandSpec {
        let mut argv = vec!["-p", self.name.as_str()];
        argv.extend_from_slice(args);
        self.compose.command(argv).current_dir(self.dir.path())
    }

    /// `container name → state` for this project's containers, straight from the engine.
    pub async fn container_states(&self) -> Vec<(String, String)> {
        let filter = format!("label=com.docker.compose.project={}", self.name);
        let list = CommandSpec::new(
            "docker",
            [
                "ps",
                "-a",
                "--filter",
                filter.as_str(),
                "--format",
                "{{.Names}} {{.State}}",
            ],
        );
        let stdout = run_ok(list).await.unwrap();
        let mut states: Vec<(String, String)> = stdout
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(name, state)| (name.to_string(), state.to_string()))
            .collect();
        states.sort();
        states
    }
}

impl Drop for TestProject {
    fn drop(&mut self) {
        let (program, mut args) = match self.compose {
            Compose::V2 => ("docker", vec!["compose".to_string()]),
            Compose::V1 => ("docker-compose", vec![]),
        };
        args.extend(
            [
                "-p",
                &self.name,
                "down",
                "-v",
                "--remove-orphans",
                "-t",
                "1",
            ]
            .map(String::from),
        );
        let _ = std::process::Command::new(program)
            .args(&args)
            .current_dir(self.dir.path())
            .output();
    }
}

/// A service that stops promptly on SIGTERM, like a well-behaved app.
pub const IDLE_COMMAND: &str =
    r#"["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]"#;

impl TestProject {
    /// The id of the (single) container of `service`.
    pub async fn container_id(&self, service: &str) -> String {
        let project = format!("label=com.docker.compose.project={}", self.name);
        let service = format!("label=com.docker.compose.service={service}");
        let list = CommandSpec::new(
            "docker",
            [
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                project.as_str(),
                "--filter",
                service.as_str(),
            ],
        );
        let ids = run_ok(list).await.unwrap();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        assert_eq!(ids.len(), 1, "expected one container: {ids:?}");
        ids[0].to_string()
    }

    /// `KEY=VALUE` entries of the container's environment, as the engine sees them.
    pub async fn container_env(&self, service: &str) -> Vec<String> {
        let id = self.container_id(service).await;
        let inspect = CommandSpec::new(
            "docker",
            ["inspect", "-f", "{{json .Config.Env}}", id.as_str()],
        );
        serde_json::from_str(&run_ok(inspect).await.unwrap()).unwrap()
    }

    /// When the service's container last started.
    pub async fn started_at(&self, service: &str) -> String {
        let id = self.container_id(service).await;
        let inspect = CommandSpec::new(
            "docker",
            ["inspect", "-f", "{{.State.StartedAt}}", id.as_str()],
        );
        run_ok(inspect).await.unwrap().trim().to_string()
    }

    pub fn project_name(&self) -> shared::ProjectName {
        shared::ProjectName::parse(self.name.as_str()).unwrap()
    }
}

/// Every file under `dir` with its bytes and mode: equal before and after means untouched.
pub fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&current)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let bytes = if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            files.push((path, bytes, meta.permissions().mode()));
        }
    }
    files
}

/// Files left in a private directory.
pub fn leftovers(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A container started by `docker run -d --name <name> --network <network> <rest…>` (the image
/// and its command, or options before them), removed when dropped.
pub struct Detached {
    pub name: String,
}

impl Detached {
    pub async fn run(name: String, network: &str, rest: &[&str]) -> Self {
        let argv = ["run", "-d", "--name", name.as_str(), "--network", network]
            .into_iter()
            .chain(rest.iter().copied());
        run_ok(CommandSpec::new("docker", argv))
            .await
            .unwrap_or_else(|output| panic!("starting {name}: {output}"));
        Self { name }
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", self.name.as_str()])
            .output();
    }
}
