//! What the agent knows about its host: its name, and which Docker and Compose it can drive.

use crate::runner::{self, CommandSpec, Redactor};
use crate::wire;
use std::time::Duration;

/// How Compose is invoked on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compose {
    /// The v2 plugin: `docker compose …`.
    V2,
    /// The standalone v1 program: `docker-compose …`.
    V1,
}

impl Compose {
    /// Program and leading arguments; the caller appends the rest.
    pub fn command<I, S>(&self, args: I) -> CommandSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
    {
        let args = args.into_iter().map(Into::into);
        match self {
            Self::V2 => CommandSpec::new("docker", std::iter::once("compose".into()).chain(args)),
            Self::V1 => CommandSpec::new("docker-compose", args),
        }
    }

    /// Parses the `STAGELY_COMPOSE` override: `v2` / `docker compose`, `v1` / `docker-compose`.
    pub fn from_setting(setting: &str) -> Option<Self> {
        match setting.trim() {
            "v2" | "docker compose" => Some(Self::V2),
            "v1" | "docker-compose" => Some(Self::V1),
            _ => None,
        }
    }
}

/// The Compose found on this host and its version: v2 is preferred when both exist.
pub async fn detect_compose() -> Option<(Compose, String)> {
    for compose in [Compose::V2, Compose::V1] {
        if let Some(version) = short_version(compose.command(["version", "--short"])).await {
            return Some((compose, version));
        }
    }
    None
}

/// The Docker engine's version, if the daemon answers.
pub async fn docker_version() -> Option<String> {
    short_version(CommandSpec::new(
        "docker",
        ["version", "--format", "{{.Server.Version}}"],
    ))
    .await
}

async fn short_version(spec: CommandSpec) -> Option<String> {
    let spec = spec.timeout(Duration::from_secs(15));
    let output = runner::run(&spec, &Redactor::default(), |_| {})
        .await
        .ok()?;
    let version = output.stdout.lines().next()?.trim().trim_start_matches('v');
    (output.success() && !version.is_empty()).then(|| wire::hello_field(version))
}

/// The host's name as the kernel knows it (cut to fit the hello).
pub fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into());
    wire::hello_field(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_commands_are_built_as_argv() {
        let v2 = Compose::V2.command(["-p", "shop", "up", "-d"]);
        assert_eq!(v2.display(), "docker compose -p shop up -d");
        let v1 = Compose::V1.command(["-p", "shop", "up", "-d"]);
        assert_eq!(v1.display(), "docker-compose -p shop up -d");
        assert_eq!(Compose::from_setting("v1"), Some(Compose::V1));
        assert_eq!(Compose::from_setting("podman"), None);
    }
}
