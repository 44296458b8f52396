//! Signing in to the dashboard with a local account, as a browser does it: one request at a
//! time, redirects and cookies checked along the way.

use crate::helpers::{http_request, spawn_app, TestDb};

const SESSION: &str = "stagely_session";

#[tokio::test]
async fn a_fresh_instance_asks_for_its_first_admin_then_only_for_sign_in() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let get = |path: &'static str, cookie: String| async move {
        let headers = [("Cookie", cookie.as_str())];
        http_request(app.address, "GET", path, &headers, "").await
    };

    // Nobody exists yet: every page leads to the setup form.
    let home = get("/", String::new()).await;
    assert_eq!(
        (home.status, home.header("location")),
        (303, Some("/setup"))
    );
    assert_eq!(get("/setup", String::new()).await.status, 200);

    // A bad form is refused with the reason, and creates nobody.
    let mismatch = http_request(
        app.address,
        "POST",
        "/auth/setup",
        &[],
        "login=admin&password=correct-horse&password_confirm=other-horse",
    )
    .await;
    assert_eq!(mismatch.status, 303);
    assert!(mismatch
        .header("location")
        .unwrap()
        .starts_with("/setup?error="));
    assert!(!app.store().has_users().await.unwrap());

    let setup = http_request(
        app.address,
        "POST",
        "/auth/setup",
        &[],
        "login=admin&password=correct-horse&password_confirm=correct-horse",
    )
    .await;
    assert_eq!((setup.status, setup.header("location")), (303, Some("/")));
    let raw_cookie = setup
        .head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie"))
        .unwrap()
        .to_string();
    assert!(
        raw_cookie.contains("HttpOnly") && raw_cookie.contains("SameSite=Lax"),
        "{raw_cookie}"
    );
    let session = setup.cookie(SESSION).expect("a session cookie");
    let page = get("/", session.clone()).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("admin"), "the signed-in login is shown");

    // Setup is over: a second visitor cannot become admin, and is sent to sign in.
    let again = http_request(
        app.address,
        "POST",
        "/auth/setup",
        &[],
        "login=intruder&password=correct-horse&password_confirm=correct-horse",
    )
    .await;
    assert!(again
        .header("location")
        .unwrap()
        .starts_with("/login?error="));
    assert!(app
        .store()
        .local_account("intruder")
        .await
        .unwrap()
        .is_none());
    let signed_out_home = get("/", String::new()).await;
    assert_eq!(signed_out_home.header("location"), Some("/login"));

    // Signing out ends the session on the server, not only in the browser.
    let logout = http_request(
        app.address,
        "POST",
        "/auth/logout",
        &[("Cookie", &session)],
        "",
    )
    .await;
    assert_eq!(logout.header("location"), Some("/login"));
    assert_eq!(get("/", session).await.header("location"), Some("/login"));
}

#[tokio::test]
async fn signing_in_checks_the_password_and_issues_a_new_session_each_time() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let hash = server::crypto::hash_password("s3cret-pass").unwrap();
    app.store()
        .create_user("dev", Some(&hash), false)
        .await
        .unwrap();
    let sign_in = |password: &'static str| async move {
        let form = format!("login=dev&password={password}");
        http_request(app.address, "POST", "/auth/login", &[], &form).await
    };

    let wrong = sign_in("guess").await;
    assert_eq!(
        wrong.header("location"),
        Some("/login?error=wrong_password")
    );
    assert!(wrong.cookie(SESSION).is_none());
    let unknown = http_request(
        app.address,
        "POST",
        "/auth/login",
        &[],
        "login=nobody&password=x",
    )
    .await;
    assert_eq!(
        unknown.header("location"),
        wrong.header("location"),
        "unknown users look the same"
    );

    // Another site cannot post the form (login CSRF), nor call server functions.
    let forged = http_request(
        app.address,
        "POST",
        "/auth/login",
        &[("Origin", "https://evil.example")],
        "login=dev&password=s3cret-pass",
    )
    .await;
    assert_eq!(forged.status, 403);
    assert!(forged.cookie(SESSION).is_none());

    let first = sign_in("s3cret-pass").await.cookie(SESSION).unwrap();
    let second = sign_in("s3cret-pass").await.cookie(SESSION).unwrap();
    assert_ne!(first, second);

    // The cookie also works for the REST API, but only from this server's pages.
    let api = |origin: &'static str, cookie: String| async move {
        let headers = [("Cookie", cookie.as_str()), ("Origin", origin)];
        http_request(app.address, "GET", "/api/v1/projects", &headers, "")
            .await
            .status
    };
    assert_eq!(api("http://evil.example", second.clone()).await, 403);
    let own = format!("http://{}", app.address);
    assert_eq!(api(Box::leak(own.into_boxed_str()), second).await, 200);
}

#[tokio::test]
async fn github_sign_in_is_refused_clearly_when_not_configured() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let start = http_request(app.address, "GET", "/auth/github", &[], "").await;
    assert!(start
        .header("location")
        .unwrap()
        .starts_with("/login?error=github_not_configured"));
    let callback = http_request(
        app.address,
        "GET",
        "/auth/github/callback?code=x&state=y",
        &[],
        "",
    )
    .await;
    assert!(callback
        .header("location")
        .unwrap()
        .starts_with("/login?error="));
}

#[tokio::test]
async fn the_sign_in_pages_show_only_sentences_the_server_chose() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let page = |path: &'static str| async move {
        let response = http_request(app.address, "GET", path, &[], "").await;
        assert_eq!(response.status, 200, "{path}");
        response.body
    };
    // A fresh instance: the setup page shows its own codes.
    let setup = page("/setup?error=passwords_differ").await;
    assert!(setup.contains("The two passwords differ."), "{setup}");
    let forged = page("/setup?error=Database%20error%20at%20%2Fvar%2Flib").await;
    assert!(!forged.contains("Database error"), "{forged}");

    app.store().create_user("dev", None, false).await.unwrap();
    let wrong = page("/login?error=wrong_password").await;
    assert!(wrong.contains("Wrong username or password."), "{wrong}");
    for (path, planted) in [
        (
            "/login?error=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "alert(1)",
        ),
        ("/login?error=Database%20error", "Database error"),
        (
            "/login?error=Your%20session%20expired%3B%20sign%20in%20at%20evil.example",
            "evil.example",
        ),
        (
            "/login?error=Wrong%20username%20or%20password.",
            "Wrong username",
        ),
    ] {
        let html = page(path).await;
        assert!(!html.contains(planted), "{path} shows {planted:?}");
        assert!(!html.contains("role=\"alert\""), "{path} shows an error");
    }
}

#[tokio::test]
async fn a_github_error_from_the_url_is_not_repeated_on_the_login_page() {
    let app = crate::helpers::spawn_app_with_env(
        &TestDb::Sqlite,
        Default::default(),
        &[
            ("STAGELY_GITHUB_CLIENT_ID", "Iv1.test"),
            ("STAGELY_GITHUB_CLIENT_SECRET", "shh"),
        ],
    )
    .await;
    let callback = http_request(
        app.address,
        "GET",
        "/auth/github/callback?error=access_denied&error_description=Database%20error%20%3Cscript%3E",
        &[],
        "",
    )
    .await;
    assert_eq!(
        callback.header("location"),
        Some("/login?error=github_denied")
    );
}
