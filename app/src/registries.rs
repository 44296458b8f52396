//! The Images panel of the Project page: when a deploy pulls (the project's pull policy) and
//! the registry credentials it pulls and builds with, added and removed here and never shown
//! again once saved.

use crate::widgets::{format_time, ErrorLine, Loaded, SubmitRow, Table};
use leptos::prelude::*;
use shared::registry::{PullPolicy, RegistryCredentialSummary};
use shared::ProjectId;

#[server]
pub async fn list_registry_credentials(
    project: ProjectId,
) -> Result<Vec<RegistryCredentialSummary>, ServerFnError> {
    crate::call!(list_registry_credentials, project)
}

/// Sets (or replaces) the project's credential for one registry; every field is checked on the
/// server.
#[server]
pub async fn add_registry_credential(
    project: ProjectId,
    registry: String,
    username: String,
    password: String,
) -> Result<RegistryCredentialSummary, ServerFnError> {
    let body = shared::registry::SetRegistryCredential {
        registry: shared::RegistryHost::parse(registry.trim())
            .map_err(|error| ServerFnError::new(format!("Registry: {error}")))?,
        username: shared::RegistryUsername::parse(username.trim())
            .map_err(|error| ServerFnError::new(format!("Username: {error}")))?,
        password: shared::SecretValue::new(password),
    };
    crate::call!(set_registry_credential, project, body)
}

#[server]
pub async fn remove_registry_credential(
    project: ProjectId,
    registry: String,
) -> Result<(), ServerFnError> {
    let registry = shared::RegistryHost::parse(registry)
        .map_err(|error| ServerFnError::new(format!("Registry: {error}")))?;
    crate::call!(delete_registry_credential, project, registry)
}

/// `policy` is `missing` or `always`.
#[server]
pub async fn change_pull_policy(
    project: ProjectId,
    policy: String,
) -> Result<shared::api::Project, ServerFnError> {
    let policy = PullPolicy::parse(&policy)
        .ok_or_else(|| ServerFnError::new("Pull policy: choose missing or always."))?;
    crate::call!(set_pull_policy, project, policy)
}

/// The pull policy select, with both choices explained, for this panel and the Projects page's
/// form; `name` is the form field.
#[component]
pub fn PullPolicySelect(name: &'static str, selected: PullPolicy) -> impl IntoView {
    view! {
        <select name=name>
            <option value="missing" selected=selected == PullPolicy::Missing>
                "Pull missing images only"
            </option>
            <option value="always" selected=selected == PullPolicy::Always>
                "Always pull (picks up a new :latest)"
            </option>
        </select>
    }
}

/// The project's pull policy and registry credentials.
#[component]
pub fn Images(project: ProjectId, policy: PullPolicy) -> impl IntoView {
    let credentials = Resource::new(move || project, list_registry_credentials);
    let add = ServerAction::<AddRegistryCredential>::new();
    let remove = ServerAction::<RemoveRegistryCredential>::new();
    let change = ServerAction::<ChangePullPolicy>::new();
    Effect::new(move |_| {
        if add.value().get().is_some_and(|result| result.is_ok())
            || remove.value().get().is_some_and(|result| result.is_ok())
        {
            credentials.refetch();
        }
    });
    let current = move || {
        change
            .value()
            .get()
            .and_then(Result::ok)
            .map_or(policy, |project| project.pull_policy)
    };

    let row = move |credential: RegistryCredentialSummary| {
        let registry = credential.registry.to_string();
        let to_remove = registry.clone();
        let label = registry.clone();
        view! {
            <tr data-registry=registry>
                <td><code>{label}</code></td>
                <td>{credential.username.to_string()}</td>
                <td class="muted">{format_time(credential.updated_at)}</td>
                <td>
                    <button
                        class="btn btn-quiet"
                        type="button"
                        disabled=move || remove.pending().get()
                        on:click=move |_| {
                            remove.dispatch(RemoveRegistryCredential {
                                project,
                                registry: to_remove.clone(),
                            });
                        }
                    >
                        "Remove"
                    </button>
                </td>
            </tr>
        }
    };

    view! {
        <section class="panel" data-panel="images">
            <h2>"Images"</h2>
            <ActionForm action=change attr:class="inline-form">
                <input type="hidden" name="project" value=project.to_string() />
                <label>
                    "Pull policy " <PullPolicySelect name="policy" selected=policy />
                </label>
                <SubmitRow
                    label="Save"
                    pending=change.pending()
                    error=Signal::derive(move || change.value().get().and_then(Result::err))
                />
            </ActionForm>
            <p class="muted" data-pull-policy=move || current().as_str()>
                {move || match current() {
                    PullPolicy::Missing => "Each deploy pulls only the images this host lacks; services with build: are built.",
                    PullPolicy::Always => "Each deploy pulls every image again, so a tag pushed anew runs; services with build: are built.",
                }}
            </p>
            <h3>"Registry credentials"</h3>
            <p class="muted">
                "Used to pull and build; stored encrypted, never shown again. They win over the server's for the same registry."
            </p>
            <Loaded
                loading="Loading credentials…"
                empty="No registry credentials."
                list=credentials
                table={move |list: Vec<RegistryCredentialSummary>| {
                    view! {
                        <Table class="registries" headings=&["Registry", "Username", "Set", ""]>
                            {list.into_iter().map(row).collect_view()}
                        </Table>
                    }
                }}
            />
            <ErrorLine error=Signal::derive(move || remove.value().get().and_then(Result::err)) />
            <h3>"Add registry credentials"</h3>
            <ActionForm action=add attr:class="grid-form">
                <input type="hidden" name="project" value=project.to_string() />
                <label>
                    "Registry" <input name="registry" placeholder="ghcr.io" required />
                </label>
                <label>"Username" <input name="username" autocomplete="off" required /></label>
                <label>
                    "Password or token"
                    <input name="password" type="password" autocomplete="off" required />
                </label>
                <SubmitRow
                    label="Save credentials"
                    pending=add.pending()
                    error=Signal::derive(move || add.value().get().and_then(Result::err))
                />
            </ActionForm>
        </section>
    }
}
