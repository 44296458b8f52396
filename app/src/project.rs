//! The Project page: its secrets, the Deploy button, the deployment history with each
//! deployment's log, and the live container logs.
//!
//! While the page is open its tab watches the project on the live feed, which brings the
//! deployments' progress and the log lines as they happen.

use crate::logs::{Ansi, LogBuffer, LogPanel};
use crate::widgets::{error_text, format_time, SubmitRow};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;
use shared::api::{
    DeployAccepted, Deployment, DeploymentEvent, DeploymentStatus, EventKind, Project,
    SecretSummary,
};
use shared::{DeploymentId, ProjectId, SecretId, SecretScope, ServiceName};
use std::collections::HashMap;

#[server]
pub async fn get_project(id: ProjectId) -> Result<Project, ServerFnError> {
    crate::call!(project, id)
}

/// The services the agent found in the project's compose file, for the scope selector.
#[server]
pub async fn project_services(id: ProjectId) -> Result<Vec<ServiceName>, ServerFnError> {
    crate::call!(project_services, id)
}

#[server]
pub async fn list_secrets(project: ProjectId) -> Result<Vec<SecretSummary>, ServerFnError> {
    crate::call!(list_secrets, project)
}

/// Adds a secret. `scope` is `global` or a service name.
#[server]
pub async fn add_secret(
    project: ProjectId,
    key: String,
    value: String,
    scope: String,
) -> Result<SecretSummary, ServerFnError> {
    let key = shared::EnvKey::parse(key.trim())
        .map_err(|error| ServerFnError::new(format!("Key: {error}")))?;
    let scope = match scope.as_str() {
        "" | "global" => SecretScope::Global,
        service => SecretScope::Service(
            ServiceName::parse(service)
                .map_err(|error| ServerFnError::new(format!("Scope: {error}")))?,
        ),
    };
    let body = shared::api::CreateSecret {
        project_id: project,
        key,
        value: shared::SecretValue::new(value),
        scope,
    };
    crate::call!(create_secret, body)
}

#[server]
pub async fn change_secret(id: SecretId, value: String) -> Result<SecretSummary, ServerFnError> {
    let body = shared::api::UpdateSecret {
        value: shared::SecretValue::new(value),
    };
    crate::call!(update_secret, id, body)
}

#[server]
pub async fn delete_secret(id: SecretId) -> Result<(), ServerFnError> {
    crate::call!(delete_secret, id)
}

/// The plaintext of a secret; the server records who revealed it.
#[server]
pub async fn reveal_secret(id: SecretId) -> Result<String, ServerFnError> {
    let revealed: shared::api::RevealedSecret = crate::call!(reveal_secret, id)?;
    Ok(revealed.value.expose().to_string())
}

#[server]
pub async fn deploy(project: ProjectId) -> Result<DeployAccepted, ServerFnError> {
    crate::call!(deploy, project)
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
    Effect::new(move |_| {
        if let Some(Ok(accepted)) = deploy_action.value().get() {
            current.set(Some(accepted.deployment_id));
            deployments.refetch();
        }
    });

    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        use crate::live::{close_on_cleanup, subscribe, Live};
        use shared::api::{DashboardEvent, DashboardRequest};
        let feed = subscribe(
            std::rc::Rc::new(move |message| match message {
                Live::Opened | Live::Event(DashboardEvent::Resync) => deployments.refetch(),
                Live::Event(DashboardEvent::DeploymentStatus {
                    deployment_id,
                    status,
                    message,
                }) => {
                    let known = deployments
                        .get_untracked()
                        .and_then(Result::ok)
                        .is_some_and(|list| list.iter().any(|d| d.id == deployment_id));
                    live.status.update(|statuses| {
                        statuses.insert(deployment_id, (status, message));
                    });
                    if !known {
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
                Live::Event(
                    DashboardEvent::AgentStatus { .. } | DashboardEvent::ServiceStates { .. },
                ) => {}
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
                                    <button
                                        class="btn btn-primary"
                                        disabled=move || deploy_action.pending().get()
                                        on:click=move |_| {
                                            deploy_action.dispatch(Deploy { project: id });
                                        }
                                    >
                                        "Deploy"
                                    </button>
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
                                <CurrentDeployment current live deployments />
                            </section>
                        }
                            .into_any()
                    }
                    Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                }
            })}
        </Transition>
        <Secrets project=id />
        <section class="panel">
            <LogPanel buffer=logs />
        </section>
        <History deployments live />
    }
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
) -> impl IntoView {
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
                                        .map(|deployment| view! { <HistoryRow deployment live /> })
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

#[component]
fn HistoryRow(deployment: Deployment, live: LiveDeployments) -> impl IntoView {
    let id = deployment.id;
    let started = format_time(deployment.created_at);
    let status = {
        let deployment = deployment.clone();
        Memo::new(move |_| status_of(live, &deployment))
    };
    let open = RwSignal::new(false);
    let log = Resource::new(
        move || open.get(),
        move |open| async move {
            if open {
                deployment_log(id).await
            } else {
                Ok(Vec::new())
            }
        },
    );
    view! {
        <li data-deployment-id=id.to_string()>
            <div class="history-row">
                {move || view! { <StatusBadge status=status.get().0 /> }}
                <span>{started}</span>
                <span class="muted">{move || status.get().1.unwrap_or_default()}</span>
                <button class="btn btn-quiet" on:click=move |_| open.update(|open| *open = !*open)>
                    {move || if open.get() { "Hide log" } else { "Log" }}
                </button>
            </div>
            <Show when=move || open.get()>
                <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                    {move || Suspend::new(async move {
                        match log.await {
                            Ok(events) => view! { <EventLog events /> }.into_any(),
                            Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                        }
                    })}
                </Transition>
            </Show>
        </li>
    }
}

/// The secret manager: masked values, reveal on request, add, change and delete.
#[component]
fn Secrets(project: ProjectId) -> impl IntoView {
    let secrets = Resource::new(move || project, list_secrets);
    let services = Resource::new(move || project, project_services);
    let add = ServerAction::<AddSecret>::new();
    Effect::new(move |_| {
        if let Some(Ok(_)) = add.value().get() {
            secrets.refetch();
        }
    });
    let changed = move || secrets.refetch();

    view! {
        <section class="panel">
            <h2>"Secrets"</h2>
            <p class="muted">
                "Stored encrypted. Global secrets go to every service, scoped ones to one service; the compose files are never changed."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading secrets…"</p> }>
                {move || Suspend::new(async move {
                    match secrets.await {
                        Ok(list) if list.is_empty() => {
                            view! { <p class="muted">"No secrets yet."</p> }.into_any()
                        }
                        Ok(list) => {
                            view! {
                                <table class="secrets">
                                    <thead>
                                        <tr>
                                            <th>"Key"</th>
                                            <th>"Scope"</th>
                                            <th>"Value"</th>
                                            <th></th>
                                        </tr>
                                    </thead>
                                    <tbody>
                                        {list
                                            .into_iter()
                                            .map(|secret| view! { <SecretRow secret changed /> })
                                            .collect_view()}
                                    </tbody>
                                </table>
                            }
                                .into_any()
                        }
                        Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                    }
                })}
            </Transition>
            <h3>"Add a secret"</h3>
            <ActionForm action=add attr:class="grid-form">
                <input type="hidden" name="project" value=project.to_string() />
                <label>"Key" <input name="key" placeholder="DATABASE_URL" required /></label>
                <label>
                    "Value" <input name="value" type="password" autocomplete="off" required />
                </label>
                <label>
                    "Scope"
                    <select name="scope">
                        <option value="global">"Global (every service)"</option>
                        <Transition fallback=|| ()>
                            {move || Suspend::new(async move {
                                services
                                    .await
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|service| {
                                        let name = service.to_string();
                                        view! { <option value=name.clone()>{format!("Service {name}")}</option> }
                                    })
                                    .collect_view()
                            })}
                        </Transition>
                    </select>
                </label>
                <Transition fallback=|| ()>
                    {move || Suspend::new(async move {
                        services.await.err().map(|error| {
                            view! {
                                <p class="muted hint">
                                    "Only Global for now: the services are unknown ("
                                    {error_text(&error)} ")."
                                </p>
                            }
                        })
                    })}
                </Transition>
                <SubmitRow
                    label="Add secret"
                    pending=add.pending()
                    error=Signal::derive(move || add.value().get().and_then(Result::err))
                />
            </ActionForm>
        </section>
    }
}

#[component]
fn SecretRow(
    secret: SecretSummary,
    changed: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let id = secret.id;
    let revealed = RwSignal::new(None::<String>);
    let editing = RwSignal::new(false);
    let armed = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let new_value = RwSignal::new(String::new());
    let scope = match &secret.scope {
        SecretScope::Global => "Global".to_string(),
        SecretScope::Service(service) => service.to_string(),
    };

    let reveal = move |_| {
        if revealed.get_untracked().is_some() {
            revealed.set(None);
            return;
        }
        leptos::task::spawn_local(async move {
            match reveal_secret(id).await {
                Ok(value) => revealed.set(Some(value)),
                Err(failure) => error.set(Some(error_text(&failure))),
            }
        });
    };
    let save = move |_| {
        let value = new_value.get_untracked();
        leptos::task::spawn_local(async move {
            match change_secret(id, value).await {
                Ok(_) => {
                    editing.set(false);
                    revealed.set(None);
                    new_value.set(String::new());
                    error.set(None);
                    changed();
                }
                Err(failure) => error.set(Some(error_text(&failure))),
            }
        });
    };
    let delete = move |_| {
        if !armed.get_untracked() {
            armed.set(true);
            return;
        }
        leptos::task::spawn_local(async move {
            match delete_secret(id).await {
                Ok(()) => changed(),
                Err(failure) => error.set(Some(error_text(&failure))),
            }
        });
    };

    view! {
        <tr data-secret-key=secret.key.to_string()>
            <td>
                <code>{secret.key.to_string()}</code>
                {secret
                    .weak_redaction
                    .then(|| {
                        view! {
                            " "
                            <span
                                class="badge badge-weak"
                                title="Values under 6 characters cannot be masked reliably in logs; use a longer one"
                            >
                                "short: may not be masked in logs"
                            </span>
                        }
                    })}
            </td>
            <td>{scope}</td>
            <td class="value">
                <Show
                    when=move || editing.get()
                    fallback=move || {
                        view! {
                            <code>{move || revealed.get().unwrap_or_else(|| "••••••••".into())}</code>
                        }
                    }
                >
                    <label class="inline">
                        <span class="visually-hidden">"New value"</span>
                        <input
                            type="password"
                            autocomplete="off"
                            placeholder="New value"
                            prop:value=move || new_value.get()
                            on:input=move |event| new_value.set(event_target_value(&event))
                        />
                    </label>
                    <button class="btn btn-primary" on:click=save>"Save"</button>
                </Show>
                {move || error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
            </td>
            <td class="actions">
                <button class="btn btn-quiet" on:click=reveal>
                    {move || if revealed.get().is_some() { "Hide" } else { "Reveal" }}
                </button>
                <button class="btn btn-quiet" on:click=move |_| editing.update(|editing| *editing = !*editing)>
                    {move || if editing.get() { "Cancel" } else { "Edit" }}
                </button>
                <button class="btn btn-danger" on:click=delete>
                    {move || if armed.get() { "Confirm delete" } else { "Delete" }}
                </button>
            </td>
        </tr>
    }
}
