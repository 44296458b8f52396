//! The dashboard's static files: content-hashed names that pages point at and browsers keep for a
//! year, the precompressed twin each browser accepts, and revalidation for everything else.

use crate::helpers::{http_request, spawn_app_with_env, AppOptions, RawResponse, TestApp, TestDb};

/// The name cargo-leptos gives a file: its MD5 in unpadded URL-safe base64.
fn content_hash(content: &str) -> String {
    use base64::Engine;
    use md5::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(md5::Md5::digest(content.as_bytes()))
}

/// A site root as `cargo leptos build --release --split --precompress` leaves it (with the
/// hash file only when `hashed`), and a server on it. Returns the hashes of the JS, WASM and
/// CSS; the JS is named after content it no longer has, as cargo-leptos leaves the main JS of
/// a split build (it rewrites it after naming it).
async fn app_on_site(hashed: bool) -> (TestApp, tempfile::TempDir, [String; 3]) {
    let site = tempfile::tempdir().unwrap();
    let pkg = site.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let write = |name: &str, body: &str| std::fs::write(pkg.join(name), body).unwrap();
    let mut hashes = [String::new(), String::new(), String::new()];
    if hashed {
        for (index, extension) in ["js", "wasm", "css"].into_iter().enumerate() {
            let plain = format!("plain {extension}");
            let hash = content_hash(&plain);
            let name = format!("stagely.{hash}.{extension}");
            // The JS was rewritten after it was named.
            let served = if extension == "js" {
                "rewritten js".to_string()
            } else {
                plain
            };
            write(&name, &served);
            write(&format!("{name}.br"), &format!("brotli {extension}"));
            write(&format!("{name}.gz"), &format!("gzip {extension}"));
            hashes[index] = hash;
        }
        std::fs::write(
            site.path().join("hash.txt"),
            format!(
                "js: {}\nwasm: {}\ncss: {}\n",
                hashes[0], hashes[1], hashes[2]
            ),
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
    (app, site, hashes)
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    http_request(app.address, "GET", path, headers, "").await
}

#[tokio::test]
async fn pages_name_hashed_files_which_are_immutable_when_their_name_is_their_content() {
    let (app, _site, [js, wasm, css]) = app_on_site(true).await;
    let page = get(&app, "/setup", &[]).await;
    assert_eq!(page.status, 200);
    for name in [
        format!("/pkg/stagely.{js}.js"),
        format!("/pkg/stagely.{wasm}.wasm"),
        format!("/pkg/stagely.{css}.css"),
    ] {
        assert!(page.body.contains(&name), "{name} not in\n{}", page.body);
    }
    assert!(!page.body.contains("/pkg/stagely.js"), "{}", page.body);
    assert!(
        page.header("cache-control").is_none(),
        "pages are not cached"
    );

    let wasm_path = format!("/pkg/stagely.{wasm}.wasm");
    for (accepts, body, encoding) in [
        ("br, gzip", "brotli wasm", Some("br")),
        ("gzip", "gzip wasm", Some("gzip")),
        ("identity", "plain wasm", None),
    ] {
        let file = get(&app, &wasm_path, &[("Accept-Encoding", accepts)]).await;
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

    // A name that is not its content's hash (the main JS of a split build, rewritten after it
    // was named) may change content under the same URL: the browser asks every time, and an
    // unchanged file costs a bodyless 304.
    let js_path = format!("/pkg/stagely.{js}.js");
    let first = get(&app, &js_path, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, "rewritten js");
    assert_eq!(first.header("cache-control"), Some("no-cache"));
    let modified = first
        .header("last-modified")
        .expect("Last-Modified")
        .to_string();
    let again = get(&app, &js_path, &[("If-Modified-Since", &modified)]).await;
    assert_eq!(again.status, 304, "{}", again.head);
    assert_eq!(again.body, "");
    let types = get(&app, "/pkg/stagely.d.ts", &[]).await;
    assert_eq!(types.status, 200);
    assert_eq!(types.header("cache-control"), Some("no-cache"));

    // A file that is not there is a plain 404, not a page.
    let missing = get(&app, &format!("/pkg/stagely.{js}.css"), &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("cache-control"), None);
    assert!(!missing.body.contains("<html"), "{}", missing.body);
}

#[tokio::test]
async fn a_site_built_without_hashes_keeps_plain_names_revalidated() {
    let (app, _site, _) = app_on_site(false).await;
    let page = get(&app, "/setup", &[]).await;
    assert!(page.body.contains("/pkg/stagely.js"), "{}", page.body);
    assert!(page.body.contains("/pkg/stagely.css"), "{}", page.body);
    let js = get(&app, "/pkg/stagely.js", &[]).await;
    assert_eq!(js.status, 200);
    assert_eq!(js.header("cache-control"), Some("no-cache"));
}
