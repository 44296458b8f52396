//! Deployments as durable jobs: start one, follow it, read the history, and the server side of
//! the deploy protocol.
//!
//! A deployment is stored `Queued` before anything is sent, so it survives a server restart.
//! It is handed to its agent's session (`Sent`) when the agent is connected, and again every
//! time the agent (re)connects while it is still open: the agent runs a job id at most once and
//! answers a repeat with `Received` and, when it has one, the result. Each update the agent
//! sends moves the stored status forward (`Received`, `Running`, `Succeeded` / `Failed`) and is
//! kept as an event. A deployment nobody finishes is marked `TimedOut`, so nothing stays
//! "Running" forever.
//!
//! With several replicas, a job for an agent another replica holds stays `Queued` here and that
//! replica is told to send it (by the agent's id only: it reads the job, and its secrets,
//! itself); it also sends, every few seconds, jobs of its agents still `Queued`, so a lost
//! hand-over only delays the job.
//!
//! Deploys of one project are serialized on the agent, in the order they arrive; a second
//! deploy requested while one runs waits its turn (`Sent`/`Received`) rather than being refused.

use super::{OpError, OpResult};
use crate::db::{NewEvent, NewJob, PendingJob, Store, User};
use crate::hub::{Holder, Hub, HubEvent, SendError, SendTurn};
use crate::log_feeds::{cut_line, LogFeeds, MAX_LINE_BYTES};
use crate::vault::Vault;
use shared::api::{
    DeployAccepted, Deployment, DeploymentStatus, EventKind, LifecycleRequest, Project,
};
use shared::protocol::{
    since, version_at_least, DeployStep, JobEvent, JobUpdate, LifecyclePayload,
};
use shared::registry::PullPolicy;
use shared::runtime::{JobKind, LifecycleAction, ServiceImage};
use shared::target::DeployTarget;
use shared::webhooks::DeployTrigger;
use shared::{AgentId, DeployPayload, DeploymentId, JobId, ProjectId, ServerToAgent, UserId};
use std::time::Duration;

/// Jobs of one project that may wait or run at once; one more is refused until one finishes.
/// Deploys of a project run one after another on its agent, so more would only pile up (and
/// each holds its secret values in the agent's queue).
pub const MAX_OPEN_JOBS_PER_PROJECT: i64 = 10;

/// Queues a deployment of one of the person's projects and hands it to the agent if it is
/// connected. It runs the project's secret values as they are now, recorded as its snapshot.
pub async fn start(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    by: &User,
    project_id: ProjectId,
) -> OpResult<DeployAccepted> {
    let project = store.project(by, project_id).await?;
    // Before the secrets are read: a value replaced while they are is dated after the deploy
    // and stays masked until a later deploy succeeds.
    let created_at = crate::db::now_ms();
    let secrets = super::secrets::snapshot(store, vault, project.id).await?;
    let job = NewJob {
        project: project.id,
        agent: project.agent_id,
        created_at,
        requested_by: by.id,
        kind: JobKind::Deploy,
        service: None,
        remove_volumes: false,
        redeploy_of: None,
        secrets,
    };
    queue(store, vault, hub, &project, &job, None).await
}

/// Queues a deployment that something other than a person started (a push webhook), on behalf
/// of the project's owner (`requested_by`), with what started it recorded. Like [`start`], it
/// runs the project's secret values as they are now, and counts against the project's
/// [`MAX_OPEN_JOBS_PER_PROJECT`].
pub async fn start_triggered(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    project: &Project,
    requested_by: UserId,
    trigger: &DeployTrigger,
) -> OpResult<DeployAccepted> {
    let created_at = crate::db::now_ms();
    let secrets = super::secrets::snapshot(store, vault, project.id).await?;
    let job = NewJob {
        project: project.id,
        agent: project.agent_id,
        created_at,
        requested_by,
        kind: JobKind::Deploy,
        service: None,
        remove_volumes: false,
        redeploy_of: None,
        secrets,
    };
    queue(store, vault, hub, project, &job, Some(trigger)).await
}

/// Runs an earlier successful deployment of one of the person's projects again, exactly: the
/// secret values it ran and each service pinned to the image it ran.
pub async fn redeploy(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    by: &User,
    earlier: DeploymentId,
) -> OpResult<DeployAccepted> {
    let earlier = store.deployment(by, earlier).await?;
    if earlier.kind != JobKind::Deploy || earlier.status != DeploymentStatus::Succeeded {
        return Err(OpError::Conflict(
            "only a deployment that succeeded can be run again".into(),
        ));
    }
    let Some(secrets) = store.snapshot_of(earlier.id).await? else {
        return Err(OpError::Conflict(
            "that deployment was made before Stagely recorded what each deploy ran, so it cannot be run again exactly".into(),
        ));
    };
    let project = store.project(by, earlier.project_id).await?;
    if earlier.images.is_empty() {
        return Err(OpError::Conflict(
            "that deployment did not record the images its services ran (an older agent, its \
             report could not be kept, or a stack whose tasks all ran on other nodes), so it \
             cannot be run again exactly; deploy instead"
                .into(),
        ));
    }
    if let Some(ran_on) = store.agent_of_job(earlier.id).await? {
        if ran_on != project.agent_id {
            return Err(OpError::Conflict(
                "that deployment ran on another server than the project's now, where its images may not exist; deploy instead".into(),
            ));
        }
    }
    let created_at = crate::db::now_ms();
    // Opened now, so a snapshot that can no longer be read is refused before anything is queued.
    let values = super::secrets::values_of_snapshot(store, vault, &secrets).await?;
    // Kept before the job exists (so it never runs without them) and dated after `created_at`
    // (so its own success does not forget them): the project's logs are masked for them.
    super::secrets::mask_while_running(store, vault, by, project.id, &values).await?;
    drop(values);
    let job = NewJob {
        project: project.id,
        agent: project.agent_id,
        created_at,
        requested_by: by.id,
        kind: JobKind::Deploy,
        service: None,
        remove_volumes: false,
        redeploy_of: Some(earlier.id),
        secrets,
    };
    queue(store, vault, hub, &project, &job, None).await
}

/// Starts, stops, restarts or takes down one of the person's projects (or one service), as a
/// job like a deploy.
pub async fn act(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    by: &User,
    project_id: ProjectId,
    request: LifecycleRequest,
) -> OpResult<DeployAccepted> {
    if request.action == LifecycleAction::Down && request.service.is_some() {
        return Err(OpError::Invalid(
            "down takes the whole project down; to stop one service, use stop".into(),
        ));
    }
    if request.remove_volumes && request.action != LifecycleAction::Down {
        return Err(OpError::Invalid(
            "remove_volumes goes with the down action only".into(),
        ));
    }
    let project = store.project(by, project_id).await?;
    let job = NewJob {
        project: project.id,
        agent: project.agent_id,
        created_at: crate::db::now_ms(),
        requested_by: by.id,
        kind: request.action.into(),
        service: request.service,
        remove_volumes: request.remove_volumes,
        redeploy_of: None,
        secrets: Vec::new(),
    };
    queue(store, vault, hub, &project, &job, None).await
}

/// Stores a job and hands it to the agent.
async fn queue(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    project: &Project,
    job: &NewJob,
    trigger: Option<&DeployTrigger>,
) -> OpResult<DeployAccepted> {
    if store.open_jobs_of_project(project.id).await? >= MAX_OPEN_JOBS_PER_PROJECT {
        return Err(OpError::Conflict(format!(
            "this project already has {MAX_OPEN_JOBS_PER_PROJECT} jobs waiting or running; \
             wait for one to finish (or time out) and try again"
        )));
    }
    let (deployment_id, job_id) = store.create_triggered_job(job, trigger).await?;
    send_or_fail(store, vault, hub, deployment_id, job_id, project).await
}

/// Hands a stored job to its agent; a job that cannot even be prepared is marked failed.
async fn send_or_fail(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    deployment_id: DeploymentId,
    job_id: JobId,
    project: &Project,
) -> OpResult<DeployAccepted> {
    if let Err(error) = dispatch(store, vault, hub, deployment_id, job_id, project).await {
        // Nothing was sent: say so on the deployment instead of leaving it queued for good.
        tracing::error!(error = format!("{error:#}"), %deployment_id, "a deploy could not be prepared");
        let message = format!("the deploy could not be prepared: {error}");
        fail_unsent(store, hub, deployment_id, project.id, &message).await?;
        return Err(error);
    }
    Ok(DeployAccepted { deployment_id })
}

/// Marks a job that was never handed to its agent failed, saying why.
async fn fail_unsent(
    store: &Store,
    hub: &Hub,
    deployment: DeploymentId,
    project: ProjectId,
    message: &str,
) -> OpResult<()> {
    let failed = DeploymentStatus::Failed;
    set_status(store, hub, deployment, project, failed, Some(message)).await
}

/// Waits for a job to reach a final status (with `events` subscribed before it was queued),
/// for at most `timeout`; the stored status answers when events were missed.
pub async fn wait_until_final(
    store: &Store,
    events: &mut tokio::sync::broadcast::Receiver<HubEvent>,
    id: DeploymentId,
    timeout: Duration,
) -> OpResult<(DeploymentStatus, Option<String>)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let job = store.job(id).await?;
        if job.status.is_final() {
            return Ok((job.status, job.message));
        }
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => {
                    return Err(OpError::Conflict(format!(
                        "the job is still {} after {} s; its progress is in the project's history",
                        job.status.as_str(),
                        timeout.as_secs()
                    )))
                }
                Ok(Ok(HubEvent::DeploymentStatus {
                    deployment_id,
                    status,
                    message,
                    ..
                })) if deployment_id == id && status.is_final() => return Ok((status, message)),
                Ok(Ok(_)) => continue,
                // Missed events: read the stored status again.
                Ok(Err(_)) => break,
            }
        }
    }
}

/// A deployment of one of the person's projects, with its history.
pub async fn show(store: &Store, by: &User, id: DeploymentId) -> OpResult<Deployment> {
    Ok(store.deployment(by, id).await?)
}

/// A project's deployments, newest first.
pub async fn history(store: &Store, by: &User, project: ProjectId) -> OpResult<Vec<Deployment>> {
    Ok(store.deployments_of_project(by, project).await?)
}

/// Hands a job to its agent if it is connected; otherwise it stays queued until it connects.
/// What cannot be sent as it is (an agent too old for it, a frame too large) is refused here,
/// before anything is sent. On the replica holding the agent the job goes out with the other
/// jobs waiting for it, oldest first ([`Hub::send_turn`]); another replica holding it is told.
pub async fn dispatch(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    deployment: DeploymentId,
    job_id: JobId,
    project: &Project,
) -> OpResult<()> {
    let message = prepare(store, vault, deployment, job_id, project).await?;
    let agent_id = project.agent_id;
    match hub.holder(agent_id) {
        Holder::Here => {
            // In a task of its own: a request dropped half-way (its client went away) must not
            // leave a job marked sent that was never handed over.
            let (store, vault, hub) = (store.clone(), vault.clone(), hub.clone());
            let prepared = Some((deployment, project.clone(), message));
            let sent = tokio::spawn(async move {
                let turn = hub.send_turn(agent_id).await;
                send_in_turn(turn, &store, &vault, &hub, agent_id, true, prepared).await
            });
            sent.await.map_err(|error| {
                OpError::Internal(anyhow::anyhow!("handing the job over failed: {error}"))
            })??;
        }
        Holder::Replica(replica) => {
            if let Some(relay) = hub.relay() {
                tracing::debug!(%deployment, %agent_id, %replica, "the agent is held by another replica; handing the job over");
                relay.send_to(&replica, crate::relay::Message::JobsWaiting { agent_id });
            }
        }
        Holder::Nowhere => {
            tracing::info!(%deployment, %agent_id, "agent offline; the deployment waits queued");
        }
    }
    Ok(())
}

/// The frame that hands a stored job to its agent. A deploy carries the secret values of its
/// snapshot (and, for a redeploy, the images to pin), so a job re-sent later runs exactly what
/// it ran the first time.
async fn prepare(
    store: &Store,
    vault: &Vault,
    deployment: DeploymentId,
    job_id: JobId,
    project: &Project,
) -> OpResult<ServerToAgent> {
    let job = store.job(deployment).await?;
    let compose_file = project.compose_file.as_ref().map(|file| file.to_string());
    let message = match job.kind {
        JobKind::Deploy => {
            let secrets = match store.snapshot_of(deployment).await? {
                Some(versions) => {
                    super::secrets::values_of_snapshot(store, vault, &versions).await?
                }
                None => super::secrets::values_of_project(store, vault, project.id).await?,
            };
            let (pinned_images, commit) = match job.redeploy_of {
                Some(earlier) => {
                    let earlier = store.job(earlier).await?;
                    (earlier.images, earlier.commit.map(|commit| commit.sha))
                }
                None => (Vec::new(), None),
            };
            // A Git project: the agent checks out the ref (or, for a redeploy, the very commit).
            let source = super::sources::checkout_for_job(store, vault, project.id, commit).await?;
            ServerToAgent::Deploy(DeployPayload {
                job_id,
                project: project.name.clone(),
                directory: project.path.to_string(),
                compose_file,
                secrets,
                project_id: Some(project.id),
                pinned_images,
                source: source.map(Box::new),
                pull_policy: project.pull_policy,
                target: project.target,
                secrets_as: project.secrets_as,
                registry_credentials: super::registries::for_deploy(
                    store,
                    vault,
                    project.agent_id,
                    project.id,
                )
                .await?,
            })
        }
        kind => ServerToAgent::Lifecycle(LifecyclePayload {
            job_id,
            project: project.name.clone(),
            project_id: project.id,
            directory: project.path.to_string(),
            compose_file,
            action: LifecycleAction::try_from(kind).map_err(|kind| {
                OpError::Internal(anyhow::anyhow!(
                    "a {} job has no lifecycle action",
                    kind.as_str()
                ))
            })?,
            service: job.service,
            remove_volumes: job.remove_volumes,
            target: project.target,
        }),
    };
    agent_understands(store, project.agent_id, &message).await?;
    super::secrets::check_frame_to_agent(&message)?;
    Ok(message)
}

/// How long a job may wait for room in its agent's queue.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a job reached the agent's queue.
#[derive(PartialEq, Eq)]
enum Handed {
    Queued,
    /// The agent went away (or was told to reconnect): its reconnect sends every open job
    /// again, in order.
    AgentGone,
}

/// Hands a prepared job to the agent held here.
async fn hand_over(
    store: &Store,
    hub: &Hub,
    deployment: DeploymentId,
    project: &Project,
    message: ServerToAgent,
) -> OpResult<Handed> {
    // Recorded before the job is handed over: the agent's `Received` can come back before a
    // write made after the hand-over, and a status never moves backwards, so "sent" would be
    // missing from the history. A job that is `sent` is still open: if the hand-over fails
    // below, it is sent again when the agent reconnects.
    set_status(
        store,
        hub,
        deployment,
        project.id,
        DeploymentStatus::Sent,
        None,
    )
    .await?;
    let agent_id = project.agent_id;
    match hub.send_waiting(agent_id, message, HAND_OVER_TIMEOUT).await {
        Ok(()) => Ok(Handed::Queued),
        Err(SendError::NotConnected) => {
            tracing::info!(%deployment, %agent_id, "agent went offline; the deployment is re-sent when it reconnects");
            Ok(Handed::AgentGone)
        }
        Err(SendError::QueueFull) => {
            // Its link takes nothing: a job sent after this one would overtake it. The agent
            // reconnects and is sent every open job again, oldest first.
            tracing::warn!(%deployment, %agent_id, "the agent did not take its jobs; closing its connection so it reconnects");
            hub.disconnect(agent_id, "the agent did not take its jobs");
            Ok(Handed::AgentGone)
        }
    }
}

/// Refuses a job that uses what the agent, by the version it last reported, does not
/// understand: it would ignore the field and do something else than asked. An agent that
/// never said hello is judged at its hello, when its open jobs are sent again.
async fn agent_understands(store: &Store, agent: AgentId, message: &ServerToAgent) -> OpResult<()> {
    let uses = match message {
        ServerToAgent::Deploy(payload) => deploy_uses(payload).to_vec(),
        ServerToAgent::Lifecycle(payload) => vec![(
            payload.target != DeployTarget::Compose,
            since::SWARM_LIFECYCLE,
            "stop, start, restart or take down a Docker Swarm stack",
        )],
        _ => Vec::new(),
    };
    if !uses.iter().any(|(used, _, _)| *used) {
        return Ok(());
    }
    let agent = store.agent(agent).await?;
    let Some(version) = agent.agent_version else {
        return Ok(());
    };
    match uses
        .into_iter()
        .find(|(used, needed, _)| *used && !version_at_least(&version, needed))
    {
        Some((_, needed, what)) => Err(OpError::Conflict(format!(
            "server {} runs stagely-agent {version:?}, which cannot {what}: update its agent to \
             version {needed} or later, then try again",
            agent.name
        ))),
        None => Ok(()),
    }
}

/// What a deploy uses that an older agent would not understand: whether it is used, the
/// version that understands it, and what it does.
fn deploy_uses(payload: &DeployPayload) -> [(bool, &'static str, &'static str); 5] {
    [
        (
            payload.source.is_some(),
            since::GIT_SOURCES,
            "deploy from a Git repository",
        ),
        (
            payload.pull_policy == PullPolicy::Always,
            since::PULL_POLICY,
            "pull images on every deploy (pull policy always)",
        ),
        (
            !payload.registry_credentials.is_empty(),
            since::REGISTRY_CREDENTIALS,
            "log in to a private registry",
        ),
        (
            payload.target != DeployTarget::Compose,
            since::SWARM_TARGET,
            "deploy a Docker Swarm stack",
        ),
        (
            payload.target != DeployTarget::Compose && !payload.pinned_images.is_empty(),
            since::SWARM_PINNED_IMAGES,
            "run a Docker Swarm stack's earlier deployment again exactly",
        ),
    ]
}

/// After an agent's hello, in the turn taken before it was registered: re-sends every
/// deployment it has not finished.
pub async fn resend_open_jobs(
    turn: SendTurn,
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    agent: AgentId,
) {
    if let Err(error) = send_in_turn(turn, store, vault, hub, agent, false, None).await {
        tracing::error!(?error, agent_id = %agent, "could not re-send the agent's open jobs");
    }
}

/// Sends an agent held here the jobs still `Queued` for it: those another replica queued
/// (and told this one about, or not, if the word was lost).
pub async fn send_queued_jobs(store: &Store, vault: &Vault, hub: &Hub, agent: AgentId) {
    let turn = hub.send_turn(agent).await;
    if let Err(error) = send_in_turn(turn, store, vault, hub, agent, true, None).await {
        tracing::error!(?error, agent_id = %agent, "could not send the agent's queued jobs");
    }
}

/// Sends an agent held here its open jobs (or only those still `Queued`), oldest first, in its
/// turn. With `prepared` (a job just requested, and its project and frame) it sends the jobs
/// queued before that one, then it, and stops: later jobs go with their own requests, and when
/// it is no longer queued (another sender took it) there is nothing to do. A job that cannot be
/// prepared fails, saying why, and the others go on; a job that cannot be marked sent stops
/// the round (so nothing overtakes it) and that error is returned.
async fn send_in_turn(
    _turn: SendTurn,
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    agent: AgentId,
    queued_only: bool,
    mut prepared: Option<(DeploymentId, Project, ServerToAgent)>,
) -> OpResult<()> {
    match hub.holder(agent) {
        Holder::Here => {}
        // It moved while this waited for its turn: the replica holding it now sends.
        Holder::Replica(replica) => {
            if let Some(relay) = hub.relay() {
                let message = crate::relay::Message::JobsWaiting { agent_id: agent };
                relay.send_to(&replica, message);
            }
            return Ok(());
        }
        Holder::Nowhere => return Ok(()),
    }
    let mine = prepared.as_ref().map(|(deployment, ..)| *deployment);
    let open: Vec<PendingJob> = if queued_only {
        store.queued_jobs_of_agent(agent).await?
    } else {
        store.open_jobs_of_agent(agent).await?
    };
    if let Some(mine) = mine {
        if !open.iter().any(|job| job.deployment_id == mine) {
            return Ok(());
        }
    }
    for PendingJob {
        deployment_id,
        job_id,
        project_id,
        ..
    } in open
    {
        let ready = match prepared.take_if(|(id, ..)| *id == deployment_id) {
            Some((_, project, message)) => Ok((project, message)),
            None => match store.project_by_id(project_id).await {
                Ok(project) => prepare(store, vault, deployment_id, job_id, &project)
                    .await
                    .map(|message| (project, message)),
                Err(error) => Err(error.into()),
            },
        };
        match ready {
            Ok((project, message)) => {
                let handed = hand_over(store, hub, deployment_id, &project, message).await?;
                if handed == Handed::AgentGone || mine == Some(deployment_id) {
                    return Ok(());
                }
            }
            // The job cannot be sent as it is (an agent too old for it, a frame too large, a
            // secret that no longer opens): it fails, saying why, instead of holding up the
            // jobs after it for good.
            Err(error) => {
                tracing::warn!(%error, %deployment_id, "a job cannot be sent to its agent");
                let message = format!("the deploy could not be sent: {error}");
                let failed = fail_unsent(store, hub, deployment_id, project_id, &message).await;
                log_failure(failed, deployment_id);
            }
        }
    }
    Ok(())
}

/// Applies one update from an agent to the deployment it is about. When a deploy reaches its
/// health step the containers were just (re)created, so a watched project's log stream is
/// restarted to follow the new ones.
pub async fn record_update(
    store: &Store,
    vault: &Vault,
    hub: &Hub,
    feeds: &LogFeeds,
    agent: AgentId,
    update: JobUpdate,
) {
    let job = match store.deployment_by_job(agent, update.job_id).await {
        Ok(Some(job)) => job,
        Ok(None) => {
            tracing::warn!(agent_id = %agent, job_id = %update.job_id, "update for a job this agent was never given");
            return;
        }
        Err(error) => {
            tracing::error!(%error, "could not look up a job");
            return;
        }
    };
    let id = job.deployment_id;
    let project = job.project_id;
    let deploy = job.kind == JobKind::Deploy;
    let result = match update.event {
        JobEvent::Received => {
            set_status(store, hub, id, project, DeploymentStatus::Received, None).await
        }
        JobEvent::Step { name } => {
            let moved = set_status(store, hub, id, project, DeploymentStatus::Running, None).await;
            if deploy && name == DeployStep::Health {
                super::logs::restart_everywhere(store, vault, hub, feeds, project).await;
            }
            let event = NewEvent {
                kind: EventKind::Step,
                body: name.to_string(),
            };
            let added = add_event(store, hub, id, project, event).await;
            log_failure(moved, id);
            added
        }
        JobEvent::Output { line } => {
            // Kept events are capped in number (db::MAX_EVENTS) and each in length here, which
            // bounds what a deployment's history holds whatever its agent sends.
            let event = NewEvent {
                kind: EventKind::Output,
                body: cut_line(line, MAX_LINE_BYTES),
            };
            add_event(store, hub, id, project, event).await
        }
        JobEvent::Finished {
            success,
            message,
            images,
            checkout,
        } => {
            let status = if success {
                DeploymentStatus::Succeeded
            } else {
                DeploymentStatus::Failed
            };
            if let Some(report) = checkout.filter(|_| deploy) {
                // Before the status moves: whoever sees it finish sees its commit.
                let kept = super::sources::record_checkout(store, project, id, report, success);
                log_failure(kept.await, id);
            }
            if deploy && success && !images.is_empty() {
                record_images(store, id, images).await;
            }
            let message = cut_line(message, shared::protocol::budget::MESSAGE);
            let moved = set_status(store, hub, id, project, status, Some(&message)).await;
            if success && matches!(job.kind, JobKind::Start | JobKind::Restart) {
                // The containers started again: a watched project's stream follows them anew.
                super::logs::restart_everywhere(store, vault, hub, feeds, project).await;
            }
            if deploy && success {
                // Its containers run the values it was given: the ones replaced before it no
                // longer need masking in the project's logs.
                let forgotten = super::secrets::forget_previous_values(store, project, id).await;
                log_failure(moved, id);
                forgotten
            } else {
                moved
            }
        }
    };
    log_failure(result, id);
}

/// Keeps the images a deploy ran, before its status moves, so whoever sees it succeed can run
/// it again. What an agent says is checked: an image id that is not one (or a reference too
/// long to be one) is not kept, so a redeploy can never send it anywhere; a registry digest
/// that is not one is dropped (a stack's redeploy pins by it).
async fn record_images(store: &Store, id: DeploymentId, images: Vec<ServiceImage>) {
    let images = images.into_iter().map(|mut image| {
        if let Some(digest) = &image.repo_digest {
            if !shared::runtime::is_digest_reference(digest) {
                tracing::warn!(deployment_id = %id, service = %image.service, "the agent reported a registry digest that is not one; it is not kept");
                image.repo_digest = None;
            }
        }
        image
    });
    let (valid, invalid): (Vec<_>, Vec<_>) = images.partition(|image| {
        shared::runtime::is_image_id(&image.image_id) && image.image.len() <= 1024
    });
    if !invalid.is_empty() {
        tracing::warn!(deployment_id = %id, dropped = invalid.len(), "the agent reported images that are not image ids; the deployment cannot be run again exactly");
        return;
    }
    if let Err(error) = store.set_deployment_images(id, &valid).await {
        tracing::error!(%error, deployment_id = %id, "could not record a deploy's images; it cannot be run again exactly");
    }
}

/// Logs why recording part of a job update failed; each part is logged on its own.
fn log_failure(result: OpResult<()>, deployment: DeploymentId) {
    if let Err(error) = result {
        tracing::error!(?error, deployment_id = %deployment, "could not record a job update");
    }
}

/// Marks open deployments untouched for `expiry` as timed out.
pub async fn expire_stale(store: &Store, hub: &Hub, expiry: Duration) {
    let cutoff = crate::db::now_ms() - expiry.as_millis() as i64;
    let stale = match store.stale_open_deployments(cutoff).await {
        Ok(stale) => stale,
        Err(error) => {
            tracing::warn!(%error, "could not look for stale deployments");
            return;
        }
    };
    for (id, project) in stale {
        let message = format!(
            "no word from the agent for {} s: the job timed out",
            expiry.as_secs()
        );
        let timed_out = set_status(
            store,
            hub,
            id,
            project,
            DeploymentStatus::TimedOut,
            Some(&message),
        );
        if let Err(error) = timed_out.await {
            tracing::warn!(?error, deployment_id = %id, "could not time out a deployment");
        }
    }
}

/// Moves a deployment forward and tells the watching tabs.
async fn set_status(
    store: &Store,
    hub: &Hub,
    id: DeploymentId,
    project_id: ProjectId,
    status: DeploymentStatus,
    message: Option<&str>,
) -> OpResult<()> {
    if store.set_deployment_status(id, status, message).await? {
        hub.publish(HubEvent::DeploymentStatus {
            deployment_id: id,
            project_id,
            status,
            message: message.map(str::to_string),
        });
    }
    Ok(())
}

/// Keeps an event of a deployment's history and tells the watching tabs, with the time it was
/// stored under.
async fn add_event(
    store: &Store,
    hub: &Hub,
    id: DeploymentId,
    project_id: ProjectId,
    event: NewEvent,
) -> OpResult<()> {
    let at = store
        .add_deployment_events(id, std::slice::from_ref(&event))
        .await?;
    hub.publish(HubEvent::DeploymentEvent {
        deployment_id: id,
        project_id,
        event: shared::api::DeploymentEvent {
            at,
            kind: event.kind,
            body: event.body,
        },
    });
    Ok(())
}
