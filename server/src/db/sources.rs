//! Git project sources (`project_sources`): the repository, its sealed credentials and the
//! pinned host key, one row per project deployed from Git. Credentials are stored as the vault
//! sealed them; this layer never sees plaintext.

use super::{now_ms, on_pool, DbError, SealedCell, Store};
use shared::source::{CommitInfo, GitRef, GitSource, GitUrl, RepoSubdir};
use shared::{ComposeFile, DeploymentId, ProjectId};

/// A project's source row as stored.
#[derive(Clone)]
pub struct StoredSource {
    pub project_id: ProjectId,
    pub source: GitSource,
    /// The sealed https token.
    pub token: Option<Vec<u8>>,
    pub token_username: Option<String>,
    /// The sealed SSH private key.
    pub ssh_key: Option<Vec<u8>>,
    pub ssh_public_key: Option<String>,
    pub host_key: Option<String>,
}

impl std::fmt::Debug for StoredSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSource")
            .field("project_id", &self.project_id)
            .field("source", &self.source)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ssh_key", &self.ssh_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct SourceRow {
    project_id: String,
    url: String,
    git_ref: Option<String>,
    subdir: Option<String>,
    compose_file: Option<String>,
    token: Option<Vec<u8>>,
    token_username: Option<String>,
    ssh_key: Option<Vec<u8>>,
    ssh_public_key: Option<String>,
    host_key: Option<String>,
}

const SOURCE_COLUMNS: &str = "project_id, url, git_ref, subdir, compose_file, token, \
     token_username, ssh_key, ssh_public_key, host_key";

impl TryFrom<SourceRow> for StoredSource {
    type Error = DbError;

    fn try_from(row: SourceRow) -> Result<Self, DbError> {
        fn decode<E: std::error::Error + Send + Sync + 'static>(error: E) -> DbError {
            DbError::Other(sqlx::Error::Decode(Box::new(error)))
        }
        Ok(Self {
            project_id: super::parse_id(&row.project_id)?,
            source: GitSource {
                url: GitUrl::parse(row.url).map_err(decode)?,
                git_ref: row.git_ref.map(GitRef::parse).transpose().map_err(decode)?,
                subdir: row
                    .subdir
                    .map(RepoSubdir::parse)
                    .transpose()
                    .map_err(decode)?,
                compose_file: row
                    .compose_file
                    .map(ComposeFile::parse)
                    .transpose()
                    .map_err(decode)?,
            },
            token: row.token,
            token_username: row.token_username,
            ssh_key: row.ssh_key,
            ssh_public_key: row.ssh_public_key,
            host_key: row.host_key,
        })
    }
}

impl Store {
    /// The project's Git source, if it has one.
    pub async fn project_source(
        &self,
        project: ProjectId,
    ) -> Result<Option<StoredSource>, DbError> {
        let sql = format!("SELECT {SOURCE_COLUMNS} FROM project_sources WHERE project_id = $1");
        let row: Option<SourceRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).bind(project.to_string()).fetch_optional(pool).await?
        });
        row.map(StoredSource::try_from).transpose()
    }

    /// Every Git source (for a key rotation).
    pub async fn all_project_sources(&self) -> Result<Vec<StoredSource>, DbError> {
        let sql = format!("SELECT {SOURCE_COLUMNS} FROM project_sources ORDER BY project_id");
        let rows: Vec<SourceRow> = on_pool!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        });
        rows.into_iter().map(StoredSource::try_from).collect()
    }

    /// Sets the repository settings of a project, keeping its pinned host key when the
    /// repository's host and port stay the same and its token when the host does (another
    /// endpoint forgets the pin, another host the token). One statement: the pin is kept only if the stored URL is still the one compared
    /// (a concurrent change of the URL forgets it).
    pub async fn set_project_source(
        &self,
        project: ProjectId,
        source: &GitSource,
    ) -> Result<(), DbError> {
        let now = now_ms();
        let current = self.project_source(project).await?;
        let keep_if = |same: &dyn Fn(&GitUrl) -> bool| {
            current
                .as_ref()
                .filter(|current| same(&current.source.url))
                .map(|current| current.source.url.as_str().to_string())
        };
        let keep_host_key_if_url = keep_if(&|url| url.endpoint() == source.url.endpoint());
        // A token is for one host: another host never receives it.
        let keep_token_if_url = keep_if(&|url| url.host() == source.url.host());
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO project_sources (project_id, url, git_ref, subdir, compose_file, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (project_id) DO UPDATE SET url = excluded.url, git_ref = excluded.git_ref, \
                 subdir = excluded.subdir, compose_file = excluded.compose_file, \
                 updated_at = excluded.updated_at, \
                 host_key = CASE WHEN project_sources.url = $7 THEN project_sources.host_key \
                 ELSE NULL END, \
                 token = CASE WHEN project_sources.url = $8 THEN project_sources.token \
                 ELSE NULL END, \
                 token_username = CASE WHEN project_sources.url = $8 \
                 THEN project_sources.token_username ELSE NULL END",
            )
            .bind(project.to_string())
            .bind(source.url.as_str())
            .bind(source.git_ref.as_ref().map(GitRef::as_str))
            .bind(source.subdir.as_ref().map(RepoSubdir::as_str))
            .bind(source.compose_file.as_ref().map(ComposeFile::as_str))
            .bind(now)
            .bind(keep_host_key_if_url)
            .bind(keep_token_if_url)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Removes a project's Git source with its credentials.
    pub async fn delete_project_source(&self, project: ProjectId) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM project_sources WHERE project_id = $1")
                .bind(project.to_string())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Stores a sealed https token (or removes it with `None`).
    pub async fn set_source_token(
        &self,
        project: ProjectId,
        token: Option<&[u8]>,
        username: Option<&str>,
    ) -> Result<bool, DbError> {
        let changed = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE project_sources SET token = $2, token_username = $3, updated_at = $4 \
                 WHERE project_id = $1",
            )
            .bind(project.to_string())
            .bind(token)
            .bind(username)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Stores a sealed SSH deploy key and its public half.
    pub async fn set_source_ssh_key(
        &self,
        project: ProjectId,
        sealed: &[u8],
        public_key: &str,
    ) -> Result<bool, DbError> {
        let changed = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE project_sources SET ssh_key = $2, ssh_public_key = $3, updated_at = $4 \
                 WHERE project_id = $1",
            )
            .bind(project.to_string())
            .bind(sealed)
            .bind(public_key)
            .bind(now_ms())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Replaces a sealed credential during a key rotation, only if it is still `old`.
    pub async fn replace_source_credential(
        &self,
        project: ProjectId,
        column: SourceColumn,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, DbError> {
        let cell = SealedCell::new("project_sources", "project_id", column.name());
        self.swap_sealed(cell, &project.to_string(), old, new).await
    }

    /// Pins (or with `None` forgets) the SSH host key of a project's repository.
    pub async fn set_source_host_key(
        &self,
        project: ProjectId,
        host_key: Option<&str>,
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE project_sources SET host_key = $2 WHERE project_id = $1")
                .bind(project.to_string())
                .bind(host_key)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Pins a host key only if none is pinned yet (the first deploy's).
    pub async fn pin_source_host_key(
        &self,
        project: ProjectId,
        host_key: &str,
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE project_sources SET host_key = $2 WHERE project_id = $1 AND host_key IS NULL",
            )
            .bind(project.to_string())
            .bind(host_key)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records the commit a deployment checked out.
    pub async fn set_deployment_commit(
        &self,
        id: DeploymentId,
        commit: &CommitInfo,
    ) -> Result<(), DbError> {
        let json = serde_json::to_string(commit)
            .map_err(|error| DbError::Other(sqlx::Error::Encode(Box::new(error))))?;
        on_pool!(self, pool => {
            sqlx::query("UPDATE deployments SET commit_info = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(json)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Sets where a Git project lives on its agent's host (reported by the agent after a
    /// deploy), so lifecycle jobs and log streams find its compose file.
    pub async fn set_project_checkout_path(
        &self,
        project: ProjectId,
        path: &shared::ProjectPath,
    ) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE projects SET path = $2 WHERE id = $1")
                .bind(project.to_string())
                .bind(path.as_str())
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

/// Which sealed credential of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceColumn {
    Token,
    SshKey,
}

impl SourceColumn {
    fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::SshKey => "ssh_key",
        }
    }
}
