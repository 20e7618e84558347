//! Whole namespaces against a real `engramd`: counts per tier, a soft delete of all of one, and
//! the purge: every memory, version, posting and index entry gone, the other namespaces
//! untouched, and no byte of the purged one's text left in the live data files.

use std::path::{Path, PathBuf};

use engram_tests::{ctl, embedding, Daemon};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const DIMS: usize = 8;

fn start(data: &Path) -> Daemon {
    Daemon::start(
        data,
        &[
            ("embedding.dimensions", "8"),
            ("tier_migration.enabled", "false"),
        ],
    )
}

fn id_of(r: &Value) -> String {
    r["id"].as_str().expect("id").to_owned()
}

/// A namespace's memories: each text carries a marker no other memory has, and its first
/// version a second one (so the history holds text the current version does not).
struct Tenant {
    ids: Vec<String>,
    markers: Vec<String>,
}

/// Writes `n` memories into `ns` across the three tiers: every one updated once (new text),
/// a third moved to warm and a third to cold, some deleted, one superseded.
fn fill(d: &Daemon, ns: &'static str, n: usize, rng: &mut rand::rngs::StdRng) -> Tenant {
    let mut t = Tenant {
        ids: Vec::new(),
        markers: Vec::new(),
    };
    for i in 0..n {
        let first = format!("{ns}first{:016x}", rng.random::<u64>());
        let now = format!("{ns}now{:016x}", rng.random::<u64>());
        let r = d.post(
            "/api/v1/memories",
            &json!({"namespace": ns, "content": format!("the first text {first}"),
                    "embedding": embedding(i as u64, DIMS), "tags": [format!("{ns}tag")],
                    "metadata": {"owner": format!("{ns}owner{i}")}}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        let id = id_of(&r.body);
        let r = d.patch(
            &format!("/api/v1/memories/{id}"),
            &json!({"content": format!("the text now {now}"), "embedding": embedding(1000 + i as u64, DIMS)}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
        t.ids.push(id);
        t.markers.push(first);
        t.markers.push(now);
    }
    for (i, id) in t.ids.iter().enumerate() {
        let tier = ["working", "warm", "cold"][i % 3];
        let r = d.patch(&format!("/api/v1/memories/{id}"), &json!({"tier": tier}));
        assert_eq!(r.status, 200, "{}", r.text);
    }
    for id in t.ids.iter().skip(4).step_by(7) {
        let r = d.delete(&format!("/api/v1/memories/{id}"));
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let marker = format!("{ns}newer{:016x}", rng.random::<u64>());
    let r = d.post(
        "/api/v1/memories",
        &json!({"namespace": ns, "content": format!("replaces the first {marker}"),
                "embedding": embedding(5000, DIMS), "supersedes": [t.ids[0]]}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    t.ids.push(id_of(&r.body));
    t.markers.push(marker);
    t
}

/// Every file under `dir`, except those under `skip` (directory names).
fn files(dir: &Path, skip: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !skip.contains(&name.as_str()) {
                out.extend(files(&path, skip));
            }
        } else {
            out.push(path);
        }
    }
    out
}

/// The files of `dir` holding any of `needles`, with the first one each holds.
fn holding(dir: &Path, skip: &[&str], needles: &[String]) -> Vec<(PathBuf, String)> {
    let finder = aho_corasick::AhoCorasick::new(needles).expect("patterns");
    let mut out = Vec::new();
    for path in files(dir, skip) {
        // A file RocksDB deleted between the listing and the read holds nothing.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if let Some(m) = finder.find(&bytes) {
            out.push((path, needles[m.pattern().as_usize()].clone()));
        }
    }
    out
}

/// `engramctl check --find-namespace`: (clean, its report).
fn find(data: &Path, ns: &str, markers: &[String]) -> (bool, Value) {
    let data = data.to_str().expect("utf-8 path");
    let mut args = vec![
        "check",
        "--data-dir",
        data,
        "--find-namespace",
        ns,
        "--json",
    ];
    for m in markers {
        args.extend(["--find", m.as_str()]);
    }
    let out = ctl(&args);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.success(), report["clean"] == true, "{report}");
    (out.status.success(), report)
}

fn search_ns(d: &Daemon, ns: &str, text: &str) -> Vec<Value> {
    let r = d.post(
        "/api/v1/search",
        &json!({"namespace": ns, "query_text": text, "query_embedding": embedding(1003, DIMS),
                "limit": 100, "include_cold": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["results"].as_array().expect("results").clone()
}

#[test]
fn namespaces_are_counted_deleted_and_purged_without_a_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = start(&data);
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let gone = fill(&d, "tenant-gone", 30, &mut rng);
    let kept = fill(&d, "tenant-kept", 30, &mut rng);
    let soft = fill(&d, "tenant-soft", 9, &mut rng);

    // Counts per tier: 31 memories each (30 and the superseding one, in working).
    let r = d.get("/api/v1/namespaces");
    assert_eq!(r.status, 200, "{}", r.text);
    let names: Vec<&str> = r.body["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|n| n["namespace"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["tenant-gone", "tenant-kept", "tenant-soft"]);
    let r = d.get("/api/v1/namespaces/tenant-kept");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["memories"], 31);
    // A third in each tier, the superseding one in working; deleting a cold memory writes
    // its deleted version to warm (cold segments are immutable).
    assert_eq!(
        r.body["tiers"],
        json!({"working": 11, "warm": 11, "cold": 9})
    );
    // Four deleted (the 5th, 12th, 19th and 26th); the superseded one is still indexed.
    assert_eq!(r.body["searchable"], 31 - 4, "{}", r.text);
    let r = d.get("/api/v1/namespaces/nobody");
    assert_eq!((r.status, r.code()), (404, "NAMESPACE_NOT_FOUND"));
    let r = d.get("/api/v1/namespaces/bad%20name");
    assert_eq!(r.status, 400, "{}", r.text);

    // A soft delete of a namespace: every memory deleted, versions kept, restorable.
    let r = d.delete("/api/v1/namespaces/tenant-soft");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["deleted"], 10 - 1, "{}", r.text); // 9 + 1, one deleted before
    assert!(search_ns(&d, "tenant-soft", "text").is_empty());
    let r = d.get(&format!("/api/v1/memories/{}", soft.ids[1]));
    assert_eq!(r.body["status"], "deleted");
    let r = d.get(&format!("/api/v1/memories/{}/history", soft.ids[1]));
    assert_eq!(r.body["versions"].as_array().expect("versions").len(), 3);

    // Before the purge, the WAL holds the namespace's text as written: the scan can see it.
    let before = holding(&data, &["snapshots", "archive"], &gone.markers);
    assert!(
        before.iter().any(|(p, _)| p.starts_with(data.join("wal"))),
        "{before:?}"
    );
    // The offline proof sees it too, in every part of the store.
    let mut d = d;
    d.terminate();
    let (ok, report) = find(&data, "tenant-gone", &gone.markers);
    assert!(!ok);
    let places: Vec<&str> = report["live"]
        .as_array()
        .expect("live")
        .iter()
        .map(|t| t["path"].as_str().expect("path"))
        .collect();
    for part in [
        "/wal/",
        "/working/",
        "/cold/",
        "<column family records>",
        "<column family ns_index>",
        "<column family history>",
        "<column family postings>",
    ] {
        assert!(
            places.iter().any(|p| p.contains(part)),
            "{part} not in {places:?}"
        );
    }
    let d = start(&data);
    let snapshot = d.post("/api/v1/admin/snapshots", &json!({}));
    assert_eq!(snapshot.status, 201, "{}", snapshot.text);

    let r = d.delete("/api/v1/namespaces/tenant-gone?purge=true");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["purged"], 31, "{}", r.text);
    assert!(r.body["scrub"]["cold_segments_rewritten"].as_u64() >= Some(1));

    // Gone from every read path.
    let r = d.get("/api/v1/namespaces/tenant-gone");
    assert_eq!(r.status, 404, "{}", r.text);
    for id in &gone.ids {
        let r = d.get(&format!("/api/v1/memories/{id}"));
        assert_eq!(r.status, 404, "{}", r.text);
        let r = d.get(&format!("/api/v1/memories/{id}/history"));
        assert_eq!(r.status, 404, "{}", r.text);
    }
    assert!(search_ns(&d, "tenant-gone", "text").is_empty());
    assert!(d
        .list_all("&namespace=tenant-gone&status=deleted")
        .is_empty());
    // The others untouched: every kept memory reads back with its history.
    for id in &kept.ids {
        let r = d.get(&format!("/api/v1/memories/{id}"));
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let r = d.get(&format!("/api/v1/memories/{}?version=1", kept.ids[2]));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["content"]
        .as_str()
        .expect("content")
        .contains(&kept.markers[4]));
    assert_eq!(search_ns(&d, "tenant-kept", "text").len(), 31 - 4 - 1);

    // No live file holds the purged text (snapshots and the archive keep theirs).
    let after = holding(&data, &["snapshots", "archive"], &gone.markers);
    assert!(after.is_empty(), "still holding purged text: {after:?}");
    // ... while the kept namespace's text is still found, so the scan is not blind.
    let found = holding(&data, &["snapshots", "archive"], &kept.markers);
    assert!(!found.is_empty());
    // The snapshot taken before still has it.
    let snap = holding(&data.join("snapshots"), &[], &gone.markers);
    assert!(!snap.is_empty());

    // And after a restart (a replay from the new checkpoint), nothing comes back.
    let mut d = d;
    d.terminate();
    // The offline proof: nothing live (RocksDB and cold segments read through their formats),
    // the snapshot and the archived WAL still hold it; the kept namespace is still found.
    let (ok, report) = find(&data, "tenant-gone", &gone.markers);
    assert!(ok, "{report}");
    assert_eq!(
        report["snapshots"],
        json!([snapshot.body["id"]]),
        "{report}"
    );
    assert!(!report["archived_wal"]
        .as_array()
        .expect("archived")
        .is_empty());
    let (ok, _) = find(&data, "tenant-kept", &kept.markers);
    assert!(!ok);
    let d = start(&data);
    let r = d.get("/api/v1/namespaces");
    let names: Vec<&str> = r.body["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .map(|n| n["namespace"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["tenant-kept", "tenant-soft"]);
    for id in &gone.ids {
        assert_eq!(d.get(&format!("/api/v1/memories/{id}")).status, 404);
    }
}
