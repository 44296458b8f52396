//! Secrets at rest: never plaintext in the database, bound to their row, rotatable.

use crate::helpers::{spawn_app, ApiClient, ServerProcess, TestDb};
use reqwest::Method;
use serde_json::json;
use shared::api::{Project, SecretSummary};
use std::time::Duration;

const PLAINTEXT: &str = "correct-horse-battery-staple-4f9a";

async fn project_with_secret(api: &ApiClient) -> (Project, SecretSummary) {
    let (_, project) = api.shop_project().await;
    let secret = api.add_secret(project.id, "API_KEY", PLAINTEXT).await;
    (project, secret)
}

#[tokio::test]
async fn no_secret_value_is_stored_in_plaintext_on_any_backend() {
    for db in TestDb::all().await {
        let app = spawn_app(&db).await;
        let (_, api) = app.user("alice").await;
        project_with_secret(&api).await;
        let dump = match &db {
            TestDb::Sqlite => {
                app.store().close().await; // checkpoint the WAL into the main file
                let mut bytes = std::fs::read(app.data_dir.path().join("stagely.db")).unwrap();
                bytes.extend(
                    std::fs::read(app.data_dir.path().join("stagely.db-wal")).unwrap_or_default(),
                );
                String::from_utf8_lossy(&bytes).into_owned()
            }
            TestDb::Postgres(url) => {
                let output = std::process::Command::new("pg_dump")
                    .arg(url)
                    .output()
                    .expect("pg_dump runs");
                assert!(
                    output.status.success(),
                    "{}",
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8_lossy(&output.stdout).into_owned()
            }
        };
        assert!(
            dump.contains("API_KEY"),
            "{}: the dump does not hold the secrets table",
            db.name()
        );
        assert!(
            !dump.contains(PLAINTEXT),
            "{}: a secret value is stored in plaintext",
            db.name()
        );
    }
}

#[tokio::test]
async fn a_ciphertext_copied_to_another_row_does_not_decrypt() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let (project, original) = project_with_secret(&api).await;
    let other: SecretSummary = api
        .expect(
            Method::POST,
            "/secrets",
            Some(json!({"project_id": project.id, "key": "OTHER", "value": "other-value", "scope": "global"})),
            201,
        )
        .await;
    // An attacker with write access to the database moves one row's ciphertext to another.
    let stored = app.store().all_secrets().await.unwrap();
    let source = stored.iter().find(|s| s.id == original.id).unwrap();
    let target = stored.iter().find(|s| s.id == other.id).unwrap();
    assert!(app
        .store()
        .replace_ciphertext(target.id, &target.ciphertext, &source.ciphertext)
        .await
        .unwrap());

    let (status, json) = api
        .call(Method::POST, &format!("/secrets/{}/reveal", other.id), None)
        .await;
    assert_eq!(status, 500, "{json}");
    assert_eq!(json["error"]["code"], "secret_unreadable");
    let message = json["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("modified or copied from another row"),
        "{message}"
    );
    assert!(!message.contains(PLAINTEXT));
}

#[tokio::test]
async fn revealing_a_secret_is_recorded_in_the_audit_trail() {
    let app = spawn_app(&TestDb::Sqlite).await;
    let (_, api) = app.user("alice").await;
    let (_, secret) = project_with_secret(&api).await;
    let trail = app
        .store()
        .audit_trail(&format!("secret:{}", secret.id))
        .await
        .unwrap();
    assert!(trail.is_empty(), "listing is not revealing");
    api.reveal(secret.id).await;
    let trail = app
        .store()
        .audit_trail(&format!("secret:{}", secret.id))
        .await
        .unwrap();
    assert_eq!(trail, [("alice".to_string(), "reveal_secret".to_string())]);
}

const OLD_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const NEW_KEY: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

fn server_cli(
    data_dir: &std::path::Path,
    args: &[&str],
    keys: &[(&str, &str)],
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_stagely-server"));
    command
        .args(args)
        .env("STAGELY_DATA_DIR", data_dir)
        .env_remove("APP_MASTER_KEY");
    for (name, value) in keys {
        command.env(name, value);
    }
    command
}

#[tokio::test]
async fn key_rotation_keeps_every_secret_readable_even_when_killed_halfway() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(data.path(), None, &[("APP_MASTER_KEY", OLD_KEY)]).await;
    let api = server.api_user("alice");
    let (project, _) = project_with_secret(&api).await;
    for i in 0..999 {
        let body = json!({"project_id": project.id, "key": format!("K{i}"), "value": format!("value-{i}"), "scope": "global"});
        let _: SecretSummary = api.expect(Method::POST, "/secrets", Some(body), 201).await;
    }
    drop(server);

    // Start a rotation and kill it once it has re-encrypted some rows but not all.
    let keys = [
        ("APP_MASTER_KEY", NEW_KEY),
        ("APP_MASTER_KEY_PREVIOUS", OLD_KEY),
    ];
    let new_id = *server::crypto::MasterKey::parse(NEW_KEY, "test")
        .unwrap()
        .id()
        .as_bytes();
    let store = server::db::Store::connect(None, data.path()).await.unwrap();
    let mut rotation = server_cli(data.path(), &["rotate-key"], &keys)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rotated_when_killed = loop {
        let rows = store.all_secrets().await.unwrap();
        let rotated = rows
            .iter()
            .filter(|row| row.ciphertext[1..5] == new_id)
            .count();
        if rotated > 0 {
            let _ = rotation.kill();
            break rotated;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotation never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    rotation.wait().unwrap();
    let rows = store.all_secrets().await.unwrap();
    let rotated = rows
        .iter()
        .filter(|row| row.ciphertext[1..5] == new_id)
        .count();
    assert!(
        rotated < rows.len(),
        "the rotation finished before it could be killed"
    );
    eprintln!(
        "rotation killed after {rotated_when_killed}..{rotated} of {} rows",
        rows.len()
    );
    store.close().await;

    // With both keys every secret reads back, whichever key it is under now.
    let server = ServerProcess::start_with(data.path(), None, &keys).await;
    let secrets: Vec<SecretSummary> = api_for(&server, &api).secrets_of(project.id).await;
    assert_eq!(secrets.len(), 1000);
    for secret in &secrets {
        api_for(&server, &api).reveal(secret.id).await;
    }
    drop(server);

    // Finishing the rotation leaves every row under the new key alone.
    let finished = server_cli(data.path(), &["rotate-key"], &keys)
        .output()
        .unwrap();
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    let server = ServerProcess::start_with(data.path(), None, &[("APP_MASTER_KEY", NEW_KEY)]).await;
    let client = api_for(&server, &api);
    for secret in &secrets {
        let revealed: shared::api::RevealedSecret = client.reveal(secret.id).await;
        assert!(!revealed.value.expose().is_empty());
    }

    // The old key alone can no longer read them, and says so instead of returning garbage.
    drop(server);
    let server = ServerProcess::start_with(data.path(), None, &[("APP_MASTER_KEY", OLD_KEY)]).await;
    let (status, json) = api_for(&server, &api)
        .call(
            Method::POST,
            &format!("/secrets/{}/reveal", secrets[0].id),
            None,
        )
        .await;
    assert_eq!(status, 500);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("APP_MASTER_KEY"),
        "{json}"
    );
}

fn api_for(server: &ServerProcess, api: &ApiClient) -> ApiClient {
    ApiClient::new(&server.url(), &api.token)
}

#[tokio::test]
async fn the_running_servers_configuration_keeps_no_copy_of_the_master_keys() {
    let data = tempfile::tempdir().unwrap();
    let vars = [
        ("STAGELY_DATA_DIR", data.path().display().to_string()),
        (
            "APP_MASTER_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_string(),
        ),
        (
            "APP_MASTER_KEY_PREVIOUS",
            "HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=".to_string(),
        ),
    ];
    let config = server::config::Config::from_lookup(|name| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    })
    .unwrap();
    assert!(config.master_key.is_some() && config.master_key_previous.is_some());
    let state = server::AppState::build(config).await.unwrap();
    assert!(state.config.master_key.is_none(), "APP_MASTER_KEY kept");
    assert!(
        state.config.master_key_previous.is_none(),
        "APP_MASTER_KEY_PREVIOUS kept"
    );
    state.store.close().await;
}
