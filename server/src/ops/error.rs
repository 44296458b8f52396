//! `OpError`: why an operation did not happen, in the domain's words.
//!
//! Every operation in [`crate::ops`] returns it, and so do the credential checks in
//! [`crate::auth`]. It knows nothing about HTTP: the REST API maps it to a status code in one
//! place (`error_response`), the dashboard turns it into a sentence for the person, and the admin
//! CLI prints it. Messages of client errors say what to fix; `Internal` keeps its cause for the
//! log and is never shown.

use crate::db::DbError;
use crate::vault::VaultError;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No credentials, or credentials that name nobody.
    #[error("{0}")]
    Unauthorized(String),
    /// The input breaks a rule; the message names the rule.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this (e.g. a request from another site).
    #[error("{0}")]
    Forbidden(String),
    /// No such thing, or it is not the caller's: the two are never told apart.
    #[error("not found")]
    NotFound,
    /// The body names something (an agent, a project, a channel) that does not exist or is not
    /// the caller's: the request is well formed, its target is there, what it refers to is not
    /// (422, saying which). The two cases are never told apart, as with ids in the path.
    #[error("{0}")]
    NoSuch(String),
    /// It exists already, or changed meanwhile.
    #[error("{0}")]
    Conflict(String),
    /// Too much at once (agents reconnecting after a restart): come back in a few seconds.
    #[error("{0}; retry in a few seconds")]
    Busy(String),
    /// Too many sign-in attempts from this address or for this account: come back after
    /// `retry_after` (see [`crate::ops::throttle`]).
    #[error("too many sign-in attempts; retry in {} seconds", retry_after.as_secs().max(1))]
    Throttled { retry_after: std::time::Duration },
    /// A stored secret that cannot be decrypted (wrong key, tampered row): the message names
    /// the problem and holds nothing secret.
    #[error("{0}")]
    Unreadable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What every operation returns.
pub type OpResult<T> = Result<T, OpError>;

impl From<DbError> for OpError {
    /// A conflict an operation did not word itself becomes a fixed sentence: the database's
    /// own message names tables, columns and constraints, which are for the log only.
    fn from(error: DbError) -> Self {
        match error {
            DbError::NotFound => Self::NotFound,
            DbError::Conflict(what) => {
                tracing::info!(conflict = %what, "refused: already exists");
                Self::Conflict("it already exists, or changed meanwhile; reload and retry".into())
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<VaultError> for OpError {
    fn from(error: VaultError) -> Self {
        Self::Unreadable(error.to_string())
    }
}

impl From<shared::NameError> for OpError {
    fn from(error: shared::NameError) -> Self {
        Self::Invalid(error.to_string())
    }
}
