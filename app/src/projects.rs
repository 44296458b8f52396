//! The Projects page: the person's compose projects with a live summary of their containers
//! ("3/3 running", "worker exited (1)"), and a form to add one.

use crate::registries::PullPolicySelect;
use crate::servers::list_agents;
use crate::services::service_overview;
use crate::widgets::SubmitRow;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_navigate;
use shared::api::Project;
use shared::registry::PullPolicy;
use shared::runtime::{summarize, ServiceState};
use shared::ProjectId;
use std::collections::HashMap;

#[server]
pub async fn list_projects() -> Result<Vec<Project>, ServerFnError> {
    crate::call!(list_projects)
}

/// Adds a project; every field is checked on the server and a bad one is named in the error.
#[server]
pub async fn add_project(
    name: String,
    agent_id: String,
    path: String,
    compose_file: String,
    pull_policy: String,
) -> Result<Project, ServerFnError> {
    let body = shared::api::CreateProject {
        name: shared::ProjectName::parse(name.trim())
            .map_err(|error| ServerFnError::new(format!("Name: {error}")))?,
        agent_id: agent_id
            .parse::<shared::AgentId>()
            .map_err(|_| ServerFnError::new("Choose the server the project runs on."))?,
        path: shared::ProjectPath::parse(path.trim())
            .map_err(|error| ServerFnError::new(format!("Path: {error}")))?,
        compose_file: match compose_file.trim() {
            "" => None,
            file => Some(
                shared::ComposeFile::parse(file)
                    .map_err(|error| ServerFnError::new(format!("Compose file: {error}")))?,
            ),
        },
        pull_policy: shared::registry::PullPolicy::parse(&pull_policy)
            .ok_or_else(|| ServerFnError::new("Pull policy: choose missing or always."))?,
    };
    crate::call!(create_project, body)
}

#[component]
pub fn ProjectsPage() -> impl IntoView {
    let projects = Resource::new(|| (), |_| list_projects());
    let agents = Resource::new(|| (), |_| list_agents());
    let overview = Resource::new(|| (), |_| service_overview());
    // What the live feed said since the page loaded, newer than `overview`.
    let live = RwSignal::new(HashMap::<ProjectId, Vec<ServiceState>>::new());
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        use crate::live::{close_on_cleanup, subscribe, Live};
        use shared::api::DashboardEvent;
        let feed = subscribe(
            std::rc::Rc::new(move |message| match message {
                Live::Opened | Live::Event(DashboardEvent::Resync) => {
                    live.update(HashMap::clear);
                    overview.refetch();
                }
                Live::Event(DashboardEvent::ServiceStates {
                    project_id,
                    containers,
                }) => live.update(|states| {
                    states.insert(project_id, containers);
                }),
                Live::Event(_) => {}
            }),
            std::rc::Rc::new(|| None),
        );
        close_on_cleanup(feed);
    });
    let add = ServerAction::<AddProject>::new();
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(project)) = add.value().get() {
            navigate(&format!("/projects/{}", project.id), Default::default());
        }
    });

    view! {
        <section class="panel">
            <div class="panel-head">
                <h1>"Projects"</h1>
            </div>
            <Transition fallback=|| view! { <p class="muted">"Loading projects…"</p> }>
                {move || Suspend::new(async move {
                    match projects.await {
                        Ok(list) if list.is_empty() => {
                            view! { <p class="muted">"No projects yet: add one below."</p> }.into_any()
                        }
                        Ok(list) => {
                            // As stored when the page loaded; the live feed's reports win.
                            let stored: HashMap<ProjectId, Vec<ServiceState>> = overview
                                .await
                                .unwrap_or_default()
                                .into_iter()
                                .map(|entry| (entry.project_id, entry.containers))
                                .collect();
                            let summary = move |project: ProjectId| {
                                live.with(|states| states.get(&project).map(|states| summarize(states)))
                                    .or_else(|| stored.get(&project).map(|states| summarize(states)))
                            };
                            view! { <ProjectTable projects=list summary /> }.into_any()
                        }
                        Err(error) => view! { <p class="error">{error.to_string()}</p> }.into_any(),
                    }
                })}
            </Transition>
        </section>
        <section class="panel">
            <h2>"Add a project"</h2>
            <ActionForm action=add attr:class="grid-form">
                <label title="Also the Compose project name">
                    "Name" <input name="name" placeholder="shop" required />
                </label>
                <label>
                    "Server"
                    <select name="agent_id" required>
                        <Transition fallback=|| ()>
                            {move || Suspend::new(async move {
                                agents
                                    .await
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|agent| {
                                        view! { <option value=agent.id.to_string()>{agent.name}</option> }
                                    })
                                    .collect_view()
                            })}
                        </Transition>
                    </select>
                </label>
                <label>
                    "Directory on the server" <input name="path" placeholder="/srv/shop" required />
                </label>
                <label>
                    "Compose file (optional)"
                    <input name="compose_file" placeholder="compose.yaml" />
                </label>
                <label>
                    "Images" <PullPolicySelect name="pull_policy" selected=PullPolicy::Missing />
                </label>
                <SubmitRow
                    label="Add project"
                    pending=add.pending()
                    error=Signal::derive(move || add.value().get().and_then(Result::err))
                />
            </ActionForm>
        </section>
    }
}

#[component]
fn ProjectTable(
    projects: Vec<Project>,
    summary: impl Fn(ProjectId) -> Option<String> + Clone + Send + Sync + 'static,
) -> impl IntoView {
    view! {
        <table>
            <thead>
                <tr>
                    <th>"Name"</th>
                    <th>"Containers"</th>
                    <th>"Directory"</th>
                    <th>"Compose file"</th>
                </tr>
            </thead>
            <tbody>
                {projects
                    .into_iter()
                    .map(|project| {
                        let id = project.id;
                        let summary = summary.clone();
                        let name = project.name.to_string();
                        let marker = name.clone();
                        view! {
                            <tr data-project=marker>
                                <td class="name">
                                    <A href=format!("/projects/{id}")>{name}</A>
                                </td>
                                <td class="summary" data-summary>
                                    {move || summary(id).unwrap_or_else(|| "no containers".into())}
                                </td>
                                <td><code>{project.path.to_string()}</code></td>
                                <td>{project.compose_file.map_or_else(|| "default".into(), String::from)}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}
