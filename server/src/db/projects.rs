//! Projects, always read through their owner: another user's project is simply not found.

use super::{from_ms, now_ms, on_pool, parse_id, DbError, Store, User};
use shared::api::{CreateProject, Project, UpdateProject};
use shared::registry::PullPolicy;
use shared::target::{DeployTarget, SecretsAs};
use shared::{AgentId, ComposeFile, ProjectId, ProjectName, ProjectPath};
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct ProjectRow {
    id: String,
    name: String,
    agent_id: String,
    path: String,
    compose_file: Option<String>,
    created_at: i64,
    legacy_name_clash: bool,
    pull_policy: String,
    target: String,
    secrets_as: String,
}

impl TryFrom<ProjectRow> for Project {
    type Error = DbError;

    fn try_from(row: ProjectRow) -> Result<Self, DbError> {
        let decode = |error| DbError::Other(sqlx::Error::Decode(Box::new(error)));
        Ok(Self {
            id: parse_id(&row.id)?,
            name: ProjectName::parse(row.name).map_err(decode)?,
            agent_id: parse_id(&row.agent_id)?,
            path: ProjectPath::parse(row.path).map_err(decode)?,
            // Rows written before compose files were typed may hold "" for "as Compose finds it".
            compose_file: row
                .compose_file
                .filter(|file| !file.is_empty())
                .map(ComposeFile::parse)
                .transpose()
                .map_err(decode)?,
            created_at: from_ms(row.created_at),
            name_clash: row.legacy_name_clash,
            // Filled by `ops::sources::attach` from `project_sources`.
            source: None,
            pull_policy: PullPolicy::parse(&row.pull_policy).ok_or_else(|| {
                DbError::Other(sqlx::Error::Decode(
                    format!("unknown pull policy {:?}", row.pull_policy).into(),
                ))
            })?,
            target: DeployTarget::parse(&row.target).ok_or_else(|| {
                DbError::Other(sqlx::Error::Decode(
                    format!("unknown deploy target {:?}", row.target).into(),
                ))
            })?,
            secrets_as: SecretsAs::parse(&row.secrets_as).ok_or_else(|| {
                DbError::Other(sqlx::Error::Decode(
                    format!("unknown secrets mode {:?}", row.secrets_as).into(),
                ))
            })?,
        })
    }
}

const PROJECT_COLUMNS: &str =
    "id, name, agent_id, path, compose_file, created_at, legacy_name_clash, pull_policy, \
     target, secrets_as";

/// Who else already uses a project name, as far as the naming rules care.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameInUse {
    /// Another project of the same owner, on any agent.
    pub by_owner: bool,
    /// Another project on the same agent, whoever owns it.
    pub on_agent: bool,
}

impl Store {
    /// Creates a project owned by `owner`; its agent must already be checked as visible.
    pub async fn create_project(
        &self,
        owner: &User,
        new: &CreateProject,
    ) -> Result<Project, DbError> {
        let id = ProjectId(Uuid::new_v4());
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO projects \
                 (id, owner_id, agent_id, name, path, compose_file, created_at, pull_policy, \
                  target, secrets_as) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(id.to_string())
            .bind(owner.id.to_string())
            .bind(new.agent_id.to_string())
            .bind(new.name.as_str())
            .bind(new.path.as_ref().map(ProjectPath::as_str))
            .bind(new.compose_file.as_ref().map(ComposeFile::as_str))
            .bind(now_ms())
            .bind(new.pull_policy.as_str())
            .bind(new.target.as_str())
            .bind(new.secrets_as.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        self.project(owner, id).await
    }

    /// One of `owner`'s projects.
    pub async fn project(&self, owner: &User, id: ProjectId) -> Result<Project, DbError> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1 AND owner_id = $2");
        let row: ProjectRow = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(id.to_string())
                .bind(owner.id.to_string())
                .fetch_one(pool)
                .await?
        });
        row.try_into()
    }

    /// A project whoever owns it, for the server's own bookkeeping (job dispatch).
    pub async fn project_by_id(&self, id: ProjectId) -> Result<Project, DbError> {
        let sql = format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1");
        let row: ProjectRow = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(id.to_string()).fetch_one(pool).await?
        });
        row.try_into()
    }

    pub async fn projects(&self, owner: &User) -> Result<Vec<Project>, DbError> {
        let sql =
            format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE owner_id = $1 ORDER BY name");
        let rows: Vec<ProjectRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(owner.id.to_string()).fetch_all(pool).await?
        });
        rows.into_iter().map(Project::try_from).collect()
    }

    /// Whether a project of `owner` on `agent` could be named `name`: which other projects
    /// (`except` is the one being changed) already use it.
    pub async fn project_name_in_use(
        &self,
        owner: &User,
        agent: AgentId,
        name: &ProjectName,
        except: Option<ProjectId>,
    ) -> Result<NameInUse, DbError> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT owner_id, agent_id FROM projects \
                 WHERE name = $1 AND id <> $2 AND (owner_id = $3 OR agent_id = $4)",
            )
            .bind(name.as_str())
            .bind(except.map(|id| id.to_string()).unwrap_or_default())
            .bind(owner.id.to_string())
            .bind(agent.to_string())
            .fetch_all(pool)
            .await?
        });
        let (owner, agent) = (owner.id.to_string(), agent.to_string());
        Ok(NameInUse {
            by_owner: rows.iter().any(|(row_owner, _)| *row_owner == owner),
            on_agent: rows.iter().any(|(_, row_agent)| *row_agent == agent),
        })
    }

    /// Applies the given changes in one statement. A project that shared its name on its agent
    /// before names were unique per agent (migration 0006) loses that exemption as soon as its
    /// name or agent changes.
    pub async fn update_project(
        &self,
        owner: &User,
        id: ProjectId,
        changes: &UpdateProject,
    ) -> Result<Project, DbError> {
        let current = self.project(owner, id).await?;
        let name = changes.name.as_ref().unwrap_or(&current.name);
        let agent_id = changes.agent_id.unwrap_or(current.agent_id);
        let path = changes.path.as_ref().unwrap_or(&current.path);
        // `Some(None)` clears it back to "as Compose finds it".
        let compose_file = match &changes.compose_file {
            Some(change) => change.as_ref(),
            None => current.compose_file.as_ref(),
        };
        let pull_policy = changes.pull_policy.unwrap_or(current.pull_policy);
        let target = changes.target.unwrap_or(current.target);
        let secrets_as = changes.secrets_as.unwrap_or(current.secrets_as);
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE projects SET name = $3, agent_id = $4, path = $5, compose_file = $6, \
                 pull_policy = $7, target = $8, secrets_as = $9, legacy_name_clash = (legacy_name_clash AND name = $3 AND agent_id = $4) \
                 WHERE id = $1 AND owner_id = $2",
            )
            .bind(id.to_string())
            .bind(owner.id.to_string())
            .bind(name.as_str())
            .bind(agent_id.to_string())
            .bind(path.as_str())
            .bind(compose_file.map(ComposeFile::as_str))
            .bind(pull_policy.as_str())
            .bind(target.as_str())
            .bind(secrets_as.as_str())
            .execute(pool)
            .await?
            .rows_affected()
        });
        self.project(owner, id).await
    }

    /// Deletes a project with its secrets and deployments.
    pub async fn delete_project(&self, owner: &User, id: ProjectId) -> Result<(), DbError> {
        let deleted = on_pool!(self, pool => {
            sqlx::query("DELETE FROM projects WHERE id = $1 AND owner_id = $2")
                .bind(id.to_string())
                .bind(owner.id.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if deleted == 0 {
            return Err(DbError::NotFound);
        }
        Ok(())
    }
}
