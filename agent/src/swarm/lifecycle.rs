//! Lifecycle jobs on a Swarm stack (a project whose target is `swarm`): what `docker compose
//! start|stop|restart|down` do for a Compose project, done with the Swarm's own commands.
//!
//! 1. **claim**: the stack's services must all be this project's (the rule of a deploy);
//!    another stack is never touched;
//! 2. **act** on the chosen services (one, or all of the stack), each with `docker service
//!    update --detach=false`, which returns once the service has converged, its progress
//!    streamed:
//!    - *stop* scales a replicated service to 0 and keeps the count it had in a service label
//!      ([`STOPPED_REPLICAS_LABEL`]); a global service cannot be scaled, so a stop that
//!      includes one is refused before anything is done;
//!    - *start* scales a stopped service back to that count; one that was not stopped is left;
//!    - *restart* replaces every task (`--force`), one at a time under the service's
//!      `update_config` (start-first unless the file says otherwise): no downtime;
//!    - *down* is `docker stack rm` (also when no service is left: a Down that failed halfway
//!      leaves networks; run again while a network is still attached to a task), then waits
//!      for the stack's containers to be gone, removes the project's Swarm secrets and, when
//!      asked, the stack's volumes on this node;
//!    - a job service (`replicated-job`, `global-job`) runs to completion once per deploy:
//!      stop, start and restart leave it alone (a restart would run a migration again).
//!
//! A deploy brings the stack back to its file (replica counts included), and drops the label.

use super::{
    judge_stack, quiet, remove_unused_secrets, services_of, status::ServiceInfo, tasks_of,
};
use crate::deploy::DeployError;
use crate::health::SWARM_STACK_LABEL;
use crate::lifecycle::LifecycleRequest;
use crate::override_file::Owner;
use crate::runner::{self, CommandSpec, Redactor};
use shared::protocol::JobEvent;
use shared::runtime::LifecycleAction;
use shared::{ProjectName, ServiceName};
use std::time::Duration;

/// The service label holding the replica count a stopped service returns to on start.
pub const STOPPED_REPLICAS_LABEL: &str = "dev.stagely.stopped-replicas";

/// Longest `docker stack rm` may take.
const STACK_RM_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a Down waits, from its first `stack rm`, for the stack's networks and containers to
/// be gone (a first `stack rm` slower than this is waited for). Within the 180 s the server
/// waits for a Down before it deletes a project, so a project is never kept as "not taken
/// down" while its stack is still being removed.
const CONTAINERS_GONE_TIMEOUT: Duration = Duration::from_secs(100);

/// Why a lifecycle job on a stack failed; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum StackActionError {
    #[error("the stack {name} has no services on this Swarm: deploy the project first")]
    NotDeployed { name: ProjectName },
    #[error("the stack {name} has no service {service}")]
    NoService {
        name: ProjectName,
        service: ServiceName,
    },
    #[error(
        "service {service} is global (one task on every node) and cannot be stopped by scaling; \
         nothing was stopped. Take the project down instead, or give the service a replica count"
    )]
    StopGlobal { service: String },
    #[error("`{command}` failed (exit code {exit_code:?}):\n{output}")]
    Failed {
        command: String,
        exit_code: Option<i32>,
        output: String,
    },
    #[error(
        "the stack {name} was removed, but its containers were still there after {} s; run \
         Down again to finish (secrets and volumes are removed then)",
        timeout.as_secs()
    )]
    StillRemoving {
        name: ProjectName,
        timeout: Duration,
    },
    #[error(
        "a task of {service} (stack {name}) was still running {} s after it was told to stop",
        timeout.as_secs()
    )]
    StillStopping {
        name: ProjectName,
        service: String,
        timeout: Duration,
    },
    /// The stack is another's (see [`super::judge_stack`]).
    #[error(transparent)]
    Taken(#[from] super::SwarmError),
    /// The Swarm could not be read.
    #[error(transparent)]
    Read(#[from] DeployError),
    #[error(transparent)]
    Command(#[from] runner::RunError),
}

/// Runs the job on the stack named after the project, reporting through `report`.
pub async fn run(
    request: &LifecycleRequest<'_>,
    timeout: Duration,
    report: &mut impl FnMut(JobEvent),
) -> Result<(), StackActionError> {
    // The payload carries no secret values.
    let redactor = Redactor::default();
    let services = services_of(request.project, &redactor).await?;
    let owner = Owner {
        project: request.project,
        project_id: Some(request.project_id),
    };
    judge_stack(&owner, &services)?;
    if request.action == LifecycleAction::Down {
        return down(request, &owner, &redactor, report).await;
    }
    let chosen = chosen(request, &services)?;
    if request.action == LifecycleAction::Stop {
        let global = chosen
            .iter()
            .find(|service| !service.is_job() && service.desired().is_none());
        if let Some(global) = global {
            return Err(StackActionError::StopGlobal {
                service: global.spec.name.clone(),
            });
        }
    }
    for service in &chosen {
        let name = service.spec.name.as_str();
        if service.is_job() {
            report(JobEvent::Output {
                line: format!("{name}: a job (runs once per deploy), left as it is"),
            });
            continue;
        }
        let Some(args) = update_args(request.action, service) else {
            let line = match request.action {
                LifecycleAction::Start => format!("{name}: not stopped, left as it is"),
                LifecycleAction::Stop => format!("{name}: already stopped"),
                _ => format!("{name}: stopped, nothing to restart"),
            };
            report(JobEvent::Output { line });
            continue;
        };
        let argv = ["service", "update", "--detach=false"]
            .into_iter()
            .map(str::to_owned)
            .chain(args)
            .chain([service.id.clone()]);
        streamed(CommandSpec::new("docker", argv).timeout(timeout), report).await?;
    }
    if request.action == LifecycleAction::Stop {
        let services: Vec<&ServiceInfo> = chosen.into_iter().filter(|s| !s.is_job()).collect();
        wait_until_stopped(request, &services, timeout, &redactor).await?;
    }
    Ok(())
}

/// Waits until no task of `services` runs any more: scaling to 0 converges when Swarm has
/// told the tasks to shut down, while a container may take its stop grace period to exit.
async fn wait_until_stopped(
    request: &LifecycleRequest<'_>,
    services: &[&ServiceInfo],
    timeout: Duration,
    redactor: &Redactor,
) -> Result<(), StackActionError> {
    let deadline = tokio::time::Instant::now() + timeout;
    for service in services {
        loop {
            let tasks = tasks_of(&service.id, redactor).await?;
            if !tasks.iter().any(|task| task.container_runs()) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StackActionError::StillStopping {
                    name: request.project.clone(),
                    service: service.spec.name.clone(),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// The services the job acts on: the one asked for, or every service of the stack.
fn chosen<'s>(
    request: &LifecycleRequest<'_>,
    services: &'s [ServiceInfo],
) -> Result<Vec<&'s ServiceInfo>, StackActionError> {
    if services.is_empty() {
        return Err(StackActionError::NotDeployed {
            name: request.project.clone(),
        });
    }
    let Some(service) = request.service else {
        return Ok(services.iter().collect());
    };
    let wanted = format!("{}_{service}", request.project);
    let found: Vec<_> = services
        .iter()
        .filter(|info| info.spec.name == wanted)
        .collect();
    if found.is_empty() {
        return Err(StackActionError::NoService {
            name: request.project.clone(),
            service: service.clone(),
        });
    }
    Ok(found)
}

/// The `docker service update` arguments of `action` on `service`; `None` when there is
/// nothing to do (already stopped, not stopped, nothing running to restart).
fn update_args(action: LifecycleAction, service: &ServiceInfo) -> Option<Vec<String>> {
    let stopped = service.label(STOPPED_REPLICAS_LABEL);
    match action {
        LifecycleAction::Stop => match service.desired() {
            Some(0) | None => None,
            Some(replicas) => Some(vec![
                "--label-add".into(),
                format!("{STOPPED_REPLICAS_LABEL}={replicas}"),
                "--replicas".into(),
                "0".into(),
            ]),
        },
        LifecycleAction::Start => {
            let replicas: u64 = stopped?.parse().ok()?;
            Some(vec![
                "--label-rm".into(),
                STOPPED_REPLICAS_LABEL.into(),
                "--replicas".into(),
                replicas.to_string(),
            ])
        }
        LifecycleAction::Restart => {
            (service.desired() != Some(0)).then(|| vec!["--force".to_owned()])
        }
        LifecycleAction::Down => None,
    }
}

/// `docker stack rm`, then what it leaves: the containers it removes in the background are
/// waited for, then the project's Swarm secrets and (when asked) the stack's volumes go. The
/// stack is removed even when it has no service left: a Down that failed halfway (a network
/// still in use) is finished by the next one.
async fn down(
    request: &LifecycleRequest<'_>,
    owner: &Owner<'_>,
    redactor: &Redactor,
    report: &mut impl FnMut(JobEvent),
) -> Result<(), StackActionError> {
    let name = request.project.as_str();
    let stack_rm =
        |timeout: Duration| CommandSpec::new("docker", ["stack", "rm", name]).timeout(timeout);
    let deadline = tokio::time::Instant::now() + CONTAINERS_GONE_TIMEOUT;
    // `docker stack rm` removes the services, then at once the networks: one a task is still
    // attached to (a replaced task that is stopping, a container attached by hand) is refused
    // ("in use by task") and left. `stack rm` is run again, quietly, until it goes.
    if let Err(mut error) = streamed(stack_rm(STACK_RM_TIMEOUT), report).await {
        if !network_in_use(&error) {
            return Err(error);
        }
        report(JobEvent::Output {
            line: "a network of the stack is still in use by a task; removing it again until \
                   that task is gone"
                .into(),
        });
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(error);
            }
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let timeout = left.clamp(Duration::from_secs(5), STACK_RM_TIMEOUT);
            match streamed(stack_rm(timeout), &mut |_| {}).await {
                Ok(()) => break,
                Err(again) if network_in_use(&again) => error = again,
                Err(other) => return Err(other),
            }
        }
    }
    let filter = format!("label={SWARM_STACK_LABEL}={name}");
    loop {
        let list = CommandSpec::new("docker", ["ps", "-a", "-q", "--filter", filter.as_str()]);
        if quiet(&list, redactor).await?.trim().is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StackActionError::StillRemoving {
                name: request.project.clone(),
                timeout: CONTAINERS_GONE_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    remove_unused_secrets(owner, redactor, report).await;
    if request.remove_volumes {
        let list = CommandSpec::new(
            "docker",
            ["volume", "ls", "-q", "--filter", filter.as_str()],
        );
        let volumes = quiet(&list, redactor).await?;
        let volumes: Vec<&str> = volumes.split_whitespace().collect();
        if !volumes.is_empty() {
            let remove = ["volume", "rm"].into_iter().chain(volumes);
            streamed(
                CommandSpec::new("docker", remove).timeout(STACK_RM_TIMEOUT),
                report,
            )
            .await?;
        }
    }
    Ok(())
}

/// Whether `stack rm` failed because a network was still attached to a task (what it may have
/// said besides is in the error, if that stays so until the deadline).
fn network_in_use(error: &StackActionError) -> bool {
    matches!(error, StackActionError::Failed { output, .. } if output.contains("is in use by task"))
}

/// Runs `spec`, its output streamed into the job; fails with its last lines.
async fn streamed(
    spec: CommandSpec,
    report: &mut impl FnMut(JobEvent),
) -> Result<(), StackActionError> {
    // The payload carries no secret values: nothing to mask.
    let (exit_code, tail) = crate::deploy::streamed(&spec, &Redactor::default(), report).await?;
    if exit_code == Some(0) {
        return Ok(());
    }
    Err(StackActionError::Failed {
        command: spec.display(),
        exit_code,
        output: tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(replicas: Option<u64>, labels: serde_json::Value) -> ServiceInfo {
        let mode = match replicas {
            Some(n) => serde_json::json!({"Replicated": {"Replicas": n}}),
            None => serde_json::json!({"Global": {}}),
        };
        let json = serde_json::json!([{
            "ID": "s1",
            "Version": {"Index": 1},
            "Spec": {"Name": "shop_web", "Mode": mode, "Labels": labels},
        }]);
        super::super::status::parse_services(&json.to_string())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn stop_keeps_the_count_that_start_brings_back() {
        let running = service(
            Some(3),
            serde_json::json!({"com.docker.stack.namespace": "shop"}),
        );
        assert_eq!(
            update_args(LifecycleAction::Stop, &running).unwrap(),
            [
                "--label-add",
                "dev.stagely.stopped-replicas=3",
                "--replicas",
                "0"
            ]
        );
        assert_eq!(update_args(LifecycleAction::Start, &running), None);
        assert_eq!(
            update_args(LifecycleAction::Restart, &running).unwrap(),
            ["--force"]
        );

        let stopped = service(Some(0), serde_json::json!({STOPPED_REPLICAS_LABEL: "3"}));
        assert_eq!(update_args(LifecycleAction::Stop, &stopped), None);
        assert_eq!(update_args(LifecycleAction::Restart, &stopped), None);
        assert_eq!(
            update_args(LifecycleAction::Start, &stopped).unwrap(),
            ["--label-rm", STOPPED_REPLICAS_LABEL, "--replicas", "3"]
        );
        // A label someone edited into something else is not a count.
        let edited = service(
            Some(0),
            serde_json::json!({STOPPED_REPLICAS_LABEL: "3; rm"}),
        );
        assert_eq!(update_args(LifecycleAction::Start, &edited), None);

        let global = service(None, serde_json::Value::Null);
        assert_eq!(update_args(LifecycleAction::Stop, &global), None);
        assert_eq!(
            update_args(LifecycleAction::Restart, &global).unwrap(),
            ["--force"]
        );
    }
}
