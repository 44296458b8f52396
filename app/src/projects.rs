//! The Projects page: the person's compose projects, and a form to add one.

use crate::servers::list_agents;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_navigate;
use shared::api::Project;

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
) -> Result<Project, ServerFnError> {
    let body = shared::api::CreateProject {
        name: shared::ProjectName::parse(name.trim())
            .map_err(|error| ServerFnError::new(format!("Name: {error}")))?,
        agent_id: agent_id
            .parse::<shared::AgentId>()
            .map_err(|_| ServerFnError::new("Choose the server the project runs on."))?,
        path: path.trim().to_string(),
        compose_file: Some(compose_file.trim().to_string()).filter(|file| !file.is_empty()),
    };
    crate::call!(create_project, body)
}

#[component]
pub fn ProjectsPage() -> impl IntoView {
    let projects = Resource::new(|| (), |_| list_projects());
    let agents = Resource::new(|| (), |_| list_agents());
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
                        Ok(list) => view! { <ProjectTable projects=list /> }.into_any(),
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
fn ProjectTable(projects: Vec<Project>) -> impl IntoView {
    view! {
        <table>
            <thead>
                <tr>
                    <th>"Name"</th>
                    <th>"Directory"</th>
                    <th>"Compose file"</th>
                </tr>
            </thead>
            <tbody>
                {projects
                    .into_iter()
                    .map(|project| {
                        view! {
                            <tr>
                                <td class="name">
                                    <A href=format!("/projects/{}", project.id)>{project.name.to_string()}</A>
                                </td>
                                <td><code>{project.path}</code></td>
                                <td>{project.compose_file.unwrap_or_else(|| "default".into())}</td>
                            </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
    }
}

/// A form's submit button, disabled while the form is sent, with the server's error beside it.
#[component]
pub fn SubmitRow(
    label: &'static str,
    #[prop(into)] pending: Signal<bool>,
    #[prop(into)] error: Signal<Option<ServerFnError>>,
) -> impl IntoView {
    view! {
        <div class="form-actions">
            <button class="btn btn-primary" type="submit" disabled=move || pending.get()>
                {label}
            </button>
            {move || {
                error
                    .get()
                    .map(|error| view! { <p class="error" role="alert">{error_text(&error)}</p> })
            }}
        </div>
    }
}

/// A server function's error as the person should read it (without the "error running
/// server function" wrapping).
pub fn error_text(error: &ServerFnError) -> String {
    match error {
        ServerFnError::ServerError(message) => message.clone(),
        other => other.to_string(),
    }
}
