//! TTL: a memory whose `expires_at` passes disappears at once from reads, lists, updates and
//! searches, even while readers hammer it, and the background job purges it for good
//! (`engram_memories_expired_total`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engram_tests::{rfc3339_in, Daemon, TEST_CLOCK};
use serde_json::json;

#[test]
fn expired_memories_vanish_at_once_and_are_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let settings = [("embedding.dimensions", "4"), ("working.capacity", "20")];
    let mut d = Daemon::start_with_env(&data, &settings, &[TEST_CLOCK]);
    let expires = rfc3339_in(1500);
    let mut short = Vec::new();
    for i in 0..30 {
        let r = d.post(
            "/api/v1/memories",
            &json!({"namespace": "t", "content": format!("ephemeral note {i}"), "expires_at": expires, "embedding": [1.0, i as f64, 0.0, 0.5]}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        short.push(r.body["id"].as_str().expect("id").to_owned());
    }
    let keep = d.post(
        "/api/v1/memories",
        &json!({"namespace": "t", "content": "lasting note", "expires_at": rfc3339_in(3_600_000)}),
    );
    assert_eq!(keep.status, 201);
    let health = d.get("/api/v1/health").body;
    assert!(
        health["tiers"]["warm"].as_u64().expect("warm") > 0,
        "some expire from warm: {health}"
    );

    // Readers race the expiry: once a reader sees a 404 after the deadline, nothing brings the
    // memory back.
    let stop = AtomicBool::new(false);
    let passes = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for r in 0..4 {
            let (d, short, stop, passes) = (&d, &short, &stop, &passes);
            s.spawn(move || {
                let mut gone = vec![false; short.len()];
                while !stop.load(Ordering::Relaxed) {
                    for (i, id) in short.iter().enumerate().skip(r % 2) {
                        let st = d.get(&format!("/api/v1/memories/{id}")).status;
                        assert!(st == 200 || st == 404, "{st}");
                        if st == 404 {
                            gone[i] = true;
                        } else {
                            assert!(!gone[i], "an expired memory came back");
                        }
                    }
                    passes.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Whatever happens below, the readers stop (a failed assertion must not hang the scope).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        // The deadline passes under the readers, once each has read every memory alive.
        let deadline = Instant::now() + Duration::from_secs(30);
        while passes.load(Ordering::Relaxed) < 8 {
            assert!(Instant::now() < deadline, "the readers made no progress");
            std::thread::yield_now();
        }
        d.advance_clock(Duration::from_millis(1700));
        // Past the deadline: gone from reads, lists, searches and updates right away.
        for id in &short {
            assert_eq!(d.get(&format!("/api/v1/memories/{id}")).status, 404);
            assert_eq!(
                d.patch(
                    &format!("/api/v1/memories/{id}"),
                    &json!({"importance_score": 0.1})
                )
                .status,
                404
            );
        }
        let listed = d.list_all("&namespace=t");
        assert_eq!(listed.len(), 1, "{listed:?}");
        let r = d.post(
            "/api/v1/search",
            &json!({"namespace": "t", "query_text": "note", "limit": 100}),
        );
        assert_eq!(r.body["total_count"], 1, "{}", r.text);
        let r = d.post("/api/v1/search", &json!({"namespace": "t", "query_embedding": [1.0, 3.0, 0.0, 0.5], "search_type": "semantic", "limit": 100}));
        assert!(
            r.body["results"].as_array().expect("results").is_empty(),
            "{}",
            r.text
        );
        stop.store(true, Ordering::Relaxed);
    });

    // The background job purges them.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = d.get("/metrics").text;
        if m.lines().any(|l| l == "engram_memories_expired_total 30") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not purged: {}",
            m.lines()
                .filter(|l| l.contains("expired"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let h = d.get("/api/v1/health").body;
    assert_eq!(
        h["tiers"]["working"].as_u64().expect("n") + h["tiers"]["warm"].as_u64().expect("n"),
        1
    );
    // A restart does not bring them back.
    assert!(d.terminate().success());
    let d = Daemon::start(&data, &settings);
    for id in &short {
        assert_eq!(d.get(&format!("/api/v1/memories/{id}")).status, 404);
    }
    assert_eq!(
        d.get(&format!(
            "/api/v1/memories/{}",
            keep.body["id"].as_str().expect("id")
        ))
        .status,
        200
    );
}
