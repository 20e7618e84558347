//! Embedding migrations: a store re-embedded into a new vector space in the background, by the
//! built-in all-MiniLM-L6-v2 model (a store of 4-dimensional client vectors gains a 384-d space
//! searchable by meaning) and by an OpenAI-compatible provider (a local stub imitating its wire
//! format: 8 → 24 dimensions, killed -9 midway under concurrent writes and searches, each search
//! checked to rank one space with that space's vectors, then resumed; recall through the
//! space's graph against brute force). Pause, resume and drop; the store's own search never
//! sees the new space's vectors until the cut-over, after which client vectors are the new
//! space's and survive kill -9.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use engram_tests::{embedding, model_dir, openai_stub, stub_vector, Daemon};
use serde_json::{json, Value};

const MIGRATIONS: &str = "/api/v1/admin/embedding/migrations";

/// Polls migration `id` until `done` holds (or panics after `timeout`); returns its state.
fn wait_until(d: &Daemon, id: u64, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let r = d.get(&format!("{MIGRATIONS}/{id}"));
        assert_eq!(r.status, 200, "{}", r.text);
        if done(&r.body) {
            return r.body;
        }
        assert!(
            Instant::now() < deadline,
            "migration {id} stuck: {}",
            r.text
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ready(m: &Value) -> bool {
    m["state"] == "ready"
}

fn ids_of(r: &Value) -> Vec<String> {
    r["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["memory"]["id"].as_str().expect("id").to_owned())
        .collect()
}

#[test]
fn a_migration_to_the_local_model_finds_by_meaning_while_writes_go_on() {
    let model = model_dir();
    let model = model.to_str().expect("utf-8 path");
    let dir = tempfile::tempdir().expect("tempdir");
    // No provider: the store holds 4-dimensional client vectors; the model is only on disk.
    let data = dir.path().join("data");
    let settings = [
        ("embedding.dimensions", "4"),
        ("embedding.model_dir", model),
    ];
    let mut d = Daemon::start(&data, &settings);
    let topics = [
        "I adopted a golden retriever puppy last week",
        "The quarterly stock market report showed losses",
        "We baked sourdough bread on Sunday",
        "The train to Boston was delayed by snow",
    ];
    let mut items: Vec<Value> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"content": t, "embedding": embedding(i as u64, 4)}))
        .collect();
    items.extend((0..150).map(|i| {
        json!({"content": format!("Filler note {i} about nothing in particular"), "embedding": embedding(100 + i, 4)})
    }));
    let r = d.post("/api/v1/memories/batch", &json!({"memories": items}));
    assert_eq!(r.status, 200, "{}", r.text);
    let puppy = r.body["results"][0]["id"].as_str().expect("id").to_owned();
    let stocks = r.body["results"][1]["id"].as_str().expect("id").to_owned();
    let bread = r.body["results"][2]["id"].as_str().expect("id").to_owned();

    // Refusals name their field.
    for (body, field) in [
        (
            json!({"provider": "local", "dimensions": 768}),
            "dimensions",
        ),
        (
            json!({"provider": "local", "model": "bge", "dimensions": 384}),
            "model",
        ),
        (
            json!({"provider": "cohere", "model": "x", "dimensions": 8}),
            "provider",
        ),
        (
            json!({"provider": "openai", "model": "x", "dimensions": 8}),
            "url",
        ),
        // Nothing listens there: refused at once, not left failing in the background.
        (
            json!({"provider": "openai", "model": "x", "dimensions": 8, "url": "http://127.0.0.1:9"}),
            "url",
        ),
        (
            json!({"provider": "local", "dimensions": 384, "colour": 1}),
            "colour",
        ),
    ] {
        let r = d.post(MIGRATIONS, &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{body}: {}", r.text);
    }

    let r = d.post(MIGRATIONS, &json!({"provider": "local", "dimensions": 384}));
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["model"], "all-MiniLM-L6-v2");
    let id = r.body["id"].as_u64().expect("id");
    // Writes while the migration runs: new memories and a changed one.
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..40 {
                let r = d.post(
                    "/api/v1/memories",
                    &json!({"content": format!("Later note {i} on gardening"), "embedding": embedding(1000 + i, 4)}),
                );
                assert_eq!(r.status, 201, "{}", r.text);
            }
            let r = d.patch(
                &format!("/api/v1/memories/{stocks}"),
                &json!({"content": "My cat knocked a glass of water off the table"}),
            );
            assert_eq!(r.status, 200, "{}", r.text);
        });
    });
    let m = wait_until(&d, id, Duration::from_secs(180), ready);
    assert_eq!(m["vectors"], 194, "{m}");
    assert_eq!(m["searchable"], 194, "{m}");
    assert_eq!(m["pending_changes"], 0, "{m}");
    assert!(m["backfilled_at"].is_string(), "{m}");

    // The new space finds by meaning, and the changed memory by its new content.
    let search = |text: &str| {
        let r = d.post(
            &format!("{MIGRATIONS}/{id}/search"),
            &json!({"query_text": text, "limit": 3}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    };
    assert_eq!(ids_of(&search("dog"))[0], puppy);
    assert_eq!(ids_of(&search("a pet spilled something"))[0], stocks);
    assert!(!ids_of(&search("finance and shares")).contains(&stocks));
    // Never mixed: the store searches its own 4-d vectors; each side refuses the other's.
    let r = d.post(
        "/api/v1/search",
        &json!({"query_embedding": embedding(0, 4), "search_type": "semantic", "limit": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids_of(&r.body)[0], puppy);
    let r = d.post(
        "/api/v1/search",
        &json!({"query_embedding": vec![0.1f32; 384], "search_type": "semantic"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let r = d.post(
        &format!("{MIGRATIONS}/{id}/search"),
        &json!({"query_embedding": embedding(0, 4)}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("query_embedding"), "{}", r.text);
    let metrics = d.get("/metrics").text;
    assert!(
        metrics.contains(&format!(
            "engram_embedding_migration_memories{{kind=\"vectors\",migration=\"{id}\"}} 194"
        )),
        "{metrics}"
    );

    // Paused: changes wait; resumed: they are embedded.
    let r = d.post(&format!("{MIGRATIONS}/{id}/pause"), &json!({}));
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("paused")));
    let r = d.patch(
        &format!("/api/v1/memories/{puppy}"),
        &json!({"content": "The violin concert downtown was sold out"}),
    );
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(700));
    let m = d.get(&format!("{MIGRATIONS}/{id}")).body;
    assert_eq!(
        (m["state"].as_str(), m["pending_changes"].as_u64()),
        (Some("paused"), Some(1))
    );
    let r = d.post(&format!("{MIGRATIONS}/{id}/resume"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    wait_until(&d, id, Duration::from_secs(60), ready);
    assert_eq!(ids_of(&search("classical music performance"))[0], puppy);

    // Cut-over: only a ready, running migration; then the store's searches rank its space.
    let r = d.post(&format!("{MIGRATIONS}/{id}/pause"), &json!({}));
    assert_eq!(r.status, 200);
    let r = d.post(&format!("{MIGRATIONS}/{id}/activate"), &json!({}));
    assert_eq!(
        (r.status, r.code()),
        (409, "MIGRATION_NOT_READY"),
        "{}",
        r.text
    );
    let r = d.post(&format!("{MIGRATIONS}/{id}/resume"), &json!({}));
    assert_eq!(r.status, 200);
    wait_until(&d, id, Duration::from_secs(60), ready);
    let r = d.post(&format!("{MIGRATIONS}/{id}/activate"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["active"], true);
    let semantic = |d: &Daemon, text: &str| {
        let r = d.post(
            "/api/v1/search",
            &json!({"query_text": text, "search_type": "semantic", "limit": 1}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        ids_of(&r.body)
    };
    // The store has no embedder of its own: the active migration's model embeds the query.
    assert_eq!(
        semantic(&d, "classical music performance"),
        vec![puppy.clone()]
    );
    assert_eq!(
        semantic(&d, "a pet spilled something"),
        vec![stocks.clone()]
    );
    let r = d.post(
        "/api/v1/search",
        &json!({"query_text": "a pet spilled something", "limit": 1}),
    );
    assert_eq!(ids_of(&r.body), vec![stocks.clone()], "hybrid: {}", r.text);
    // Query vectors now have the new space's dimensions; the past keeps the store's own.
    let r = d.post(
        "/api/v1/search",
        &json!({"query_embedding": embedding(0, 4), "search_type": "semantic"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("query_embedding"), "{}", r.text);
    let r = d.post(
        "/api/v1/search",
        &json!({"query_embedding": vec![0.05f32; 384], "search_type": "semantic"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let now = engram_tests::rfc3339(engram_engine::now_us());
    let r = d.post(
        "/api/v1/search",
        &json!({"query_embedding": embedding(3, 4), "search_type": "semantic", "as_of": now, "limit": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // Client vectors are now the new space's: one of the old dimensions is refused.
    let r = d.post(
        "/api/v1/memories",
        &json!({"content": "I go rock climbing at the gym every weekend", "embedding": embedding(77, 4)}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.body["error"]["details"]["field"], "embedding",
        "{}",
        r.text
    );
    // A memory written after the cut-over is found once the worker has embedded it, and a
    // write that asks to wait for its embedding returns once it is.
    let r = d.post(
        "/api/v1/memories?wait_for_embedding=true",
        &json!({"content": "I go rock climbing at the gym every weekend"}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let climbing = r.body["id"].as_str().expect("id").to_owned();
    assert_eq!(semantic(&d, "bouldering"), vec![climbing.clone()]);
    let r = d.patch(
        &format!("/api/v1/memories/{climbing}?wait_for_embedding=true"),
        &json!({"content": "I fixed the leaking pipe under the kitchen sink"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(semantic(&d, "plumbing repair"), vec![climbing.clone()]);
    let r = d.patch(
        &format!("/api/v1/memories/{climbing}?wait_for_embedding=true"),
        &json!({"content": "I go rock climbing at the gym every weekend"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(semantic(&d, "bouldering"), vec![climbing.clone()]);
    // While active it stays current: no pause, no drop. It survives a restart.
    let r = d.post(&format!("{MIGRATIONS}/{id}/pause"), &json!({}));
    assert_eq!(
        (r.status, r.code()),
        (409, "MIGRATION_ACTIVE"),
        "{}",
        r.text
    );
    let r = d.delete(&format!("{MIGRATIONS}/{id}"));
    assert_eq!(
        (r.status, r.code()),
        (409, "MIGRATION_ACTIVE"),
        "{}",
        r.text
    );
    assert!(d.terminate().success());
    let d = Daemon::start(&data, &settings);
    assert_eq!(d.get(&format!("{MIGRATIONS}/{id}")).body["active"], true);
    assert_eq!(semantic(&d, "bouldering"), vec![climbing.clone()]);
    // Back: the store's own vectors, and no model for query texts.
    let r = d.post(&format!("{MIGRATIONS}/{id}/deactivate"), &json!({}));
    assert_eq!(
        (r.status, &r.body["active"]),
        (200, &json!(false)),
        "{}",
        r.text
    );
    let r = d.post(
        "/api/v1/search",
        &json!({"query_text": "bouldering", "search_type": "semantic"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let r = d.post(
        "/api/v1/search",
        &json!({"query_embedding": embedding(2, 4), "search_type": "semantic", "limit": 1}),
    );
    assert_eq!(ids_of(&r.body), vec![bread.clone()], "{}", r.text);

    // Dropped: gone, with its files.
    let r = d.delete(&format!("{MIGRATIONS}/{id}"));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(d.get(&format!("{MIGRATIONS}/{id}")).status, 404);
    assert_eq!(d.get(MIGRATIONS).body["migrations"], json!([]));
    assert!(!dir.path().join("data/spaces").join(id.to_string()).exists());
    assert_eq!(d.get(&format!("{MIGRATIONS}/x")).status, 400);
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Creates memories with 8-d client vectors until `stop` or the daemon is gone; keeps the
/// acknowledged ones.
fn write_until_killed(url: &str, stop: &AtomicBool, written: &Mutex<Vec<(String, String)>>) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let content = format!("concurrent write {i}");
        let body = json!({"content": content, "embedding": embedding(50_000 + i, 8)});
        match agent
            .post(&format!("{url}/api/v1/memories"))
            .send_json(body)
        {
            Ok(r) => {
                let v: Value = r.into_json().expect("json");
                let id = v["id"].as_str().expect("id").to_owned();
                written.lock().expect("writes").push((id, content));
            }
            Err(ureq::Error::Status(code, r)) => {
                panic!("create {i}: {code} {}", r.into_string().unwrap_or_default())
            }
            Err(_) => return,
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Searches the migration's space and the store's own until `stop` or the daemon is gone,
/// checking each hit's similarity against its vector in the space the search ranks.
fn search_until_killed(url: &str, id: u64, stop: &AtomicBool, checked: &AtomicUsize) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let mut j = 0u64;
    while !stop.load(Ordering::Relaxed) {
        j += 1;
        let space = j.is_multiple_of(2);
        let (path, query, body) = if space {
            let q = stub_vector(&format!("probe {j}"));
            let body = json!({"query_embedding": q, "limit": 5});
            (format!("{url}{MIGRATIONS}/{id}/search"), q, body)
        } else {
            let q = embedding(90_000 + j, 8);
            let body = json!({"query_embedding": q, "search_type": "semantic", "limit": 5, "include_embedding": true});
            (format!("{url}/api/v1/search"), q, body)
        };
        let v: Value = match agent.post(&path).send_json(body) {
            Ok(r) => r.into_json().expect("json"),
            Err(ureq::Error::Status(code, r)) => {
                panic!("search {j}: {code} {}", r.into_string().unwrap_or_default())
            }
            Err(_) => return,
        };
        for hit in v["results"].as_array().expect("results") {
            let memory = &hit["memory"];
            let (claimed, held) = if space {
                let content = memory["content"].as_str().expect("content");
                (hit["similarity"].as_f64(), stub_vector(content))
            } else {
                let own: Vec<f32> = serde_json::from_value(memory["embedding"].clone())
                    .expect("the hit's own vector");
                (hit["distance"].as_f64().map(|d| 1.0 - d), own)
            };
            let claimed = claimed.expect("a similarity");
            let exact = f64::from(cosine(&query, &held));
            assert!(
                (claimed - exact).abs() < 1e-3,
                "search {j} (space: {space}) ranks {} at {claimed}, its vector there gives {exact}",
                memory["id"]
            );
        }
        checked.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_migration_killed_midway_resumes_and_its_graph_recalls_like_brute_force() {
    // An OpenAI-compatible provider (a stub speaking its wire format), a little slow, so the
    // kill lands midway.
    let url = openai_stub(Duration::from_millis(40));
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // 64 memories per provider call: about 80 calls of 40 ms for the whole store.
    // search.exact_candidates_max 0: every space search walks the space's graph (by default a
    // namespace this size is scored from the space's i8 codes).
    let settings = [
        ("embedding.dimensions", "8"),
        ("embedding.batch_size", "64"),
        ("search.exact_candidates_max", "0"),
    ];
    let mut d = Daemon::start(&data, &settings);
    let n = 5000;
    let mut contents = Vec::with_capacity(n);
    for chunk in 0..5 {
        let items: Vec<Value> = (0..1000)
            .map(|i| {
                let k = chunk * 1000 + i;
                json!({"content": format!("memory {k}: note {}", k * 7919 % 10007), "embedding": embedding(k as u64, 8)})
            })
            .collect();
        let r = d.post("/api/v1/memories/batch", &json!({"memories": items}));
        assert_eq!(r.status, 200, "{}", r.text);
        for (item, res) in r.body["results"]
            .as_array()
            .expect("results")
            .iter()
            .enumerate()
        {
            let k = chunk * 1000 + item;
            contents.push((
                res["id"].as_str().expect("id").to_owned(),
                format!("memory {k}: note {}", k * 7919 % 10007),
            ));
        }
    }
    let r = d.post(
        MIGRATIONS,
        &json!({"provider": "openai", "model": "stub-24", "dimensions": 24, "url": url}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_u64().expect("id");
    // Writes and searches go on while it runs, up to the kill: every search ranks one space,
    // with that space's vectors (a hit's similarity is the cosine of the query with the
    // memory's vector in the space searched).
    let daemon_url = d.url.clone();
    let stop = AtomicBool::new(false);
    let written: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let checked = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| write_until_killed(&daemon_url, &stop, &written));
        s.spawn(|| search_until_killed(&daemon_url, id, &stop, &checked));
        let m = wait_until(&d, id, Duration::from_secs(120), |m| {
            m["vectors"].as_u64().unwrap_or(0) >= 1000
        });
        assert!(m["vectors"].as_u64() < Some(n as u64), "killed midway: {m}");
        d.kill9();
        stop.store(true, Ordering::Relaxed);
    });
    let written = written.into_inner().expect("writes");
    assert!(written.len() >= 10, "writes went on: {}", written.len());
    assert!(checked.load(Ordering::Relaxed) >= 20, "searches went on");

    let mut d = Daemon::start(&data, &settings);
    let m = d.get(&format!("{MIGRATIONS}/{id}")).body;
    assert_eq!(m["state"], "running", "resumed at start: {m}");
    // Every acknowledged write survived the kill.
    for (mid, content) in &written {
        let r = d.get(&format!("/api/v1/memories/{mid}"));
        assert_eq!((r.status, &r.body["content"]), (200, &json!(content)));
    }
    contents.extend(written.iter().cloned());
    // A create in flight at the kill may have been logged without its answer arriving: it is
    // in the store too (at most one: the writer waits for each answer).
    let known: HashSet<String> = contents.iter().map(|(mid, _)| mid.clone()).collect();
    let unanswered: Vec<(String, String)> = d
        .list_all("")
        .iter()
        .map(|m| {
            let mid = m["id"].as_str().expect("id").to_owned();
            (mid, m["content"].as_str().expect("content").to_owned())
        })
        .filter(|(mid, _)| !known.contains(mid))
        .collect();
    assert!(unanswered.len() <= 1, "{unanswered:?}");
    contents.extend(unanswered);
    let n = contents.len();
    // Changes made while it catches up.
    let changed: Vec<(String, String)> = contents[..20]
        .iter()
        .map(|(mid, _)| (mid.clone(), format!("rewritten {mid}")))
        .collect();
    for (mid, text) in &changed {
        let r = d.patch(
            &format!("/api/v1/memories/{mid}"),
            &json!({"content": text}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let m = wait_until(&d, id, Duration::from_secs(180), ready);
    assert_eq!(m["vectors"], n as u64, "{m}");
    for (mid, text) in &changed {
        let r = d.post(
            &format!("{MIGRATIONS}/{id}/search"),
            &json!({"query_embedding": stub_vector(text), "limit": 1}),
        );
        assert_eq!(ids_of(&r.body), vec![mid.clone()], "{}", r.text);
        let sim = r.body["results"][0]["similarity"]
            .as_f64()
            .expect("similarity");
        assert!(sim > 0.9999, "{sim}");
    }

    // Recall@10 of the space's graph against brute force over the provider's vectors.
    let current: Vec<(String, Vec<f32>)> = contents
        .iter()
        .map(|(mid, text)| {
            let text = changed
                .iter()
                .find(|(c, _)| c == mid)
                .map_or(text.as_str(), |(_, t)| t.as_str());
            (mid.clone(), stub_vector(text))
        })
        .collect();
    let mut found = 0;
    let queries = 30;
    for q in 0..queries {
        let query = stub_vector(&format!("query number {q}"));
        let mut exact: Vec<(f32, &String)> = current
            .iter()
            .map(|(mid, v)| (cosine(&query, v), mid))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let truth: HashSet<&String> = exact.iter().take(10).map(|(_, m)| *m).collect();
        let r = d.post(
            &format!("{MIGRATIONS}/{id}/search"),
            &json!({"query_embedding": query, "limit": 10}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        found += ids_of(&r.body).iter().filter(|m| truth.contains(m)).count();
    }
    let recall = found as f64 / (queries * 10) as f64;
    assert!(recall >= 0.95, "recall@10 {recall}");

    // After the cut-over a client's vector is the active space's: 24 dimensions, stored with
    // the write in the same commit (so it survives kill -9 right after the acknowledgement),
    // and never replaced by the provider's vector of the same content.
    let r = d.post(&format!("{MIGRATIONS}/{id}/activate"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    let r = d.post(
        "/api/v1/memories",
        &json!({"content": "an old-model vector", "embedding": embedding(1, 8)}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.body["error"]["details"]["field"], "embedding",
        "{}",
        r.text
    );
    let mine = embedding(4242, 24);
    let r = d.post(
        "/api/v1/memories",
        &json!({"content": "a note the client embedded itself", "embedding": mine}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let own = r.body["id"].as_str().expect("id").to_owned();
    let r = d.post(
        "/api/v1/memories/batch",
        &json!({"memories": [
            {"content": "batched with a new-model vector", "embedding": embedding(4243, 24)},
            {"content": "batched with an old-model vector", "embedding": embedding(4244, 8)},
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let batched = r.body["results"][0]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        r.body["results"][1]["error"]["details"]["field"], "memories[1].embedding",
        "{}",
        r.text
    );
    let (patched, _) = &contents[30];
    let r = d.patch(
        &format!("/api/v1/memories/{patched}"),
        &json!({"embedding": embedding(4245, 24)}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    d.kill9();
    let d = Daemon::start(&data, &settings);
    let top = |d: &Daemon, v: &[f32]| {
        let r = d.post(
            "/api/v1/search",
            &json!({"query_embedding": v, "search_type": "semantic", "limit": 1}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        ids_of(&r.body)
    };
    let expect = [
        (&own, embedding(4242, 24)),
        (&batched, embedding(4243, 24)),
        (patched, embedding(4245, 24)),
    ];
    for (mid, v) in &expect {
        assert_eq!(top(&d, v), vec![(*mid).clone()], "after kill -9");
    }
    // Once the worker has caught up with every change, the client's vectors are still there.
    wait_until(&d, id, Duration::from_secs(60), ready);
    for (mid, v) in &expect {
        assert_eq!(
            top(&d, v),
            vec![(*mid).clone()],
            "after the worker caught up"
        );
        let r = d.post(
            &format!("{MIGRATIONS}/{id}/search"),
            &json!({"query_embedding": v, "limit": 1}),
        );
        let sim = r.body["results"][0]["similarity"]
            .as_f64()
            .expect("similarity");
        assert!(sim > 0.9999, "{mid}: {sim} {}", r.text);
    }
}
