//! The sign-in pages. Both are plain HTML forms posting to the server's `/auth/…` routes, which
//! redirect back with `?error=<code>` on failure, so signing in works before (or without) the WASM.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use shared::api::{SignInError, SignInOptions, Viewer};

/// The signed-in person; an error when nobody is.
#[server]
pub async fn current_viewer() -> Result<Viewer, ServerFnError> {
    crate::call!(viewer)
}

/// How people may sign in here.
#[server]
pub async fn get_sign_in_options() -> Result<SignInOptions, ServerFnError> {
    let (dashboard, _) = crate::ssr::dashboard()?;
    Ok(dashboard.sign_in_options())
}

/// The sentence of the `?error=` code the server redirected back with, shown next to the form.
/// Anything but one of the server's codes shows nothing: the page never repeats the URL.
fn form_error() -> impl IntoView {
    let query = use_query_map();
    move || {
        query
            .read()
            .get("error")
            .and_then(|code| SignInError::parse(&code))
            .map(|error| view! { <p class="error" role="alert">{error.message()}</p> })
    }
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let options = Resource::new(|| (), |_| get_sign_in_options());
    view! {
        <section class="panel narrow">
            <h1>"Sign in"</h1>
            {form_error()}
            <form class="stack" method="post" action="/auth/login">
                <label>
                    "Username" <input name="login" autocomplete="username" required />
                </label>
                <label>
                    "Password"
                    <input name="password" type="password" autocomplete="current-password" required />
                </label>
                <button class="btn btn-primary" type="submit">
                    "Sign in"
                </button>
            </form>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    options
                        .await
                        .ok()
                        .filter(|options| options.github)
                        .map(|_| {
                            view! {
                                <div class="or">"or"</div>
                                <a class="btn btn-github" href="/auth/github" rel="external">
                                    "Sign in with GitHub"
                                </a>
                            }
                        })
                })}
            </Transition>
        </section>
    }
}

#[component]
pub fn SetupPage() -> impl IntoView {
    view! {
        <section class="panel narrow">
            <h1>"Welcome to Stagely"</h1>
            <p class="muted">
                "This server has no accounts yet. Create the first one: it will be the administrator."
            </p>
            {form_error()}
            <form class="stack" method="post" action="/auth/setup">
                <label>"Username" <input name="login" autocomplete="username" required /></label>
                <label>
                    "Password"
                    <input name="password" type="password" autocomplete="new-password" minlength="8" required />
                </label>
                <label>
                    "Repeat the password"
                    <input
                        name="password_confirm"
                        type="password"
                        autocomplete="new-password"
                        minlength="8"
                        required
                    />
                </label>
                <button class="btn btn-primary" type="submit">
                    "Create the administrator"
                </button>
            </form>
        </section>
    }
}
