//! The REST API under `/api/v1`: JSON in and out, errors as `{"error": {"code", "message"}}`.
//!
//! [`ROUTES`](routes) is the one table of the API: the router is built from it and so is the
//! OpenAPI document (`openapi`), so the two cannot drift. Each handler is a thin adapter: it
//! extracts the caller ([`CurrentUser`]) and the typed input, calls one operation in
//! [`crate::ops`] and wraps the result; `error_response` maps an [`OpError`] to a status code,
//! the one place that does.
//!
//! Every lookup goes through the caller, so another user's id answers 404 exactly like an id
//! that does not exist.

pub mod account;
pub mod agents;
pub mod deployments;
pub mod downloads;
pub mod join_tokens;
pub mod notifications;
pub mod openapi;
pub mod projects;
pub mod registries;
pub mod secrets;
pub mod sources;
pub mod users;
pub mod webhooks;

use crate::ops::OpError;
use crate::state::AppState;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequest, Request};
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::routing::{get, MethodFilter, MethodRouter};
use axum::Router;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use shared::api::{
    AgentCreated, AgentSummary, ApiTokenInfo, CreateAgent, CreateJoinToken, CreateProject,
    CreateSecret, DeployAccepted, Deployment, JoinTokenCreated, LifecycleRequest, Project,
    ProjectServices, RevealedSecret, SecretSummary, SecretVersion, SessionInfo, UpdateProject,
    UpdateSecret, UserSummary,
};
use shared::registry::{RegistryCredentialSummary, SetRegistryCredential};
use std::fmt;
use std::marker::PhantomData;

pub use crate::auth::CurrentUser;

/// Writes the JSON schema of a request or response body.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// One operation of the API: how it is reached, what it does, what it takes and returns, and
/// the handler that does it.
pub struct ApiRoute {
    /// `projects.create` for the handler `http::projects::create`: the document's `operationId`,
    /// and what its links name.
    pub operation_id: String,
    pub method: Method,
    /// Relative to `/api/v1`, with `{name}` for path parameters.
    pub path: &'static str,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    pub request: Option<SchemaFn>,
    /// Whether a request without a body is refused (every field of an optional one has a
    /// default).
    pub body_required: bool,
    /// The status of a success.
    pub status: StatusCode,
    pub response: Option<SchemaFn>,
    /// Optional query parameters: name and JSON type.
    pub query: &'static [(&'static str, &'static str)],
    /// Refusals of this operation beyond those every operation may answer (400, 401, 404,
    /// and 409 for one that changes something), with what they mean.
    pub refusals: &'static [(StatusCode, &'static str)],
    pub handler: MethodRouter<AppState>,
}

impl ApiRoute {
    fn new<H, T>(
        method: Method,
        path: &'static str,
        summary: &'static str,
        status: StatusCode,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .expect("the table uses only the standard methods");
        Self {
            operation_id: operation_id::<H>(),
            method,
            path,
            summary,
            request: None,
            body_required: false,
            status,
            response: None,
            query: &[],
            refusals: &[],
            handler: axum::routing::on(filter, handler),
        }
    }

    /// The JSON body the operation takes.
    fn takes<T: JsonSchema>(mut self) -> Self {
        self.request = Some(|generator| generator.subschema_for::<T>());
        self.body_required = true;
        self
    }

    /// A JSON body the operation takes when there is one.
    fn may_take<T: JsonSchema>(mut self) -> Self {
        self.request = Some(|generator| generator.subschema_for::<T>());
        self.body_required = false;
        self
    }

    /// The optional query parameters it reads (name, JSON type).
    fn with_query(mut self, query: &'static [(&'static str, &'static str)]) -> Self {
        self.query = query;
        self
    }

    /// Refusals particular to this operation.
    fn refuses(mut self, refusals: &'static [(StatusCode, &'static str)]) -> Self {
        self.refusals = refusals;
        self
    }

    /// The JSON body a success returns.
    fn returns<T: JsonSchema>(mut self) -> Self {
        self.response = Some(|generator| generator.subschema_for::<T>());
        self
    }
}

/// `module.function` of a handler, from its path (`server::http::projects::create`): unique,
/// since every handler is its own function, and it reads like the route table. (The tests
/// check that every operation has its own.)
fn operation_id<H>() -> String {
    let mut parts = std::any::type_name::<H>().rsplit("::");
    let function = parts.next().unwrap_or_default();
    match parts.next() {
        Some(module) => format!("{module}.{function}"),
        None => function.to_string(),
    }
}

/// The refusal of an operation whose body names other things of the caller's.
const NAMES_OTHERS: &[(StatusCode, &str)] = &[(
    StatusCode::UNPROCESSABLE_ENTITY,
    "the body names an agent, project or channel that does not exist or is not yours",
)];

/// The refusal of an operation only administrators may call.
const ADMINS_ONLY: &[(StatusCode, &str)] =
    &[(StatusCode::FORBIDDEN, "the caller is not an administrator")];

/// Every operation of the API, in the order the OpenAPI document lists them. A new operation
/// is one line here, one handler in its resource's module and one function in `ops`.
pub fn routes() -> Vec<ApiRoute> {
    use StatusCode as S;
    let (get, post, patch, delete) = (Method::GET, Method::POST, Method::PATCH, Method::DELETE);
    let put = Method::PUT;
    use shared::notify as n;
    vec![
        ApiRoute::new(
            post.clone(),
            "/agents",
            "Register an agent; the token is returned only here",
            S::CREATED,
            agents::create,
        )
        .takes::<CreateAgent>()
        .returns::<AgentCreated>(),
        ApiRoute::new(
            get.clone(),
            "/agents",
            "List agents with their live status",
            S::OK,
            agents::list,
        )
        .returns::<Vec<AgentSummary>>(),
        ApiRoute::new(
            delete.clone(),
            "/agents/{id}",
            "Revoke an agent's token and close its session",
            S::NO_CONTENT,
            agents::revoke,
        ),
        ApiRoute::new(
            post.clone(),
            "/join-tokens",
            "Create a single-use join token, with the install command and a cloud-init file",
            S::CREATED,
            join_tokens::create,
        )
        .may_take::<CreateJoinToken>()
        .returns::<JoinTokenCreated>(),
        ApiRoute::new(
            post.clone(),
            "/projects",
            "Create a project",
            S::CREATED,
            projects::create,
        )
        .takes::<CreateProject>()
        .returns::<Project>()
        .refuses(NAMES_OTHERS),
        ApiRoute::new(
            get.clone(),
            "/projects",
            "List your projects",
            S::OK,
            projects::list,
        )
        .returns::<Vec<Project>>(),
        ApiRoute::new(
            get.clone(),
            "/projects/{id}",
            "Read a project",
            S::OK,
            projects::show,
        )
        .returns::<Project>(),
        ApiRoute::new(
            patch.clone(),
            "/projects/{id}",
            "Change a project",
            S::OK,
            projects::update,
        )
        .takes::<UpdateProject>()
        .returns::<Project>()
        .refuses(NAMES_OTHERS),
        ApiRoute::new(
            delete.clone(),
            "/projects/{id}",
            "Delete a project with its secrets and history; with ?down=true its containers and \
             networks are taken down first (and its volumes with &remove_volumes=true)",
            S::NO_CONTENT,
            projects::delete,
        )
        .with_query(&[("down", "boolean"), ("remove_volumes", "boolean")]),
        ApiRoute::new(
            post.clone(),
            "/projects/{id}/source/deploy-key",
            "Generate a new SSH deploy key for a Git project; returns its public half to add to \
             the repository (the private key never leaves the server but inside a deploy job)",
            S::OK,
            sources::generate_deploy_key,
        )
        .returns::<shared::source::GitSourceView>(),
        ApiRoute::new(
            Method::PUT,
            "/projects/{id}/source/token",
            "Set (or with an empty token remove) a Git project's https access token; it is never \
             returned",
            S::OK,
            sources::set_token,
        )
        .takes::<shared::source::SetGitToken>()
        .returns::<shared::source::GitSourceView>(),
        ApiRoute::new(
            delete.clone(),
            "/projects/{id}/source/host-key",
            "Forget a Git project's pinned SSH host key, so the next deploy trusts the key it meets",
            S::OK,
            sources::forget_host_key,
        )
        .returns::<shared::source::GitSourceView>(),
        ApiRoute::new(
            post.clone(),
            "/projects/{id}/actions",
            "Start, stop, restart (the project or one service) or take down a project, as a job",
            S::ACCEPTED,
            projects::act,
        )
        .takes::<LifecycleRequest>()
        .returns::<DeployAccepted>(),
        ApiRoute::new(
            get.clone(),
            "/projects/{id}/services",
            "A project's containers as its agent last reported them",
            S::OK,
            projects::services,
        )
        .returns::<ProjectServices>(),
        ApiRoute::new(
            get.clone(),
            "/service-states",
            "The containers of each of your projects that has any",
            S::OK,
            projects::services_overview,
        )
        .returns::<Vec<ProjectServices>>(),
        ApiRoute::new(
            get.clone(),
            "/projects/{id}/secrets",
            "List a project's secrets, values masked",
            S::OK,
            secrets::list,
        )
        .returns::<Vec<SecretSummary>>(),
        ApiRoute::new(
            post.clone(),
            "/projects/{id}/webhook",
            "Create the project's push webhook; its secret is returned only here",
            S::CREATED,
            webhooks::create,
        )
        .returns::<shared::webhooks::WebhookCreated>(),
        ApiRoute::new(
            get.clone(),
            "/projects/{id}/webhook",
            "The project's push webhook (its URL, never its secret) and its latest deliveries",
            S::OK,
            webhooks::show,
        )
        .returns::<shared::webhooks::Webhook>(),
        ApiRoute::new(
            post.clone(),
            "/projects/{id}/webhook/rotate",
            "Replace the webhook's secret (the URL stays); the new one is returned only here",
            S::OK,
            webhooks::rotate,
        )
        .returns::<shared::webhooks::WebhookCreated>(),
        ApiRoute::new(
            Method::DELETE,
            "/projects/{id}/webhook",
            "Delete the project's push webhook: its URL answers 404 from then on",
            S::NO_CONTENT,
            webhooks::delete,
        ),
        ApiRoute::new(
            get.clone(),
            "/projects/{id}/registry-credentials",
            "A project's registry credentials: registry and username, never the password",
            S::OK,
            registries::list_of_project,
        )
        .returns::<Vec<RegistryCredentialSummary>>(),
        ApiRoute::new(
            put.clone(),
            "/projects/{id}/registry-credentials",
            "Set (or replace) the credential a project's deploys use for one registry; it wins \
             over its agent's for that registry (encrypted at rest, never returned)",
            S::OK,
            registries::set_for_project,
        )
        .takes::<SetRegistryCredential>()
        .returns::<RegistryCredentialSummary>(),
        ApiRoute::new(
            delete.clone(),
            "/projects/{id}/registry-credentials/{registry}",
            "Remove a project's credential for one registry",
            S::NO_CONTENT,
            registries::delete_of_project,
        ),
        ApiRoute::new(
            get.clone(),
            "/agents/{id}/registry-credentials",
            "An agent's registry credentials: registry and username, never the password",
            S::OK,
            registries::list_of_agent,
        )
        .returns::<Vec<RegistryCredentialSummary>>(),
        ApiRoute::new(
            put,
            "/agents/{id}/registry-credentials",
            "Set (or replace) the credential every deploy on an agent uses for one registry \
             (encrypted at rest, never returned)",
            S::OK,
            registries::set_for_agent,
        )
        .takes::<SetRegistryCredential>()
        .returns::<RegistryCredentialSummary>(),
        ApiRoute::new(
            delete.clone(),
            "/agents/{id}/registry-credentials/{registry}",
            "Remove an agent's credential for one registry",
            S::NO_CONTENT,
            registries::delete_of_agent,
        ),
        ApiRoute::new(
            get.clone(),
            "/projects/{id}/deployments",
            "A project's deployments, newest first",
            S::OK,
            deployments::history,
        )
        .returns::<Vec<Deployment>>(),
        ApiRoute::new(
            post.clone(),
            "/secrets",
            "Add a secret (encrypted at rest)",
            S::CREATED,
            secrets::create,
        )
        .takes::<CreateSecret>()
        .returns::<SecretSummary>()
        .refuses(NAMES_OTHERS),
        ApiRoute::new(
            patch,
            "/secrets/{id}",
            "Change a secret's value",
            S::OK,
            secrets::update,
        )
        .takes::<UpdateSecret>()
        .returns::<SecretSummary>(),
        ApiRoute::new(
            delete,
            "/secrets/{id}",
            "Delete a secret",
            S::NO_CONTENT,
            secrets::delete,
        ),
        ApiRoute::new(
            post.clone(),
            "/secrets/{id}/reveal",
            "Reveal a secret's value (recorded in the audit trail)",
            S::OK,
            secrets::reveal,
        )
        .returns::<RevealedSecret>(),
        ApiRoute::new(
            get.clone(),
            "/secrets/{id}/versions",
            "The values a secret has had, newest first (hidden)",
            S::OK,
            secrets::versions,
        )
        .returns::<Vec<SecretVersion>>(),
        ApiRoute::new(
            post.clone(),
            "/secrets/{id}/versions/{version}/reveal",
            "Reveal an earlier value of a secret (recorded in the audit trail)",
            S::OK,
            secrets::reveal_version,
        )
        .returns::<RevealedSecret>(),
        ApiRoute::new(
            post.clone(),
            "/deployments/{id}/redeploy",
            "Run an earlier successful deployment again: its secret values, its images",
            S::ACCEPTED,
            deployments::redeploy,
        )
        .returns::<DeployAccepted>(),
        ApiRoute::new(
            post.clone(),
            "/notification-channels",
            "Add a notification channel; a webhook's signing secret is returned only here",
            S::CREATED,
            notifications::create,
        )
        .takes::<n::CreateChannel>()
        .returns::<n::ChannelCreated>()
        .refuses(&[(
            S::FORBIDDEN,
            "the URL leads to this server or a private network, which the operator has not \
             allowed (STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS)",
        )]),
        ApiRoute::new(
            get.clone(),
            "/notification-channels",
            "List your notification channels (URLs as scheme and host only)",
            S::OK,
            notifications::list,
        )
        .returns::<Vec<n::ChannelSummary>>(),
        ApiRoute::new(
            Method::DELETE,
            "/notification-channels/{id}",
            "Delete a notification channel with its rules and deliveries",
            S::NO_CONTENT,
            notifications::delete,
        ),
        ApiRoute::new(
            post.clone(),
            "/notification-channels/{id}/test",
            "Queue a test notification for a channel",
            S::ACCEPTED,
            notifications::test,
        )
        .returns::<n::TestQueued>(),
        ApiRoute::new(
            get.clone(),
            "/notification-channels/{id}/deliveries",
            "A channel's latest deliveries, newest first",
            S::OK,
            notifications::deliveries,
        )
        .returns::<Vec<n::Delivery>>(),
        ApiRoute::new(
            get.clone(),
            "/projects/{id}/notifications",
            "Which events of a project go to which of your channels",
            S::OK,
            notifications::rules,
        )
        .returns::<n::ProjectNotifications>(),
        ApiRoute::new(
            Method::PUT,
            "/projects/{id}/notifications",
            "Replace which events of a project go to which of your channels",
            S::OK,
            notifications::set_rules,
        )
        .takes::<n::ProjectNotifications>()
        .returns::<n::ProjectNotifications>()
        .refuses(NAMES_OTHERS),
        ApiRoute::new(
            get.clone(),
            "/sessions",
            "Your dashboard sessions (never their secrets); `current` is this request's",
            S::OK,
            account::sessions,
        )
        .returns::<Vec<SessionInfo>>(),
        ApiRoute::new(
            Method::DELETE,
            "/sessions/{id}",
            "End one of your sessions; ending this request's own signs you out",
            S::NO_CONTENT,
            account::revoke_session,
        ),
        ApiRoute::new(
            get.clone(),
            "/api-tokens",
            "Your API tokens (never the tokens); `current` is this request's",
            S::OK,
            account::api_tokens,
        )
        .returns::<Vec<ApiTokenInfo>>(),
        ApiRoute::new(
            Method::DELETE,
            "/api-tokens/{id}",
            "Revoke one of your API tokens",
            S::NO_CONTENT,
            account::revoke_api_token,
        ),
        ApiRoute::new(
            get.clone(),
            "/users",
            "Every user (administrators only)",
            S::OK,
            users::list,
        )
        .returns::<Vec<UserSummary>>()
        .refuses(ADMINS_ONLY),
        ApiRoute::new(
            post.clone(),
            "/users/{id}/disable",
            "Disable a user: no sign-in, and their sessions, API tokens and live feeds end \
             (administrators only; not yourself, not the last administrator)",
            S::OK,
            users::disable,
        )
        .returns::<UserSummary>()
        .refuses(ADMINS_ONLY),
        ApiRoute::new(
            post.clone(),
            "/users/{id}/enable",
            "Let a disabled user sign in again (administrators only)",
            S::OK,
            users::enable,
        )
        .returns::<UserSummary>()
        .refuses(ADMINS_ONLY),
        ApiRoute::new(
            post,
            "/deploy/{project_id}",
            "Deploy a project",
            S::ACCEPTED,
            deployments::deploy,
        )
        .returns::<DeployAccepted>(),
        ApiRoute::new(
            get,
            "/deployments/{id}",
            "A deployment with its history",
            S::OK,
            deployments::show,
        )
        .returns::<Deployment>(),
    ]
}

/// The API's router, to be nested under `/api/v1`: every route of [`routes`], the OpenAPI
/// document, and a JSON 404 for anything else.
pub fn api() -> Router<AppState> {
    routes()
        .into_iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, route.handler)
        })
        .route("/openapi.json", get(openapi::document))
        .fallback(|| async { OpError::NotFound })
}

/// `Json` whose rejections (bad JSON, a field that fails validation) are API errors, and which
/// takes a JSON object only: serde would also read a struct from an array of its fields
/// (`[null, 3600]`), which the document forbids. As an `Option`, a request without a body (and
/// without a `Content-Type`) is `None`.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = OpError;

    async fn from_request(request: Request, state: &S) -> Result<Self, OpError> {
        let axum::Json(Object(value)) =
            <axum::Json<Object<T>> as FromRequest<S>>::from_request(request, state).await?;
        Ok(Self(value))
    }
}

impl<T, S> OptionalFromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = OpError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, OpError> {
        let body =
            <axum::Json<Object<T>> as OptionalFromRequest<S>>::from_request(request, state).await?;
        Ok(body.map(|axum::Json(Object(value))| Self(value)))
    }
}

/// A `T` read from a JSON object and nothing else.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OnlyMaps<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OnlyMaps<T> {
            type Value = T;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an object")
            }

            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<T, M::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(OnlyMaps(PhantomData))
            .map(Object)
    }
}

/// `Query` whose rejections (a flag that is not `true`/`false`) are API errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(OpError))]
pub struct ApiQuery<T>(pub T);

/// `Path` whose rejections (an id that is not a UUID) are API errors.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(OpError))]
pub struct ApiPath<T>(pub T);
