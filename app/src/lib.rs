//! The Stagely dashboard.
//!
//! The same components render on the server (feature `ssr`, inside `stagely-server`) and hydrate
//! in the browser (feature `hydrate`, in the `frontend` WASM). Server functions are the only way
//! the page reaches data; their bodies run on the server against a [`ssr::Dashboard`] that the
//! server provides as context, so this crate never depends on the database or the hub.

pub mod account;
pub mod auth;
#[cfg(feature = "hydrate")]
pub mod live;
pub mod logs;
pub mod notifications;
pub mod project;
pub mod projects;
pub mod registries;
mod routes;
pub mod secrets;
pub mod servers;
pub mod services;
pub mod webhooks;
pub mod widgets;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, HashedStylesheet, MetaTags, Title};
use leptos_router::{
    components::{Route, Router, Routes, A},
    path, Lazy, LazyRoute,
};

#[cfg(feature = "ssr")]
pub mod ssr {
    //! The server side of the dashboard's server functions.

    use shared::api::{
        AgentSummary, CreateJoinToken, CreateProject, CreateSecret, DeleteProject, DeployAccepted,
        Deployment, JoinTokenCreated, LifecycleRequest, Project, ProjectServices, RevealedSecret,
        SecretSummary, SecretVersion, SignInOptions, UpdateSecret, Viewer,
    };
    use shared::api::{ApiTokenInfo, SessionInfo, UserSummary};
    use shared::{AgentId, ApiTokenId, DeploymentId, ProjectId, SecretId, ServiceName};
    use shared::{SessionId, UserId};
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;

    /// A boxed future, since the dashboard is reached through a trait object.
    pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
    /// What a dashboard call answers: the message of an `Err` is shown to the person next to
    /// what they did, so it must not leak internals.
    pub type Answer<'a, T> = BoxFuture<'a, Result<T, String>>;

    /// The session cookie of the request a server function runs for; the server resolves it
    /// to a person on every call.
    #[derive(Clone, Debug, Default)]
    pub struct Session(pub Option<String>);

    /// What the dashboard needs from the server. `stagely-server` implements it over its store
    /// and hub, with the same checks as its REST API.
    pub trait Dashboard: Accounts + Hooks + Registries + Send + Sync + 'static {
        /// The name of the session cookie this server sets (`__Host-…` over https).
        fn session_cookie(&self) -> &'static str;
        fn sign_in_options(&self) -> SignInOptions;
        fn viewer(&self, session: Session) -> Answer<'_, Viewer>;
        fn list_agents(&self, session: Session) -> Answer<'_, Vec<AgentSummary>>;
        fn revoke_agent(&self, session: Session, id: AgentId) -> Answer<'_, ()>;
        fn create_join_token(
            &self,
            session: Session,
            body: CreateJoinToken,
        ) -> Answer<'_, JoinTokenCreated>;
        fn list_projects(&self, session: Session) -> Answer<'_, Vec<Project>>;
        fn create_project(&self, session: Session, body: CreateProject) -> Answer<'_, Project>;
        fn project(&self, session: Session, id: ProjectId) -> Answer<'_, Project>;
        /// A new SSH deploy key for a Git project; the answer shows its public half.
        fn generate_deploy_key(
            &self,
            session: Session,
            id: ProjectId,
        ) -> Answer<'_, shared::source::GitSourceView>;
        /// Forgets a Git project's pinned SSH host key.
        fn forget_host_key(
            &self,
            session: Session,
            id: ProjectId,
        ) -> Answer<'_, shared::source::GitSourceView>;
        /// The services the project's agent finds in its compose file.
        fn project_services(&self, session: Session, id: ProjectId)
            -> Answer<'_, Vec<ServiceName>>;
        fn list_secrets(
            &self,
            session: Session,
            project: ProjectId,
        ) -> Answer<'_, Vec<SecretSummary>>;
        fn create_secret(&self, session: Session, body: CreateSecret) -> Answer<'_, SecretSummary>;
        fn update_secret(
            &self,
            session: Session,
            id: SecretId,
            body: UpdateSecret,
        ) -> Answer<'_, SecretSummary>;
        fn delete_secret(&self, session: Session, id: SecretId) -> Answer<'_, ()>;
        fn reveal_secret(&self, session: Session, id: SecretId) -> Answer<'_, RevealedSecret>;
        fn deploy(&self, session: Session, project: ProjectId) -> Answer<'_, DeployAccepted>;
        fn deployments(&self, session: Session, project: ProjectId) -> Answer<'_, Vec<Deployment>>;
        fn deployment(&self, session: Session, id: DeploymentId) -> Answer<'_, Deployment>;
        fn redeploy(&self, session: Session, id: DeploymentId) -> Answer<'_, DeployAccepted>;
        fn act(
            &self,
            session: Session,
            project: ProjectId,
            request: LifecycleRequest,
        ) -> Answer<'_, DeployAccepted>;
        fn delete_project(
            &self,
            session: Session,
            project: ProjectId,
            options: DeleteProject,
        ) -> Answer<'_, ()>;
        /// A project's containers as its agent last reported them.
        fn service_states(
            &self,
            session: Session,
            project: ProjectId,
        ) -> Answer<'_, ProjectServices>;
        /// The containers of each of the person's projects that has any.
        fn service_overview(&self, session: Session) -> Answer<'_, Vec<ProjectServices>>;
        fn secret_versions(&self, session: Session, id: SecretId)
            -> Answer<'_, Vec<SecretVersion>>;
        fn reveal_secret_version(
            &self,
            session: Session,
            id: SecretId,
            version: i64,
        ) -> Answer<'_, RevealedSecret>;
        fn list_channels(
            &self,
            session: Session,
        ) -> Answer<'_, Vec<shared::notify::ChannelSummary>>;
        fn create_channel(
            &self,
            session: Session,
            body: shared::notify::CreateChannel,
        ) -> Answer<'_, shared::notify::ChannelCreated>;
        fn delete_channel(&self, session: Session, id: shared::notify::ChannelId)
            -> Answer<'_, ()>;
        fn test_channel(
            &self,
            session: Session,
            id: shared::notify::ChannelId,
        ) -> Answer<'_, shared::notify::TestQueued>;
        fn channel_deliveries(
            &self,
            session: Session,
            id: shared::notify::ChannelId,
        ) -> Answer<'_, Vec<shared::notify::Delivery>>;
        fn project_notifications(
            &self,
            session: Session,
            project: ProjectId,
        ) -> Answer<'_, shared::notify::ProjectNotifications>;
        fn set_project_notifications(
            &self,
            session: Session,
            project: ProjectId,
            body: shared::notify::ProjectNotifications,
        ) -> Answer<'_, shared::notify::ProjectNotifications>;
    }

    /// What the Account and Users pages need from the server (issue 15, revocation).
    pub trait Accounts {
        /// The person's sessions, the one of this request marked `current`.
        fn list_sessions(&self, session: Session) -> Answer<'_, Vec<SessionInfo>>;
        /// Ends one of the person's sessions; true when it was this request's (signed out).
        fn revoke_session(&self, session: Session, id: SessionId) -> Answer<'_, bool>;
        fn list_api_tokens(&self, session: Session) -> Answer<'_, Vec<ApiTokenInfo>>;
        fn revoke_api_token(&self, session: Session, id: ApiTokenId) -> Answer<'_, ()>;
        /// Every user (admins).
        fn list_users(&self, session: Session) -> Answer<'_, Vec<UserSummary>>;
        fn disable_user(&self, session: Session, id: UserId) -> Answer<'_, UserSummary>;
        fn enable_user(&self, session: Session, id: UserId) -> Answer<'_, UserSummary>;
    }

    /// What the Push webhook panel needs from the server (issue 13).
    pub trait Hooks {
        /// The project's webhook, `None` if it has none.
        fn webhook(
            &self,
            session: Session,
            project: ProjectId,
        ) -> Answer<'_, Option<shared::webhooks::Webhook>>;
        fn create_webhook(
            &self,
            session: Session,
            project: ProjectId,
        ) -> Answer<'_, shared::webhooks::WebhookCreated>;
        fn rotate_webhook(
            &self,
            session: Session,
            project: ProjectId,
        ) -> Answer<'_, shared::webhooks::WebhookCreated>;
    }

    /// What the Project page's images panel needs: its pull policy and its registry
    /// credentials (never their passwords).
    pub trait Registries {
        fn list_registry_credentials(
            &self,
            session: Session,
            project: ProjectId,
        ) -> Answer<'_, Vec<shared::registry::RegistryCredentialSummary>>;
        fn set_registry_credential(
            &self,
            session: Session,
            project: ProjectId,
            body: shared::registry::SetRegistryCredential,
        ) -> Answer<'_, shared::registry::RegistryCredentialSummary>;
        fn delete_registry_credential(
            &self,
            session: Session,
            project: ProjectId,
            registry: shared::RegistryHost,
        ) -> Answer<'_, ()>;
        fn set_pull_policy(
            &self,
            session: Session,
            project: ProjectId,
            policy: shared::registry::PullPolicy,
        ) -> Answer<'_, Project>;
    }

    /// The context value server functions look up.
    #[derive(Clone)]
    pub struct DashboardContext(pub Arc<dyn Dashboard>);

    /// The dashboard behind the current request, and the request's session.
    pub fn dashboard() -> Result<(Arc<dyn Dashboard>, Session), leptos::prelude::ServerFnError> {
        let dashboard = leptos::prelude::use_context::<DashboardContext>()
            .map(|context| context.0)
            .ok_or_else(|| leptos::prelude::ServerFnError::new("dashboard context is missing"))?;
        let name = dashboard.session_cookie();
        let session = leptos::prelude::use_context::<http::request::Parts>()
            .and_then(|parts| session_cookie(&parts.headers, name).map(str::to_string));
        Ok((dashboard, Session(session)))
    }

    fn session_cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(|value| shared::cookie_value(value, name))
    }
}

/// Runs a dashboard call inside a server function: `call!(method, args…)`.
#[cfg(feature = "ssr")]
macro_rules! call {
    ($method:ident $(, $arg:expr)*) => {{
        let (dashboard, session) = $crate::ssr::dashboard()?;
        dashboard
            .$method(session $(, $arg)*)
            .await
            .map_err(::leptos::prelude::ServerFnError::new)
    }};
}
#[cfg(feature = "ssr")]
pub(crate) use call;

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
                <HashedStylesheet options=options.clone() id="leptos" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

/// Hydrates the server-rendered page, then marks the document (`<html data-hydrated="true">`):
/// end-to-end tests wait for the mark before clicking. Hydration waits for the lazily loaded
/// page's code (`hydrate_lazy`, spelled out to know when it ends); an effect in [`App`] would
/// set a mark before that code has arrived and the page's handlers are attached.
#[cfg(feature = "hydrate")]
pub fn hydrate() {
    wasm_bindgen_futures::spawn_local(async {
        let body = document().body().expect("the page has a body");
        leptos::mount::hydrate_from_async(body, App).await.forget();
        if let Some(root) = document().document_element() {
            let _ = root.set_attribute("data-hydrated", "true");
        }
    });
}

/// The dashboard's root component.
#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();

    view! {
        <Title text="Stagely" />
        <Router>
            <div class="layout">
                <TopBar />
                <main>
                    <Routes fallback=|| view! { <p class="muted">"Page not found."</p> }>
                        <Route path=path!("") view={Lazy::<ServersRoute>::new()} />
                        <Route path=path!("/login") view={Lazy::<LoginRoute>::new()} />
                        <Route path=path!("/setup") view={Lazy::<SetupRoute>::new()} />
                        <Route path=path!("/projects") view={Lazy::<ProjectsRoute>::new()} />
                        <Route path=path!("/projects/:id") view={Lazy::<ProjectRoute>::new()} />
                        <Route
                            path=path!("/notifications")
                            view={Lazy::<NotificationsRoute>::new()}
                        />
                        <Route path=path!("/account") view={Lazy::<AccountRoute>::new()} />
                    </Routes>
                </main>
            </div>
        </Router>
    }
}

/// A route whose page is split out of the main WASM (`cargo leptos build --split`): the browser
/// fetches its code the first time the page is shown, so the first page a person opens does not
/// wait for every other page's code. Each page loads its own data; the route has none.
///
/// Written out rather than with `#[lazy_route]`, whose loader panics when the chunk's fetch
/// fails (a network blip, a Wi-Fi change, a server restarting) and so kills the whole
/// dashboard: here the load is `fallible` and retried (for as long as it takes while the page
/// the server rendered hydrates), and a page that still cannot be fetched says so (see
/// [`routes::fetch`]). On the server, the page renders at once and names its chunk
/// so the HTML preloads it.
macro_rules! lazy_page {
    ($route:ident, $split:ident, $preload:ident, $module:ident :: $page:ident) => {
        #[doc = concat!("The lazily loaded route of [`", stringify!($module), "::", stringify!($page), "`].")]
        struct $route;

        #[cfg(feature = "hydrate")]
        #[::leptos::wasm_split::wasm_split(
            $split,
            wasm_split_path = ::leptos::wasm_split,
            preload(#[allow(non_snake_case)] $preload),
            fallible
        )]
        fn $split() -> Result<AnyView, ::leptos::wasm_split::SplitLoaderError> {
            Ok(view! { <$module::$page /> }.into_any())
        }

        #[cfg(not(feature = "hydrate"))]
        async fn $split() -> Result<AnyView, std::convert::Infallible> {
            ::leptos::prefetch_lazy_fn_on_server(stringify!($split));
            Ok(view! { <$module::$page /> }.into_any())
        }

        impl LazyRoute for $route {
            fn data() -> Self {
                Self
            }

            async fn view(_this: Self) -> AnyView {
                routes::load($split).await
            }

            async fn preload() {
                // The router awaits this before it hydrates or shows the page; a failure that
                // outlasts the retries leaves `view` to say so.
                #[cfg(feature = "hydrate")]
                let _ = routes::fetch($preload).await;
            }
        }
    };
}

lazy_page!(
    ServersRoute,
    stagely_servers_page,
    preload_servers_page,
    servers::ServersPage
);
lazy_page!(
    LoginRoute,
    stagely_login_page,
    preload_login_page,
    auth::LoginPage
);
lazy_page!(
    SetupRoute,
    stagely_setup_page,
    preload_setup_page,
    auth::SetupPage
);
lazy_page!(
    ProjectsRoute,
    stagely_projects_page,
    preload_projects_page,
    projects::ProjectsPage
);
lazy_page!(
    ProjectRoute,
    stagely_project_page,
    preload_project_page,
    project::ProjectPage
);
lazy_page!(
    AccountRoute,
    stagely_account_page,
    preload_account_page,
    account::AccountPage
);
lazy_page!(
    NotificationsRoute,
    stagely_notifications_page,
    preload_notifications_page,
    notifications::NotificationsPage
);

/// The brand, the navigation and who is signed in (with the sign-out button). On the sign-in
/// pages nobody is, and only the brand shows.
#[component]
fn TopBar() -> impl IntoView {
    let viewer = Resource::new(|| (), |_| auth::current_viewer());
    view! {
        <header class="topbar">
            <A href="/" attr:class="brand">
                "Stagely"
            </A>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    viewer
                        .await
                        .ok()
                        .map(|viewer| {
                            view! {
                                <nav>
                                    <A href="/" exact=true>"Servers"</A>
                                    <A href="/projects">"Projects"</A>
                                    <A href="/notifications">"Notifications"</A>
                                    <A href="/account">"Account"</A>
                                </nav>
                                <form class="whoami" method="post" action="/auth/logout">
                                    <span class="muted">{viewer.login}</span>
                                    <button class="btn btn-quiet" type="submit">
                                        "Sign out"
                                    </button>
                                </form>
                            }
                        })
                })}
            </Transition>
        </header>
    }
}
