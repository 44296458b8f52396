//! The Account page: the person's dashboard sessions and API tokens (never their secrets), each
//! with a Revoke button, and for an admin the Users panel (disable, enable). Revoking the
//! session in use signs the person out.

use crate::auth::current_viewer;
use crate::widgets::{error_text, format_time};
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
    view! {
        <section class="panel">
            <h1>"Sessions"</h1>
            <p class="muted">
                "Browsers signed in to your account. Revoke one you do not recognise; revoking this one signs you out."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading sessions…"</p> }>
                {move || Suspend::new(async move {
                    match sessions.await {
                        Ok(list) => {
                            view! {
                                <div class="table-scroll">
                                    <table class="sessions">
                                        <thead>
                                            <tr>
                                                <th>"Signed in"</th>
                                                <th>"Last used"</th>
                                                <th>"Browser"</th>
                                                <th>"Address"</th>
                                                <th></th>
                                            </tr>
                                        </thead>
                                        <tbody>
                                            {list
                                                .into_iter()
                                                .map(|session| {
                                                    let id = session.id;
                                                    view! {
                                                        <tr>
                                                            <td>
                                                                {format_time(session.created_at)}
                                                                {session
                                                                    .current
                                                                    .then(|| view! { <span class="badge">" this session"</span> })}
                                                            </td>
                                                            <td>{last_used(session.last_used_at)}</td>
                                                            <td class="muted">{session.user_agent.unwrap_or_default()}</td>
                                                            <td>{session.ip.unwrap_or_default()}</td>
                                                            <td class="actions">
                                                                <button
                                                                    class="btn btn-danger"
                                                                    on:click=move |_| {
                                                                        revoke.dispatch(RevokeSession { id });
                                                                    }
                                                                >
                                                                    "Revoke"
                                                                </button>
                                                            </td>
                                                        </tr>
                                                    }
                                                })
                                                .collect_view()}
                                        </tbody>
                                    </table>
                                </div>
                            }
                                .into_any()
                        }
                        Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                    }
                })}
            </Transition>
            {move || {
                revoke
                    .value()
                    .get()
                    .and_then(Result::err)
                    .map(|error| view! { <p class="error" role="alert">{error_text(&error)}</p> })
            }}
        </section>
    }
}

#[component]
fn ApiTokens() -> impl IntoView {
    let revoke = ServerAction::<RevokeApiToken>::new();
    let tokens = Resource::new(move || revoke.version().get(), |_| list_api_tokens());
    view! {
        <section class="panel">
            <h2>"API tokens"</h2>
            <p class="muted">
                "Tokens for the REST API (created with "<code>"stagely-server tokens create"</code>
                "). Only their ids are shown."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading tokens…"</p> }>
                {move || Suspend::new(async move {
                    match tokens.await {
                        Ok(list) if list.is_empty() => {
                            view! { <p class="muted">"No API tokens."</p> }.into_any()
                        }
                        Ok(list) => {
                            view! {
                                <div class="table-scroll">
                                    <table class="api-tokens">
                                        <thead>
                                            <tr>
                                                <th>"Token id"</th>
                                                <th>"Created"</th>
                                                <th>"Last used"</th>
                                                <th></th>
                                            </tr>
                                        </thead>
                                        <tbody>
                                            {list
                                                .into_iter()
                                                .map(|token| {
                                                    let id = token.id;
                                                    view! {
                                                        <tr>
                                                            <td><code>{id.to_string()}</code></td>
                                                            <td>{format_time(token.created_at)}</td>
                                                            <td>{last_used(token.last_used_at)}</td>
                                                            <td class="actions">
                                                                <button
                                                                    class="btn btn-danger"
                                                                    on:click=move |_| {
                                                                        revoke.dispatch(RevokeApiToken { id });
                                                                    }
                                                                >
                                                                    "Revoke"
                                                                </button>
                                                            </td>
                                                        </tr>
                                                    }
                                                })
                                                .collect_view()}
                                        </tbody>
                                    </table>
                                </div>
                            }
                                .into_any()
                        }
                        Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                    }
                })}
            </Transition>
            {move || {
                revoke
                    .value()
                    .get()
                    .and_then(Result::err)
                    .map(|error| view! { <p class="error" role="alert">{error_text(&error)}</p> })
            }}
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
    view! {
        <section class="panel">
            <h2>"Users"</h2>
            <p class="muted">
                "Disabling a user signs them out everywhere: their sessions, API tokens and live views end, and they cannot sign in (with a password or GitHub) until enabled again."
            </p>
            <Transition fallback=|| view! { <p class="muted">"Loading users…"</p> }>
                {move || Suspend::new(async move {
                    match users.await {
                        Ok(list) => {
                            view! {
                                <div class="table-scroll">
                                    <table class="users">
                                        <thead>
                                            <tr>
                                                <th>"User"</th>
                                                <th>"Role"</th>
                                                <th>"Sign-in"</th>
                                                <th>"State"</th>
                                                <th></th>
                                            </tr>
                                        </thead>
                                        <tbody>
                                            {list
                                                .into_iter()
                                                .map(|user| {
                                                    let id = user.id;
                                                    let button = if user.disabled {
                                                        view! {
                                                            <button
                                                                class="btn"
                                                                on:click=move |_| {
                                                                    enable.dispatch(EnableUser { id });
                                                                }
                                                            >
                                                                "Enable"
                                                            </button>
                                                        }
                                                            .into_any()
                                                    } else {
                                                        view! {
                                                            <button
                                                                class="btn btn-danger"
                                                                on:click=move |_| {
                                                                    disable.dispatch(DisableUser { id });
                                                                }
                                                            >
                                                                "Disable"
                                                            </button>
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
                                                })
                                                .collect_view()}
                                        </tbody>
                                    </table>
                                </div>
                            }
                                .into_any()
                        }
                        Err(error) => view! { <p class="error">{error_text(&error)}</p> }.into_any(),
                    }
                })}
            </Transition>
            {move || {
                disable
                    .value()
                    .get()
                    .and_then(Result::err)
                    .or_else(|| enable.value().get().and_then(Result::err))
                    .map(|error| view! { <p class="error" role="alert">{error_text(&error)}</p> })
            }}
        </section>
    }
}
