//! Start-first rollouts of the compose services that opt in, inside a deploy, the way
//! docker-rollout does them:
//!
//! 1. **plan**: read the resolved configuration (`compose config --format json`) for the
//!    services labelled [`ROLLOUT_LABEL`]` start-first`. Such a service must have no fixed
//!    `container_name`, no published host port and no host network, since its old and new
//!    containers run side by side; one that has them fails the deploy here, before any
//!    container changes. Then the service's containers are compared with what Compose would
//!    create now (`compose config --hash`, and the image id the tag points at): only a service
//!    whose running containers are out of date is rolled out;
//! 2. **scale up**: `create --no-recreate --scale <service>=<old + desired> <service>` creates
//!    the new containers with the new configuration beside the old ones, which keep serving
//!    (Compose v2 labels the new ones with the new configuration hash, so the deploy's own `up`
//!    afterwards leaves them alone). Before they start, each is connected again to its
//!    networks without the service's name as an alias: nobody asking for the service reaches
//!    a container that is still starting;
//! 3. **wait** until every new container is healthy (or, without a healthcheck, has run for
//!    the settle time of [`SETTLE_LABEL`], [`DEFAULT_SETTLE`] unless set, at most
//!    [`MAX_SETTLE`]), reporting `<service>: start-first n/m new container(s) healthy`; then
//!    connect them again with all their aliases, so they answer to the service's name;
//! 4. **retire** the old containers, [`JOIN_GRACE`] later: each is stopped where it stands
//!    (its own stop signal and grace period), then removed. It stays on its networks until its
//!    processes exit, so a request it has is answered (by an app that finishes what it started
//!    on SIGTERM) or closed by its exit, and one that reaches it while it stops is refused; a
//!    proxy in front that sends a refused request, or a GET closed before any answer, to
//!    another container (`deploy/haproxy-rollout.cfg`) loses none. Docker takes it out of the
//!    service's name when it exits. (Taken off the network first, its address would vanish
//!    under requests in flight, which would wait for an answer that never comes: Docker 20.10
//!    cannot drop an alias without dropping the address.) One that outlives its grace period
//!    and the kill by far is removed by force.
//!
//! When a new container exits, turns unhealthy, restarts or is not ready in time, the new
//! containers are removed, the old ones keep serving and the deploy fails with the reason and
//! the new container's last log lines. Every command's output passes through the deploy's
//! [`Redactor`]; the resolved configuration (which holds the secret values) is parsed and
//! dropped, never reported.
//!
//! Compose v1 has no JSON configuration nor hash to compare, so the label is not read there
//! and its services are recreated as before.

use crate::health;
use crate::runner::{self, CommandSpec, OutputLine, Redactor, RunError};
use crate::wire;
use serde::Deserialize;
use shared::protocol::{budget, JobEvent};
use shared::ProjectName;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// The label a service opts in with: `dev.stagely.rollout: start-first`.
pub const ROLLOUT_LABEL: &str = "dev.stagely.rollout";
/// The value of [`ROLLOUT_LABEL`] that opts in; `recreate` (the default) is accepted too.
pub const START_FIRST: &str = "start-first";
/// Seconds a new container without a healthcheck must run before the old ones are removed.
pub const SETTLE_LABEL: &str = "dev.stagely.rollout.settle";
/// The settle time when [`SETTLE_LABEL`] is not set.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(5);
/// The longest settle time [`SETTLE_LABEL`] may ask for.
pub const MAX_SETTLE: Duration = Duration::from_secs(300);

/// How long the old containers keep serving after the new ones joined the service's name,
/// before they are told to stop (and then serve for as long as their app does on SIGTERM): a
/// proxy that looks the name up again every so often (`deploy/haproxy-rollout.cfg`: every
/// 200 ms) finds the new ones before the old ones leave, so it always has one to send to.
pub const JOIN_GRACE: Duration = Duration::from_secs(1);

/// Why a rollout was refused or failed; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(
        "service {service} asks for a start-first rollout ({ROLLOUT_LABEL}: {START_FIRST}) but \
         {reason}; its old and new containers would run side by side, so a start-first service \
         needs no fixed container_name, no published host port and no host network. Nothing \
         was changed"
    )]
    NotEligible { service: String, reason: String },
    #[error("service {service}: label {label} is {value:?}; {expected}. Nothing was changed")]
    BadLabel {
        service: String,
        label: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("reading the resolved compose configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Docker(String),
    #[error(
        "{service}: the start-first rollout failed: {reason}; the new containers were removed \
         and the old ones keep serving. The new container's last log lines:\n{logs}"
    )]
    Failed {
        service: String,
        reason: String,
        logs: String,
    },
    #[error(
        "{service}: the new containers are ready but removing an old one failed: {reason}; \
         both may be serving"
    )]
    Retire { service: String, reason: String },
    #[error(transparent)]
    Command(#[from] RunError),
}

/// A service that opted in, as its resolved configuration describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptedIn {
    pub service: String,
    /// How many containers it should run (`scale`, `deploy.replicas`, else 1).
    pub replicas: usize,
    /// The image reference its containers are created from.
    pub image: String,
    /// How long a new container without a healthcheck must run.
    pub settle: Duration,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    services: BTreeMap<String, ServiceConfig>,
}

/// Only what the plan reads: the environment (secret values) is never deserialized.
#[derive(Deserialize)]
struct ServiceConfig {
    #[serde(default)]
    labels: Option<Labels>,
    #[serde(default)]
    container_name: Option<String>,
    #[serde(default)]
    ports: Vec<serde_json::Value>,
    #[serde(default)]
    network_mode: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    scale: Option<usize>,
    #[serde(default)]
    deploy: Option<DeployConfig>,
}

#[derive(Deserialize)]
struct DeployConfig {
    #[serde(default)]
    replicas: Option<usize>,
}

/// Labels as a map or as a list of `key=value`, as a compose file may write them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Labels {
    Map(BTreeMap<String, serde_json::Value>),
    List(Vec<String>),
}

impl Labels {
    fn get(&self, key: &str) -> Option<String> {
        match self {
            Self::Map(map) => map.get(key).map(|value| match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            }),
            Self::List(list) => list.iter().find_map(|entry| {
                let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
                (name == key).then(|| value.to_owned())
            }),
        }
    }
}

/// Whether a `ports` entry publishes a host port (`8080:80`, or `published` set).
fn publishes(port: &serde_json::Value) -> bool {
    match port {
        serde_json::Value::String(text) => text.contains(':'),
        serde_json::Value::Object(fields) => match fields.get("published") {
            Some(serde_json::Value::String(text)) => !text.is_empty(),
            Some(serde_json::Value::Number(_)) => true,
            _ => false,
        },
        _ => false,
    }
}

/// The services of `config_json` (`compose config --format json`) that opt in, checked; a
/// service that opts in but cannot run twice side by side is an error.
pub fn opted_in(config_json: &str, project: &ProjectName) -> Result<Vec<OptedIn>, RolloutError> {
    let config: Config = serde_json::from_str(config_json)
        .map_err(|error| RolloutError::Config(format!("unexpected JSON: {error}")))?;
    let mut found = Vec::new();
    for (service, config) in config.services {
        let Some(labels) = &config.labels else {
            continue;
        };
        match labels.get(ROLLOUT_LABEL).as_deref() {
            None | Some("recreate") => continue,
            Some(START_FIRST) => {}
            Some(other) => {
                return Err(RolloutError::BadLabel {
                    service,
                    label: ROLLOUT_LABEL,
                    value: other.to_owned(),
                    expected: "expected start-first or recreate",
                })
            }
        }
        let mut problems = Vec::new();
        if let Some(name) = config.container_name.as_deref().filter(|n| !n.is_empty()) {
            problems.push(format!("it has a fixed container_name ({name})"));
        }
        if config.ports.iter().any(publishes) {
            problems.push("it publishes a host port".to_owned());
        }
        if config.network_mode.as_deref() == Some("host") {
            problems.push("it runs on the host network".to_owned());
        }
        if !problems.is_empty() {
            return Err(RolloutError::NotEligible {
                service,
                reason: problems.join(" and "),
            });
        }
        let settle = match labels.get(SETTLE_LABEL) {
            None => DEFAULT_SETTLE,
            Some(value) => match value.trim().parse::<u64>() {
                Ok(seconds) if Duration::from_secs(seconds) <= MAX_SETTLE => {
                    Duration::from_secs(seconds)
                }
                _ => {
                    return Err(RolloutError::BadLabel {
                        service,
                        label: SETTLE_LABEL,
                        value,
                        expected: "expected whole seconds from 0 to 300",
                    })
                }
            },
        };
        let replicas = config
            .scale
            .or(config.deploy.and_then(|deploy| deploy.replicas))
            .unwrap_or(1);
        // Compose v2 names the image of a built service without `image:` this way.
        let image = config
            .image
            .unwrap_or_else(|| format!("{project}-{service}"));
        found.push(OptedIn {
            service,
            replicas,
            image,
            settle,
        });
    }
    Ok(found)
}

/// Parses `compose config --hash <services>`: one `<service> <hash>` per line.
pub fn parse_hashes(output: &str) -> HashMap<String, String> {
    output
        .lines()
        .filter_map(|line| line.trim().split_once(' '))
        .map(|(service, hash)| (service.to_owned(), hash.trim().to_owned()))
        .collect()
}

/// One existing container of a service, as `docker ps` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Existing {
    pub id: String,
    pub config_hash: String,
    /// The image id Compose recorded when it created it (empty on older Compose).
    pub image_id: String,
    pub running: bool,
}

/// The `docker ps --format` [`parse_existing`] reads.
const PS_FORMAT: &str = r#"{{.ID}} {{.State}} {{.Label "com.docker.compose.config-hash"}} {{.Label "com.docker.compose.image"}}"#;

/// Parses `docker ps -a --format` [`PS_FORMAT`].
pub fn parse_existing(output: &str) -> Vec<Existing> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next().filter(|id| !id.is_empty())?;
            let state = fields.next().unwrap_or_default();
            Some(Existing {
                id: id.to_owned(),
                running: state == "running",
                config_hash: fields.next().unwrap_or_default().to_owned(),
                image_id: fields.next().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

/// Whether the containers `existing` are out of date against the configuration hash Compose
/// computes now and the image id the service's image points at (`None`: not on the host yet).
pub fn out_of_date(existing: &[Existing], hash: &str, image_id: Option<&str>) -> bool {
    existing.iter().any(|container| {
        container.config_hash != hash
            || match image_id {
                None => true,
                Some(id) => !container.image_id.is_empty() && container.image_id != id,
            }
    })
}

/// What a rollout needs from its deploy.
pub struct Rollouts<'a> {
    pub project: &'a ProjectName,
    /// Builds `compose -p … -f … -f <override> <args>` with the deploy's registry credentials.
    pub compose: &'a (dyn Fn(Vec<String>) -> CommandSpec + Sync),
    pub redactor: &'a Redactor,
    /// Longest the scale-up `up` may take.
    pub up_timeout: Duration,
    /// Longest the new containers may take to turn ready.
    pub ready_timeout: Duration,
}

impl Rollouts<'_> {
    /// Plans and runs the rollouts of every opted-in service that changed; returns the
    /// services it rolled out. An error leaves every old container as it was.
    pub async fn run(
        &self,
        report: &mut impl FnMut(JobEvent),
    ) -> Result<Vec<String>, RolloutError> {
        let args = ["config", "--format", "json"].map(str::to_owned).to_vec();
        let config = self.quiet((self.compose)(args)).await?;
        let services = opted_in(&config, self.project)?;
        drop(config);
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = services.iter().map(|s| s.service.as_str()).collect();
        let args = vec!["config".into(), "--hash".into(), names.join(",")];
        let hashes = parse_hashes(&self.quiet((self.compose)(args)).await?);

        let mut due = Vec::new();
        for service in services {
            let existing = self.existing(&service.service).await?;
            if !existing.iter().any(|container| container.running) {
                continue; // nothing serves yet: the deploy's `up` starts it
            }
            let Some(hash) = hashes.get(&service.service) else {
                return Err(RolloutError::Config(format!(
                    "compose printed no configuration hash for {}",
                    service.service
                )));
            };
            let image_id = self.image_id(&service.image).await;
            if out_of_date(&existing, hash, image_id.as_deref()) {
                due.push((service, existing));
            }
        }
        let mut done = Vec::new();
        for (service, old) in due {
            self.roll_out(&service, &old, report).await?;
            done.push(service.service);
        }
        Ok(done)
    }

    async fn roll_out(
        &self,
        service: &OptedIn,
        old: &[Existing],
        report: &mut impl FnMut(JobEvent),
    ) -> Result<(), RolloutError> {
        let name = service.service.as_str();
        let total = old.len() + service.replicas;
        say(
            report,
            format!(
                "{name}: start-first: starting {} new container(s) beside the {} old",
                service.replicas,
                old.len()
            ),
        );
        let args = vec![
            "create".to_owned(),
            "--no-recreate".into(),
            "--scale".into(),
            format!("{name}={total}"),
            name.to_owned(),
        ];
        let create = (self.compose)(args).timeout(self.up_timeout);
        let output = runner::run(&create, self.redactor, |line| {
            let (OutputLine::Stdout(text) | OutputLine::Stderr(text)) = line;
            say(report, text);
        })
        .await;
        let old_ids: HashSet<&str> = old.iter().map(|c| c.id.as_str()).collect();
        let new: Vec<String> = self
            .existing(name)
            .await?
            .into_iter()
            .map(|container| container.id)
            .filter(|id| !old_ids.contains(id.as_str()))
            .collect();
        let failure = match output {
            Ok(output) if output.success() => self.start_gated(service, &new, report).await,
            Ok(output) => Err(format!(
                "`create --scale` exited with {:?}: {}",
                output.exit_code,
                wire::cut_keeping_end(output.stderr.trim(), 2048)
            )),
            Err(error) => Err(error.to_string()),
        };
        if let Err(reason) = failure {
            let logs = match new.first() {
                Some(id) => self.logs(id).await,
                None => "(no new container was created)".to_owned(),
            };
            self.remove(&new).await;
            say(
                report,
                format!("{name}: start-first failed; new container(s) removed, old kept"),
            );
            return Err(RolloutError::Failed {
                service: name.to_owned(),
                reason,
                logs,
            });
        }
        if !old.is_empty() {
            tokio::time::sleep(JOIN_GRACE).await;
        }
        for container in old {
            self.retire(name, &container.id, report)
                .await
                .map_err(|reason| RolloutError::Retire {
                    service: name.to_owned(),
                    reason,
                })?;
        }
        say(
            report,
            format!(
                "{name}: start-first done: {} old container(s) removed, {} new serving",
                old.len(),
                new.len()
            ),
        );
        Ok(())
    }

    /// Starts the new containers out of the service's DNS name, waits until they are ready,
    /// then puts them into it: clients asking for the service never reach a container that is
    /// still starting (or one whose healthcheck fails).
    async fn start_gated(
        &self,
        service: &OptedIn,
        new: &[String],
        report: &mut impl FnMut(JobEvent),
    ) -> Result<(), String> {
        if new.is_empty() {
            return Err("Compose created no new container".to_owned());
        }
        let mut endpoints = Vec::new();
        for id in new {
            let networks = self.networks(id).await?;
            for (network, aliases) in &networks {
                let hidden: Vec<&str> = aliases
                    .iter()
                    .map(String::as_str)
                    .filter(|alias| *alias != service.service)
                    .collect();
                self.reconnect(network, id, &hidden).await?;
            }
            endpoints.push((id, networks));
        }
        let argv = ["start"].into_iter().chain(new.iter().map(String::as_str));
        self.quiet(CommandSpec::new("docker", argv))
            .await
            .map_err(|error| error.to_string())?;
        self.wait_ready(service, new, report).await?;
        for (id, networks) in &endpoints {
            for (network, aliases) in networks {
                let aliases: Vec<&str> = aliases.iter().map(String::as_str).collect();
                self.reconnect(network, id, &aliases).await?;
            }
        }
        say(
            report,
            format!(
                "{}: start-first: new container(s) now answer as {0}",
                service.service
            ),
        );
        Ok(())
    }

    /// The networks of a container with the aliases it has (or will have) on each.
    async fn networks(&self, id: &str) -> Result<Vec<(String, Vec<String>)>, String> {
        #[derive(Deserialize)]
        struct Endpoint {
            #[serde(rename = "Aliases", default)]
            aliases: Option<Vec<String>>,
        }
        let spec = CommandSpec::new(
            "docker",
            [
                "inspect",
                "--format",
                "{{json .NetworkSettings.Networks}}",
                id,
            ],
        );
        let json = self.quiet(spec).await.map_err(|error| error.to_string())?;
        let networks: Option<BTreeMap<String, Endpoint>> = serde_json::from_str(json.trim())
            .map_err(|error| format!("reading a new container's networks: {error}"))?;
        Ok(networks
            .unwrap_or_default()
            .into_iter()
            // A container's short id is an alias Docker gives it on every connect by itself.
            .map(|(network, endpoint)| {
                let aliases = endpoint
                    .aliases
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|alias| !id.starts_with(alias.as_str()))
                    .collect();
                (network, aliases)
            })
            .collect())
    }

    /// Connects a container to `network` again with exactly `aliases`.
    async fn reconnect(&self, network: &str, id: &str, aliases: &[&str]) -> Result<(), String> {
        let disconnect = CommandSpec::new("docker", ["network", "disconnect", network, id]);
        self.quiet(disconnect)
            .await
            .map_err(|error| error.to_string())?;
        let mut argv = vec!["network", "connect"];
        for alias in aliases {
            argv.extend(["--alias", alias]);
        }
        argv.extend([network, id]);
        self.quiet(CommandSpec::new("docker", argv))
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }

    /// Waits until every container of `new` is ready; the reason when one cannot be.
    async fn wait_ready(
        &self,
        service: &OptedIn,
        new: &[String],
        report: &mut impl FnMut(JobEvent),
    ) -> Result<(), String> {
        let name = service.service.as_str();
        let deadline = Instant::now() + self.ready_timeout;
        let mut running_since: HashMap<String, Instant> = HashMap::new();
        let mut last_ready = None;
        loop {
            let mut argv = vec!["inspect", "--format", health::INSPECT_FORMAT];
            argv.extend(new.iter().map(String::as_str));
            let inspected = self
                .quiet(CommandSpec::new("docker", argv))
                .await
                .map_err(|error| error.to_string())?;
            let containers = health::parse_inspected(&inspected)
                .map_err(|error| format!("reading the new containers' state: {error}"))?;
            if containers.len() != new.len() {
                return Err("a new container disappeared".to_owned());
            }
            let mut ready = 0;
            for container in &containers {
                match (container.status.as_str(), container.health.as_deref()) {
                    ("exited" | "dead", _) => {
                        return Err(format!(
                            "a new container exited with code {}",
                            container
                                .exit_code
                                .map_or_else(|| "unknown".into(), |code| code.to_string())
                        ))
                    }
                    (_, Some("unhealthy")) => {
                        return Err("a new container's healthcheck failed (unhealthy)".into())
                    }
                    _ if container.restart_count > 0 => {
                        return Err("a new container restarted".into())
                    }
                    ("running", Some("healthy")) => ready += 1,
                    ("running", None) => {
                        let since = *running_since
                            .entry(container.id.clone())
                            .or_insert_with(Instant::now);
                        if since.elapsed() >= service.settle {
                            ready += 1;
                        }
                    }
                    _ => {}
                }
            }
            if last_ready != Some(ready) {
                last_ready = Some(ready);
                let what = if containers.iter().all(|c| c.health.is_some()) {
                    "healthy"
                } else {
                    "ready"
                };
                say(
                    report,
                    format!(
                        "{name}: start-first {ready}/{} new container(s) {what}",
                        new.len()
                    ),
                );
            }
            if ready == new.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the new container(s) were not ready after {} s",
                    self.ready_timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops an old container where it stands, with its own stop signal and grace period,
    /// then removes it. It stays on its networks until its processes have exited, so every
    /// connection to it ends in an answer, a refusal or a reset, never in silence: a request in
    /// flight gets its answer from an app that finishes what it started on SIGTERM, and one
    /// that a proxy sends to it while it stops is refused and sent on to a new container.
    /// (Taken off the network first, its address would vanish with requests in flight to it,
    /// which then wait for an answer that never comes.) Docker takes it out of the service's
    /// name when it exits.
    ///
    /// One that has not stopped once its grace period and the kill should have ended it (see
    /// [`stop_wait`]) is removed by force: the deploy ends either way.
    async fn retire(
        &self,
        service: &str,
        id: &str,
        report: &mut impl FnMut(JobEvent),
    ) -> Result<(), String> {
        let short = &id[..id.len().min(12)];
        let grace = self
            .quiet(CommandSpec::new(
                "docker",
                ["inspect", "--format", "{{json .Config.StopTimeout}}", id],
            ))
            .await
            .map_err(|error| error.to_string())?;
        say(
            report,
            format!("{service}: start-first: stopping old container {short}"),
        );
        let wait = stop_wait(&grace, self.up_timeout);
        let stop = CommandSpec::new("docker", ["stop", id]);
        if let Err(error) = self.quiet_within(stop, wait).await {
            say(
                report,
                format!(
                    "{service}: old container {short} did not stop within {} s ({error}); \
                     removing it by force",
                    wait.as_secs()
                ),
            );
        }
        self.quiet(CommandSpec::new("docker", ["rm", "-f", id]))
            .await
            .map_err(|error| error.to_string())?;
        Ok(())
    }

    /// Removes the new containers of a failed rollout; a failure here is only logged.
    async fn remove(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let argv = ["rm", "-f"]
            .into_iter()
            .chain(ids.iter().map(String::as_str));
        if let Err(error) = self.quiet(CommandSpec::new("docker", argv)).await {
            tracing::warn!(%error, "removing the new containers of a failed rollout");
        }
    }

    /// The service's containers (not `compose run` ones).
    async fn existing(&self, service: &str) -> Result<Vec<Existing>, RolloutError> {
        let project = format!("label=com.docker.compose.project={}", self.project);
        let service = format!("label=com.docker.compose.service={service}");
        let spec = CommandSpec::new(
            "docker",
            [
                "ps",
                "-a",
                "--no-trunc",
                "--filter",
                project.as_str(),
                "--filter",
                service.as_str(),
                "--filter",
                "label=com.docker.compose.oneoff=False",
                "--format",
                PS_FORMAT,
            ],
        );
        Ok(parse_existing(&self.quiet(spec).await?))
    }

    /// The id of the image `reference` names on this host, if it is there.
    async fn image_id(&self, reference: &str) -> Option<String> {
        let spec = CommandSpec::new(
            "docker",
            ["image", "inspect", "--format", "{{.Id}}", reference],
        );
        let id = self.quiet(spec).await.ok()?;
        Some(id.trim().to_owned()).filter(|id| !id.is_empty())
    }

    async fn logs(&self, id: &str) -> String {
        let spec = CommandSpec::new("docker", ["logs", "--tail", "50", id]);
        match runner::run(
            &spec.timeout(Duration::from_secs(30)),
            self.redactor,
            |_| {},
        )
        .await
        {
            Ok(output) => {
                let logs = format!("{}{}", output.stdout, output.stderr);
                wire::cut_keeping_end(logs.trim_end(), budget::MESSAGE / 2)
            }
            Err(error) => format!("(could not read the logs: {error})"),
        }
    }

    /// Runs a command that prints nothing for the deploy log; its stdout, or the failure.
    async fn quiet(&self, spec: CommandSpec) -> Result<String, RolloutError> {
        self.quiet_within(spec, Duration::from_secs(60)).await
    }

    async fn quiet_within(
        &self,
        spec: CommandSpec,
        timeout: Duration,
    ) -> Result<String, RolloutError> {
        let output = runner::run(
            &spec.timeout(timeout).read_by_agent(),
            self.redactor,
            |_| {},
        )
        .await?;
        if output.success() {
            Ok(output.stdout)
        } else {
            Err(RolloutError::Docker(format!(
                "`{}` exited with {:?}: {}",
                output.command,
                output.exit_code,
                wire::cut_keeping_end(output.stderr.trim(), 2048)
            )))
        }
    }
}

/// How long `docker stop` may take for a container whose `.Config.StopTimeout` is `grace`
/// (JSON: the service's `stop_grace_period` in seconds, `null` for Docker's 10 s, negative to
/// wait for as long as it takes): the grace period, then the kill, with room to spare, and
/// never longer than `longest` (the deploy's own limit for Compose's stops).
fn stop_wait(grace: &str, longest: Duration) -> Duration {
    const DOCKER_DEFAULT: u64 = 10;
    const SPARE: Duration = Duration::from_secs(30);
    let wait = match serde_json::from_str::<Option<i64>>(grace.trim()) {
        Ok(Some(seconds)) => match u64::try_from(seconds) {
            Ok(seconds) => Duration::from_secs(seconds).saturating_add(SPARE),
            Err(_) => longest,
        },
        Ok(None) | Err(_) => Duration::from_secs(DOCKER_DEFAULT) + SPARE,
    };
    wait.min(longest)
}

fn say(report: &mut impl FnMut(JobEvent), line: String) {
    let line = wire::cut(&line, budget::LINE);
    report(JobEvent::Output { line });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> ProjectName {
        ProjectName::parse("shop").unwrap()
    }

    #[test]
    fn stopping_an_old_container_may_take_its_grace_period_and_the_kill() {
        let longest = Duration::from_secs(600);
        assert_eq!(stop_wait("null\n", longest), Duration::from_secs(40));
        assert_eq!(stop_wait("120", longest), Duration::from_secs(150));
        assert_eq!(stop_wait("0", longest), Duration::from_secs(30));
        assert_eq!(stop_wait("-1", longest), longest);
        assert_eq!(stop_wait("3600000", longest), longest);
        assert_eq!(stop_wait(&i64::MAX.to_string(), longest), longest);
        assert_eq!(stop_wait("", longest), Duration::from_secs(40));
    }

    #[test]
    fn services_opt_in_with_the_label_as_a_map_or_a_list() {
        let json = r#"{"services":{
            "web":{"image":"app:1","labels":{"dev.stagely.rollout":"start-first"},
                   "ports":[{"target":80,"protocol":"tcp"}],"environment":{"K":"v"}},
            "api":{"build":{"context":"."},"labels":["a=b","dev.stagely.rollout=start-first",
                   "dev.stagely.rollout.settle=12"],"deploy":{"replicas":2}},
            "db":{"image":"db:1","labels":{"dev.stagely.rollout":"recreate"}},
            "worker":{"image":"w:1"}}}"#;
        let found = opted_in(json, &project()).unwrap();
        assert_eq!(
            found,
            vec![
                OptedIn {
                    service: "api".into(),
                    replicas: 2,
                    image: "shop-api".into(),
                    settle: Duration::from_secs(12),
                },
                OptedIn {
                    service: "web".into(),
                    replicas: 1,
                    image: "app:1".into(),
                    settle: DEFAULT_SETTLE,
                },
            ]
        );
    }

    #[test]
    fn a_service_that_cannot_run_twice_side_by_side_is_refused_with_the_reason() {
        let cases = [
            (
                r#"{"container_name":"fixed"}"#,
                "it has a fixed container_name (fixed)",
            ),
            (
                r#"{"ports":[{"target":80,"published":"8080"}]}"#,
                "it publishes a host port",
            ),
            (r#"{"ports":["8080:80"]}"#, "it publishes a host port"),
            (r#"{"network_mode":"host"}"#, "it runs on the host network"),
        ];
        for (fields, reason) in cases {
            let service = format!(
                r#"{{"labels":{{"dev.stagely.rollout":"start-first"}},{}"#,
                &fields[1..]
            );
            let json = format!(r#"{{"services":{{"web":{service}}}}}"#);
            let error = opted_in(&json, &project()).unwrap_err();
            assert!(
                matches!(&error, RolloutError::NotEligible { reason: r, .. } if r == reason),
                "{fields}: {error}"
            );
            assert!(error.to_string().contains("Nothing was changed"), "{error}");
        }
    }

    #[test]
    fn bad_label_values_are_refused() {
        for labels in [
            r#"{"dev.stagely.rollout":"blue-green"}"#,
            r#"{"dev.stagely.rollout":"start-first","dev.stagely.rollout.settle":"301"}"#,
            r#"{"dev.stagely.rollout":"start-first","dev.stagely.rollout.settle":"5s"}"#,
        ] {
            let json = format!(r#"{{"services":{{"web":{{"labels":{labels}}}}}}}"#);
            let error = opted_in(&json, &project()).unwrap_err();
            assert!(matches!(error, RolloutError::BadLabel { .. }), "{labels}");
        }
    }

    #[test]
    fn containers_are_out_of_date_when_their_hash_or_image_differs() {
        let listed = parse_existing("abc running h1 sha256:1\ndef exited h1 \n");
        assert_eq!(listed.len(), 2);
        assert!(listed[0].running && !listed[1].running);
        assert_eq!(listed[1].image_id, "");
        assert!(!out_of_date(&listed, "h1", Some("sha256:1")));
        assert!(out_of_date(&listed, "h2", Some("sha256:1")));
        assert!(out_of_date(&listed, "h1", Some("sha256:2")));
        assert!(
            out_of_date(&listed, "h1", None),
            "image not on the host yet"
        );
        assert_eq!(
            parse_hashes("web 123\napi 456\n"),
            HashMap::from([("web".into(), "123".into()), ("api".into(), "456".into())])
        );
    }
}
