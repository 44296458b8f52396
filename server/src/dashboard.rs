//! The server side of the dashboard: answers its server functions for the person whose session
//! cookie the request carries, by calling the same operations as the REST API, so the two can
//! never disagree on a check.

use crate::auth;
use crate::db::User;
use crate::ops::{self, Actor, OpError};
use crate::state::AppState;
use crate::token::TokenHash;
use app::ssr::{Accounts, Answer, Dashboard, Hooks, Registries, Session};
use shared::api::{
    AgentSummary, CreateJoinToken, CreateProject, CreateSecret, DeleteProject, DeployAccepted,
    Deployment, JoinTokenCreated, LifecycleRequest, Project, ProjectServices, RevealedSecret,
    SecretSummary, SecretVersion, SignInOptions, UpdateSecret, Viewer,
};
use shared::api::{ApiTokenInfo, SessionInfo, UserSummary};
use shared::notify;
use shared::{AgentId, DeploymentId, ProjectId, SecretId, ServiceName};
use shared::{ApiTokenId, SessionId, UserId};
use std::future::Future;

pub struct ServerDashboard {
    pub state: AppState,
}

impl ServerDashboard {
    /// Resolves the session, then runs `call` as that person; errors become the message shown.
    fn as_user<'a, T, F, Fut>(&'a self, session: Session, call: F) -> Answer<'a, T>
    where
        T: Send + 'a,
        F: FnOnce(&'a AppState, User) -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, OpError>> + Send + 'a,
    {
        Box::pin(async move {
            let user = self.user(session).await.map_err(message)?;
            call(&self.state, user).await.map_err(message)
        })
    }

    async fn user(&self, session: Session) -> Result<User, OpError> {
        let signed_out = || OpError::Unauthorized("You are signed out; sign in again.".into());
        let token = session.0.ok_or_else(signed_out)?;
        auth::user_of_session(&self.state.store, &token)
            .await?
            .ok_or_else(signed_out)
    }
}

/// What the person reads: client errors as they are, server errors without internals.
fn message(error: OpError) -> String {
    match error {
        OpError::NotFound => "Not found (or not yours).".into(),
        OpError::Internal(error) => {
            tracing::error!(error = format!("{error:#}"), "dashboard call failed");
            "Something went wrong on the server; its log has the details.".into()
        }
        other => other.to_string(),
    }
}

impl Hooks for ServerDashboard {
    fn webhook(
        &self,
        session: Session,
        project: ProjectId,
    ) -> Answer<'_, Option<shared::webhooks::Webhook>> {
        self.as_user(session, move |state, user| async move {
            let public_url = &state.config.public_url;
            match ops::webhooks::show(&state.store, public_url, &user, project).await {
                Ok(hook) => Ok(Some(hook)),
                // The project exists (the page loaded it): no hook yet.
                Err(OpError::NotFound) => {
                    state.store.project(&user, project).await?;
                    Ok(None)
                }
                Err(error) => Err(error),
            }
        })
    }

    fn create_webhook(
        &self,
        session: Session,
        project: ProjectId,
    ) -> Answer<'_, shared::webhooks::WebhookCreated> {
        self.as_user(session, move |state, user| async move {
            let (store, vault) = (&state.store, &state.vault);
            ops::webhooks::create(store, vault, &state.config.public_url, &user, project).await
        })
    }

    fn rotate_webhook(
        &self,
        session: Session,
        project: ProjectId,
    ) -> Answer<'_, shared::webhooks::WebhookCreated> {
        self.as_user(session, move |state, user| async move {
            let (store, vault) = (&state.store, &state.vault);
            ops::webhooks::rotate(store, vault, &state.config.public_url, &user, project).await
        })
    }
}

impl Registries for ServerDashboard {
    fn list_registry_credentials(
        &self,
        session: Session,
        project: ProjectId,
    ) -> Answer<'_, Vec<shared::registry::RegistryCredentialSummary>> {
        self.as_user(session, move |state, user| async move {
            ops::registries::list_of_project(&state.store, &user, project).await
        })
    }

    fn set_registry_credential(
        &self,
        session: Session,
        project: ProjectId,
        body: shared::registry::SetRegistryCredential,
    ) -> Answer<'_, shared::registry::RegistryCredentialSummary> {
        self.as_user(session, move |state, user| async move {
            let owner = crate::db::RegistryOwner::Project(project);
            ops::registries::set(&state.store, &state.vault, &user, owner, body).await
        })
    }

    fn delete_registry_credential(
        &self,
        session: Session,
        project: ProjectId,
        registry: shared::RegistryHost,
    ) -> Answer<'_, ()> {
        self.as_user(session, move |state, user| async move {
            let owner = crate::db::RegistryOwner::Project(project);
            ops::registries::delete(&state.store, &user, owner, &registry).await
        })
    }

    fn set_pull_policy(
        &self,
        session: Session,
        project: ProjectId,
        policy: shared::registry::PullPolicy,
    ) -> Answer<'_, Project> {
        self.as_user(session, move |state, user| async move {
            let changes = shared::api::UpdateProject {
                pull_policy: Some(policy),
                ..Default::default()
            };
            ops::projects::update(&state.store, &user, project, changes).await
        })
    }
}

impl Accounts for ServerDashboard {
    fn list_sessions(&self, session: Session) -> Answer<'_, Vec<SessionInfo>> {
        let current = session.0.as_deref().map(TokenHash::of);
        self.as_user(session, move |state, user| async move {
            ops::users::sessions(&state.store, &user, current.as_ref()).await
        })
    }

    fn revoke_session(&self, session: Session, id: SessionId) -> Answer<'_, bool> {
        let current = session.0.as_deref().map(TokenHash::of);
        self.as_user(session, move |state, user| async move {
            let (store, hub) = (&state.store, &state.hub);
            ops::users::revoke_session(store, hub, &user, id, current.as_ref()).await
        })
    }

    fn list_api_tokens(&self, session: Session) -> Answer<'_, Vec<ApiTokenInfo>> {
        // A dashboard call never carries an API token: none is marked current.
        self.as_user(session, |state, user| async move {
            ops::users::api_tokens(&state.store, &user, None).await
        })
    }

    fn revoke_api_token(&self, session: Session, id: ApiTokenId) -> Answer<'_, ()> {
        self.as_user(session, move |state, user| async move {
            ops::users::revoke_api_token(&state.store, &state.hub, &user, id).await
        })
    }

    fn list_users(&self, session: Session) -> Answer<'_, Vec<UserSummary>> {
        self.as_user(session, |state, user| async move {
            ops::users::list(&state.store, &user).await
        })
    }

    fn disable_user(&self, session: Session, id: UserId) -> Answer<'_, UserSummary> {
        self.as_user(session, move |state, user| async move {
            ops::users::disable(&state.store, &state.hub, &user, id).await
        })
    }

    fn enable_user(&self, session: Session, id: UserId) -> Answer<'_, UserSummary> {
        self.as_user(session, move |state, user| async move {
            ops::users::enable(&state.store, &user, id).await
        })
    }
}

impl Dashboard for ServerDashboard {
    fn session_cookie(&self) -> &'static str {
        self.state.config.session_cookie()
    }

    fn sign_in_options(&self) -> SignInOptions {
        SignInOptions {
            github: self.state.config.github.is_some(),
        }
    }

    fn viewer(&self, session: Session) -> Answer<'_, Viewer> {
        self.as_user(session, |_, user| async move {
            Ok(Viewer {
                id: user.id,
                login: user.login,
                is_admin: user.is_admin,
            })
        })
    }

    fn list_agents(&self, session: Session) -> Answer<'_, Vec<AgentSummary>> {
        self.as_user(session, |state, user| async move {
            ops::agents::list(&state.store, &state.hub, Actor::User(&user)).await
        })
    }

    fn revoke_agent(&self, session: Session, id: AgentId) -> Answer<'_, ()> {
        self.as_user(session, move |state, user| async move {
            ops::agents::revoke(&state.store, &state.hub, Actor::User(&user), id).await
        })
    }

    fn create_join_token(
        &self,
        session: Session,
        body: CreateJoinToken,
    ) -> Answer<'_, JoinTokenCreated> {
        self.as_user(session, |state, user| async move {
            ops::join_tokens::create(&state.store, &state.config.public_url, &user, body).await
        })
    }

    fn list_projects(&self, session: Session) -> Answer<'_, Vec<Project>> {
        self.as_user(session, |state, user| async move {
            ops::projects::list(&state.store, &user).await
        })
    }

    fn create_project(&self, session: Session, body: CreateProject) -> Answer<'_, Project> {
        self.as_user(session, |state, user| async move {
            ops::projects::create(&state.store, &user, body).await
        })
    }

    fn project(&self, session: Session, id: ProjectId) -> Answer<'_, Project> {
        self.as_user(session, move |state, user| async move {
            ops::projects::show(&state.store, &user, id).await
        })
    }

    fn generate_deploy_key(
        &self,
        session: Session,
        id: ProjectId,
    ) -> Answer<'_, shared::source::GitSourceView> {
        self.as_user(session, move |state, user| async move {
            ops::sources::generate_deploy_key(&state.store, &state.vault, &user, id).await
        })
    }

    fn forget_host_key(
        &self,
        session: Session,
        id: ProjectId,
    ) -> Answer<'_, shared::source::GitSourceView> {
        self.as_user(session, move |state, user| async move {
            ops::sources::forget_host_key(&state.store, &user, id).await
        })
    }

    fn project_services(&self, session: Session, id: ProjectId) -> Answer<'_, Vec<ServiceName>> {
        self.as_user(session, move |state, user| async move {
            ops::projects::services(&state.store, &state.hub, &user, id).await
        })
    }

    fn list_secrets(&self, session: Session, project: ProjectId) -> Answer<'_, Vec<SecretSummary>> {
        self.as_user(session, move |state, user| async move {
            ops::secrets::list(&state.store, &state.vault, &user, project).await
        })
    }

    fn create_secret(&self, session: Session, body: CreateSecret) -> Answer<'_, SecretSummary> {
        self.as_user(session, |state, user| async move {
            ops::secrets::create(&state.store, &state.vault, &user, body).await
        })
    }

    fn update_secret(
        &self,
        session: Session,
        id: SecretId,
        body: UpdateSecret,
    ) -> Answer<'_, SecretSummary> {
        self.as_user(session, move |state, user| async move {
            ops::secrets::update(&state.store, &state.vault, &user, id, body).await
        })
    }

    fn delete_secret(&self, session: Session, id: SecretId) -> Answer<'_, ()> {
        self.as_user(session, move |state, user| async move {
            ops::secrets::delete(&state.store, &state.vault, &user, id).await
        })
    }

    fn reveal_secret(&self, session: Session, id: SecretId) -> Answer<'_, RevealedSecret> {
        self.as_user(session, move |state, user| async move {
            ops::secrets::reveal(&state.store, &state.vault, &user, id).await
        })
    }

    fn deploy(&self, session: Session, project: ProjectId) -> Answer<'_, DeployAccepted> {
        self.as_user(session, move |state, user| async move {
            let (store, vault, hub) = (&state.store, &state.vault, &state.hub);
            ops::deployments::start(store, vault, hub, &user, project).await
        })
    }

    fn deployments(&self, session: Session, project: ProjectId) -> Answer<'_, Vec<Deployment>> {
        self.as_user(session, move |state, user| async move {
            ops::deployments::history(&state.store, &user, project).await
        })
    }

    fn deployment(&self, session: Session, id: DeploymentId) -> Answer<'_, Deployment> {
        self.as_user(session, move |state, user| async move {
            ops::deployments::show(&state.store, &user, id).await
        })
    }

    fn redeploy(&self, session: Session, id: DeploymentId) -> Answer<'_, DeployAccepted> {
        self.as_user(session, move |state, user| async move {
            let (store, vault, hub) = (&state.store, &state.vault, &state.hub);
            ops::deployments::redeploy(store, vault, hub, &user, id).await
        })
    }

    fn act(
        &self,
        session: Session,
        project: ProjectId,
        request: LifecycleRequest,
    ) -> Answer<'_, DeployAccepted> {
        self.as_user(session, move |state, user| async move {
            let (store, vault, hub) = (&state.store, &state.vault, &state.hub);
            ops::deployments::act(store, vault, hub, &user, project, request).await
        })
    }

    fn delete_project(
        &self,
        session: Session,
        project: ProjectId,
        options: DeleteProject,
    ) -> Answer<'_, ()> {
        self.as_user(session, move |state, user| async move {
            let (store, vault, hub) = (&state.store, &state.vault, &state.hub);
            ops::projects::delete(store, vault, hub, &user, project, options).await
        })
    }

    fn service_states(&self, session: Session, project: ProjectId) -> Answer<'_, ProjectServices> {
        self.as_user(session, move |state, user| async move {
            ops::services::of_project(&state.store, &user, project).await
        })
    }

    fn service_overview(&self, session: Session) -> Answer<'_, Vec<ProjectServices>> {
        self.as_user(session, |state, user| async move {
            ops::services::overview(&state.store, &user).await
        })
    }

    fn secret_versions(&self, session: Session, id: SecretId) -> Answer<'_, Vec<SecretVersion>> {
        self.as_user(session, move |state, user| async move {
            ops::secrets::versions(&state.store, &user, id).await
        })
    }

    fn reveal_secret_version(
        &self,
        session: Session,
        id: SecretId,
        version: i64,
    ) -> Answer<'_, RevealedSecret> {
        self.as_user(session, move |state, user| async move {
            ops::secrets::reveal_version(&state.store, &state.vault, &user, id, version).await
        })
    }

    fn list_channels(&self, session: Session) -> Answer<'_, Vec<notify::ChannelSummary>> {
        self.as_user(session, |state, user| async move {
            ops::notifications::list_channels(&state.store, &user).await
        })
    }

    fn create_channel(
        &self,
        session: Session,
        body: notify::CreateChannel,
    ) -> Answer<'_, notify::ChannelCreated> {
        self.as_user(session, |state, user| async move {
            ops::notifications::create_channel(
                &state.store,
                &state.vault,
                &state.config.notifications,
                &user,
                body,
            )
            .await
        })
    }

    fn delete_channel(&self, session: Session, id: notify::ChannelId) -> Answer<'_, ()> {
        self.as_user(session, move |state, user| async move {
            ops::notifications::delete_channel(&state.store, &user, id).await
        })
    }

    fn test_channel(
        &self,
        session: Session,
        id: notify::ChannelId,
    ) -> Answer<'_, notify::TestQueued> {
        self.as_user(session, move |state, user| async move {
            let config = &state.config.notifications;
            ops::notifications::send_test(&state.store, config, &user, id).await
        })
    }

    fn channel_deliveries(
        &self,
        session: Session,
        id: notify::ChannelId,
    ) -> Answer<'_, Vec<notify::Delivery>> {
        self.as_user(session, move |state, user| async move {
            ops::notifications::deliveries(&state.store, &user, id).await
        })
    }

    fn project_notifications(
        &self,
        session: Session,
        project: ProjectId,
    ) -> Answer<'_, notify::ProjectNotifications> {
        self.as_user(session, move |state, user| async move {
            ops::notifications::project_rules(&state.store, &user, project).await
        })
    }

    fn set_project_notifications(
        &self,
        session: Session,
        project: ProjectId,
        body: notify::ProjectNotifications,
    ) -> Answer<'_, notify::ProjectNotifications> {
        self.as_user(session, move |state, user| async move {
            ops::notifications::set_project_rules(&state.store, &user, project, body).await
        })
    }
}
