//! Which server URLs may carry secrets in the clear.
//!
//! Sessions, agent tokens, join tokens and secret values all travel between the browser, the
//! server and the agents. Over `http`/`ws` anyone on the path reads them, so the server, the
//! agent and `install.sh` refuse such a URL unless it stays on this host (loopback) or the
//! operator opts in with `STAGELY_ALLOW_INSECURE_HTTP=1` (a trusted private network, a proxy
//! on the same host reached by name). The rule lives here so the three apply the same one.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The variable (and the agent's flag value) that allows plain `http`/`ws` to another host.
pub const ALLOW_INSECURE_HTTP: &str = "STAGELY_ALLOW_INSECURE_HTTP";

/// True when `url` is `http://` or `ws://` to a host that is not loopback (127.0.0.0/8, `::1`,
/// `localhost`): what it carries could be read on the network. `https`, `wss`, other schemes
/// and loopback hosts are not.
pub fn is_cleartext_to_another_host(url: &str) -> bool {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws")) {
        return false;
    }
    !is_loopback_host(host_of(rest))
}

/// The host of `authority[/path…]`, without user info, port or IPv6 brackets.
fn host_of(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if let Some(bracketed) = host_port.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    host_port.split(':').next().unwrap_or_default()
}

/// `localhost`, an address in 127.0.0.0/8, or `::1` (also written as IPv4-mapped). Anything
/// else, including names that merely start with `127.` or `localhost.`, is another host.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Ok(v4) = host.parse::<Ipv4Addr>() {
        return v4.is_loopback();
    }
    match host.parse::<Ipv6Addr>() {
        Ok(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_text_to_another_host_is_flagged() {
        let cases = [
            ("https://deploy.example.com", false),
            ("wss://deploy.example.com/api/v1/stream", false),
            ("http://127.0.0.1:3000", false),
            ("http://127.8.9.10", false),
            ("ws://localhost:3000/api/v1/join", false),
            ("HTTP://LOCALHOST.", false),
            ("http://[::1]:3000/", false),
            ("http://[::ffff:127.0.0.1]:3000", false),
            ("http://user:pw@127.0.0.1:3000", false),
            ("http://deploy.example.com", true),
            ("ws://10.0.0.5:3000", true),
            ("http://0.0.0.0:3000", true),
            ("http://[fd00::1]:3000", true),
            ("http://127.0.0.1.evil.example", true),
            ("http://localhost.evil.example", true),
            ("http://127.0.0.1@evil.example", true),
            ("http://2130706433", true),
        ];
        for (url, flagged) in cases {
            assert_eq!(is_cleartext_to_another_host(url), flagged, "{url}");
        }
    }
}
