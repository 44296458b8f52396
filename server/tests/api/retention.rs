//! Retention: a purge pass drops old history and keeps what is still needed, run as of now and
//! as of a year later, on SQLite and PostgreSQL.

use crate::helpers::{spawn_app_with_env, AppOptions, TestApp, TestDb};
use reqwest::Method;
use server::db::{NewEvent, NewJob};
use server::ops::retention::purge;
use server::token::Token;
use shared::api::{DeploymentStatus, EventKind};
use shared::notify::{ChannelId, ChannelKind, DeliveryId, NotificationEvent};
use shared::runtime::JobKind;
use shared::{DeploymentId, ProjectId, UserId};
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

#[tokio::test]
async fn a_purge_keeps_the_newest_jobs_what_runs_and_what_is_redeployed_and_drops_the_rest() {
    for db in TestDb::all().await {
        let app = spawn_app_with_env(
            &db,
            AppOptions::default(),
            &[
                ("STAGELY_KEEP_DEPLOYMENTS", "2"),
                ("STAGELY_KEEP_SECRET_VERSIONS", "1"),
                // The delivery worker stays away from the pending delivery below.
                ("STAGELY_NOTIFY_POLL_MS", "60000"),
            ],
        )
        .await;
        let store = app.store();
        let (user, api) = app.user("alice").await;
        let (_, project) = api.shop_project().await;
        let secret = api.add_secret(project.id, "TOKEN", "value-1").await;
        for value in ["value-2", "value-3", "value-4"] {
            let path = format!("/secrets/{}", secret.id);
            let (status, json) = api
                .call(
                    Method::PATCH,
                    &path,
                    Some(serde_json::json!({"value": value})),
                )
                .await;
            assert_eq!(status, 200, "{json}");
        }
        let versions: Vec<Uuid> = store
            .versions_of_secret(&user, secret.id)
            .await
            .unwrap()
            .iter()
            .rev()
            .map(|version| version.id)
            .collect();
        let [v1, v2, v3, v4] = versions[..] else {
            panic!("four versions: {versions:?}")
        };

        use DeploymentStatus::*;
        let job = |kind, redeploy_of, secrets, status| {
            job(
                &app,
                project.id,
                user.id,
                kind,
                redeploy_of,
                secrets,
                status,
            )
        };
        let d1 = job(JobKind::Deploy, None, vec![v1], Some(Succeeded)).await;
        let d2 = job(JobKind::Deploy, None, vec![v2], Some(Failed)).await;
        let d3 = job(JobKind::Deploy, None, vec![v3], Some(Succeeded)).await;
        let d4 = job(JobKind::Restart, None, vec![], Some(Succeeded)).await;
        let d5 = job(JobKind::Deploy, None, vec![v4], Some(Failed)).await;
        let d6 = job(JobKind::Deploy, None, vec![v4], None).await;
        let d7 = job(JobKind::Deploy, None, vec![v4], Some(TimedOut)).await;
        let d8 = job(JobKind::Deploy, Some(d1), vec![v1], Some(Failed)).await;

        // Things that only age: an audit entry, join tokens, sessions, deliveries.
        store.audit(user.id, "reveal", "secret").await.unwrap();
        let hour = 3_600_000;
        let now = server::db::now_ms();
        store
            .create_join_token(&Token::join().hash(), user.id, None, now + hour)
            .await
            .unwrap();
        store
            .create_join_token(&Token::join().hash(), user.id, None, now + 1000 * 24 * hour)
            .await
            .unwrap();
        let (short, long) = (Token::generate(), Token::generate());
        store
            .create_session(user.id, &short.hash(), Duration::from_secs(3600))
            .await
            .unwrap();
        store
            .create_session(user.id, &long.hash(), Duration::from_secs(1000 * 86_400))
            .await
            .unwrap();
        let channel = channel(&app, user.id).await;
        // A queue of one: the second delivery fails the first ("queue full"), a finished one.
        let (finished, pending) = (DeliveryId(Uuid::new_v4()), DeliveryId(Uuid::new_v4()));
        let event = NotificationEvent::DeployFailed;
        store
            .enqueue_delivery(finished, channel, event, "{}", 1)
            .await
            .unwrap();
        store
            .enqueue_delivery(pending, channel, event, "{}", 1)
            .await
            .unwrap();

        // As of now: the jobs beyond the newest two finished go, except the newest successful
        // deploy (d3), the one a kept job redeploys (d1) and the open one (d6); with them their
        // events and the secret version only they ran (v2). Nothing else is old enough.
        let keep = &app.state.config.retention;
        let purged = purge(store, keep, OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(purged.deployments, 3, "{} {purged:?}", db.name());
        let left = deployment_ids(&app, &db, project.id).await;
        let expected: Vec<String> = [d1, d3, d6, d7, d8].iter().map(|d| d.to_string()).collect();
        assert_eq!(left, expected, "{}", db.name());
        for gone in [d2, d4, d5] {
            let sql =
                format!("SELECT COUNT(*) FROM deployment_events WHERE deployment_id = '{gone}'");
            assert_eq!(count(&app, &db, &sql).await, 0, "events of {gone}");
            let sql =
                format!("SELECT COUNT(*) FROM deployment_secrets WHERE deployment_id = '{gone}'");
            assert_eq!(count(&app, &db, &sql).await, 0, "snapshot of {gone}");
        }
        let sql = format!("SELECT COUNT(*) FROM deployment_events WHERE deployment_id = '{d1}'");
        assert!(
            count(&app, &db, &sql).await > 1,
            "a kept job keeps its output"
        );
        let kept_versions: Vec<Uuid> = store
            .versions_of_secret(&user, secret.id)
            .await
            .unwrap()
            .iter()
            .rev()
            .map(|version| version.id)
            .collect();
        assert_eq!(kept_versions, vec![v1, v3, v4], "{}", db.name());
        // A kept deployment can still be run again with exactly what it ran.
        assert_eq!(store.snapshot_of(d1).await.unwrap(), Some(vec![v1]));
        for table in [
            "audit_log",
            "join_tokens",
            "sessions",
            "notification_deliveries",
        ] {
            let rows = count(&app, &db, &format!("SELECT COUNT(*) FROM {table}")).await;
            assert!(
                rows >= 2 || table == "audit_log" && rows == 1,
                "{table}: {rows}"
            );
        }

        // A year later: the audit entry, the expired join token and session and the finished
        // delivery are gone too; the long-lived token and session and the pending delivery stay.
        let later = OffsetDateTime::now_utc() + time::Duration::days(400);
        let purged = purge(store, keep, later).await.unwrap();
        assert_eq!(
            (
                purged.audit_entries,
                purged.join_tokens,
                purged.sessions,
                purged.deliveries
            ),
            (1, 1, 1, 1),
            "{} {purged:?}",
            db.name()
        );
        assert_eq!(count(&app, &db, "SELECT COUNT(*) FROM audit_log").await, 0);
        assert_eq!(
            count(&app, &db, "SELECT COUNT(*) FROM join_tokens").await,
            1
        );
        assert!(store.user_by_session(&long.hash()).await.unwrap().is_some());
        assert_eq!(count(&app, &db, "SELECT COUNT(*) FROM sessions").await, 1);
        let deliveries = store.deliveries_of(channel, 10).await.unwrap();
        let ids: Vec<DeliveryId> = deliveries.iter().map(|delivery| delivery.id).collect();
        assert_eq!(ids, vec![pending], "{}", db.name());
        // Still kept: what a later pass finds nothing more to do with.
        assert_eq!(deployment_ids(&app, &db, project.id).await, expected);
        let again = purge(store, keep, later).await.unwrap();
        assert!(!again.any(), "{again:?}");
    }
}

/// A job of `project` with two output lines, moved to `status` (left open when `None`).
async fn job(
    app: &TestApp,
    project: ProjectId,
    by: UserId,
    kind: JobKind,
    redeploy_of: Option<DeploymentId>,
    secrets: Vec<Uuid>,
    status: Option<DeploymentStatus>,
) -> DeploymentId {
    // Each job a millisecond of its own (the history shows the time).
    tokio::time::sleep(Duration::from_millis(3)).await;
    let job = NewJob {
        project,
        agent: app.store().project_by_id(project).await.unwrap().agent_id,
        created_at: server::db::now_ms(),
        requested_by: by,
        kind,
        service: None,
        remove_volumes: false,
        redeploy_of,
        secrets,
    };
    let (id, _) = app.store().create_job(&job).await.unwrap();
    let line = |body: &str| NewEvent {
        kind: EventKind::Output,
        body: body.into(),
    };
    app.store()
        .add_deployment_events(id, &[line("pulling"), line("starting")])
        .await
        .unwrap();
    if let Some(status) = status {
        assert!(app
            .store()
            .set_deployment_status(id, status, None)
            .await
            .unwrap());
    }
    id
}

/// A webhook channel of `owner` (its sealed columns are placeholders: nothing is sent).
async fn channel(app: &TestApp, owner: UserId) -> ChannelId {
    let id = ChannelId(Uuid::new_v4());
    let channel = server::db::StoredChannel {
        id,
        owner_id: owner,
        kind: ChannelKind::Webhook,
        name: "hook".into(),
        target: "https://example.com".into(),
        url: vec![1, 2, 3],
        signing_secret: None,
        token: None,
        created_at: OffsetDateTime::now_utc(),
    };
    app.store().insert_channel(&channel).await.unwrap();
    id
}

/// The ids of a project's deployments as stored, oldest first.
async fn deployment_ids(app: &TestApp, db: &TestDb, project: ProjectId) -> Vec<String> {
    let sql = format!(
        "SELECT id FROM deployments WHERE project_id = '{project}' ORDER BY queue_order, id"
    );
    rows(app, db, &sql).await
}

async fn count(app: &TestApp, db: &TestDb, sql: &str) -> i64 {
    rows(app, db, &format!("SELECT CAST(({sql}) AS TEXT)"))
        .await
        .first()
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

/// The first column of `sql`'s rows (text), read beside the running server.
async fn rows(app: &TestApp, db: &TestDb, sql: &str) -> Vec<String> {
    let rows: Vec<(String,)> = match db.url() {
        Some(url) => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
        None => {
            let file = app.data_dir.path().join("stagely.db");
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
                .await
                .unwrap();
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    };
    rows.into_iter().map(|(value,)| value).collect()
}
