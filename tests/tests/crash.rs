//! Crash safety: 64 concurrent writers against a real `engramd`, `kill -9` at a random moment,
//! restart, and compare with an oracle of acknowledged writes.
//!
//! Checked after every cycle: every memory acknowledged with 201 is readable with identical
//! content and embedding; every memory the store holds is one a writer sent, intact (no torn or
//! half-applied memory is visible); acknowledged deletes stay deleted. `ENGRAM_CRASH_CYCLES`
//! sets the number of cycles (default 20); `ENGRAM_CRASH_SEED` replays a run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engram_tests::{embedding, Daemon};
use rand::{Rng, SeedableRng};
use serde_json::json;

const WRITERS: usize = 64;
const DIMS: usize = 32;

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let cycles: usize = std::env::var("ENGRAM_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("ENGRAM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test: {cycles} cycles, seed {seed} (ENGRAM_CRASH_SEED={seed} to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // A small working tier, so evictions to warm run during the crashes too.
    let settings = [
        ("embedding.dimensions", "32"),
        ("working.capacity", "500"),
        ("storage.checkpoint_interval", "1s"),
    ];
    // content → (id, embedding seed) of every acknowledged create; ids acknowledged as deleted.
    let acked: Arc<Mutex<HashMap<String, (String, u64)>>> = Arc::new(Mutex::new(HashMap::new()));
    let deleted: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let mut total_acked = 0;
    let mut checked: std::collections::HashSet<String> = std::collections::HashSet::new();
    for cycle in 0..cycles {
        let started = std::time::Instant::now();
        let mut d = Daemon::start(&data, &settings);
        let start_ms = started.elapsed().as_millis();
        {
            // Each cycle checks everything acknowledged since the last check plus a sample of
            // older writes; every fifth cycle (and the end) checks everything.
            let acked = acked.lock().expect("lock");
            let full = cycle % 5 == 4;
            let subset: HashMap<String, (String, u64)> = acked
                .iter()
                .filter(|(c, _)| full || !checked.contains(*c) || rng.random_ratio(1, 100))
                .map(|(c, v)| (c.clone(), v.clone()))
                .collect();
            verify(
                &d,
                &subset,
                &acked,
                &deleted.lock().expect("lock"),
                cycle,
                full,
            );
            checked.extend(acked.keys().cloned());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let url = d.url.clone();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (acked, deleted, stop, url) = (Arc::clone(&acked), Arc::clone(&deleted), Arc::clone(&stop), url.clone());
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let content = format!("cycle {cycle} writer {w} write {n}");
                        let emb_seed = (cycle as u64) << 40 | (w as u64) << 20 | n;
                        let body = json!({"content": content, "embedding": embedding(emb_seed, DIMS), "namespace": format!("w{}", w % 4)});
                        match agent.post(&format!("{url}/api/v1/memories")).send_json(body) {
                            Ok(r) if r.status() == 201 => {
                                let v: serde_json::Value = r.into_json().expect("json");
                                let id = v["id"].as_str().expect("id").to_owned();
                                acked.lock().expect("lock").insert(content, (id.clone(), emb_seed));
                                // Every seventh write also deletes what it just wrote.
                                if n.is_multiple_of(7) {
                                    if let Ok(r) = agent.delete(&format!("{url}/api/v1/memories/{id}")).call() {
                                        if r.status() == 200 {
                                            deleted.lock().expect("lock").push(id);
                                        }
                                    }
                                }
                            }
                            // The daemon died mid-request: that write was never acknowledged.
                            Err(ureq::Error::Transport(_)) => break,
                            Ok(r) => panic!("create answered {} in cycle {cycle}", r.status()),
                            Err(ureq::Error::Status(code, r)) => panic!(
                                "create answered {code} in cycle {cycle}: {}",
                                r.into_string().unwrap_or_default()
                            ),
                        }
                    }
                })
            })
            .collect();
        let run_ms = rng.random_range(100..700);
        std::thread::sleep(Duration::from_millis(run_ms));
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().expect("writer thread");
        }
        let now = acked.lock().expect("lock").len();
        println!(
            "cycle {cycle}: serving after {start_ms} ms, killed after {run_ms} ms, {now} acknowledged creates so far, cycle took {} ms",
            started.elapsed().as_millis()
        );
        assert!(
            now > total_acked || cycle == 0 || run_ms < 150,
            "no progress in cycle {cycle}; daemon log:\n{}",
            d.log()
        );
        total_acked = now;
    }
    let d = Daemon::start(&data, &settings);
    let acked = acked.lock().expect("lock");
    verify(
        &d,
        &acked,
        &acked,
        &deleted.lock().expect("lock"),
        cycles,
        true,
    );
    assert!(total_acked > 0);
}

/// Checks `subset` by id; with `full`, also that the store holds nothing but intact writes.
fn verify(
    d: &Daemon,
    subset: &HashMap<String, (String, u64)>,
    acked: &HashMap<String, (String, u64)>,
    deleted: &[String],
    cycle: usize,
    full: bool,
) {
    for (content, (id, emb_seed)) in subset {
        let r = d.get(&format!("/api/v1/memories/{id}?include_embedding=true"));
        assert_eq!(
            r.status, 200,
            "cycle {cycle}: acknowledged memory {id} is missing: {}",
            r.text
        );
        assert_eq!(
            r.body["content"].as_str(),
            Some(content.as_str()),
            "cycle {cycle}: content of {id}"
        );
        let e: Vec<f32> = serde_json::from_value(r.body["embedding"].clone()).expect("embedding");
        assert_eq!(
            e,
            embedding(*emb_seed, DIMS),
            "cycle {cycle}: embedding of {id}"
        );
    }
    if !full {
        return;
    }
    for id in deleted {
        let r = d.get(&format!("/api/v1/memories/{id}"));
        assert_eq!(
            r.body["status"], "deleted",
            "cycle {cycle}: acknowledged delete of {id} undone"
        );
    }
    // Everything stored is something a writer sent, whole.
    let by_id: HashMap<&str, &str> = acked
        .iter()
        .map(|(c, (id, _))| (id.as_str(), c.as_str()))
        .collect();
    let mut all = d.list_all("");
    all.extend(d.list_all("&status=deleted"));
    for m in &all {
        let content = m["content"].as_str().expect("content");
        assert!(
            content.starts_with("cycle ")
                && content.contains(" writer ")
                && content.contains(" write "),
            "cycle {cycle}: foreign content {content:?}"
        );
        if let Some(expected) = by_id.get(m["id"].as_str().expect("id")) {
            assert_eq!(content, *expected);
        }
    }
    let health = d.get("/api/v1/health");
    let stored = health.body["tiers"]["working"].as_u64().expect("n")
        + health.body["tiers"]["warm"].as_u64().expect("n");
    assert_eq!(
        stored as usize,
        all.len(),
        "cycle {cycle}: tier counts agree with the list"
    );
    assert!(
        all.len() >= acked.len(),
        "cycle {cycle}: every acknowledged memory is listed"
    );
}
