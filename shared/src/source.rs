//! Where a project's compose files come from: a directory on the agent's host (the default), or
//! a Git repository the agent checks out into its own state directory.
//!
//! A repository URL and a ref end up as arguments of `git` on the agent, so they are checked
//! here, once, with rules stricter than Git's own: only `https://`, `http://`, `ssh://` and the
//! scp-like `user@host:path` form are accepted (never `ext::`, `fd::`, `file://` or a local
//! path, which would let a project run commands or read files on the host), and nothing that
//! starts with `-` (which `git` would read as an option). The agent checks them again before it
//! runs anything, and passes `--` before them.

use crate::SecretValue;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a Git setting was refused; shown to a person as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is not accepted: {rule}")]
pub struct SourceError {
    pub what: &'static str,
    pub value: String,
    pub rule: &'static str,
}

fn refuse(what: &'static str, value: &str, rule: &'static str) -> SourceError {
    SourceError {
        what,
        value: value.chars().take(120).collect(),
        rule,
    }
}

/// Longest repository URL accepted.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest ref accepted.
pub const MAX_REF_BYTES: usize = 255;

const URL_RULE: &str = "use an https://, http://, ssh:// or user@host:path address of a \
     repository (no other transports, no local paths, no credentials in it, not starting with \
     '-', no spaces or control characters, at most 2048 bytes)";
const REF_RULE: &str = "use a branch or tag name: letters, digits and . _ - / + (not starting \
     with '-' or '/', no '..', not ending with '/' or '.lock', at most 255 bytes)";
const SUBDIR_RULE: &str = "use a directory inside the repository, like deploy/prod (relative, \
     no '..', no control characters, at most 255 bytes)";

/// A repository address `git` may fetch from.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GitUrl(String);

/// How the agent reaches a repository, which decides the credential it can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `https://` or `http://`: an access token.
    Http,
    /// `ssh://` or `user@host:path`: a deploy key.
    Ssh,
}

impl GitUrl {
    pub fn parse(value: impl Into<String>) -> Result<Self, SourceError> {
        let value = value.into();
        let value = value.trim().to_string();
        let bad = |rule| Err(refuse("repository URL", &value, rule));
        if value.is_empty() || value.len() > MAX_URL_BYTES {
            return bad(URL_RULE);
        }
        if value.starts_with('-') {
            return bad("it must not start with '-' (git would read it as an option)");
        }
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return bad("it must not contain spaces or control characters");
        }
        let known_scheme = ["https://", "http://", "ssh://"]
            .iter()
            .any(|scheme| value.starts_with(scheme));
        if !known_scheme && value.contains("::") {
            return bad("git's remote helpers (like ext::) are not accepted");
        }
        let host_and_rest = if let Some(rest) = value
            .strip_prefix("https://")
            .or_else(|| value.strip_prefix("http://"))
        {
            let authority = rest.split('/').next().unwrap_or_default();
            if authority.contains('@') {
                return bad("credentials go in the project's token, never in the URL");
            }
            rest
        } else if let Some(rest) = value.strip_prefix("ssh://") {
            rest
        } else if value.contains("://") {
            return bad("only https://, http:// and ssh:// repositories are accepted (no file:// or other transports)");
        } else {
            // scp-like `user@host:path`: a colon before any slash, and a user.
            match value.split_once(':') {
                Some((user_host, path))
                    if !user_host.contains('/') && user_host.contains('@') && !path.is_empty() =>
                {
                    if path.starts_with('-') {
                        return bad("the path must not start with '-'");
                    }
                    user_host
                }
                _ => return bad(URL_RULE),
            }
        };
        let host = host_and_rest
            .split('/')
            .next()
            .unwrap_or_default()
            .rsplit('@')
            .next()
            .unwrap_or_default();
        if host.is_empty() || host.starts_with('-') || host.starts_with(':') {
            return bad("it must name a host, and the host must not start with '-'");
        }
        if let Some((user, _)) = host_and_rest
            .split('/')
            .next()
            .unwrap_or_default()
            .split_once('@')
        {
            if user.is_empty() || user.starts_with('-') {
                return bad("the user must not be empty or start with '-'");
            }
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn transport(&self) -> Transport {
        if self.0.starts_with("https://") || self.0.starts_with("http://") {
            Transport::Http
        } else {
            Transport::Ssh
        }
    }

    /// The host and port the URL names (`None` for the transport's default port): a host key
    /// pinned for one endpoint says nothing about another.
    pub fn endpoint(&self) -> (&str, Option<&str>) {
        let rest = self
            .0
            .split_once("://")
            .map_or(self.0.as_str(), |(_, rest)| rest);
        let authority = match self.0.contains("://") {
            true => rest.split('/').next().unwrap_or_default(),
            // `user@host:path`: no port.
            false => return (self.host(), None),
        };
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        let port = match host_port.strip_prefix('[') {
            Some(bracketed) => bracketed.split_once("]:").map(|(_, port)| port),
            None => host_port.split_once(':').map(|(_, port)| port),
        };
        (self.host(), port.filter(|port| !port.is_empty()))
    }

    /// The host (without user and port), for messages about its host key.
    pub fn host(&self) -> &str {
        let rest = self
            .0
            .split_once("://")
            .map_or(self.0.as_str(), |(_, rest)| rest);
        let authority = match self.transport() {
            Transport::Http => rest.split('/').next().unwrap_or_default(),
            Transport::Ssh if self.0.starts_with("ssh://") => {
                rest.split('/').next().unwrap_or_default()
            }
            Transport::Ssh => rest.split(':').next().unwrap_or_default(),
        };
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        if let Some(bracketed) = host_port.strip_prefix('[') {
            return bracketed.split(']').next().unwrap_or_default();
        }
        host_port.split(':').next().unwrap_or_default()
    }
}

/// A branch or tag name.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GitRef(String);

impl GitRef {
    pub fn parse(value: impl Into<String>) -> Result<Self, SourceError> {
        let value = value.into().trim().to_string();
        let valid = !value.is_empty()
            && value.len() <= MAX_REF_BYTES
            && !value.starts_with('-')
            && !value.starts_with('/')
            && !value.ends_with('/')
            && !value.ends_with(".lock")
            && !value.ends_with('.')
            && !value.contains("..")
            && !value.contains("//")
            && !value.contains("@{")
            && value.split('/').all(|part| !part.starts_with('.'))
            && value.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b'+')
            });
        if valid {
            Ok(Self(value))
        } else {
            Err(refuse("ref", &value, REF_RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A directory inside a repository.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoSubdir(String);

impl RepoSubdir {
    pub fn parse(value: impl Into<String>) -> Result<Self, SourceError> {
        let value = value.into().trim().trim_end_matches('/').to_string();
        let valid = !value.is_empty()
            && value.len() <= 255
            && !value.starts_with('/')
            && !value.starts_with('-')
            && value
                .split('/')
                .all(|part| !part.is_empty() && part != ".." && part != ".")
            && !value.chars().any(char::is_control);
        if valid {
            Ok(Self(value))
        } else {
            Err(refuse("subdirectory", &value, SUBDIR_RULE))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_type {
    ($name:ident, $max:expr, $description:expr, $pattern:expr) => {
        impl TryFrom<String> for $name {
            type Error = SourceError;
            fn try_from(value: String) -> Result<Self, SourceError> {
                Self::parse(value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                let mut schema = schemars::json_schema!({
                    "type": "string",
                    "minLength": 1,
                    "maxLength": $max,
                    "description": $description,
                });
                if let Some(pattern) = $pattern {
                    schema.insert("pattern".into(), pattern.into());
                }
                schema
            }
        }
    };
}

/// The common shapes of an accepted repository URL, for the API document (the check itself is
/// [`GitUrl::parse`]).
#[cfg(feature = "schema")]
const URL_PATTERN: &str = "^(?:(?:https?|ssh)://[A-Za-z0-9][A-Za-z0-9.-]*(?::[1-9][0-9]{0,3})?(?:/[A-Za-z0-9_][A-Za-z0-9._~-]*)+|[A-Za-z0-9_][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9.-]*:[A-Za-z0-9_][A-Za-z0-9._~/-]*)$";

string_type!(GitUrl, MAX_URL_BYTES, URL_RULE, Some(URL_PATTERN));
string_type!(GitRef, MAX_REF_BYTES, REF_RULE, None::<&str>);
string_type!(RepoSubdir, 255, SUBDIR_RULE, None::<&str>);

/// A project's Git repository, as a person configures it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GitSource {
    pub url: GitUrl,
    /// A branch or tag; `None`: the remote's default branch.
    #[serde(default, rename = "ref", deserialize_with = "blank_as_none")]
    pub git_ref: Option<GitRef>,
    /// The directory of the compose file inside the repository; `None`: its root.
    #[serde(default, deserialize_with = "blank_as_none")]
    pub subdir: Option<RepoSubdir>,
    /// The compose file inside `subdir`; `None`: as Compose finds it.
    #[serde(default, deserialize_with = "blank_as_none")]
    pub compose_file: Option<crate::ComposeFile>,
}

/// Where a project's compose files come from, as `PATCH /api/v1/projects/{id}` changes it.
/// JSON: `"directory"` or `{"git": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProjectSource {
    /// The project's `path` on the agent's host.
    Directory,
    /// A Git repository the agent checks out.
    Git(GitSource),
}

/// A project's Git source as the API shows it: the settings, which credentials are set (never
/// their values), the deploy key's public half and the pinned host key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GitSourceView {
    #[serde(flatten)]
    pub source: GitSource,
    /// An https access token is set.
    #[serde(default)]
    pub has_token: bool,
    /// The public half of the project's SSH deploy key (`ssh-ed25519 AAAA… stagely-…`).
    #[serde(default)]
    pub deploy_public_key: Option<String>,
    /// The SSH host key pinned at the first deploy (a `known_hosts` line).
    #[serde(default)]
    pub pinned_host_key: Option<String>,
}

/// `PUT /api/v1/projects/{id}/source/token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SetGitToken {
    /// The access token (`None` or `""` removes it). Sent as the password of `git` over https,
    /// with `username` (default `x-access-token`, which GitHub and Gitea accept; GitLab takes
    /// `oauth2`).
    #[serde(default)]
    pub token: Option<SecretValue>,
    #[serde(default)]
    pub username: Option<String>,
}

/// The commit a deploy checked out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommitInfo {
    /// The full commit id (40 or 64 hex digits).
    pub sha: String,
    /// The first line of its message.
    #[serde(default)]
    pub subject: String,
    /// `Name <email>`.
    #[serde(default)]
    pub author: String,
}

impl CommitInfo {
    /// Whether `sha` is a full commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
    pub fn is_sha(sha: &str) -> bool {
        matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }
}

/// The checkout a deploy job asks for (in `DeployPayload::source`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitCheckout {
    pub url: GitUrl,
    #[serde(default, rename = "ref")]
    pub git_ref: Option<GitRef>,
    /// A redeploy: check out exactly this commit (fetched by its id).
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub subdir: Option<RepoSubdir>,
    #[serde(default)]
    pub compose_file: Option<crate::ComposeFile>,
    /// The https token, sent as the password with `token_username`.
    #[serde(default)]
    pub token: Option<SecretValue>,
    #[serde(default)]
    pub token_username: Option<String>,
    /// The SSH deploy key, in OpenSSH's private key format.
    #[serde(default)]
    pub ssh_key: Option<SecretValue>,
    /// The host key pinned for this project (`known_hosts` lines); `None`: trust on first use.
    #[serde(default)]
    pub known_hosts: Option<String>,
    /// The checked-out repository may take at most this many bytes (0: the agent's default).
    #[serde(default)]
    pub max_bytes: u64,
    /// The fetch may take at most this many seconds (0: the agent's default).
    #[serde(default)]
    pub timeout_secs: u64,
}

impl fmt::Debug for GitCheckout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |value: &Option<SecretValue>| value.as_ref().map(|_| "***");
        f.debug_struct("GitCheckout")
            .field("url", &self.url)
            .field("git_ref", &self.git_ref)
            .field("commit", &self.commit)
            .field("subdir", &self.subdir)
            .field("compose_file", &self.compose_file)
            .field("token", &set(&self.token))
            .field("token_username", &self.token_username)
            .field("ssh_key", &set(&self.ssh_key))
            .field("known_hosts", &self.known_hosts)
            .field("max_bytes", &self.max_bytes)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// What the agent checked out, reported with a deploy's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutReport {
    pub commit: CommitInfo,
    /// The host key the SSH connection used (a `known_hosts` line), to pin.
    #[serde(default)]
    pub host_key: Option<String>,
    /// The directory on the agent's host the project was deployed from.
    #[serde(default)]
    pub directory: Option<String>,
}

fn blank_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<String>,
    T::Error: fmt::Display,
{
    match Option::<String>::deserialize(deserializer)? {
        Some(value) if !value.trim().is_empty() => T::try_from(value)
            .map(Some)
            .map_err(serde::de::Error::custom),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls_that_could_run_or_read_anything_are_refused() {
        for bad in [
            "--upload-pack=touch /tmp/pwned",
            "-oProxyCommand=sh",
            "ext::sh -c touch% /tmp/pwned",
            "fd::17",
            "file:///etc",
            "/srv/repo.git",
            "../repo",
            "repo",
            "ftp://example.com/repo.git",
            "https://user:pass@example.com/repo.git",
            "ssh://-oProxyCommand=sh/repo",
            "git@-oProxyCommand=sh:repo",
            "git@host:-repo",
            "https://example.com/a b",
            "https://exa\nmple.com/repo",
            "",
        ] {
            assert!(GitUrl::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn ordinary_repository_urls_are_accepted_with_their_transport_and_host() {
        for (good, transport, host) in [
            (
                "https://github.com/acme/shop.git",
                Transport::Http,
                "github.com",
            ),
            (
                "http://127.0.0.1:8080/shop.git",
                Transport::Http,
                "127.0.0.1",
            ),
            (
                "ssh://git@git.example.com:2222/acme/shop.git",
                Transport::Ssh,
                "git.example.com",
            ),
            ("git@github.com:acme/shop.git", Transport::Ssh, "github.com"),
            ("ssh://git@[::1]:22/shop.git", Transport::Ssh, "::1"),
        ] {
            let url = GitUrl::parse(good).unwrap();
            assert_eq!(url.transport(), transport, "{good}");
            assert_eq!(url.host(), host, "{good}");
        }
    }

    #[test]
    fn the_endpoint_is_the_host_and_the_port() {
        for (url, endpoint) in [
            ("https://github.com/acme/shop.git", ("github.com", None)),
            (
                "http://127.0.0.1:8080/shop.git",
                ("127.0.0.1", Some("8080")),
            ),
            (
                "ssh://git@h.example:2222/acme/shop.git",
                ("h.example", Some("2222")),
            ),
            ("ssh://git@h.example/acme/shop.git", ("h.example", None)),
            ("git@github.com:acme/shop.git", ("github.com", None)),
            ("ssh://git@[::1]:22/shop.git", ("::1", Some("22"))),
            ("ssh://git@[::1]/shop.git", ("::1", None)),
        ] {
            assert_eq!(GitUrl::parse(url).unwrap().endpoint(), endpoint, "{url}");
        }
    }

    #[test]
    fn refs_that_git_would_read_as_options_or_ranges_are_refused() {
        for bad in [
            "--upload-pack=x",
            "-b",
            "main..dev",
            "/main",
            "main/",
            "x.lock",
            "a b",
            "main@{1}",
            "ma\u{0}in",
            ".hidden",
            "",
        ] {
            assert!(GitRef::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["main", "release/1.2", "v1.0.0", "feature+x"] {
            assert_eq!(GitRef::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn a_checkout_never_prints_its_credentials() {
        let checkout = GitCheckout {
            url: GitUrl::parse("https://example.com/r.git").unwrap(),
            git_ref: None,
            commit: None,
            subdir: None,
            compose_file: None,
            token: Some(SecretValue::new("ghp_topsecret")),
            token_username: None,
            ssh_key: Some(SecretValue::new("-----BEGIN OPENSSH PRIVATE KEY-----")),
            known_hosts: None,
            max_bytes: 0,
            timeout_secs: 0,
        };
        let printed = format!("{checkout:?}");
        assert!(!printed.contains("topsecret"), "{printed}");
        assert!(!printed.contains("PRIVATE"), "{printed}");
    }
}
