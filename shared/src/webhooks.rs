//! Push webhooks: what a project's hook looks like to its owner, what a delivery became, and
//! what started a deploy ([`DeployTrigger`], shown in the history).
//!
//! A hook is one URL per project (`POST /api/v1/hooks/{id}`, the id random and not the
//! project's) with its own secret, shown once when it is created or rotated. GitHub, GitLab,
//! Gitea/Forgejo and a plain `Authorization: Bearer` request are told apart by their headers.

use crate::{DeploymentId, SecretValue};
use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;

/// Who sent a delivery, as its headers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum WebhookProvider {
    /// `X-GitHub-Event`, signed with `X-Hub-Signature-256`.
    Github,
    /// `X-Gitlab-Event`, with the secret in `X-Gitlab-Token`.
    Gitlab,
    /// `X-Gitea-Event`, signed with `X-Gitea-Signature`.
    Gitea,
    /// `X-Forgejo-Event`, signed with `X-Forgejo-Signature` (or Gitea's header).
    Forgejo,
    /// A plain `POST` with `Authorization: Bearer <secret>`, from a script or a CI job.
    Bearer,
}

impl WebhookProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Gitea => "gitea",
            Self::Forgejo => "forgejo",
            Self::Bearer => "bearer",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Github,
            Self::Gitlab,
            Self::Gitea,
            Self::Forgejo,
            Self::Bearer,
        ]
        .into_iter()
        .find(|provider| provider.as_str() == value)
    }
}

impl fmt::Display for WebhookProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeployTrigger {
    /// A person, with the Deploy button or the API (the deployment's `requested_by`).
    #[default]
    Manual,
    /// A push webhook.
    Webhook {
        provider: WebhookProvider,
        /// The sender's delivery id, when it gave one.
        #[serde(default)]
        delivery: Option<String>,
        /// The pushed commit (`after`), when the delivery named one.
        #[serde(default)]
        commit: Option<String>,
        /// Who pushed, as the sender names them.
        #[serde(default)]
        pusher: Option<String>,
        /// The pushed ref (`refs/heads/main`).
        #[serde(default, rename = "ref")]
        git_ref: Option<String>,
    },
}

impl DeployTrigger {
    /// One line for the history and notifications: `webhook github: 1a2b3c4 by alice`, or
    /// `manual`.
    pub fn describe(&self) -> String {
        match self {
            Self::Manual => "manual".into(),
            Self::Webhook {
                provider,
                commit,
                pusher,
                ..
            } => {
                let mut line = format!("webhook {provider}");
                if let Some(commit) = commit {
                    line.push_str(": ");
                    line.push_str(commit.get(..7).unwrap_or(commit));
                }
                if let Some(pusher) = pusher {
                    line.push_str(" by ");
                    line.push_str(pusher);
                }
                line
            }
        }
    }
}

/// A project's push webhook, as its owner sees it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Webhook {
    /// The random id in the hook's URL.
    pub id: String,
    /// Where senders deliver: `<public URL>/api/v1/hooks/<id>`.
    pub url: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub created_at: OffsetDateTime,
    /// When the secret was last replaced.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub rotated_at: Option<OffsetDateTime>,
    /// A push arrived while a deploy was running: one more deploy starts when it ends.
    #[serde(default)]
    pub deploy_pending: bool,
    /// The latest verified deliveries, newest first.
    #[serde(default)]
    pub deliveries: Vec<WebhookDelivery>,
}

/// The answer to creating a hook or rotating its secret: the secret is shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WebhookCreated {
    pub webhook: Webhook,
    /// The secret to paste into the sender (GitHub's "Secret", GitLab's "Secret token", or
    /// the `Authorization: Bearer` value).
    pub secret: SecretValue,
}

/// What became of a verified delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// A deploy started.
    Deployed,
    /// A deploy of the project was running or queued: one more starts when it ends.
    Pending,
    /// This delivery id was seen before: nothing done.
    Duplicate,
    /// Not a push to the configured branch (another branch, a tag, a deletion, another event).
    Ignored,
    /// GitHub's `ping`: the hook works.
    Ping,
    /// The deploy it left waiting (as the newest push) could not start when the running one
    /// ended; the server's log says why.
    Failed,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployed => "deployed",
            Self::Pending => "pending",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
            Self::Ping => "ping",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Deployed,
            Self::Pending,
            Self::Duplicate,
            Self::Ignored,
            Self::Ping,
            Self::Failed,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == value)
    }
}

/// One verified delivery, as the dashboard lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WebhookDelivery {
    /// The sender's delivery id (or one the server made up for a sender that gives none).
    pub delivery_id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "String"))]
    pub received_at: OffsetDateTime,
    pub provider: WebhookProvider,
    /// The sender's event name (`push`, `Push Hook`, `ping`).
    pub event: String,
    pub outcome: DeliveryOutcome,
    /// The deploy it started, if it started one.
    #[serde(default)]
    pub deployment_id: Option<DeploymentId>,
}

/// The answer to a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DeliveryReceipt {
    pub outcome: DeliveryOutcome,
    /// One sentence: `deploying 1a2b3c4`, `ignored: branch feature`, `duplicate`.
    pub message: String,
    #[serde(default)]
    pub deployment_id: Option<DeploymentId>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_webhook_trigger_reads_as_kind_provider_and_commit() {
        let trigger = DeployTrigger::Webhook {
            provider: WebhookProvider::Github,
            delivery: Some("d-1".into()),
            commit: Some("1a2b3c4d5e6f".into()),
            pusher: Some("alice".into()),
            git_ref: Some("refs/heads/main".into()),
        };
        let value = serde_json::to_value(&trigger).unwrap();
        assert_eq!(value["kind"], "webhook");
        assert_eq!(value["provider"], "github");
        assert_eq!(value["ref"], "refs/heads/main");
        assert_eq!(trigger.describe(), "webhook github: 1a2b3c4 by alice");
        assert_eq!(
            serde_json::from_value::<DeployTrigger>(json!({"kind": "manual"})).unwrap(),
            DeployTrigger::Manual
        );
    }
}
