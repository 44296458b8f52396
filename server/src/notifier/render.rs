//! How a notification looks to each kind of receiver: the body and headers of the one POST.
//!
//! - webhook: the [`Notification`] JSON as queued, with `X-Stagely-Event`, `X-Stagely-Delivery`
//!   and `X-Stagely-Signature: sha256=<hex HMAC-SHA256 of the body>` under the channel's secret;
//! - Slack: `{"text": …}`; Discord: `{"content": …}` (at most 2,000 characters);
//! - ntfy: the message as plain text, with `Title`, `Tags` and `Priority`, and the access token
//!   as `Authorization: Bearer …` when the channel has one.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use shared::notify::{ChannelKind, DeliveryId, Notification, NotificationEvent};
use shared::SecretValue;

/// Discord refuses longer messages.
const DISCORD_MAX_CHARS: usize = 2000;

/// One request to send.
#[derive(Debug)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

/// What a channel needs besides its URL.
pub struct Credentials<'a> {
    pub signing_secret: Option<&'a SecretValue>,
    pub token: Option<&'a SecretValue>,
}

/// The request for `notification` (queued as `raw`, its JSON) to a channel of `kind`.
pub fn render(
    kind: ChannelKind,
    delivery: DeliveryId,
    notification: &Notification,
    raw: &str,
    credentials: &Credentials<'_>,
) -> Rendered {
    match kind {
        ChannelKind::Webhook => {
            let mut headers = vec![
                ("content-type", "application/json".to_string()),
                ("x-stagely-event", notification.event.as_str().to_string()),
                ("x-stagely-delivery", delivery.to_string()),
            ];
            if let Some(secret) = credentials.signing_secret {
                headers.push(("x-stagely-signature", signature(secret, raw.as_bytes())));
            }
            Rendered {
                body: raw.as_bytes().to_vec(),
                headers,
            }
        }
        ChannelKind::Slack => {
            let text = format!(
                "*{}*\n{}",
                slack_text(&notification.title),
                slack_text(&notification.message)
            );
            json(serde_json::json!({ "text": text }))
        }
        ChannelKind::Discord => {
            let content = format!(
                "**{}**\n{}",
                discord_text(&notification.title),
                discord_text(&notification.message)
            );
            let content: String = content.chars().take(DISCORD_MAX_CHARS).collect();
            // No mention in a notification pings anyone, whatever its text says.
            json(serde_json::json!({
                "content": content,
                "allowed_mentions": { "parse": [] },
            }))
        }
        ChannelKind::Ntfy => {
            let body = if notification.message.is_empty() {
                notification.title.clone()
            } else {
                notification.message.clone()
            };
            let priority = if notification.event.is_bad() {
                "high"
            } else {
                "default"
            };
            let mut headers = vec![
                ("content-type", "text/plain; charset=utf-8".to_string()),
                ("title", one_line(&notification.title)),
                ("tags", tag(notification.event).to_string()),
                ("priority", priority.to_string()),
            ];
            if let Some(token) = credentials.token {
                headers.push(("authorization", format!("Bearer {}", token.expose())));
            }
            Rendered {
                body: body.into_bytes(),
                headers,
            }
        }
    }
}

fn json(value: serde_json::Value) -> Rendered {
    Rendered {
        body: value.to_string().into_bytes(),
        headers: vec![("content-type", "application/json".to_string())],
    }
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &SecretValue, body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// Text for Slack's `text`: what others chose (a pusher's name, a job's message) reaches it,
/// so `<`, `>` and `&` are escaped as Slack asks: `<!channel>`, `<@U123>` or `<url|label>` stay
/// text.
fn slack_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for Discord's `content`: its markdown marks are escaped, so another's text can neither
/// format the message nor hide a link; `@everyone`/`@here` get a zero-width space so they stay
/// text even where `allowed_mentions` is not honoured.
fn discord_text(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '<' | '[' | ']' | '#'
        ) {
            escaped.push('\\');
        }
        escaped.push(c);
        if c == '@' {
            escaped.push('\u{200B}');
        }
    }
    escaped
}

/// A header value: control characters (a newline) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// ntfy shows these tags as emoji.
fn tag(event: NotificationEvent) -> &'static str {
    match event {
        NotificationEvent::DeploySucceeded => "white_check_mark",
        NotificationEvent::DeployFailed => "x",
        NotificationEvent::AgentOffline => "warning",
        NotificationEvent::AgentOnline => "green_circle",
        NotificationEvent::ServiceExited => "stop_sign",
        NotificationEvent::ServiceUnhealthy => "rotating_light",
        NotificationEvent::Test => "test_tube",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification() -> Notification {
        Notification {
            event: NotificationEvent::DeployFailed,
            title: "shop: deploy failed\nreally".into(),
            message: "exit 1".into(),
            project_id: None,
            project: Some("shop".into()),
            agent_id: None,
            agent: None,
            deployment_id: None,
            service: None,
            at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        let secret = SecretValue::new("Jefe");
        assert_eq!(
            signature(&secret, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn each_kind_gets_its_own_shape() {
        let n = notification();
        let raw = serde_json::to_string(&n).unwrap();
        let secret = SecretValue::new("whsec_x");
        let token = SecretValue::new("tk_1");
        let credentials = Credentials {
            signing_secret: Some(&secret),
            token: Some(&token),
        };
        let id = DeliveryId(uuid::Uuid::nil());
        let webhook = render(ChannelKind::Webhook, id, &n, &raw, &credentials);
        assert_eq!(webhook.body, raw.as_bytes());
        assert!(webhook
            .headers
            .contains(&("x-stagely-signature", signature(&secret, raw.as_bytes()))));
        let slack = render(ChannelKind::Slack, id, &n, &raw, &credentials);
        let slack: serde_json::Value = serde_json::from_slice(&slack.body).unwrap();
        assert_eq!(slack["text"], "*shop: deploy failed\nreally*\nexit 1");
        let discord = render(ChannelKind::Discord, id, &n, &raw, &credentials);
        let discord: serde_json::Value = serde_json::from_slice(&discord.body).unwrap();
        assert!(discord["content"].as_str().unwrap().starts_with("**shop"));
        let ntfy = render(ChannelKind::Ntfy, id, &n, &raw, &credentials);
        assert_eq!(ntfy.body, b"exit 1");
        assert!(ntfy
            .headers
            .contains(&("title", "shop: deploy failed really".into())));
        assert!(ntfy.headers.contains(&("priority", "high".into())));
        assert!(ntfy
            .headers
            .contains(&("authorization", "Bearer tk_1".into())));
    }

    /// A pusher names themselves so that a deploy notification pings the whole channel.
    #[test]
    fn a_pushers_name_mentions_nobody_in_slack_or_discord() {
        let n = Notification {
            title: "shop: deploy succeeded".into(),
            message: "The deploy of shop succeeded. (started by webhook github: 2222222 by \
                      <!channel> @everyone @here <@123456> [click](https://evil.example) *x*)"
                .into(),
            ..notification()
        };
        let raw = serde_json::to_string(&n).unwrap();
        let credentials = Credentials {
            signing_secret: None,
            token: None,
        };
        let id = DeliveryId(uuid::Uuid::nil());
        let slack = render(ChannelKind::Slack, id, &n, &raw, &credentials);
        let slack: serde_json::Value = serde_json::from_slice(&slack.body).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        let discord = render(ChannelKind::Discord, id, &n, &raw, &credentials);
        let discord: serde_json::Value = serde_json::from_slice(&discord.body).unwrap();
        assert_eq!(
            discord["allowed_mentions"],
            serde_json::json!({"parse": []})
        );
        let content = discord["content"].as_str().unwrap();
        for mention in ["@everyone", "@here", "<@123456>", "[click](", "*x*"] {
            assert!(!content.contains(mention), "{mention} in {content}");
        }
        assert!(
            content.starts_with("**shop: deploy succeeded**"),
            "{content}"
        );
    }
}
