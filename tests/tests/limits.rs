//! Descriptor exhaustion: idle connections past the open-file limit must not stop the engine.
//! The daemon serves at most what its descriptor budget allows (the rest wait in the listen
//! backlog), pauses accepting when accept itself runs out of descriptors, logs that once in a
//! while rather than on every attempt, and keeps checkpointing: nothing poisons it.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use engram_tests::Daemon;
use serde_json::json;

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn idle_connections_past_the_open_file_limit_stop_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = [
        ("embedding.dimensions", "4"),
        ("storage.checkpoint_interval", "1s"),
    ];
    let d = Daemon::start_with_open_file_limit(&dir.path().join("data"), &settings, 256);
    for i in 0..20 {
        let r = d.post(
            "/api/v1/memories",
            &json!({"content": format!("before the flood {i}"), "embedding": [1.0, 0.5, 0.25, i]}),
        );
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // More idle connections (nothing sent, no key) than the process may open files.
    // 300: past what 256 descriptors hold, within what the listen backlog (1,024) queues.
    let addr: std::net::SocketAddr = d
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .expect("the daemon accepts or the backlog queues the connection")
        })
        .collect();
    // Checkpoints go on while they are held: two more are logged.
    let before = count(&d.log(), "\"checkpoint\"").max(count(&d.log(), " checkpoint "));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = d.log();
        let now = count(&log, "\"checkpoint\"").max(count(&log, " checkpoint "));
        if now >= before + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint while the connections were held: {}",
            log.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
        // Waiting for another process's background thread, bounded by the deadline.
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(idle);
    // Served again once they are gone, and writable: nothing poisoned the engine.
    let r = d.post(
        "/api/v1/memories",
        &json!({"content": "after the flood", "embedding": [0.5, 0.5, 0.5, 0.5]}),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let health = d.get("/api/v1/health");
    assert_eq!(health.status, 200, "{}", health.text);
    let log = d.log();
    assert_eq!(count(&log, "checkpoint failed"), 0, "{log}");
    assert_eq!(count(&log, "poison"), 0, "{log}");
    assert!(
        count(&log, "accept failed") <= 5,
        "the accept loop floods the log: {} lines",
        count(&log, "accept failed")
    );
}
