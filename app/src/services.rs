//! A project's running containers: one live row per container (status, health, started, restarts,
//! image), and the lifecycle actions on the project or on one service.
//!
//! The rows come from what the agent reports (`docker events`, reconciled with a full reading of
//! the labelled containers on every connect and every few minutes) and
//! arrive on the live feed, so a container that dies shows without a reload. Every action is a
//! job like a deploy: it shows in the history with its output. Destructive ones (stop, down)
//! ask for a confirming second click.

use crate::widgets::error_text;
use leptos::prelude::*;
use shared::api::{DeployAccepted, ProjectServices};
use shared::runtime::{summarize, ContainerHealth, ContainerStatus, ServiceState};
use shared::{DeploymentId, ProjectId, ServiceName};

/// A project's containers as the agent last reported them.
#[server]
pub async fn service_states(project: ProjectId) -> Result<ProjectServices, ServerFnError> {
    crate::call!(service_states, project)
}

/// The containers of each of the person's projects that has any, for the Projects list.
#[server]
pub async fn service_overview() -> Result<Vec<ProjectServices>, ServerFnError> {
    crate::call!(service_overview)
}

/// Queues a lifecycle job. `action` is `start`, `stop`, `restart` or `down`; `service` empty for
/// the whole project.
#[server]
pub async fn lifecycle(
    project: ProjectId,
    action: String,
    service: String,
    remove_volumes: bool,
) -> Result<DeployAccepted, ServerFnError> {
    use shared::runtime::LifecycleAction;
    let action = match action.as_str() {
        "start" => LifecycleAction::Start,
        "stop" => LifecycleAction::Stop,
        "restart" => LifecycleAction::Restart,
        "down" => LifecycleAction::Down,
        other => return Err(ServerFnError::new(format!("unknown action {other:?}"))),
    };
    let service = match service.trim() {
        "" => None,
        name => Some(
            ServiceName::parse(name)
                .map_err(|error| ServerFnError::new(format!("Service: {error}")))?,
        ),
    };
    let request = shared::api::LifecycleRequest {
        action,
        service,
        remove_volumes,
    };
    crate::call!(act, project, request)
}

/// The live state of a project's containers: `None` until loaded, then the latest report.
pub type LiveStates = RwSignal<Option<Vec<ServiceState>>>;

/// The Services panel of the Project page. `states` is kept current by the page's live feed;
/// `started` is told the id of every job started here, so the page can follow it.
#[component]
pub fn ServicesPanel(
    project: ProjectId,
    states: LiveStates,
    started: impl Fn(DeploymentId) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let loaded = Resource::new(move || project, service_states);
    let error = RwSignal::new(None::<String>);
    let run = move |action: &'static str, service: Option<ServiceName>, remove_volumes: bool| {
        let service = service.map(|name| name.to_string()).unwrap_or_default();
        leptos::task::spawn_local(async move {
            match lifecycle(project, action.to_string(), service, remove_volumes).await {
                Ok(accepted) => {
                    error.set(None);
                    started(accepted.deployment_id);
                }
                Err(failure) => error.set(Some(error_text(&failure))),
            }
        });
    };
    let remove_volumes = RwSignal::new(false);
    let down_armed = RwSignal::new(false);
    let stop_all_armed = RwSignal::new(false);
    // The one service whose Stop was clicked once and waits for the confirming click.
    let stop_armed = RwSignal::new(None::<ServiceName>);

    view! {
        <section class="panel" data-panel="services">
            <div class="panel-head">
                <h2>"Services"</h2>
                <div class="actions">
                    <button class="btn" on:click=move |_| run("start", None, false)>"Start all"</button>
                    <button class="btn" on:click=move |_| run("restart", None, false)>"Restart all"</button>
                    <ConfirmButton
                        label="Stop all"
                        confirm="Confirm stop all"
                        armed=stop_all_armed
                        arm=move |armed| stop_all_armed.set(armed)
                        on_confirm=move || run("stop", None, false)
                    />
                    <button
                        class="btn btn-danger"
                        on:click=move |_| {
                            if down_armed.get_untracked() {
                                down_armed.set(false);
                                run("down", None, remove_volumes.get_untracked());
                                // Removing the volumes is asked for each time, never remembered.
                                remove_volumes.set(false);
                            } else {
                                down_armed.set(true);
                            }
                        }
                    >
                        {move || if down_armed.get() { "Confirm down" } else { "Down" }}
                    </button>
                </div>
            </div>
            <Show when=move || down_armed.get()>
                <p class="muted" role="status">
                    "Down removes the project's containers and networks. "
                    <label class="inline">
                        <input
                            type="checkbox"
                            name="remove_volumes"
                            prop:checked=move || remove_volumes.get()
                            on:change=move |event| remove_volumes.set(event_target_checked(&event))
                        />
                        " Also remove its volumes (their data is lost)"
                    </label>
                </p>
            </Show>
            {move || error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
            <Transition fallback=|| view! { <p class="muted">"Loading the containers…"</p> }>
                {move || Suspend::new(async move {
                    // What was stored when the page loaded (`None`: never reported); the live
                    // feed's reports replace it.
                    let reported = loaded
                        .await
                        .ok()
                        .and_then(|loaded| loaded.updated_at.map(|_| loaded.containers));
                    view! {
                        {move || containers(states.get().or_else(|| reported.clone()), run, stop_armed)}
                    }
                })}
            </Transition>
        </section>
    }
}

/// The rows of a project's containers, or why there are none.
fn containers(
    list: Option<Vec<ServiceState>>,
    run: impl Fn(&'static str, Option<ServiceName>, bool) + Copy + Send + Sync + 'static,
    stop_armed: RwSignal<Option<ServiceName>>,
) -> AnyView {
    match list {
        None => view! { <p class="muted">"Waiting for the agent's report…"</p> }.into_any(),
        Some(list) if list.is_empty() => {
            view! { <p class="muted">"No containers: not deployed, or taken down."</p> }.into_any()
        }
        Some(list) => {
            let summary = summarize(&list);
            view! {
                <p class="muted" data-summary>{summary}</p>
                <table class="services">
                    <thead>
                        <tr>
                            <th>"Service"</th>
                            <th>"State"</th>
                            <th>"Started"</th>
                            <th>"Restarts"</th>
                            <th>"Image"</th>
                            <th></th>
                        </tr>
                    </thead>
                    <tbody>
                        {list
                            .into_iter()
                            .map(|state| view! { <ServiceRow state run stop_armed /> })
                            .collect_view()}
                    </tbody>
                </table>
            }
            .into_any()
        }
    }
}

/// A button that acts on its second click; the first arms it. Whether it is armed is kept by
/// the caller (`armed`, `arm`), outside the button: a row is drawn again with every live report,
/// and a button that kept it itself would forget a first click made just before one.
#[component]
fn ConfirmButton(
    label: &'static str,
    confirm: &'static str,
    #[prop(into)] armed: Signal<bool>,
    arm: impl Fn(bool) + Send + Sync + 'static,
    on_confirm: impl Fn() + Send + Sync + 'static,
) -> impl IntoView {
    view! {
        <button
            class="btn btn-danger"
            on:click=move |_| {
                if armed.get_untracked() {
                    arm(false);
                    on_confirm();
                } else {
                    arm(true);
                }
            }
        >
            {move || if armed.get() { confirm } else { label }}
        </button>
    }
}

#[component]
fn ServiceRow(
    state: ServiceState,
    run: impl Fn(&'static str, Option<ServiceName>, bool) + Copy + Send + Sync + 'static,
    stop_armed: RwSignal<Option<ServiceName>>,
) -> impl IntoView {
    let up = state.is_up();
    let class = match (state.status, state.health) {
        (ContainerStatus::Running, Some(ContainerHealth::Unhealthy)) => "state state-bad",
        (ContainerStatus::Running, Some(ContainerHealth::Starting)) => "state state-wait",
        (ContainerStatus::Running, _) => "state state-ok",
        (ContainerStatus::Restarting | ContainerStatus::Created, _) => "state state-wait",
        (ContainerStatus::Paused, _) => "state state-wait",
        _ => "state state-bad",
    };
    let service = state.service.clone();
    let (start_service, stop_service, restart_service) =
        (service.clone(), service.clone(), service.clone());
    let (armed_service, arm_service) = (service.clone(), service.clone());
    let armed =
        Signal::derive(move || stop_armed.with(|armed| armed.as_ref() == Some(&armed_service)));
    let arm = move |armed: bool| stop_armed.set(armed.then(|| arm_service.clone()));
    let image = state
        .image_id
        .as_deref()
        .map(|id| {
            id.trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>()
        })
        .unwrap_or_default();
    // A Swarm task: its whole service's count ("2/2 running"), as Swarm reports it.
    let replicas = state.replicas.clone();
    view! {
        <tr
            data-service=state.service.to_string()
            data-container=state.container_id.clone()
            data-state=state.status.as_str()
            data-up=up.to_string()
        >
            <td>
                <code>{state.service.to_string()}</code>
                {replicas
                    .map(|replicas| {
                        view! {
                            <br />
                            <small class="muted" data-replicas>
                                {replicas.label()}
                            </small>
                        }
                    })}
            </td>
            <td><span class=class>{state.label()}</span></td>
            <td class="muted">{state.started_at.clone().unwrap_or_default()}</td>
            <td>{state.restart_count}</td>
            <td><code title=state.image_id.clone().unwrap_or_default()>{image}</code></td>
            <td class="actions">
                {if up {
                    view! {
                        <button
                            class="btn btn-quiet"
                            on:click=move |_| run("restart", Some(restart_service.clone()), false)
                        >
                            "Restart"
                        </button>
                        <ConfirmButton
                            label="Stop"
                            confirm="Confirm stop"
                            armed
                            arm
                            on_confirm=move || run("stop", Some(stop_service.clone()), false)
                        />
                    }
                        .into_any()
                } else {
                    view! {
                        <button
                            class="btn btn-quiet"
                            on:click=move |_| run("start", Some(start_service.clone()), false)
                        >
                            "Start"
                        </button>
                    }
                        .into_any()
                }}
            </td>
        </tr>
    }
    .into_any()
}
