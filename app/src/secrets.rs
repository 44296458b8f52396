//! The Secrets panel of the Project page: masked values, reveal on request (audited), add,
//! change and delete, and each secret's earlier values.
//!
//! The scope selector lists the services the agent finds in the compose file. That list is read
//! in the browser, never while the page is rendered (a slow agent would hold the page up), and a
//! failure is shown with its reason and retried by itself with a growing delay, and again as soon
//! as the agent (re)connects, so it cannot silently stay at "Global".

use crate::widgets::{error_text, format_time, Loaded, SubmitRow, Table};
use leptos::prelude::*;
use shared::api::{SecretSummary, SecretVersion};
use shared::{ProjectId, SecretId, SecretScope, ServiceName};

/// The values a secret has had, newest first, hidden.
#[server]
pub async fn secret_versions(id: SecretId) -> Result<Vec<SecretVersion>, ServerFnError> {
    crate::call!(secret_versions, id)
}

/// One earlier value of a secret; the server records who revealed it.
#[server]
pub async fn reveal_secret_version(id: SecretId, version: i64) -> Result<String, ServerFnError> {
    let revealed: shared::api::RevealedSecret = crate::call!(reveal_secret_version, id, version)?;
    Ok(revealed.value.expose().to_string())
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

/// The secret manager: masked values, reveal on request, add, change and delete.
#[component]
pub fn Secrets(
    project: ProjectId,
    /// Bumped by the page when the live feed (re)opens or the project's agent connects: the
    /// service list is read again.
    agent_back: ReadSignal<u64>,
) -> impl IntoView {
    let secrets = Resource::new(move || project, list_secrets);
    let services = ServiceList::new(project, agent_back);
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
            <Loaded
                loading="Loading secrets…"
                empty="No secrets yet."
                list=secrets
                table={move |list: Vec<SecretSummary>| {
                    view! {
                        <Table class="secrets" headings=&["Key", "Scope", "Value", ""]>
                            {list
                                .into_iter()
                                .map(|secret| view! { <SecretRow secret changed /> })
                                .collect_view()}
                        </Table>
                    }
                }}
            />
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
                        // Keyed: a list read again keeps the options it still has, and with
                        // them the one chosen (a redrawn option is not selected, and the
                        // browser would fall back to Global).
                        <For each=move || services.names() key=|service| service.clone() let:service>
                            <option value=service.to_string()>{format!("Service {service}")}</option>
                        </For>
                    </select>
                </label>
                {move || services.hint()}
                <SubmitRow
                    label="Add secret"
                    pending=add.pending()
                    error=Signal::derive(move || add.value().get().and_then(Result::err))
                />
            </ActionForm>
        </section>
    }
}

/// The services of the compose file, read by the agent, with a visible state while they are
/// unknown and retries that need nobody.
#[derive(Clone, Copy)]
struct ServiceList {
    /// `None` while reading; then the services or why they are unknown.
    result: RwSignal<Option<Result<Vec<ServiceName>, String>>>,
    /// Seconds until the next try after a failure.
    retry_in: RwSignal<u64>,
    /// Bumped to read again.
    again: RwSignal<u64>,
}

impl ServiceList {
    fn new(project: ProjectId, agent_back: ReadSignal<u64>) -> Self {
        let list = Self {
            result: RwSignal::new(None),
            retry_in: RwSignal::new(0),
            again: RwSignal::new(0),
        };
        // Read in the browser only: rendering the page never waits for the agent.
        #[cfg(feature = "hydrate")]
        {
            let failures = StoredValue::new(0u32);
            let generation = StoredValue::new(0u64);
            Effect::new(move |_| {
                agent_back.track();
                list.again.track();
                let this_try = generation.get_value() + 1;
                generation.set_value(this_try);
                // A list already read stays while it is read again (the agent came back, the
                // feed reopened): taking its options away would drop the scope a person chose.
                if !matches!(list.result.get_untracked(), Some(Ok(_))) {
                    list.result.set(None);
                }
                leptos::task::spawn_local(async move {
                    let answer = project_services(project).await.map_err(|e| error_text(&e));
                    // The page may be gone by now (its values with it), or a newer read started.
                    if generation.try_get_value() != Some(this_try) {
                        return;
                    }
                    match &answer {
                        Ok(_) => failures.set_value(0),
                        Err(_) => {
                            let failed = failures.try_get_value().unwrap_or(0) + 1;
                            failures.set_value(failed);
                            let delay = (1u64 << failed.min(5)).min(30);
                            list.retry_in.set(delay);
                            set_timeout(
                                move || {
                                    if generation.try_get_value() == Some(this_try) {
                                        list.again.try_update(|again| *again += 1);
                                    }
                                },
                                std::time::Duration::from_secs(delay),
                            );
                        }
                    }
                    list.result.try_set(Some(answer));
                });
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (project, agent_back);
        list
    }

    fn names(&self) -> Vec<ServiceName> {
        match self.result.get() {
            Some(Ok(names)) => names,
            _ => Vec::new(),
        }
    }

    fn hint(self) -> impl IntoView {
        match self.result.get() {
            None => Some(
                view! {
                    <p class="muted hint" role="status" data-services="reading">
                        "Reading the services from the compose file…"
                    </p>
                }
                .into_any(),
            ),
            Some(Ok(_)) => None,
            Some(Err(reason)) => Some(
                view! {
                    <p class="muted hint" role="status" data-services="unknown">
                        "Only Global for now: the services are unknown (" {reason} "). Trying again in "
                        {self.retry_in.get()} " s. "
                        <button
                            type="button"
                            class="btn btn-quiet"
                            on:click=move |_| self.again.update(|again| *again += 1)
                        >
                            "Retry now"
                        </button>
                    </p>
                }
                .into_any(),
            ),
        }
    }
}

#[component]
fn SecretRow(
    secret: SecretSummary,
    changed: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let id = secret.id;
    let revealed = RwSignal::new(None::<String>);
    let history = RwSignal::new(false);
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
                <button class="btn btn-quiet" on:click=move |_| history.update(|open| *open = !*open)>
                    {move || if history.get() { "Hide history" } else { "History" }}
                </button>
                <button class="btn btn-danger" on:click=delete>
                    {move || if armed.get() { "Confirm delete" } else { "Delete" }}
                </button>
            </td>
        </tr>
        <Show when=move || history.get()>
            <tr class="versions">
                <td colspan="4">
                    <Versions secret=id />
                </td>
            </tr>
        </Show>
    }
    .into_any()
}

/// The values a secret has had: who set each and when, each revealed on request (audited).
#[component]
fn Versions(secret: SecretId) -> impl IntoView {
    let versions = Resource::new(move || secret, secret_versions);
    view! {
        <Transition fallback=|| view! { <p class="muted">"Loading the history…"</p> }>
            {move || Suspend::new(async move {
                match versions.await {
                    Ok(list) if list.is_empty() => {
                        view! { <p class="muted">"No earlier values are kept for this secret."</p> }.into_any()
                    }
                    Ok(list) => view! {
                        <ol class="versions" reversed>
                            {list
                                .into_iter()
                                .map(|version| view! { <VersionRow secret version /> })
                                .collect_view()}
                        </ol>
                    }
                        .into_any(),
                    Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn VersionRow(secret: SecretId, version: SecretVersion) -> impl IntoView {
    let number = version.version;
    let revealed = RwSignal::new(None::<Result<String, String>>);
    let reveal = move |_| {
        if revealed.get_untracked().is_some() {
            revealed.set(None);
            return;
        }
        leptos::task::spawn_local(async move {
            let answer = reveal_secret_version(secret, number)
                .await
                .map_err(|error| error_text(&error));
            revealed.set(Some(answer));
        });
    };
    view! {
        <li data-version=number>
            <span>{format!("v{number}")}</span>
            " "
            <span class="muted">
                {format_time(version.created_at)}
                {version.created_by.map(|login| format!(" by {login}"))}
            </span>
            {version.current.then(|| view! { " " <span class="badge">"current"</span> })}
            " "
            <code>
                {move || match revealed.get() {
                    Some(Ok(value)) => value,
                    _ => "••••••••".into(),
                }}
            </code>
            " "
            <button class="btn btn-quiet" on:click=reveal>
                {move || if revealed.get().is_some() { "Hide" } else { "Reveal" }}
            </button>
            {move || match revealed.get() {
                Some(Err(message)) => Some(view! { <span class="error" role="alert">{message}</span> }),
                _ => None,
            }}
        </li>
    }
    .into_any()
}
