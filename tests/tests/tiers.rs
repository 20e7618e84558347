//! The cold tier and the migration policy, through the real daemon: moves as the policy says
//! (and none on a dry run), byte-identical cold reads, search with and without cold, promotion
//! on access, updates and deletes of cold memories, compaction, pinning, corruption reports,
//! and kill -9 during migration and compaction.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use engram_tests::{ctl, embedding, Daemon, TEST_CLOCK};
use serde_json::{json, Value};

const DIMS: usize = 8;

/// Policy settings with short thresholds, run only on request.
fn manual_policy() -> Vec<(&'static str, &'static str)> {
    vec![
        ("embedding.dimensions", "8"),
        ("tier_migration.enabled", "false"),
        ("tier_migration.working_to_warm_after", "1s"),
        ("tier_migration.warm_to_cold_after", "2s"),
        ("tier_migration.strength", "1s"),
        ("tier_migration.min_importance_to_stay_warm", "0.9"),
        ("tier_migration.promote_after_accesses", "3"),
        ("storage.access_flush_interval", "100ms"),
    ]
}

fn create(d: &Daemon, i: u64, importance: f64) -> Value {
    let r = d.post(
        "/api/v1/memories?include_embedding=true",
        &json!({
            "content": format!("memory {i}: the lighthouse keeper logged storm number {i} and word{i}x"),
            "namespace": "tiers",
            "importance_score": importance,
            "embedding": embedding(i, DIMS),
            "metadata": {"n": i, "nested": {"k": [1, 2, "three"]}, "unicode": "ÿ🌊"},
            "tags": ["t", format!("i{i}")],
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

fn get(d: &Daemon, id: &str) -> Value {
    let r = d.get(&format!("/api/v1/memories/{id}?include_embedding=true"));
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

/// The fields a tier move must not change.
fn same_memory(a: &Value, b: &Value) {
    for f in [
        "id",
        "content",
        "content_hash",
        "metadata",
        "tags",
        "embedding",
        "importance_score",
        "created_at",
        "updated_at",
        "version",
        "namespace",
        "status",
        "expires_at",
        "parent_id",
    ] {
        assert_eq!(a[f], b[f], "field {f} differs: {a} vs {b}");
    }
}

/// Every memory of the namespace by id, read through the list API (which counts no access, so
/// it cannot trigger a promotion).
fn peek(d: &Daemon) -> HashMap<String, Value> {
    d.list_all("&namespace=tiers&include_embedding=true")
        .into_iter()
        .map(|m| (m["id"].as_str().expect("id").to_owned(), m))
        .collect()
}

fn migrate(d: &Daemon, dry_run: bool) -> Value {
    let r = d.post("/api/v1/admin/migrate", &json!({ "dry_run": dry_run }));
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

fn metric(d: &Daemon, prefix: &str) -> f64 {
    let text = d.get("/metrics").text;
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

fn search_ids(d: &Daemon, body: Value) -> Vec<String> {
    let r = d.post("/api/v1/search", &body);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["memory"]["id"].as_str().expect("id").to_owned())
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Waiting for the daemon's background thread, bounded by the deadline.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_policy_moves_memories_through_the_tiers_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let settings = manual_policy();
    let mut d = Daemon::start_with_env(&data, &settings, &[TEST_CLOCK]);
    let low: Vec<Value> = (0..40).map(|i| create(&d, i, 0.0)).collect();
    let high: Vec<Value> = (100..105).map(|i| create(&d, i, 0.95)).collect();
    // Idle long enough for both thresholds (importance 0.95 stretches them by 1.95).
    d.advance_clock(Duration::from_millis(3300));

    let dry = migrate(&d, true);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["moved"], 0);
    assert_eq!(dry["planned"], 45, "{dry}");
    assert_eq!(dry["moves"][0]["from"], "working");
    assert!(dry["moves"][0]["retention"].as_f64().expect("retention") < 1.0);
    let now = peek(&d);
    for m in low.iter().chain(&high) {
        assert_eq!(now[m["id"].as_str().expect("id")]["tier"], "working");
    }

    let first = migrate(&d, false);
    assert_eq!(first["moved"], 45, "{first}");
    assert_eq!(first["by_route"]["working_to_warm"], 45);
    let second = migrate(&d, false);
    assert_eq!(second["by_route"]["warm_to_cold"], 40, "{second}");
    assert!(second["by_route"].get("warm_to_working").is_none());
    let now = peek(&d);
    for m in &low {
        let now = &now[m["id"].as_str().expect("id")];
        assert_eq!(now["tier"], "cold");
        same_memory(m, now);
    }
    // A read by id finds it too (one access: no promotion).
    same_memory(&low[0], &get(&d, low[0]["id"].as_str().expect("id")));
    for m in &high {
        assert_eq!(now[m["id"].as_str().expect("id")]["tier"], "warm");
    }
    assert_eq!(migrate(&d, true)["planned"], 0, "nothing left to move");

    let tiers = d.get("/api/v1/tiers");
    assert_eq!(tiers.status, 200, "{}", tiers.text);
    let cold = &tiers.body["tiers"]["cold"];
    assert_eq!(cold["count"], 40, "{}", tiers.text);
    assert!(cold["bytes_on_disk"].as_u64().expect("bytes") > 0);
    assert!(cold["segments"].as_u64().expect("segments") >= 1);
    assert_eq!(cold["avg_importance"], 0.0);
    assert_eq!(tiers.body["tiers"]["warm"]["count"], 5);
    assert!(
        (tiers.body["tiers"]["warm"]["avg_importance"]
            .as_f64()
            .expect("avg")
            - 0.95)
            .abs()
            < 1e-6
    );
    assert_eq!(
        metric(
            &d,
            "engram_tier_migrations_total{from=\"warm\",to=\"cold\"}"
        ),
        40.0
    );
    assert!(metric(&d, "engram_cold_segments") >= 1.0);
    assert!(metric(&d, "engram_tier_bytes{tier=\"cold\"}") > 0.0);

    // Search: cold only when asked, by vector and by text.
    let target = &low[7];
    let by_vector = json!({
        "namespace": "tiers", "search_type": "semantic", "limit": 3,
        "query_embedding": embedding(7, DIMS),
    });
    assert!(
        !search_ids(&d, by_vector.clone()).contains(&target["id"].as_str().expect("id").to_owned())
    );
    let mut with_cold = by_vector.clone();
    with_cold["include_cold"] = json!(true);
    assert_eq!(
        search_ids(&d, with_cold)[0],
        target["id"].as_str().expect("id")
    );
    let by_text = json!({"namespace": "tiers", "search_type": "text", "query_text": "word7x"});
    assert!(search_ids(&d, by_text.clone()).is_empty());
    let mut with_cold = by_text;
    with_cold["tiers"] = json!(["warm", "cold"]);
    assert_eq!(
        search_ids(&d, with_cold),
        vec![target["id"].as_str().expect("id").to_owned()]
    );

    // Promotion: read three times since the move, and it goes back to warm.
    let promoted = low[1]["id"].as_str().expect("id").to_owned();
    for _ in 0..3 {
        get(&d, &promoted);
    }
    wait_for("promotion", Duration::from_secs(10), || {
        peek(&d)[&promoted]["tier"] == "warm"
    });
    same_memory(&low[1], &get(&d, &promoted));
    // The promoted memory was read: its tier now has an oldest access.
    let warm = &d.get("/api/v1/tiers").body["tiers"]["warm"];
    assert!(
        warm["oldest_access"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{warm}"
    );
    assert!(
        warm["avg_access_count"].as_f64().expect("avg") > 0.0,
        "{warm}"
    );

    // An update leaves the cold segment (for warm); a delete is gone.
    let updated = low[2]["id"].as_str().expect("id");
    let r = d.patch(
        &format!("/api/v1/memories/{updated}"),
        &json!({"importance_score": 0.5}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["tier"], "warm");
    assert_eq!(
        r.body["version"],
        low[2]["version"].as_u64().expect("v") + 1
    );
    assert_eq!(r.body["content"], low[2]["content"]);
    let deleted = low[4]["id"].as_str().expect("id");
    assert_eq!(
        d.delete(&format!("/api/v1/memories/{deleted}?purge=true"))
            .status,
        200
    );
    assert_eq!(d.get(&format!("/api/v1/memories/{deleted}")).status, 404);

    // Pin a warm memory to cold.
    let pinned = high[0]["id"].as_str().expect("id");
    let r = d.patch(
        &format!("/api/v1/memories/{pinned}"),
        &json!({"tier": "cold"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["tier"], "cold");
    same_memory(&high[0], &get(&d, pinned));

    // Compaction drops the three dead entries and merges the small segments.
    let c = d.post("/api/v1/admin/compact", &json!({}));
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.body["dead_dropped"], 3, "{}", c.text);
    assert_eq!(c.body["segments_out"], 1, "{}", c.text);
    assert!(metric(&d, "engram_cold_compactions_total") >= 1.0);
    let gone: HashSet<&str> = [promoted.as_str(), updated, deleted].into_iter().collect();
    let still_cold: Vec<&Value> = low
        .iter()
        .filter(|m| !gone.contains(m["id"].as_str().expect("id")))
        .collect();
    let now = peek(&d);
    for m in &still_cold {
        assert_eq!(now[m["id"].as_str().expect("id")]["tier"], "cold");
        same_memory(m, &now[m["id"].as_str().expect("id")]);
    }
    assert_eq!(
        d.list_all("&namespace=tiers").len(),
        44,
        "every memory listed once"
    );
    assert_eq!(
        d.list_all("").len(),
        44,
        "the cold tier is listed without a namespace too"
    );

    // A restart keeps every tier.
    assert!(d.terminate().success());
    let d = Daemon::start(&data, &settings);
    let now = peek(&d);
    for m in &still_cold {
        assert_eq!(now[m["id"].as_str().expect("id")]["tier"], "cold");
        same_memory(m, &now[m["id"].as_str().expect("id")]);
        same_memory(m, &get(&d, m["id"].as_str().expect("id")));
    }
    assert_eq!(now[pinned]["tier"], "cold");
    assert_eq!(now[&promoted]["tier"], "warm");
    let tiers = d.get("/api/v1/tiers").body;
    assert_eq!(tiers["tiers"]["cold"]["count"], 38, "{tiers}");
    let mut with_cold = by_vector;
    with_cold["include_cold"] = json!(true);
    assert_eq!(
        search_ids(&d, with_cold)[0],
        target["id"].as_str().expect("id")
    );
}

#[test]
fn migrate_and_compact_refuse_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &manual_policy());
    let r = d.post("/api/v1/admin/migrate", &json!({"dry_run": "yes"}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("dry_run"), "{}", r.text);
    let r = d.post("/api/v1/admin/migrate", &json!({"dryrun": true}));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(d.get("/api/v1/admin/migrate").status, 405);
    assert_eq!(d.post("/api/v1/tiers", &json!({})).status, 405);
    let r = d.patch(
        &format!("/api/v1/memories/{}", uuid_like()),
        &json!({"tier": "frozen"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("tier"), "{}", r.text);
    // No body at all means the defaults; a body that is not JSON is refused,
    // whitespace included.
    assert_eq!(
        d.request("POST", "/api/v1/admin/migrate", None, &[]).status,
        200
    );
    for junk in ["\r", " ", "\n\n"] {
        let r = d.request("POST", "/api/v1/admin/migrate", Some(junk), &[]);
        assert_eq!(r.status, 400, "{junk:?}: {}", r.text);
    }
    // An empty store: nothing to do, no error.
    assert_eq!(migrate(&d, false)["moved"], 0);
    assert_eq!(
        d.post("/api/v1/admin/compact", &json!({})).body["segments_in"],
        0
    );
}

fn uuid_like() -> String {
    "018f0000-0000-7000-8000-000000000000".to_owned()
}

/// Flips one byte inside the first block of the only segment.
fn flip_first_block(data: &Path) -> String {
    let cold = data.join("cold");
    let seg = std::fs::read_dir(&cold)
        .expect("cold dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "cold"))
        .expect("a segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    // Header 32 bytes, block header 16: the compressed bytes start at 48.
    bytes[60] ^= 0x40;
    std::fs::write(&seg, &bytes).expect("write");
    seg.file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_flipped_bit_in_a_cold_block_is_reported_never_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut d = Daemon::start(&data, &manual_policy());
    let m = create(&d, 1, 0.0);
    let id = m["id"].as_str().expect("id").to_owned();
    let r = d.patch(&format!("/api/v1/memories/{id}"), &json!({"tier": "cold"}));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(d.terminate().success());
    let name = flip_first_block(&data);
    let d = Daemon::start(&data, &manual_policy());
    let r = d.get(&format!("/api/v1/memories/{id}"));
    assert_eq!(r.status, 500, "{}", r.text);
    assert!(
        r.text.contains(&name) && r.text.contains("block 0"),
        "names the segment and the block: {}",
        r.text
    );
    assert!(
        !r.text.contains("lighthouse"),
        "no data returned: {}",
        r.text
    );
    drop(d);
    let out = ctl(&["check", "--data-dir", data.to_str().expect("utf8")]);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(&name), "{text}");
}

/// Every memory acknowledged is listed exactly once, readable, with its content.
fn assert_all_present(d: &Daemon, expected: &HashMap<String, String>) {
    let listed = d.list_all("&namespace=crash");
    let mut seen = HashSet::new();
    for m in &listed {
        let id = m["id"].as_str().expect("id").to_owned();
        assert!(seen.insert(id.clone()), "{id} listed twice");
    }
    assert_eq!(listed.len(), expected.len(), "nothing lost, nothing extra");
    for m in &listed {
        let id = m["id"].as_str().expect("id");
        assert_eq!(
            Some(&m["content"]),
            expected.get(id).map(|c| json!(c)).as_ref(),
            "{id}"
        );
    }
    // Reads by id take the same path; check a sample.
    for (id, content) in expected.iter().step_by(97) {
        assert_eq!(&get(d, id)["content"], content, "{id}");
    }
    let tiers = d.get("/api/v1/tiers").body;
    let total: u64 = ["working", "warm", "cold"]
        .iter()
        .map(|t| tiers["tiers"][t]["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(
        total as usize,
        expected.len(),
        "every memory in exactly one tier: {tiers}"
    );
}

fn offline_check(data: &Path) {
    ctl_ok(&["check", "--data-dir", data.to_str().expect("utf8")]);
}

#[test]
fn kill9_during_migration_and_compaction_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let auto = [
        ("embedding.dimensions", "8"),
        ("tier_migration.enabled", "true"),
        ("tier_migration.interval", "100ms"),
        ("tier_migration.working_to_warm_after", "1s"),
        ("tier_migration.warm_to_cold_after", "1s"),
        ("tier_migration.strength", "1s"),
        ("tier_migration.compact_dead_ratio", "0.1"),
    ];
    let mut expected: HashMap<String, String> = HashMap::new();
    let mut d = Daemon::start(&data, &auto);
    let mut n = 0u64;
    for round in 0..3u64 {
        // Writes go on while the policy moves earlier ones; kill at a different moment each round.
        let deadline = Instant::now() + Duration::from_millis(1100 + round * 400);
        while Instant::now() < deadline {
            let items: Vec<Value> = (0..100)
                .map(|k| {
                    n += 1;
                    json!({
                        "content": format!("crash memory {n}-{k} of round {round}"),
                        "namespace": "crash",
                        "importance_score": 0.1,
                        "embedding": embedding(n, DIMS),
                    })
                })
                .collect();
            let r = d.post("/api/v1/memories/batch", &json!({ "memories": items }));
            assert_eq!(r.status, 200, "{}", r.text);
            for m in r.body["results"].as_array().expect("results") {
                expected.insert(
                    m["id"].as_str().expect("id").to_owned(),
                    m["content"].as_str().expect("content").to_owned(),
                );
            }
        }
        // Make dead entries so compaction has work: update some memories that went cold.
        let cold: Vec<String> = d
            .list_all("&namespace=crash&tier=cold")
            .iter()
            .map(|m| m["id"].as_str().expect("id").to_owned())
            .collect();
        for id in cold.iter().step_by(4) {
            let content = format!("updated {id}");
            let r = d.patch(
                &format!("/api/v1/memories/{id}"),
                &json!({"content": content}),
            );
            assert_eq!(r.status, 200, "{}", r.text);
            expected.insert(id.clone(), content);
        }
        std::thread::sleep(Duration::from_millis(150 + round * 100));
        d.kill9();
        d = Daemon::start(&data, &auto);
        assert_all_present(&d, &expected);
    }
    assert!(d.terminate().success());
    let d = Daemon::start(&data, &manual_policy_8d());
    assert_all_present(&d, &expected);
    let tiers = d.get("/api/v1/tiers").body;
    assert!(
        tiers["tiers"]["cold"]["count"].as_u64().expect("count") > 0,
        "the policy ran: {tiers}"
    );
    drop(d);
    offline_check(&data);
}

fn manual_policy_8d() -> Vec<(&'static str, &'static str)> {
    vec![
        ("embedding.dimensions", "8"),
        ("tier_migration.enabled", "false"),
    ]
}

fn ctl_ok(args: &[&str]) {
    let out = ctl(args);
    assert!(
        out.status.success(),
        "engramctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Tier moves after a snapshot are replayed by restore: a segment sealed later is rebuilt from
/// the images in its record, a compaction's output from the segments it read.
#[test]
fn restore_replays_seals_and_compactions_after_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let backup = dir.path().join("backup");
    let settings = manual_policy();
    let mut d = Daemon::start(&data, &settings);
    let all: Vec<Value> = (0..30).map(|i| create(&d, i, 0.0)).collect();
    let to_cold = |d: &Daemon, ms: &[Value]| {
        for m in ms {
            let r = d.patch(
                &format!("/api/v1/memories/{}", m["id"].as_str().expect("id")),
                &json!({"tier": "cold"}),
            );
            assert_eq!(r.status, 200, "{}", r.text);
        }
    };
    to_cold(&d, &all[..10]);
    ctl_ok(&[
        "backup",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--out",
        backup.to_str().expect("utf8"),
        "--url",
        &d.url,
    ]);
    // After the snapshot: more seals, a tombstone, a compaction that drops the first segments.
    to_cold(&d, &all[10..20]);
    let r = d.patch(
        &format!("/api/v1/memories/{}", all[3]["id"].as_str().expect("id")),
        &json!({"content": "changed after the snapshot"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let c = d.post("/api/v1/admin/compact", &json!({}));
    assert_eq!(c.status, 200, "{}", c.text);
    assert!(
        c.body["segments_in"].as_u64().expect("n") >= 2,
        "{}",
        c.text
    );
    let expected = peek(&d);
    assert_eq!(
        expected.values().filter(|m| m["tier"] == "cold").count(),
        19
    );
    assert!(d.terminate().success());
    ctl_ok(&[
        "backup",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--out",
        backup.to_str().expect("utf8"),
    ]);
    std::fs::remove_dir_all(&data).expect("lose the original");
    let restored = dir.path().join("restored");
    ctl_ok(&[
        "restore",
        backup.to_str().expect("utf8"),
        "--target-dir",
        restored.to_str().expect("utf8"),
    ]);
    let d = Daemon::start(&restored, &settings);
    let got = peek(&d);
    assert_eq!(got.len(), expected.len());
    for (id, m) in &expected {
        assert_eq!(got[id]["tier"], m["tier"], "{id}");
        same_memory(m, &got[id]);
    }
    drop(d);
    offline_check(&restored);
}
