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

/// `bytes` and `tier_bytes` follow a memory through the tiers: a 100 kB text is counted in
/// full in working and warm (stored uncompressed there), as its compressed share in cold, and
/// is gone from the count once purged.
#[test]
fn a_namespace_counts_its_bytes_in_every_tier() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = start(&dir.path().join("data"));
    let mut rng = rand::rngs::StdRng::seed_from_u64(41);
    // Random hex: zstd can take it to about half, no further.
    let big: String = (0..50_000)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect();
    let small = d.post(
        "/api/v1/memories",
        &json!({"namespace": "sized", "content": "a short one", "embedding": embedding(1, DIMS)}),
    );
    assert_eq!(small.status, 201, "{}", small.text);
    let counts = |d: &Daemon| {
        let r = d.get("/api/v1/namespaces/sized");
        assert_eq!(r.status, 200, "{}", r.text);
        let t = &r.body["tier_bytes"];
        let per_tier = ["working", "warm", "cold"].map(|k| t[k].as_u64().expect("bytes"));
        assert_eq!(
            r.body["bytes"].as_u64(),
            Some(per_tier.iter().sum()),
            "{}",
            r.text
        );
        println!("bytes per tier: {per_tier:?}");
        per_tier
    };
    let [w0, _, _] = counts(&d);
    // The short one: its heap entry (text, metadata, times) and its 8 floats.
    assert!((32 + 11..4_096).contains(&w0), "{w0}");

    let r = d.post(
        "/api/v1/memories",
        &json!({"namespace": "sized", "content": big, "embedding": embedding(2, DIMS)}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().expect("id").to_owned();
    let [w1, warm1, cold1] = counts(&d);
    assert!(w1 - w0 >= 100_000 && w1 - w0 < 104_096, "{w0} -> {w1}");
    assert_eq!((warm1, cold1), (0, 0));

    let r = d.patch(&format!("/api/v1/memories/{id}"), &json!({"tier": "warm"}));
    assert_eq!(r.status, 200, "{}", r.text);
    let [w2, warm2, cold2] = counts(&d);
    assert_eq!((w2, cold2), (w0, 0));
    assert!((100_000..104_096).contains(&warm2), "{warm2}");

    let r = d.patch(&format!("/api/v1/memories/{id}"), &json!({"tier": "cold"}));
    assert_eq!(r.status, 200, "{}", r.text);
    let [w3, warm3, cold3] = counts(&d);
    assert_eq!((w3, warm3), (w0, 0));
    assert!(
        (40_000..100_000).contains(&cold3),
        "compressed share {cold3}"
    );

    let r = d.delete("/api/v1/namespaces/sized?purge=true");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(d.get("/api/v1/namespaces/sized").status, 404);
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
    // Scrub: the snapshot and archived WAL holding it are given up for a fresh snapshot.
    let mut args = vec![
        "scrub",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--namespace",
        "tenant-gone",
        "--json",
    ];
    for m in &gone.markers {
        args.extend(["--find", m.as_str()]);
    }
    let out = ctl(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scrub: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(
        scrub["snapshots_deleted"],
        json!([snapshot.body["id"]]),
        "{scrub}"
    );
    assert!(
        scrub["archived_segments_removed"].as_u64() >= Some(1),
        "{scrub}"
    );
    let (ok, report) = find(&data, "tenant-gone", &gone.markers);
    assert!(ok, "{report}");
    assert_eq!(report["snapshots"], json!([]), "{report}");
    assert_eq!(report["archived_wal"], json!([]), "{report}");
    assert!(holding(&data, &[], &gone.markers).is_empty());
    // The new snapshot restores the store without the namespace, with the others.
    let restored = dir.path().join("restored");
    let out = ctl(&[
        "restore",
        data.to_str().expect("utf-8"),
        "--target-dir",
        restored.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, _) = find(&restored, "tenant-gone", &gone.markers);
    assert!(ok);
    let (ok, _) = find(&restored, "tenant-kept", &kept.markers);
    assert!(!ok);
    let d = start(&data);
    let r = d.get("/api/v1/admin/snapshots");
    assert_eq!(
        r.body["snapshots"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );
    assert_eq!(
        r.body["snapshots"][0]["id"], scrub["snapshot"],
        "{}",
        r.text
    );
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

/// An export's header, its memory lines by id, and its footer.
fn parse_export(bytes: &[u8]) -> (Value, std::collections::BTreeMap<String, Value>, Value) {
    let text = std::str::from_utf8(bytes).expect("UTF-8");
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let footer = lines.pop().expect("footer");
    let header = lines.remove(0);
    let by_id = lines
        .into_iter()
        .map(|m| (m["id"].as_str().expect("id").to_owned(), m))
        .collect();
    (header, by_id, footer)
}

fn export(d: &Daemon, ns: &str, query: &str) -> (Vec<u8>, String) {
    let (status, bytes, content_type) = d.request_bytes(
        "GET",
        &format!("/api/v1/namespaces/{ns}/export{query}"),
        None,
        &[],
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    (bytes, content_type)
}

fn import(d: &Daemon, ns: &str, query: &str, body: &[u8], zstd: bool) -> (u16, Value) {
    let content_type = if zstd {
        "application/zstd"
    } else {
        "application/x-ndjson"
    };
    let (status, bytes, _) = d.request_bytes(
        "POST",
        &format!("/api/v1/namespaces/{ns}/import{query}"),
        Some(body),
        &[("content-type", content_type)],
    );
    let reply = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (status, reply)
}

/// A memory line as a store that imported it holds it: an import writes cold memories to warm
/// (one import writes no segment).
fn as_imported(mut m: Value) -> Value {
    if m["tier"] == "cold" {
        m["tier"] = json!("warm");
    }
    if let Some(versions) = m.get_mut("versions").and_then(Value::as_array_mut) {
        for v in versions {
            if v["tier"] == "cold" {
                v["tier"] = json!("warm");
            }
        }
    }
    m
}

#[test]
fn a_namespace_exported_purged_and_imported_comes_back_field_by_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = start(&data);
    let mut rng = rand::rngs::StdRng::seed_from_u64(29);
    let t = fill(&d, "tenant-move", 24, &mut rng);
    let stay = fill(&d, "tenant-stay", 6, &mut rng);
    // One memory with more versions (importance, tags, metadata), and some accesses.
    for i in 1..=3 {
        let r = d.patch(
            &format!("/api/v1/memories/{}", t.ids[1]),
            &json!({"importance_score": 0.2 * i as f32, "tags": [format!("round{i}")],
                    "metadata": {"round": i}}),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    for id in t.ids.iter().take(6) {
        assert_eq!(d.get(&format!("/api/v1/memories/{id}")).status, 200);
    }

    let (plain, content_type) = export(&d, "tenant-move", "");
    assert_eq!(content_type, "application/x-ndjson");
    let (packed, content_type) = export(&d, "tenant-move", "?compress=zstd");
    assert_eq!(content_type, "application/zstd");
    assert_eq!(
        zstd::decode_all(&packed[..]).expect("zstd"),
        plain,
        "the compressed export is the same stream"
    );
    let (header, before, footer) = parse_export(&plain);
    assert_eq!(
        header,
        json!({"engram_export": 1, "dimensions": DIMS, "namespace": "tenant-move"})
    );
    assert_eq!(before.len(), 25);
    let versions: usize = before
        .values()
        .map(|m| m["versions"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(
        footer,
        json!({"engram_export_end": true, "memories": 25, "versions": versions})
    );
    // Created, new text, three patches: four past versions, oldest first.
    let past: Vec<u64> = before[&t.ids[1]]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(past, [1, 2, 3, 4]);
    assert!(before.values().any(|m| m["tier"] == "cold"));
    assert!(before.values().any(|m| m["status"] == "deleted"));
    assert!(before.values().any(|m| m["status"] == "superseded"));
    assert!(before
        .values()
        .any(|m| m["access_count"].as_u64() > Some(0)));
    // Vectors as base64: the same memories, with `embedding_b64` for `embedding`.
    let (b64, _) = export(&d, "tenant-move", "?embedding_format=base64");
    let (b64_header, b64_lines, _) = parse_export(&b64);
    assert_eq!(b64_header["engram_export"], 2);
    assert!(
        b64.len() < plain.len(),
        "{} of {} bytes",
        b64.len(),
        plain.len()
    );
    for (id, m) in &b64_lines {
        assert!(m.get("embedding").is_none(), "{m}");
        assert_eq!(
            m["embedding_b64"].is_string(),
            before[id]["embedding"].is_array(),
            "{m}"
        );
    }
    let (packed_b64, _) = export(&d, "tenant-move", "?compress=zstd&embedding_format=base64");
    assert_eq!(zstd::decode_all(&packed_b64[..]).expect("zstd"), b64);
    let (status, bytes, _) = d.request_bytes(
        "GET",
        "/api/v1/namespaces/tenant-move/export?embedding_format=hex",
        None,
        &[],
    );
    let refused: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(
        (status, &refused["error"]["details"]["field"]),
        (400, &json!("embedding_format")),
        "{refused}"
    );

    let r = d.delete("/api/v1/namespaces/tenant-move?purge=true");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(d.get("/api/v1/namespaces/tenant-move").status, 404);

    // Back from the compressed base64 stream: every memory, every version, every field, every
    // bit of every vector (compared below as the float export writes them).
    let (status, reply) = import(&d, "tenant-move", "", &packed_b64, true);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (
            &reply["imported"],
            &reply["versions"],
            &reply["skipped"],
            &reply["complete"]
        ),
        (&json!(25), &json!(versions), &json!(0), &json!(true)),
        "{reply}"
    );
    let (again, _) = export(&d, "tenant-move", "");
    let (_, after, _) = parse_export(&again);
    assert_eq!(after.len(), before.len());
    for (id, m) in &before {
        assert_eq!(after[id], as_imported(m.clone()), "memory {id}");
    }

    // Importing again: every id is held. Skip (the default) lists them; fail stops at the
    // first; replace puts the imported ones in their place.
    let (status, reply) = import(&d, "tenant-move", "", &plain, false);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (&reply["imported"], &reply["skipped"]),
        (&json!(0), &json!(25))
    );
    assert_eq!(reply["conflicts"][0]["code"], "ID_EXISTS", "{reply}");
    assert_eq!(reply["conflicts"][0]["line"], 2, "{reply}");
    let (status, reply) = import(&d, "tenant-move", "?on_conflict=fail", &plain, false);
    assert_eq!(status, 409, "{reply}");
    assert_eq!(reply["error"]["code"], "ID_EXISTS");
    assert_eq!(reply["error"]["details"]["line"], 2);
    assert_eq!(reply["error"]["details"]["imported"], 0);
    let (status, reply) = import(&d, "tenant-move", "?on_conflict=replace", &plain, false);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (&reply["imported"], &reply["replaced"]),
        (&json!(25), &json!(25))
    );
    let (_, after, _) = parse_export(&export(&d, "tenant-move", "").0);
    for (id, m) in &before {
        assert_eq!(after[id], as_imported(m.clone()), "memory {id}");
    }
    // Read back through the API too (reads count accesses, so after the comparisons): a past version, the history, search.
    let r = d.get(&format!("/api/v1/memories/{}?version=1", t.ids[1]));
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["content"]
        .as_str()
        .expect("content")
        .contains(&t.markers[2]));
    let r = d.get(&format!("/api/v1/memories/{}/history", t.ids[1]));
    assert_eq!(r.body["versions"].as_array().expect("versions").len(), 5);
    assert!(!search_ns(&d, "tenant-move", "text").is_empty());

    // Replace never reaches into another namespace: the same ids there are conflicts.
    let (status, reply) = import(&d, "tenant-stay", "?on_conflict=replace", &plain, false);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (&reply["imported"], &reply["skipped"]),
        (&json!(0), &json!(25))
    );
    let r = d.get("/api/v1/namespaces/tenant-stay");
    assert_eq!(r.body["memories"], stay.ids.len(), "{}", r.text);

    // A stream cut short (no last line) imports what arrived and says it is incomplete.
    let r = d.delete("/api/v1/namespaces/tenant-move?purge=true");
    assert_eq!(r.status, 200, "{}", r.text);
    let text = std::str::from_utf8(&plain).expect("UTF-8");
    let half: String = text.lines().take(11).map(|l| format!("{l}\n")).collect();
    let (status, reply) = import(&d, "tenant-move", "", half.as_bytes(), false);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (&reply["imported"], &reply["complete"]),
        (&json!(10), &json!(false))
    );

    // Bad input: 4xx naming the line and the field, never a 5xx.
    let lines: Vec<&str> = text.lines().collect();
    let bad = format!(
        "{}\n{}\n",
        lines[0],
        lines[12].replacen("\"status\":\"", "\"status\":\"bogus-", 1)
    );
    let (status, reply) = import(&d, "tenant-move", "", bad.as_bytes(), false);
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["details"]["field"], "status", "{reply}");
    assert_eq!(reply["error"]["details"]["line"], 2, "{reply}");
    let (status, reply) = import(
        &d,
        "tenant-move",
        "",
        b"{\"engram_export\":1,\"dimensions\":4}\n",
        false,
    );
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["details"]["field"], "dimensions", "{reply}");
    let (status, reply) = import(&d, "tenant-move", "", b"", false);
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["details"]["field"], "body", "{reply}");
    let (status, reply) = import(&d, "tenant-move", "", b"not json\n", false);
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = import(&d, "tenant-move", "", b"\x28\xb5\x2f\xfd garbage", true);
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = import(&d, "tenant-move", "?on_conflict=maybe", &plain, false);
    assert_eq!(
        (status, &reply["error"]["details"]["field"]),
        (400, &json!("on_conflict"))
    );
    let r = d.get("/api/v1/namespaces/tenant-move/export?compress=gzip");
    assert_eq!(r.status, 400, "{}", r.text);
    let r = d.get("/api/v1/namespaces/nobody/export");
    assert_eq!((r.status, r.code()), (404, "NAMESPACE_NOT_FOUND"));
}

#[test]
fn one_namespace_of_a_backup_is_restored_into_the_running_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let backup = dir.path().join("backup");
    let d = start(&data);
    let mut rng = rand::rngs::StdRng::seed_from_u64(31);
    let t = fill(&d, "tenant-back", 12, &mut rng);
    fill(&d, "tenant-other", 4, &mut rng);
    let (_, before, _) = parse_export(&export(&d, "tenant-back", "").0);
    let (_, other_before, _) = parse_export(&export(&d, "tenant-other", "").0);
    let out = ctl(&[
        "backup",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--out",
        backup.to_str().expect("utf-8"),
        "--url",
        &d.url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // After the backup the tenant is damaged, then erased.
    let r = d.patch(
        &format!("/api/v1/memories/{}", t.ids[3]),
        &json!({"content": "overwritten by mistake"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = d.delete("/api/v1/namespaces/tenant-back?purge=true");
    assert_eq!(r.status, 200, "{}", r.text);

    // Back as the backup holds it, every field and version, while the daemon serves.
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            backup.to_str().expect("utf-8"),
            "--namespace",
            "tenant-back",
            "--into",
            &d.url,
            "--json",
        ];
        args.extend(extra);
        let out = ctl(&args);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, report)
    };
    let (out, report) = restore(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["import"]["imported"], before.len(), "{report}");
    let (_, after, _) = parse_export(&export(&d, "tenant-back", "").0);
    assert_eq!(after.len(), before.len());
    for (id, m) in &before {
        assert_eq!(after[id], as_imported(m.clone()), "memory {id}");
    }
    // The other namespace was not touched.
    let (_, other_after, _) = parse_export(&export(&d, "tenant-other", "").0);
    assert_eq!(other_after, other_before);
    // Again: every memory is there already, so each is skipped (the default).
    let (out, report) = restore(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        (&report["import"]["imported"], &report["import"]["skipped"]),
        (&json!(0), &json!(before.len())),
        "{report}"
    );
    // A namespace the backup does not hold, and a daemon that is not there, are errors.
    let out = ctl(&[
        "restore",
        backup.to_str().expect("utf-8"),
        "--namespace",
        "tenant-never",
        "--into",
        &d.url,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no memory"));
    let out = ctl(&[
        "restore",
        backup.to_str().expect("utf-8"),
        "--namespace",
        "tenant-back",
        "--into",
        "http://127.0.0.1:1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
}

#[test]
fn an_import_killed_midway_keeps_whole_memories_and_resumes() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut d = start(&data);
    // 3,000 memories, every 30th with two more versions.
    let mut ids = Vec::new();
    for chunk in 0..3 {
        let items: Vec<Value> = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                json!({"namespace": "tenant-big", "content": format!("memory number {n} of the big tenant"),
                       "embedding": embedding(n as u64, DIMS), "tags": [format!("t{}", n % 7)]})
            })
            .collect();
        let r = d.post("/api/v1/memories/batch", &json!({ "memories": items }));
        assert_eq!(r.status, 200, "{}", r.text);
        ids.extend(
            r.body["results"]
                .as_array()
                .expect("results")
                .iter()
                .map(id_of),
        );
    }
    for id in ids.iter().step_by(30) {
        for importance in [0.2, 0.9] {
            let r = d.patch(
                &format!("/api/v1/memories/{id}"),
                &json!({"importance_score": importance}),
            );
            assert_eq!(r.status, 200, "{}", r.text);
        }
    }
    let (plain, _) = export(&d, "tenant-big", "");
    let (_, before, _) = parse_export(&plain);
    assert_eq!(before.len(), 3000);
    assert_eq!(
        d.delete("/api/v1/namespaces/tenant-big?purge=true").status,
        200
    );

    // Half of the body arrives, then the daemon is killed: the first full batch (1,000
    // memories) was committed, the rest never.
    let half = plain.len() / 2;
    let addr = d.url.trim_start_matches("http://").to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        conn,
        "POST /api/v1/namespaces/tenant-big/import HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        plain.len()
    )
    .expect("request head");
    conn.write_all(&plain[..half]).expect("half the body");
    conn.flush().expect("flush");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let r = d.get("/api/v1/namespaces/tenant-big");
        if r.status == 200 && r.body["memories"] == 1000 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    d.kill9();
    drop(conn);

    let d = start(&data);
    let r = d.get("/api/v1/namespaces/tenant-big");
    assert_eq!(r.body["memories"], 1000, "{}", r.text);
    // Each memory that is there is whole: every field and version as exported.
    let (_, partial, _) = parse_export(&export(&d, "tenant-big", "").0);
    assert_eq!(partial.len(), 1000);
    for (id, m) in &partial {
        assert_eq!(m, &as_imported(before[id].clone()), "memory {id}");
    }
    // Importing the whole export again with skip resumes where it stopped.
    let (status, reply) = import(&d, "tenant-big", "", &plain, false);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (&reply["imported"], &reply["skipped"], &reply["complete"]),
        (&json!(2000), &json!(1000), &json!(true)),
        "{reply}"
    );
    let (_, after, _) = parse_export(&export(&d, "tenant-big", "").0);
    assert_eq!(after.len(), 3000);
    for (id, m) in &before {
        assert_eq!(after[id], as_imported(m.clone()), "memory {id}");
    }
}

#[test]
fn an_export_while_memories_move_and_arrive_holds_each_one_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = std::sync::Arc::new(start(&data));
    let items: Vec<Value> = (0..600)
        .map(|n| {
            json!({"namespace": "tenant-busy", "content": format!("busy memory {n}"),
                   "embedding": embedding(n as u64, DIMS)})
        })
        .collect();
    let r = d.post("/api/v1/memories/batch", &json!({ "memories": items }));
    assert_eq!(r.status, 200, "{}", r.text);
    let ids: Vec<String> = r.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(id_of)
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let moved = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // One thread moves memories through the tiers, another adds new ones.
    let mover = {
        let (d, stop, ids, moved) = (d.clone(), stop.clone(), ids.clone(), moved.clone());
        std::thread::spawn(move || {
            let mut moves = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = &ids[(moves * 7) % ids.len()];
                let tier = ["cold", "warm", "working"][moves % 3];
                let r = d.patch(&format!("/api/v1/memories/{id}"), &json!({"tier": tier}));
                assert_eq!(r.status, 200, "{}", r.text);
                moves += 1;
                moved.store(moves, std::sync::atomic::Ordering::Relaxed);
            }
            moves
        })
    };
    let writer = {
        let (d, stop) = (d.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = d.post(
                    "/api/v1/memories",
                    &json!({"namespace": "tenant-busy", "content": format!("arrived during the export {n}")}),
                );
                assert_eq!(r.status, 201, "{}", r.text);
                n += 1;
            }
            n
        })
    };
    // Exports back to back until 300 moves happened meanwhile.
    let mut round = 0;
    while moved.load(std::sync::atomic::Ordering::Relaxed) < 300 {
        round += 1;
        assert!(round < 10_000, "the mover is stuck");
        let (bytes, _) = export(&d, "tenant-busy", "");
        let text = std::str::from_utf8(&bytes).expect("UTF-8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        let footer = lines.last().expect("footer");
        let memories = &lines[1..lines.len() - 1];
        assert_eq!(footer["memories"], memories.len(), "round {round}");
        let mut seen = std::collections::HashSet::new();
        for m in memories {
            let id = m["id"].as_str().expect("id");
            assert!(seen.insert(id.to_owned()), "round {round}: {id} twice");
        }
        for id in &ids {
            assert!(seen.contains(id), "round {round}: {id} missing");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let moves = mover.join().expect("mover");
    let arrived = writer.join().expect("writer");
    assert!(moves > 0 && arrived > 0, "{moves} moves, {arrived} creates");
}
