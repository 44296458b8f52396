//! The headers every answer carries (pages, server functions, the API, redirects, static
//! assets), the script nonce that ties the page's inline scripts to its policy, and what
//! changes when the public URL is https: HSTS and the `__Host-` session cookie.

use crate::helpers::{http_request, spawn_app_with_env, AppOptions, RawResponse, TestApp, TestDb};

/// A server whose site root holds a stylesheet, so static assets are served from it.
async fn app_with_assets(env: &[(&str, &str)]) -> (TestApp, tempfile::TempDir) {
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(site.path().join("pkg")).unwrap();
    std::fs::write(site.path().join("pkg/stagely.css"), "body { margin: 0 }").unwrap();
    let site_root = site.path().display().to_string();
    let mut env = env.to_vec();
    env.push(("STAGELY_SITE_ROOT", &site_root));
    let app = spawn_app_with_env(&TestDb::Sqlite, AppOptions::default(), &env).await;
    (app, site)
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    http_request(app.address, "GET", path, headers, "").await
}

/// The `nonce-…` source of a policy's `script-src`.
fn script_nonce(csp: &str) -> Option<&str> {
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|directive| directive.starts_with("script-src "))?;
    script_src
        .split_whitespace()
        .find_map(|source| source.strip_prefix("'nonce-")?.strip_suffix('\''))
}

/// Checks the headers every response must carry, and returns its policy.
fn assert_hardened<'a>(what: &str, response: &'a RawResponse) -> &'a str {
    let csp = response
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy in\n{}", response.head));
    for directive in [
        "default-src 'self'",
        "'wasm-unsafe-eval'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: no {directive} in {csp}");
    }
    let script_src = csp
        .split(';')
        .find(|directive| directive.trim().starts_with("script-src"))
        .unwrap_or_default();
    assert!(!script_src.contains("'unsafe-inline'"), "{what}: {csp}");
    assert!(!script_src.contains("'unsafe-eval'"), "{what}: {csp}");
    assert!(script_nonce(csp).is_some(), "{what}: {csp}");
    assert_eq!(response.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        response.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        response.header("referrer-policy"),
        Some("same-origin"),
        "{what}"
    );
    csp
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let (app, _site) = app_with_assets(&[]).await;
    let (_, client) = app.user("ops").await;
    let cookie = app.admin_session("admin").await;
    let bearer = format!("Bearer {}", client.token);
    let session = [("Cookie", cookie.as_str())];

    let answers = [
        ("a signed-in page", get(&app, "/", &session).await, 200),
        (
            "the sign-in redirect",
            get(&app, "/projects", &[]).await,
            303,
        ),
        (
            "a page that does not exist",
            get(&app, "/nowhere", &session).await,
            404,
        ),
        (
            "a static asset",
            get(&app, "/pkg/stagely.css", &[]).await,
            200,
        ),
        ("the health check", get(&app, "/healthz", &[]).await, 200),
        (
            "the install script",
            get(&app, "/install.sh", &[]).await,
            200,
        ),
        (
            "an API answer",
            get(
                &app,
                "/api/v1/agents",
                &[("Authorization", bearer.as_str())],
            )
            .await,
            200,
        ),
        (
            "an API refusal",
            get(&app, "/api/v1/agents", &[]).await,
            401,
        ),
        (
            "a cross-origin refusal",
            http_request(
                app.address,
                "POST",
                "/auth/login",
                &[("Origin", "https://evil.example")],
                "login=a&password=b",
            )
            .await,
            403,
        ),
    ];
    for (what, response, status) in &answers {
        assert_eq!(response.status, *status, "{what}: {}", response.head);
        assert_hardened(what, response);
        // Plain http (loopback): browsers would ignore it, and it would pin a host not behind TLS.
        assert_eq!(response.header("strict-transport-security"), None, "{what}");
    }
    assert!(
        answers[3].1.body.contains("margin"),
        "the asset itself was served"
    );
}

#[tokio::test]
async fn the_pages_inline_scripts_carry_the_nonce_their_policy_names_and_it_changes_each_time() {
    let (app, _site) = app_with_assets(&[]).await;
    let cookie = app.admin_session("admin").await;
    let session = [("Cookie", cookie.as_str())];
    let mut nonces = Vec::new();
    for path in ["/", "/projects", "/nowhere", "/setup"] {
        let page = get(&app, path, &session).await;
        let csp = assert_hardened(path, &page);
        let nonce = script_nonce(csp).unwrap().to_string();
        // Every inline script of the page (hydration, streamed resources) has the nonce, so
        // the browser runs it; anything injected without it does not run.
        let scripts: Vec<&str> = page.body.split("<script").skip(1).collect();
        if page.status == 200 || page.status == 404 {
            assert!(!scripts.is_empty(), "{path}: no script in\n{}", page.body);
        }
        for script in scripts {
            let tag = script.split('>').next().unwrap_or_default();
            assert!(
                tag.contains(&format!("nonce=\"{nonce}\"")),
                "{path}: a <script{tag}> without the nonce {nonce}"
            );
        }
        nonces.push(nonce);
    }
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 4, "a fresh nonce per response: {nonces:?}");
}

#[tokio::test]
async fn over_https_the_browser_is_told_to_stay_on_https_and_the_session_cookie_is_host_only() {
    let (app, _site) =
        app_with_assets(&[("STAGELY_PUBLIC_URL", "https://deploy.example.com")]).await;
    let page = get(&app, "/setup", &[]).await;
    let csp = assert_hardened("/setup", &page);
    assert!(
        csp.contains("connect-src 'self' wss://deploy.example.com"),
        "{csp}"
    );
    assert_eq!(
        page.header("strict-transport-security"),
        Some("max-age=31536000")
    );

    // The first admin signs up through the form, as a browser behind the proxy does.
    let origin = [("Origin", "https://deploy.example.com")];
    let setup = http_request(
        app.address,
        "POST",
        "/auth/setup",
        &origin,
        "login=admin&password=correct-horse&password_confirm=correct-horse",
    )
    .await;
    assert_eq!(setup.status, 303, "{}", setup.head);
    let set_cookie = setup
        .head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("set-cookie"))
        .map(|(_, value)| value.trim().to_string())
        .expect("a session cookie");
    assert!(
        set_cookie.starts_with("__Host-stagely_session="),
        "{set_cookie}"
    );
    let attributes: Vec<&str> = set_cookie.split(';').map(str::trim).skip(1).collect();
    for required in ["Secure", "Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(attributes.contains(&required), "{required}: {set_cookie}");
    }
    assert!(
        !attributes
            .iter()
            .any(|attribute| attribute.to_ascii_lowercase().starts_with("domain")),
        "{set_cookie}"
    );

    // The page and its server functions know the person by that cookie, and by no other name.
    let session = setup.cookie("__Host-stagely_session").unwrap();
    let home = get(&app, "/", &[("Cookie", session.as_str())]).await;
    assert_eq!(home.status, 200, "{}", home.head);
    assert!(home.body.contains("admin"), "the signed-in login is shown");
    let token = session.split_once('=').unwrap().1;
    let unprefixed = format!("stagely_session={token}");
    let planted = get(&app, "/", &[("Cookie", unprefixed.as_str())]).await;
    assert_eq!(planted.header("location"), Some("/login"));

    // Signing out clears the same cookie.
    let logout = http_request(
        app.address,
        "POST",
        "/auth/logout",
        &[("Cookie", session.as_str()), origin[0]],
        "",
    )
    .await;
    assert!(
        logout
            .head
            .to_ascii_lowercase()
            .contains("set-cookie: __host-stagely_session=;"),
        "{}",
        logout.head
    );
}
