//! The server side of the dashboard: answers its server functions with the same checks and code
//! as the REST API, for the person whose session cookie the request carries.

use crate::db::{Agent, User};
use crate::error::AppError;
use crate::hub::Hub;
use crate::routes;
use crate::token::TokenHash;
use crate::AppState;
use app::ssr::{Answer, Dashboard, Session};
use shared::api::{
    AgentStatus, AgentSummary, CreateJoinToken, CreateProject, CreateSecret, DeployAccepted,
    Deployment, JoinTokenCreated, Project, RevealedSecret, SecretSummary, SignInOptions,
    UpdateSecret, Viewer,
};
use shared::{AgentId, DeploymentId, ProjectId, SecretId, ServiceName};
use std::future::Future;
use std::time::Duration;

/// How long the Project page waits for the agent to read a compose file.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ServerDashboard {
    pub state: AppState,
}

impl ServerDashboard {
    /// Resolves the session, then runs `call` as that person; errors become the message shown.
    fn as_user<'a, T, F, Fut>(&'a self, session: Session, call: F) -> Answer<'a, T>
    where
        T: Send + 'a,
        F: FnOnce(&'a AppState, User) -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, AppError>> + Send + 'a,
    {
        Box::pin(async move {
            let user = self.user(session).await.map_err(message)?;
            call(&self.state, user).await.map_err(message)
        })
    }

    async fn user(&self, session: Session) -> Result<User, AppError> {
        let signed_out = || AppError::Unauthorized("You are signed out; sign in again.".into());
        let token = session.0.ok_or_else(signed_out)?;
        self.state
            .store
            .user_by_session(&TokenHash::of(&token))
            .await?
            .ok_or_else(signed_out)
    }
}

/// What the person reads: client errors as they are, server errors without internals.
fn message(error: AppError) -> String {
    match error {
        AppError::NotFound => "Not found (or not yours).".into(),
        AppError::Internal(error) => {
            tracing::error!(error = format!("{error:#}"), "dashboard call failed");
            "Something went wrong on the server; its log has the details.".into()
        }
        other => other.to_string(),
    }
}

impl Dashboard for ServerDashboard {
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
            routes::agents::list_agents(state, &user).await
        })
    }

    fn revoke_agent(&self, session: Session, id: AgentId) -> Answer<'_, ()> {
        self.as_user(session, move |state, user| async move {
            routes::agents::revoke_agent(state, &user, id).await
        })
    }

    fn create_join_token(
        &self,
        session: Session,
        body: CreateJoinToken,
    ) -> Answer<'_, JoinTokenCreated> {
        self.as_user(session, |state, user| async move {
            crate::provisioning::create_join_token(state, &user, body).await
        })
    }

    fn list_projects(&self, session: Session) -> Answer<'_, Vec<Project>> {
        self.as_user(session, |state, user| async move {
            Ok(state.store.projects(&user).await?)
        })
    }

    fn create_project(&self, session: Session, body: CreateProject) -> Answer<'_, Project> {
        self.as_user(session, |state, user| async move {
            routes::projects::create_project(state, &user, body).await
        })
    }

    fn project(&self, session: Session, id: ProjectId) -> Answer<'_, Project> {
        self.as_user(session, move |state, user| async move {
            Ok(state.store.project(&user, id).await?)
        })
    }

    fn project_services(&self, session: Session, id: ProjectId) -> Answer<'_, Vec<ServiceName>> {
        self.as_user(session, move |state, user| async move {
            let project = state.store.project(&user, id).await?;
            state
                .hub
                .inspect(
                    project.agent_id,
                    project.path,
                    project.compose_file,
                    INSPECT_TIMEOUT,
                )
                .await
                .map_err(AppError::BadRequest)
        })
    }

    fn list_secrets(&self, session: Session, project: ProjectId) -> Answer<'_, Vec<SecretSummary>> {
        self.as_user(session, move |state, user| async move {
            routes::secrets::list_secrets(state, &user, project).await
        })
    }

    fn create_secret(&self, session: Session, body: CreateSecret) -> Answer<'_, SecretSummary> {
        self.as_user(session, |state, user| async move {
            routes::secrets::create_secret(state, &user, body).await
        })
    }

    fn update_secret(
        &self,
        session: Session,
        id: SecretId,
        body: UpdateSecret,
    ) -> Answer<'_, SecretSummary> {
        self.as_user(session, move |state, user| async move {
            routes::secrets::update_secret(state, &user, id, body).await
        })
    }

    fn delete_secret(&self, session: Session, id: SecretId) -> Answer<'_, ()> {
        self.as_user(session, move |state, user| async move {
            Ok(state.store.delete_secret(&user, id).await?)
        })
    }

    fn reveal_secret(&self, session: Session, id: SecretId) -> Answer<'_, RevealedSecret> {
        self.as_user(session, move |state, user| async move {
            routes::secrets::reveal_secret(state, &user, id).await
        })
    }

    fn deploy(&self, session: Session, project: ProjectId) -> Answer<'_, DeployAccepted> {
        self.as_user(session, move |state, user| async move {
            routes::deployments::start_deploy(state, &user, project).await
        })
    }

    fn deployments(&self, session: Session, project: ProjectId) -> Answer<'_, Vec<Deployment>> {
        self.as_user(session, move |state, user| async move {
            Ok(state.store.deployments_of_project(&user, project).await?)
        })
    }

    fn deployment(&self, session: Session, id: DeploymentId) -> Answer<'_, Deployment> {
        self.as_user(session, move |state, user| async move {
            Ok(state.store.deployment(&user, id).await?)
        })
    }
}

/// An agent as the dashboard and API show it: stored facts plus live status from the hub.
pub fn summarize(agent: Agent, hub: &Hub) -> AgentSummary {
    let status = if hub.is_connected(agent.id) {
        AgentStatus::Connected
    } else {
        AgentStatus::Disconnected
    };
    AgentSummary {
        id: agent.id,
        name: agent.name,
        status,
        last_seen: agent.last_seen,
        hostname: agent.hostname,
        agent_version: agent.agent_version,
        docker_version: agent.docker_version,
        compose_version: agent.compose_version,
    }
}
