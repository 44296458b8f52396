//! The storage story, on every backend this run has.

use crate::helpers::TestDb;
use server::db::Store;
use server::token::Token;
use shared::protocol::Hello;
use time::OffsetDateTime;

#[tokio::test]
async fn storage_story_holds_on_every_backend() {
    for db in TestDb::all().await {
        let data_dir = tempfile::tempdir().unwrap();
        storage_story(&db, data_dir.path()).await;
        eprintln!("storage story passed on {}", db.name());
    }
}

async fn storage_story(db: &TestDb, data_dir: &std::path::Path) {
    let backend = db.name();
    let store = Store::connect(db.url(), data_dir).await.unwrap();
    assert_eq!(store.backend(), backend);

    // An agent is registered under its token's hash and found by it again.
    let token = Token::generate();
    let agent = store
        .create_agent("web-1", &token.hash(), None)
        .await
        .unwrap();
    let found = store.agent_by_token(&token.hash()).await.unwrap();
    assert_eq!(found.as_ref().map(|a| a.id), Some(agent.id), "{backend}");
    assert_eq!(
        store
            .agent_by_token(&Token::generate().hash())
            .await
            .unwrap(),
        None
    );

    // The same token hash cannot be registered twice.
    let duplicate = store
        .create_agent("web-2", &token.hash(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(duplicate, server::db::DbError::Conflict(_)),
        "{backend}: {duplicate}"
    );

    // What the agent says about itself is kept.
    let hello = Hello {
        protocol_version: shared::PROTOCOL_VERSION,
        agent_version: "0.1.0".into(),
        hostname: "web-1.internal".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        docker_version: Some("24.0.7".into()),
        compose_version: Some("2.40.3".into()),
    };
    store.record_hello(agent.id, &hello).await.unwrap();
    let seen_at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    store
        .record_last_seen(&[(agent.id, seen_at)])
        .await
        .unwrap();
    let listed = store.list_agents().await.unwrap();
    assert_eq!(listed.len(), 1, "{backend}");
    assert_eq!(listed[0].hostname.as_deref(), Some("web-1.internal"));
    assert_eq!(listed[0].docker_version.as_deref(), Some("24.0.7"));
    assert_eq!(listed[0].last_seen, Some(seen_at));

    // The token itself is nowhere in the database, only its hash.
    let stored: String = match db {
        TestDb::Sqlite => {
            let bytes = std::fs::read(data_dir.join("stagely.db")).unwrap();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        TestDb::Postgres(_) => store_dump(&store).await,
    };
    assert!(
        !stored.contains(token.expose()),
        "{backend}: the raw token was stored"
    );

    // Revoking makes the token useless and hides the agent.
    assert!(store.revoke_agent(agent.id).await.unwrap());
    assert!(
        !store.revoke_agent(agent.id).await.unwrap(),
        "revoking twice reports nothing to do"
    );
    assert_eq!(store.agent_by_token(&token.hash()).await.unwrap(), None);
    assert!(store.list_agents().await.unwrap().is_empty());
    store.close().await;

    // Reopening applies no migration twice and keeps the data.
    let reopened = Store::connect(db.url(), data_dir).await.unwrap();
    assert_eq!(reopened.agent(agent.id).await.unwrap().name, "web-1");
    reopened.close().await;
}

/// Every token hash column value, as text, for the PostgreSQL check.
async fn store_dump(store: &Store) -> String {
    let agents = store.list_agents().await.unwrap();
    format!("{agents:?}")
}

#[tokio::test]
async fn the_sqlite_database_and_its_wal_are_private_to_the_server() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let parent = tempfile::tempdir().unwrap();
    // A data directory the operator made readable by everyone, as `mkdir` under umask 022 does.
    let data_dir = parent.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::connect(None, &data_dir).await.unwrap();
    // A write, so the WAL and its shared-memory index exist.
    store.create_user("alice", None, false).await.unwrap();
    assert_eq!(mode(&data_dir), 0o700, "the data directory");
    for file in ["stagely.db", "stagely.db-wal", "stagely.db-shm"] {
        assert_eq!(mode(&data_dir.join(file)), 0o600, "{file}");
    }
    store.close().await;

    // A database left readable by an older server is closed up when it is opened again.
    std::fs::set_permissions(
        data_dir.join("stagely.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let store = Store::connect(None, &data_dir).await.unwrap();
    assert_eq!(mode(&data_dir.join("stagely.db")), 0o600);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_many_setups_racing_exactly_one_creates_the_first_admin() {
    // Several rounds, each on fresh databases: a race lost once in a while is a race lost.
    for round in 0..10 {
        for db in TestDb::all().await {
            let data_dir = tempfile::tempdir().unwrap();
            let store = Store::connect(db.url(), data_dir.path()).await.unwrap();
            // Every connection open first, so the setups reach the database together.
            let warm = (0..16).map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.has_users().await.unwrap() })
            });
            futures_util::future::join_all(warm).await;
            let attempts = (0..16).map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .create_first_admin(&format!("admin{n}"), "hash")
                        .await
                        .unwrap()
                })
            });
            let created = futures_util::future::join_all(attempts)
                .await
                .into_iter()
                .filter(|created| created.as_ref().unwrap().is_some())
                .count();
            assert_eq!(created, 1, "{} round {round}", db.name());
            store.close().await;
        }
    }
}
