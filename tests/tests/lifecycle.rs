//! Daemon lifecycle against the real binary: graceful SIGTERM shutdown and restart keep every
//! memory; a second daemon on the same data directory is refused by the lock file; an invalid
//! configuration refuses to start with a message naming the key.

use std::process::{Command, Stdio};

use engram_tests::{embedding, engramd_path, Daemon};
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
