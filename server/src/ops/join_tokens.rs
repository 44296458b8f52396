//! Join tokens: single-use, expiring invitations that turn a fresh host into a registered agent.
//!
//! A person creates one (dashboard or API) and runs the command it comes with on the new host.
//! The agent presents it on `/api/v1/join`, introduces itself with a hello and receives its own
//! agent token in exchange ([`redeem`]). The join token is spent in the same transaction that
//! registers the agent, so a token is never spent without an agent to show for it, nor used
//! twice.

use super::{OpError, OpResult};
use crate::db::{JoinTokenState, Store, User};
use crate::token::{Token, TokenHash};
use shared::api::{CreateJoinToken, JoinTokenCreated};
use shared::protocol::{Hello, Joined};
use shared::AgentName;
use time::OffsetDateTime;

/// How long a join token lasts unless asked otherwise.
const DEFAULT_LIFETIME_SECS: u64 = 3600;
const LIFETIME_RANGE: std::ops::RangeInclusive<u64> = 60..=7 * 24 * 3600;

/// Creates a join token and the command that uses it; `public_url` is where the new host reaches
/// this server.
pub async fn create(
    store: &Store,
    public_url: &str,
    by: &User,
    input: CreateJoinToken,
) -> OpResult<JoinTokenCreated> {
    let lifetime = input.expires_in_secs.unwrap_or(DEFAULT_LIFETIME_SECS);
    if !LIFETIME_RANGE.contains(&lifetime) {
        return Err(OpError::Invalid(
            "expires_in_secs must be from 60 (a minute) to 604800 (a week)".into(),
        ));
    }
    let token = Token::join();
    let expires_at = OffsetDateTime::now_utc() + time::Duration::seconds(lifetime as i64);
    let name = input.name.as_ref().map(AgentName::as_str);
    store
        .create_join_token(&token.hash(), by.id, name, crate::db::to_ms(expires_at))
        .await?;
    tracing::info!(user = %by.login, expires_at = %expires_at, "join token created");
    let command = install_command(public_url, token.expose());
    Ok(JoinTokenCreated {
        token: token.expose().to_string(),
        expires_at,
        cloud_init: cloud_init(&command),
        command,
    })
}

/// The one line that installs and registers an agent.
pub fn install_command(public_url: &str, token: &str) -> String {
    format!("curl -fsSL {public_url}/install.sh | sh -s -- --token {token}")
}

/// A cloud-init user-data file that runs `command` once, on the first boot.
pub fn cloud_init(command: &str) -> String {
    #[derive(serde::Serialize)]
    struct UserData<'a> {
        runcmd: [&'a str; 1],
    }
    let body = serde_yaml::to_string(&UserData { runcmd: [command] }).unwrap_or_default();
    format!("#cloud-config\n# Registers this machine as a Stagely agent on its first boot.\n{body}")
}

/// Whether a presented join token can still be used; the error says why not, in words for the
/// person running the installer.
pub async fn check(store: &Store, token: &TokenHash) -> OpResult<()> {
    refusal(store.join_token_state(token).await?)
}

fn refusal(token: JoinTokenState) -> OpResult<()> {
    let create_another =
        "create a new one in the dashboard (Servers → Add server) or with POST /api/v1/join-tokens";
    match token {
        JoinTokenState::Valid => Ok(()),
        JoinTokenState::Used => Err(OpError::Unauthorized(format!(
            "this join token was already used; {create_another}"
        ))),
        JoinTokenState::Expired(at) => Err(OpError::Unauthorized(format!(
            "this join token expired at {}; {create_another}",
            crate::db::from_ms(at)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        ))),
        JoinTokenState::Unknown => Err(OpError::Unauthorized(format!(
            "this join token is not known to this server; {create_another}"
        ))),
    }
}

/// Trades a join token for a registered agent and its own token, named after the host that
/// introduced itself with `hello`. The error is the reason sent to the agent.
pub async fn redeem(store: &Store, token: &TokenHash, hello: &Hello) -> Result<Joined, String> {
    super::agents::check_hello(hello)?;
    let host = hello.hostname.trim();
    let name = AgentName::parse(host)
        .map_or_else(|_| "new host".to_string(), |name| name.as_str().to_string());
    let agent_token = Token::generate();
    let redeemed = store
        .redeem_join_token(token, &name, &agent_token.hash())
        .await
        .map_err(|error| {
            tracing::error!(%error, "could not redeem a join token");
            "the server could not register the agent; see its log".to_string()
        })?;
    let Some(agent) = redeemed else {
        // Spent or expired between the check and now: say which.
        return Err(match check(store, token).await {
            Err(error @ OpError::Unauthorized(_)) => error.to_string(),
            _ => "this join token can no longer be used".into(),
        });
    };
    tracing::info!(agent_id = %agent.id, name = %agent.name, host = %host, "agent joined with a join token");
    Ok(Joined {
        agent_id: agent.id,
        name: agent.name,
        token: agent_token.expose().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cloud_init_file_runs_the_install_command_once() {
        let command = install_command("https://deploy.example.com", "stj_abc-DEF_123");
        let file = cloud_init(&command);
        assert!(file.starts_with("#cloud-config\n"), "{file}");
        let parsed: serde_yaml::Value = serde_yaml::from_str(&file).unwrap();
        assert_eq!(parsed["runcmd"][0].as_str(), Some(command.as_str()));
        assert_eq!(parsed["runcmd"].as_sequence().map(Vec::len), Some(1));
    }
}
