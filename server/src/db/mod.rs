//! Storage: one `Store` over SQLite (embedded default) or PostgreSQL (`DATABASE_URL`).
//!
//! Both backends run the same SQL: ids are UUID text, times are Unix milliseconds and
//! parameters are written `$1`, which both accept. Each backend has its own migrations
//! (`migrations/sqlite`, `migrations/postgres`), embedded in the binary and applied at start.

mod agents;
mod deployments;
mod join_tokens;
mod notifications;
mod projects;
mod registries;
mod replicas;
mod retention;
mod secrets;
mod services;
mod sessions;
mod sources;
mod users;
mod webhooks;

pub use agents::Agent;
pub use deployments::{NewEvent, NewJob, PendingJob};
pub use join_tokens::JoinTokenState;
pub use notifications::{Attempt, ChannelColumn, ClaimedDelivery, LatestJob, StoredChannel};
pub use projects::NameInUse;
pub use registries::{RegistryOwner, StoredRegistryCredential};
pub use replicas::{HousekeepingLock, Listener, Notice, PostedMessage};
pub use secrets::{PreviousValue, StoredSecret, StoredVersion};
pub use sessions::{
    LocalAccount, LoginAttempt, SessionClient, SessionRecord, MAX_USER_AGENT_CHARS,
};
pub use sources::{SourceColumn, StoredSource};
pub use users::{ApiTokenRecord, DisableOutcome, User, UserRecord};
pub use webhooks::{NewDelivery, StoredHook};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

/// A storage error, split the way callers react to it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("not found")]
    NotFound,
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("could not open the database at {target}: {source}")]
    Open { target: String, source: sqlx::Error },
    #[error("could not apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Other(sqlx::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => Self::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Self::Conflict(db.message().to_string())
            }
            _ => Self::Other(error),
        }
    }
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same query body against whichever pool the store has. The body is compiled once per
/// backend, so each gets its own statically typed sqlx code.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::db::Pool::Sqlite($pool) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The database behind the server, cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
}

/// Makes the data directory 0700 and the SQLite database 0600 (creating them if need be) before
/// SQLite opens it: SQLite gives its WAL and shared-memory files the database file's mode, and
/// all three hold every secret's ciphertext and every session's hash. A directory or database
/// left open to others (a `mkdir` under umask 022, an older server) is closed up.
fn private_database(data_dir: &Path, database: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let close_up = |path: &Path, mode: u32| -> std::io::Result<()> {
        let metadata = std::fs::symlink_metadata(path)?;
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "closing up a data file others could read");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)?;
    close_up(data_dir, 0o700)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(database)
    {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    for file in ["", "-wal", "-shm"] {
        let mut name = database.as_os_str().to_owned();
        name.push(file);
        match close_up(Path::new(&name), 0o600) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Where a sealed value lives: its table, the column naming its row and its own column. The
/// names are the code's own constants, never input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SealedCell {
    table: &'static str,
    row: &'static str,
    column: &'static str,
}

impl SealedCell {
    pub(crate) const fn new(table: &'static str, row: &'static str, column: &'static str) -> Self {
        Self { table, row, column }
    }
}

impl Store {
    /// Replaces a sealed value with the same value sealed under another master key, only if the
    /// cell still holds `old`: a change made meanwhile wins over a key rotation. Returns whether
    /// it did.
    pub(crate) async fn swap_sealed(
        &self,
        cell: SealedCell,
        row: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, DbError> {
        let SealedCell {
            table,
            row: key,
            column,
        } = cell;
        let sql = format!("UPDATE {table} SET {column} = $3 WHERE {key} = $1 AND {column} = $2");
        let changed = on_pool!(self, pool => {
            sqlx::query(&sql)
                .bind(row)
                .bind(old)
                .bind(new)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Opens PostgreSQL when `database_url` is `postgres://…`, otherwise SQLite at
    /// `data_dir/stagely.db` (or the `sqlite:` URL given), then applies pending migrations.
    pub async fn connect(database_url: Option<&str>, data_dir: &Path) -> Result<Self, DbError> {
        let store = match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await
                    .map_err(|source| DbError::Open {
                        target: "PostgreSQL (DATABASE_URL)".into(),
                        source,
                    })?;
                Self {
                    pool: Pool::Postgres(pool),
                }
            }
            Some(url) => Self::open_sqlite(SqliteConnectOptions::from_str(url), url).await?,
            None => {
                let path = data_dir.join("stagely.db");
                private_database(data_dir, &path).map_err(|error| DbError::Open {
                    target: data_dir.display().to_string(),
                    source: sqlx::Error::Io(error),
                })?;
                let options = Ok(SqliteConnectOptions::new().filename(&path));
                Self::open_sqlite(options, &path.display().to_string()).await?
            }
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn open_sqlite(
        options: Result<SqliteConnectOptions, sqlx::Error>,
        target: &str,
    ) -> Result<Self, DbError> {
        let open_error = |source| DbError::Open {
            target: target.to_string(),
            source,
        };
        let options = options
            .map_err(open_error)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL syncs at checkpoints rather than on every commit: a power cut
            // can lose the last commits but never corrupts the database, and writes stop
            // queueing behind an fsync each.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
        })
    }

    async fn migrate(&self) -> Result<(), DbError> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite").run(pool).await?,
            Pool::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// `"sqlite"` or `"postgres"`, for logs.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// Whether [`Store::close`] was called (the server is stopping).
    pub fn is_closed(&self) -> bool {
        match &self.pool {
            Pool::Sqlite(pool) => pool.is_closed(),
            Pool::Postgres(pool) => pool.is_closed(),
        }
    }

    /// Closes every connection; used on shutdown so SQLite checkpoints its WAL.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// Now, as the database stores it.
pub fn now_ms() -> i64 {
    to_ms(OffsetDateTime::now_utc())
}

pub fn to_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Parses an id column; a malformed one is a corrupt row, reported as a decode error.
pub(crate) fn parse_id<T>(value: &str) -> Result<T, DbError>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .parse()
        .map_err(|error| DbError::Other(sqlx::Error::Decode(Box::new(error))))
}
