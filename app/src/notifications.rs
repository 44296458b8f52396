//! The Notifications page: the person's channels (a signed webhook, Slack, Discord, ntfy), a
//! form to add one, "Send test", and each channel's last deliveries. Also
//! [`ProjectNotifications`], the channel × event grid a project page shows.

use crate::widgets::{error_text, format_time, ErrorLine, Loaded, SubmitRow, Table};
use leptos::prelude::*;
use shared::notify::{
    ChannelCreated, ChannelId, ChannelKind, ChannelSummary, Delivery, DeliveryStatus,
    NotificationEvent, ProjectNotifications as Rules, TestQueued,
};
use shared::ProjectId;
use std::collections::BTreeSet;

#[server]
pub async fn list_channels() -> Result<Vec<ChannelSummary>, ServerFnError> {
    crate::call!(list_channels)
}

/// Adds a channel; the server checks the URL and names what is wrong with it.
#[server]
pub async fn add_channel(
    kind: String,
    name: String,
    url: String,
    token: String,
) -> Result<ChannelCreated, ServerFnError> {
    let body = shared::notify::CreateChannel {
        kind: ChannelKind::parse(&kind)
            .ok_or_else(|| ServerFnError::new("Choose the kind of channel."))?,
        name,
        url,
        token: Some(token).filter(|token| !token.trim().is_empty()),
    };
    crate::call!(create_channel, body)
}

#[server]
pub async fn delete_channel(id: ChannelId) -> Result<(), ServerFnError> {
    crate::call!(delete_channel, id)
}

#[server]
pub async fn test_channel(id: ChannelId) -> Result<TestQueued, ServerFnError> {
    crate::call!(test_channel, id)
}

#[server]
pub async fn channel_deliveries(id: ChannelId) -> Result<Vec<Delivery>, ServerFnError> {
    crate::call!(channel_deliveries, id)
}

#[server]
pub async fn project_notifications(project: ProjectId) -> Result<Rules, ServerFnError> {
    crate::call!(project_notifications, project)
}

/// Saves a project's rules; `cells` lists the ticked boxes as `<channel id>:<event>`,
/// comma-separated.
#[server]
pub async fn save_project_notifications(
    project: ProjectId,
    cells: String,
) -> Result<Rules, ServerFnError> {
    let mut rules = std::collections::BTreeMap::<ChannelId, Vec<NotificationEvent>>::new();
    for cell in cells.split(',').filter(|cell| !cell.is_empty()) {
        let parsed = cell.split_once(':').and_then(|(channel, event)| {
            Some((channel.parse().ok()?, NotificationEvent::parse(event)?))
        });
        let (channel, event) =
            parsed.ok_or_else(|| ServerFnError::new(format!("Unknown choice {cell:?}.")))?;
        rules.entry(channel).or_default().push(event);
    }
    let body = Rules {
        rules: rules
            .into_iter()
            .map(|(channel_id, events)| shared::notify::ChannelRule { channel_id, events })
            .collect(),
    };
    crate::call!(set_project_notifications, project, body)
}

#[component]
pub fn NotificationsPage() -> impl IntoView {
    let add = ServerAction::<AddChannel>::new();
    let delete = ServerAction::<DeleteChannel>::new();
    let test = ServerAction::<TestChannel>::new();
    let channels = Resource::new(
        move || (add.version().get(), delete.version().get()),
        |_| list_channels(),
    );
    // The channel whose deliveries are shown.
    let shown = RwSignal::new(None::<ChannelId>);

    view! {
        <section class="panel">
            <div class="panel-head">
                <h1>"Notifications"</h1>
                <button class="btn" on:click=move |_| channels.refetch()>
                    "Refresh"
                </button>
            </div>
            <p class="muted">
                "Where Stagely tells you about deploys, servers going offline and services that stop. Each project chooses which events go to which channel."
            </p>
            <Loaded
                loading="Loading channels…"
                empty="No channels yet: add one below."
                list=channels
                table={move |list: Vec<ChannelSummary>| view! { <ChannelTable channels=list shown test delete /> }}
            />
            <ErrorLine error=Signal::derive(move || {
                test.value()
                    .get()
                    .and_then(Result::err)
                    .or_else(|| delete.value().get().and_then(Result::err))
            }) />
            <SigningSecret add />
        </section>
        <AddChannelForm add />
        {move || shown.get().map(|id| view! { <Deliveries id test /> })}
    }
}

#[component]
fn ChannelTable(
    channels: Vec<ChannelSummary>,
    shown: RwSignal<Option<ChannelId>>,
    test: ServerAction<TestChannel>,
    delete: ServerAction<DeleteChannel>,
) -> impl IntoView {
    // The channel whose Delete was clicked once: the next click deletes it.
    let armed = RwSignal::new(None::<ChannelId>);
    view! {
        <Table class="channels" headings=&["Name", "Kind", "Sends to", ""]>
                    {channels
                        .into_iter()
                        .map(|channel| {
                            let id = channel.id;
                            view! {
                                <tr>
                                    <td class="name">{channel.name}</td>
                                    <td>{channel.kind.label()}</td>
                                    <td><code>{channel.target}</code></td>
                                    <td class="actions">
                                        <button
                                            class="btn"
                                            disabled=move || test.pending().get()
                                            on:click=move |_| {
                                                shown.set(Some(id));
                                                test.dispatch(TestChannel { id });
                                            }
                                        >
                                            "Send test"
                                        </button>
                                        <button class="btn" on:click=move |_| shown.set(Some(id))>
                                            "Deliveries"
                                        </button>
                                        <button
                                            class="btn btn-danger"
                                            on:click=move |_| {
                                                // The first click arms, the second deletes.
                                                if armed.get_untracked() != Some(id) {
                                                    armed.set(Some(id));
                                                    return;
                                                }
                                                armed.set(None);
                                                if shown.get_untracked() == Some(id) {
                                                    shown.set(None);
                                                }
                                                delete.dispatch(DeleteChannel { id });
                                            }
                                        >
                                            {move || if armed.get() == Some(id) { "Confirm delete" } else { "Delete" }}
                                        </button>
                                    </td>
                                </tr>
                            }
                        })
                        .collect_view()}
        </Table>
    }
}

/// A new webhook channel's signing secret, shown once.
#[component]
fn SigningSecret(add: ServerAction<AddChannel>) -> impl IntoView {
    move || {
        let created = add.value().get()?.ok()?;
        let secret = created.signing_secret?;
        Some(view! {
            <div class="join" role="status">
                <p>
                    "Signing secret of "<strong>{created.channel.name}</strong>
                    ": copy it now, it is not shown again. Check "<code>"X-Stagely-Signature"</code>
                    " (sha256=HMAC-SHA256 of the body with this secret)."
                </p>
                <div class="command">
                    <pre class="signing-secret">{secret}</pre>
                </div>
            </div>
        })
    }
}

#[component]
fn AddChannelForm(add: ServerAction<AddChannel>) -> impl IntoView {
    view! {
        <section class="panel">
            <h2>"Add a channel"</h2>
            <ActionForm action=add attr:class="grid-form">
                <label>
                    "Kind"
                    <select name="kind" required>
                        {ChannelKind::ALL
                            .into_iter()
                            .map(|kind| view! { <option value=kind.as_str()>{kind.label()}</option> })
                            .collect_view()}
                    </select>
                </label>
                <label>"Name" <input name="name" placeholder="team chat" required /></label>
                <label title="The webhook, Slack or Discord URL, or the ntfy topic URL; kept encrypted">
                    "URL" <input name="url" type="url" placeholder="https://…" required />
                </label>
                <label title="ntfy only: sent as a Bearer token">
                    "Access token (ntfy, optional)"
                    <input name="token" type="password" autocomplete="off" />
                </label>
                <SubmitRow
                    label="Add channel"
                    pending=add.pending()
                    error=Signal::derive(move || add.value().get().and_then(Result::err))
                />
            </ActionForm>
        </section>
    }
}

/// The last deliveries of one channel, newest first.
#[component]
fn Deliveries(id: ChannelId, test: ServerAction<TestChannel>) -> impl IntoView {
    let deliveries = Resource::new(
        move || test.version().get(),
        move |_| channel_deliveries(id),
    );
    view! {
        <section class="panel">
            <div class="panel-head">
                <h2>"Last deliveries"</h2>
                <button class="btn" on:click=move |_| deliveries.refetch()>
                    "Refresh"
                </button>
            </div>
            <Loaded
                loading="Loading deliveries…"
                empty="Nothing sent to this channel yet."
                list=deliveries
                table={|list: Vec<Delivery>| view! { <DeliveryTable deliveries=list /> }}
            />
        </section>
    }
}

#[component]
fn DeliveryTable(deliveries: Vec<Delivery>) -> impl IntoView {
    view! {
        <Table class="deliveries" headings=&["When", "Event", "Title", "Status", "Attempts", "HTTP", "Error"]>
                    {deliveries
                        .into_iter()
                        .map(|delivery| {
                            let badge = match delivery.status {
                                DeliveryStatus::Delivered => "badge badge-succeeded",
                                DeliveryStatus::Failed => "badge badge-failed",
                                DeliveryStatus::Pending => "badge badge-running",
                            };
                            view! {
                                <tr>
                                    <td>{format_time(delivery.created_at)}</td>
                                    <td>{delivery.event.label()}</td>
                                    <td>{delivery.title}</td>
                                    <td><span class=badge>{delivery.status.as_str()}</span></td>
                                    <td>{delivery.attempts}</td>
                                    <td>{delivery.http_status.map(|code| code.to_string())}</td>
                                    <td class="error">{delivery.last_error}</td>
                                </tr>
                            }
                        })
                        .collect_view()}
        </Table>
    }
}

/// Which events of `project` go to which of the person's channels: a checkbox per channel and
/// event, saved with one button.
#[component]
pub fn ProjectNotifications(project: ProjectId) -> impl IntoView {
    let channels = Resource::new(|| (), |_| list_channels());
    let rules = Resource::new(move || project, project_notifications);
    let save = ServerAction::<SaveProjectNotifications>::new();
    let ticked = RwSignal::new(BTreeSet::<(ChannelId, NotificationEvent)>::new());
    Effect::new(move |_| {
        let loaded = save
            .value()
            .get()
            .and_then(Result::ok)
            .or_else(|| rules.get().and_then(Result::ok));
        if let Some(loaded) = loaded {
            ticked.set(
                loaded
                    .rules
                    .iter()
                    .flat_map(|rule| rule.events.iter().map(|event| (rule.channel_id, *event)))
                    .collect(),
            );
        }
    });
    let submit = move |_| {
        let cells = ticked.with_untracked(|ticked| {
            ticked
                .iter()
                .map(|(channel, event)| format!("{channel}:{}", event.as_str()))
                .collect::<Vec<_>>()
                .join(",")
        });
        save.dispatch(SaveProjectNotifications { project, cells });
    };

    view! {
        <section class="panel project-notifications">
            <h2>"Notifications"</h2>
            <Transition fallback=|| view! { <p class="muted">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let channels = match channels.await {
                        Ok(channels) => channels,
                        Err(error) => {
                            return view! { <p class="error">{error_text(&error)}</p> }.into_any();
                        }
                    };
                    // The boxes show once the saved choices are in too: a box ticked before
                    // they arrived would be unticked by them.
                    if let Err(error) = rules.await {
                        return view! { <p class="error">{error_text(&error)}</p> }.into_any();
                    }
                    if channels.is_empty() {
                        return view! {
                            <p class="muted">
                                "No notification channels yet: add one on the "
                                <a href="/notifications">"Notifications"</a>" page."
                            </p>
                        }
                            .into_any();
                    }
                    view! {
                        <div class="table-scroll">
                            <table class="notification-grid">
                                <thead>
                                    <tr>
                                        <th>"Channel"</th>
                                        {NotificationEvent::CHOOSABLE
                                            .into_iter()
                                            .map(|event| view! { <th>{event.label()}</th> })
                                            .collect_view()}
                                    </tr>
                                </thead>
                                <tbody>
                                    {channels
                                        .into_iter()
                                        .map(|channel| {
                                            let id = channel.id;
                                            let name = channel.name.clone();
                                            view! {
                                                <tr>
                                                    <td class="name">{channel.name}</td>
                                                    {NotificationEvent::CHOOSABLE
                                                        .into_iter()
                                                        .map(|event| {
                                                            let cell = (id, event);
                                                            view! {
                                                                <td>
                                                                    <input
                                                                        type="checkbox"
                                                                        aria-label=format!("{name}: {}", event.label())
                                                                        prop:checked=move || ticked.with(|t| t.contains(&cell))
                                                                        on:change=move |ev| {
                                                                            let on = event_target_checked(&ev);
                                                                            ticked.update(|t| {
                                                                                if on {
                                                                                    t.insert(cell);
                                                                                } else {
                                                                                    t.remove(&cell);
                                                                                }
                                                                            });
                                                                        }
                                                                    />
                                                                </td>
                                                            }
                                                        })
                                                        .collect_view()}
                                                </tr>
                                            }
                                        })
                                        .collect_view()}
                                </tbody>
                            </table>
                        </div>
                    }
                        .into_any()
                })}
            </Transition>
            <div class="form-actions">
                <button
                    class="btn btn-primary"
                    disabled=move || save.pending().get()
                    on:click=submit
                >
                    "Save notifications"
                </button>
                {move || {
                    match save.value().get() {
                        Some(Err(error)) => {
                            Some(view! { <p class="error" role="alert">{error_text(&error)}</p> }.into_any())
                        }
                        Some(Ok(_)) => Some(view! { <p class="muted" role="status">"Saved."</p> }.into_any()),
                        None => None,
                    }
                }}
            </div>
        </section>
    }
}
