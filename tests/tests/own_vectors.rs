//! The last step of an embedding-model change: after the cut-over to a migration's space, the
//! store's own (old-model) vectors are dropped. A store of 8-dimensional client vectors moves
//! to a 24-dimensional space (a local stub speaking an OpenAI-compatible provider's wire
//! format); the drop is killed -9 mid-sweep and finishes after the restart. From then on every
//! read, list, search, as-of search and export shows the space's vectors, writes keep none of
//! the old model, an export → purge → import round trip keeps the new vectors, and the
//! migration cannot be switched off.

use std::time::{Duration, Instant};

use engram_tests::{embedding, openai_stub, rfc3339_in, stub_vector, Daemon};
use serde_json::{json, Value};

const MIGRATIONS: &str = "/api/v1/admin/embedding/migrations";
const OWN: &str = "/api/v1/admin/embedding/own-vectors";

fn close(a: &Value, b: &[f32]) -> bool {
    a.as_array().is_some_and(|a| {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x.as_f64().unwrap_or(f64::NAN) as f32 - y).abs() < 1e-6)
    })
}

fn wait_for(d: &Daemon, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = d.get(path);
        assert_eq!(r.status, 200, "{}", r.text);
        if done(&r.body) {
            return r.body;
        }
        assert!(Instant::now() < deadline, "{what}: {}", r.text);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn top(d: &Daemon, body: Value) -> Vec<String> {
    let r = d.post("/api/v1/search", &body);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["memory"]["content"].as_str().expect("content").to_owned())
        .collect()
}

#[test]
fn the_own_vectors_dropped_after_a_cut_over_leave_every_read_to_the_new_space() {
    let url = openai_stub(Duration::ZERO);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let settings = [
        ("embedding.dimensions", "8"),
        ("embedding.batch_size", "64"),
    ];
    let mut d = Daemon::start(&data, &settings);
    let n = 4000;
    let content = |k: usize| format!("fact {k}: item {}", k * 7919 % 10007);
    let mut ids = Vec::with_capacity(n);
    for chunk in 0..n / 1000 {
        let items: Vec<Value> = (0..1000)
            .map(|i| {
                let k = chunk * 1000 + i;
                json!({"content": content(k), "namespace": "ns", "embedding": embedding(k as u64, 8)})
            })
            .collect();
        let r = d.post("/api/v1/memories/batch", &json!({"memories": items}));
        assert_eq!(r.status, 200, "{}", r.text);
        for res in r.body["results"].as_array().expect("results") {
            ids.push(res["id"].as_str().expect("id").to_owned());
        }
    }
    // One memory in each tier below working, and one with a past.
    for (k, tier) in [(1, "warm"), (2, "cold")] {
        let r = d.patch(
            &format!("/api/v1/memories/{}", ids[k]),
            &json!({"tier": tier}),
        );
        assert_eq!(
            (r.status, &r.body["tier"]),
            (200, &json!(tier)),
            "{}",
            r.text
        );
    }
    std::thread::sleep(Duration::from_millis(20));
    let before_update = rfc3339_in(0);
    std::thread::sleep(Duration::from_millis(20));
    let r = d.patch(
        &format!("/api/v1/memories/{}", ids[3]),
        &json!({"content": "fact 3, corrected", "embedding": embedding(99_999, 8)}),
    );
    assert_eq!(r.status, 200, "{}", r.text);

    let r = d.delete(OWN);
    assert_eq!(
        (r.status, r.code()),
        (409, "MIGRATION_NOT_ACTIVE"),
        "{}",
        r.text
    );
    let r = d.post(
        MIGRATIONS,
        &json!({"provider": "openai", "model": "stub-24", "dimensions": 24, "url": url}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_u64().expect("id");
    wait_for(&d, &format!("{MIGRATIONS}/{id}"), "migration ready", |m| {
        m["state"] == "ready"
    });
    let r = d.post(&format!("{MIGRATIONS}/{id}/activate"), &json!({}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(d.get(OWN).body["dropped"], false);

    // The drop is one durable record; kill -9 right after it, before the sweep is done.
    let r = d.delete(OWN);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (&r.body["dropped"], &r.body["migration"], &r.body["model"]),
        (&json!(true), &json!(id), &json!("stub-24")),
        "{}",
        r.text
    );
    d.kill9();
    let mut d = Daemon::start(&data, &settings);
    let own = wait_for(&d, OWN, "sweep done", |o| o["swept"] == true);
    assert_eq!(own["dropped"], true, "{own}");
    // The sweep had not finished at the kill: this process did (at least part of) it.
    assert!(own["stripped"].as_u64() > Some(0), "{own}");
    assert_eq!(own["segments"], 1, "the cold segment, rewritten: {own}");
    let health = d.get("/api/v1/health").body;
    assert_eq!(
        (
            &health["embedding"]["provider"],
            &health["embedding"]["model"]
        ),
        (&json!("openai"), &json!("stub-24")),
        "{health}"
    );
    let metrics = d.get("/metrics").text;
    assert!(
        metrics.contains("engram_vector_index_vectors{state=\"graph\"} 0"),
        "the own graph is empty"
    );

    // Reads show the space's vectors, in every tier.
    for k in [0usize, 1, 2, 3, 1234] {
        let r = d.get(&format!(
            "/api/v1/memories/{}?include_embedding=true",
            ids[k]
        ));
        assert_eq!(r.status, 200, "{}", r.text);
        let text = r.body["content"].as_str().expect("content");
        assert!(
            close(&r.body["embedding"], &stub_vector(text)),
            "{k}: {}",
            r.text
        );
        assert_eq!(
            (
                &r.body["embedding_model"],
                &r.body["embedding_status"],
                &r.body["has_embedding"]
            ),
            (&json!("stub-24"), &json!("ready"), &json!(true)),
            "{}",
            r.text
        );
    }
    let semantic = |v: Vec<f32>, extra: Value| {
        let mut body = json!({"query_embedding": v, "search_type": "semantic", "namespace": "ns", "limit": 1, "tiers": ["working", "warm", "cold"]});
        for (k, x) in extra.as_object().expect("object") {
            body[k] = x.clone();
        }
        top(&d, body)
    };
    assert_eq!(
        semantic(stub_vector(&content(2)), json!({})),
        vec![content(2)]
    );
    assert_eq!(
        semantic(stub_vector("fact 3, corrected"), json!({})),
        vec!["fact 3, corrected".to_owned()]
    );
    // As of before the update: ranked by the space too; memory 3's old text has no vector
    // there, so a query of it finds something else, and an old-model query is refused.
    assert_eq!(
        semantic(stub_vector(&content(17)), json!({"as_of": before_update})),
        vec![content(17)]
    );
    let past = semantic(stub_vector(&content(3)), json!({"as_of": before_update}));
    assert_ne!(
        past,
        vec![content(3)],
        "the old content has no new-model vector"
    );
    let r = d.post(
        "/api/v1/search",
        &json!({"query_embedding": embedding(5, 8), "search_type": "semantic", "as_of": before_update}),
    );
    assert_eq!(r.status, 400, "{}", r.text);

    // Writes: a vector is the space's; none keeps an old-model vector.
    let r = d.post(
        "/api/v1/memories",
        &json!({"content": "old model", "namespace": "ns", "embedding": embedding(1, 8)}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let mine = embedding(4242, 24);
    let r = d.post(
        "/api/v1/memories?include_embedding=true",
        &json!({"content": "sent with a new-model vector", "namespace": "ns", "embedding": mine}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(close(&r.body["embedding"], &mine), "{}", r.text);
    let r = d.post(
        "/api/v1/memories?wait_for_embedding=true",
        &json!({"content": "left to the worker", "namespace": "ns"}),
    );
    assert_eq!(
        (r.status, &r.body["embedding_status"]),
        (201, &json!("ready")),
        "{}",
        r.text
    );
    assert_eq!(
        semantic(stub_vector("left to the worker"), json!({})),
        vec!["left to the worker".to_owned()]
    );

    // No way back, and no other space in its place.
    let r = d.post(&format!("{MIGRATIONS}/{id}/deactivate"), &json!({}));
    assert_eq!(
        (r.status, r.code()),
        (409, "OWN_VECTORS_DROPPED"),
        "{}",
        r.text
    );
    let r = d.delete(&format!("{MIGRATIONS}/{id}"));
    assert_eq!(r.status, 409, "{}", r.text);

    // Export → purge → import keeps the new vectors.
    let (status, export, _) = d.request_bytes("GET", "/api/v1/namespaces/ns/export", None, &[]);
    assert_eq!(status, 200);
    let text = String::from_utf8(export.clone()).expect("UTF-8");
    let header: Value = serde_json::from_str(text.lines().next().expect("header")).expect("JSON");
    assert_eq!(header["dimensions"], 24, "{header}");
    let r = d.delete("/api/v1/namespaces/ns?purge=true");
    assert_eq!(r.status, 200, "{}", r.text);
    let (status, reply, _) = d.request_bytes(
        "POST",
        "/api/v1/namespaces/ns/import",
        Some(&export),
        &[("content-type", "application/x-ndjson")],
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let reply: Value = serde_json::from_slice(&reply).expect("JSON");
    assert_eq!(reply["imported"], n + 2, "{reply}");
    let r = d.get(&format!(
        "/api/v1/memories/{}?include_embedding=true",
        ids[7]
    ));
    assert!(
        close(&r.body["embedding"], &stub_vector(&content(7))),
        "{}",
        r.text
    );
    assert_eq!(
        semantic(stub_vector(&content(7)), json!({})),
        vec![content(7)]
    );
    let r = d.get(&format!("/api/v1/memories/{}", ids[3]));
    assert_eq!(r.body["version"], 2, "the past came back too: {}", r.text);

    // And all of it across a clean restart.
    assert!(d.terminate().success());
    let mut d = Daemon::start(&data, &settings);
    assert_eq!(d.get(OWN).body["swept"], true);
    let r = d.post(
        "/api/v1/search",
        &json!({"query_embedding": mine, "search_type": "semantic", "namespace": "ns", "limit": 1}),
    );
    assert_eq!(
        r.body["results"][0]["memory"]["content"], "sent with a new-model vector",
        "{}",
        r.text
    );

    // The offline export of the stopped store carries the space's vectors too.
    assert!(d.terminate().success());
    let file = dir.path().join("offline.jsonl");
    let out = engram_tests::ctl(&[
        "export",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--out",
        file.to_str().expect("utf8"),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("read");
    let header: Value = serde_json::from_str(text.lines().next().expect("header")).expect("JSON");
    assert_eq!(header["dimensions"], 24, "{header}");
    let line: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
        .find(|m| m["id"] == json!(ids[7]))
        .expect("memory 7 exported");
    assert!(
        close(&line["embedding"], &stub_vector(&content(7))),
        "{line}"
    );
}
