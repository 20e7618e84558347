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
fn a_read_without_the_vector_is_the_same_memory_less_its_vector() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tier, _) = WorkingTier::open(dir.path(), 4, 16, 1 << 20).expect("open");
    let with = memory(4, 1);
    let mut without = memory(4, 2);
    without.embedding = None;
    for m in [&with, &without] {
        tier.put(m).expect("put");
        let full = tier.get(&m.id).expect("get").expect("present");
        let (light, has) = tier
            .get_without_vector(&m.id)
            .expect("get")
            .expect("present");
        assert_eq!(has, m.embedding.is_some());
        assert_eq!(light.embedding, None);
        assert_eq!(
            light,
            Memory {
                embedding: None,
                ..full
            }
        );
    }
    assert_eq!(tier.get_without_vector(&Uuid::now_v7()).expect("get"), None);
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
        // Access updates are written in place: readers wait them out, never giving up.
        assert!(tier.record_access(&id, 1, i64::from(n)).expect("access"));
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

/// The tier's three files, by name.
type Files = Vec<(&'static str, Vec<u8>)>;

const FILES: [&str; 3] = ["slots.bin", "heap-0.bin", "heap-1.bin"];

fn read_files(dir: &std::path::Path) -> Files {
    FILES
        .iter()
        .map(|n| (*n, std::fs::read(dir.join(n)).unwrap_or_default()))
        .collect()
}

/// What a power cut can leave of a file: each 4 KiB page either as it was last made durable
/// (`durable`) or as it is now (`now`), at random.
fn cut(durable: &[u8], now: &[u8], rng: &mut impl rand::Rng) -> Vec<u8> {
    let mut out = now.to_vec();
    for (p, chunk) in out.chunks_mut(4096).enumerate() {
        if rng.random_bool(0.5) {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = durable.get(p * 4096 + i).copied().unwrap_or(0);
            }
        }
    }
    out
}

/// Has the tier keep a copy of its files at each write-back it makes (the moment a
/// checkpoint or compaction asks for one: what that write-back makes durable).
fn record_write_backs(
    tier: &mut WorkingTier,
    dir: &std::path::Path,
) -> std::sync::Arc<parking_lot::Mutex<Vec<Files>>> {
    let synced: std::sync::Arc<parking_lot::Mutex<Vec<Files>>> = std::sync::Arc::default();
    let (seen, path) = (std::sync::Arc::clone(&synced), dir.to_path_buf());
    tier.set_fault_injector(Some(std::sync::Arc::new(move |op| {
        if op == engram_wal::IoOp::MapFlush {
            seen.lock().push(read_files(&path));
        }
        Ok(())
    })));
    synced
}

/// The tier opened after a cut holds exactly `memories`, each with its latest content, and no
/// slot it could not account for.
fn holds_exactly(tier: &WorkingTier, report: &WorkingOpenReport, memories: &[Memory], what: &str) {
    assert!(
        report.suspects.is_empty(),
        "{what}: slots torn with no record to restore them: {:?}",
        report.suspects
    );
    assert_eq!(report.live, memories.len(), "{what}");
    for m in memories {
        let got = tier.get(&m.id).expect("get").expect("present");
        assert_eq!(
            got.content, m.content,
            "{what}: an older or damaged image came back"
        );
    }
}

/// Writes the files of a cut into a fresh directory (with the checkpoint file) and opens it.
fn open_cut(
    src: &std::path::Path,
    files: &[(&str, Vec<u8>)],
) -> (tempfile::TempDir, WorkingTier, WorkingOpenReport) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    std::fs::copy(src.join("checkpoint"), dir.path().join("checkpoint")).expect("checkpoint");
    let (tier, report) = WorkingTier::open(dir.path(), 4, 400, 96 << 10).expect("open after a cut");
    (dir, tier, report)
}

#[test]
fn a_power_cut_inside_a_heap_compaction_keeps_every_memory() {
    use rand::SeedableRng;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut tier, _) = WorkingTier::open(dir.path(), 4, 400, 96 << 10).expect("open");
    let memories: Vec<Memory> = (0..300).map(|i| memory(4, i)).collect();
    for m in &memories {
        tier.put(m).expect("put");
    }
    // Everything is checkpointed: no WAL record will bring any of it back.
    tier.checkpoint(Lsn::new(300)).expect("checkpoint");
    let checkpointed = read_files(dir.path());
    // The compaction's own durability points: the files as each write-back makes them durable.
    let synced = record_write_backs(&mut tier, dir.path());
    {
        let mut w = tier.writer.lock();
        tier.compact_locked(&mut w).expect("compact");
    }
    let synced = synced.lock().clone();
    assert_eq!(
        synced.len(),
        2,
        "a compaction makes its heap, then its slots durable"
    );
    let after = read_files(dir.path());
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for trial in 0..60 {
        // Cut before the heap write-back, between the two, or after the slots' write-back.
        let phase = trial % 3;
        let files: Files = FILES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let bytes = match phase {
                    0 => cut(&checkpointed[i].1, &synced[0][i].1, &mut rng),
                    1 if *name == "slots.bin" => cut(&checkpointed[i].1, &synced[1][i].1, &mut rng),
                    1 => synced[1][i].1.clone(),
                    _ => after[i].1.clone(),
                };
                (*name, bytes)
            })
            .collect();
        let (_d, cut_tier, report) = open_cut(dir.path(), &files);
        holds_exactly(
            &cut_tier,
            &report,
            &memories,
            &format!("trial {trial} (phase {phase})"),
        );
    }
}

#[test]
fn an_access_update_is_written_in_place_and_survives_a_cut() {
    use rand::SeedableRng;
    let dir = tempfile::tempdir().expect("tempdir");
    let (tier, _) = WorkingTier::open(dir.path(), 4, 400, 96 << 10).expect("open");
    let memories: Vec<Memory> = (0..200).map(|i| memory(4, i)).collect();
    for m in &memories {
        tier.put(m).expect("put");
    }
    tier.checkpoint(Lsn::new(200)).expect("checkpoint");
    let checkpointed = read_files(dir.path());
    let slots_before: Vec<u32> = memories.iter().map(|m| tier.index.read()[&m.id]).collect();
    for m in &memories {
        assert!(tier
            .record_access(&m.id, 3, 1_700_000_000_000_000)
            .expect("access"));
    }
    let slots_after: Vec<u32> = memories.iter().map(|m| tier.index.read()[&m.id]).collect();
    assert_eq!(slots_before, slots_after, "an access moves no memory");
    let now = read_files(dir.path());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for trial in 0..30 {
        let files: Files = FILES
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, cut(&checkpointed[i].1, &now[i].1, &mut rng)))
            .collect();
        let (_d, cut_tier, report) = open_cut(dir.path(), &files);
        holds_exactly(&cut_tier, &report, &memories, &format!("trial {trial}"));
        for m in &memories {
            let got = cut_tier.get(&m.id).expect("get").expect("present");
            assert!(got.access_count == m.access_count || got.access_count == m.access_count + 3);
        }
    }
}

#[test]
fn a_compaction_cut_short_is_finished_from_its_copies_not_from_older_images() {
    use rand::SeedableRng;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut tier, _) = WorkingTier::open(dir.path(), 4, 400, 96 << 10).expect("open");
    // Images of one size, so heap 0's first images sit on the same boundaries the second
    // compaction's copies end on, and a scan past the copies reads them whole.
    let mut memories: Vec<Memory> = (0..300)
        .map(|i| {
            let mut m = memory(4, i);
            m.content = format!("memory {i:04}");
            m
        })
        .collect();
    for m in &memories {
        tier.put(m).expect("put");
    }
    {
        let mut w = tier.writer.lock();
        tier.compact_locked(&mut w)
            .expect("first compaction, into heap 1");
    }
    // The last 50 change (new images of the same size, on heap 1); the middle 200 go. The
    // second compaction copies 100 images into heap 0; past them heap 0 still holds the
    // first images, among them older images of the 50 that changed, of the same length.
    for m in &mut memories[250..] {
        m.content = m.content.to_uppercase();
        m.lsn = m.lsn.next();
        tier.put(m).expect("update");
    }
    for m in &memories[50..250] {
        assert!(tier.remove(&m.id));
    }
    let live: Vec<Memory> = memories[..50]
        .iter()
        .chain(&memories[250..])
        .cloned()
        .collect();
    tier.checkpoint(Lsn::new(1000)).expect("checkpoint");
    let checkpointed = read_files(dir.path());
    let synced = record_write_backs(&mut tier, dir.path());
    {
        let mut w = tier.writer.lock();
        tier.compact_locked(&mut w)
            .expect("second compaction, into heap 0");
    }
    let synced = synced.lock().clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for trial in 0..30 {
        // Cut after the heap's write-back, before the slots'.
        let files: Files = FILES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let bytes = if *name == "slots.bin" {
                    cut(&checkpointed[i].1, &synced[1][i].1, &mut rng)
                } else {
                    synced[1][i].1.clone()
                };
                (*name, bytes)
            })
            .collect();
        let (_d, cut_tier, report) = open_cut(dir.path(), &files);
        holds_exactly(&cut_tier, &report, &live, &format!("trial {trial}"));
    }
}

#[test]
fn a_mostly_dead_heap_is_compacted_long_before_it_is_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The default 8 GiB heap: before early compaction, rewriting one memory 300 times grew
    // the heap file by every image (150 MiB here), and in a day of updates to gigabytes.
    let cap = 8u64 << 30;
    let (tier, _) = WorkingTier::open(dir.path(), 4, 8, cap).expect("open");
    let mut m = memory(4, 1);
    let keep = memory(4, 2);
    tier.reserve(2, 4096).expect("reserve");
    tier.put(&keep).expect("put");
    let filler = "x".repeat(512 * 1024);
    for round in 0..300u32 {
        m.content = format!("round {round} {filler}");
        m.lsn = Lsn::new(u64::from(round) + 10);
        tier.reserve(1, m.content.len() as u64 + 4096)
            .expect("reserve");
        tier.put(&m).expect("put");
    }
    let size = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .map(|f| f.len())
            .unwrap_or(0)
    };
    let bound = EARLY_COMPACTION_MIN_TAIL + (EARLY_COMPACTION_MIN_TAIL / 8) + (4 << 20);
    for name in ["heap-0.bin", "heap-1.bin"] {
        assert!(
            size(name) <= bound,
            "{name} is {} bytes after 150 MiB of rewrites of 0.5 MiB live",
            size(name)
        );
    }
    let (live, _) = tier.heap_usage();
    assert!(live < 1 << 20, "live heap bytes {live}");
    assert_eq!(
        tier.get(&m.id).expect("get").expect("present").content,
        m.content
    );
    tier.checkpoint(Lsn::new(1000)).expect("checkpoint");
    drop(tier);
    let (tier, report) = WorkingTier::open(dir.path(), 4, 8, cap).expect("reopen");
    assert_eq!(report.live, 2);
    assert_eq!(
        tier.get(&m.id).expect("get").expect("present").content,
        m.content
    );
    assert_eq!(
        tier.get(&keep.id).expect("get").expect("present").content,
        keep.content
    );
}

#[test]
fn the_same_image_again_keeps_its_heap_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tier, _) = WorkingTier::open(dir.path(), 4, 8, 1 << 30).expect("open");
    let mut m = memory(4, 1);
    m.content = "y".repeat(256 * 1024);
    tier.put(&m).expect("put");
    let tail = || tier.writer.lock().heap_tail;
    let after_first = tail();
    // A WAL replay after a crash puts images the slots already hold: no second copy.
    tier.put(&m).expect("put again");
    assert_eq!(tail(), after_first);
    // The LSN lives in the slot, not in the image: a new one keeps the entry too.
    let live = tier.heap_usage().0;
    m.lsn = m.lsn.next();
    tier.put(&m).expect("put at a later LSN");
    assert_eq!(tail(), after_first);
    assert_eq!(tier.heap_usage().0, live, "the entry is counted once");
    let got = tier.get(&m.id).expect("get").expect("present");
    assert_eq!((got.content.as_str(), got.lsn), (m.content.as_str(), m.lsn));
    // New content is a new entry.
    m.content.push('!');
    tier.put(&m).expect("put new content");
    assert!(tail() > after_first);
    assert_eq!(
        tier.get(&m.id).expect("get").expect("present").content,
        m.content
    );
    // After a restart without a checkpoint, as after kill -9, the replayed image is found.
    drop(tier);
    let (tier, _) = WorkingTier::open(dir.path(), 4, 8, 1 << 30).expect("reopen");
    let before = tier.writer.lock().heap_tail;
    tier.put(&m).expect("replayed put");
    assert_eq!(tier.writer.lock().heap_tail, before);
    assert_eq!(
        tier.get(&m.id).expect("get").expect("present").content,
        m.content
    );
}
