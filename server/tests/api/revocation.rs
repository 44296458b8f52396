//! Issue 15, item 3: sign-in throttling, the sessions and API tokens a person can list and
//! revoke, admins disabling users, and GitHub accounts matched by their numeric id.

use crate::helpers::{
    http_request, spawn_app, spawn_app_with_env, AppOptions, RawResponse, TestApp, TestDb,
};
use reqwest::Method;
use serde_json::Value;
use server::token::{Token, TokenHash};
use std::time::Duration;

const PASSWORD: &str = "s3cret-pass";
/// Wrong passwords an account may send in 15 minutes before lockouts start (README).
const ACCOUNT_FREE_FAILURES: u32 = 5;
/// Wrong passwords one client address may send in 15 minutes before lockouts start (README).
const ADDRESS_FREE_FAILURES: u32 = 20;

/// A server that believes `X-Forwarded-For` from loopback, so a test can speak from several
/// client addresses.
async fn behind_proxy(db: &TestDb) -> TestApp {
    let env = [("STAGELY_TRUSTED_PROXIES", "127.0.0.1, ::1")];
    spawn_app_with_env(db, AppOptions::default(), &env).await
}

async fn local_user(app: &TestApp, login: &str, admin: bool) -> server::db::User {
    let hash = server::crypto::hash_password(PASSWORD).unwrap();
    app.store()
        .create_user(login, Some(&hash), admin)
        .await
        .unwrap()
}

/// Posts the sign-in form from `client` (an address for `X-Forwarded-For`).
async fn sign_in(app: &TestApp, client: &str, login: &str, password: &str) -> RawResponse {
    let form = format!("login={login}&password={password}");
    let headers = [
        ("X-Forwarded-For", client),
        ("User-Agent", "TestBrowser/1.0"),
    ];
    http_request(app.address, "POST", "/auth/login", &headers, &form).await
}

/// The `Retry-After` of a 429, in seconds.
fn retry_after(response: &RawResponse) -> u64 {
    assert_eq!(response.status, 429, "{}\n{}", response.head, response.body);
    response
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {}", response.head))
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_account_with_429_and_retry_after() {
    let app = behind_proxy(&TestDb::Sqlite).await;
    local_user(&app, "dev", false).await;

    for attempt in 0..=ACCOUNT_FREE_FAILURES {
        let wrong = sign_in(&app, "203.0.113.1", "dev", "guess").await;
        assert_eq!(
            wrong.header("location"),
            Some("/login?error=wrong_password"),
            "attempt {attempt}"
        );
    }
    // Locked now: even the right password is refused, before it is checked, from anywhere.
    let locked = sign_in(&app, "198.51.100.9", "dev", PASSWORD).await;
    let wait = retry_after(&locked);
    assert!((1..=30).contains(&wait), "Retry-After {wait}");
    assert!(
        locked.body.contains("Too many sign-in attempts"),
        "{}",
        locked.body
    );
    assert!(!locked.body.contains(PASSWORD) && !locked.body.contains("guess"));
    assert!(locked.cookie(app.state.config.session_cookie()).is_none());
    // The same account under another spelling is the same account.
    let respelled = sign_in(&app, "198.51.100.10", " DEV", PASSWORD).await;
    retry_after(&respelled);
    // Another account from the same address is not locked.
    local_user(&app, "ops", false).await;
    let other = sign_in(&app, "203.0.113.1", "ops", PASSWORD).await;
    assert_eq!(other.header("location"), Some("/"));
}

#[tokio::test]
async fn a_successful_sign_in_clears_the_accounts_failures() {
    let app = behind_proxy(&TestDb::Sqlite).await;
    local_user(&app, "dev", false).await;
    for _ in 0..ACCOUNT_FREE_FAILURES {
        sign_in(&app, "203.0.113.1", "dev", "guess").await;
    }
    let right = sign_in(&app, "203.0.113.1", "dev", PASSWORD).await;
    assert_eq!(right.header("location"), Some("/"));
    for attempt in 0..ACCOUNT_FREE_FAILURES {
        let wrong = sign_in(&app, "203.0.113.1", "dev", "guess").await;
        assert_eq!(wrong.status, 303, "attempt {attempt}: {}", wrong.head);
    }
}

#[tokio::test]
async fn one_address_guessing_many_accounts_is_throttled_and_a_forged_forwarded_for_does_not_help()
{
    // Without STAGELY_TRUSTED_PROXIES the header is ignored: every attempt is the peer's.
    let app = spawn_app(&TestDb::Sqlite).await;
    for n in 0..=ADDRESS_FREE_FAILURES {
        let forged = format!("192.0.2.{n}");
        let wrong = sign_in(&app, &forged, &format!("user{n}"), "guess").await;
        assert_eq!(wrong.status, 303, "attempt {n}: {}", wrong.head);
    }
    let refused = sign_in(&app, "192.0.2.200", "someone-else", "guess").await;
    retry_after(&refused);

    // Behind a trusted proxy, each client address has its own count.
    let app = behind_proxy(&TestDb::Sqlite).await;
    for n in 0..=ADDRESS_FREE_FAILURES {
        sign_in(&app, "192.0.2.1", &format!("user{n}"), "guess").await;
    }
    retry_after(&sign_in(&app, "192.0.2.1", "another", "guess").await);
    let elsewhere = sign_in(&app, "192.0.2.2", "another", "guess").await;
    assert_eq!(elsewhere.status, 303, "{}", elsewhere.head);
}

#[tokio::test]
async fn the_setup_page_is_throttled_before_it_hashes_a_password() {
    let app = spawn_app(&TestDb::Sqlite).await;
    // This address has used up its attempts on the sign-in form of the fresh instance.
    for n in 0..=ADDRESS_FREE_FAILURES {
        let wrong = sign_in(&app, "192.0.2.1", &format!("user{n}"), "guess").await;
        assert_eq!(wrong.status, 303, "attempt {n}: {}", wrong.head);
    }
    let form = format!("login=admin&password={PASSWORD}&password_confirm={PASSWORD}");
    let refused = http_request(app.address, "POST", "/auth/setup", &[], &form).await;
    retry_after(&refused);
    assert!(
        !app.store().has_users().await.unwrap(),
        "no admin was created"
    );
}

/// A signed-in browser's `Cookie` header value, from the sign-in form.
async fn browser_session(app: &TestApp, login: &str) -> String {
    let response = sign_in(app, "203.0.113.5", login, PASSWORD).await;
    let name = app.state.config.session_cookie();
    response
        .cookie(name)
        .unwrap_or_else(|| panic!("not signed in: {}", response.head))
}

/// A REST call with a session cookie, as the dashboard's own page makes it.
async fn with_cookie(app: &TestApp, method: &str, path: &str, cookie: &str) -> RawResponse {
    let origin = app.url();
    let headers = [("Cookie", cookie), ("Origin", origin.as_str())];
    http_request(app.address, method, &format!("/api/v1{path}"), &headers, "").await
}

/// Signing out closes the live feeds of that session at once, not at their periodic check
/// (30 s): a shared computer's next user must not keep seeing the logs.
#[tokio::test]
async fn signing_out_closes_the_sessions_live_feed_at_once() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = behind_proxy(&TestDb::Sqlite).await;
    local_user(&app, "dev", false).await;
    let session = browser_session(&app, "dev").await;
    let mut request = format!("ws://{}/api/v1/events", app.address)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", app.url().parse().unwrap());
    request
        .headers_mut()
        .insert("cookie", session.parse().unwrap());
    let (mut feed, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let logout = http_request(
        app.address,
        "POST",
        "/auth/logout",
        &[("Cookie", &session), ("Origin", &app.url())],
        "",
    )
    .await;
    assert_eq!(logout.header("location"), Some("/login"), "{}", logout.head);
    let closed = crate::helpers::closes_within(&mut feed, Duration::from_secs(10)).await;
    assert!(closed, "the signed-out session's feed stayed open");
}

#[tokio::test]
async fn people_list_their_sessions_without_secrets_and_revoke_them() {
    for db in TestDb::all().await {
        let app = behind_proxy(&db).await;
        local_user(&app, "dev", false).await;
        let laptop = browser_session(&app, "dev").await;
        let phone = browser_session(&app, "dev").await;

        let listed = with_cookie(&app, "GET", "/sessions", &laptop).await;
        assert_eq!(listed.status, 200, "{}: {}", db.name(), listed.body);
        let sessions: Vec<Value> = serde_json::from_str(&listed.body).unwrap();
        assert_eq!(sessions.len(), 2, "{}", db.name());
        let current = |s: &&Value| s["current"] == true;
        assert_eq!(sessions.iter().filter(current).count(), 1);
        assert!(sessions.iter().all(|s| s["user_agent"] == "TestBrowser/1.0"
            && s["ip"] == "203.0.113.5"
            && s["created_at"].is_string()));
        // Neither the cookies' secrets nor their hashes are in the list.
        for cookie in [&laptop, &phone] {
            let secret = cookie.split_once('=').unwrap().1;
            assert!(!listed.body.contains(secret));
            assert!(!listed.body.contains(&TokenHash::of(secret).0));
        }

        // Revoking the phone's session ends it; the laptop stays signed in.
        let phone_id = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let revoked = with_cookie(&app, "DELETE", &format!("/sessions/{phone_id}"), &laptop).await;
        assert_eq!(revoked.status, 204, "{}", revoked.body);
        assert_eq!(
            with_cookie(&app, "GET", "/projects", &phone).await.status,
            401
        );
        assert_eq!(
            with_cookie(&app, "GET", "/projects", &laptop).await.status,
            200
        );
        let again = with_cookie(&app, "DELETE", &format!("/sessions/{phone_id}"), &laptop).await;
        assert_eq!(again.status, 404);

        // Someone else's session cannot be revoked (and is not told apart from none).
        local_user(&app, "other", false).await;
        let others = browser_session(&app, "other").await;
        let listed = with_cookie(&app, "GET", "/sessions", &others).await;
        let theirs: Value = serde_json::from_str(&listed.body).unwrap();
        let path = format!("/sessions/{}", theirs[0]["id"].as_str().unwrap());
        assert_eq!(
            with_cookie(&app, "DELETE", &path, &laptop).await.status,
            404
        );
        assert_eq!(
            with_cookie(&app, "GET", "/projects", &others).await.status,
            200
        );
        let bad = with_cookie(&app, "DELETE", "/sessions/not-an-id", &laptop).await;
        assert_eq!(bad.status, 400, "{}", bad.body);

        // Revoking this very session signs out: the cookie is cleared and no longer works.
        let own = sessions.iter().find(current).unwrap()["id"]
            .as_str()
            .unwrap();
        let signed_out = with_cookie(&app, "DELETE", &format!("/sessions/{own}"), &laptop).await;
        assert_eq!(signed_out.status, 204);
        let cleared = signed_out
            .header("set-cookie")
            .expect("the session cookie is cleared");
        assert!(cleared.contains("Max-Age=0"), "{cleared}");
        assert_eq!(
            with_cookie(&app, "GET", "/projects", &laptop).await.status,
            401
        );
        let trail = app
            .store()
            .audit_trail(&format!("session:{own}"))
            .await
            .unwrap();
        assert_eq!(
            trail,
            vec![("dev".to_string(), "revoke_session".to_string())]
        );
    }
}

#[tokio::test]
async fn people_list_their_api_tokens_without_secrets_and_revoke_them() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (user, api) = app.user("dev").await;
        let second = Token::generate();
        app.store()
            .create_api_token(user.id, &second.hash())
            .await
            .unwrap();

        let (status, body) = api.call(Method::GET, "/api-tokens", None).await;
        assert_eq!(status, 200, "{}: {body}", db.name());
        let text = body.to_string();
        assert!(!text.contains(&api.token) && !text.contains(second.expose()));
        assert!(!text.contains(&second.hash().0));
        let tokens = body.as_array().unwrap();
        assert_eq!(tokens.len(), 2);
        let other = tokens.iter().find(|t| t["current"] == false).unwrap();
        assert!(tokens
            .iter()
            .any(|t| t["current"] == true && t["last_used_at"].is_string()));

        let second_api = crate::helpers::ApiClient::new(&app.url(), second.expose());
        assert_eq!(second_api.call(Method::GET, "/projects", None).await.0, 200);
        let path = format!("/api-tokens/{}", other["id"].as_str().unwrap());
        assert_eq!(api.call(Method::DELETE, &path, None).await.0, 204);
        let (status, body) = second_api.call(Method::GET, "/projects", None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(api.call(Method::DELETE, &path, None).await.0, 404);
        assert_eq!(api.call(Method::GET, "/projects", None).await.0, 200);
    }
}

#[tokio::test]
async fn the_openapi_document_lists_the_revocation_routes() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, body) = crate::helpers::http_get(app.address, "/api/v1/openapi.json").await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    for (path, method) in [
        ("/sessions", "get"),
        ("/sessions/{id}", "delete"),
        ("/api-tokens", "get"),
        ("/api-tokens/{id}", "delete"),
        ("/users", "get"),
        ("/users/{id}/disable", "post"),
        ("/users/{id}/enable", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
}

/// An admin with an API token.
async fn admin(app: &TestApp, login: &str) -> (server::db::User, crate::helpers::ApiClient) {
    let user = local_user(app, login, true).await;
    let token = Token::generate();
    app.store()
        .create_api_token(user.id, &token.hash())
        .await
        .unwrap();
    (
        user,
        crate::helpers::ApiClient::new(&app.url(), token.expose()),
    )
}

#[tokio::test]
async fn a_disabled_user_loses_sessions_tokens_and_live_feeds_and_cannot_sign_in() {
    for db in TestDb::all().await {
        let app = behind_proxy(&db).await;
        let (_, root) = admin(&app, "root").await;
        let bob = local_user(&app, "bob", false).await;
        let token = Token::generate();
        app.store()
            .create_api_token(bob.id, &token.hash())
            .await
            .unwrap();
        let bob_api = crate::helpers::ApiClient::new(&app.url(), token.expose());
        let session = browser_session(&app, "bob").await;
        let mut feed = app.feed(&bob).await;
        assert_eq!(bob_api.call(Method::GET, "/projects", None).await.0, 200);

        // Not an admin: refused.
        let (status, _) = bob_api
            .call(Method::POST, &format!("/users/{}/disable", bob.id), None)
            .await;
        assert_eq!(status, 403, "{}", db.name());

        let disabled: Value = root
            .expect(
                Method::POST,
                &format!("/users/{}/disable", bob.id),
                None,
                200,
            )
            .await;
        assert_eq!(disabled["disabled"], true, "{disabled}");

        // The live feed closes at once, long before its periodic check (30 s).
        let closed = crate::helpers::closes_within(&mut feed, Duration::from_secs(10)).await;
        assert!(
            closed,
            "{}: the disabled user's feed stayed open",
            db.name()
        );
        assert_eq!(bob_api.call(Method::GET, "/projects", None).await.0, 401);
        assert_eq!(
            with_cookie(&app, "GET", "/projects", &session).await.status,
            401
        );
        // Their password now says the account is disabled (a wrong one says nothing new).
        let refused = sign_in(&app, "203.0.113.5", "bob", PASSWORD).await;
        assert_eq!(refused.header("location"), Some("/login?error=disabled"));
        let wrong = sign_in(&app, "203.0.113.5", "bob", "guess").await;
        assert_eq!(
            wrong.header("location"),
            Some("/login?error=wrong_password")
        );

        let users: Vec<Value> = root.expect(Method::GET, "/users", None, 200).await;
        assert!(users
            .iter()
            .any(|u| u["login"] == "bob" && u["disabled"] == true));
        let trail = app
            .store()
            .audit_trail(&format!("user:{}", bob.id))
            .await
            .unwrap();
        assert_eq!(
            trail,
            vec![("root".to_string(), "disable_user".to_string())]
        );

        // Enabled again, bob signs in; the old token stays revoked.
        let enabled: Value = root
            .expect(
                Method::POST,
                &format!("/users/{}/enable", bob.id),
                None,
                200,
            )
            .await;
        assert_eq!(enabled["disabled"], false, "{enabled}");
        let back = sign_in(&app, "203.0.113.5", "bob", PASSWORD).await;
        assert_eq!(back.header("location"), Some("/"));
        assert_eq!(bob_api.call(Method::GET, "/projects", None).await.0, 401);
    }
}

#[tokio::test]
async fn an_admin_cannot_disable_themselves_nor_leave_no_admin() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (root, root_api) = admin(&app, "root").await;
        let (status, body) = root_api
            .call(Method::POST, &format!("/users/{}/disable", root.id), None)
            .await;
        assert_eq!(status, 400, "{}: {body}", db.name());
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("your own"));
        let (status, _) = root_api
            .call(
                Method::POST,
                &format!("/users/{}/disable", uuid::Uuid::new_v4()),
                None,
            )
            .await;
        assert_eq!(status, 404);

        // Two admins disabling each other at once: one of them stays.
        let (other, other_api) = admin(&app, "other").await;
        let disable_other = format!("/users/{}/disable", other.id);
        let disable_root = format!("/users/{}/disable", root.id);
        let (first, second) = tokio::join!(
            root_api.call(Method::POST, &disable_other, None),
            other_api.call(Method::POST, &disable_root, None),
        );
        assert!(
            !(first.0 == 200 && second.0 == 200),
            "{}: both admins were disabled",
            db.name()
        );
        // A disabled admin's token no longer works; the one left can still act.
        let still_in = [
            root_api.call(Method::GET, "/users", None).await.0,
            other_api.call(Method::GET, "/users", None).await.0,
        ];
        assert!(
            still_in.contains(&200),
            "{}: no admin left ({still_in:?})",
            db.name()
        );
    }
}

/// Who GitHub says is signing in; the test changes it between sign-ins.
type GitHubPerson = std::sync::Arc<std::sync::Mutex<(i64, String)>>;

/// A stand-in for github.com and api.github.com: trades any code for a token and answers
/// `/user` with the current person. (The OAuth checks themselves are the Playwright
/// stand-in's job, `end2end/tests/github-standin.ts`.)
async fn github_stand_in(person: GitHubPerson) -> String {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/login/oauth/access_token",
            post(|| async {
                axum::Json(serde_json::json!({"access_token": "gho_test", "token_type": "bearer"}))
            }),
        )
        .route(
            "/user",
            get(move || {
                let (id, login) = person.lock().unwrap().clone();
                async move { axum::Json(serde_json::json!({"id": id, "login": login})) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

/// Goes through "Sign in with GitHub" and back; the callback's answer.
async fn github_sign_in(app: &TestApp) -> RawResponse {
    let start = http_request(app.address, "GET", "/auth/github", &[], "").await;
    let location = start.header("location").expect("a redirect to GitHub");
    let state = location
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("state="))
        .expect("a state parameter");
    let cookie = start
        .cookie("stagely_github_login")
        .expect("the pre-login cookie");
    let path = format!("/auth/github/callback?code=abc&state={state}");
    http_request(
        app.address,
        "GET",
        &path,
        &[("Cookie", cookie.as_str())],
        "",
    )
    .await
}

/// The user a signed-in response's session belongs to.
async fn signed_in_as(app: &TestApp, response: &RawResponse) -> server::db::User {
    let name = app.state.config.session_cookie();
    let cookie = response
        .cookie(name)
        .unwrap_or_else(|| panic!("not signed in: {}", response.head));
    let token = cookie.split_once('=').unwrap().1;
    app.store()
        .user_by_session(&TokenHash::of(token))
        .await
        .unwrap()
        .expect("a valid session")
}

#[tokio::test]
async fn github_accounts_are_allowed_and_matched_by_their_numeric_id() {
    for db in TestDb::all().await {
        let person: GitHubPerson = Default::default();
        *person.lock().unwrap() = (1001, "alice".into());
        let github = github_stand_in(person.clone()).await;
        let env = [
            ("STAGELY_GITHUB_CLIENT_ID", "Iv1.test"),
            ("STAGELY_GITHUB_CLIENT_SECRET", "shh"),
            ("STAGELY_GITHUB_URL", github.as_str()),
            ("STAGELY_GITHUB_API_URL", github.as_str()),
            // Listed by id, so a rename keeps the permission (and the login alone gives none).
            ("STAGELY_GITHUB_ALLOWED_USERS", "1001, 2002"),
        ];
        let app = spawn_app_with_env(&db, AppOptions::default(), &env).await;

        let first = github_sign_in(&app).await;
        assert_eq!(
            first.header("location"),
            Some("/"),
            "{}: {}",
            db.name(),
            first.head
        );
        let alice = signed_in_as(&app, &first).await;
        assert_eq!(alice.login, "alice");

        // Alice renames her GitHub account: still her Stagely account.
        *person.lock().unwrap() = (1001, "alice-renamed".into());
        let renamed = github_sign_in(&app).await;
        assert_eq!(
            signed_in_as(&app, &renamed).await.id,
            alice.id,
            "{}",
            db.name()
        );

        // Someone else takes the login "alice": they do not get Alice's account.
        *person.lock().unwrap() = (2002, "alice".into());
        let newcomer = github_sign_in(&app).await;
        assert_eq!(
            newcomer.header("location"),
            Some("/login?error=name_taken"),
            "{}: {}",
            db.name(),
            newcomer.head
        );

        // A GitHub user not on the list by id is refused, whatever their login.
        *person.lock().unwrap() = (3003, "1001".into());
        let stranger = github_sign_in(&app).await;
        assert_eq!(
            stranger.header("location"),
            Some("/login?error=not_allowed")
        );

        // A disabled GitHub user cannot sign in.
        let (_, root) = admin(&app, "root").await;
        let path = format!("/users/{}/disable", alice.id);
        let _: Value = root.expect(Method::POST, &path, None, 200).await;
        *person.lock().unwrap() = (1001, "alice-renamed".into());
        let disabled = github_sign_in(&app).await;
        assert_eq!(disabled.header("location"), Some("/login?error=disabled"));
    }
}
