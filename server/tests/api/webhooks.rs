//! Push webhooks (issue 13): deliveries built exactly as GitHub, GitLab and Gitea/Forgejo send
//! them (their headers, an HMAC-SHA256 signature over the raw body or the token, a realistic
//! `push` payload) and a plain `Authorization: Bearer` POST, against a real server process,
//! with a real agent and dockerd where a deploy happens, on SQLite and PostgreSQL.

use crate::helpers::{
    eventually, hello, next_message, raw_agent, send_frame, wait_for_deployment, AgentProcess,
    ApiClient, HostProject, ServerProcess, TestDb, WEB_AND_WORKER,
};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use shared::api::{AgentCreated, AgentStatus, AgentSummary, Deployment, DeploymentStatus, Project};
use shared::protocol::{JobEvent, JobUpdate, PROTOCOL_VERSION};
use shared::webhooks::{
    DeliveryOutcome, DeliveryReceipt, DeployTrigger, Webhook, WebhookCreated, WebhookProvider,
};
use shared::{AgentToServer, JobId, ServerToAgent};
use std::path::Path;
use std::time::Duration;

/// Generous bound for a real deploy (liveness, not speed).
const DEPLOY: Duration = Duration::from_secs(120);

/// Starts the server process on `db` with a user `alice` (and her API token) written first.
async fn start(db: &TestDb, data: &Path) -> (ServerProcess, ApiClient) {
    let token = {
        let store = server::db::Store::connect(db.url(), data).await.unwrap();
        let alice = store.create_user("alice", None, false).await.unwrap();
        let token = server::token::Token::generate();
        store
            .create_api_token(alice.id, &token.hash())
            .await
            .unwrap();
        store.close().await;
        token
    };
    let server = restart(db, data).await;
    let api = ApiClient::new(&server.url(), token.expose());
    (server, api)
}

/// Starts the server process again over the same database.
async fn restart(db: &TestDb, data: &Path) -> ServerProcess {
    let mut env = vec![];
    if let Some(url) = db.url() {
        env.push(("DATABASE_URL", url));
        env.push((
            "APP_MASTER_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ));
    }
    ServerProcess::start_with(data, None, &env).await
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn sha(n: u8) -> String {
    format!("{n:x}").repeat(40).chars().take(40).collect()
}

/// A delivery's headers, name and value.
type Headers = Vec<(String, String)>;

const ZEROS: &str = "0000000000000000000000000000000000000000";

/// A `push` payload as GitHub sends it (trimmed of the repository's many URL fields).
fn github_push(git_ref: &str, before: &str, after: &str) -> Vec<u8> {
    let deleted = after == ZEROS;
    let commit = json!({
        "id": after, "tree_id": sha(9), "distinct": true,
        "message": "Add the worker", "timestamp": "2026-11-30T18:00:00+00:00",
        "url": format!("https://github.com/octo-org/shop/commit/{after}"),
        "author": {"name": "Mona Octocat", "email": "mona@github.com", "username": "octocat"},
        "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
        "added": ["worker.py"], "removed": [], "modified": ["compose.yaml"]
    });
    serde_json::to_vec(&json!({
        "ref": git_ref, "before": before, "after": after,
        "repository": {
            "id": 123456, "node_id": "R_kgDOAbCdEf", "name": "shop", "full_name": "octo-org/shop",
            "private": true, "owner": {"login": "octo-org", "id": 9919, "type": "Organization"},
            "html_url": "https://github.com/octo-org/shop", "default_branch": "main",
            "clone_url": "https://github.com/octo-org/shop.git",
            "ssh_url": "git@github.com:octo-org/shop.git"
        },
        "pusher": {"name": "octocat", "email": "mona@github.com"},
        "organization": {"login": "octo-org", "id": 9919},
        "sender": {"login": "octocat", "id": 583231, "type": "User"},
        "created": false, "deleted": deleted, "forced": false, "base_ref": null,
        "compare": format!("https://github.com/octo-org/shop/compare/{}...{}", &before[..12], &after[..12]),
        "commits": if deleted { json!([]) } else { json!([commit.clone()]) },
        "head_commit": if deleted { Value::Null } else { commit }
    }))
    .unwrap()
}

/// GitHub's headers for `event`, signed with `secret` over `body`.
fn github_headers(secret: &str, event: &str, delivery: &str, body: &[u8]) -> Headers {
    vec![
        ("User-Agent".into(), "GitHub-Hookshot/7b3a1f2".into()),
        ("Content-Type".into(), "application/json".into()),
        ("X-GitHub-Event".into(), event.into()),
        ("X-GitHub-Delivery".into(), delivery.into()),
        ("X-GitHub-Hook-ID".into(), "292430182".into()),
        (
            "X-GitHub-Hook-Installation-Target-Type".into(),
            "repository".into(),
        ),
        (
            "X-GitHub-Hook-Installation-Target-ID".into(),
            "123456".into(),
        ),
        (
            "X-Hub-Signature-256".into(),
            format!("sha256={}", hmac_hex(secret, body)),
        ),
    ]
}

/// A `Push Hook` payload as GitLab sends it.
fn gitlab_push(git_ref: &str, before: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object_kind": "push", "event_name": "push",
        "before": before, "after": after, "ref": git_ref, "ref_protected": true,
        "checkout_sha": if after == ZEROS { Value::Null } else { json!(after) },
        "message": null, "user_id": 4, "user_name": "John Smith", "user_username": "jsmith",
        "user_email": "", "user_avatar": "https://gitlab.example.com/uploads/user/avatar/4/avatar.png",
        "project_id": 15,
        "project": {
            "id": 15, "name": "shop", "path_with_namespace": "acme/shop",
            "default_branch": "main", "web_url": "https://gitlab.example.com/acme/shop",
            "git_ssh_url": "git@gitlab.example.com:acme/shop.git",
            "git_http_url": "https://gitlab.example.com/acme/shop.git"
        },
        "commits": [{
            "id": after, "message": "Add the worker\n", "title": "Add the worker",
            "timestamp": "2026-11-30T18:00:00+00:00",
            "url": format!("https://gitlab.example.com/acme/shop/-/commit/{after}"),
            "author": {"name": "John Smith", "email": "jsmith@example.com"},
            "added": ["worker.py"], "modified": ["compose.yaml"], "removed": []
        }],
        "total_commits_count": 1,
        "repository": {"name": "shop", "url": "git@gitlab.example.com:acme/shop.git",
                       "homepage": "https://gitlab.example.com/acme/shop"}
    }))
    .unwrap()
}

fn gitlab_headers(token: &str, delivery: &str) -> Headers {
    vec![
        ("User-Agent".into(), "GitLab/17.6.0".into()),
        ("Content-Type".into(), "application/json".into()),
        ("X-Gitlab-Event".into(), "Push Hook".into()),
        ("X-Gitlab-Token".into(), token.into()),
        (
            "X-Gitlab-Instance".into(),
            "https://gitlab.example.com".into(),
        ),
        (
            "X-Gitlab-Webhook-UUID".into(),
            "0f3e8b5a-1c2d-4e5f-9a8b-7c6d5e4f3a2b".into(),
        ),
        ("X-Gitlab-Event-UUID".into(), delivery.into()),
        ("Idempotency-Key".into(), delivery.into()),
    ]
}

/// A `push` payload as Gitea and Forgejo send it.
fn gitea_push(git_ref: &str, before: &str, after: &str) -> Vec<u8> {
    let commit = json!({
        "id": after, "message": "Add the worker\n",
        "url": format!("https://git.example.com/acme/shop/commit/{after}"),
        "author": {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
        "committer": {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
        "verification": null, "timestamp": "2026-11-30T18:00:00Z",
        "added": ["worker.py"], "removed": [], "modified": ["compose.yaml"]
    });
    serde_json::to_vec(&json!({
        "ref": git_ref, "before": before, "after": after,
        "compare_url": format!("https://git.example.com/acme/shop/compare/{before}...{after}"),
        "commits": [commit.clone()], "total_commits": 1, "head_commit": commit,
        "repository": {"id": 1, "owner": {"id": 1, "login": "acme", "username": "acme"},
                       "name": "shop", "full_name": "acme/shop", "private": true,
                       "html_url": "https://git.example.com/acme/shop",
                       "clone_url": "https://git.example.com/acme/shop.git",
                       "default_branch": "main"},
        "pusher": {"id": 1, "login": "gitea", "full_name": "", "email": "someone@gitea.io", "username": "gitea"},
        "sender": {"id": 1, "login": "gitea", "full_name": "", "email": "someone@gitea.io", "username": "gitea"}
    }))
    .unwrap()
}

/// Gitea's headers: its own, and the Gogs and GitHub ones it sends too (signed alike).
fn gitea_headers(secret: &str, delivery: &str, body: &[u8]) -> Headers {
    let signature = hmac_hex(secret, body);
    vec![
        ("User-Agent".into(), "Go-http-client/1.1".into()),
        ("Content-Type".into(), "application/json".into()),
        ("X-Gitea-Event".into(), "push".into()),
        ("X-Gitea-Event-Type".into(), "push".into()),
        ("X-Gitea-Delivery".into(), delivery.into()),
        ("X-Gitea-Signature".into(), signature.clone()),
        ("X-Gogs-Event".into(), "push".into()),
        ("X-Gogs-Delivery".into(), delivery.into()),
        ("X-Gogs-Signature".into(), signature.clone()),
        ("X-GitHub-Event".into(), "push".into()),
        ("X-GitHub-Delivery".into(), delivery.into()),
        ("X-Hub-Signature-256".into(), format!("sha256={signature}")),
    ]
}

/// Forgejo's headers: Gitea's, plus its own `X-Forgejo-*`.
fn forgejo_headers(secret: &str, delivery: &str, body: &[u8]) -> Headers {
    let mut headers = gitea_headers(secret, delivery, body);
    headers.extend([
        ("X-Forgejo-Event".into(), "push".into()),
        ("X-Forgejo-Event-Type".into(), "push".into()),
        ("X-Forgejo-Delivery".into(), delivery.into()),
        ("X-Forgejo-Signature".into(), hmac_hex(secret, body)),
    ]);
    headers
}

/// POSTs a delivery to `url`; the status and the JSON answer.
async fn deliver(url: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn receipt(status: u16, body: &Value, expected: u16, what: &str) -> DeliveryReceipt {
    assert_eq!(status, expected, "{what}: {body}");
    serde_json::from_value(body.clone()).unwrap_or_else(|_| panic!("{what}: {body}"))
}

fn hook_url(server: &ServerProcess, hook: &Webhook) -> String {
    format!("{}/api/v1/hooks/{}", server.url(), hook.id)
}

async fn history(api: &ApiClient, project: &Project) -> Vec<Deployment> {
    let path = format!("/projects/{}/deployments", project.id);
    api.expect(Method::GET, &path, None, 200).await
}

async fn create_hook(api: &ApiClient, project: &Project) -> WebhookCreated {
    let path = format!("/projects/{}/webhook", project.id);
    api.expect(Method::POST, &path, None, 201).await
}

async fn connected_agent(
    api: &ApiClient,
    server: &ServerProcess,
    logs: &Path,
) -> (AgentCreated, AgentProcess) {
    let agent: AgentCreated = api
        .expect(
            Method::POST,
            "/agents",
            Some(json!({"name": "hook-host"})),
            201,
        )
        .await;
    let process = AgentProcess::spawn(&server.url(), &agent.token, logs);
    eventually(Duration::from_secs(10), "the agent to connect", || async {
        let agents: Vec<AgentSummary> = api.expect(Method::GET, "/agents", None, 200).await;
        agents
            .iter()
            .any(|listed| listed.id == agent.agent.id && listed.status == AgentStatus::Connected)
    })
    .await;
    (agent, process)
}

/// Waits for a deploy a delivery started and checks what the history says started it.
async fn deployed_by(
    api: &ApiClient,
    receipt: &DeliveryReceipt,
    provider: WebhookProvider,
    commit: Option<&str>,
    pusher: Option<&str>,
) -> Deployment {
    assert_eq!(receipt.outcome, DeliveryOutcome::Deployed, "{receipt:?}");
    let id = receipt.deployment_id.expect("a deploy started");
    let done = wait_for_deployment(api, id, DEPLOY).await;
    assert_eq!(
        done.status,
        DeploymentStatus::Succeeded,
        "{:?}",
        done.events
    );
    let DeployTrigger::Webhook {
        provider: by,
        commit: pushed,
        pusher: who,
        ..
    } = &done.trigger
    else {
        panic!("the history says {:?}", done.trigger);
    };
    assert_eq!(*by, provider);
    assert_eq!(pushed.as_deref(), commit);
    assert_eq!(who.as_deref(), pusher);
    assert!(done
        .trigger
        .describe()
        .starts_with(&format!("webhook {provider}")));
    done
}

#[tokio::test]
async fn deliveries_as_github_gitlab_and_gitea_send_them_deploy_once_and_forgeries_deploy_nothing()
{
    for db in TestDb::all().await {
        let data = tempfile::tempdir().unwrap();
        let (server, api) = start(&db, data.path()).await;
        let (agent, _agent) = connected_agent(&api, &server, data.path()).await;
        let host = HostProject::new(WEB_AND_WORKER).await;
        let body = json!({"name": host.name, "agent_id": agent.agent.id, "path": host.path()});
        let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
        let body = json!({"name": "other", "agent_id": agent.agent.id, "path": "/srv/other"});
        let other: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;

        let created = create_hook(&api, &project).await;
        let secret = created.secret.expose().to_string();
        let other_secret = create_hook(&api, &other).await.secret.expose().to_string();
        assert!(created
            .webhook
            .url
            .ends_with(&format!("/api/v1/hooks/{}", created.webhook.id)));
        assert!(
            !created.webhook.url.contains(&project.id.to_string()),
            "the URL does not name the project"
        );
        let path = format!("/projects/{}/webhook", project.id);
        let (status, again) = api.call(Method::POST, &path, None).await;
        assert_eq!(status, 409, "one hook per project: {again}");
        // Never shown again.
        let (status, shown) = api.call(Method::GET, &path, None).await;
        assert_eq!(status, 200);
        assert!(
            !shown.to_string().contains(&secret),
            "GET shows the secret: {shown}"
        );
        let url = hook_url(&server, &created.webhook);

        // GitHub's ping when the hook is added.
        let ping = serde_json::to_vec(
            &json!({"zen": "Keep it logically awesome.", "hook_id": 292430182,
            "hook": {"type": "Repository", "id": 292430182, "events": ["push"], "active": true}}),
        )
        .unwrap();
        let (status, answer) = deliver(
            &url,
            &github_headers(&secret, "ping", "ping-1", &ping),
            ping,
        )
        .await;
        assert_eq!(
            receipt(status, &answer, 200, "ping").outcome,
            DeliveryOutcome::Ping
        );

        // Forgeries, written as an attacker would: each is the same 401, and deploys nothing.
        let main = "refs/heads/main";
        let push = github_push(main, &sha(1), &sha(2));
        let evil = github_push(main, &sha(1), &sha(0xe));
        let mut forged: Vec<(&str, Headers, Vec<u8>)> = vec![
            (
                "a signature for another body",
                github_headers(&secret, "push", "f-1", &push),
                evil.clone(),
            ),
            (
                "a signature with another secret",
                github_headers("guessed", "push", "f-2", &push),
                push.clone(),
            ),
            (
                "the secret of another project's hook",
                github_headers(&other_secret, "push", "f-3", &push),
                push.clone(),
            ),
            (
                "a GitLab token of another hook",
                gitlab_headers(&other_secret, "f-5"),
                gitlab_push(main, &sha(1), &sha(2)),
            ),
            (
                "a Gitea signature with another secret",
                gitea_headers("guessed", "f-6", &push),
                gitea_push(main, &sha(1), &sha(2)),
            ),
            (
                "a Bearer token of another hook",
                vec![("Authorization".into(), format!("Bearer {other_secret}"))],
                Vec::new(),
            ),
            ("no credentials at all", Vec::new(), Vec::new()),
        ];
        let mut missing = github_headers(&secret, "push", "f-4", &push);
        missing.retain(|(name, _)| name != "X-Hub-Signature-256");
        forged.push(("no signature header", missing, push.clone()));
        let mut sha1_only = github_headers(&secret, "push", "f-7", &push);
        sha1_only.retain(|(name, _)| name != "X-Hub-Signature-256");
        sha1_only.push((
            "X-Hub-Signature".into(),
            format!("sha1={}", &hmac_hex(&secret, &push)[..40]),
        ));
        forged.push(("only the SHA-1 header", sha1_only, push.clone()));
        let mut refused = Vec::new();
        for (what, headers, body) in forged {
            let (status, answer) = deliver(&url, &headers, body).await;
            assert_eq!(status, 401, "{what}: {answer}");
            refused.push(answer);
        }
        assert!(
            refused.windows(2).all(|pair| pair[0] == pair[1]),
            "every refusal reads the same: {refused:?}"
        );
        let unknown = format!(
            "{}/api/v1/hooks/{}",
            server.url(),
            "AAAAAAAAAAAAAAAAAAAAAAAA"
        );
        let (status, _) = deliver(
            &unknown,
            &github_headers(&secret, "push", "u-1", &push),
            push.clone(),
        )
        .await;
        assert_eq!(status, 404, "unknown hook");
        let too_big = vec![b' '; 1024 * 1024 + 1];
        let (status, _) = deliver(
            &url,
            &github_headers(&secret, "push", "b-1", &too_big),
            too_big,
        )
        .await;
        assert_eq!(status, 413, "a body over 1 MiB");
        assert!(history(&api, &project).await.is_empty(), "nothing deployed");

        // A signed push deploys; its redelivery does not.
        let headers = github_headers(
            &secret,
            "push",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958",
            &push,
        );
        let (status, answer) = deliver(&url, &headers, push.clone()).await;
        let first = receipt(status, &answer, 202, "GitHub push");
        deployed_by(
            &api,
            &first,
            WebhookProvider::Github,
            Some(&sha(2)),
            Some("octocat"),
        )
        .await;
        let (status, answer) = deliver(&url, &headers, push.clone()).await;
        assert_eq!(
            receipt(status, &answer, 200, "redelivery").outcome,
            DeliveryOutcome::Duplicate
        );
        assert_eq!(history(&api, &project).await.len(), 1);

        // Acknowledged and ignored: a tag, a branch deletion, another event; a signed body
        // that is not JSON is refused with a reason.
        let ignored = [
            (
                "tag",
                github_push("refs/tags/v1.0.0", ZEROS, &sha(3)),
                "push",
                "tag v1.0.0",
            ),
            (
                "deletion",
                github_push("refs/heads/old", &sha(3), ZEROS),
                "push",
                "branch old was deleted",
            ),
            (
                "issues",
                br#"{"action":"opened"}"#.to_vec(),
                "issues",
                "event issues is not a push",
            ),
        ];
        for (n, (what, body, event, reason)) in ignored.into_iter().enumerate() {
            let headers = github_headers(&secret, event, &format!("i-{n}"), &body);
            let (status, answer) = deliver(&url, &headers, body).await;
            let ignored = receipt(status, &answer, 200, what);
            assert_eq!(ignored.outcome, DeliveryOutcome::Ignored, "{what}");
            assert_eq!(ignored.message, format!("ignored: {reason}"), "{what}");
        }
        let garbage = b"{\"ref\": \"refs/heads/main\", ".to_vec();
        let (status, answer) = deliver(
            &url,
            &github_headers(&secret, "push", "g-1", &garbage),
            garbage,
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not a push event's JSON"),
            "{answer}"
        );
        assert_eq!(history(&api, &project).await.len(), 1);

        // GitLab's token, Gitea's and Forgejo's signatures, and Bearer.
        let gitlab = gitlab_push(main, &sha(2), &sha(4));
        let gitea = gitea_push(main, &sha(4), &sha(5));
        let forgejo = gitea_push(main, &sha(5), &sha(6));
        let deliveries = [
            (
                "GitLab push",
                gitlab_headers(&secret, "5f3c8a4e-2b1d-4c6e-8f9a-0b1c2d3e4f5a"),
                gitlab,
                (WebhookProvider::Gitlab, Some(sha(4)), Some("jsmith")),
            ),
            (
                "Gitea push",
                gitea_headers(&secret, "9d1f6f34-3c4e-4e0a-b2b0-6a1c0e9d7f21", &gitea),
                gitea,
                (WebhookProvider::Gitea, Some(sha(5)), Some("gitea")),
            ),
            (
                "Forgejo push",
                forgejo_headers(&secret, "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d", &forgejo),
                forgejo,
                (WebhookProvider::Forgejo, Some(sha(6)), Some("gitea")),
            ),
            (
                "Bearer",
                vec![("Authorization".into(), format!("Bearer {secret}"))],
                Vec::new(),
                (WebhookProvider::Bearer, None, None),
            ),
        ];
        for (what, headers, body, (provider, after, by)) in deliveries {
            let (status, answer) = deliver(&url, &headers, body).await;
            let received = receipt(status, &answer, 202, what);
            deployed_by(&api, &received, provider, after.as_deref(), by).await;
        }
        assert_eq!(history(&api, &project).await.len(), 5);

        // Rotation: the old secret is refused at once, the new one works, the URL stays.
        let rotated: WebhookCreated = api
            .expect(Method::POST, &format!("{path}/rotate"), None, 200)
            .await;
        let new_secret = rotated.secret.expose().to_string();
        assert_ne!(new_secret, secret);
        assert_eq!(rotated.webhook.url, created.webhook.url);
        let push = github_push(main, &sha(6), &sha(7));
        let (status, _) = deliver(
            &url,
            &github_headers(&secret, "push", "r-1", &push),
            push.clone(),
        )
        .await;
        assert_eq!(status, 401, "the old secret after rotation");
        let (status, answer) = deliver(
            &url,
            &github_headers(&new_secret, "push", "r-2", &push),
            push,
        )
        .await;
        let after_rotation = receipt(status, &answer, 202, "the new secret");
        deployed_by(
            &api,
            &after_rotation,
            WebhookProvider::Github,
            Some(&sha(7)),
            Some("octocat"),
        )
        .await;

        // The hook lists what its verified deliveries became, newest first; forgeries left no row.
        let hook: Webhook = api.expect(Method::GET, &path, None, 200).await;
        let outcomes: Vec<(WebhookProvider, DeliveryOutcome)> = hook
            .deliveries
            .iter()
            .map(|delivery| (delivery.provider, delivery.outcome))
            .collect();
        assert_eq!(hook.deliveries.len(), 10, "{outcomes:?}");
        assert_eq!(
            outcomes[0],
            (WebhookProvider::Github, DeliveryOutcome::Deployed)
        );
        assert!(outcomes.contains(&(WebhookProvider::Github, DeliveryOutcome::Ping)));
        assert!(outcomes.contains(&(WebhookProvider::Gitlab, DeliveryOutcome::Deployed)));
        assert_eq!(
            outcomes
                .iter()
                .filter(|(_, outcome)| *outcome == DeliveryOutcome::Ignored)
                .count(),
            3
        );
        assert!(!hook
            .deliveries
            .iter()
            .any(|delivery| delivery.delivery_id.starts_with("f-")));

        // A deleted hook is an unknown one.
        let (status, _) = api.call(Method::DELETE, &path, None).await;
        assert_eq!(status, 204);
        let bearer = vec![("Authorization".into(), format!("Bearer {new_secret}"))];
        assert_eq!(deliver(&url, &bearer, Vec::new()).await.0, 404);

        // No secret in the server's log.
        drop(server);
        let log = std::fs::read_to_string(data.path().join("server.log")).unwrap();
        assert!(
            log.contains("webhook delivery accepted"),
            "the log says what happened"
        );
        for leaked in [&secret, &new_secret, &other_secret] {
            assert!(
                !log.contains(leaked.as_str()),
                "a webhook secret is in the server log"
            );
        }
    }
}

async fn fake_agent(server: &ServerProcess, token: &str) -> crate::helpers::RawSocket {
    let url = format!("ws://{}/api/v1/stream", server.address);
    let mut socket = raw_agent(&url, token).await;
    assert!(matches!(
        hello(&mut socket, PROTOCOL_VERSION).await,
        ServerToAgent::Welcome(_)
    ));
    socket
}

async fn next_deploy(socket: &mut crate::helpers::RawSocket) -> JobId {
    loop {
        match next_message(socket).await {
            ServerToAgent::Deploy(payload) => return payload.job_id,
            _ => continue,
        }
    }
}

async fn update(socket: &mut crate::helpers::RawSocket, job_id: JobId, event: JobEvent) {
    send_frame(
        socket,
        &AgentToServer::JobUpdate(JobUpdate { job_id, event }),
    )
    .await;
}

fn finished() -> JobEvent {
    JobEvent::Finished {
        success: true,
        message: String::new(),
        images: Vec::new(),
        checkout: None,
    }
}

#[tokio::test]
async fn a_burst_of_pushes_during_a_deploy_deploys_the_newest_commit_once_when_it_ends_even_across_a_restart(
) {
    for db in TestDb::all().await {
        let data = tempfile::tempdir().unwrap();
        let (mut server, api) = start(&db, data.path()).await;
        let agent: AgentCreated = api
            .expect(Method::POST, "/agents", Some(json!({"name": "held"})), 201)
            .await;
        let body = json!({"name": "shop", "agent_id": agent.agent.id, "path": "/srv/shop"});
        let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
        let created = create_hook(&api, &project).await;
        let secret = created.secret.expose().to_string();
        // An agent the test holds: the deploy runs until it says it finished.
        let mut socket = fake_agent(&server, &agent.token).await;
        let url = hook_url(&server, &created.webhook);
        let path = format!("/projects/{}/webhook", project.id);

        let push = github_push("refs/heads/main", &sha(1), &sha(2));
        let (status, answer) = deliver(
            &url,
            &github_headers(&secret, "push", "burst-0", &push),
            push,
        )
        .await;
        let first = receipt(status, &answer, 202, "first push");
        assert_eq!(first.outcome, DeliveryOutcome::Deployed);
        let first_job = next_deploy(&mut socket).await;
        update(&mut socket, first_job, JobEvent::Received).await;

        // Five pushes while it runs: each is acknowledged, none queues a deploy of its own.
        for n in 3..8u8 {
            let push = github_push("refs/heads/main", &sha(n - 1), &sha(n));
            let headers = github_headers(&secret, "push", &format!("burst-{n}"), &push);
            let (status, answer) = deliver(&url, &headers, push).await;
            assert_eq!(
                receipt(status, &answer, 202, "push in a burst").outcome,
                DeliveryOutcome::Pending
            );
        }
        assert_eq!(history(&api, &project).await.len(), 1);
        let hook: Webhook = api.expect(Method::GET, &path, None, 200).await;
        assert!(hook.deploy_pending);

        // The server dies and comes back: the flag is still there, and the agent is given the
        // running job again.
        server.kill_9().await;
        let server = restart(&db, data.path()).await;
        let api = ApiClient::new(&server.url(), &api.token);
        let url = hook_url(&server, &created.webhook);
        let hook: Webhook = api.expect(Method::GET, &path, None, 200).await;
        assert!(hook.deploy_pending, "the flag survives a restart");
        let mut socket = fake_agent(&server, &agent.token).await;
        assert_eq!(
            next_deploy(&mut socket).await,
            first_job,
            "the open job is re-sent"
        );
        update(&mut socket, first_job, finished()).await;

        // Exactly one more deploy, of the newest commit.
        let second_job = next_deploy(&mut socket).await;
        assert_ne!(second_job, first_job);
        let deployments = history(&api, &project).await;
        assert_eq!(deployments.len(), 2);
        let DeployTrigger::Webhook {
            commit, delivery, ..
        } = &deployments[0].trigger
        else {
            panic!("{:?}", deployments[0].trigger);
        };
        assert_eq!(commit.as_deref(), Some(sha(7).as_str()), "the newest push");
        assert_eq!(delivery.as_deref(), Some("burst-7"));
        let hook: Webhook = api.expect(Method::GET, &path, None, 200).await;
        assert!(!hook.deploy_pending);
        update(&mut socket, second_job, finished()).await;
        let done = wait_for_deployment(&api, deployments[0].id, Duration::from_secs(30)).await;
        assert_eq!(done.status, DeploymentStatus::Succeeded);

        // Nothing else was queued behind it: the next push deploys at once.
        let bearer = vec![("Authorization".into(), format!("Bearer {secret}"))];
        let (status, answer) = deliver(&url, &bearer, Vec::new()).await;
        assert_eq!(
            receipt(status, &answer, 202, "after the burst").outcome,
            DeliveryOutcome::Deployed
        );
        assert_ne!(next_deploy(&mut socket).await, second_job);
        assert_eq!(history(&api, &project).await.len(), 3);
    }
}

const OLD_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const NEW_KEY: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

/// The server process on `db` under master key `key`.
async fn start_under(db: &TestDb, data: &Path, key: &str) -> ServerProcess {
    let mut env = vec![("APP_MASTER_KEY", key)];
    if let Some(url) = db.url() {
        env.push(("DATABASE_URL", url));
    }
    ServerProcess::start_with(data, None, &env).await
}

#[tokio::test]
async fn a_hooks_secret_is_sealed_to_its_row_and_still_verifies_after_a_key_rotation() {
    for db in TestDb::all().await {
        let data = tempfile::tempdir().unwrap();
        let token = {
            let store = server::db::Store::connect(db.url(), data.path())
                .await
                .unwrap();
            let alice = store.create_user("alice", None, false).await.unwrap();
            let token = server::token::Token::generate();
            store
                .create_api_token(alice.id, &token.hash())
                .await
                .unwrap();
            store.close().await;
            token
        };
        let server = start_under(&db, data.path(), OLD_KEY).await;
        let api = ApiClient::new(&server.url(), token.expose());
        let agent: AgentCreated = api
            .expect(
                Method::POST,
                "/agents",
                Some(json!({"name": "offline"})),
                201,
            )
            .await;
        let mut hooks = Vec::new();
        for name in ["shop", "blog"] {
            let body =
                json!({"name": name, "agent_id": agent.agent.id, "path": format!("/srv/{name}")});
            let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
            hooks.push((project.clone(), create_hook(&api, &project).await));
        }
        let (shop, shop_hook) = &hooks[0];
        let (_, blog_hook) = &hooks[1];
        let shop_secret = shop_hook.secret.expose().to_string();
        let bearer = |secret: &str| vec![("Authorization".to_string(), format!("Bearer {secret}"))];

        // At rest: sealed, never the plain secret.
        let store = server::db::Store::connect(db.url(), data.path())
            .await
            .unwrap();
        let stored = store.all_webhooks().await.unwrap();
        for (_, hook) in &hooks {
            let secret = hook.secret.expose().as_bytes();
            assert!(stored
                .iter()
                .all(|row| !row.secret.windows(secret.len()).any(|w| w == secret)));
        }
        // Blog's sealed secret copied over shop's row opens for neither: no deploy, no answer
        // that helps.
        let shop_row = stored
            .iter()
            .find(|row| row.id == shop_hook.webhook.id)
            .unwrap();
        let blog_row = stored
            .iter()
            .find(|row| row.id == blog_hook.webhook.id)
            .unwrap();
        assert!(store
            .replace_webhook_ciphertext(&shop_row.id, &shop_row.secret, &blog_row.secret)
            .await
            .unwrap());
        let url = hook_url(&server, &shop_hook.webhook);
        for secret in [&shop_secret, &blog_hook.secret.expose().to_string()] {
            let (status, answer) = deliver(&url, &bearer(secret), Vec::new()).await;
            assert_eq!(status, 500, "{answer}");
            assert_eq!(
                answer["error"]["message"], "internal error",
                "names nothing"
            );
        }
        assert!(history(&api, shop).await.is_empty());
        assert!(store
            .replace_webhook_ciphertext(&shop_row.id, &blog_row.secret, &shop_row.secret)
            .await
            .unwrap());
        store.close().await;
        drop(server);

        // The operator rotates the master key: the hooks are re-sealed and still verify.
        let mut rotate = std::process::Command::new(env!("CARGO_BIN_EXE_stagely-server"));
        rotate
            .arg("rotate-key")
            .env("STAGELY_DATA_DIR", data.path())
            .env("APP_MASTER_KEY", NEW_KEY)
            .env("APP_MASTER_KEY_PREVIOUS", OLD_KEY);
        if let Some(url) = db.url() {
            rotate.env("DATABASE_URL", url);
        }
        let rotated = rotate.output().unwrap();
        let said = String::from_utf8_lossy(&rotated.stderr);
        assert!(rotated.status.success(), "{said}");
        assert!(said.contains("2 webhook secret(s)"), "{said}");
        let server = start_under(&db, data.path(), NEW_KEY).await;
        let api = ApiClient::new(&server.url(), token.expose());
        let url = hook_url(&server, &shop_hook.webhook);
        let (status, answer) = deliver(&url, &bearer(&shop_secret), Vec::new()).await;
        assert_eq!(
            receipt(status, &answer, 202, "after the rotation").outcome,
            DeliveryOutcome::Deployed
        );
        assert_eq!(history(&api, shop).await.len(), 1);
    }
}

#[tokio::test]
async fn the_project_page_shows_the_hook_url_its_deliveries_and_which_push_started_a_deploy() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data.path(), None).await;
    // The signed-in person owns the project.
    let cookie = server.sign_in_admin().await;
    let token = server.cli(&["tokens", "create", "page-reader"]);
    let api = ApiClient::new(&server.url(), &token);
    let agent: AgentCreated = api
        .expect(
            Method::POST,
            "/agents",
            Some(json!({"name": "offline"})),
            201,
        )
        .await;
    let body = json!({"name": "shop", "agent_id": agent.agent.id, "path": "/srv/shop"});
    let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
    let created = create_hook(&api, &project).await;
    let secret = created.secret.expose().to_string();
    let push = github_push("refs/heads/main", &sha(1), &sha(2));
    let headers = github_headers(&secret, "push", "page-1", &push);
    let (status, answer) = deliver(&hook_url(&server, &created.webhook), &headers, push).await;
    assert_eq!(
        receipt(status, &answer, 202, "push").outcome,
        DeliveryOutcome::Deployed
    );

    let page = crate::helpers::http_request(
        server.address,
        "GET",
        &format!("/projects/{}", project.id),
        &[("Cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&created.webhook.url), "the hook's URL");
    assert!(page.body.contains("Rotate secret"));
    assert!(
        page.body.contains("webhook github: 2222222 by octocat"),
        "the history says which push started the deploy"
    );
    assert!(
        page.body.contains(r#"data-outcome="deployed""#),
        "the delivery is listed"
    );
    assert!(
        !page.body.contains(&secret),
        "the secret is not on the page"
    );
}

/// Benchmark, not a test (`scripts/bench-webhook.sh` runs it and prints figures): how long a
/// signed GitHub push takes from the start of its POST to the agent holding the deploy job, on a
/// real server process (SQLite) with an agent that answers at once.
#[tokio::test]
#[ignore = "a benchmark: run scripts/bench-webhook.sh"]
async fn bench_webhook_to_agent() {
    const PUSHES: usize = 300;
    let data = tempfile::tempdir().unwrap();
    let (server, api) = start(&TestDb::Sqlite, data.path()).await;
    let agent: AgentCreated = api
        .expect(Method::POST, "/agents", Some(json!({"name": "bench"})), 201)
        .await;
    let body = json!({"name": "shop", "agent_id": agent.agent.id, "path": "/srv/shop"});
    let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
    let created = create_hook(&api, &project).await;
    let secret = created.secret.expose().to_string();
    let url = hook_url(&server, &created.webhook);
    let mut socket = fake_agent(&server, &agent.token).await;
    let client = reqwest::Client::new();
    let mut took = Vec::with_capacity(PUSHES);
    for n in 0..PUSHES {
        // Never forty zeros, which is a branch deletion.
        let after = format!("{:040x}", n + 1);
        let push = github_push("refs/heads/main", &sha(1), &after);
        let headers = github_headers(&secret, "push", &format!("bench-{n}"), &push);
        let mut request = client.post(&url).body(push);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let started = std::time::Instant::now();
        let response = request.send().await.unwrap();
        let job = next_deploy(&mut socket).await;
        took.push(started.elapsed());
        let receipt: DeliveryReceipt = response.json().await.unwrap();
        assert_eq!(receipt.outcome, DeliveryOutcome::Deployed);
        update(&mut socket, job, finished()).await;
        let id = receipt.deployment_id.unwrap();
        wait_for_deployment(&api, id, Duration::from_secs(10)).await;
    }
    took.sort();
    let ms = |at: usize| took[at].as_secs_f64() * 1000.0;
    println!(
        "webhook -> agent has the job: {PUSHES} pushes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(PUSHES / 2),
        ms(PUSHES * 99 / 100),
        ms(PUSHES - 1)
    );
}

#[tokio::test]
async fn a_deploy_a_push_started_says_so_in_its_notification() {
    use shared::notify::{ChannelCreated, Notification, NotificationEvent};
    use std::sync::{Arc, Mutex};
    for db in TestDb::all().await {
        let app = crate::helpers::spawn_app_with_env(
            &db,
            crate::helpers::AppOptions::default(),
            &[
                ("STAGELY_NOTIFY_POLL_MS", "50"),
                ("STAGELY_NOTIFY_ALLOW_PRIVATE_NETWORKS", "1"),
            ],
        )
        .await;
        let (_, api) = app.user("alice").await;
        let (_, project) = api.shop_project().await;
        // A receiver that keeps every notification it is sent.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::<Notification>::new()));
        let keep = received.clone();
        let receive = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                axum::http::StatusCode::OK
            }
        });
        tokio::spawn(async move { axum::serve(listener, receive).await.unwrap() });
        let body = json!({"kind": "webhook", "name": "ci", "url": format!("http://{receiver}/n")});
        let channel: ChannelCreated = api
            .expect(Method::POST, "/notification-channels", Some(body), 201)
            .await;
        let rules = json!({"rules": [{"channel_id": channel.channel.id, "events": [NotificationEvent::DeploySucceeded]}]});
        let path = format!("/projects/{}/notifications", project.id);
        let _: Value = api.expect(Method::PUT, &path, Some(rules), 200).await;

        let created = create_hook(&api, &project).await;
        let push = github_push("refs/heads/main", &sha(1), &sha(2));
        let headers = github_headers(created.secret.expose(), "push", "n-1", &push);
        let url = format!("{}/api/v1/hooks/{}", app.url(), created.webhook.id);
        let (status, answer) = deliver(&url, &headers, push).await;
        let started = receipt(status, &answer, 202, "push");
        let id = started.deployment_id.unwrap();
        // The deploy succeeds, announced as the deploy path announces it.
        assert!(app
            .store()
            .set_deployment_status(id, DeploymentStatus::Succeeded, None)
            .await
            .unwrap());
        app.state
            .hub
            .publish(server::hub::HubEvent::DeploymentStatus {
                deployment_id: id,
                project_id: project.id,
                status: DeploymentStatus::Succeeded,
                message: None,
            });
        eventually(Duration::from_secs(10), "the notification", || async {
            !received.lock().unwrap().is_empty()
        })
        .await;
        let notification = received.lock().unwrap()[0].clone();
        assert_eq!(notification.deployment_id, Some(id));
        assert!(
            notification
                .message
                .ends_with("(started by webhook github: 2222222 by octocat)"),
            "{}: {}",
            db.name(),
            notification.message
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_disabled_owners_hook_deploys_nothing() {
    for db in TestDb::all().await {
        let app = crate::helpers::spawn_app(&db).await;
        let (alice, api) = app.user("alice").await;
        let (_, project) = api.shop_project().await;
        let created = create_hook(&api, &project).await;
        let url = format!("{}/api/v1/hooks/{}", app.url(), created.webhook.id);
        let bearer = vec![(
            "Authorization".to_string(),
            format!("Bearer {}", created.secret.expose()),
        )];
        app.store().disable_user(alice.id).await.unwrap();
        let (status, answer) = deliver(&url, &bearer, Vec::new()).await;
        assert_eq!(status, 404, "{}: {answer}", db.name());
        let open: i64 = app.store().open_jobs_of_project(project.id).await.unwrap();
        assert_eq!(open, 0, "{}", db.name());
        let history = app
            .store()
            .deployments_of_project(&alice, project.id)
            .await
            .unwrap();
        assert!(history.is_empty(), "{}: {history:?}", db.name());
        let kept = app
            .store()
            .webhook_deliveries(&created.webhook.id, 20)
            .await
            .unwrap();
        assert!(kept.is_empty(), "{}: {kept:?}", db.name());
        app.stop().await;
    }
}

/// An attacker who captured one signed delivery (a proxy log, a leaked request dump) re-sends
/// it: the signature covers the body only, so they change what it does not cover.
#[tokio::test]
async fn a_captured_signed_delivery_replayed_under_another_id_or_sender_deploys_nothing_more() {
    for db in TestDb::all().await {
        let data = tempfile::tempdir().unwrap();
        let (server, api) = start(&db, data.path()).await;
        let agent: AgentCreated = api
            .expect(Method::POST, "/agents", Some(json!({"name": "held"})), 201)
            .await;
        let body = json!({"name": "shop", "agent_id": agent.agent.id, "path": "/srv/shop"});
        let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
        let created = create_hook(&api, &project).await;
        let secret = created.secret.expose().to_string();
        let url = hook_url(&server, &created.webhook);
        let path = format!("/projects/{}/webhook", project.id);

        let push = github_push("refs/heads/main", &sha(1), &sha(2));
        let captured = github_headers(&secret, "push", "orig-1", &push);
        let (status, answer) = deliver(&url, &captured, push.clone()).await;
        let first = receipt(status, &answer, 202, "the real push");
        assert_eq!(first.outcome, DeliveryOutcome::Deployed, "{}", db.name());

        let with_id = |id: Option<&str>| -> Headers {
            captured
                .iter()
                .filter(|(name, _)| name != "X-GitHub-Delivery")
                .cloned()
                .chain(id.map(|id| ("X-GitHub-Delivery".to_string(), id.to_string())))
                .collect()
        };
        let signature = hmac_hex(&secret, &push);
        let as_gitea: Headers = vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-Gitea-Event".into(), "push".into()),
            ("X-Gitea-Delivery".into(), "gitea-replay".into()),
            ("X-Gitea-Signature".into(), signature.clone()),
        ];
        let as_forgejo: Headers = vec![
            ("Content-Type".into(), "application/json".into()),
            ("X-Forgejo-Event".into(), "push".into()),
            ("X-Forgejo-Signature".into(), signature),
        ];
        for (what, headers) in [
            ("replayed with a new delivery id", with_id(Some("replay-2"))),
            ("replayed with no delivery id", with_id(None)),
            ("replayed as Gitea", as_gitea),
            ("replayed as Forgejo", as_forgejo),
            ("GitHub's own redelivery", captured.clone()),
        ] {
            let (status, answer) = deliver(&url, &headers, push.clone()).await;
            let replayed = receipt(status, &answer, 200, what);
            assert_eq!(
                replayed.outcome,
                DeliveryOutcome::Duplicate,
                "{}: {what}",
                db.name()
            );
            assert_eq!(replayed.deployment_id, None, "{what}");
        }
        assert_eq!(history(&api, &project).await.len(), 1, "{}", db.name());
        let hook: Webhook = api.expect(Method::GET, &path, None, 200).await;
        assert_eq!(
            hook.deliveries.len(),
            1,
            "{}: {:?}",
            db.name(),
            hook.deliveries
        );
        assert!(!hook.deploy_pending, "no replay raised the flag");

        // A new push (a new body) is still taken.
        let next = github_push("refs/heads/main", &sha(2), &sha(3));
        let headers = github_headers(&secret, "push", "orig-2", &next);
        let (status, answer) = deliver(&url, &headers, next).await;
        assert_eq!(
            receipt(status, &answer, 202, "the next push").outcome,
            DeliveryOutcome::Pending
        );
        drop(server);
    }
}

/// The deploy a push left waiting cannot start when the running one ends (its secret value
/// cannot be opened): the hook's list says that delivery failed, not "pending" forever.
#[tokio::test]
async fn a_waiting_push_whose_deploy_cannot_start_is_listed_as_failed() {
    for db in TestDb::all().await {
        let data = tempfile::tempdir().unwrap();
        let (server, api) = start(&db, data.path()).await;
        let agent: AgentCreated = api
            .expect(Method::POST, "/agents", Some(json!({"name": "held"})), 201)
            .await;
        let body = json!({"name": "shop", "agent_id": agent.agent.id, "path": "/srv/shop"});
        let project: Project = api.expect(Method::POST, "/projects", Some(body), 201).await;
        let body = json!({"project_id": project.id, "key": "TOKEN", "value": "t0ken-value", "scope": "global"});
        let _: Value = api.expect(Method::POST, "/secrets", Some(body), 201).await;
        let created = create_hook(&api, &project).await;
        let secret = created.secret.expose().to_string();
        let mut socket = fake_agent(&server, &agent.token).await;
        let url = hook_url(&server, &created.webhook);
        let path = format!("/projects/{}/webhook", project.id);

        let push = github_push("refs/heads/main", &sha(1), &sha(2));
        let headers = github_headers(&secret, "push", "first", &push);
        let (status, answer) = deliver(&url, &headers, push).await;
        assert_eq!(
            receipt(status, &answer, 202, "first").outcome,
            DeliveryOutcome::Deployed
        );
        let first_job = next_deploy(&mut socket).await;
        let push = github_push("refs/heads/main", &sha(2), &sha(3));
        let headers = github_headers(&secret, "push", "waiting", &push);
        let (status, answer) = deliver(&url, &headers, push).await;
        assert_eq!(
            receipt(status, &answer, 202, "waiting").outcome,
            DeliveryOutcome::Pending
        );

        // The secret's stored value is damaged: the next deploy cannot be prepared.
        {
            let store = server::db::Store::connect(db.url(), data.path())
                .await
                .unwrap();
            for version in store.all_versions().await.unwrap() {
                assert!(store
                    .replace_version_ciphertext(version.id, &version.ciphertext, b"damaged")
                    .await
                    .unwrap());
            }
            store.close().await;
        }
        update(&mut socket, first_job, finished()).await;

        eventually(
            Duration::from_secs(10),
            "the waiting delivery to be failed",
            || async {
                let hook: Webhook = api.expect(Method::GET, &path, None, 200).await;
                hook.deliveries.iter().any(|delivery| {
                    delivery.delivery_id == "waiting" && delivery.outcome == DeliveryOutcome::Failed
                })
            },
        )
        .await;
        let hook: Webhook = api.expect(Method::GET, &path, None, 200).await;
        assert!(!hook.deploy_pending, "{}", db.name());
        drop(server);
    }
}
