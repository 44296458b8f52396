//! The Push webhook panel of the Project page: the hook's URL with a copy button, its secret
//! shown once when the hook is created or its secret rotated, and its latest deliveries (time,
//! sender, event, what became of it).

use crate::widgets::{error_text, format_time};
use leptos::prelude::*;
use shared::webhooks::{Webhook, WebhookCreated};
use shared::ProjectId;

/// The project's hook, `None` if it has none.
#[server]
pub async fn get_webhook(project: ProjectId) -> Result<Option<Webhook>, ServerFnError> {
    crate::call!(webhook, project)
}

/// Creates the project's hook; its secret is in the answer, this once.
#[server]
pub async fn create_webhook(project: ProjectId) -> Result<WebhookCreated, ServerFnError> {
    crate::call!(create_webhook, project)
}

/// Replaces the hook's secret; the new one is in the answer, this once.
#[server]
pub async fn rotate_webhook(project: ProjectId) -> Result<WebhookCreated, ServerFnError> {
    crate::call!(rotate_webhook, project)
}

/// A button that copies `text` to the clipboard and says so.
#[component]
fn CopyButton(text: String, label: &'static str) -> impl IntoView {
    let copied = RwSignal::new(false);
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        {
            let clipboard = window().navigator().clipboard();
            let _ = clipboard.write_text(&text);
            copied.set(true);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (&text, copied);
    };
    view! {
        <button class="btn" aria-label=label on:click=copy>
            {move || if copied.get() { "Copied" } else { "Copy" }}
        </button>
    }
}

/// The panel. `changed` moves each time the page's job history is read (a push started a
/// deploy, a job ended), so the deliveries follow without a reload.
#[component]
pub fn WebhookPanel(project: ProjectId, #[prop(into)] changed: Signal<usize>) -> impl IntoView {
    let reload = RwSignal::new(0u64);
    let hook = Resource::new(
        move || (project, changed.get(), reload.get()),
        |(project, _, _)| get_webhook(project),
    );
    // The secret of the last create or rotate, shown until the page is left.
    let shown = RwSignal::new(None::<String>);
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);
    let armed = RwSignal::new(false);
    let run = move |rotate: bool| {
        if pending.get_untracked() {
            return;
        }
        if rotate && !armed.get_untracked() {
            armed.set(true);
            return;
        }
        armed.set(false);
        pending.set(true);
        leptos::task::spawn_local(async move {
            let result = if rotate {
                rotate_webhook(project).await
            } else {
                create_webhook(project).await
            };
            pending.try_set(false);
            match result {
                Ok(created) => {
                    error.try_set(None);
                    shown.try_set(Some(created.secret.expose().to_string()));
                    reload.try_update(|reload| *reload += 1);
                }
                Err(failure) => {
                    error.try_set(Some(error_text(&failure)));
                }
            }
        });
    };
    view! {
        <section class="panel" data-testid="webhook">
            <h2>"Push webhook"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading the webhook…"</p> }>
                {move || Suspend::new(async move {
                    match hook.await {
                        Ok(None) => view! {
                            <p class="muted">
                                "Deploy on every push: create a webhook and paste its URL and secret into GitHub, GitLab, Gitea or Forgejo, or POST to it with the secret as a Bearer token."
                            </p>
                            <button class="btn btn-primary" disabled=move || pending.get() on:click=move |_| run(false)>
                                "Create webhook"
                            </button>
                        }
                            .into_any(),
                        Ok(Some(hook)) => view! {
                            <HookView hook />
                            <button
                                class="btn btn-quiet"
                                title="A new secret; the old one stops working at once"
                                disabled=move || pending.get()
                                on:click=move |_| run(true)
                            >
                                {move || if armed.get() { "Confirm: rotate secret" } else { "Rotate secret" }}
                            </button>
                        }
                            .into_any(),
                        Err(failure) => view! { <p class="error">{error_text(&failure)}</p> }.into_any(),
                    }
                })}
            </Transition>
            {move || shown.get().map(|secret| view! {
                <div class="command" data-testid="webhook-secret">
                    <p>
                        "The secret, shown only now: GitHub's and Gitea's “Secret”, GitLab's “Secret token”, or "
                        <code>"Authorization: Bearer …"</code> "."
                    </p>
                    <pre><code data-testid="webhook-secret-value">{secret.clone()}</code></pre>
                    <CopyButton text=secret label="Copy the secret" />
                </div>
            })}
            {move || error.get().map(|message| view! { <p class="error" role="alert">{message}</p> })}
        </section>
    }
}

#[component]
fn HookView(hook: Webhook) -> impl IntoView {
    let deliveries = hook.deliveries.clone();
    view! {
        <div class="command">
            <pre><code data-testid="webhook-url">{hook.url.clone()}</code></pre>
            <CopyButton text=hook.url.clone() label="Copy the webhook URL" />
        </div>
        {hook.deploy_pending.then(|| view! {
            <p class="muted" data-testid="webhook-pending">
                "A push arrived while a deploy was running: its commit deploys when that ends."
            </p>
        })}
        {if deliveries.is_empty() {
            view! { <p class="muted">"No deliveries yet."</p> }.into_any()
        } else {
            view! {
                <table class="deliveries" data-testid="webhook-deliveries">
                    <thead>
                        <tr><th>"Received"</th><th>"From"</th><th>"Event"</th><th>"Outcome"</th></tr>
                    </thead>
                    <tbody>
                        {deliveries
                            .into_iter()
                            .map(|delivery| view! {
                                <tr data-outcome=delivery.outcome.as_str()>
                                    <td>{format_time(delivery.received_at)}</td>
                                    <td>{delivery.provider.as_str()}</td>
                                    <td>{delivery.event}</td>
                                    <td>{delivery.outcome.as_str()}</td>
                                </tr>
                            })
                            .collect_view()}
                    </tbody>
                </table>
            }
                .into_any()
        }}
    }
}
