//! The Stagely dashboard.
//!
//! The same components render on the server (feature `ssr`, inside `stagely-server`) and hydrate
//! in the browser (feature `hydrate`, in the `frontend` WASM). Server functions are the only way
//! the page reaches data; their bodies run on the server against a [`ssr::Dashboard`] that the
//! server provides as context, so this crate never depends on the database or the hub.

#[cfg(feature = "hydrate")]
pub mod live;
pub mod servers;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes, A},
    path,
};

#[cfg(feature = "ssr")]
pub mod ssr {
    //! The server side of the dashboard's server functions.

    use shared::api::AgentSummary;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;

    /// A boxed future, since the dashboard is reached through a trait object.
    pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

    /// What the dashboard needs from the server. `stagely-server` implements it over its store
    /// and hub; the message of an `Err` is shown to the user, so it must not leak internals.
    pub trait Dashboard: Send + Sync + 'static {
        /// Every agent with its live status.
        fn list_agents(&self) -> BoxFuture<'_, Result<Vec<AgentSummary>, String>>;
    }

    /// The context value server functions look up.
    #[derive(Clone)]
    pub struct DashboardContext(pub Arc<dyn Dashboard>);

    /// The dashboard behind the current request.
    pub fn dashboard() -> Result<Arc<dyn Dashboard>, leptos::prelude::ServerFnError> {
        leptos::prelude::use_context::<DashboardContext>()
            .map(|context| context.0)
            .ok_or_else(|| leptos::prelude::ServerFnError::new("dashboard context is missing"))
    }
}

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                // No favicon yet: an empty one spares every page view a 404.
                <link rel="icon" href="data:," />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// The dashboard's root component.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();

    // Effects run only in the browser, so this flips once hydration has attached the page's
    // event handlers. End-to-end tests wait for it before clicking.
    let hydrated = RwSignal::new(false);
    Effect::new(move |_| hydrated.set(true));

    view! {
        <Stylesheet id="leptos" href="/pkg/stagely.css" />
        <Title text="Stagely" />
        <Router>
            <div class="layout" data-hydrated=move || hydrated.get().to_string()>
                <header class="topbar">
                    <A href="/" attr:class="brand">
                        "Stagely"
                    </A>
                    <nav>
                        <A href="/">"Servers"</A>
                    </nav>
                </header>
                <main>
                    <Routes fallback=|| view! { <p class="muted">"Page not found."</p> }>
                        <Route path=path!("") view=servers::ServersPage />
                    </Routes>
                </main>
            </div>
        </Router>
    }
}
