//! Notifications: the channels a person sends them to (a signed webhook, Slack, Discord, ntfy),
//! the events a project chooses for each channel, the deliveries the server keeps, and the JSON
//! a generic webhook receives.
//!
//! A channel's URL is a credential (Slack and Discord URLs embed a token), so no type here that
//! travels back to a client carries it: listings show its scheme and host only, and the signing
//! secret of a webhook channel is shown once, in [`ChannelCreated`].

use crate::{AgentId, DeploymentId, ProjectId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;
use uuid::Uuid;

crate::ids::id_type!(
    /// One notification channel of a person.
    ChannelId
);
crate::ids::id_type!(
    /// One notification queued for (or sent to) one channel.
    DeliveryId
);

/// How a channel is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A generic webhook: the JSON of a [`Notification`], signed with the channel's secret in
    /// `X-Stagely-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    Webhook,
    /// A Slack incoming webhook (`{"text": …}`).
    Slack,
    /// A Discord webhook (`{"content": …}`).
    Discord,
    /// An ntfy topic URL: the message as plain text, with `Title`, `Tags` and `Priority` headers.
    Ntfy,
}

impl ChannelKind {
    pub const ALL: [Self; 4] = [Self::Webhook, Self::Slack, Self::Discord, Self::Ntfy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Discord => "discord",
            Self::Ntfy => "ntfy",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }

    /// The word the dashboard shows.
    pub fn label(self) -> &'static str {
        match self {
            Self::Webhook => "Webhook",
            Self::Slack => "Slack",
            Self::Discord => "Discord",
            Self::Ntfy => "ntfy",
        }
    }
}

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum NotificationEvent {
    /// A deploy (not a start, stop, restart or down) succeeded.
    DeploySucceeded,
    /// A deploy failed or timed out.
    DeployFailed,
    /// The project's agent has been disconnected for longer than the grace period.
    AgentOffline,
    /// The agent is back after an `agent_offline` was sent.
    AgentOnline,
    /// A container that was running exited or died, and nobody asked for it.
    ServiceExited,
    /// A container's healthcheck turned unhealthy.
    ServiceUnhealthy,
    /// Sent by "Send test"; never chosen in a project's rules.
    Test,
}

impl NotificationEvent {
    /// The events a project can choose, in the order the dashboard lists them.
    pub const CHOOSABLE: [Self; 6] = [
        Self::DeploySucceeded,
        Self::DeployFailed,
        Self::AgentOffline,
        Self::AgentOnline,
        Self::ServiceExited,
        Self::ServiceUnhealthy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeploySucceeded => "deploy_succeeded",
            Self::DeployFailed => "deploy_failed",
            Self::AgentOffline => "agent_offline",
            Self::AgentOnline => "agent_online",
            Self::ServiceExited => "service_exited",
            Self::ServiceUnhealthy => "service_unhealthy",
            Self::Test => "test",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::CHOOSABLE
            .into_iter()
            .chain([Self::Test])
            .find(|event| event.as_str() == value)
    }

    /// The words the dashboard shows.
    pub fn label(self) -> &'static str {
        match self {
            Self::DeploySucceeded => "Deploy succeeded",
            Self::DeployFailed => "Deploy failed",
            Self::AgentOffline => "Server offline",
            Self::AgentOnline => "Server back online",
            Self::ServiceExited => "Service exited",
            Self::ServiceUnhealthy => "Service unhealthy",
            Self::Test => "Test",
        }
    }

    /// Whether the event reports something going wrong (ntfy priority, colours).
    pub fn is_bad(self) -> bool {
        matches!(
            self,
            Self::DeployFailed | Self::AgentOffline | Self::ServiceExited | Self::ServiceUnhealthy
        )
    }
}

impl fmt::Display for NotificationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest channel URL, in bytes.
pub const MAX_CHANNEL_URL_BYTES: usize = 2048;
/// The longest ntfy access token, in bytes.
pub const MAX_CHANNEL_TOKEN_BYTES: usize = 512;

/// Whether `url` (trimmed) starts with `http://` or `https://`, in any case: the part of a
/// channel URL's rule that the API's schema states as a pattern.
pub fn has_http_scheme(url: &str) -> bool {
    let url = url.trim().as_bytes();
    ["http://", "https://"].iter().any(|scheme| {
        url.len() >= scheme.len() && url[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
    })
}

/// `POST /api/v1/notification-channels`. The URL (and the ntfy token) never come back.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CreateChannel {
    pub kind: ChannelKind,
    /// Trimmed; 1 to 64 characters.
    #[cfg_attr(feature = "schema", schemars(with = "crate::ChannelName"))]
    pub name: String,
    /// `http://` or `https://`: the webhook, Slack or Discord URL, or the ntfy topic URL.
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::channel_url"))]
    pub url: String,
    /// ntfy only: an access token, sent as `Authorization: Bearer …`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::channel_token"))]
    pub token: Option<String>,
}

/// Schemas of the fields the server checks by hand, from the same constants.
#[cfg(feature = "schema")]
mod schema {
    use super::{NotificationEvent, MAX_CHANNEL_TOKEN_BYTES, MAX_CHANNEL_URL_BYTES};
    use crate::names::WHITE_SPACE;
    use schemars::{json_schema, Schema, SchemaGenerator};

    pub fn channel_url(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": format!("^{WHITE_SPACE}*[Hh][Tt][Tt][Pp][Ss]?://"),
            "maxLength": MAX_CHANNEL_URL_BYTES,
            "description": format!(
                "An http:// or https:// URL of at most {MAX_CHANNEL_URL_BYTES} bytes that a URL \
                 parser reads (WHATWG), whose host is public: a host on the server itself or on \
                 a private network is refused (403) unless the operator allows it."
            ),
        })
    }

    pub fn channel_token(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                {
                    "type": "string",
                    "pattern": format!(
                        "^{WHITE_SPACE}*(?:[!-~]{{1,{MAX_CHANNEL_TOKEN_BYTES}}}{WHITE_SPACE}*)?$"
                    ),
                    "description": "Printable ASCII without spaces; blank means none. Only ntfy \
                                    channels take one.",
                },
                {"type": "null"},
            ]
        })
    }

    pub fn choosable_events(_: &mut SchemaGenerator) -> Schema {
        let events: Vec<&str> = NotificationEvent::CHOOSABLE
            .iter()
            .map(|event| event.as_str())
            .collect();
        json_schema!({"type": "array", "items": {"type": "string", "enum": events}})
    }
}

impl fmt::Debug for CreateChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateChannel")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("url", &"***")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A channel as listed: its URL shows only as scheme and host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChannelSummary {
    pub id: ChannelId,
    pub kind: ChannelKind,
    pub name: String,
    /// `https://hooks.slack.com`: where notifications go, without path, query or credentials.
    pub target: String,
    /// Whether an ntfy access token is set.
    #[serde(default)]
    pub has_token: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub created_at: OffsetDateTime,
}

/// The answer to creating a channel: a webhook channel's signing secret is shown this once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChannelCreated {
    pub channel: ChannelSummary,
    /// Webhook channels only: the key of `X-Stagely-Signature`; it cannot be shown again.
    #[serde(default)]
    pub signing_secret: Option<String>,
}

impl fmt::Debug for ChannelCreated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelCreated")
            .field("channel", &self.channel)
            .field(
                "signing_secret",
                &self.signing_secret.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its turn or for its next attempt.
    Pending,
    Delivered,
    /// Given up (too many attempts, too old, refused by the receiver, or dropped from a full
    /// queue); `last_error` says which.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|status| status.as_str() == value)
    }
}

/// One notification for one channel, newest first in `GET …/deliveries`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Delivery {
    pub id: DeliveryId,
    pub channel_id: ChannelId,
    pub event: NotificationEvent,
    /// The notification's title, as sent.
    pub title: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    /// The receiver's status code on the last attempt, if it answered.
    #[serde(default)]
    pub http_status: Option<u16>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub delivered_at: Option<OffsetDateTime>,
}

/// The answer to "send test".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TestQueued {
    pub delivery_id: DeliveryId,
}

/// The events one channel gets from one project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChannelRule {
    pub channel_id: ChannelId,
    /// Only the events a project can choose (not `test`).
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::choosable_events"))]
    pub events: Vec<NotificationEvent>,
}

/// `GET`/`PUT /api/v1/projects/{id}/notifications`: which events of the project go to which of
/// its owner's channels. A `PUT` replaces them all; a channel not listed gets nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProjectNotifications {
    pub rules: Vec<ChannelRule>,
}

impl ProjectNotifications {
    /// Whether `channel` gets `event`.
    pub fn sends(&self, channel: ChannelId, event: NotificationEvent) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.channel_id == channel && rule.events.contains(&event))
    }
}

/// What a generic webhook receives as its JSON body (and what the other kinds are rendered
/// from). Texts are masked for the project's secret values before they are queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Notification {
    pub event: NotificationEvent,
    /// One line: `shop: deploy failed`.
    pub title: String,
    /// The details (a failure's message, an exit code).
    pub message: String,
    #[serde(default)]
    pub project_id: Option<ProjectId>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub agent_id: Option<AgentId>,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub deployment_id: Option<DeploymentId>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_kinds_have_their_wire_names() {
        for event in NotificationEvent::CHOOSABLE {
            let json = serde_json::to_string(&event).unwrap();
            assert_eq!(json, format!("\"{}\"", event.as_str()));
            assert_eq!(NotificationEvent::parse(event.as_str()), Some(event));
        }
        for kind in ChannelKind::ALL {
            assert_eq!(ChannelKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let create = CreateChannel {
            kind: ChannelKind::Ntfy,
            name: "phone".into(),
            url: "https://ntfy.sh/secret-topic".into(),
            token: Some("tk_abcdef".into()),
        };
        let printed = format!("{create:?}");
        assert!(!printed.contains("secret-topic") && !printed.contains("tk_abcdef"));
    }
}
