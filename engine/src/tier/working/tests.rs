use super::*;
use crate::codec::tests::sample_memory;

fn memory(dimensions: usize, i: u32) -> Memory {
    let mut m = sample_memory();
    m.id = Uuid::now_v7();
    m.content = format!("memory {i} {}", "z".repeat((i % 50) as usize));
    m.embedding = Some(
        (0..dimensions)
            .map(|d| (d as f32) * 0.5 + i as f32)
            .collect(),
    );
    m.lsn = Lsn::new(u64::from(i) + 1);
    m.status = Status::Active;
    m
}

#[test]
fn put_get_remove_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tier, report) = WorkingTier::open(dir.path(), 4, 16, 1 << 20).expect("open");
    assert_eq!(report.live, 0);
    let a = memory(4, 1);
    let b = memory(4, 2);
    tier.put(&a).expect("put a");
    tier.put(&b).expect("put b");
    let got = tier.get(&a.id).expect("get").expect("present");
    assert_eq!(got.content, a.content);
    assert_eq!(got.embedding, a.embedding);
    assert!(tier.remove(&b.id));
    assert_eq!(tier.get(&b.id).expect("get"), None);
    tier.checkpoint(Lsn::new(2)).expect("checkpoint");
    drop(tier);
    let (tier, report) = WorkingTier::open(dir.path(), 4, 16, 1 << 20).expect("reopen");
    assert_eq!((report.live, report.checkpoint_lsn), (1, Lsn::new(2)));
    assert_eq!(
        tier.get(&a.id).expect("get").expect("present").content,
        a.content
    );
    assert!(
        WorkingTier::open(dir.path(), 8, 16, 1 << 20).is_err(),
        "dimensions change refused"
    );
}

#[test]
fn heap_compaction_keeps_every_live_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A small heap forces many compactions as the same memories are rewritten.
    let (tier, _) = WorkingTier::open(dir.path(), 4, 8, 16 * 1024).expect("open");
    let mut live: Vec<Memory> = (0..8).map(|i| memory(4, i)).collect();
    for round in 0..200u32 {
        let i = (round % 8) as usize;
        live[i].content = format!("round {round} {}", "q".repeat((round % 300) as usize));
        live[i].lsn = live[i].lsn.next();
        tier.put(&live[i]).expect("put");
        for m in &live[..] {
            if m.lsn > Lsn::ZERO && tier.contains(&m.id) {
                assert_eq!(
                    tier.get(&m.id).expect("get").expect("present").content,
                    m.content
                );
            }
        }
    }
    tier.checkpoint(Lsn::new(1000)).expect("checkpoint");
    drop(tier);
    let (tier, report) = WorkingTier::open(dir.path(), 4, 8, 16 * 1024).expect("reopen");
    assert_eq!(report.live, 8);
    for m in &live {
        assert_eq!(
            tier.get(&m.id).expect("get").expect("present").content,
            m.content
        );
    }
}

#[test]
fn concurrent_readers_never_see_torn_memories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tier, _) = WorkingTier::open(dir.path(), 8, 4, 64 * 1024).expect("open");
    let tier = std::sync::Arc::new(tier);
    let mut m = memory(8, 0);
    m.content = "v0".to_owned();
    m.embedding = Some(vec![0.0; 8]);
    tier.put(&m).expect("put");
    let id = m.id;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let tier = std::sync::Arc::clone(&tier);
            let stop = std::sync::Arc::clone(&stop);
            let reads = std::sync::Arc::clone(&reads);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let got = tier.get(&id).expect("get").expect("present");
                    // Content and vector are written together: "v{n}" ↔ all lanes == n.
                    let n: f32 = got.content[1..].parse().expect("content is v<n>");
                    assert!(got.embedding.expect("vector").iter().all(|&x| x == n));
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Start writing once both readers are reading, and keep writing until they have read
    // many times while the slot changed under them.
    while reads.load(Ordering::Relaxed) < 2 {
        std::thread::yield_now();
    }
    let mut n = 0u32;
    while n < 3000 || (reads.load(Ordering::Relaxed) < 20_000 && n < 2_000_000) {
        n += 1;
        m.content = format!("v{n}");
        m.embedding = Some(vec![n as f32; 8]);
        m.lsn = m.lsn.next();
        tier.put(&m).expect("put");
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader");
    }
    assert!(
        reads.load(Ordering::Relaxed) >= 20_000,
        "readers ran concurrently with {n} writes"
    );
}

#[test]
fn full_tier_refuses_put() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tier, _) = WorkingTier::open(dir.path(), 4, 2, 1 << 20).expect("open");
    // Capacity 2 means 3 slots: the spare keeps copy-on-write possible at capacity.
    tier.put(&memory(4, 1)).expect("1");
    let second = memory(4, 2);
    tier.put(&second).expect("2");
    tier.put(&second)
        .expect("rewrite at capacity uses the spare slot");
    tier.put(&memory(4, 3)).expect("3 fills the spare");
    assert!(matches!(
        tier.put(&memory(4, 4)),
        Err(EngineError::StorageFull(_))
    ));
}
