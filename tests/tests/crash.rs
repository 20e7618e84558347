//! Crash safety: 32 clients run a mixed load against a real `engramd` — single and batch
//! creates, updates, soft deletes, purges, moves to warm and cold (seals), and now and then a
//! snapshot, a tier migration or a cold compaction — while checkpoints run every second; the
//! daemon is killed with `kill -9` at a random moment, restarted, and compared with an oracle.
//!
//! Each client owns the memories it created, so each memory's history is sequential: the
//! oracle holds its last acknowledged state, and the change that was in flight when the daemon
//! died (which may or may not have happened). After every restart each memory must be in one of
//! those two states, whole (every memory changed since the last check, and a sample of about
//! 2,000 others); every fifth cycle (and at the end) the whole store is checked, and it must
//! hold nothing a client did not send.
//!
//! `ENGRAM_CRASH_CYCLES` sets the number of cycles (default 20; `scripts/crash-campaign.sh`
//! runs a thousand), `ENGRAM_CRASH_FULL_EVERY` how often the whole store is checked (default
//! every 5th cycle), `ENGRAM_CRASH_SEED` replays a run.

#![allow(
    clippy::result_large_err,
    reason = "the closures return ureq's own Result; its error type is not ours to shrink"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_tests::{embedding, Daemon};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const CLIENTS: usize = 32;
const DIMS: usize = 32;
const IMPORTANCE: [f32; 5] = [0.1, 0.25, 0.5, 0.75, 0.9];

/// What a memory holds, as far as the oracle follows it.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Live {
        content: String,
        importance: f32,
        tags: Vec<String>,
        /// Seed of its embedding (see `engram_tests::embedding`).
        emb: u64,
    },
    Deleted {
        content: String,
    },
    Purged,
}

impl State {
    /// Whether a GET's answer (`None`: 404) shows this state, every field of it.
    fn shown_by(&self, body: Option<&Value>) -> bool {
        let Some(body) = body else {
            return *self == State::Purged;
        };
        match self {
            State::Purged => false,
            State::Deleted { content } => {
                body["status"] == "deleted" && body["content"].as_str() == Some(content)
            }
            State::Live {
                content,
                importance,
                tags,
                emb,
            } => {
                let mut found: Vec<&str> = body["tags"]
                    .as_array()
                    .map(|t| t.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                found.sort_unstable();
                let vector: Option<Vec<f32>> =
                    serde_json::from_value(body["embedding"].clone()).ok();
                body["status"] != "deleted"
                    && body["content"].as_str() == Some(content)
                    && body["importance_score"].as_f64().map(|x| x as f32) == Some(*importance)
                    && found == *tags
                    && vector == Some(embedding(*emb, DIMS))
            }
        }
    }

    fn content(&self) -> Option<&str> {
        match self {
            State::Live { content, .. } | State::Deleted { content } => Some(content),
            State::Purged => None,
        }
    }
}

/// One memory: its id, its last acknowledged state, and a change that was in flight when the
/// daemon died.
#[derive(Debug, Clone)]
struct Tracked {
    id: String,
    acked: State,
    maybe: Option<State>,
    /// Changed since the last check.
    dirty: bool,
}

/// A client's memories and counters, carried from cycle to cycle.
#[derive(Debug, Default)]
struct Client {
    memories: Vec<Tracked>,
    ops: u64,
    acked: u64,
}

#[derive(Debug, Default)]
struct Summary {
    acked: u64,
    restarts_ms: Vec<u128>,
}

#[test]
fn kill_9_under_mixed_load_loses_no_acknowledged_write() {
    let cycles: usize = std::env::var("ENGRAM_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("ENGRAM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    let full_every: usize = std::env::var("ENGRAM_CRASH_FULL_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    println!("crash test: {cycles} cycles, seed {seed} (ENGRAM_CRASH_SEED={seed} to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // A small working tier and a fast policy, so evictions, migrations and seals run during
    // the crashes too; checkpoints every second.
    let settings = [
        ("embedding.dimensions", "32"),
        ("working.capacity", "500"),
        ("storage.checkpoint_interval", "1s"),
        ("tier_migration.interval", "1s"),
        ("tier_migration.working_to_warm_after", "2s"),
        ("tier_migration.warm_to_cold_after", "4s"),
        ("tier_migration.min_importance_to_stay_warm", "0.8"),
        ("backup.snapshots_kept", "2"),
    ];
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::default()).collect();
    let mut summary = Summary::default();
    for cycle in 0..cycles {
        let started = Instant::now();
        let mut d = Daemon::start(&data, &settings);
        summary.restarts_ms.push(started.elapsed().as_millis());
        let full = cycle % full_every == full_every - 1;
        verify(&d, &mut clients, &mut rng, cycle, full);
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = std::mem::take(&mut clients)
            .into_iter()
            .enumerate()
            .map(|(c, client)| {
                let (url, stop) = (d.url.clone(), Arc::clone(&stop));
                let client_seed = rng.random::<u64>();
                std::thread::spawn(move || run_client(&url, c, cycle, client, &stop, client_seed))
            })
            .collect();
        let run_ms = rng.random_range(100..900);
        std::thread::sleep(Duration::from_millis(run_ms));
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        clients = handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect();
        let acked: u64 = clients.iter().map(|c| c.acked).sum();
        println!(
            "cycle {cycle}: serving after {} ms, killed after {run_ms} ms, {} acknowledged writes so far ({} this cycle), cycle took {} ms",
            summary.restarts_ms[cycle],
            acked,
            acked - summary.acked,
            started.elapsed().as_millis()
        );
        assert!(
            acked > summary.acked || cycle == 0 || run_ms < 200,
            "no progress in cycle {cycle}; daemon log:\n{}",
            d.log()
        );
        summary.acked = acked;
    }
    let d = Daemon::start(&data, &settings);
    verify(&d, &mut clients, &mut rng, cycles, true);
    let mut restarts = summary.restarts_ms.clone();
    restarts.sort_unstable();
    let ops: u64 = clients.iter().map(|c| c.ops).sum();
    println!(
        "crash campaign: {cycles} cycles, {ops} requests, {} acknowledged writes, 0 lost; restart p50 {} ms, max {} ms; seed {seed}",
        summary.acked,
        restarts.get(restarts.len() / 2).copied().unwrap_or(0),
        restarts.last().copied().unwrap_or(0),
    );
    assert!(summary.acked > 0);
}

/// One client's load until the daemon dies. Returns its oracle.
fn run_client(
    url: &str,
    c: usize,
    cycle: usize,
    mut client: Client,
    stop: &AtomicBool,
    seed: u64,
) -> Client {
    let mut rng = StdRng::seed_from_u64(seed);
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let namespace = format!("c{}", c % 4);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        client.ops += 1;
        let fresh = |n: u64, k: usize| format!("cycle {cycle} client {c} write {n}.{k}");
        let live: Vec<usize> = (0..client.memories.len())
            .filter(|&i| matches!(client.memories[i].acked, State::Live { .. }))
            .collect();
        let pick = rng.random_range(0..100);
        // Past a few hundred live memories a client purges instead of creating, so a long
        // campaign's store (and its checks) stay the same size.
        let pick = if live.len() > 300 && pick < 40 {
            80
        } else {
            pick
        };
        let outcome = if pick < 40 || live.is_empty() {
            create(
                &agent,
                url,
                &namespace,
                &mut client,
                vec![fresh(n, 0)],
                &mut rng,
                cycle,
            )
        } else if pick < 50 {
            let k = rng.random_range(2..=8);
            let contents = (0..k).map(|i| fresh(n, i)).collect();
            create(
                &agent,
                url,
                &namespace,
                &mut client,
                contents,
                &mut rng,
                cycle,
            )
        } else if pick < 70 {
            let i = live[rng.random_range(0..live.len())];
            let mut tags = vec![format!("client{c}"), format!("v{n}")];
            tags.sort();
            let (content, emb) = (fresh(n, 0), rng.random::<u64>());
            let importance = IMPORTANCE[rng.random_range(0..IMPORTANCE.len())];
            let body = json!({"content": content, "importance_score": importance, "tags": tags, "embedding": embedding(emb, DIMS)});
            let next = State::Live {
                content,
                importance,
                tags,
                emb,
            };
            let id = client.memories[i].id.clone();
            change(&mut client.memories[i], next, || {
                agent
                    .request("PATCH", &format!("{url}/api/v1/memories/{id}"))
                    .send_json(body)
            })
        } else if pick < 78 {
            let i = live[rng.random_range(0..live.len())];
            let content = client.memories[i].acked.content().expect("live").to_owned();
            let id = client.memories[i].id.clone();
            change(&mut client.memories[i], State::Deleted { content }, || {
                agent.delete(&format!("{url}/api/v1/memories/{id}")).call()
            })
        } else if pick < 83 {
            let i = rng.random_range(0..client.memories.len());
            if client.memories[i].acked == State::Purged {
                continue;
            }
            let id = client.memories[i].id.clone();
            change(&mut client.memories[i], State::Purged, || {
                agent
                    .delete(&format!("{url}/api/v1/memories/{id}?purge=true"))
                    .call()
            })
        } else if pick < 97 {
            // A move changes no field the oracle follows; the memory must come through whole.
            let i = live[rng.random_range(0..live.len())];
            let tier = if rng.random_bool(0.5) { "warm" } else { "cold" };
            let id = client.memories[i].id.clone();
            let r = agent
                .request("PATCH", &format!("{url}/api/v1/memories/{id}"))
                .send_json(json!({ "tier": tier }));
            match r {
                Ok(_) => Outcome::Done,
                // Busy: the memory changed while moving; nothing was moved.
                Err(ureq::Error::Status(503, r)) => {
                    let text = r.into_string().unwrap_or_default();
                    assert!(!text.contains("restart"), "cycle {cycle}: move: {text}");
                    Outcome::Done
                }
                Err(e) => Outcome::from_error(e, cycle, "move"),
            }
        } else if c == 0 {
            admin(&agent, url, &mut rng, cycle)
        } else {
            continue;
        };
        match outcome {
            Outcome::Done => {}
            Outcome::Acked(k) => client.acked += k,
            Outcome::Died => break,
        }
    }
    client
}

enum Outcome {
    Done,
    Acked(u64),
    Died,
}

impl Outcome {
    /// A request that failed: the daemon died mid-request (never acknowledged), or a bug.
    fn from_error(e: ureq::Error, cycle: usize, what: &str) -> Outcome {
        match e {
            ureq::Error::Transport(_) => Outcome::Died,
            ureq::Error::Status(code, r) => panic!(
                "cycle {cycle}: {what} answered {code}: {}",
                r.into_string().unwrap_or_default()
            ),
        }
    }
}

/// Creates memories (one, or a batch); the acknowledged ones join the oracle.
fn create(
    agent: &ureq::Agent,
    url: &str,
    namespace: &str,
    client: &mut Client,
    contents: Vec<String>,
    rng: &mut StdRng,
    cycle: usize,
) -> Outcome {
    let items: Vec<(String, u64, f32)> = contents
        .into_iter()
        .map(|content| {
            let importance = IMPORTANCE[rng.random_range(0..IMPORTANCE.len())];
            (content, rng.random(), importance)
        })
        .collect();
    let body = |(content, seed, importance): &(String, u64, f32)| json!({"content": content, "namespace": namespace, "embedding": embedding(*seed, DIMS), "importance_score": importance, "tags": ["new"]});
    let result = if items.len() == 1 {
        agent
            .post(&format!("{url}/api/v1/memories"))
            .send_json(body(&items[0]))
    } else {
        let batch: Vec<Value> = items.iter().map(body).collect();
        agent
            .post(&format!("{url}/api/v1/memories/batch"))
            .send_json(json!({ "memories": batch }))
    };
    let v: Value = match result {
        Ok(r) => r.into_json().expect("json"),
        Err(e) => return Outcome::from_error(e, cycle, "create"),
    };
    let ids: Vec<String> = if items.len() == 1 {
        vec![v["id"].as_str().expect("id").to_owned()]
    } else {
        v["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                r["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("batch item refused: {r}"))
                    .to_owned()
            })
            .collect()
    };
    let k = ids.len() as u64;
    for (id, (content, emb, importance)) in ids.into_iter().zip(items) {
        client.memories.push(Tracked {
            id,
            acked: State::Live {
                content,
                importance,
                tags: vec!["new".to_owned()],
                emb,
            },
            maybe: None,
            dirty: true,
        });
    }
    Outcome::Acked(k)
}

/// Sends a change of one memory; acknowledged, it is the memory's state, cut off by the
/// daemon's death, it may or may not have happened.
fn change(
    memory: &mut Tracked,
    next: State,
    send: impl FnOnce() -> Result<ureq::Response, ureq::Error>,
) -> Outcome {
    memory.dirty = true;
    match send() {
        Ok(_) => {
            memory.acked = next;
            Outcome::Acked(1)
        }
        Err(ureq::Error::Transport(_)) => {
            memory.maybe = Some(next);
            Outcome::Died
        }
        Err(ureq::Error::Status(code, r)) => panic!(
            "change of {} answered {code}: {}",
            memory.id,
            r.into_string().unwrap_or_default()
        ),
    }
}

/// Now and then: a snapshot, a migration or a compaction, so the kill can land inside one.
fn admin(agent: &ureq::Agent, url: &str, rng: &mut StdRng, cycle: usize) -> Outcome {
    let path = match rng.random_range(0..3) {
        0 => "/api/v1/admin/snapshots",
        1 => "/api/v1/admin/migrate",
        _ => "/api/v1/admin/compact",
    };
    match agent
        .post(&format!("{url}{path}"))
        .set("content-type", "application/json")
        .send_string("{}")
    {
        Ok(_) => Outcome::Done,
        // One snapshot at a time: another is running.
        Err(ureq::Error::Status(409, _)) => Outcome::Done,
        Err(e) => Outcome::from_error(e, cycle, path),
    }
}

/// Checks each client's memories (those changed since the last check and about 2,000 of the
/// rest; all of them with `full`), resolving what was in flight; with `full`, also that the
/// store holds nothing a client did not send.
fn verify(d: &Daemon, clients: &mut [Client], rng: &mut StdRng, cycle: usize, full: bool) {
    let total: usize = clients.iter().map(|c| c.memories.len()).sum();
    let sample = (2000.0 / total.max(1) as f64).min(1.0);
    for client in clients.iter_mut() {
        for m in &mut client.memories {
            if !(full || m.dirty || m.maybe.is_some() || rng.random_bool(sample)) {
                continue;
            }
            m.dirty = false;
            let r = d.get(&format!("/api/v1/memories/{}?include_embedding=true", m.id));
            let body = match r.status {
                404 => None,
                200 => Some(&r.body),
                other => panic!("cycle {cycle}: GET {} answered {other}: {}", m.id, r.text),
            };
            if !m.acked.shown_by(body) {
                let maybe = m.maybe.take();
                assert!(
                    maybe.as_ref().is_some_and(|s| s.shown_by(body)),
                    "cycle {cycle}: memory {} reads {}; acknowledged {:?}, in flight {maybe:?}",
                    m.id,
                    r.text,
                    m.acked,
                );
                // What survived a restart is durable: it is the state from now on.
                m.acked = maybe.expect("checked");
            }
            m.maybe = None;
        }
    }
    if !full {
        return;
    }
    let known: HashMap<&str, &Tracked> = clients
        .iter()
        .flat_map(|c| c.memories.iter())
        .map(|m| (m.id.as_str(), m))
        .collect();
    let mut all = d.list_all("");
    all.extend(d.list_all("&status=deleted"));
    for m in &all {
        let content = m["content"].as_str().expect("content");
        assert!(
            content.starts_with("cycle ")
                && content.contains(" client ")
                && content.contains(" write "),
            "cycle {cycle}: foreign content {content:?}"
        );
        if let Some(t) = known.get(m["id"].as_str().expect("id")) {
            assert_eq!(
                Some(content),
                t.acked.content(),
                "cycle {cycle}: {} holds another memory's content",
                t.id
            );
        }
    }
    let health = d.get("/api/v1/health");
    assert_eq!(health.status, 200, "cycle {cycle}: {}", health.text);
}
