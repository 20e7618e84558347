//! `engramctl export` → `engramctl import` is lossless: a store with memories in both tiers, of
//! every status, with vectors, tags, metadata, parents, expiry and access counts is exported
//! (plain and zstd), imported into a new data directory, and every memory compares equal field
//! by field through the API. Also: export refuses a running daemon's directory.

use std::process::Command;

use engram_tests::{embedding, engramctl_path, Daemon};
use serde_json::{json, Value};

fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(engramctl_path())
        .args(args)
        .output()
        .expect("run engramctl")
}

fn everything(d: &Daemon) -> Vec<Value> {
    let mut all = d.list_all("&include_embedding=true");
    all.extend(d.list_all("&include_embedding=true&status=deleted"));
    all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    all
}

#[test]
fn export_then_import_yields_an_identical_store() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let settings = [("embedding.dimensions", "8"), ("working.capacity", "30")];
    let mut d = Daemon::start(&data, &settings);
    let mut ids = Vec::new();
    for i in 0..80u64 {
        let mut body = json!({
            "namespace": format!("ns{}", i % 3),
            "content": format!("memory {i} ✓ \"quoted\" \\ back"),
            "importance_score": (i % 10) as f64 / 10.0,
            "tags": [format!("t{}", i % 4), "all"],
            "metadata": {"i": i, "nested": {"f": 0.1 + i as f64, "s": "x"}},
            "created_at": "2023-05-08T13:56:00.123456Z",
        });
        if i % 2 == 0 {
            body["embedding"] = json!(embedding(i, 8));
        }
        if i % 5 == 0 {
            body["expires_at"] = json!("2031-01-01T00:00:00Z");
        }
        if i > 0 && i % 7 == 0 {
            body["parent_id"] = json!(ids[0]);
        }
        let r = d.post("/api/v1/memories", &body);
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["id"].as_str().expect("id").to_owned());
    }
    for (i, id) in ids.iter().enumerate() {
        match i % 9 {
            0 => assert_eq!(d.delete(&format!("/api/v1/memories/{id}")).status, 200),
            1 => assert_eq!(
                d.patch(
                    &format!("/api/v1/memories/{id}"),
                    &json!({"status": "archived"})
                )
                .status,
                200
            ),
            2 => {
                for _ in 0..3 {
                    assert_eq!(d.get(&format!("/api/v1/memories/{id}")).status, 200);
                }
            }
            3 => assert_eq!(
                d.patch(&format!("/api/v1/memories/{id}"), &json!({"tier": "warm"}))
                    .status,
                200
            ),
            _ => {}
        }
    }
    assert!(d.terminate().success());
    let d = Daemon::start(&data, &settings);
    let before = everything(&d);
    assert_eq!(before.len(), 80);
    assert!(
        before.iter().any(|m| m["tier"] == "warm") && before.iter().any(|m| m["tier"] == "working")
    );
    let refused = ctl(&[
        "export",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--out",
        root.path().join("x.jsonl").to_str().expect("utf8"),
    ]);
    assert!(!refused.status.success(), "export needs the daemon stopped");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("running engramd"));
    drop(d);

    // Floats in the plain file, base64 vectors in the compressed one: both come back whole.
    for (name, vectors) in [("export.jsonl", "float"), ("export.jsonl.zst", "base64")] {
        let file = root.path().join(name);
        let out = ctl(&[
            "export",
            "--data-dir",
            data.to_str().expect("utf8"),
            "--out",
            file.to_str().expect("utf8"),
            "--embedding-format",
            vectors,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(report["exported"], 80);
        if vectors == "base64" {
            let text = zstd::decode_all(&std::fs::read(&file).expect("read")[..]).expect("zstd");
            let text = String::from_utf8(text).expect("utf8");
            assert!(text.starts_with("{\"engram_export\":2,"), "{text:.80}");
            assert!(text.contains("\"embedding_b64\":\"") && !text.contains("\"embedding\":"));
        }
        let target = root.path().join(format!("imported-{name}"));
        let out = ctl(&[
            "import",
            "--data-dir",
            target.to_str().expect("utf8"),
            file.to_str().expect("utf8"),
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let d = Daemon::start(&target, &settings);
        let after = everything(&d);
        assert_eq!(after.len(), before.len());
        for (a, b) in before.iter().zip(&after) {
            assert_eq!(a, b, "{name}: memory differs after the round trip");
        }
        // Importing the same export again refuses every memory (ids exist) and says so.
        drop(d);
        let again = ctl(&[
            "import",
            "--data-dir",
            target.to_str().expect("utf8"),
            file.to_str().expect("utf8"),
            "--json",
        ]);
        assert!(!again.status.success());
    }
    let ns = root.path().join("ns1.jsonl");
    let out = ctl(&[
        "export",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--out",
        ns.to_str().expect("utf8"),
        "--namespace",
        "ns1",
    ]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&ns).expect("read");
    let mut lines = text.lines();
    assert!(lines
        .next()
        .expect("header")
        .contains("\"engram_export\":1"));
    let mut memories: Vec<&str> = lines.collect();
    let footer = memories.pop().expect("footer");
    assert!(
        footer.starts_with("{\"engram_export_end\":true,\"memories\":")
            && footer.contains(&format!("\"memories\":{},", memories.len())),
        "{footer}"
    );
    assert!(!memories.is_empty() && memories.iter().all(|l| l.contains("\"namespace\":\"ns1\"")));
}

#[test]
fn check_passes_a_healthy_store_and_names_damage() {
    use std::os::unix::fs::FileExt;
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    // Every memory stays in the working tier, so the first heap entry is live.
    let mut d = Daemon::start(&data, &[]);
    for i in 0..40 {
        assert_eq!(
            d.post("/api/v1/memories", &json!({"content": format!("c{i}")}))
                .status,
            201
        );
    }
    let running = ctl(&["check", "--data-dir", data.to_str().expect("utf8")]);
    assert!(
        !running.status.success(),
        "check refuses a running daemon's directory"
    );
    assert!(d.terminate().success());
    let ok = ctl(&[
        "check",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--json",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report: Value = serde_json::from_slice(&ok.stdout).expect("json");
    assert_eq!(report["ok"], true);
    assert_eq!(
        report["working"].as_u64().expect("n") + report["warm"].as_u64().expect("n"),
        40
    );
    // Damage a checkpointed working-tier memory's heap entry.
    let heap = data.join("working").join("heap-0.bin");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&heap)
        .expect("heap");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 20).expect("read");
    b[0] ^= 0x01;
    f.write_all_at(&b, 20).expect("write");
    let bad = ctl(&["check", "--data-dir", data.to_str().expect("utf8")]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("checksum"), "{stderr}");
}
