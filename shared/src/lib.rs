//! Types that cross a process boundary in Stagely: the agent protocol, the REST/server-function
//! bodies and the validated names they carry.
//!
//! Everything here is defined once and used by the server, the agent and the WASM dashboard, so
//! a field added on one side is seen by the others at compile time. The crate depends only on
//! serde, uuid and time, which keeps it buildable for `wasm32-unknown-unknown`.

pub mod ansi;
pub mod api;
pub mod ids;
pub mod names;
pub mod notify;
pub mod protocol;
pub mod registry;
pub mod runtime;
pub mod secret;
pub mod source;
pub mod target;
pub mod transport;
pub mod webhooks;

pub use ids::{AgentId, ApiTokenId, DeploymentId, JobId, ProjectId, SecretId, SessionId, UserId};
pub use names::{
    AgentName, ChannelName, ComposeFile, EnvKey, Login, NameError, ProjectName, ProjectPath,
    RegistryHost, RegistryUsername, ServiceName,
};
pub use protocol::{AgentToServer, ServerToAgent, PROTOCOL_VERSION};
pub use secret::{DeployPayload, Secret, SecretScope, SecretValue};

/// The name of the dashboard's session cookie: the server sets it at sign-in, and the dashboard's
/// server functions read it.
pub const SESSION_COOKIE: &str = "stagely_session";
/// The session cookie's name when the server is reached over https: the `__Host-` prefix makes
/// the browser accept it only if it is `Secure`, has `Path=/` and no `Domain`, so a sibling
/// subdomain or a plain-http page cannot plant or shadow it.
pub const SECURE_SESSION_COOKIE: &str = "__Host-stagely_session";

/// The session cookie's name for a server reached over https or not: the server sets and
/// reads only this one, and so do the dashboard's server functions.
pub fn session_cookie_name(https: bool) -> &'static str {
    if https {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// The value of cookie `name` in one `Cookie` header (`a=1; b=2`), if set and not empty. Used
/// by the server and by the dashboard's server functions alike.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// `text` with every byte but unreserved URL characters percent-encoded, for query strings and
/// `data:` URLs.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}
