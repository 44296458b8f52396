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
use shared::api::{
    CreateJoinToken, JoinTokenCreated, JOIN_TOKEN_DEFAULT_SECS, JOIN_TOKEN_MAX_SECS,
    JOIN_TOKEN_MIN_SECS,
};
use shared::protocol::{Hello, Joined};
use shared::AgentName;
use time::OffsetDateTime;

/// Creates a join token and the command that uses it; `public_url` is where the new host reaches
/// this server.
pub async fn create(
    store: &Store,
    public_url: &str,
    by: &User,
    input: CreateJoinToken,
) -> OpResult<JoinTokenCreated> {
    let lifetime = input.expires_in_secs.unwrap_or(JOIN_TOKEN_DEFAULT_SECS);
    if !(JOIN_TOKEN_MIN_SECS..=JOIN_TOKEN_MAX_SECS).contains(&lifetime) {
        return Err(OpError::Invalid(format!(
            "expires_in_secs must be from {JOIN_TOKEN_MIN_SECS} (a minute) to \
             {JOIN_TOKEN_MAX_SECS} (a week)"
        )));
    }
    let token = Token::join();
    let expires_at = OffsetDateTime::now_utc() + time::Duration::seconds(lifetime as i64);
    let name = input.name.as_ref().map(AgentName::as_str);
    store
        .create_join_token(&token.hash(), by.id, name, crate::db::to_ms(expires_at))
        .await?;
    tracing::info!(user = %by.login, expires_at = %expires_at, "join token created");
    Ok(JoinTokenCreated {
        token: token.expose().to_string(),
        expires_at,
        command: install_command(public_url, token.expose()),
        cloud_init: cloud_init(public_url, token.expose()),
    })
}

/// The one line that installs and registers an agent. The join token reaches the script in the
/// environment of `sh`, never in an argument list (which every user of the host can read in
/// `ps`); it is made of URL-safe base64, so it needs no quoting. POSIX sh; `wget -qO-` may stand
/// in for `curl -fsSL`.
pub fn install_command(public_url: &str, token: &str) -> String {
    let (fetch, opt_in) = fetch_and_opt_in(public_url);
    format!("{fetch} {public_url}/install.sh | {opt_in}STAGELY_JOIN_TOKEN={token} sh")
}

/// How to fetch the installer from `public_url` (https only, TLS 1.2 or later, for an https
/// server), and the opt-in the installer and agent need for plain http to another host (which
/// this server only runs with when its operator allowed it).
fn fetch_and_opt_in(public_url: &str) -> (&'static str, &'static str) {
    let fetch = if public_url.starts_with("https://") {
        "curl --proto '=https' --tlsv1.2 -fsSL"
    } else {
        "curl -fsSL"
    };
    let opt_in = if shared::transport::is_cleartext_to_another_host(public_url) {
        "STAGELY_ALLOW_INSECURE_HTTP=1 "
    } else {
        ""
    };
    (fetch, opt_in)
}

/// Where a cloud-init file puts the join token: on `/run` (memory, gone at the next boot at the
/// latest), readable by root alone; the installer deletes it once the host has joined.
pub const JOIN_TOKEN_FILE: &str = "/run/stagely-join-token";

/// A cloud-init user-data file that installs and registers the machine on its first boot.
///
/// cloud-init hands each `runcmd` entry to a shell on that shell's command line, where every
/// user of the machine can read it (`ps`) for as long as the install runs. So the join token
/// is not in it: `write_files` puts it in [`JOIN_TOKEN_FILE`] (0600, root), and the entry runs
/// the installer with `STAGELY_JOIN_TOKEN_FILE` naming that file.
pub fn cloud_init(public_url: &str, token: &str) -> String {
    // Every scalar is a double-quoted YAML string written as a JSON string: JSON's escapes are
    // a subset of YAML's, and quoting keeps YAML 1.1 (cloud-init's PyYAML) from reading 0600
    // as the number 384. Written by hand, so the server needs no YAML library.
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    let (fetch, opt_in) = fetch_and_opt_in(public_url);
    let runcmd = format!(
        "{fetch} {public_url}/install.sh | {opt_in}STAGELY_JOIN_TOKEN_FILE={JOIN_TOKEN_FILE} sh"
    );
    format!(
        "#cloud-config\n\
         # Registers this machine as a Stagely agent on its first boot.\n\
         write_files:\n\
         - path: {path}\n  permissions: {permissions}\n  owner: {owner}\n  content: {content}\n\
         runcmd:\n\
         - {runcmd}\n",
        path = quoted(JOIN_TOKEN_FILE),
        permissions = quoted("0600"),
        owner = quoted("root:root"),
        content = quoted(token),
        runcmd = quoted(&runcmd),
    )
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
    fn the_cloud_init_file_writes_the_join_token_to_a_root_only_file_and_runs_the_installer_once() {
        for (url, token) in [
            ("https://deploy.example.com", "stj_abc-DEF_123"),
            // What YAML would read otherwise: a comment, a flow sequence, an escape.
            ("https://deploy.example.com/a #b", "stj_'\"\\: [x] {y}"),
        ] {
            let file = cloud_init(url, token);
            let parsed: serde_yaml::Value = serde_yaml::from_str(&file).unwrap();
            assert_eq!(
                parsed["write_files"][0]["content"].as_str(),
                Some(token),
                "{file}"
            );
            let runcmd = parsed["runcmd"][0].as_str().unwrap_or_default();
            // Over https the download is held to https, redirects included.
            assert!(
                runcmd.starts_with(&format!(
                    "curl --proto '=https' --tlsv1.2 -fsSL {url}/install.sh"
                )),
                "{file}"
            );
        }
        let token = "stj_abc-DEF_123";
        let file = cloud_init("https://deploy.example.com", token);
        assert!(file.starts_with("#cloud-config\n"), "{file}");
        // A quoted string: YAML 1.1 (cloud-init's PyYAML) reads a bare 0600 as the number 384.
        assert!(file.contains("permissions: \"0600\""), "{file}");
        let parsed: serde_yaml::Value = serde_yaml::from_str(&file).unwrap();
        let written = &parsed["write_files"];
        assert_eq!(written.as_sequence().map(Vec::len), Some(1), "{file}");
        assert_eq!(written[0]["path"].as_str(), Some(JOIN_TOKEN_FILE));
        assert_eq!(written[0]["permissions"].as_str(), Some("0600"));
        assert_eq!(written[0]["owner"].as_str(), Some("root:root"));
        assert_eq!(written[0]["content"].as_str().map(str::trim), Some(token));
        assert_eq!(parsed["runcmd"].as_sequence().map(Vec::len), Some(1));
        assert_eq!(
            parsed["runcmd"][0].as_str(),
            Some(
                "curl --proto '=https' --tlsv1.2 -fsSL https://deploy.example.com/install.sh | \
                 STAGELY_JOIN_TOKEN_FILE=/run/stagely-join-token sh"
            )
        );
    }

    #[test]
    fn the_command_carries_the_join_token_in_the_environment_of_sh_and_cloud_init_in_a_file() {
        let token = "stj_abc-DEF_123";
        let command = install_command("https://deploy.example.com", token);
        assert_eq!(
            command,
            "curl --proto '=https' --tlsv1.2 -fsSL https://deploy.example.com/install.sh | \
             STAGELY_JOIN_TOKEN=stj_abc-DEF_123 sh"
        );
        // Plain http: to this host as it is, elsewhere only with the opt-in the server had.
        assert_eq!(
            install_command("http://127.0.0.1:3000", token),
            "curl -fsSL http://127.0.0.1:3000/install.sh | STAGELY_JOIN_TOKEN=stj_abc-DEF_123 sh"
        );
        assert_eq!(
            install_command("http://10.0.0.5:3000", token),
            "curl -fsSL http://10.0.0.5:3000/install.sh | STAGELY_ALLOW_INSECURE_HTTP=1 \
             STAGELY_JOIN_TOKEN=stj_abc-DEF_123 sh"
        );
        assert_eq!(command.matches(token).count(), 1, "{command}");
        let file = cloud_init("https://deploy.example.com", token);
        // cloud-init runs a `runcmd` entry as `sh -c '<entry>'`: the whole entry is on that
        // shell's command line for as long as the install runs, so the token must not be in it.
        assert_eq!(file.matches(token).count(), 1, "{file}");
        let parsed: serde_yaml::Value = serde_yaml::from_str(&file).unwrap();
        let runcmd = parsed["runcmd"][0].as_str().unwrap_or_default();
        assert!(!runcmd.contains(token), "{runcmd}");
        assert!(!file.contains("STAGELY_JOIN_TOKEN="), "{file}");
        for text in [command.as_str(), file.as_str()] {
            assert!(!text.contains("--token"), "{text}");
            assert!(!text.contains("sh -s"), "{text}");
        }
    }
}
