//! The Servers page: every registered agent with its live status.

use crate::widgets::{format_time, SubmitRow};
use leptos::either::EitherOf3;
use leptos::prelude::*;
use shared::api::{AgentStatus, AgentSummary, JoinTokenCreated};
use shared::AgentId;
use std::collections::HashMap;

/// Every agent the person may see, with its live status.
#[server]
pub async fn list_agents() -> Result<Vec<AgentSummary>, ServerFnError> {
    crate::call!(list_agents)
}

/// A single-use join token for a new host, with the command and cloud-init file that use it.
#[server]
pub async fn add_server(name: String) -> Result<JoinTokenCreated, ServerFnError> {
    let name = match name.trim() {
        "" => None,
        name => Some(
            shared::AgentName::parse(name)
                .map_err(|error| ServerFnError::new(format!("Name: {error}")))?,
        ),
    };
    let body = shared::api::CreateJoinToken {
        name,
        expires_in_secs: None,
    };
    crate::call!(create_join_token, body)
}

/// Revokes an agent's token; its live session closes at once.
#[server]
pub async fn revoke_agent(id: AgentId) -> Result<(), ServerFnError> {
    crate::call!(revoke_agent, id)
}

#[component]
pub fn ServersPage() -> impl IntoView {
    let agents = Resource::new(|| (), |_| list_agents());
    // Statuses heard on the live feed since the list was loaded; they win over the list's.
    let live = RwSignal::new(HashMap::<AgentId, AgentStatus>::new());
    let revoke = ServerAction::<RevokeAgent>::new();
    Effect::new(move |_| {
        if revoke.version().get() > 0 {
            agents.refetch();
        }
    });

    // The listed ids, kept by an effect for the feed's handler (which may not read a resource).
    #[cfg(feature = "hydrate")]
    let known = {
        let known = StoredValue::new(std::collections::HashSet::<AgentId>::new());
        Effect::new(move |_| {
            if let Some(Ok(list)) = agents.get() {
                known.set_value(list.iter().map(|agent| agent.id).collect());
            }
        });
        known
    };
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        use crate::live::{close_on_cleanup, subscribe, Live};
        use shared::api::DashboardEvent;
        let feed = subscribe(
            std::rc::Rc::new(move |message| match message {
                Live::Opened | Live::Event(DashboardEvent::Resync) => {
                    live.update(HashMap::clear);
                    agents.refetch();
                }
                Live::Event(DashboardEvent::AgentStatus { agent_id, status }) => {
                    live.update(|statuses| {
                        statuses.insert(agent_id, status);
                    });
                    // A server that just joined is not in the list yet.
                    let listed = known.with_value(|known| known.contains(&agent_id));
                    if !listed {
                        agents.refetch();
                    }
                }
                Live::Event(_) => {}
            }),
            std::rc::Rc::new(|| None),
        );
        close_on_cleanup(feed);
    });

    view! {
        <section class="panel">
            <div class="panel-head">
                <h1>"Servers"</h1>
                <button class="btn" on:click=move |_| agents.refetch()>
                    "Refresh"
                </button>
            </div>
            <Transition fallback=|| view! { <p class="muted">"Loading servers…"</p> }>
                {move || Suspend::new(async move {
                    // `EitherOf3` rather than `.into_any()`: an `AnyView` carries every
                    // way of rendering its view (build, hydrate, hydrate_async, …) into the WASM.
                    match agents.await {
                        Ok(list) if list.is_empty() => EitherOf3::A(view! { <EmptyServers /> }),
                        Ok(list) => EitherOf3::B(view! { <ServerTable agents=list live revoke /> }),
                        Err(error) => EitherOf3::C(view! { <p class="error">{error.to_string()}</p> }),
                    }
                })}
            </Transition>
            <AddServer />
            {move || {
                revoke
                    .value()
                    .get()
                    .and_then(Result::err)
                    .map(|error| view! { <p class="error" role="alert">{error.to_string()}</p> })
            }}
        </section>
    }
}

#[component]
fn EmptyServers() -> impl IntoView {
    view! {
        <p class="muted">
            "No servers yet. Add one: the command below installs the agent on a host and it appears here by itself."
        </p>
    }
}

/// "Add server": a join token with the one-line install command and a cloud-init file.
///
/// A plain form that posts to the server function without WASM, and dispatches the action
/// with the field's value when hydrated. (`ActionForm` would do the same by decoding the form
/// with `serde_qs`, code the Servers page, the first a person sees, need not download.)
#[component]
fn AddServer() -> impl IntoView {
    use leptos::server_fn::ServerFn;
    let add = ServerAction::<AddServer>::new();
    let name = NodeRef::<leptos::html::Input>::new();
    let submit = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let name = name.get().map(|input| input.value()).unwrap_or_default();
        add.dispatch(AddServer { name });
    };
    view! {
        <h2>"Add a server"</h2>
        <form class="grid-form" method="post" action=AddServer::url() on:submit=submit>
            <label>
                "Name (optional)"
                <input name="name" placeholder="the host's name" node_ref=name />
            </label>
            <SubmitRow
                label="Add server"
                pending=add.pending()
                error=Signal::derive(move || add.value().get().and_then(Result::err))
            />
        </form>
        {move || add.value().get().and_then(Result::ok).map(|created| view! { <JoinInstructions created /> })}
    }
}

#[component]
fn JoinInstructions(created: JoinTokenCreated) -> impl IntoView {
    let command = created.command.clone();
    let copied = RwSignal::new(false);
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        {
            let clipboard = window().navigator().clipboard();
            let _ = clipboard.write_text(&command);
            copied.set(true);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (&command, copied);
    };
    let cloud_init = format!(
        "data:text/yaml;charset=utf-8,{}",
        shared::percent_encode(&created.cloud_init)
    );
    view! {
        <div class="join" data-testid="join-instructions">
            <p>
                "Run this as root on the new server (the token works once, until "
                {format_time(created.expires_at)} "):"
            </p>
            <div class="command">
                <pre><code data-testid="join-command">{created.command.clone()}</code></pre>
                <button class="btn" on:click=copy>
                    {move || if copied.get() { "Copied" } else { "Copy" }}
                </button>
            </div>
            <p>
                "Or start a cloud machine with "
                <a href=cloud_init download="cloud-init.yaml">"cloud-init.yaml"</a>
                " as its user data. The server appears in the list above once its agent connects."
            </p>
        </div>
    }
}

#[component]
fn ServerTable(
    agents: Vec<AgentSummary>,
    live: RwSignal<HashMap<AgentId, AgentStatus>>,
    revoke: ServerAction<RevokeAgent>,
) -> impl IntoView {
    view! {
        <table class="servers">
            <thead>
                <tr>
                    <th>"Name"</th>
                    <th>"Status"</th>
                    <th>"Host"</th>
                    <th>"Docker"</th>
                    <th>"Compose"</th>
                    <th>"Agent"</th>
                    <th>"Last seen"</th>
                    <th></th>
                </tr>
            </thead>
            <tbody>
                {agents
                    .into_iter()
                    .map(|agent| view! { <ServerRow agent live revoke /> })
                    .collect_view()}
            </tbody>
        </table>
    }
}

#[component]
fn ServerRow(
    agent: AgentSummary,
    live: RwSignal<HashMap<AgentId, AgentStatus>>,
    revoke: ServerAction<RevokeAgent>,
) -> impl IntoView {
    let id = agent.id;
    let loaded = agent.status;
    let status = move || {
        live.with(|statuses| statuses.get(&id).copied())
            .unwrap_or(loaded)
    };
    let status_class = move || match status() {
        AgentStatus::Connected => "status status-connected",
        AgentStatus::Disconnected => "status status-disconnected",
    };
    let unknown = || "—".to_string();
    // Revoking asks twice: the first click arms the button.
    let armed = RwSignal::new(false);
    let name = agent.name.clone();
    // A Swarm manager's agent: the Swarm's nodes, as it last reported them.
    let swarm_nodes = agent.swarm_nodes.clone();
    view! {
        <tr data-agent-id=agent.id.to_string()>
            <td class="name">{agent.name}</td>
            <td>
                <span class=status_class>{move || status().label()}</span>
            </td>
            <td>
                {agent.hostname.unwrap_or_else(unknown)}
                {(!swarm_nodes.is_empty())
                    .then(|| {
                        view! {
                            <ul class="swarm-nodes muted" data-swarm-nodes>
                                {swarm_nodes
                                    .iter()
                                    .map(|node| {
                                        view! {
                                            <li data-node=node.hostname.clone()>
                                                <small>{node.label()}</small>
                                            </li>
                                        }
                                    })
                                    .collect_view()}
                            </ul>
                        }
                    })}
            </td>
            <td>{agent.docker_version.unwrap_or_else(unknown)}</td>
            <td>{agent.compose_version.unwrap_or_else(unknown)}</td>
            <td>{agent.agent_version.unwrap_or_else(unknown)}</td>
            <td>{agent.last_seen.map(format_time).unwrap_or_else(unknown)}</td>
            <td class="actions">
                <button
                    class="btn btn-danger"
                    title=format!("Revoke the token of {name}; its agent is disconnected at once")
                    on:click=move |_| {
                        if armed.get() {
                            revoke.dispatch(RevokeAgent { id });
                        } else {
                            armed.set(true);
                        }
                    }
                >
                    {move || if armed.get() { "Confirm revoke" } else { "Revoke" }}
                </button>
            </td>
        </tr>
    }
}
