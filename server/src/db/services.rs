//! The containers of each project as its agent last reported them: one row per project,
//! replaced whole on every report.

use super::{from_ms, now_ms, on_pool, parse_id, DbError, Store, User};
use shared::runtime::ServiceState;
use shared::{AgentId, ProjectId};
use time::OffsetDateTime;

fn encode(containers: &[ServiceState]) -> Result<String, DbError> {
    serde_json::to_string(containers)
        .map_err(|error| DbError::Other(sqlx::Error::Encode(Box::new(error))))
}

/// Written by this server from what it parsed; unreadable (a newer server's shape) reads as
/// nothing known rather than failing the page.
fn decode(containers: &str) -> Vec<ServiceState> {
    serde_json::from_str(containers).unwrap_or_default()
}

impl Store {
    /// Replaces what is known of `project`'s containers, if it is one of `agent`'s projects
    /// (an agent reports only on its own). Returns whether it was.
    pub async fn record_service_states(
        &self,
        agent: AgentId,
        project: ProjectId,
        containers: &[ServiceState],
    ) -> Result<bool, DbError> {
        let json = encode(containers)?;
        let recorded = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO service_states (project_id, agent_id, containers, updated_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS \
                   (SELECT 1 FROM projects WHERE id = $1 AND agent_id = $2) \
                 ON CONFLICT (project_id) DO UPDATE SET agent_id = excluded.agent_id, \
                   containers = excluded.containers, updated_at = excluded.updated_at",
            )
            .bind(project.to_string())
            .bind(agent.to_string())
            .bind(json)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(recorded == 1)
    }

    /// The projects of `agent` with containers on record other than `listed`: after a full
    /// report, they have none left.
    pub async fn projects_with_states_besides(
        &self,
        agent: AgentId,
        listed: &[ProjectId],
    ) -> Result<Vec<ProjectId>, DbError> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT s.project_id, s.containers FROM service_states s \
                 JOIN projects p ON p.id = s.project_id WHERE p.agent_id = $1",
            )
            .bind(agent.to_string())
            .fetch_all(pool)
            .await?
        });
        let mut besides = Vec::new();
        for (project, containers) in rows {
            let project: ProjectId = parse_id(&project)?;
            if !listed.contains(&project) && !decode(&containers).is_empty() {
                besides.push(project);
            }
        }
        Ok(besides)
    }

    /// A project's containers and when they were reported; `None` if never.
    pub async fn service_states(
        &self,
        project: ProjectId,
    ) -> Result<Option<(Vec<ServiceState>, OffsetDateTime)>, DbError> {
        let row: Option<(String, i64)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT containers, updated_at FROM service_states WHERE project_id = $1")
                .bind(project.to_string())
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(containers, at)| (decode(&containers), from_ms(at))))
    }

    /// The containers of every project of `owner` that has any on record.
    pub async fn service_states_of_owner(
        &self,
        owner: &User,
    ) -> Result<Vec<(ProjectId, Vec<ServiceState>)>, DbError> {
        let rows: Vec<(String, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT s.project_id, s.containers FROM service_states s \
                 JOIN projects p ON p.id = s.project_id WHERE p.owner_id = $1",
            )
            .bind(owner.id.to_string())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(project, containers)| Ok((parse_id(&project)?, decode(&containers))))
            .collect()
    }
}
