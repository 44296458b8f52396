//! People: local accounts (the first admin, more from the command line), their API tokens,
//! password checks, and forgetting expired sign-ins.
//!
//! The rules are written once here and shared by the setup page, the sign-in form and the admin
//! CLI: a login is a [`Login`], a password has at least [`MIN_PASSWORD_CHARS`] characters.

use super::{OpError, OpResult};
use crate::db::{DbError, Store, User};
use crate::token::Token;
use shared::Login;

/// The shortest password a local account accepts.
pub const MIN_PASSWORD_CHARS: usize = shared::api::MIN_PASSWORD_CHARS;

/// How long an abandoned GitHub sign-in is kept (its `state` and PKCE verifier).
pub const SIGN_IN_ATTEMPT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(600);

/// A local user to create.
pub struct NewUser {
    pub login: Login,
    /// Without one the user can only use API tokens.
    pub password: Option<String>,
    /// Admins see every agent, including those registered from the command line.
    pub admin: bool,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("login", &self.login)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("admin", &self.admin)
            .finish()
    }
}

/// Refuses a password shorter than [`MIN_PASSWORD_CHARS`].
pub fn check_password(password: &str) -> OpResult<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(OpError::Invalid(format!(
            "The password must be at least {MIN_PASSWORD_CHARS} characters."
        )));
    }
    Ok(())
}

/// Creates a local user (the operator's `users add`).
pub async fn add(store: &Store, input: NewUser) -> OpResult<User> {
    let password_hash = match &input.password {
        Some(password) => {
            check_password(password)?;
            Some(hash_password(password.clone()).await?)
        }
        None => None,
    };
    store
        .create_user(input.login.as_str(), password_hash.as_deref(), input.admin)
        .await
        .map_err(|error| match error {
            DbError::Conflict(_) => {
                OpError::Conflict(format!("a user named {} already exists", input.login))
            }
            other => other.into(),
        })
}

/// Creates the first user of a fresh instance, an admin. `None` when someone was first: of two
/// people racing through the setup page, one wins and the other is told to sign in.
pub async fn set_up_first_admin(
    store: &Store,
    login: Login,
    password: String,
) -> OpResult<Option<User>> {
    check_password(&password)?;
    let hash = hash_password(password).await?;
    Ok(store.create_first_admin(login.as_str(), &hash).await?)
}

/// A hash checked when the login is unknown, so that a wrong username takes as long to refuse
/// as a wrong password.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::crypto::hash_password("no account has this password").unwrap_or_default()
});

/// The local account `login` if `password` is its password; `None` for a wrong password, an
/// unknown login and a GitHub-only account alike (and each takes as long).
pub async fn verify_local(store: &Store, login: &str, password: String) -> OpResult<Option<User>> {
    let account = store.local_account(login.trim()).await?;
    let stored = match &account {
        Some((_, Some(hash))) => hash.clone(),
        _ => DUMMY_HASH.clone(),
    };
    let matches = blocking_hash(move || crate::crypto::verify_password(&password, &stored)).await?;
    Ok(match account {
        Some((user, Some(_))) if matches => Some(user),
        _ => None,
    })
}

/// Creates an API token for the user named `login`; the token is shown only this once.
pub async fn create_api_token(store: &Store, login: &str) -> OpResult<Token> {
    let user = store
        .user_by_login(login)
        .await
        .map_err(|error| match error {
            DbError::NotFound => OpError::Invalid(format!("no user named {login}")),
            other => other.into(),
        })?;
    let token = Token::generate();
    store.create_api_token(user.id, &token.hash()).await?;
    Ok(token)
}

/// Forgets abandoned GitHub sign-ins (expired sessions go with the retention pass).
pub async fn forget_expired_sign_ins(store: &Store) {
    if let Err(error) = store.delete_expired_logins(SIGN_IN_ATTEMPT_LIFETIME).await {
        tracing::warn!(%error, "could not forget abandoned GitHub sign-ins");
    }
}

async fn hash_password(password: String) -> OpResult<String> {
    blocking_hash(move || crate::crypto::hash_password(&password))
        .await?
        .map_err(|error| OpError::Internal(error.into()))
}

/// Password hashing takes tens of milliseconds of CPU and ~19 MiB: it runs on the blocking
/// pool, two at a time, so a flood of sign-in attempts cannot stall the agents' sockets.
async fn blocking_hash<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> OpResult<T> {
    static PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _permit = PERMITS
        .acquire()
        .await
        .map_err(|error| OpError::Internal(error.into()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| OpError::Internal(error.into()))
}
