//! The Account page: the person's dashboard sessions and API tokens (never their secrets), each
//! with a Revoke button, and for an admin the Users panel (disable, enable). Revoking the
//! session in use signs the person out.

use crate::auth::current_viewer;
use crate::widgets::{format_time, ErrorLine, Loaded, Table};
use leptos::prelude::*;
use shared::api::{ApiTokenInfo, SessionInfo, UserSummary};
use shared::{ApiTokenId, SessionId, UserId};

#[server]
pub async fn list_sessions() -> Result<Vec<SessionInfo>, ServerFnError> {
    crate::call!(list_sessions)
}

/// Ends a session; true when it was this browser's own.
#[server]
pub async fn revoke_session(id: SessionId) -> Result<bool, ServerFnError> {
    crate::call!(revoke_session, id)
}

#[server]
pub async fn list_api_tokens() -> Result<Vec<ApiTokenInfo>, ServerFnError> {
    crate::call!(list_api_tokens)
}

#[server]
pub async fn revoke_api_token(id: ApiTokenId) -> Result<(), ServerFnError> {
    crate::call!(revoke_api_token, id)
}

#[server]
pub async fn list_users() -> Result<Vec<UserSummary>, ServerFnError> {
    crate::call!(list_users)
}

#[server]
pub async fn disable_user(id: UserId) -> Result<UserSummary, ServerFnError> {
    crate::call!(disable_user, id)
}

#[server]
pub async fn enable_user(id: UserId) -> Result<UserSummary, ServerFnError> {
    crate::call!(enable_user, id)
}

fn last_used(at: Option<time::OffsetDateTime>) -> String {
    at.map(format_time).unwrap_or_else(|| "—".into())
}

#[component]
pub fn AccountPage() -> impl IntoView {
    let viewer = Resource::new(|| (), |_| current_viewer());
    view! {
        <Sessions />
        <ApiTokens />
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                viewer.await.ok().filter(|viewer| viewer.is_admin).map(|_| view! { <Users /> })
            })}
        </Transition>
    }
}

#[component]
fn Sessions() -> impl IntoView {
    let revoke = ServerAction::<RevokeSession>::new();
    let sessions = Resource::new(move || revoke.version().get(), |_| list_sessions());
    // Revoking this browser's own session signs it out: off to the sign-in page.
    Effect::new(move |_| {
        if let Some(Ok(true)) = revoke.value().get() {
            #[cfg(feature = "hydrate")]
            if let Some(window) = web_sys::window() {
                let _ = window.location().set_href("/login");
            }
        }
    });
    let row = move |session: SessionInfo| {
        let id = session.id;
        view! {
            <tr>
                <td>
                    {format_time(session.created_at)}
                    {session.current.then(|| view! { <span class="badge">" this session"</span> })}
                </td>
                <td>{last_used(session.last_used_at)}</td>
                <td class="muted">{session.user_agent.unwrap_or_default()}</td>
                <td>{session.ip.unwrap_or_default()}</td>
                <td class="actions">
                    <button class="btn btn-danger" on:click=move |_| {
                        revoke.dispatch(RevokeSession { id });
                    }>"Revoke"</button>
                </td>
            </tr>
        }
    };
    view! {
        <section class="panel">
            <h1>"Sessions"</h1>
            <p class="muted">
                "Browsers signed in to your account. Revoke one you do not recognise; revoking this one signs you out."
            </p>
            <Loaded
                loading="Loading sessions…"
                list=sessions
                table={move |list: Vec<SessionInfo>| {
                    view! {
                        <Table class="sessions" headings=&["Signed in", "Last used", "Browser", "Address", ""]>
                            {list.into_iter().map(row).collect_view()}
                        </Table>
                    }
                }}
            />
            <ErrorLine error=Signal::derive(move || revoke.value().get().and_then(Result::err)) />
        </section>
    }
}

#[component]
fn ApiTokens() -> impl IntoView {
    let revoke = ServerAction::<RevokeApiToken>::new();
    let tokens = Resource::new(move || revoke.version().get(), |_| list_api_tokens());
    let row = move |token: ApiTokenInfo| {
        let id = token.id;
        view! {
            <tr>
                <td><code>{id.to_string()}</code></td>
                <td>{format_time(token.created_at)}</td>
                <td>{last_used(token.last_used_at)}</td>
                <td class="actions">
                    <button class="btn btn-danger" on:click=move |_| {
                        revoke.dispatch(RevokeApiToken { id });
                    }>"Revoke"</button>
                </td>
            </tr>
        }
    };
    view! {
        <section class="panel">
            <h2>"API tokens"</h2>
            <p class="muted">
                "Tokens for the REST API (created with "<code>"stagely-server tokens create"</code>
                "). Only their ids are shown."
            </p>
            <Loaded
                loading="Loading tokens…"
                empty="No API tokens."
                list=tokens
                table={move |list: Vec<ApiTokenInfo>| {
                    view! {
                        <Table class="api-tokens" headings=&["Token id", "Created", "Last used", ""]>
                            {list.into_iter().map(row).collect_view()}
                        </Table>
                    }
                }}
            />
            <ErrorLine error=Signal::derive(move || revoke.value().get().and_then(Result::err)) />
        </section>
    }
}

#[component]
fn Users() -> impl IntoView {
    let disable = ServerAction::<DisableUser>::new();
    let enable = ServerAction::<EnableUser>::new();
    let users = Resource::new(
        move || (disable.version().get(), enable.version().get()),
        |_| list_users(),
    );
    let row = move |user: UserSummary| {
        let id = user.id;
        let button = if user.disabled {
            view! {
                <button class="btn" on:click=move |_| {
                    enable.dispatch(EnableUser { id });
                }>"Enable"</button>
            }
            .into_any()
        } else {
            view! {
                <button class="btn btn-danger" on:click=move |_| {
                    disable.dispatch(DisableUser { id });
                }>"Disable"</button>
            }
            .into_any()
        };
        view! {
            <tr>
                <td class="name">{user.login}</td>
                <td>{if user.is_admin { "Administrator" } else { "User" }}</td>
                <td>
                    {match user.github_id {
                        Some(github) => format!("GitHub (id {github})"),
                        None => "Password".into(),
                    }}
                </td>
                <td>{if user.disabled { "Disabled" } else { "Active" }}</td>
                <td class="actions">{button}</td>
            </tr>
        }
    };
    view! {
        <section class="panel">
            <h2>"Users"</h2>
            <p class="muted">
                "Disabling a user signs them out everywhere: their sessions, API tokens and live views end, and they cannot sign in (with a password or GitHub) until enabled again."
            </p>
            <Loaded
                loading="Loading users…"
                list=users
                table={move |list: Vec<UserSummary>| {
                    view! {
                        <Table class="users" headings=&["User", "Role", "Sign-in", "State", ""]>
                            {list.into_iter().map(row).collect_view()}
                        </Table>
                    }
                }}
            />
            <ErrorLine error=Signal::derive(move || {
                disable
                    .value()
                    .get()
                    .and_then(Result::err)
                    .or_else(|| enable.value().get().and_then(Result::err))
            }) />
        </section>
    }
}
