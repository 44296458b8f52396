//! People: local accounts (the first admin, more from the command line), their API tokens,
//! password checks behind the sign-in throttle, the sessions and tokens a person can list and
//! revoke, disabling and enabling users (admins), and forgetting expired sign-ins.
//!
//! The rules are written once here and shared by the setup page, the sign-in form and the admin
//! CLI: a login is a [`Login`], a password has at least [`MIN_PASSWORD_CHARS`] characters.

use super::throttle::{Attempt, Throttle};
use super::{OpError, OpResult};
use crate::db::{from_ms, DbError, DisableOutcome, LocalAccount, Store, User, UserRecord};
use crate::hub::Hub;
use crate::token::{Token, TokenHash};
use shared::api::{ApiTokenInfo, SessionInfo, UserSummary};
use shared::{ApiTokenId, Login, SessionId, UserId};
use std::net::IpAddr;

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
/// people racing through the setup page, one wins and the other is told to sign in. Counted
/// by the sign-in throttle per client address, before the password is hashed; an instance
/// that is set up already answers without hashing anything.
pub async fn set_up_first_admin(
    store: &Store,
    throttle: &Throttle,
    ip: Option<IpAddr>,
    login: Login,
    password: String,
) -> OpResult<Option<User>> {
    check_password(&password)?;
    if store.has_users().await? {
        return Ok(None);
    }
    let attempt = Attempt::new(ip, None);
    throttle
        .begin(&attempt)
        .map_err(|retry_after| OpError::Throttled { retry_after })?;
    let hash = hash_password(password).await?;
    let admin = store.create_first_admin(login.as_str(), &hash).await?;
    if admin.is_some() {
        throttle.succeeded(&attempt);
    }
    Ok(admin)
}

/// A hash checked when the login is unknown, so that a wrong username takes as long to refuse
/// as a wrong password.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crate::crypto::hash_password("no account has this password").unwrap_or_default()
});

/// What a password sign-in comes to.
#[derive(Debug)]
pub enum LocalSignIn {
    Accepted(User),
    /// A wrong password, an unknown login and a GitHub-only account alike.
    Refused,
    /// The right password of a disabled account (said only to who knows the password).
    Disabled,
}

/// Signs in with a login and password, if the sign-in throttle lets `ip` and the account try
/// now ([`OpError::Throttled`] otherwise, decided before any hashing).
pub async fn sign_in_local(
    store: &Store,
    throttle: &Throttle,
    ip: Option<IpAddr>,
    login: &str,
    password: String,
) -> OpResult<LocalSignIn> {
    let attempt = Attempt::new(ip, Some(login));
    throttle
        .begin(&attempt)
        .map_err(|retry_after| OpError::Throttled { retry_after })?;
    let outcome = verify_local(store, login, password).await?;
    if !matches!(outcome, LocalSignIn::Refused) {
        throttle.succeeded(&attempt);
    }
    Ok(outcome)
}

/// Checks `password` against the local account `login`; each outcome takes as long.
async fn verify_local(store: &Store, login: &str, password: String) -> OpResult<LocalSignIn> {
    let account = store.local_account(login.trim()).await?;
    let stored = match &account {
        Some(LocalAccount {
            password_hash: Some(hash),
            ..
        }) => hash.clone(),
        _ => DUMMY_HASH.clone(),
    };
    let matches = blocking_hash(move || crate::crypto::verify_password(&password, &stored)).await?;
    Ok(match account {
        Some(LocalAccount {
            password_hash: Some(_),
            disabled: true,
            ..
        }) if matches => LocalSignIn::Disabled,
        Some(LocalAccount {
            user,
            password_hash: Some(_),
            ..
        }) if matches => LocalSignIn::Accepted(user),
        _ => LocalSignIn::Refused,
    })
}

/// The sessions of `by` that have not expired; `current` (the hash of the request's session
/// token) marks the one in use.
pub async fn sessions(
    store: &Store,
    by: &User,
    current: Option<&TokenHash>,
) -> OpResult<Vec<SessionInfo>> {
    let records = store.sessions_of(by.id).await?;
    Ok(records
        .into_iter()
        .map(|record| SessionInfo {
            id: record.id,
            created_at: from_ms(record.created_at),
            last_used_at: record.last_used_at.map(from_ms),
            expires_at: from_ms(record.expires_at),
            user_agent: record.user_agent,
            ip: record.ip,
            current: current == Some(&record.token_hash),
        })
        .collect())
}

/// Ends one of `by`'s sessions (their open live feeds close within moments). Returns whether
/// it was `current`, the session of the request: then the person is signed out.
pub async fn revoke_session(
    store: &Store,
    hub: &Hub,
    by: &User,
    id: SessionId,
    current: Option<&TokenHash>,
) -> OpResult<bool> {
    let hash = store
        .delete_session_of(by.id, id)
        .await?
        .ok_or(OpError::NotFound)?;
    store
        .audit(by.id, "revoke_session", &format!("session:{id}"))
        .await?;
    hub.credentials_revoked(by.id);
    tracing::info!(user = %by.login, session = %id, "session revoked");
    Ok(current == Some(&hash))
}

/// The API tokens of `by`; `current` (the hash of the request's token) marks the one in use.
pub async fn api_tokens(
    store: &Store,
    by: &User,
    current: Option<&TokenHash>,
) -> OpResult<Vec<ApiTokenInfo>> {
    let records = store.api_tokens_of(by.id).await?;
    Ok(records
        .into_iter()
        .map(|record| ApiTokenInfo {
            id: record.id,
            created_at: from_ms(record.created_at),
            last_used_at: record.last_used_at.map(from_ms),
            current: current == Some(&record.token_hash),
        })
        .collect())
}

/// Deletes one of `by`'s API tokens; feeds opened with it close within moments.
pub async fn revoke_api_token(store: &Store, hub: &Hub, by: &User, id: ApiTokenId) -> OpResult<()> {
    if !store.delete_api_token_of(by.id, id).await? {
        return Err(OpError::NotFound);
    }
    store
        .audit(by.id, "revoke_api_token", &format!("api_token:{id}"))
        .await?;
    hub.credentials_revoked(by.id);
    tracing::info!(user = %by.login, token = %id, "API token revoked");
    Ok(())
}

fn admin_only(by: &User) -> OpResult<()> {
    if by.is_admin {
        Ok(())
    } else {
        Err(OpError::Forbidden(
            "only an administrator may manage users".into(),
        ))
    }
}

fn summary(record: UserRecord) -> UserSummary {
    UserSummary {
        id: record.id,
        login: record.login,
        is_admin: record.is_admin,
        github_id: record.github_id,
        disabled: record.disabled_at.is_some(),
        created_at: from_ms(record.created_at),
    }
}

/// Every user, for an admin.
pub async fn list(store: &Store, by: &User) -> OpResult<Vec<UserSummary>> {
    admin_only(by)?;
    Ok(store.users().await?.into_iter().map(summary).collect())
}

/// Disables a user (admins only): they cannot sign in (with a password or GitHub), their
/// sessions and API tokens are deleted and their live feeds close within moments. Nobody
/// disables themselves, and the last enabled admin stays.
pub async fn disable(store: &Store, hub: &Hub, by: &User, id: UserId) -> OpResult<UserSummary> {
    admin_only(by)?;
    if id == by.id {
        return Err(OpError::Invalid(
            "you cannot disable your own account; ask another administrator".into(),
        ));
    }
    match store.disable_user(id).await? {
        DisableOutcome::Disabled => {
            store
                .audit(by.id, "disable_user", &format!("user:{id}"))
                .await?;
            hub.credentials_revoked(id);
            tracing::info!(by = %by.login, user = %id, "user disabled");
        }
        DisableOutcome::AlreadyDisabled => {}
        DisableOutcome::LastAdmin => {
            return Err(OpError::Conflict(
                "this is the last administrator who is not disabled; make another user an \
                 administrator first"
                    .into(),
            ))
        }
    }
    Ok(summary(store.user_record(id).await?))
}

/// Lets a disabled user sign in again (admins only). Their old sessions and tokens stay gone.
pub async fn enable(store: &Store, by: &User, id: UserId) -> OpResult<UserSummary> {
    admin_only(by)?;
    if !store.enable_user(id).await? {
        return Err(OpError::NotFound);
    }
    store
        .audit(by.id, "enable_user", &format!("user:{id}"))
        .await?;
    tracing::info!(by = %by.login, user = %id, "user enabled");
    Ok(summary(store.user_record(id).await?))
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
