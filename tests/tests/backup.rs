//! Backup, verify and restore with the real binaries.
//!
//! A backup is taken with `engramctl backup --url` while 32 writers run against `engramd`;
//! `engramctl verify` passes on it and fails, naming the file, after a bit flip in each kind of
//! backup file; the original data directory is deleted and `engramctl restore` brings back
//! every write acknowledged before the backup began; a second backup copies only what changed;
//! restore refuses a non-empty target and a moment outside the backup's range.

use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engram_tests::{ctl, Daemon};
use serde_json::{json, Value};

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "engramctl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("engramctl --json prints JSON")
}

fn copy_tree(src: &Path, dst: &Path) {
    for entry in std::fs::read_dir(src).expect("read_dir") {
        let entry = entry.expect("entry");
        let to = dst.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&to).expect("mkdir");
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
}

fn flip_bit(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    b[0] ^= 0x08;
    f.write_all_at(&b, at).expect("write");
}

fn find(dir: &Path, pred: &dyn Fn(&str) -> bool) -> std::path::PathBuf {
    for entry in walk(dir) {
        if pred(&entry.to_string_lossy()) {
            return entry;
        }
    }
    panic!("no matching file under {}", dir.display());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn backup_under_load_verify_restore_after_losing_the_original() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let backup = root.path().join("backup");
    let settings = [("embedding.dimensions", "16"), ("working.capacity", "2000")];
    let mut d = Daemon::start(&data, &settings);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..32)
        .map(|w| {
            let (acked, stop, url) = (Arc::clone(&acked), Arc::clone(&stop), d.url.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(30))
                    .build();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let content = format!("writer {w} memory {n}");
                    let body =
                        json!({"content": content, "embedding": vec![(w + 1) as f32 / 32.0; 16]});
                    let r = match agent
                        .post(&format!("{url}/api/v1/memories"))
                        .send_json(body)
                    {
                        Ok(r) => r,
                        Err(ureq::Error::Status(code, r)) => {
                            panic!(
                                "create answered {code}: {}",
                                r.into_string().unwrap_or_default()
                            )
                        }
                        Err(e) => panic!("create failed: {e}"),
                    };
                    let v: Value = r.into_json().expect("json");
                    acked
                        .lock()
                        .expect("lock")
                        .push((v["id"].as_str().expect("id").to_owned(), content));
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while acked.lock().expect("lock").len() < 3000 {
        assert!(
            std::time::Instant::now() < deadline,
            "writers stalled: {}",
            d.log()
        );
        assert!(
            !writers.iter().any(|w| w.is_finished()),
            "a writer died: {}",
            d.log()
        );
        std::thread::yield_now();
    }
    let before_backup: Vec<(String, String)> = acked.lock().expect("lock").clone();
    let report = ok_json(&ctl(&[
        "backup",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--out",
        backup.to_str().expect("utf8"),
        "--url",
        &d.url,
        "--json",
    ]));
    let during = acked.lock().expect("lock").len();
    assert!(
        during > before_backup.len(),
        "writes went on while the backup ran"
    );
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    assert!(report["snapshot_lsn"].as_u64().expect("lsn") >= before_backup.len() as u64);
    let verified = ok_json(&ctl(&["verify", backup.to_str().expect("utf8"), "--json"]));
    assert_eq!(verified["ok"], true);

    // verify names the file after a bit flip in each kind of backup file.
    type FilePicker = Box<dyn Fn(&str) -> bool>;
    let kinds: Vec<(&str, FilePicker)> = vec![
        (
            "working dump",
            Box::new(|p: &str| p.ends_with("working.dump")),
        ),
        (
            "RocksDB table",
            Box::new(|p: &str| p.contains("/warm/") && p.ends_with(".sst")),
        ),
        (
            "snapshot manifest",
            Box::new(|p: &str| p.ends_with("MANIFEST.json")),
        ),
        (
            "WAL segment",
            Box::new(|p: &str| p.contains("/backup-copy/wal/") && p.ends_with(".wal")),
        ),
    ];
    for (kind, pred) in &kinds {
        let copy = root.path().join("backup-copy");
        std::fs::create_dir_all(&copy).expect("mkdir");
        copy_tree(&backup, &copy);
        let victim = find(&copy, pred.as_ref());
        let len = std::fs::metadata(&victim).expect("meta").len();
        flip_bit(&victim, len / 2);
        let out = ctl(&["verify", copy.to_str().expect("utf8")]);
        assert!(
            !out.status.success(),
            "verify missed a flipped bit in the {kind}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = victim
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            stderr.contains(&name),
            "verify does not name {name} ({kind}): {stderr}"
        );
        // restore refuses it too, naming the file, before writing anything.
        let target = root.path().join("restore-from-damaged");
        let out = ctl(&[
            "restore",
            copy.to_str().expect("utf8"),
            "--target-dir",
            target.to_str().expect("utf8"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "restore used a backup with a flipped bit in the {kind}"
        );
        assert!(
            stderr.contains(&name),
            "restore does not name {name} ({kind}): {stderr}"
        );
        assert!(
            !target.exists(),
            "restore wrote {} before refusing",
            target.display()
        );
        std::fs::remove_dir_all(&copy).expect("cleanup");
    }

    // Lose the original; restore from the backup alone.
    assert!(d.terminate().success());
    std::fs::remove_dir_all(&data).expect("delete the original data dir");
    let restored = root.path().join("restored");
    let r = ok_json(&ctl(&[
        "restore",
        backup.to_str().expect("utf8"),
        "--target-dir",
        restored.to_str().expect("utf8"),
        "--json",
    ]));
    assert!(r["restored_lsn"].as_u64().expect("lsn") >= r["snapshot_lsn"].as_u64().expect("lsn"));
    let d = Daemon::start(&restored, &settings);
    for (id, content) in &before_backup {
        let got = d.get(&format!("/api/v1/memories/{id}"));
        assert_eq!(
            got.status, 200,
            "memory {id} acknowledged before the backup is missing"
        );
        assert_eq!(got.body["content"].as_str(), Some(content.as_str()));
    }
    drop(d);

    // Restore refuses a non-empty target and a moment outside the range, saying the range.
    let out = ctl(&[
        "restore",
        backup.to_str().expect("utf8"),
        "--target-dir",
        restored.to_str().expect("utf8"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    let out = ctl(&[
        "restore",
        backup.to_str().expect("utf8"),
        "--target-dir",
        root.path().join("r2").to_str().expect("utf8"),
        "--to-lsn",
        "999999999",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the backup's range: LSN"));
    let out = ctl(&[
        "restore",
        backup.to_str().expect("utf8"),
        "--target-dir",
        root.path().join("r3").to_str().expect("utf8"),
        "--to-time",
        "2001-01-01T00:00:00Z",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside the backup's range"));
}

#[test]
fn second_backup_is_incremental_and_offline_backup_needs_a_stopped_daemon() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let backup = root.path().join("backup");
    // Small segments so closed segments exist to be skipped the second time.
    let settings = [("wal.segment_bytes", "16777216")];
    let mut d = Daemon::start(&data, &settings);
    // 24 MB of WAL: more than one 16 MiB segment, so a closed segment exists to be skipped.
    let batch: Vec<Value> = (0..8000)
        .map(|i| json!({"content": format!("first {i} {}", "x".repeat(3000))}))
        .collect();
    for chunk in batch.chunks(500) {
        assert_eq!(
            d.post("/api/v1/memories/batch", &json!({"memories": chunk}))
                .status,
            200
        );
    }
    let running = ctl(&[
        "backup",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--out",
        backup.to_str().expect("utf8"),
    ]);
    assert!(
        !running.status.success(),
        "an offline backup of a running daemon's directory is refused"
    );
    assert!(String::from_utf8_lossy(&running.stderr).contains("--url"));
    assert!(d.terminate().success());
    let first = ok_json(&ctl(&[
        "backup",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--out",
        backup.to_str().expect("utf8"),
        "--json",
    ]));
    let d = Daemon::start(&data, &settings);
    for i in 0..10 {
        assert_eq!(
            d.post(
                "/api/v1/memories",
                &json!({"content": format!("second {i}")})
            )
            .status,
            201
        );
    }
    let second = ok_json(&ctl(&[
        "backup",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--out",
        backup.to_str().expect("utf8"),
        "--url",
        &d.url,
        "--json",
    ]));
    assert_ne!(first["snapshot"], second["snapshot"]);
    assert!(
        second["skipped_files"].as_u64().expect("n") >= 1,
        "closed segments are not copied again: {second}"
    );
    assert!(
        second["copied_bytes"].as_u64() < first["copied_bytes"].as_u64(),
        "{first} vs {second}"
    );
    assert_eq!(
        ok_json(&ctl(&["verify", backup.to_str().expect("utf8"), "--json"]))["ok"],
        true
    );
}

#[test]
fn scheduled_snapshots_are_taken_and_only_the_newest_are_kept() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let d = Daemon::start(
        &data,
        &[
            ("backup.snapshot_interval", "1s"),
            ("backup.snapshots_kept", "2"),
        ],
    );
    let mut seen = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while seen.len() < 4 {
        i += 1;
        assert_eq!(
            d.post("/api/v1/memories", &json!({"content": format!("tick {i}")}))
                .status,
            201
        );
        let list = d.get("/api/v1/admin/snapshots");
        assert_eq!(list.status, 200);
        let snaps = list.body["snapshots"].as_array().expect("array");
        // A new snapshot is listed a moment before the oldest is pruned.
        assert!(
            snaps.len() <= 3,
            "at most snapshots_kept (+1 being pruned) are kept: {}",
            list.text
        );
        for s in snaps {
            seen.insert(s["id"].as_str().expect("id").to_owned());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} scheduled snapshots in 60 s",
            seen.len()
        );
        // Polling the daemon's state, bounded by the deadline above.
        std::thread::sleep(Duration::from_millis(100));
    }
    let dirs = std::fs::read_dir(data.join("snapshots"))
        .expect("snapshots dir")
        .count();
    assert!(
        dirs <= 3,
        "pruned snapshot directories are removed ({dirs} left)"
    );
}

/// A backup reaches back to the oldest snapshot the data directory keeps, and a stopped
/// daemon's data directory is itself a restore source (its kept snapshots and archive): a
/// moment between an old snapshot and the backup is restorable both ways.
#[test]
fn restore_reaches_back_to_the_oldest_kept_snapshot() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let settings = [("embedding.dimensions", "4")];
    let mut d = Daemon::start(&data, &settings);
    let write = |d: &Daemon, group: &str| -> Vec<String> {
        (0..5)
            .map(|i| {
                let r = d.post(
                    "/api/v1/memories",
                    &json!({"content": format!("{group} {i}"), "embedding": [1.0, 0.5, 0.25, i]}),
                );
                assert_eq!(r.status, 201, "{}", r.text);
                r.body["id"].as_str().expect("id").to_owned()
            })
            .collect()
    };
    let a = write(&d, "before the snapshot");
    let snap = d.post("/api/v1/admin/snapshots", &json!({}));
    assert_eq!(snap.status, 201, "{}", snap.text);
    let b = write(&d, "after the snapshot");
    let listed = d.get("/api/v1/admin/snapshots").body;
    assert_eq!(
        listed["restorable_from"], snap.body["commit_time"],
        "{listed}"
    );
    assert!(d.terminate().success());
    // The moment of B's last record, from the log itself.
    let dump = ctl(&[
        "wal",
        "dump",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--json",
    ]);
    assert!(dump.status.success());
    let moment_us = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .find(|r| r["record"]["id"] == b[4].as_str() && r["record"]["op"] == "create")
        .and_then(|r| r["commit_time_us"].as_i64())
        .expect("B's last create is in the log");
    let mut d = Daemon::start(&data, &settings);
    let c = write(&d, "after the moment");
    assert!(d.terminate().success());
    let inspect = ctl(&["wal", "inspect", "--data-dir", data.to_str().expect("utf8")]);
    let text = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        text.contains("restorable window:") && text.contains(snap.body["id"].as_str().expect("id")),
        "{text}"
    );
    // An offline backup takes a fresh snapshot after C, and keeps the older one too.
    let backup = root.path().join("backup");
    let report = ok_json(&ctl(&[
        "backup",
        "--data-dir",
        data.to_str().expect("utf8"),
        "--out",
        backup.to_str().expect("utf8"),
        "--json",
    ]));
    assert_eq!(
        report["snapshots"].as_array().expect("list").len(),
        2,
        "{report}"
    );
    let moment = engram_tests::rfc3339(moment_us);
    for (source, name) in [(&backup, "from-backup"), (&data, "from-data-dir")] {
        let target = root.path().join(name);
        let out = ctl(&[
            "restore",
            source.to_str().expect("utf8"),
            "--target-dir",
            target.to_str().expect("utf8"),
            "--to-time",
            &moment,
        ]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let d = Daemon::start(&target, &settings);
        for id in a.iter().chain(&b) {
            assert_eq!(
                d.get(&format!("/api/v1/memories/{id}")).status,
                200,
                "{name}: {id}"
            );
        }
        for id in &c {
            assert_eq!(
                d.get(&format!("/api/v1/memories/{id}")).status,
                404,
                "{name}: {id}"
            );
        }
    }
}
