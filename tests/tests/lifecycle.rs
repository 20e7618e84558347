//! Daemon lifecycle against the real binary: graceful SIGTERM shutdown and restart keep every
//! memory; a second daemon on the same data directory is refused by the lock file; an invalid
//! configuration refuses to start with a message naming the key; `engramctl wal` reads what the
//! daemon wrote.

use std::process::{Command, Stdio};

use engram_tests::{embedding, engramctl_path, engramd_path, Daemon};
use serde_json::json;

#[test]
fn sigterm_exits_zero_and_restart_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let settings = [("working.capacity", "50"), ("embedding.dimensions", "16")];
    let mut d = Daemon::start(&data, &settings);
    let mut expected = Vec::new();
    for i in 0..200u64 {
        let r = d.post(
            "/api/v1/memories",
            &json!({"content": format!("memory {i}"), "embedding": embedding(i, 16), "tags": [format!("t{}", i % 4)]}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        expected.push(r.body.clone());
    }
    let victim = expected[7]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        d.delete(&format!("/api/v1/memories/{victim}?purge=true"))
            .status,
        200
    );
    let status = d.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let d = Daemon::start(&data, &settings);
    let health = d.get("/api/v1/health");
    assert_eq!(
        health.body["tiers"]["working"].as_u64().expect("n")
            + health.body["tiers"]["warm"].as_u64().expect("n"),
        199
    );
    for (i, m) in expected.iter().enumerate() {
        let id = m["id"].as_str().expect("id");
        let r = d.get(&format!("/api/v1/memories/{id}?include_embedding=true"));
        if id == victim {
            assert_eq!(r.status, 404, "purged stays purged");
            continue;
        }
        assert_eq!(r.status, 200);
        assert_eq!(r.body["content"], m["content"]);
        assert_eq!(r.body["created_at"], m["created_at"]);
        assert_eq!(r.body["tags"], m["tags"]);
        let e: Vec<f32> = serde_json::from_value(r.body["embedding"].clone()).expect("embedding");
        assert_eq!(e, embedding(i as u64, 16));
    }
    // Dedup survives restart.
    assert_eq!(
        d.post("/api/v1/memories", &json!({"content": "memory 3"}))
            .status,
        409
    );
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = Daemon::start(&data, &[]);
    let out = Command::new(engramd_path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", engram_tests::free_port()))
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .expect("run a second engramd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("locked by another process"), "{stderr}");
    assert_eq!(
        d.get("/api/v1/health").status,
        200,
        "the first daemon is unaffected"
    );
}

#[test]
fn invalid_configuration_refuses_to_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("engram.toml");
    std::fs::write(&config, "[wal]\nsync = \"sometimes\"\n").expect("write config");
    // (arguments, environment, the key the error must name)
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--config".into(), config.display().to_string()],
            vec![],
            "wal.sync",
        ),
        (
            vec!["--set".into(), "embedding.dimensions=0".into()],
            vec![],
            "embedding.dimensions",
        ),
        (
            vec!["--listen".into(), "not-an-address".into()],
            vec![],
            "listen",
        ),
        (
            vec![],
            vec![("ENGRAM_WORKING_CAPACITY", "lots")],
            "working.capacity",
        ),
        (
            vec![],
            vec![("ENGRAM_WAL_SNYC", "always")],
            "ENGRAM_WAL_SNYC",
        ),
        (
            vec!["--set".into(), "no.such.key=1".into()],
            vec![],
            "no.such.key",
        ),
    ];
    for (args, env, key) in cases {
        let mut cmd = Command::new(engramd_path());
        cmd.args(&args)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run engramd");
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(key),
            "{args:?}: stderr does not name {key}: {stderr}"
        );
    }
    assert!(
        !dir.path().join("data").join("wal").exists(),
        "nothing was created"
    );
}

#[test]
fn engramctl_reads_the_wal_the_daemon_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut d = Daemon::start(&data, &[]);
    let mut ids = Vec::new();
    for i in 0..25 {
        let r = d.post("/api/v1/memories", &json!({"content": format!("wal {i}")}));
        ids.push(r.body["id"].as_str().expect("id").to_owned());
    }
    let purged = &ids[3];
    assert_eq!(
        d.delete(&format!("/api/v1/memories/{purged}?purge=true"))
            .status,
        200
    );
    // Kill, so the records are still in the active WAL (a clean stop would checkpoint them away).
    d.kill9();
    let out = Command::new(engramctl_path())
        .args(["wal", "dump", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run engramctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let lsns: Vec<u64> = lines
        .iter()
        .map(|l| l["lsn"].as_u64().expect("lsn"))
        .collect();
    assert!(
        lsns.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive LSNs: {lsns:?}"
    );
    let created: Vec<&str> = lines
        .iter()
        .filter(|l| l["record"]["op"] == "create")
        .map(|l| l["record"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(created, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(lines
        .iter()
        .any(|l| l["record"]["op"] == "purge" && l["record"]["id"] == purged.as_str()));
    let out = Command::new(engramctl_path())
        .args(["wal", "inspect", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run engramctl");
    let segments: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let total: u64 = segments
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s["records"].as_u64().expect("n"))
        .sum();
    assert_eq!(total as usize, lines.len());
    let missing = Command::new(engramctl_path())
        .args(["wal", "inspect", "--data-dir"])
        .arg(dir.path().join("nope"))
        .output()
        .expect("run engramctl");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("is not a directory"));
}
