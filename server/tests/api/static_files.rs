//! The dashboard's static files: content-hashed names that pages point at and browsers keep for a
//! year, the precompressed twin each browser accepts, and revalidation for everything else.

use crate::helpers::{http_request, spawn_app_with_env, AppOptions, RawResponse, TestApp, TestDb};

const JS: &str = "Js0123456789abcdefgh_-";
const WASM: &str = "Wa0123456789abcdefgh_-";
const CSS: &str = "Cs0123456789abcdefgh_-";

/// A site root as `cargo leptos build --release --precompress` leaves it (with the hash file
/// only when `hashed`), and a server on it.
async fn app_on_site(hashed: bool) -> (TestApp, tempfile::TempDir) {
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let write = |name: &str, body: &str| std::fs::write(pkg.join(name), body).unwrap();
    if hashed {
        for (hash, extension) in [(JS, "js"), (WASM, "wasm"), (CSS, "css")] {
            let name = format!("stagely.{hash}.{extension}");
            write(&name, &format!("plain {extension}"));
            write(&format!("{name}.br"), &format!("brotli {extension}"));
            write(&format!("{name}.gz"), &format!("gzip {extension}"));
        }
        std::fs::write(
            site.path().join("hash.txt"),
            format!("js: {JS}\nwasm: {WASM}\ncss: {CSS}\n"),
        )
        .unwrap();
    } else {
        write("stagely.js", "plain js");
        write("stagely.css", "plain css");
    }
    write("stagely.d.ts", "types");
    let site_root = site.path().display().to_string();
    let env = [("STAGELY_SITE_ROOT", site_root.as_str())];
    let app = spawn_app_with_env(&TestDb::Sqlite, AppOptions::default(), &env).await;
    (app, site)
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    http_request(app.address, "GET", path, headers, "").await
}

#[tokio::test]
async fn pages_name_hashed_files_which_are_immutable_and_served_precompressed() {
    let (app, _site) = app_on_site(true).await;
    let page = get(&app, "/setup", &[]).await;
    assert_eq!(page.status, 200);
    for name in [
        format!("/pkg/stagely.{JS}.js"),
        format!("/pkg/stagely.{WASM}.wasm"),
        format!("/pkg/stagely.{CSS}.css"),
    ] {
        assert!(page.body.contains(&name), "{name} not in\n{}", page.body);
    }
    assert!(!page.body.contains("/pkg/stagely.js"), "{}", page.body);
    assert!(
        page.header("cache-control").is_none(),
        "pages are not cached"
    );

    let js = format!("/pkg/stagely.{JS}.js");
    for (accepts, body, encoding) in [
        ("br, gzip", "brotli js", Some("br")),
        ("gzip", "gzip js", Some("gzip")),
        ("identity", "plain js", None),
    ] {
        let file = get(&app, &js, &[("Accept-Encoding", accepts)]).await;
        assert_eq!(file.status, 200, "{accepts}");
        assert_eq!(file.body, body, "{accepts}");
        assert_eq!(file.header("content-encoding"), encoding, "{accepts}");
        assert_eq!(
            file.header("cache-control"),
            Some("public, max-age=31536000, immutable"),
            "{accepts}"
        );
        assert!(
            file.header("vary")
                .is_some_and(|vary| vary.to_ascii_lowercase().contains("accept-encoding")),
            "a cache must keep one copy per encoding:\n{}",
            file.head
        );
    }

    // A name without a hash may change under the same URL: the browser asks every time.
    let types = get(&app, "/pkg/stagely.d.ts", &[]).await;
    assert_eq!(types.status, 200);
    assert_eq!(types.header("cache-control"), Some("no-cache"));
    let missing = get(&app, &format!("/pkg/stagely.{JS}.css"), &[]).await;
    assert_ne!(missing.status, 200);
    assert_eq!(missing.header("cache-control"), None);
}

#[tokio::test]
async fn a_site_built_without_hashes_keeps_plain_names_revalidated() {
    let (app, _site) = app_on_site(false).await;
    let page = get(&app, "/setup", &[]).await;
    assert!(page.body.contains("/pkg/stagely.js"), "{}", page.body);
    assert!(page.body.contains("/pkg/stagely.css"), "{}", page.body);
    let js = get(&app, "/pkg/stagely.js", &[]).await;
    assert_eq!(js.status, 200);
    assert_eq!(js.header("cache-control"), Some("no-cache"));
}
