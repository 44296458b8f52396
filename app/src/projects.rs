//! The Projects page: the person's compose projects with a live summary of their containers
//! ("3/3 running", "worker exited (1)"), and a form to add one.
// `add_project` takes one argument per field of the Add-project form, which posts them as they
// are; the server-function macro repeats them in code an item attribute does not reach.
#![allow(clippy::too_many_arguments)]

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
/// The form sends the fields of the source it shows (the others are disabled): a repository
/// makes a Git project.
#[server]
pub async fn add_project(
    name: String,
    agent_id: String,
    #[server(default)] path: String,
    compose_file: String,
    #[server(default)] git_url: String,
    #[server(default)] git_ref: String,
    #[server(default)] subdir: String,
    #[server(default)] pull_policy: String,
    #[server(default)] target: String,
    #[server(default)] secrets_as: String,
) -> Result<Project, ServerFnError> {
    let name = shared::ProjectName::parse(name.trim())
        .map_err(|error| ServerFnError::new(format!("Name: {error}")))?;
    let agent_id = agent_id
        .parse::<shared::AgentId>()
        .map_err(|_| ServerFnError::new("Choose the server the project runs on."))?;
    let pull_policy = match pull_policy.trim() {
        "" => shared::registry::PullPolicy::default(),
        policy => shared::registry::PullPolicy::parse(policy)
            .ok_or_else(|| ServerFnError::new("Pull policy: choose missing or always."))?,
    };
    let target = match target.trim() {
        "" => shared::target::DeployTarget::default(),
        target => shared::target::DeployTarget::parse(target)
            .ok_or_else(|| ServerFnError::new("Target: choose compose or swarm."))?,
    };
    let secrets_as = match secrets_as.trim() {
        "" => shared::target::SecretsAs::default(),
        mode => shared::target::SecretsAs::parse(mode)
            .ok_or_else(|| ServerFnError::new("Secrets: choose environment or swarm_secrets."))?,
    };
    if !git_url.trim().is_empty() {
        let field = |what: &'static str| {
            move |error: shared::source::SourceError| ServerFnError::new(format!("{what}: {error}"))
        };
        let optional = |value: &str| {
            Some(value.trim())
                .filter(|value| !value.is_empty())
                .map(str::to_string)
        };
        let source = shared::source::GitSource {
            url: shared::source::GitUrl::parse(git_url).map_err(field("Repository"))?,
            git_ref: optional(&git_ref)
                .map(shared::source::GitRef::parse)
                .transpose()
                .map_err(field("Branch or tag"))?,
            subdir: optional(&subdir)
                .map(shared::source::RepoSubdir::parse)
                .transpose()
                .map_err(field("Directory in the repository"))?,
            compose_file: optional(&compose_file)
                .map(shared::ComposeFile::parse)
                .transpose()
                .map_err(|error| ServerFnError::new(format!("Compose file: {error}")))?,
        };
        let body = shared::api::CreateProject {
            name,
            agent_id,
            path: None,
            compose_file: None,
            source: Some(source),
            pull_policy,
            target,
            secrets_as,
        };
        return crate::call!(create_project, body);
    }
    let body = shared::api::CreateProject {
        name,
        agent_id,
        path: Some(
            shared::ProjectPath::parse(path.trim())
                .map_err(|error| ServerFnError::new(format!("Path: {error}")))?,
        ),
        compose_file: match compose_file.trim() {
            "" => None,
            file => Some(
                shared::ComposeFile::parse(file)
                    .map_err(|error| ServerFnError::new(format!("Compose file: {error}")))?,
            ),
        },
        source: None,
        pull_policy,
        target,
        secrets_as,
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
    // The form shows the fields of the chosen source.
    let from_git = RwSignal::new(false);
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
                    "Source"
                    <select on:change=move |event| from_git.set(event_target_value(&event) == "git")>
                        <option value="directory">"A folder on the server"</option>
                        <option value="git">"A Git repository"</option>
                    </select>
                </label>
                <label style:display=move || if from_git.get() { "none" } else { "" }>
                    "Directory on the server"
                    <input name="path" placeholder="/srv/shop" required=move || !from_git.get() disabled=move || from_git.get() />
                </label>
                <label style:display=move || if from_git.get() { "" } else { "none" }>
                    "Repository (https:// or ssh)"
                    <input name="git_url" placeholder="git@github.com:acme/shop.git" required=move || from_git.get() disabled=move || !from_git.get() />
                </label>
                <label style:display=move || if from_git.get() { "" } else { "none" }>
                    "Branch or tag (optional)" <input name="git_ref" placeholder="main" disabled=move || !from_git.get() />
                </label>
                <label style:display=move || if from_git.get() { "" } else { "none" }>
                    "Directory in the repository (optional)" <input name="subdir" placeholder="deploy" disabled=move || !from_git.get() />
                </label>
                <label>
                    "Compose file (optional)"
                    <input name="compose_file" placeholder="compose.yaml" />
                </label>
                <label>
                    "Images" <PullPolicySelect name="pull_policy" selected=PullPolicy::Missing />
                </label>
                <label>
                    "Target"
                    <select name="target">
                        <option value="compose" selected>"Compose on the server"</option>
                        <option value="swarm">"Docker Swarm stack (the agent runs on a manager)"</option>
                    </select>
                </label>
                <label>
                    "Secrets on Swarm"
                    <select name="secrets_as">
                        <option value="environment" selected>"As environment variables"</option>
                        <option value="swarm_secrets">"As Swarm secrets in /run/secrets/<KEY>"</option>
                    </select>
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
                    <th>"Target"</th>
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
                                <td class="target">
                                    {match project.target {
                                        shared::target::DeployTarget::Compose => "compose".to_string(),
                                        shared::target::DeployTarget::Swarm => {
                                            format!("swarm (secrets as {})", project.secrets_as)
                                        }
                                    }}
                                </td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}
