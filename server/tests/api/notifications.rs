//! Notifications end to end: channels through the REST API, events published on the server's
//! hub as the deploy path and the agent sockets publish them, deliveries to receivers this test
//! runs on 127.0.0.1.

use crate::helpers::{
    eventually, spawn_app_with_env, ApiClient, AppOptions, ServerProcess, TestApp, TestDb,
};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::json;
use server::hub::HubEvent;
use shared::api::{AgentStatus, DeploymentStatus, Project};
use shared::notify::{
    ChannelCreated, ChannelSummary, Delivery, DeliveryId, DeliveryStatus, Notification,
    NotificationEvent, ProjectNotifications, TestQueued,
};
use shared::runtime::{ContainerHealth, ContainerStatus, ServiceState};
use shared::{DeploymentId, ProjectId};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Short timings, so retries happen within a test.
const FAST: &[(&str, &str)] = &[
    ("STAGELY_NOTIFY_POLL_MS", "50"),
    ("STAGELY_NOTIFY_RETRY_MS", "200"),
    ("STAGELY_NOTIFY_MAX_RETRY_SECS", "1"),
    ("STAGELY_NOTIFY_TIMEOUT_MS", "2000"),
    ("STAGELY_NOTIFY_OFFLINE_GRACE_SECS", "1"),
    // The receivers are local processes.
    ("STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS", "1"),
];

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }

    fn notification(&self) -> Notification {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP receiver that records every request and answers 200, or never (`hang`).
#[derive(Clone)]
struct Receiver {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(hang: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, hang)
    }

    fn serve(listener: tokio::net::TcpListener, hang: bool) -> Self {
        let address = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(Received {
                    path: uri.to_string(),
                    headers,
                    body,
                });
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                StatusCode::OK
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { address, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    async fn wait_for(&self, count: usize) -> Vec<Received> {
        eventually(
            Duration::from_secs(10),
            "the receiver to be called",
            || async { self.requests.lock().unwrap().len() >= count },
        )
        .await;
        self.received()
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

async fn add_channel(api: &ApiClient, kind: &str, name: &str, url: &str) -> ChannelCreated {
    let body = json!({"kind": kind, "name": name, "url": url});
    api.expect(Method::POST, "/notification-channels", Some(body), 201)
        .await
}

async fn subscribe(
    api: &ApiClient,
    project: ProjectId,
    channel: &ChannelCreated,
    events: &[NotificationEvent],
) -> ProjectNotifications {
    let body = json!({"rules": [{"channel_id": channel.channel.id, "events": events}]});
    let path = format!("/projects/{project}/notifications");
    api.expect(Method::PUT, &path, Some(body), 200).await
}

async fn deliveries(api: &ApiClient, channel: &ChannelCreated) -> Vec<Delivery> {
    let path = format!("/notification-channels/{}/deliveries", channel.channel.id);
    api.expect(Method::GET, &path, None, 200).await
}

async fn send_test(api: &ApiClient, channel: &ChannelCreated) -> TestQueued {
    let path = format!("/notification-channels/{}/test", channel.channel.id);
    api.expect(Method::POST, &path, None, 202).await
}

/// A deployment of `project` that reached `status`, announced on the hub as the deploy path
/// announces it.
async fn finish_deploy(
    app: &TestApp,
    project: &Project,
    user: &server::db::User,
    status: DeploymentStatus,
    message: Option<&str>,
) -> DeploymentId {
    let (id, _) = app.queue_deploy(project.id, user.id).await;
    assert!(app
        .store()
        .set_deployment_status(id, status, message)
        .await
        .unwrap());
    app.state.hub.publish(HubEvent::DeploymentStatus {
        deployment_id: id,
        project_id: project.id,
        status,
        message: message.map(str::to_string),
    });
    id
}

#[tokio::test]
async fn a_webhook_gets_signed_deploy_notifications_with_secret_values_masked() {
    for db in TestDb::all().await {
        let app = spawn_app_with_env(&db, AppOptions::default(), FAST).await;
        let (alice, api) = app.user("alice").await;
        let (_, project) = api.shop_project().await;
        api.add_secret(project.id, "DB_PASSWORD", "hunter2-correct-horse")
            .await;
        let receiver = Receiver::start(false).await;
        let channel = add_channel(&api, "webhook", "ci", &receiver.url("/hooks/stagely")).await;
        let secret = channel
            .signing_secret
            .clone()
            .expect("a webhook has a secret");
        let events = [
            NotificationEvent::DeploySucceeded,
            NotificationEvent::DeployFailed,
        ];
        let saved = subscribe(&api, project.id, &channel, &events).await;
        let path = format!("/projects/{}/notifications", project.id);
        let read: ProjectNotifications = api.expect(Method::GET, &path, None, 200).await;
        assert_eq!(read, saved);
        assert!(read.sends(channel.channel.id, NotificationEvent::DeployFailed));

        let succeeded =
            finish_deploy(&app, &project, &alice, DeploymentStatus::Succeeded, None).await;
        let message = "docker login failed for user app with password hunter2-correct-horse";
        let failed = finish_deploy(
            &app,
            &project,
            &alice,
            DeploymentStatus::Failed,
            Some(message),
        )
        .await;

        let received = receiver.wait_for(2).await;
        let expected = [
            (NotificationEvent::DeploySucceeded, succeeded),
            (NotificationEvent::DeployFailed, failed),
        ];
        for (request, (event, deployment)) in received.iter().zip(expected) {
            assert_eq!(request.path, "/hooks/stagely", "{}", db.name());
            assert_eq!(request.header("x-stagely-event"), event.as_str());
            assert!(request
                .header("x-stagely-delivery")
                .parse::<uuid::Uuid>()
                .is_ok());
            assert_eq!(
                request.header("x-stagely-signature"),
                format!("sha256={}", hmac_hex(&secret, &request.body)),
                "{}: the signature is the HMAC-SHA256 of the raw body",
                db.name()
            );
            let notification = request.notification();
            assert_eq!(notification.event, event);
            assert_eq!(notification.deployment_id, Some(deployment));
            assert_eq!(notification.project.as_deref(), Some("shop"));
        }
        let failure = received[1].notification();
        let body = String::from_utf8_lossy(&received[1].body);
        assert!(
            !body.contains("hunter2-correct-horse"),
            "{}: {body}",
            db.name()
        );
        assert!(
            failure.message.ends_with("with password ***"),
            "{}",
            failure.message
        );

        eventually(Duration::from_secs(5), "both delivered", || async {
            deliveries(&api, &channel).await.iter().all(|delivery| {
                delivery.status == DeliveryStatus::Delivered && delivery.http_status == Some(200)
            })
        })
        .await;
        let listed = deliveries(&api, &channel).await;
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed[0].event,
            NotificationEvent::DeployFailed,
            "newest first"
        );
    }
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_notification_exactly_once_when_it_comes_up() {
    for db in TestDb::all().await {
        // Retries every second at most, and enough of them to outlast 20 s down.
        let env = [&[("STAGELY_NOTIFY_MAX_ATTEMPTS", "100")], FAST].concat();
        let app = spawn_app_with_env(&db, AppOptions::default(), &env).await;
        let (_, api) = app.user("alice").await;
        let address = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let url = format!("http://{address}/hook");
        let channel = add_channel(&api, "webhook", "later", &url).await;
        let down_since = tokio::time::Instant::now();
        let queued = send_test(&api, &channel).await;
        eventually(Duration::from_secs(10), "a failed attempt", || async {
            deliveries(&api, &channel).await.iter().any(|delivery| {
                delivery.id == queued.delivery_id
                    && delivery.status == DeliveryStatus::Pending
                    && delivery.attempts >= 1
                    && delivery.last_error.is_some()
            })
        })
        .await;

        // Down for 20 s in all, as a receiver being redeployed might be.
        tokio::time::sleep_until(down_since + Duration::from_secs(20)).await;
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let receiver = Receiver::serve(listener, false);
        let received = receiver.wait_for(1).await;
        assert_eq!(received[0].header("x-stagely-event"), "test");
        assert_eq!(
            received[0].header("x-stagely-delivery"),
            queued.delivery_id.to_string()
        );
        eventually(Duration::from_secs(5), "the delivery recorded", || async {
            deliveries(&api, &channel).await[0].status == DeliveryStatus::Delivered
        })
        .await;
        // Longer than the longest backoff: a second send would have happened by now.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(receiver.received().len(), 1, "{}", db.name());
    }
}

#[tokio::test]
async fn a_receiver_that_hangs_delays_neither_another_channel_nor_the_api() {
    for db in TestDb::all().await {
        let env = [&[("STAGELY_NOTIFY_TIMEOUT_MS", "8000")], FAST].concat();
        let app = spawn_app_with_env(&db, AppOptions::default(), &env).await;
        let (_, api) = app.user("alice").await;
        let stuck = Receiver::start(true).await;
        let fine = Receiver::start(false).await;
        let slow = add_channel(&api, "slack", "stuck", &stuck.url("/services/T/B/x")).await;
        let quick = add_channel(&api, "discord", "fine", &fine.url("/api/webhooks/1/x")).await;
        send_test(&api, &slow).await;
        stuck.wait_for(1).await;
        send_test(&api, &slow).await;

        let started = Instant::now();
        send_test(&api, &quick).await;
        let received = fine.wait_for(1).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{}: took {:?} while another channel hangs",
            db.name(),
            started.elapsed()
        );
        let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
        assert!(body["content"]
            .as_str()
            .unwrap()
            .contains("Test notification for fine"));

        let started = Instant::now();
        let _: Vec<ChannelSummary> = api
            .expect(Method::GET, "/notification-channels", None, 200)
            .await;
        assert!(started.elapsed() < Duration::from_secs(1));
        // The stuck channel's second delivery waits behind its first: in order, never both.
        assert_eq!(stuck.received().len(), 1);
        let stuck_deliveries = deliveries(&api, &slow).await;
        assert!(stuck_deliveries
            .iter()
            .all(|delivery| delivery.status == DeliveryStatus::Pending));
    }
}

#[tokio::test]
async fn agents_going_away_and_containers_dying_are_told_once_and_only_when_unasked() {
    for db in TestDb::all().await {
        let app = spawn_app_with_env(&db, AppOptions::default(), FAST).await;
        let (alice, api) = app.user("alice").await;
        let (agent, project) = api.shop_project().await;
        let receiver = Receiver::start(false).await;
        let channel = add_channel(&api, "webhook", "ops", &receiver.url("/")).await;
        subscribe(&api, project.id, &channel, &NotificationEvent::CHOOSABLE).await;
        let hub = &app.state.hub;
        let agent_id = agent.agent.id;
        let status = |status| HubEvent::AgentStatus { agent_id, status };

        // Back within the grace period: nothing to tell. (The notifier reads the first word
        // before the second: it keeps only the newest status of an agent between its turns.)
        hub.publish(status(AgentStatus::Disconnected));
        tokio::time::sleep(Duration::from_millis(200)).await;
        hub.publish(status(AgentStatus::Connected));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(receiver.received().is_empty(), "{}", db.name());

        hub.publish(status(AgentStatus::Disconnected));
        let offline = receiver.wait_for(1).await;
        assert_eq!(
            offline[0].notification().event,
            NotificationEvent::AgentOffline
        );
        assert!(offline[0].notification().message.contains("shop"));
        // Back and gone again between two turns of the notifier (it sees only "disconnected"):
        // no second `agent_offline` for an agent it already said is offline.
        hub.publish(status(AgentStatus::Connected));
        hub.publish(status(AgentStatus::Disconnected));
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(receiver.received().len(), 1, "{}", db.name());
        hub.publish(status(AgentStatus::Connected));
        let online = receiver.wait_for(2).await;
        assert_eq!(
            online[1].notification().event,
            NotificationEvent::AgentOnline
        );

        let web = |status, health| ServiceState {
            service: shared::ServiceName::parse("web").unwrap(),
            container_id: "0123456789ab".into(),
            status,
            exit_code: (status == ContainerStatus::Exited).then_some(137),
            health,
            started_at: None,
            restart_count: 0,
            image_id: None,
            replicas: None,
        };
        let report = |state: ServiceState| HubEvent::ServiceStates {
            project_id: project.id,
            agent_id,
            containers: Arc::new(vec![state]),
        };
        hub.publish(report(web(
            ContainerStatus::Running,
            Some(ContainerHealth::Healthy),
        )));
        hub.publish(report(web(
            ContainerStatus::Running,
            Some(ContainerHealth::Unhealthy),
        )));
        hub.publish(report(web(ContainerStatus::Exited, None)));
        let died = receiver.wait_for(4).await;
        assert_eq!(
            died[2].notification().event,
            NotificationEvent::ServiceUnhealthy
        );
        let exited = died[3].notification();
        assert_eq!(exited.event, NotificationEvent::ServiceExited);
        assert_eq!(exited.service.as_deref(), Some("web"));
        assert!(exited.title.contains("exited (137)"), "{}", exited.title);

        // While a deploy runs, containers being replaced are not news.
        app.queue_deploy(project.id, alice.id).await;
        hub.publish(report(web(ContainerStatus::Running, None)));
        hub.publish(report(web(ContainerStatus::Exited, None)));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(receiver.received().len(), 4, "{}", db.name());
    }
}

#[tokio::test]
async fn bad_channels_and_rules_are_refused_and_channels_are_private_to_their_owner() {
    for db in TestDb::all().await {
        let app = spawn_app_with_env(&db, AppOptions::default(), FAST).await;
        let (_, alice) = app.user("alice").await;
        let (_, bob) = app.user("bob").await;
        let cases = [
            (
                json!({"kind": "webhook", "name": "x", "url": "ftp://example.com/x"}),
                "http:// or https://",
            ),
            (
                json!({"kind": "webhook", "name": "x", "url": "example.com/hook"}),
                "http:// or https://",
            ),
            (
                json!({"kind": "webhook", "name": "x", "url": "https://exa mple.com/hook"}),
                "not valid",
            ),
            (
                json!({"kind": "slack", "name": "x", "url": ""}),
                "needs a URL",
            ),
            (
                json!({"kind": "webhook", "name": "  ", "url": "https://example.com"}),
                "1 to 64",
            ),
            (
                json!({"kind": "slack", "name": "x", "url": "https://example.com", "token": "tk"}),
                "only ntfy",
            ),
            (
                json!({"kind": "ntfy", "name": "x", "url": "https://ntfy.sh/t", "token": "a b"}),
                "printable",
            ),
            (
                json!({"kind": "email", "name": "x", "url": "https://example.com"}),
                "kind",
            ),
        ];
        for (body, expected) in cases {
            let (status, answer) = alice
                .call(Method::POST, "/notification-channels", Some(body.clone()))
                .await;
            assert_eq!(status, 400, "{body}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(expected), "{body}: {message}");
        }

        let channel = add_channel(&alice, "ntfy", "phone", "https://ntfy.example/topic").await;
        assert_eq!(channel.signing_secret, None, "only webhooks are signed");
        let (_, project) = alice.shop_project().await;
        let path = format!("/projects/{}/notifications", project.id);
        let rules = [
            (
                json!({"rules": [{"channel_id": uuid::Uuid::new_v4(), "events": ["deploy_failed"]}]}),
                422,
                "not one of your",
            ),
            (
                json!({"rules": [{"channel_id": channel.channel.id, "events": ["test"]}]}),
                400,
                "cannot be chosen",
            ),
            (
                json!({"rules": [{"channel_id": channel.channel.id, "events": ["deploy_exploded"]}]}),
                400,
                "unknown variant",
            ),
        ];
        for (body, expected_status, expected) in rules {
            let (status, answer) = alice.call(Method::PUT, &path, Some(body.clone())).await;
            assert_eq!(status, expected_status, "{body}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(expected), "{body}: {message}");
        }

        // Bob sees none of it, and cannot use Alice's channel from his own project.
        let id = channel.channel.id;
        for (method, path) in [
            (
                Method::GET,
                format!("/notification-channels/{id}/deliveries"),
            ),
            (Method::POST, format!("/notification-channels/{id}/test")),
            (Method::DELETE, format!("/notification-channels/{id}")),
            (
                Method::GET,
                format!("/projects/{}/notifications", project.id),
            ),
        ] {
            let (status, _) = bob.call(method.clone(), &path, None).await;
            assert_eq!(status, 404, "{}: {method} {path}", db.name());
        }
        let listed: Vec<ChannelSummary> = bob
            .expect(Method::GET, "/notification-channels", None, 200)
            .await;
        assert!(listed.is_empty());
        let (_, bobs) = {
            let body = json!({"name": "b"});
            let agent: shared::api::AgentCreated =
                bob.expect(Method::POST, "/agents", Some(body), 201).await;
            let body = json!({"name": "blog", "agent_id": agent.agent.id, "path": "/srv/blog"});
            let project: Project = bob.expect(Method::POST, "/projects", Some(body), 201).await;
            (agent, project)
        };
        let body = json!({"rules": [{"channel_id": id, "events": ["deploy_failed"]}]});
        let path = format!("/projects/{}/notifications", bobs.id);
        let (status, _) = bob.call(Method::PUT, &path, Some(body)).await;
        // Like an id that names nothing.
        assert_eq!(status, 422);

        alice
            .call(
                Method::DELETE,
                &format!("/notification-channels/{id}"),
                None,
            )
            .await;
        let listed: Vec<ChannelSummary> = alice
            .expect(Method::GET, "/notification-channels", None, 200)
            .await;
        assert!(listed.is_empty(), "deleted");
    }
}

/// The real binary, so its log is the one an operator reads.
#[tokio::test]
async fn channel_urls_and_signing_secrets_never_show_in_listings_or_the_server_log() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(data_dir.path(), None, FAST).await;
    let api = server.api_user("alice");
    let receiver = Receiver::start(false).await;
    let hook = receiver.url("/hooks/tok-4f1c9e2a7b?key=qs-secret-91c3");
    let webhook = add_channel(&api, "webhook", "ci", &hook).await;
    let secret = webhook.signing_secret.clone().unwrap();
    // Nobody listens there: its attempts fail, and failures are logged.
    let dead = "http://127.0.0.1:9/services/T000/B000/slack-tok-77aa12";
    let slack = add_channel(&api, "slack", "team", dead).await;
    let ntfy = json!({"kind": "ntfy", "name": "phone", "url": receiver.url("/topic-xyz-5521"), "token": "tk_ntfy_0b9e77"});
    let _: ChannelCreated = api
        .expect(Method::POST, "/notification-channels", Some(ntfy), 201)
        .await;
    send_test(&api, &webhook).await;
    send_test(&api, &slack).await;
    receiver.wait_for(1).await;
    eventually(
        Duration::from_secs(10),
        "a failed attempt on the dead channel",
        || async { deliveries(&api, &slack).await[0].attempts >= 2 },
    )
    .await;

    let (_, listing) = api.call(Method::GET, "/notification-channels", None).await;
    let (_, history) = api
        .call(
            Method::GET,
            &format!("/notification-channels/{}/deliveries", slack.channel.id),
            None,
        )
        .await;
    let log = std::fs::read_to_string(data_dir.path().join("server.log")).unwrap();
    let credentials = [
        "tok-4f1c9e2a7b",
        "qs-secret-91c3",
        "slack-tok-77aa12",
        "topic-xyz-5521",
        "tk_ntfy_0b9e77",
        secret.as_str(),
    ];
    for text in [listing.to_string(), history.to_string(), log.clone()] {
        for credential in credentials {
            assert!(
                !text.contains(credential),
                "{credential} leaked into: {text}"
            );
        }
    }
    assert!(listing
        .to_string()
        .contains(&format!("\"target\":\"http://{}\"", receiver.address)));
    assert!(log.contains("notification channel added"), "{log}");
}

#[tokio::test]
async fn a_key_rotation_reseals_channel_credentials_which_open_only_in_their_own_row() {
    use server::config::NotifyConfig;
    use server::crypto::{Keyring, MasterKey};
    use server::ops::notifications as ops;
    use server::vault::{ChannelField, Vault};
    use shared::notify::CreateChannel;

    let data = tempfile::tempdir().unwrap();
    let store = server::db::Store::connect(None, data.path()).await.unwrap();
    let alice = store.create_user("alice", None, false).await.unwrap();
    let (old, new) = (MasterKey::generate(), MasterKey::generate());
    let vault = Vault::new(Keyring::new(old.clone(), None));
    let create = |name: &str| -> CreateChannel {
        serde_json::from_value(
            json!({"kind": "webhook", "name": name, "url": format!("https://example.com/{name}")}),
        )
        .unwrap()
    };
    let first = ops::create_channel(
        &store,
        &vault,
        &NotifyConfig::default(),
        &alice,
        create("one"),
    )
    .await
    .unwrap();
    ops::create_channel(
        &store,
        &vault,
        &NotifyConfig::default(),
        &alice,
        create("two"),
    )
    .await
    .unwrap();

    let rotating = Vault::new(Keyring::new(new.clone(), Some(old)));
    let done = ops::rotate_all(&store, &rotating).await.unwrap();
    assert_eq!(
        (done.rotated, done.current),
        (4, 0),
        "URL and signing secret of each"
    );
    let again = ops::rotate_all(&store, &rotating).await.unwrap();
    assert_eq!((again.rotated, again.current), (0, 4));

    let after = Vault::new(Keyring::new(new, None));
    let channels = store.all_channels().await.unwrap();
    let one = channels.iter().find(|c| c.id == first.channel.id).unwrap();
    let two = channels.iter().find(|c| c.id != first.channel.id).unwrap();
    let url = after
        .open_credential(ops::channel_row(one, ChannelField::Url), &one.url)
        .unwrap();
    assert_eq!(url.expose(), "https://example.com/one");
    // Copied into another row, or read as another field, a sealed URL does not open.
    assert!(after
        .open_credential(ops::channel_row(two, ChannelField::Url), &one.url)
        .is_err());
    assert!(after
        .open_credential(ops::channel_row(one, ChannelField::SigningSecret), &one.url)
        .is_err());
    store.close().await;
}

#[tokio::test]
async fn the_notifications_page_lists_the_persons_channels_by_host_only() {
    use server::ops::notifications as ops;

    let app = spawn_app_with_env(&TestDb::Sqlite, AppOptions::default(), FAST).await;
    let cookie = app.admin_session("carol").await;
    let carol = app.store().user_by_login("carol").await.unwrap();
    let create = serde_json::from_value(json!({
        "kind": "slack",
        "name": "team chat",
        "url": "https://hooks.slack.com/services/T0/B0/page-tok-31d9"
    }))
    .unwrap();
    let config = &app.state.config.notifications;
    ops::create_channel(app.store(), &app.state.vault, config, &carol, create)
        .await
        .unwrap();

    let page = crate::helpers::http_request(
        app.address,
        "GET",
        "/notifications",
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(page.status, 200);
    let row =
        crate::helpers::dashboard_row(&page.body, "team chat").expect("the channel is listed");
    assert!(row.contains("https://hooks.slack.com"), "{row}");
    assert!(!page.body.contains("page-tok-31d9"));
    assert!(page.body.contains("Add a channel"));
}

/// With a queue of 3, five notifications to a receiver that is down keep the newest three.
/// The worker may take the next head while the test sends (its first attempt fails at once and
/// it waits for its retry), so which middle one is dropped depends on timing; how many are kept,
/// that the oldest go first and that the newest stay does not. A delivery being sent is never
/// dropped but counts towards the cap.
#[tokio::test]
async fn a_full_queue_drops_its_oldest_pending_deliveries() {
    for db in TestDb::all().await {
        let env = [
            ("STAGELY_NOTIFY_QUEUE", "3"),
            ("STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS", "1"),
            ("STAGELY_NOTIFY_RETRY_MS", "600000"),
            ("STAGELY_NOTIFY_POLL_MS", "50"),
        ];
        let app = spawn_app_with_env(&db, AppOptions::default(), &env).await;
        let (_, api) = app.user("alice").await;
        let channel = add_channel(&api, "webhook", "dead", "http://127.0.0.1:9/hook").await;
        let first = send_test(&api, &channel).await;
        eventually(Duration::from_secs(10), "the first attempt", || async {
            deliveries(&api, &channel).await[0].attempts == 1
        })
        .await;
        let mut queued = vec![first.delivery_id];
        for _ in 0..4 {
            queued.push(send_test(&api, &channel).await.delivery_id);
        }
        let listed = deliveries(&api, &channel).await;
        let status_of = |id| {
            let delivery = listed.iter().find(|delivery| delivery.id == id).unwrap();
            (
                delivery.status,
                delivery.last_error.clone().unwrap_or_default(),
            )
        };
        let pending: Vec<_> = queued
            .iter()
            .filter(|id| status_of(**id).0 == DeliveryStatus::Pending)
            .copied()
            .collect();
        assert_eq!(pending.len(), 3, "{}: {listed:?}", db.name());
        for id in queued.iter().filter(|id| !pending.contains(id)) {
            assert_eq!(
                status_of(*id),
                (DeliveryStatus::Failed, "dropped: queue full".to_string()),
                "{}",
                db.name()
            );
        }
        assert!(!pending.contains(&queued[0]), "the oldest goes first");
        assert!(pending.ends_with(&queued[3..]), "the newest stay");

        // A send in flight (held here as a worker holds it) is kept and counts: one more
        // notification drops the oldest of the others.
        let head = pending[0];
        let until = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 + 600_000;
        eventually(Duration::from_secs(10), "the head claimed", || async {
            app.store()
                .claim_delivery(head, until)
                .await
                .unwrap()
                .is_some()
        })
        .await;
        let newest = send_test(&api, &channel).await.delivery_id;
        let listed = deliveries(&api, &channel).await;
        let still_pending: Vec<_> = listed
            .iter()
            .filter(|delivery| delivery.status == DeliveryStatus::Pending)
            .map(|delivery| delivery.id)
            .collect();
        assert_eq!(still_pending.len(), 3, "{}: {listed:?}", db.name());
        for id in [head, pending[2], newest] {
            assert!(still_pending.contains(&id), "{}: {listed:?}", db.name());
        }
    }
}

/// On PostgreSQL a worker's claim of the head may commit while a delivery is being queued. The
/// enqueue waits for it (the claim's transaction is held open here until the enqueue is seen
/// waiting) and counts it, so the channel still keeps 3 pending, not 4.
#[tokio::test]
async fn a_claim_committed_during_an_enqueue_counts_towards_the_cap() {
    let Some(db) = TestDb::all()
        .await
        .into_iter()
        .find(|db| matches!(db, TestDb::Postgres(_)))
    else {
        return;
    };
    // The worker stays out of the way: nothing wakes it and it polls once a minute.
    let env = [
        ("STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS", "1"),
        ("STAGELY_NOTIFY_POLL_MS", "60000"),
    ];
    let app = spawn_app_with_env(&db, AppOptions::default(), &env).await;
    let (_, api) = app.user("alice").await;
    let created = add_channel(&api, "webhook", "dead", "http://127.0.0.1:9/hook").await;
    let channel = created.channel.id;
    let enqueue = move |store: server::db::Store| async move {
        let id = DeliveryId(uuid::Uuid::new_v4());
        let dropped = store
            .enqueue_delivery(id, channel, NotificationEvent::DeployFailed, "{}", 3)
            .await
            .unwrap();
        (id, dropped)
    };
    let mut queued = Vec::new();
    for _ in 0..3 {
        let (id, dropped) = enqueue(app.store().clone()).await;
        assert_eq!(dropped, 0);
        queued.push(id);
    }

    let raw = sqlx::PgPool::connect(db.url().unwrap()).await.unwrap();
    let mut claim = raw.begin().await.unwrap();
    let until = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 + 600_000;
    sqlx::query(
        "UPDATE notification_deliveries SET claimed_by = 'test', claimed_until = $2 WHERE id = $1",
    )
    .bind(queued[0].to_string())
    .bind(until)
    .execute(&mut *claim)
    .await
    .unwrap();
    let newest = tokio::spawn(enqueue(app.store().clone()));
    eventually(Duration::from_secs(10), "the enqueue waiting", || async {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&raw)
        .await
        .unwrap();
        waiting > 0
    })
    .await;
    claim.commit().await.unwrap();
    let (newest, dropped) = newest.await.unwrap();

    let listed = deliveries(&api, &created).await;
    let pending: Vec<_> = listed
        .iter()
        .filter(|delivery| delivery.status == DeliveryStatus::Pending)
        .map(|delivery| delivery.id)
        .collect();
    assert_eq!(dropped, 1, "{listed:?}");
    assert_eq!(pending.len(), 3, "{listed:?}");
    for id in [queued[0], queued[2], newest] {
        assert!(pending.contains(&id), "{listed:?}");
    }
}

/// Two servers on one PostgreSQL database (replicas), with fast notification settings; `None`
/// without PostgreSQL.
async fn two_replicas() -> Option<(TestApp, TestApp)> {
    let db = TestDb::all()
        .await
        .into_iter()
        .find(|db| matches!(db, TestDb::Postgres(_)))?;
    let first = spawn_app_with_env(&db, AppOptions::default(), FAST).await;
    let second = spawn_app_with_env(&db, AppOptions::default(), FAST).await;
    Some((first, second))
}

/// Replicas share a PostgreSQL database: each delivery is claimed by one of them only.
#[tokio::test]
async fn two_servers_on_one_database_send_each_delivery_once() {
    let Some((first, second)) = two_replicas().await else {
        return;
    };
    let (_, api) = first.user("alice").await;
    let receiver = Receiver::start(false).await;
    let mut channels = Vec::new();
    for name in ["a", "b", "c", "d"] {
        channels.push(add_channel(&api, "webhook", name, &receiver.url(&format!("/{name}"))).await);
    }
    let mut sent = Vec::new();
    for round in 0..5 {
        for channel in &channels {
            sent.push((
                channel.channel.id,
                round,
                send_test(&api, channel).await.delivery_id,
            ));
        }
    }
    receiver.wait_for(sent.len()).await;
    // Time for a duplicate to arrive, if there were one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.received();
    let received_ids: Vec<String> = received
        .iter()
        .map(|request| request.header("x-stagely-delivery").to_string())
        .collect();
    assert_eq!(received_ids.len(), sent.len(), "each delivery exactly once");
    let unique: std::collections::HashSet<_> = received_ids.iter().collect();
    assert_eq!(unique.len(), sent.len());
    // Each channel's deliveries arrived in the order they were queued.
    for channel in &channels {
        let path = format!("/{}", channel.channel.name);
        let order: Vec<String> = received
            .iter()
            .filter(|request| request.path == path)
            .map(|request| request.header("x-stagely-delivery").to_string())
            .collect();
        let expected: Vec<String> = sent
            .iter()
            .filter(|(id, _, _)| *id == channel.channel.id)
            .map(|(_, _, delivery)| delivery.to_string())
            .collect();
        assert_eq!(order, expected);
    }
    drop(second);
}

/// The whole path with a real agent and Docker: a deploy that succeeds and one that fails,
/// each told to the webhook once, the failure's output masked.
#[tokio::test]
async fn real_deploys_notify_their_result_with_the_failures_output_masked() {
    use crate::helpers::{wait_for_deployment, HostProject, WEB_AND_WORKER};
    use shared::api::DeployAccepted;

    for db in TestDb::all().await {
        let app = spawn_app_with_env(&db, AppOptions::default(), FAST).await;
        let (_, api) = app.user("alice").await;
        let (agent, process) = api.connected_agent(&app.url(), app.data_dir.path()).await;
        let receiver = Receiver::start(false).await;
        let channel = add_channel(&api, "webhook", "ci", &receiver.url("/")).await;
        let events = [
            NotificationEvent::DeploySucceeded,
            NotificationEvent::DeployFailed,
        ];

        let fine = HostProject::new(WEB_AND_WORKER).await;
        let broken = HostProject::new(
            r#"services:
  app:
    image: {image}
    command: ["sh", "-c", "echo login with $$DB_PASSWORD refused; exit 1"]
"#,
        )
        .await;
        let mut results = Vec::new();
        for host in [&fine, &broken] {
            let project = api.create_project(&agent, host).await;
            subscribe(&api, project.id, &channel, &events).await;
            api.add_secret(project.id, "DB_PASSWORD", "pw-7Hq2-zebra-lamp")
                .await;
            let accepted: DeployAccepted = api
                .expect(Method::POST, &format!("/deploy/{}", project.id), None, 202)
                .await;
            let done =
                wait_for_deployment(&api, accepted.deployment_id, Duration::from_secs(90)).await;
            results.push((done.id, done.status));
        }
        assert_eq!(
            results
                .iter()
                .map(|(_, status)| *status)
                .collect::<Vec<_>>(),
            [DeploymentStatus::Succeeded, DeploymentStatus::Failed],
            "{}: agent log:\n{}",
            db.name(),
            process.log_text()
        );

        let received = receiver.wait_for(2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(receiver.received().len(), 2, "one notification per deploy");
        let succeeded = received[0].notification();
        assert_eq!(succeeded.event, NotificationEvent::DeploySucceeded);
        assert_eq!(succeeded.deployment_id, Some(results[0].0));
        let failed = received[1].notification();
        assert_eq!(failed.event, NotificationEvent::DeployFailed);
        assert_eq!(failed.deployment_id, Some(results[1].0));
        assert!(
            failed.message.contains("login with *** refused"),
            "{}",
            failed.message
        );
        let body = String::from_utf8_lossy(&received[1].body);
        assert!(!body.contains("pw-7Hq2-zebra-lamp"), "{body}");
    }
}

#[tokio::test]
async fn a_channel_cannot_make_the_server_call_its_own_host_or_a_private_network() {
    // The default settings: no STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS.
    let strict: Vec<(&str, &str)> = FAST
        .iter()
        .copied()
        .filter(|(name, _)| *name != "STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS")
        .collect();
    let app = spawn_app_with_env(&TestDb::Sqlite, AppOptions::default(), &strict).await;
    let (alice, api) = app.user("alice").await;
    let receiver = Receiver::start(false).await;
    for url in [
        receiver.url("/hook"),
        "http://localhost:2375/containers/json".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]:5432/".to_string(),
    ] {
        let body = json!({"kind": "webhook", "name": "inside", "url": url});
        let (status, answer) = api
            .call(Method::POST, "/notification-channels", Some(body))
            .await;
        // Well formed, refused by the operator's policy.
        assert_eq!(status, 403, "{url}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS=1"),
            "{message}"
        );
    }

    // A channel stored while the operator allowed it (or whose name now resolves inside) is
    // checked again when it is used: nothing reaches the receiver.
    let permissive = server::config::NotifyConfig {
        allow_private_networks: true,
        ..app.state.config.notifications.clone()
    };
    let body: shared::notify::CreateChannel = serde_json::from_value(
        json!({"kind": "webhook", "name": "old", "url": receiver.url("/hook")}),
    )
    .unwrap();
    let created = server::ops::notifications::create_channel(
        app.store(),
        &app.state.vault,
        &permissive,
        &alice,
        body,
    )
    .await
    .unwrap();
    let queued = send_test(&api, &created).await;
    eventually(
        Duration::from_secs(10),
        "the delivery to be given up",
        || async {
            deliveries(&api, &created).await.iter().any(|delivery| {
                delivery.id == queued.delivery_id
                    && delivery.status == DeliveryStatus::Failed
                    && delivery
                        .last_error
                        .as_deref()
                        .is_some_and(|error| error.contains("private network"))
            })
        },
    )
    .await;
    assert!(receiver.received().is_empty());
}

/// A server restart: its whole fleet says hello in the same moment a deploy's end is reported.
/// The hellos must not push the deploy's end out of the events the notifier reads before its
/// next turn (they did: 1,024 events fit, and the `deploy_failed` was never sent).
#[tokio::test]
async fn a_deploys_end_is_told_although_a_whole_fleet_reconnects_in_the_same_moment() {
    for db in TestDb::all().await {
        let app = spawn_app_with_env(&db, AppOptions::default(), FAST).await;
        let (alice, api) = app.user("alice").await;
        let (_, project) = api.shop_project().await;
        let receiver = Receiver::start(false).await;
        let channel = add_channel(&api, "webhook", "ci", &receiver.url("/")).await;
        subscribe(
            &api,
            project.id,
            &channel,
            &[NotificationEvent::DeployFailed],
        )
        .await;
        let failed = finish_deploy(
            &app,
            &project,
            &alice,
            DeploymentStatus::Failed,
            Some("exit 1"),
        )
        .await;
        // No await in between: the notifier's task runs only after every hello (the test's
        // runtime has one thread).
        for _ in 0..5_000 {
            app.state.hub.publish(HubEvent::AgentStatus {
                agent_id: shared::AgentId(uuid::Uuid::new_v4()),
                status: AgentStatus::Connected,
            });
        }
        let told = receiver.wait_for(1).await;
        assert_eq!(told.len(), 1, "{}", db.name());
        let notification = told[0].notification();
        assert_eq!(notification.event, NotificationEvent::DeployFailed);
        assert_eq!(notification.deployment_id, Some(failed), "{}", db.name());
    }
}

/// Two replicas: an agent that the replica it left said was offline comes back on the other.
/// The first replica never sees that hello as its own (it learns of it from the other), yet
/// it tells `agent_online`, and the agent's next disconnection is told again.
#[tokio::test]
async fn an_agent_back_on_another_replica_is_told_online_and_its_next_outage_too() {
    use crate::helpers::{hello_as, raw_agent};
    let Some((first, second)) = two_replicas().await else {
        return;
    };
    let (_, api) = first.user("alice").await;
    let (agent, project) = api.shop_project().await;
    let receiver = Receiver::start(false).await;
    let channel = add_channel(&api, "webhook", "ops", &receiver.url("/")).await;
    let events = [
        NotificationEvent::AgentOffline,
        NotificationEvent::AgentOnline,
    ];
    subscribe(&api, project.id, &channel, &events).await;
    let told = |n: usize| {
        let receiver = &receiver;
        async move {
            let received = receiver.wait_for(n).await;
            assert_eq!(
                received.len(),
                n,
                "{:?}",
                received
                    .iter()
                    .map(|r| r.notification().event)
                    .collect::<Vec<_>>()
            );
            received[n - 1].notification().event
        }
    };

    let socket = {
        let mut socket = raw_agent(&first.stream_url(), &agent.token).await;
        hello_as(&mut socket, env!("CARGO_PKG_VERSION")).await;
        socket
    };
    drop(socket);
    assert_eq!(told(1).await, NotificationEvent::AgentOffline);
    let mut socket = raw_agent(&second.stream_url(), &agent.token).await;
    hello_as(&mut socket, env!("CARGO_PKG_VERSION")).await;
    assert_eq!(told(2).await, NotificationEvent::AgentOnline);
    drop(socket);
    assert_eq!(told(3).await, NotificationEvent::AgentOffline);
    // Nothing twice.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(receiver.received().len(), 3);
}
