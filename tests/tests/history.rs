//! Memories with a past, against a real `engramd`: every update keeps the version it replaces
//! (readable by number and by moment, across tier moves, restarts and kill -9), history pages,
//! revert, supersede, and the retention bounds.

use std::collections::BTreeMap;
use std::path::Path;

use engram_tests::{embedding, parse_rfc3339, rfc3339, Daemon};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const DIMS: usize = 8;

fn start(data: &Path, extra: &[(&str, &str)]) -> Daemon {
    let mut settings = vec![
        ("embedding.dimensions", "8"),
        // The policy must not move memories behind the test's back.
        ("tier_migration.enabled", "false"),
    ];
    settings.extend_from_slice(extra);
    Daemon::start(data, &settings)
}

/// What a version must read back as.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    version: u64,
    content: String,
    tags: Value,
    importance: Value,
    metadata: Value,
    status: String,
    actor: Value,
    /// When it was written (its `updated_at`), µs.
    from_us: i64,
}

fn observed(m: &Value) -> Expected {
    Expected {
        version: m["version"].as_u64().expect("version"),
        content: m["content"].as_str().expect("content").to_owned(),
        tags: m["tags"].clone(),
        importance: m["importance_score"].clone(),
        metadata: m["metadata"].clone(),
        status: m["status"].as_str().expect("status").to_owned(),
        actor: m["actor"].clone(),
        from_us: parse_rfc3339(m["updated_at"].as_str().expect("updated_at")),
    }
}

fn id_of(r: &Value) -> String {
    r["id"].as_str().expect("id").to_owned()
}

/// Checks every version by number, random moments by `as_of`, and the paged history against
/// the oracle (oldest first).
fn check_past(d: &Daemon, id: &str, oracle: &[Expected], rng: &mut rand::rngs::StdRng) {
    for e in oracle {
        let r = d.get(&format!("/api/v1/memories/{id}?version={}", e.version));
        assert_eq!(r.status, 200, "version {}: {}", e.version, r.text);
        assert_eq!(observed(&r.body), *e, "version {}", e.version);
    }
    let first = oracle[0].from_us;
    let last = oracle.last().expect("versions").from_us;
    let mut moments: Vec<i64> = (0..40)
        .map(|_| rng.random_range(first..last + 5_000))
        .collect();
    moments.extend(oracle.iter().map(|e| e.from_us));
    moments.extend(oracle.iter().map(|e| e.from_us - 1));
    for t in moments {
        let r = d.get(&format!("/api/v1/memories/{id}?as_of={}", rfc3339(t)));
        match oracle.iter().rev().find(|e| e.from_us <= t) {
            Some(e) => {
                assert_eq!(r.status, 200, "as of {t}: {}", r.text);
                assert_eq!(observed(&r.body), *e, "as of {t}");
            }
            None => {
                assert_eq!(r.status, 404, "as of {t}: {}", r.text);
                assert_eq!(r.code(), "VERSION_NOT_FOUND");
            }
        }
    }
    // The history, three at a time, newest first.
    let mut listed = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = d.get(&format!("/api/v1/memories/{id}/history?limit=3{cursor}"));
        assert_eq!(r.status, 200, "{}", r.text);
        for v in r.body["versions"].as_array().expect("versions") {
            assert_eq!(v["version"], v["memory"]["version"]);
            assert_eq!(v["valid_from"], v["memory"]["updated_at"]);
            listed.push(v.clone());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    let got: Vec<Expected> = listed
        .iter()
        .rev()
        .map(|v| observed(&v["memory"]))
        .collect();
    assert_eq!(got, oracle);
    // Each version is valid until the next one was written; the current one has no end.
    for (v, next) in listed.iter().rev().zip(listed.iter().rev().skip(1)) {
        assert_eq!(v["valid_to"], next["valid_from"]);
    }
    assert_eq!(listed[0]["valid_to"], Value::Null);
    assert_eq!(listed.last().expect("v1")["changed"], Value::Null);
}

#[test]
fn every_version_reads_back_by_number_and_moment_across_tier_moves_restart_and_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut d = start(&data, &[]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let r = d.request(
        "POST",
        "/api/v1/memories",
        Some(
            &json!({"content": "Caroline lives in Boston", "embedding": embedding(1, DIMS),
                    "tags": ["home"], "metadata": {"source": "chat"}})
            .to_string(),
        ),
        &[("X-Engram-Actor", "agent-7")],
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["actor"], "agent-7");
    let id = id_of(&r.body);
    let mut oracle = vec![observed(&r.body)];
    // Updates of every versioned field, with tier moves (which make no version) between.
    let tiers = ["warm", "cold", "working", "cold", "warm"];
    for step in 0..14u64 {
        if step % 3 == 2 {
            let tier = tiers[(step / 3) as usize % tiers.len()];
            let r = d.patch(&format!("/api/v1/memories/{id}"), &json!({"tier": tier}));
            assert_eq!(r.status, 200, "move to {tier}: {}", r.text);
            assert_eq!(r.body["tier"], tier);
            assert_eq!(
                r.body["version"],
                oracle.last().expect("v").version,
                "a move is no version"
            );
            continue;
        }
        let mut patch = serde_json::Map::new();
        match rng.random_range(0..5) {
            0 => {
                patch.insert(
                    "content".into(),
                    json!(format!("Caroline moved, step {step}")),
                );
                patch.insert("embedding".into(), json!(embedding(100 + step, DIMS)));
            }
            1 => {
                patch.insert("tags".into(), json!([format!("t{step}")]));
            }
            2 => {
                patch.insert(
                    "importance_score".into(),
                    json!(rng.random_range(0..100) as f64 / 100.0),
                );
            }
            3 => {
                patch.insert("metadata".into(), json!({"step": step}));
            }
            _ => {
                let status = if oracle.last().expect("v").status == "archived" {
                    "active"
                } else {
                    "archived"
                };
                patch.insert("status".into(), json!(status));
            }
        }
        if step % 2 == 0 {
            patch.insert("actor".into(), json!(format!("editor-{step}")));
        }
        let r = d.patch(&format!("/api/v1/memories/{id}"), &Value::Object(patch));
        assert_eq!(r.status, 200, "{}", r.text);
        let e = observed(&r.body);
        assert_eq!(e.version, oracle.last().expect("v").version + 1);
        oracle.push(e);
    }
    // A soft delete is a version too, and a restore another.
    let r = d.request(
        "DELETE",
        &format!("/api/v1/memories/{id}"),
        None,
        &[("X-Engram-Actor", "janitor")],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = d.get(&format!("/api/v1/memories/{id}"));
    assert_eq!(
        (r.body["status"].as_str(), r.body["actor"].as_str()),
        (Some("deleted"), Some("janitor"))
    );
    oracle.push(observed(&r.body));
    let r = d.patch(
        &format!("/api/v1/memories/{id}"),
        &json!({"status": "active"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    oracle.push(observed(&r.body));
    check_past(&d, &id, &oracle, &mut rng);

    // What each version changed.
    let r = d.get(&format!("/api/v1/memories/{id}/history?limit=100"));
    let versions = r.body["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), oracle.len());
    assert_eq!(versions[0]["changed"], json!(["status"]), "the restore");
    assert_eq!(versions[1]["changed"], json!(["status"]), "the delete");

    // A clean restart, then kill -9 after more versions: all of them survive.
    d.terminate();
    let mut d = start(&data, &[]);
    check_past(&d, &id, &oracle, &mut rng);
    for step in 0..3 {
        let r = d.patch(
            &format!("/api/v1/memories/{id}"),
            &json!({"tags": [format!("after-{step}")]}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        oracle.push(observed(&r.body));
    }
    d.kill9();
    let d = start(&data, &[]);
    check_past(&d, &id, &oracle, &mut rng);

    // Versions that never were.
    let r = d.get(&format!("/api/v1/memories/{id}?version=999"));
    assert_eq!(
        (r.status, r.code()),
        (404, "VERSION_NOT_FOUND"),
        "{}",
        r.text
    );
    let r = d.get(&format!("/api/v1/memories/{id}?version=0"));
    assert_eq!(r.status, 400, "{}", r.text);
    let r = d.get(&format!(
        "/api/v1/memories/{id}?version=2&as_of={}",
        rfc3339(oracle[0].from_us)
    ));
    assert_eq!(r.status, 400, "{}", r.text);
    let r = d.get(&format!("/api/v1/memories/{id}?as_of=yesterday"));
    assert_eq!(
        (r.status, r.body["error"]["details"]["field"].as_str()),
        (400, Some("as_of")),
        "{}",
        r.text
    );
    let r = d.get(&format!("/api/v1/memories/{id}/history?cursor=nope"));
    assert_eq!(r.status, 400, "{}", r.text);
    // Past versions never match a search: only the current text is found.
    let r = d.post(
        "/api/v1/search/text",
        &json!({"query_text": "Boston", "include_superseded": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let current = oracle.last().expect("v").content.contains("Boston");
    assert_eq!(
        r.body["results"].as_array().expect("results").len(),
        usize::from(current),
        "{}",
        r.text
    );
}

#[test]
fn revert_makes_a_new_version_equal_to_an_old_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir.path().join("data"), &[]);
    let e1 = embedding(1, DIMS);
    let r = d.post(
        "/api/v1/memories",
        &json!({"content": "Melanie paints lakes", "embedding": e1, "tags": ["art"], "importance_score": 0.25}),
    );
    let id = id_of(&r.body);
    let r = d.patch(
        &format!("/api/v1/memories/{id}"),
        &json!({"content": "Melanie paints mountains", "embedding": embedding(2, DIMS)}),
    );
    assert_eq!(r.body["version"], 2);
    let r = d.patch(
        &format!("/api/v1/memories/{id}"),
        &json!({"tags": ["art", "outdoors"], "importance_score": 0.9}),
    );
    assert_eq!(r.body["version"], 3);

    let r = d.request(
        "POST",
        &format!("/api/v1/memories/{id}/revert?include_embedding=true"),
        Some(&json!({"version": 1}).to_string()),
        &[("X-Engram-Actor", "reviewer")],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 4);
    assert_eq!(r.body["content"], "Melanie paints lakes");
    assert_eq!(r.body["tags"], json!(["art"]));
    assert_eq!(r.body["importance_score"], 0.25);
    assert_eq!(r.body["actor"], "reviewer");
    let v: Vec<f32> = serde_json::from_value(r.body["embedding"].clone()).expect("embedding");
    assert_eq!(v, e1, "version 1's vector comes back with its text");
    // History is not rewritten: version 2 still reads as it was.
    let r = d.get(&format!("/api/v1/memories/{id}?version=2"));
    assert_eq!(r.body["content"], "Melanie paints mountains");
    let r = d.get(&format!("/api/v1/memories/{id}/history"));
    let numbers: Vec<u64> = r.body["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_u64().expect("n"))
        .collect();
    assert_eq!(numbers, [4, 3, 2, 1]);
    // The text search finds the reverted words, not the replaced ones.
    let r = d.post("/api/v1/search/text", &json!({"query_text": "mountains"}));
    assert_eq!(
        r.body["results"].as_array().expect("results").len(),
        0,
        "{}",
        r.text
    );

    // Bad reverts: 4xx naming what is wrong, nothing written.
    for (body, status, code) in [
        (json!({"version": 9}), 404, "VERSION_NOT_FOUND"),
        (json!({"version": 0}), 400, "INVALID_REQUEST"),
        (json!({"version": "one"}), 400, "INVALID_REQUEST"),
        (json!({}), 400, "INVALID_REQUEST"),
        (json!({"version": 1, "actor": ""}), 400, "INVALID_REQUEST"),
    ] {
        let r = d.post(&format!("/api/v1/memories/{id}/revert"), &body);
        assert_eq!((r.status, r.code()), (status, code), "{body}: {}", r.text);
    }
    let r = d.post(
        "/api/v1/memories/0190f0f0-0000-7000-8000-000000000000/revert",
        &json!({"version": 1}),
    );
    assert_eq!((r.status, r.code()), (404, "MEMORY_NOT_FOUND"));
    assert_eq!(d.get(&format!("/api/v1/memories/{id}")).body["version"], 4);
}

#[test]
fn a_superseded_memory_leaves_search_lists_and_recall_unless_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut d = start(&data, &[]);
    let old = d.post(
        "/api/v1/memories",
        &json!({"namespace": "n", "content": "Caroline's favourite colour is blue", "embedding": embedding(5, DIMS)}),
    );
    let old_id = id_of(&old.body);
    let other = d.post(
        "/api/v1/memories",
        &json!({"namespace": "n", "content": "Caroline's favourite food is ramen", "embedding": embedding(6, DIMS)}),
    );
    let other_id = id_of(&other.body);
    // Bad supersedes store nothing.
    let elsewhere = id_of(
        &d.post(
            "/api/v1/memories",
            &json!({"namespace": "m", "content": "x"}),
        )
        .body,
    );
    for (ids, why) in [
        (json!(["not-a-uuid"]), "a UUID"),
        (json!(["0190f0f0-0000-7000-8000-000000000000"]), "no memory"),
        (json!([elsewhere]), "namespace"),
    ] {
        let r = d.post(
            "/api/v1/memories",
            &json!({"namespace": "n", "content": "Caroline's favourite colour is green", "supersedes": ids}),
        );
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["error"]["details"]["field"], "supersedes");
        assert!(r.text.contains(why), "{why}: {}", r.text);
    }
    let new = d.post(
        "/api/v1/memories",
        &json!({"namespace": "n", "content": "Caroline's favourite colour is green",
                "embedding": embedding(7, DIMS), "supersedes": [old_id, old_id], "actor": "agent-7"}),
    );
    assert_eq!(new.status, 201, "{}", new.text);
    let new_id = id_of(&new.body);
    let r = d.get(&format!("/api/v1/memories/{old_id}"));
    assert_eq!(r.body["status"], "superseded");
    assert_eq!(r.body["superseded_by"], new_id.as_str());
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["actor"], "agent-7");

    let check = |d: &Daemon| {
        let ids = |r: &engram_tests::Reply, key: &str| -> Vec<String> {
            let mut v: Vec<String> = r.body[key]
                .as_array()
                .unwrap_or_else(|| panic!("{}", r.text))
                .iter()
                .map(|m| {
                    let m = if m.get("memory").is_some() {
                        &m["memory"]
                    } else {
                        m
                    };
                    id_of(m)
                })
                .collect();
            v.sort();
            v
        };
        let mut current = vec![new_id.clone(), other_id.clone()];
        current.sort();
        let mut all = vec![new_id.clone(), other_id.clone(), old_id.clone()];
        all.sort();
        let listed = d.get("/api/v1/memories?namespace=n");
        assert_eq!(ids(&listed, "memories"), current);
        let listed = d.get("/api/v1/memories?namespace=n&include_superseded=true");
        assert_eq!(ids(&listed, "memories"), all);
        for mode in ["hybrid", "semantic", "text"] {
            let q = json!({"namespace": "n", "query_text": "Caroline favourite colour",
                           "query_embedding": embedding(5, DIMS), "search_type": mode, "limit": 10});
            let r = d.post("/api/v1/search", &q);
            assert_eq!(ids(&r, "results"), current, "{mode}");
            let mut q = q;
            q["include_superseded"] = json!(true);
            let r = d.post("/api/v1/search", &q);
            assert_eq!(ids(&r, "results"), all, "{mode} with superseded");
        }
    };
    check(&d);
    // In every tier, and after a restart (the warm tier keeps the flag with the search rows).
    let r = d.patch(
        &format!("/api/v1/memories/{old_id}"),
        &json!({"tier": "warm"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    engram_tests::wait_for_vector_index(&d);
    check(&d);
    d.terminate();
    let d = start(&data, &[]);
    engram_tests::wait_for_vector_index(&d);
    check(&d);
    // Restoring it makes it current again.
    let r = d.patch(
        &format!("/api/v1/memories/{old_id}"),
        &json!({"status": "active"}),
    );
    assert_eq!(
        (r.body["status"].as_str(), &r.body["superseded_by"]),
        (Some("active"), &Value::Null)
    );
    // A client cannot set the status by hand.
    let r = d.patch(
        &format!("/api/v1/memories/{other_id}"),
        &json!({"status": "superseded"}),
    );
    assert_eq!(
        (r.status, r.body["error"]["details"]["field"].as_str()),
        (400, Some("status")),
        "{}",
        r.text
    );
}

#[test]
fn retention_keeps_the_newest_versions_and_a_purge_removes_them_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut d = start(
        &data,
        &[("history.keep_versions", "3"), ("history.keep_for", "2s")],
    );
    let id = id_of(&d.post("/api/v1/memories", &json!({"content": "v1"})).body);
    for v in 2..=7 {
        let r = d.patch(
            &format!("/api/v1/memories/{id}"),
            &json!({"content": format!("v{v}")}),
        );
        assert_eq!(r.body["version"], v);
    }
    let versions = |d: &Daemon| -> Vec<u64> {
        let r = d.get(&format!("/api/v1/memories/{id}/history?limit=100"));
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["next_cursor"], Value::Null);
        r.body["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .map(|v| v["version"].as_u64().expect("n"))
            .collect()
    };
    assert_eq!(
        versions(&d),
        [7, 6, 5, 4],
        "the current version and 3 replaced ones"
    );
    let r = d.get(&format!("/api/v1/memories/{id}?version=3"));
    assert_eq!(
        (r.status, r.code()),
        (404, "VERSION_NOT_FOUND"),
        "{}",
        r.text
    );
    assert!(r.text.contains("no longer kept"), "{}", r.text);
    let r = d.get(&format!("/api/v1/memories/{id}?version=4"));
    assert_eq!(r.body["content"], "v4");
    // keep_for: versions replaced more than 2 s ago go at the next sweep (one runs at start).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    d.terminate();
    let d = start(
        &data,
        &[("history.keep_versions", "3"), ("history.keep_for", "2s")],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while versions(&d) != [7] {
        assert!(
            std::time::Instant::now() < deadline,
            "old versions were not swept: {:?}",
            versions(&d)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A purge removes the memory and every version.
    let r = d.patch(&format!("/api/v1/memories/{id}"), &json!({"content": "v8"}));
    assert_eq!(r.body["version"], 8);
    let r = d.delete(&format!("/api/v1/memories/{id}?purge=true"));
    assert_eq!(r.status, 200, "{}", r.text);
    let r = d.get(&format!("/api/v1/memories/{id}/history"));
    assert_eq!((r.status, r.code()), (404, "MEMORY_NOT_FOUND"));
    let r = d.get(&format!("/api/v1/memories/{id}?version=7"));
    assert_eq!((r.status, r.code()), (404, "MEMORY_NOT_FOUND"));
}

/// The oracle's view of one memory at one moment.
#[derive(Debug, Clone)]
struct Was {
    content: String,
    vector: Vec<f32>,
    searchable: bool,
}

const FRUITS: [&str; 6] = ["mango", "kiwi", "papaya", "lychee", "guava", "quince"];

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

/// Semantic and word searches as of each moment against brute force over the oracle's state.
fn check_moments(
    d: &Daemon,
    moments: &[(i64, BTreeMap<String, Was>)],
    rng: &mut rand::rngs::StdRng,
) {
    for (at, was) in moments {
        let query = embedding(rng.random_range(0..5000), DIMS);
        let r = d.post(
            "/api/v1/search",
            &json!({"namespace": "past", "search_type": "semantic", "query_embedding": query,
                    "as_of": rfc3339(*at), "limit": 100}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        let got: Vec<(String, String)> = r.body["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|h| {
                (
                    id_of(&h["memory"]),
                    h["memory"]["content"].as_str().expect("c").to_owned(),
                )
            })
            .collect();
        let mut brute: Vec<(f32, &String, &Was)> = was
            .iter()
            .filter(|(_, w)| w.searchable)
            .map(|(id, w)| (cosine(&query, &w.vector), id, w))
            .collect();
        brute.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let want: Vec<(String, String)> = brute
            .iter()
            .map(|(_, id, w)| ((*id).clone(), w.content.clone()))
            .collect();
        assert_eq!(got, want, "semantic as of {at}");
        // Words: exactly the memories whose text then held the word.
        let fruit = FRUITS[rng.random_range(0..FRUITS.len())];
        let r = d.post(
            "/api/v1/search/text",
            &json!({"namespace": "past", "query_text": fruit, "as_of": rfc3339(*at), "limit": 100}),
        );
        let mut got: Vec<String> = r.body["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|h| id_of(&h["memory"]))
            .collect();
        got.sort();
        let want: Vec<String> = was
            .iter()
            .filter(|(_, w)| w.searchable && w.content.ends_with(fruit))
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(got, want, "text {fruit} as of {at}");
    }
}

#[test]
fn as_of_search_ranks_the_namespace_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut d = start(&data, &[]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut state: BTreeMap<String, Was> = BTreeMap::new();
    let mut moments: Vec<(i64, BTreeMap<String, Was>)> = Vec::new();
    let mut seed = 1000u64;
    let mut latest = 0i64;
    let text = |rng: &mut rand::rngs::StdRng, n: u64| {
        format!(
            "note {n} about {}",
            FRUITS[rng.random_range(0..FRUITS.len())]
        )
    };
    let updated_at = |d: &Daemon, id: &str| {
        let r = d.get(&format!("/api/v1/memories/{id}"));
        parse_rfc3339(r.body["updated_at"].as_str().expect("updated_at"))
    };
    for step in 0..80u64 {
        seed += 1;
        let ids: Vec<String> = state.keys().cloned().collect();
        let pick = |rng: &mut rand::rngs::StdRng| ids[rng.random_range(0..ids.len())].clone();
        let op = if ids.len() < 10 {
            0
        } else {
            rng.random_range(0..5)
        };
        let touched: Vec<String> = match op {
            0 | 4 => {
                let content = text(&mut rng, seed);
                let vector = embedding(seed, DIMS);
                let mut body =
                    json!({"namespace": "past", "content": content, "embedding": vector});
                let mut replaced = None;
                if op == 4 {
                    let old = pick(&mut rng);
                    if state[&old].searchable {
                        body["supersedes"] = json!([old]);
                        replaced = Some(old);
                    }
                }
                let r = d.post("/api/v1/memories", &body);
                assert_eq!(r.status, 201, "{}", r.text);
                let id = id_of(&r.body);
                state.insert(
                    id.clone(),
                    Was {
                        content,
                        vector,
                        searchable: true,
                    },
                );
                match replaced {
                    Some(old) => {
                        state.get_mut(&old).expect("old").searchable = false;
                        vec![id, old]
                    }
                    None => vec![id],
                }
            }
            1 => {
                let id = pick(&mut rng);
                if !state[&id].searchable {
                    continue;
                }
                let content = text(&mut rng, seed);
                let vector = embedding(seed, DIMS);
                let r = d.patch(
                    &format!("/api/v1/memories/{id}"),
                    &json!({"content": content, "embedding": vector}),
                );
                if r.status == 409 {
                    continue;
                }
                assert_eq!(r.status, 200, "{}", r.text);
                let w = state.get_mut(&id).expect("known");
                w.content = content;
                w.vector = vector;
                vec![id]
            }
            2 => {
                let id = pick(&mut rng);
                if !state[&id].searchable {
                    continue;
                }
                let r = d.delete(&format!("/api/v1/memories/{id}"));
                assert_eq!(r.status, 200, "{}", r.text);
                state.get_mut(&id).expect("known").searchable = false;
                vec![id]
            }
            _ => {
                let id = pick(&mut rng);
                let r = d.patch(
                    &format!("/api/v1/memories/{id}"),
                    &json!({"status": "active"}),
                );
                if r.status == 409 {
                    continue;
                }
                assert_eq!(r.status, 200, "{}", r.text);
                state.get_mut(&id).expect("known").searchable = true;
                vec![id]
            }
        };
        // The state now is the state as of the newest write (an op that changed nothing, such
        // as restoring an active memory, leaves its updated_at where it was).
        latest = touched
            .iter()
            .map(|id| updated_at(&d, id))
            .fold(latest, i64::max);
        if step % 7 == 3 {
            moments.push((latest, state.clone()));
        }
    }
    assert!(moments.len() >= 8);
    check_moments(&d, &moments, &mut rng);
    // Tier moves make no version: every moment reads the same from warm and cold, and after
    // kill -9.
    let mut moved = 0;
    for (i, (id, was)) in state.iter().enumerate() {
        let tier = ["warm", "cold", "working"][i % 3];
        let r = d.patch(&format!("/api/v1/memories/{id}"), &json!({"tier": tier}));
        if r.status == 404 && !was.searchable {
            continue; // deleted: not movable
        }
        assert_eq!(r.status, 200, "move to {tier}: {}", r.text);
        moved += 1;
    }
    assert!(moved >= 20);
    check_moments(&d, &moments, &mut rng);
    d.kill9();
    let d = start(&data, &[]);
    check_moments(&d, &moments, &mut rng);
    // Before the first memory was written, the namespace was empty.
    let (first, _) = moments[0];
    let r = d.post(
        "/api/v1/search/text",
        &json!({"namespace": "past", "query_text": "note", "as_of": rfc3339(first - 60_000_000)}),
    );
    assert_eq!(r.body["results"], json!([]), "{}", r.text);
    let r = d.post(
        "/api/v1/search",
        &json!({"namespace": "past", "query_text": "x", "as_of": "then"}),
    );
    assert_eq!(
        (r.status, r.body["error"]["details"]["field"].as_str()),
        (400, Some("as_of"))
    );
}

#[test]
fn keep_vectors_off_keeps_the_text_of_a_replaced_version_but_not_its_vector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let settings = [("history.keep_vectors", "false")];
    let mut d = start(&data, &settings);
    let first = embedding(1, DIMS);
    let r = d.post(
        "/api/v1/memories",
        &json!({"namespace": "lean", "content": "Caroline lives in Boston, near the river",
                "embedding": first}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let id = id_of(&r.body);
    let before = r.body["updated_at"]
        .as_str()
        .expect("updated_at")
        .to_owned();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let second = embedding(2, DIMS);
    let r = d.patch(
        &format!("/api/v1/memories/{id}"),
        &json!({"content": "Caroline lives in Denver, near the river", "embedding": second}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    d.kill9();
    let d = start(&data, &settings);

    // Version 1: its text, rebuilt from the current one, and no vector.
    let r = d.get(&format!(
        "/api/v1/memories/{id}?version=1&include_embedding=true"
    ));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["content"],
        "Caroline lives in Boston, near the river"
    );
    assert_eq!(r.body["embedding_status"], "none", "{}", r.text);
    assert!(r.body["embedding"].is_null(), "{}", r.text);
    let r = d.get(&format!("/api/v1/memories/{id}?include_embedding=true"));
    let current: Option<Vec<f32>> = r.body["embedding"].as_array().map(|a| {
        a.iter()
            .map(|x| x.as_f64().expect("a number") as f32)
            .collect()
    });
    assert_eq!(current, Some(second), "the current vector is kept");

    // The past is found by its words, not by its old vector.
    let r = d.post(
        "/api/v1/search",
        &json!({"namespace": "lean", "search_type": "semantic", "query_embedding": first,
                "as_of": before}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["results"], json!([]), "{}", r.text);
    let r = d.post(
        "/api/v1/search/text",
        &json!({"namespace": "lean", "query_text": "Boston", "as_of": before}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let hits = r.body["results"].as_array().expect("results");
    assert_eq!(hits.len(), 1, "{}", r.text);
    assert_eq!(
        hits[0]["memory"]["content"],
        "Caroline lives in Boston, near the river"
    );

    // A revert to it restores the text; the vector is the client's to send again.
    let r = d.post(
        &format!("/api/v1/memories/{id}/revert"),
        &json!({"version": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["version"].as_u64(), r.body["content"].as_str()),
        (Some(3), Some("Caroline lives in Boston, near the river"))
    );
    assert_eq!(r.body["embedding_status"], "none", "{}", r.text);
}
