//! `engram-client` against a real engramd: every call, pagination, errors, retries.

use std::time::{Duration, Instant};

use engram_client::{BatchItem, Client, Error, ListQuery, NewMemory, RetryPolicy};
use engram_tests::Daemon;
use serde_json::json;

const ADMIN: &str = "rust-admin-key-1";
const TEAM: &str = "rust-team-key-1";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn vector(seed: u32) -> Vec<f32> {
    (0..8)
        .map(|d| ((seed * 31 + d * 7) % 17) as f32 / 17.0 - 0.5)
        .collect()
}

#[test]
fn every_call_against_a_real_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = format!("{ADMIN},{TEAM}:team-a");
    let d = Daemon::start(
        &dir.path().join("data"),
        &[("auth.api_keys", &keys), ("embedding.dimensions", "8")],
    );
    runtime().block_on(async {
        let db = Client::new(&d.url).expect("url").with_api_key(ADMIN);
        let m = db
            .remember(
                &NewMemory::new("the ferry leaves at nine")
                    .namespace("rust")
                    .importance(0.9)
                    .tags(["travel"])
                    .embedding(vector(1)),
            )
            .await
            .expect("remember");
        assert_eq!((m.namespace.as_str(), m.version, m.tier.as_str()), ("rust", 1, "working"));
        assert!((m.importance - 0.9).abs() < 1e-6);
        let got = db.get(&m.id).await.expect("get");
        assert_eq!((got.content.as_str(), got.access_count), ("the ferry leaves at nine", 1));

        let found = db
            .recall(&json!({"namespace": "rust", "query_text": "ferry", "search_type": "text"}))
            .await
            .expect("recall");
        assert_eq!(found.hits[0].memory.id, m.id);
        let near = db
            .recall(&json!({"namespace": "rust", "query_embedding": vector(1), "search_type": "semantic", "limit": 1}))
            .await
            .expect("semantic recall");
        assert_eq!(near.hits[0].memory.id, m.id);

        let updated = db
            .update(&m.id, &json!({"importance_score": 0.2, "tags": ["boats"]}))
            .await
            .expect("update");
        assert_eq!((updated.version, updated.tags.clone()), (2, vec!["boats".to_owned()]));

        let items: Vec<NewMemory> = (0..1000)
            .map(|i| NewMemory::new(format!("page memory {i}")).namespace("pages"))
            .collect();
        let mut ids = Vec::new();
        for chunk in [&items[..], &items[..500]] {
            for item in db.batch(chunk).await.expect("batch") {
                if let Some(id) = item.id() {
                    ids.push(id.to_owned());
                }
            }
        }
        assert_eq!(ids.len(), 1000, "the second batch repeats content: every item a duplicate");
        let rejected = db.batch(&items[..2]).await.expect("batch");
        assert!(matches!(&rejected[0], BatchItem::Failed { error } if error.code == "DUPLICATE_CONTENT"));
        let listed = db
            .list_all(&ListQuery {
                namespace: Some("pages".into()),
                limit: Some(300),
                ..ListQuery::default()
            })
            .await
            .expect("list");
        ids.sort();
        assert_eq!(listed.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), ids);

        let health = db.health().await.expect("health");
        assert_eq!(health.status, "healthy");
        let snap = db.create_snapshot().await.expect("snapshot");
        assert!(db.snapshots().await.expect("list").iter().any(|s| s.id == snap.id));
        db.delete_snapshot(&snap.id).await.expect("delete snapshot");

        assert!(!db.forget(&m.id, false).await.expect("forget").purged);
        assert!(db.forget(&m.id, true).await.expect("purge").purged);

        // Errors carry the daemon's code, field and request id.
        let missing = db.get(&m.id).await.expect_err("purged");
        let api = missing.api().expect("the daemon answered");
        assert_eq!((api.status, api.code.as_str()), (404, "MEMORY_NOT_FOUND"));
        assert!(api.request_id.is_some());
        let invalid = db
            .remember(&NewMemory::new("x").importance(2.0))
            .await
            .expect_err("importance 2");
        let api = invalid.api().expect("the daemon answered");
        assert_eq!((api.status, api.field.as_deref()), (400, Some("importance_score")));
        let dup = db
            .remember(&NewMemory::new("page memory 3").namespace("pages"))
            .await
            .expect_err("duplicate");
        assert_eq!(dup.code(), Some("DUPLICATE_CONTENT"));
        let anonymous = Client::new(&d.url).expect("url");
        assert_eq!(anonymous.health().await.map(|h| h.status).ok().as_deref(), Some("healthy"));
        assert_eq!(anonymous.get(&ids[0]).await.expect_err("no key").status(), Some(401));
        let team = Client::new(&d.url).expect("url").with_api_key(TEAM);
        assert_eq!(
            team.remember(&NewMemory::new("elsewhere").namespace("rust"))
                .await
                .expect_err("other namespace")
                .code(),
            Some("FORBIDDEN")
        );
        let nobody = Client::new("http://127.0.0.1:9")
            .expect("url")
            .with_retry(RetryPolicy::NONE);
        assert!(matches!(nobody.health().await, Err(Error::Transport(_))));
        assert!(matches!(Client::new("https://example.com"), Err(Error::Url(_))));
    });
}

#[test]
fn retries_wait_out_the_rate_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            ("rate_limit.requests_per_second", "2"),
            ("rate_limit.burst", "2"),
            ("embedding.dimensions", "8"),
        ],
    );
    runtime().block_on(async {
        let strict = Client::new(&d.url)
            .expect("url")
            .with_retry(RetryPolicy::NONE);
        let patient = Client::new(&d.url).expect("url").with_retry(RetryPolicy {
            max_retries: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        });
        let started = Instant::now();
        for i in 0..6 {
            patient
                .remember(&NewMemory::new(format!("paced {i}")))
                .await
                .expect("remember with retries");
        }
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // Health is never rate limited; a memory read is.
        let mut limited = None;
        for _ in 0..5 {
            match strict.get("0190f0f0-0000-7000-8000-000000000000").await {
                Err(e) if e.status() == Some(429) => {
                    limited = Some(e);
                    break;
                }
                _ => {}
            }
        }
        let limited = limited.expect("a 429 without retries");
        assert!(limited.api().and_then(|e| e.retry_after).is_some());
    });
}
