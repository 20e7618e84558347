//! Soak: a real `engramd` under steady mixed load at half its capacity, with snapshots, tier
//! migrations and cold compactions on their schedules, sampled as it runs: memory (RSS), open
//! file descriptors, threads, request latency and errors per window. Nothing may fail, and
//! what a leak would show (memory, descriptors, latency) must stay flat.
//!
//! First 16 clients run the mix flat out for `ENGRAM_SOAK_CALIBRATE_SECS` (default 5) to
//! measure the capacity and fill the store to its steady size; then they run it paced at
//! `ENGRAM_SOAK_LOAD` (default 0.5) of that rate for `ENGRAM_SOAK_SECS` (default 30), sampled
//! every `ENGRAM_SOAK_WINDOW_SECS` (default 2). Each client keeps about 300 live memories
//! (past that it purges instead of creating), so the store's size is steady and a growing
//! RSS would be a leak, not data. `ENGRAM_SOAK_CSV=path` writes the samples;
//! `scripts/soak.sh` runs it for an hour and plots them.

#![allow(
    clippy::result_large_err,
    reason = "the closures return ureq's own Result; its error type is not ours to shrink"
)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engram_tests::{embedding, Daemon};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const CLIENTS: usize = 16;
const DIMS: usize = 384;
const LIVE_PER_CLIENT: usize = 300;
const WORDS: [&str; 24] = [
    "coffee", "meeting", "deadline", "python", "holiday", "budget", "invoice", "garden", "concert",
    "doctor", "flight", "recipe", "birthday", "project", "review", "release", "hiking", "museum",
    "contract", "weather", "train", "novel", "piano", "lunch",
];

/// What the clients saw in one window: latencies (µs) by kind, and failures.
#[derive(Default)]
struct Window {
    writes: Vec<u32>,
    reads: Vec<u32>,
    searches: Vec<u32>,
    errors: Vec<String>,
    /// Documented retryable refusals: a move that met a concurrent change (503 "…; retry").
    busy: usize,
}

/// One sample: the daemon's process and the window's requests.
#[derive(Debug, Clone)]
struct Sample {
    at_s: f64,
    rss_mib: f64,
    /// The anonymous part of RSS (heap): where a leak shows. The rest is pages of mapped
    /// files (the working tier), which the kernel can drop.
    anon_mib: f64,
    /// Of the heap, what RocksDB holds: memtables and block cache (`/metrics`).
    memtables_mib: f64,
    block_cache_mib: f64,
    /// Memories stored, every tier (deleted ones too).
    memories: f64,
    fds: usize,
    /// Of `fds`, RocksDB's table files: as many as there are SST files, up to the
    /// `WARM_MAX_OPEN_FILES` the engine sets, so they rise while compaction is behind.
    table_fds: usize,
    /// Of `fds`, cold segments: one per live segment, rising between cold compactions.
    segment_fds: usize,
    threads: usize,
    data_mib: f64,
    ops: usize,
    errors: usize,
    busy: usize,
    p50_ms: f64,
    p99_ms: f64,
    write_p99_ms: f64,
    read_p99_ms: f64,
    search_p99_ms: f64,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn steady_mixed_load_keeps_memory_descriptors_and_latency_flat() {
    let secs: u64 = env("ENGRAM_SOAK_SECS", 30);
    let calibrate: u64 = env("ENGRAM_SOAK_CALIBRATE_SECS", 5);
    let load: f64 = env("ENGRAM_SOAK_LOAD", 0.5);
    let window = Duration::from_secs(env("ENGRAM_SOAK_WINDOW_SECS", 2));
    let long = secs >= 600;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Schedules short enough that a run sees many of each: snapshots, migrations (working →
    // warm → cold, seals) and compactions of cold segments with dead memories. A memory lives
    // a few seconds before its client purges it, so the tier thresholds are seconds too.
    let (snapshot_every, warm_after, cold_after) = if long {
        ("5m", "3s", "6s")
    } else {
        ("10s", "3s", "6s")
    };
    let settings = [
        ("backup.snapshot_interval", snapshot_every),
        ("backup.snapshots_kept", "3"),
        ("storage.checkpoint_interval", "10s"),
        ("tier_migration.interval", "2s"),
        ("tier_migration.working_to_warm_after", warm_after),
        ("tier_migration.warm_to_cold_after", cold_after),
        ("tier_migration.min_importance_to_stay_warm", "0.95"),
        ("tier_migration.compact_dead_ratio", "0.2"),
    ];
    let d = Daemon::start(&data, &settings);
    let window_now = Arc::new(Mutex::new(Window::default()));

    // Calibration: flat out, which also fills the store to its steady size.
    let started = Instant::now();
    let ops = run_clients(&d.url, None, Duration::from_secs(calibrate), &window_now);
    let capacity = ops as f64 / started.elapsed().as_secs_f64();
    let calibration = std::mem::take(&mut *window_now.lock().expect("window"));
    assert!(
        calibration.errors.is_empty(),
        "errors while calibrating: {:?}",
        &calibration.errors[..calibration.errors.len().min(5)]
    );
    let rate = capacity * load;
    println!("soak: capacity {capacity:.0} requests/s; running {secs} s at {rate:.0}/s ({load} of it), sampling every {window:?}");

    // The soak: paced clients, a sampler.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, window_now, pid, data, url) = (
            Arc::clone(&stop),
            Arc::clone(&window_now),
            d.pid(),
            data.clone(),
            d.url.clone(),
        );
        std::thread::spawn(move || sample(pid, &url, &data, &window_now, window, &stop))
    };
    run_clients(&d.url, Some(rate), Duration::from_secs(secs), &window_now);
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");

    if let Ok(path) = std::env::var("ENGRAM_SOAK_CSV") {
        write_csv(&path, &samples, capacity, rate);
    }
    for s in &samples {
        println!("{s:?}");
    }
    let total_errors: usize = samples.iter().map(|s| s.errors).sum();
    let total_ops: usize = samples.iter().map(|s| s.ops).sum();
    let total_busy: usize = samples.iter().map(|s| s.busy).sum();
    let health = d.get("/api/v1/health");
    assert_eq!(health.status, 200, "health after the soak: {}", health.text);
    let log = d.log();
    let log_errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();

    assert!(
        samples.len() >= 4,
        "too short to compare: {} samples",
        samples.len()
    );
    // Flat: the last third against the first (past the first window, while caches fill).
    let third = (samples.len() / 3).max(1);
    let (first, last) = (
        &samples[1.min(samples.len() - 1)..third + 1],
        &samples[samples.len() - third..],
    );
    let median = |xs: &[Sample], f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = xs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (rss0, rss1) = (median(first, |s| s.rss_mib), median(last, |s| s.rss_mib));
    let (anon0, anon1) = (median(first, |s| s.anon_mib), median(last, |s| s.anon_mib));
    // The block cache and the memtables grow to sizes the configuration bounds
    // (`storage.block_cache_bytes`); a leak is what the heap holds beyond them.
    let beyond_rocksdb = |s: &Sample| s.anon_mib - s.block_cache_mib - s.memtables_mib;
    let (heap0, heap1) = (median(first, beyond_rocksdb), median(last, beyond_rocksdb));
    let (stored0, stored1) = (median(first, |s| s.memories), median(last, |s| s.memories));
    // Medians: a snapshot or compaction in flight opens many files for a moment, and one such
    // sample decided a short run by its peak (116 → 190 in a 30 s CI run); a leak moves the
    // median. RocksDB's tables and the cold segments are left out: their number follows the
    // data files (99 → 170 once in a 30 s CI run on a busy machine; 85 cold segments open in
    // another), which compactions merge; RocksDB's are bounded by WARM_MAX_OPEN_FILES, checked
    // on its own. What is left — sockets, the WAL, the working tier, the log — must stay flat.
    let others = |s: &Sample| (s.fds - s.table_fds - s.segment_fds) as f64;
    let (fd0, fd1) = (median(first, others), median(last, others));
    let (p99a, p99b) = (median(first, |s| s.p99_ms), median(last, |s| s.p99_ms));
    println!(
        "soak: {total_ops} requests in {secs} s, {total_errors} errors, {total_busy} retryable 503s; memories stored {stored0:.0} → {stored1:.0}; RSS median {rss0:.0} → {rss1:.0} MiB (anonymous {anon0:.0} → {anon1:.0}, of which beyond RocksDB's block cache and memtables {heap0:.0} → {heap1:.0}), open files beyond RocksDB's tables and cold segments median {fd0} → {fd1}, p99 median {p99a:.2} → {p99b:.2} ms (first third → last third)"
    );
    assert_eq!(total_errors, 0, "requests failed during the soak");
    assert!(
        total_busy * 1000 <= total_ops,
        "{total_busy} retryable refusals in {total_ops} requests"
    );
    // The memory checks mean something only if the store kept its size.
    assert!(
        stored1 <= stored0 * 1.25 + 1000.0,
        "the store grew from {stored0} to {stored1} memories: the load is not steady"
    );
    assert!(
        log_errors.is_empty(),
        "the daemon logged errors:\n{}",
        log_errors.join("\n")
    );
    assert!(
        total_ops as f64 >= rate * secs as f64 * 0.8,
        "the daemon fell behind the pace"
    );
    assert!(
        heap1 <= heap0 * 1.25 + 64.0,
        "the heap beyond RocksDB's caches grew from {heap0:.0} to {heap1:.0} MiB"
    );
    assert!(
        samples.iter().all(|s| s.block_cache_mib <= 256.0 * 1.05),
        "the block cache passed storage.block_cache_bytes (256 MiB)"
    );
    assert!(
        fd1 <= fd0 * 1.25 + 16.0,
        "open files other than RocksDB's tables and cold segments grew from {fd0} to {fd1}"
    );
    assert!(
        samples
            .iter()
            .all(|s| s.table_fds <= engram_engine::WARM_MAX_OPEN_FILES as usize),
        "RocksDB held more table files open than WARM_MAX_OPEN_FILES ({})",
        engram_engine::WARM_MAX_OPEN_FILES
    );
    if long {
        assert!(
            p99b <= p99a * 2.0 + 2.0,
            "p99 latency grew from {p99a:.2} to {p99b:.2} ms"
        );
    }
}

/// Runs the clients for `run_for`, paced to `rate` requests/s in all (None: flat out);
/// returns the number of requests sent.
fn run_clients(
    url: &str,
    rate: Option<f64>,
    run_for: Duration,
    window: &Arc<Mutex<Window>>,
) -> usize {
    let deadline = Instant::now() + run_for;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (url, window) = (url.to_owned(), Arc::clone(window));
            let interval = rate.map(|r| Duration::from_secs_f64(CLIENTS as f64 / r));
            std::thread::spawn(move || client(&url, c, interval, deadline, &window))
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("client")).sum()
}

/// One client's loop; each client owns the memories it creates (kept across phases in a
/// per-client namespace, found again by listing).
fn client(
    url: &str,
    c: usize,
    interval: Option<Duration>,
    deadline: Instant,
    window: &Mutex<Window>,
) -> usize {
    let mut rng = StdRng::seed_from_u64(rand::random());
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    let namespace = format!("soak{c}");
    let mut live = owned(&agent, url, &namespace, "");
    // Soft-deleted memories are purged later, so the store does not grow with them.
    let mut deleted = owned(&agent, url, &namespace, "&status=deleted");
    let mut next = Instant::now();
    let mut sent = 0;
    while Instant::now() < deadline {
        if let Some(interval) = interval {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else if now - next > Duration::from_secs(1) {
                // Behind by more than a second: do not make up for it in a burst.
                next = now;
            }
            next += interval;
        }
        sent += 1;
        let pick = rng.random_range(0..100);
        let words = |rng: &mut StdRng| {
            (0..6)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let memory = |rng: &mut StdRng| {
            json!({"content": format!("client {c} note {}: {}", rng.random::<u64>(), words(rng)),
                   "namespace": namespace, "embedding": embedding(rng.random(), DIMS),
                   "importance_score": rng.random_range(0.0..1.0f32), "tags": [WORDS[rng.random_range(0..WORDS.len())]]})
        };
        let full = live.len() >= LIVE_PER_CLIENT;
        let target = (!live.is_empty()).then(|| rng.random_range(0..live.len()));
        let started = Instant::now();
        let (kind, creates, result) = match (pick, target) {
            // Full: what would have created (a single or a batch) purges instead, so the
            // store keeps its size.
            (0..=22, Some(i)) if full => {
                let id = deleted.pop().unwrap_or_else(|| live.swap_remove(i));
                let r = agent
                    .delete(&format!("{url}/api/v1/memories/{id}?purge=true"))
                    .call();
                (Kind::Write, false, r)
            }
            (0..=19, _) | (_, None) => {
                let r = agent
                    .post(&format!("{url}/api/v1/memories"))
                    .send_json(memory(&mut rng));
                (Kind::Write, true, r)
            }
            (20..=22, _) => {
                let batch: Vec<Value> = (0..8).map(|_| memory(&mut rng)).collect();
                let r = agent
                    .post(&format!("{url}/api/v1/memories/batch"))
                    .send_json(json!({ "memories": batch }));
                (Kind::Write, true, r)
            }
            (23..=32, Some(i)) => {
                let body = json!({"importance_score": rng.random_range(0.0..1.0f32),
                    "tags": [WORDS[rng.random_range(0..WORDS.len())]],
                    "content": format!("client {c} edit {}: {}", rng.random::<u64>(), words(&mut rng))});
                let r = agent
                    .request("PATCH", &format!("{url}/api/v1/memories/{}", live[i]))
                    .send_json(body);
                (Kind::Write, false, r)
            }
            (33..=35, Some(i)) => {
                let id = live.swap_remove(i);
                let r = agent.delete(&format!("{url}/api/v1/memories/{id}")).call();
                deleted.push(id);
                (Kind::Write, false, r)
            }
            (36..=40, Some(i)) => {
                // A move to warm, or to cold (a seal); the policy also moves memories on its
                // schedule, but few here stay idle long enough.
                let tier = if rng.random_bool(0.5) { "warm" } else { "cold" };
                let r = agent
                    .request("PATCH", &format!("{url}/api/v1/memories/{}", live[i]))
                    .send_json(json!({ "tier": tier }));
                (Kind::Write, false, r)
            }
            (41..=65, Some(i)) => {
                let r = agent
                    .get(&format!("{url}/api/v1/memories/{}", live[i]))
                    .call();
                (Kind::Read, false, r)
            }
            (66..=69, _) => {
                let r = agent
                    .get(&format!(
                        "{url}/api/v1/memories?namespace={namespace}&limit=50"
                    ))
                    .call();
                (Kind::Read, false, r)
            }
            (70..=84, _) => {
                let body = json!({"namespace": namespace, "search_type": "semantic",
                    "query_embedding": embedding(rng.random(), DIMS), "limit": 10});
                let r = agent.post(&format!("{url}/api/v1/search")).send_json(body);
                (Kind::Search, false, r)
            }
            (85..=92, _) => {
                let body = json!({"namespace": namespace, "search_type": "text",
                    "query_text": words(&mut rng), "limit": 10});
                let r = agent.post(&format!("{url}/api/v1/search")).send_json(body);
                (Kind::Search, false, r)
            }
            _ => {
                let body = json!({"namespace": namespace, "query_text": words(&mut rng),
                    "query_embedding": embedding(rng.random(), DIMS), "limit": 10,
                    "include_cold": rng.random_bool(0.2)});
                let r = agent.post(&format!("{url}/api/v1/search")).send_json(body);
                (Kind::Search, false, r)
            }
        };
        // The whole answer is read before the clock stops.
        let answer = match result {
            Ok(r) => r
                .into_string()
                .map_err(|e| format!("reading the answer: {e}")),
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                if code == 503 && text.contains("retry") {
                    window.lock().expect("window").busy += 1;
                    continue;
                }
                Err(format!("{code}: {text}"))
            }
            Err(e) => Err(e.to_string()),
        };
        let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        let mut w = window.lock().expect("window");
        match answer {
            Ok(text) => {
                match kind {
                    Kind::Write => w.writes.push(micros),
                    Kind::Read => w.reads.push(micros),
                    Kind::Search => w.searches.push(micros),
                }
                if creates {
                    live.extend(created_ids(&text));
                }
            }
            Err(e) => w.errors.push(format!("{kind:?}: {e}")),
        }
    }
    sent
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Write,
    Read,
    Search,
}

/// The ids a create or a batch answered with.
fn created_ids(text: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(text).expect("a create answers JSON");
    match v["results"].as_array() {
        Some(items) => items
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect(),
        None => vec![v["id"].as_str().expect("id").to_owned()],
    }
}

/// The ids of the memories in `namespace` (live, or with `&status=deleted` the deleted ones):
/// a client taking up the memories it made while calibrating.
fn owned(agent: &ureq::Agent, url: &str, namespace: &str, status: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: Value = agent
            .get(&format!(
                "{url}/api/v1/memories?namespace={namespace}&limit=1000{status}{cursor}"
            ))
            .call()
            .expect("list")
            .into_json()
            .expect("json");
        ids.extend(
            page["memories"]
                .as_array()
                .expect("memories")
                .iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return ids,
        }
    }
}

/// Samples the daemon and the clients' window every `every` until `stop`.
fn sample(
    pid: u32,
    url: &str,
    data: &Path,
    window: &Mutex<Window>,
    every: Duration,
    stop: &AtomicBool,
) -> Vec<Sample> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut next = started + every;
    while !stop.load(Ordering::Relaxed) {
        // Sampling on a fixed period: the sleep is the point.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += every;
        if stop.load(Ordering::Relaxed) {
            // The clients stopped inside this window: not a full one.
            break;
        }
        let w = std::mem::take(&mut *window.lock().expect("window"));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let metrics = ureq::get(&format!("{url}/metrics"))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .unwrap_or_default();
        let memories: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("engram_tier_memories{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let warm = |kind: &str| {
            let prefix = format!("engram_warm_memory_bytes{{kind=\"{kind}\"}} ");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
                / f64::from(1 << 20)
        };
        let mut all: Vec<u32> = [&w.writes[..], &w.reads, &w.searches].concat();
        for e in w.errors.iter().take(3) {
            println!(
                "soak error at {:.0} s: {e}",
                started.elapsed().as_secs_f64()
            );
        }
        // What each descriptor points at, read once (a leak and RocksDB's tables told apart).
        let targets: Vec<std::path::PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        samples.push(Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss_mib: field("VmRSS:") / 1024.0,
            anon_mib: field("RssAnon:") / 1024.0,
            memtables_mib: warm("memtables"),
            block_cache_mib: warm("block_cache"),
            memories,
            fds: targets.len(),
            table_fds: targets
                .iter()
                .filter(|t| t.extension().is_some_and(|x| x == "sst"))
                .count(),
            segment_fds: targets
                .iter()
                .filter(|t| t.extension().is_some_and(|x| x == "cold"))
                .count(),
            threads: field("Threads:") as usize,
            data_mib: disk_usage(data) as f64 / f64::from(1 << 20),
            ops: all.len() + w.errors.len() + w.busy,
            errors: w.errors.len(),
            busy: w.busy,
            p50_ms: percentile(&mut all, 0.5),
            p99_ms: percentile(&mut all, 0.99),
            write_p99_ms: percentile(&mut w.writes.clone(), 0.99),
            read_p99_ms: percentile(&mut w.reads.clone(), 0.99),
            search_p99_ms: percentile(&mut w.searches.clone(), 0.99),
        });
    }
    samples
}

/// The `q` quantile of latencies in µs, in ms (0 when there are none).
fn percentile(xs: &mut [u32], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_unstable();
    let i = ((xs.len() as f64 * q).ceil() as usize).clamp(1, xs.len()) - 1;
    f64::from(xs[i]) / 1000.0
}

/// Bytes allocated on disk under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn write_csv(path: &str, samples: &[Sample], capacity: f64, rate: f64) {
    let mut out = format!(
        "# capacity {capacity:.0} requests/s, paced at {rate:.0}/s\n\
         seconds,memories,rss_mib,anon_mib,memtables_mib,block_cache_mib,open_files,threads,data_mib,requests,errors,busy,p50_ms,p99_ms,write_p99_ms,read_p99_ms,search_p99_ms\n"
    );
    for s in samples {
        out.push_str(&format!(
            "{:.1},{},{:.1},{:.1},{:.1},{:.1},{},{},{:.1},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3}\n",
            s.at_s,
            s.memories,
            s.rss_mib,
            s.anon_mib,
            s.memtables_mib,
            s.block_cache_mib,
            s.fds,
            s.threads,
            s.data_mib,
            s.ops,
            s.errors,
            s.busy,
            s.p50_ms,
            s.p99_ms,
            s.write_p99_ms,
            s.read_p99_ms,
            s.search_p99_ms
        ));
    }
    std::fs::write(path, out).expect("write the samples");
}
