//! Notifications: a person's channels, which events of a project go to which of them, the
//! deliveries kept per channel, and queueing a notification (the `notifier` worker sends it).
//!
//! A channel's URL is a credential, so it is sealed by the vault with the webhook's signing
//! secret and the ntfy token, never logged, and listed as scheme and host only. Before a
//! notification is queued, every value the project's secrets have (and had, while a container
//! may still run it) is replaced by `***` in its texts: the agent already redacts what it
//! reports, this is the second line.

use super::secrets::Rotation;
use super::{OpError, OpResult};
use crate::config::NotifyConfig;
use crate::db::{ChannelColumn, DbError, Store, StoredChannel, User};
use crate::vault::{ChannelField, ChannelRow, Vault};
use shared::notify::{
    ChannelCreated, ChannelId, ChannelKind, ChannelRule, ChannelSummary, CreateChannel, Delivery,
    DeliveryId, Notification, NotificationEvent, ProjectNotifications, TestQueued,
};
use shared::notify::{
    MAX_CHANNEL_TOKEN_BYTES as MAX_TOKEN_BYTES, MAX_CHANNEL_URL_BYTES as MAX_URL_BYTES,
};
use shared::{ProjectId, SecretValue};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// Deliveries kept per channel once finished; older ones are forgotten.
pub const KEPT_DELIVERIES: u32 = 50;
/// Values shorter than this are not masked: they match ordinary text (as in the agent's logs).
const MASKED_MIN_CHARS: usize = 6;
/// What a masked value becomes.
const MASK: &str = "***";

fn summary(channel: &StoredChannel) -> ChannelSummary {
    ChannelSummary {
        id: channel.id,
        kind: channel.kind,
        name: channel.name.clone(),
        target: channel.target.clone(),
        has_token: channel.token.is_some(),
        created_at: channel.created_at,
    }
}

/// The row of one of a channel's credentials.
pub fn channel_row(channel: &StoredChannel, field: ChannelField) -> ChannelRow {
    ChannelRow {
        owner: channel.owner_id,
        channel: channel.id,
        field,
    }
}

/// Why a receiver's address is not used.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Its name does not resolve now (worth trying again later).
    #[error("the receiver's host {host} cannot be resolved: {reason}")]
    Unresolved { host: String, reason: String },
    /// It is this server's own host or a private network.
    /// The address is not in the message: what the server's resolver says about a private
    /// name is its network's business.
    #[error(
        "the receiver's host {host} is on this server or a private network; \
         such receivers are refused unless the server's operator sets \
         STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS=1"
    )]
    Private { host: String },
    #[error("the URL is not valid")]
    Invalid,
}

/// The addresses a receiver's URL leads to, every one of them public unless `allow_private`.
/// The sender connects to exactly these (no second lookup that could answer differently), so a
/// name that resolves to a public address when it is checked cannot lead inside when it is used.
pub async fn receiver_addresses(
    url: &str,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Refused> {
    let url = reqwest::Url::parse(url).map_err(|_| Refused::Invalid)?;
    let port = url.port_or_known_default().ok_or(Refused::Invalid)?;
    let (host, addresses) = match url.host().ok_or(Refused::Invalid)? {
        url::Host::Ipv4(ip) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
        url::Host::Ipv6(ip) => (ip.to_string(), vec![SocketAddr::new(ip.into(), port)]),
        url::Host::Domain(domain) => {
            let unresolved = |reason: String| Refused::Unresolved {
                host: domain.to_string(),
                reason,
            };
            let found: Vec<SocketAddr> = tokio::net::lookup_host((domain, port))
                .await
                .map_err(|error| unresolved(error.to_string()))?
                .collect();
            if found.is_empty() {
                return Err(unresolved("no address".into()));
            }
            (domain.to_string(), found)
        }
    };
    if !allow_private {
        if let Some(private) = addresses.iter().find(|address| !is_public(address.ip())) {
            tracing::info!(%host, address = %private.ip(), "refused a private notification receiver");
            return Err(Refused::Private { host });
        }
    }
    Ok(addresses)
}

/// Whether `ip` is a public Internet address: not this host, a private or shared network,
/// link-local (cloud metadata services live there), multicast or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || ip.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && ip.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = ip.segments();
            let embedded = |high: u16, low: u16| {
                IpAddr::V4(std::net::Ipv4Addr::from(
                    (u32::from(high) << 16) | u32::from(low),
                ))
            };
            // Addresses that carry an IPv4 address lead wherever that one does: NAT64
            // (64:ff9b::/96) and 6to4 (2002::/16); Teredo (2001::/32) hides it, so it is refused.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(embedded(segments[6], segments[7]));
            }
            if segments[0] == 0x2002 {
                return is_public(embedded(segments[1], segments[2]));
            }
            if segments[0] == 0x2001 && segments[1] == 0 {
                return false;
            }
            let first = segments[0];
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0)
        }
    }
}

/// `https://hooks.slack.com`: where a URL goes, without its path, query or credentials. Errors
/// say what is wrong with the URL without repeating it.
fn check_url(url: &str) -> OpResult<String> {
    let url = url.trim();
    if url.is_empty() {
        return Err(OpError::Invalid("the channel needs a URL".into()));
    }
    if url.len() > MAX_URL_BYTES {
        return Err(OpError::Invalid(format!(
            "the URL may be at most {MAX_URL_BYTES} bytes long"
        )));
    }
    // Checked on the text, as the API's schema states it: a URL parser would also take
    // "\u{1}http://…", and call "ftp://…" merely another scheme.
    if !shared::notify::has_http_scheme(url) {
        return Err(OpError::Invalid(
            "the URL must start with http:// or https://".into(),
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|error| OpError::Invalid(format!("the URL is not valid: {error}")))?;
    let host = parsed
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| OpError::Invalid("the URL has no host".into()))?;
    Ok(match parsed.port() {
        Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    })
}

fn check_name(name: &str) -> OpResult<String> {
    shared::ChannelName::parse(name)
        .map(String::from)
        .map_err(|error| OpError::Invalid(error.to_string()))
}

fn check_token(kind: ChannelKind, token: Option<&str>) -> OpResult<Option<SecretValue>> {
    let Some(token) = token.map(str::trim).filter(|token| !token.is_empty()) else {
        return Ok(None);
    };
    if kind != ChannelKind::Ntfy {
        return Err(OpError::Invalid(
            "only ntfy channels take an access token".into(),
        ));
    }
    if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(OpError::Invalid(format!(
            "an access token is up to {MAX_TOKEN_BYTES} printable ASCII characters without spaces"
        )));
    }
    Ok(Some(SecretValue::new(token)))
}

/// A new webhook signing secret: 32 random bytes as hex.
fn signing_secret() -> SecretValue {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    SecretValue::new(format!("whsec_{hex}"))
}

/// Adds a channel for the person; a webhook channel's signing secret is returned this once.
pub async fn create_channel(
    store: &Store,
    vault: &Vault,
    config: &NotifyConfig,
    by: &User,
    input: CreateChannel,
) -> OpResult<ChannelCreated> {
    let name = check_name(&input.name)?;
    let target = check_url(&input.url)?;
    match receiver_addresses(input.url.trim(), config.allow_private_networks).await {
        // A name that does not resolve now may later; every send checks again.
        Ok(_) | Err(Refused::Unresolved { .. }) => {}
        // The URL is well formed; where it leads is the operator's call.
        Err(refused @ Refused::Private { .. }) => {
            return Err(OpError::Forbidden(refused.to_string()))
        }
        Err(refused) => return Err(OpError::Invalid(refused.to_string())),
    }
    let token = check_token(input.kind, input.token.as_deref())?;
    let secret = (input.kind == ChannelKind::Webhook).then(signing_secret);
    let mut channel = StoredChannel {
        id: ChannelId(uuid::Uuid::new_v4()),
        owner_id: by.id,
        kind: input.kind,
        name,
        target,
        url: Vec::new(),
        signing_secret: None,
        token: None,
        created_at: time::OffsetDateTime::now_utc(),
    };
    let url = SecretValue::new(input.url.trim());
    channel.url = vault.seal_credential(channel_row(&channel, ChannelField::Url), &url);
    channel.signing_secret = secret.as_ref().map(|secret| {
        vault.seal_credential(channel_row(&channel, ChannelField::SigningSecret), secret)
    });
    channel.token = token
        .as_ref()
        .map(|token| vault.seal_credential(channel_row(&channel, ChannelField::Token), token));
    store.insert_channel(&channel).await?;
    tracing::info!(user = %by.login, channel_id = %channel.id, kind = channel.kind.as_str(), target = %channel.target, "notification channel added");
    Ok(ChannelCreated {
        channel: summary(&channel),
        signing_secret: secret.map(|secret| secret.expose().to_string()),
    })
}

/// The person's channels, URLs shown as scheme and host.
pub async fn list_channels(store: &Store, by: &User) -> OpResult<Vec<ChannelSummary>> {
    Ok(store.channels_of(by).await?.iter().map(summary).collect())
}

/// Deletes one of the person's channels, with its rules and deliveries.
pub async fn delete_channel(store: &Store, by: &User, id: ChannelId) -> OpResult<()> {
    store.delete_channel(by, id).await?;
    Ok(())
}

/// Queues a test notification for one of the person's channels.
pub async fn send_test(
    store: &Store,
    config: &NotifyConfig,
    by: &User,
    id: ChannelId,
) -> OpResult<TestQueued> {
    let channel = store.channel(by, id).await?;
    let notification = Notification {
        event: NotificationEvent::Test,
        title: format!("Test notification for {}", channel.name),
        message: format!("{} sent this from Stagely: the channel works.", by.login),
        project_id: None,
        project: None,
        agent_id: None,
        agent: None,
        deployment_id: None,
        service: None,
        at: time::OffsetDateTime::now_utc(),
    };
    let delivery_id = enqueue(store, config, channel.id, &notification).await?;
    Ok(TestQueued { delivery_id })
}

/// The newest deliveries of one of the person's channels.
pub async fn deliveries(store: &Store, by: &User, id: ChannelId) -> OpResult<Vec<Delivery>> {
    let channel = store.channel(by, id).await?;
    Ok(store.deliveries_of(channel.id, KEPT_DELIVERIES).await?)
}

/// Which events of one of the person's projects go to which of their channels.
pub async fn project_rules(
    store: &Store,
    by: &User,
    project: ProjectId,
) -> OpResult<ProjectNotifications> {
    let project = store.project(by, project).await?;
    let mut rules = BTreeMap::<ChannelId, Vec<NotificationEvent>>::new();
    for (channel, event) in store.notification_rules(project.id).await? {
        rules.entry(channel).or_default().push(event);
    }
    Ok(ProjectNotifications {
        rules: rules
            .into_iter()
            .map(|(channel_id, events)| ChannelRule { channel_id, events })
            .collect(),
    })
}

/// Replaces a project's rules. Every channel must be the person's, every event one a project
/// can choose.
pub async fn set_project_rules(
    store: &Store,
    by: &User,
    project: ProjectId,
    input: ProjectNotifications,
) -> OpResult<ProjectNotifications> {
    let project = store.project(by, project).await?;
    let own: BTreeSet<ChannelId> = store
        .channels_of(by)
        .await?
        .iter()
        .map(|channel| channel.id)
        .collect();
    let mut pairs = BTreeSet::new();
    for rule in &input.rules {
        if !own.contains(&rule.channel_id) {
            return Err(OpError::NoSuch(format!(
                "channel {} is not one of your notification channels",
                rule.channel_id
            )));
        }
        for event in &rule.events {
            if !NotificationEvent::CHOOSABLE.contains(event) {
                return Err(OpError::Invalid(format!(
                    "{event} cannot be chosen for a project"
                )));
            }
            pairs.insert((rule.channel_id, *event));
        }
    }
    let pairs: Vec<_> = pairs.into_iter().collect();
    store.set_notification_rules(project.id, &pairs).await?;
    project_rules(store, by, project.id).await
}

/// Queues `notification` for every channel that `projects` send its event to (each channel
/// once), with the values of the projects' secrets masked in its texts. Called by the notifier
/// for events it derived. Returns how many deliveries were queued.
pub async fn notify(
    store: &Store,
    vault: &Vault,
    config: &NotifyConfig,
    projects: &[ProjectId],
    mut notification: Notification,
) -> OpResult<usize> {
    let mut channels = BTreeSet::new();
    for project in projects {
        channels.extend(store.channels_for(*project, notification.event).await?);
    }
    if channels.is_empty() {
        return Ok(0);
    }
    let mut values = Vec::new();
    for project in projects {
        match super::secrets::values_to_redact(store, vault, *project).await {
            Ok(more) => values.extend(more),
            Err(error) => {
                // What cannot be opened cannot be masked: keep the details back.
                tracing::warn!(%error, project_id = %project, "cannot read the project's secrets to mask a notification; its details are left out");
                notification.message =
                    "(details left out: the project's secrets could not be read to mask them)"
                        .into();
            }
        }
    }
    mask_notification(&mut notification, &values);
    for channel in &channels {
        enqueue(store, config, *channel, &notification).await?;
    }
    Ok(channels.len())
}

/// Every text of `notification` with `values` masked.
fn mask_notification(notification: &mut Notification, values: &[SecretValue]) {
    let mut values: Vec<&str> = values
        .iter()
        .map(SecretValue::expose)
        .filter(|value| value.chars().count() >= MASKED_MIN_CHARS)
        .collect();
    // Longest first, so a value that contains another is masked whole.
    values.sort_by_key(|value| std::cmp::Reverse(value.len()));
    values.dedup();
    let texts = [
        Some(&mut notification.title),
        Some(&mut notification.message),
        notification.project.as_mut(),
        notification.agent.as_mut(),
        notification.service.as_mut(),
    ];
    for text in texts.into_iter().flatten() {
        *text = mask(text, &values);
    }
}

/// `text` with every occurrence of each of `values` replaced by `***`.
fn mask(text: &str, values: &[&str]) -> String {
    values.iter().fold(text.to_string(), |text, value| {
        if text.contains(value) {
            text.replace(value, MASK)
        } else {
            text
        }
    })
}

/// Stores one delivery of `notification` for `channel`; a channel's queue keeps its newest
/// [`NotifyConfig::queue_per_channel`] pending deliveries.
async fn enqueue(
    store: &Store,
    config: &NotifyConfig,
    channel: ChannelId,
    notification: &Notification,
) -> OpResult<DeliveryId> {
    let id = DeliveryId(uuid::Uuid::new_v4());
    let payload = serde_json::to_string(notification).map_err(|error| {
        OpError::Internal(anyhow::Error::new(error).context("encoding a notification"))
    })?;
    let dropped = store
        .enqueue_delivery(
            id,
            channel,
            notification.event,
            &payload,
            config.queue_per_channel,
        )
        .await?;
    if dropped > 0 {
        tracing::warn!(channel_id = %channel, dropped, "a notification channel's queue is full: its oldest pending deliveries were dropped");
    }
    Ok(id)
}

/// Re-seals every channel credential under the current key, one column at a time (see
/// `ops::secrets::rotate_all`).
pub async fn rotate_all(store: &Store, vault: &Vault) -> OpResult<Rotation> {
    let mut done = Rotation::default();
    for channel in &store.all_channels().await? {
        let columns = [
            (ChannelColumn::Url, ChannelField::Url, Some(&channel.url)),
            (
                ChannelColumn::SigningSecret,
                ChannelField::SigningSecret,
                channel.signing_secret.as_ref(),
            ),
            (
                ChannelColumn::Token,
                ChannelField::Token,
                channel.token.as_ref(),
            ),
        ];
        for (column, field, stored) in columns {
            let Some(stored) = stored else { continue };
            let row = channel_row(channel, field);
            done.reseal_credential(vault, row, stored, |resealed| async move {
                match store
                    .replace_channel_ciphertext(channel.id, column, stored, &resealed)
                    .await
                {
                    // Deleted meanwhile.
                    Err(DbError::NotFound) => Ok(false),
                    replaced => replaced,
                }
            })
            .await?;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_count_as_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.10",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "140.82.112.3",
            "2606:4700:4700::1111",
            "64:ff9b::101:101",
            "2002:101:101::",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn a_receiver_on_this_host_or_a_private_network_is_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://10.0.0.7/x",
        ] {
            let refused = receiver_addresses(url, false).await.unwrap_err();
            assert!(
                refused
                    .to_string()
                    .contains("STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS=1"),
                "{url}: {refused}"
            );
            assert!(receiver_addresses(url, true).await.is_ok(), "{url}");
        }
    }

    #[test]
    fn urls_are_checked_and_shown_as_scheme_and_host() {
        assert_eq!(
            check_url(" https://hooks.slack.com/services/T0/B0/XyZ ").unwrap(),
            "https://hooks.slack.com"
        );
        assert_eq!(
            check_url("http://127.0.0.1:8080/hook?token=abc").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            check_url("https://user:pw@example.com/x").unwrap(),
            "https://example.com"
        );
        let cases = [
            ("", "needs a URL"),
            ("ftp://example.com/x", "http:// or https://"),
            ("not a url", "http:// or https://"),
            ("https://exa mple.com/x", "not valid"),
            ("file:///etc/passwd", "http:// or https://"),
        ];
        for (url, expected) in cases {
            let error = check_url(url).unwrap_err().to_string();
            assert!(error.contains(expected), "{url}: {error}");
        }
    }

    #[test]
    fn long_secret_values_are_masked_everywhere_and_short_ones_are_not() {
        let mut notification = Notification {
            event: NotificationEvent::DeployFailed,
            title: "shop: deploy failed".into(),
            message: "password hunter2-long rejected; also abc and hunter2-longer".into(),
            project_id: None,
            project: Some("shop".into()),
            agent_id: None,
            agent: None,
            deployment_id: None,
            service: Some("hunter2-long".into()),
            at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let values = [
            SecretValue::new("hunter2-long"),
            SecretValue::new("hunter2-longer"),
            SecretValue::new("abc"),
        ];
        mask_notification(&mut notification, &values);
        assert_eq!(
            notification.message,
            "password *** rejected; also abc and ***"
        );
        assert_eq!(notification.service.as_deref(), Some("***"));
    }
}
