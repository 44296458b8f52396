//! The Project page: the Deploy button, its live containers with the lifecycle actions, its
//! secrets, the job history (deploys, redeploys and actions) with each job's log, and the live
//! container logs.
//!
//! While the page is open its tab watches the project on the live feed, which brings the jobs'
//! progress, the containers' state and the log lines as they happen.

use crate::logs::{Ansi, LogBuffer, LogPanel};
use crate::notifications::ProjectNotifications;
use crate::registries::Images;
use crate::secrets::Secrets;
use crate::services::ServicesPanel;
use crate::webhooks::WebhookPanel;
use crate::widgets::{error_text, format_time};
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_params_map};
use shared::api::{
    DeployAccepted, Deployment, DeploymentEvent, DeploymentStatus, EventKind, Project,
};
use shared::runtime::JobKind;
use shared::{DeploymentId, ProjectId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[server]
pub async fn get_project(id: ProjectId) -> Result<Project, ServerFnError> {
    crate::call!(project, id)
}

#[server]
pub async fn generate_deploy_key(
    project: ProjectId,
) -> Result<shared::source::GitSourceView, ServerFnError> {
    crate::call!(generate_deploy_key, project)
}

#[server]
pub async fn forget_host_key(
    project: ProjectId,
) -> Result<shared::source::GitSourceView, ServerFnError> {
    crate::call!(forget_host_key, project)
}

#[server]
pub async fn deploy(project: ProjectId) -> Result<DeployAccepted, ServerFnError> {
    crate::call!(deploy, project)
}

/// Runs an earlier successful deployment again: the same secret values and images.
#[server]
pub async fn redeploy(id: DeploymentId) -> Result<DeployAccepted, ServerFnError> {
    crate::call!(redeploy, id)
}

/// Deletes the project; with `down`, its containers are taken down first.
#[server]
pub async fn delete_project(
    id: ProjectId,
    down: bool,
    remove_volumes: bool,
) -> Result<(), ServerFnError> {
    let options = shared::api::DeleteProject {
        down,
        remove_volumes,
    };
    crate::call!(delete_project, id, options)
}

#[server]
pub async fn list_deployments(project: ProjectId) -> Result<Vec<Deployment>, ServerFnError> {
    crate::call!(deployments, project)
}

/// One deployment with its steps and output.
#[server]
pub async fn deployment_log(id: DeploymentId) -> Result<Vec<DeploymentEvent>, ServerFnError> {
    let deployment: Deployment = crate::call!(deployment, id)?;
    Ok(deployment.events)
}

/// What the live feed told this page about deployments since it was loaded.
#[derive(Clone, Copy)]
struct LiveDeployments {
    status: RwSignal<HashMap<DeploymentId, (DeploymentStatus, Option<String>)>>,
    events: RwSignal<HashMap<DeploymentId, Vec<DeploymentEvent>>>,
}

#[component]
pub fn ProjectPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || {
        params
            .read()
            .get("id")
            .and_then(|id| id.parse::<ProjectId>().ok())
    };
    view! {
        {move || match id() {
            Some(id) => view! { <Project id /> }.into_any(),
            None => view! { <p class="error">"No such project."</p> }.into_any(),
        }}
    }
}

#[component]
fn Project(id: ProjectId) -> impl IntoView {
    let project = Resource::new(move || id, get_project);
    let deployments = Resource::new(move || id, list_deployments);
    let live = LiveDeployments {
        status: RwSignal::new(HashMap::new()),
        events: RwSignal::new(HashMap::new()),
    };
    let logs = LogBuffer::default();
    let deploy_action = ServerAction::<Deploy>::new();
    let current = RwSignal::new(None::<DeploymentId>);
    let follow = move |job: DeploymentId| {
        current.set(Some(job));
        deployments.refetch();
    };
    Effect::new(move |_| {
        if let Some(Ok(accepted)) = deploy_action.value().get() {
            follow(accepted.deployment_id);
        }
    });
    let states = RwSignal::new(None);
    let agent_back = RwSignal::new(0u64);
    // Moves each time the job history is read (a job was queued or ended): the webhook's
    // deliveries are read again with it, since a delivery's outcome is written as its job goes.
    // (The first read, the one the page came with, counts for nothing.)
    let list_reads = RwSignal::new(0usize);
    Effect::new(move |read_before: Option<bool>| {
        let read = matches!(deployments.get(), Some(Ok(_)));
        if read && read_before == Some(true) {
            list_reads.update(|reads| *reads += 1);
        }
        read_before == Some(true) || read
    });

    // What the feed's handler needs to know of the loaded data, kept by effects: the handler
    // runs outside any effect or suspense, where reading a resource is not allowed.
    #[cfg(feature = "hydrate")]
    let (listed, agent) = {
        let listed = StoredValue::new(std::collections::HashSet::<DeploymentId>::new());
        let agent = StoredValue::new(None::<shared::AgentId>);
        Effect::new(move |_| {
            if let Some(Ok(list)) = deployments.get() {
                listed.set_value(list.iter().map(|deployment| deployment.id).collect());
            }
        });
        Effect::new(move |_| {
            if let Some(Ok(project)) = project.get() {
                agent.set_value(Some(project.agent_id));
            }
        });
        (listed, agent)
    };
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        use crate::live::{close_on_cleanup, subscribe, Live};
        use shared::api::{DashboardEvent, DashboardRequest};
        let feed = subscribe(
            std::rc::Rc::new(move |message| match message {
                Live::Opened | Live::Event(DashboardEvent::Resync) => {
                    deployments.refetch();
                    agent_back.update(|back| *back += 1);
                }
                Live::Event(DashboardEvent::DeploymentStatus {
                    deployment_id,
                    status,
                    message,
                }) => {
                    let known = listed.with_value(|listed| listed.contains(&deployment_id));
                    let last = status.is_final();
                    live.status.update(|statuses| {
                        statuses.insert(deployment_id, (status, message));
                    });
                    // A job that ended has what it recorded to show (the commit it checked
                    // out, the images it ran), stored before its status moved.
                    if !known || last {
                        deployments.refetch();
                    }
                }
                Live::Event(DashboardEvent::DeploymentEvent {
                    deployment_id,
                    event,
                }) => {
                    live.events.update(|events| {
                        events.entry(deployment_id).or_default().push(event);
                    });
                }
                Live::Event(DashboardEvent::Logs(lines)) => logs.push(lines),
                Live::Event(DashboardEvent::ServiceStates {
                    project_id,
                    containers,
                }) => {
                    if project_id == id {
                        states.set(Some(containers));
                    }
                }
                Live::Event(DashboardEvent::AgentStatus { agent_id, status }) => {
                    let ours = agent.get_value() == Some(agent_id);
                    if ours && status == shared::api::AgentStatus::Connected {
                        agent_back.update(|back| *back += 1);
                    }
                }
            }),
            std::rc::Rc::new(move || {
                Some(DashboardRequest::Watch {
                    project_id: id,
                    resume: logs.cursor(),
                })
            }),
        );
        close_on_cleanup(feed);
    });

    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading the project…"</p> }>
            {move || Suspend::new(async move {
                match project.await {
                    Ok(project) => {
                        view! {
                            <section class="panel">
                                <div class="panel-head">
                                    <div>
                                        <h1>{project.name.to_string()}</h1>
                                        <p class="muted">
                                            <code>{project.path.to_string()}</code>
                                            {project.compose_file.clone().map(|file| view! { " · " <code>{file.to_string()}</code> })}
                                        </p>
                                    </div>
                                    <div class="actions">
                                        <button
                                            class="btn btn-primary"
                                            disabled=move || deploy_action.pending().get()
                                            on:click=move |_| {
                                                deploy_action.dispatch(Deploy { project: id });
                                            }
                                        >
                                            "Deploy"
                                        </button>
                                        <DeleteButton id />
                                    </div>
                                </div>
                                {project.name_clash.then(|| view! {
                                    <p class="error" role="alert">
                                        "Another project on this agent is also named "
                                        <code>{project.name.to_string()}</code>
                                        ". Rename this project: until then it shows no logs, and a deploy may be refused."
                                    </p>
                                })}
                                {move || {
                                    deploy_action
                                        .value()
                                        .get()
                                        .and_then(Result::err)
                                        .map(|error| view! { <p class="error" role="alert">{error_text(&error)}</p> })
                                }}
                                {project.source.clone().map(|source| view! { <GitSourcePanel project=id source /> })}
                                <CurrentDeployment current live deployments />
                            </section>
                        }
                            .into_any()
                    }
                    Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                }
            })}
        </Transition>
        <ServicesPanel project=id states started=follow />
        <Secrets project=id agent_back=agent_back.read_only() />
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                project
                    .await
                    .ok()
                    .map(|project| view! { <Images project=id policy=project.pull_policy /> })
            })}
        </Transition>
        <ProjectNotifications project=id />
        <WebhookPanel project=id changed=list_reads />
        <section class="panel">
            <LogPanel buffer=logs />
        </section>
        <History deployments live started=follow />
    }
}

/// A Git project's repository, its deploy key (generated on the server; the public half with a
/// copy button, to add to the repository) and the SSH host key pinned at the first deploy.
#[component]
fn GitSourcePanel(project: ProjectId, source: shared::source::GitSourceView) -> impl IntoView {
    let view_now = RwSignal::new(source.clone());
    let generate = Action::new(move |_: &()| generate_deploy_key(project));
    let forget = Action::new(move |_: &()| forget_host_key(project));
    Effect::new(move |_| {
        if let Some(Ok(updated)) = generate.value().get() {
            view_now.set(updated);
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(updated)) = forget.value().get() {
            view_now.set(updated);
        }
    });
    let copied = RwSignal::new(false);
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        if let Some(key) = view_now.get_untracked().deploy_public_key {
            let _ = window().navigator().clipboard().write_text(&key);
            copied.set(true);
        }
    };
    let error = move || {
        generate
            .value()
            .get()
            .and_then(Result::err)
            .or_else(|| forget.value().get().and_then(Result::err))
            .map(|error| view! { <p class="error" role="alert">{error_text(&error)}</p> })
    };
    view! {
        <div class="git-source" data-testid="git-source">
            <p>
                "From Git: " <code data-testid="git-url">{source.source.url.to_string()}</code>
                {source.source.git_ref.clone().map(|git_ref| view! { " · " <code>{git_ref.to_string()}</code> })}
                {source.source.subdir.clone().map(|subdir| view! { " · " <code>{subdir.to_string()}</code> })}
                {source.has_token.then_some(" · https token set")}
            </p>
            <div class="command">
                {move || match view_now.get().deploy_public_key {
                    Some(key) => view! {
                        <pre><code data-testid="deploy-key">{key}</code></pre>
                        <button class="btn" on:click=copy>
                            {move || if copied.get() { "Copied" } else { "Copy" }}
                        </button>
                    }
                        .into_any(),
                    None => view! { <p class="muted">"No deploy key yet."</p> }.into_any(),
                }}
                <button class="btn" disabled=move || generate.pending().get() on:click=move |_| {
                    copied.set(false);
                    generate.dispatch(());
                }>
                    {move || if view_now.get().deploy_public_key.is_some() { "New deploy key" } else { "Generate deploy key" }}
                </button>
            </div>
            {move || view_now.get().pinned_host_key.map(|key| view! {
                <p>
                    "Pinned host key: " <code data-testid="host-key">{key}</code>
                    <button class="btn btn-quiet" on:click=move |_| { forget.dispatch(()); }>
                        "Forget"
                    </button>
                </p>
            })}
            {error}
        </div>
    }
}

/// Deletes the project after a confirming second click, by default taking its containers down
/// first (the project is kept if that fails, with the reason shown).
#[component]
fn DeleteButton(id: ProjectId) -> impl IntoView {
    let armed = RwSignal::new(false);
    let down = RwSignal::new(true);
    let remove_volumes = RwSignal::new(false);
    let pending = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let navigate = use_navigate();
    let delete = move |_| {
        if !armed.get_untracked() {
            armed.set(true);
            return;
        }
        pending.set(true);
        let navigate = navigate.clone();
        let (down, remove_volumes) = (down.get_untracked(), remove_volumes.get_untracked());
        leptos::task::spawn_local(async move {
            let result = delete_project(id, down, remove_volumes).await;
            // Taking the containers down first can take a while: a person who went to another
            // page meanwhile stays there.
            let still_here = pending.try_set(false).is_none();
            match result {
                Ok(()) if still_here => navigate("/projects", Default::default()),
                Ok(()) => {}
                Err(failure) => error.set(Some(error_text(&failure))),
            }
        });
    };
    view! {
        <button class="btn btn-danger" disabled=move || pending.get() on:click=delete>
            {move || match (pending.get(), armed.get()) {
                (true, _) => "Deleting…",
                (false, true) => "Confirm delete",
                (false, false) => "Delete project",
            }}
        </button>
        <Show when=move || armed.get()>
            <div class="confirm" role="group" aria-label="How to delete">
                <label class="inline">
                    <input
                        type="checkbox"
                        name="down"
                        prop:checked=move || down.get()
                        on:change=move |event| down.set(event_target_checked(&event))
                    />
                    " Take its containers and networks down first"
                </label>
                <label class="inline">
                    <input
                        type="checkbox"
                        name="remove_volumes"
                        prop:disabled=move || !down.get()
                        prop:checked=move || remove_volumes.get()
                        on:change=move |event| remove_volumes.set(event_target_checked(&event))
                    />
                    " and its volumes (their data is lost)"
                </label>
                <button class="btn btn-quiet" on:click=move |_| armed.set(false)>"Cancel"</button>
            </div>
        </Show>
        {move || error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
    }
    .into_any()
}

/// The status of a deployment: what the live feed said last, else what was loaded.
fn status_of(live: LiveDeployments, deployment: &Deployment) -> (DeploymentStatus, Option<String>) {
    live.status
        .with(|statuses| statuses.get(&deployment.id).cloned())
        .unwrap_or((deployment.status, deployment.message.clone()))
}

#[component]
fn StatusBadge(status: DeploymentStatus) -> impl IntoView {
    let label = match status {
        DeploymentStatus::Queued => "Queued",
        DeploymentStatus::Sent => "Sent",
        DeploymentStatus::Received => "Received",
        DeploymentStatus::Running => "Running",
        DeploymentStatus::Succeeded => "Succeeded",
        DeploymentStatus::Failed => "Failed",
        DeploymentStatus::Cancelled => "Cancelled",
        DeploymentStatus::TimedOut => "Timed out",
    };
    view! { <span class=format!("badge badge-{}", status.as_str()) data-status=status.as_str()>{label}</span> }
}

/// The deploy started from this page: its status, steps and output as they happen.
#[component]
fn CurrentDeployment(
    current: RwSignal<Option<DeploymentId>>,
    live: LiveDeployments,
    deployments: Resource<Result<Vec<Deployment>, ServerFnError>>,
) -> impl IntoView {
    move || {
        let id = current.get()?;
        let loaded = deployments
            .get()
            .and_then(Result::ok)
            .and_then(|list| list.into_iter().find(|d| d.id == id));
        let status = live
            .status
            .with(|statuses| statuses.get(&id).cloned())
            .or_else(|| loaded.map(|d| (d.status, d.message)))
            .unwrap_or((DeploymentStatus::Queued, None));
        let events = live
            .events
            .with(|events| events.get(&id).cloned().unwrap_or_default());
        Some(view! {
            <div class="deploy-live" data-deployment-id=id.to_string()>
                <p>
                    "Deployment " <StatusBadge status=status.0 />
                    {status.1.map(|message| view! { <span class="muted">" " {message}</span> })}
                </p>
                <EventLog events />
            </div>
        })
    }
}

#[component]
fn EventLog(events: Vec<DeploymentEvent>) -> impl IntoView {
    view! {
        <div class="log deploy-log">
            {events
                .into_iter()
                .map(|event| {
                    let step = event.kind == EventKind::Step;
                    view! {
                        <div class="line" class:step=step>
                            {step.then_some("▸ ")}
                            <Ansi text=event.body />
                        </div>
                    }
                })
                .collect_view()}
        </div>
    }
}

#[component]
fn History(
    deployments: Resource<Result<Vec<Deployment>, ServerFnError>>,
    live: LiveDeployments,
    started: impl Fn(DeploymentId) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let open_logs = OpenLogs::default();
    // The job whose Redeploy was clicked once and waits for the confirming click: the list's,
    // like the open logs, so a read of the list between the two clicks keeps it.
    let armed = RwSignal::new(None::<DeploymentId>);
    view! {
        <section class="panel">
            <h2>"Deployments"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading deployments…"</p> }>
                {move || Suspend::new(async move {
                    match deployments.await {
                        Ok(list) if list.is_empty() => {
                            view! { <p class="muted">"Not deployed yet."</p> }.into_any()
                        }
                        Ok(list) => {
                            view! {
                                <ul class="history">
                                    {list
                                        .into_iter()
                                        .map(|deployment| view! { <HistoryRow deployment live started open_logs armed /> })
                                        .collect_view()}
                                </ul>
                            }
                                .into_any()
                        }
                        Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

/// The logs opened in the history, by job. They belong to the list, not to its rows: the list
/// is read again whenever a job is queued or ends, which renders every row anew, and an open
/// log must stay open through that.
#[derive(Clone, Copy, Default)]
struct OpenLogs(RwSignal<HashMap<DeploymentId, OpenLog>>);

/// A job's log as read from the server, or why it could not be.
type LogRead = Result<Vec<DeploymentEvent>, String>;

/// One open log: what was read of it (`None` while reading), its own signal so that reading
/// one log does not render the others again.
#[derive(Clone)]
struct OpenLog {
    shown: ArcRwSignal<Option<LogRead>>,
    /// The number of the newest read asked for.
    newest: Arc<AtomicU64>,
    /// The number of the read shown: an answer older than it is dropped, so a slower, older
    /// read cannot replace a newer one (and reads asked for faster than they answer still
    /// show, each newer than the last).
    shown_read: Arc<AtomicU64>,
}

impl PartialEq for OpenLog {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.newest, &other.newest)
    }
}

impl OpenLog {
    /// Reads the job's log from the server; what was shown stays until the new read arrives.
    fn load(&self, id: DeploymentId) {
        let number = self.newest.fetch_add(1, Ordering::Relaxed) + 1;
        let this = self.clone();
        leptos::task::spawn_local(async move {
            let read = deployment_log(id).await.map_err(|error| error_text(&error));
            if this.shown_read.fetch_max(number, Ordering::Relaxed) < number {
                this.shown.try_set(Some(read));
            }
        });
    }
}

impl OpenLogs {
    fn get(self, id: DeploymentId) -> Option<OpenLog> {
        self.0.with(|logs| logs.get(&id).cloned())
    }

    /// Opens a job's log, or closes it when open. A log closed and opened again is a new one:
    /// a read asked for before it was closed is not shown.
    fn toggle(self, id: DeploymentId) {
        let opened = self.0.try_update(|logs| match logs.remove(&id) {
            Some(_) => None,
            None => {
                let log = OpenLog {
                    shown: ArcRwSignal::new(None),
                    newest: Arc::default(),
                    shown_read: Arc::default(),
                };
                logs.insert(id, log.clone());
                Some(log)
            }
        });
        if let Some(Some(log)) = opened {
            log.load(id);
        }
    }
}

/// What a job was, as its history row says: `Deploy`, `Redeploy of 2025-…`, `Stop web`.
fn job_title(deployment: &Deployment, earlier: Option<&Deployment>) -> String {
    let what = match deployment.kind {
        JobKind::Deploy if deployment.redeploy_of.is_some() => "Redeploy",
        JobKind::Deploy => "Deploy",
        JobKind::Start => "Start",
        JobKind::Stop => "Stop",
        JobKind::Restart => "Restart",
        JobKind::Down if deployment.remove_volumes => "Down (with volumes)",
        JobKind::Down => "Down",
    };
    let mut title = what.to_string();
    if let Some(service) = &deployment.service {
        title.push_str(&format!(" {service}"));
    }
    match (deployment.redeploy_of, earlier) {
        (Some(_), Some(earlier)) => {
            title.push_str(&format!(" of {}", format_time(earlier.created_at)))
        }
        (Some(earlier), None) => title.push_str(&format!(" of {earlier}")),
        _ => {}
    }
    title
}

#[component]
fn HistoryRow(
    deployment: Deployment,
    live: LiveDeployments,
    started: impl Fn(DeploymentId) + Copy + Send + Sync + 'static,
    open_logs: OpenLogs,
    /// The job whose Redeploy waits for its confirming click, if any.
    armed: RwSignal<Option<DeploymentId>>,
    #[prop(optional)] earlier: Option<Deployment>,
) -> impl IntoView {
    let id = deployment.id;
    let title = job_title(&deployment, earlier.as_ref());
    // A push says which (sender, commit, pusher); a person, who.
    let trigger = deployment.trigger.clone();
    let who = match &trigger {
        shared::webhooks::DeployTrigger::Webhook { .. } => Some(trigger.describe()),
        shared::webhooks::DeployTrigger::Manual => deployment
            .requested_by
            .clone()
            .map(|login| format!("by {login}")),
    };
    let trigger_kind = match trigger {
        shared::webhooks::DeployTrigger::Webhook { .. } => "webhook",
        shared::webhooks::DeployTrigger::Manual => "manual",
    };
    let can_redeploy = deployment.kind == JobKind::Deploy && !deployment.images.is_empty();
    let images = deployment
        .images
        .iter()
        .map(|image| match short_digest(image.repo_digest.as_deref()) {
            Some(digest) => format!("{} {} ({digest})", image.service, image.image),
            None => format!("{} {}", image.service, image.image),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let redeploy_error = RwSignal::new(None::<String>);
    // A redeploy brings back older secret values and images: the first click arms it.
    let pending = RwSignal::new(false);
    let run_again = move |_| {
        if armed.get_untracked() != Some(id) {
            armed.set(Some(id));
            return;
        }
        if pending.get_untracked() {
            return;
        }
        armed.set(None);
        pending.set(true);
        leptos::task::spawn_local(async move {
            let result = redeploy(id).await;
            pending.try_set(false);
            match result {
                Ok(accepted) => {
                    redeploy_error.try_set(None);
                    started(accepted.deployment_id);
                }
                Err(failure) => {
                    redeploy_error.try_set(Some(error_text(&failure)));
                }
            }
        });
    };
    let started_at = format_time(deployment.created_at);
    let status = {
        let deployment = deployment.clone();
        Memo::new(move |_| status_of(live, &deployment))
    };
    // The job's log, read each time it is opened (not a resource: a page of 200 jobs would
    // otherwise render, serialise and hydrate 200 of them for logs nobody opened), and again when
    // the list is: a job that was running when its log was opened may have ended since.
    if let Some(log) = open_logs.0.with_untracked(|logs| logs.get(&id).cloned()) {
        log.load(id);
    }
    let log = Memo::new(move |_| open_logs.get(id));
    let open = move || log.with(Option::is_some);
    let toggle_log = move |_| open_logs.toggle(id);
    view! {
        <li data-deployment-id=id.to_string()>
            <div class="history-row">
                {move || view! { <StatusBadge status=status.get().0 /> }}
                <span class="job" data-kind=deployment.kind.as_str()>{title}</span>
                {deployment.commit.clone().map(|commit| {
                    let short: String = commit.sha.chars().take(8).collect();
                    view! {
                        <span class="commit" data-testid="commit" title=format!("{} by {}", commit.sha, commit.author)>
                            <code>{short}</code> " " {commit.subject}
                        </span>
                    }
                })}
                <span>{started_at}</span>
                <span class="muted trigger" data-trigger=trigger_kind>{who}</span>
                <span class="muted">{move || status.get().1.unwrap_or_default()}</span>
                <button class="btn btn-quiet" on:click=toggle_log>
                    {move || if open() { "Hide log" } else { "Log" }}
                </button>
                <Show when=move || can_redeploy && status.get().0 == DeploymentStatus::Succeeded>
                    <button
                        class="btn btn-quiet"
                        title="Run exactly this deployment again: its secret values and images"
                        disabled=move || pending.get()
                        on:click=run_again
                    >
                        {move || if armed.get() == Some(id) { "Confirm redeploy" } else { "Redeploy" }}
                    </button>
                </Show>
            </div>
            {(!images.is_empty()).then(|| view! { <p class="muted images">"Images: " {images.clone()}</p> })}
            {move || redeploy_error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
            {move || {
                log.get()
                    .map(|log| match log.shown.get() {
                        None => view! { <p class="muted">"Loading…"</p> }.into_any(),
                        Some(Ok(events)) => view! { <EventLog events /> }.into_any(),
                        Some(Err(error)) => view! { <p class="error">{error}</p> }.into_any(),
                    })
            }}
        </li>
    }
    .into_any()
}

/// `sha256:0123456789ab` of a repo digest (`registry/app@sha256:…`), for the history.
fn short_digest(repo_digest: Option<&str>) -> Option<String> {
    let (_, digest) = repo_digest?.split_once('@')?;
    Some(digest.chars().take("sha256:".len() + 12).collect())
}
