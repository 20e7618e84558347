//! Unit tests of the write decisions and of apply, on a real store in a temporary directory:
//! dedup against logged-but-unapplied claims, versions, deletes and purges, imports, room in
//! the working tier, the chunked background logging, and the grouping and dedup rules apply
//! follows. The daemon's end-to-end tests cover the same paths through HTTP; these pin the
//! rules themselves.

use std::sync::atomic::Ordering;

use engram_wal::Lsn;
use uuid::Uuid;

use super::apply::{group_end, DedupChange};
use super::tiering::Logged;
use super::Engine;
use crate::codec::{AccessDelta, Op, PutKind};
use crate::config::{Clock, EngineConfig};
use crate::model::{EmbeddingStatus, Memory, MemoryPatch, NewMemory, Status, Tier};
use crate::transfer::Exported;
use crate::EngineError;

pub(super) const DIMS: usize = 4;

pub(super) fn open(dir: &std::path::Path, working_capacity: usize) -> Engine {
    open_with(dir, working_capacity, Clock::System)
}

fn open_with(dir: &std::path::Path, working_capacity: usize, clock: Clock) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.dimensions = DIMS;
    config.working_capacity = working_capacity;
    config.working_heap_bytes = 1 << 24;
    config.clock = clock;
    // The policy runs when a test calls it, not on the background thread's schedule.
    config.migration.enabled = false;
    Engine::open(config).expect("open").0
}

/// 2026-01-01T00:00:00Z, where manual clocks start.
const T0_US: i64 = 1_767_225_600_000_000;

pub(super) fn new(content: &str) -> NewMemory {
    NewMemory {
        namespace: "n".into(),
        content: content.into(),
        embedding: Some(vec![0.5; DIMS]),
        importance: 0.5,
        metadata_json: "{}".into(),
        tags: vec![],
        parent_id: None,
        created_at_us: None,
        expires_at_us: None,
        supersedes: vec![],
        actor: None,
    }
}

fn put(memory: Memory, previous_tier: Option<Tier>, previous_hash: Option<[u8; 32]>) -> Op {
    Op::Put {
        kind: PutKind::Update,
        memory,
        previous_tier,
        previous_hash,
        history: Vec::new(),
    }
}

#[test]
fn a_duplicate_inside_one_batch_names_the_earlier_item() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let results = engine.create_batch(vec![new("See you!"), new("other"), new("See you!")]);
    let first = results[0].as_ref().expect("stored").id;
    results[1].as_ref().expect("stored");
    match &results[2] {
        Err(EngineError::Duplicate { existing }) => assert_eq!(*existing, first),
        other => panic!("expected a duplicate of the first item, got {other:?}"),
    }
    // The claim outlives the batch: applied, it is the dedup index's.
    assert!(matches!(
        engine.create(new("See you!")),
        Err(EngineError::Duplicate { existing }) if existing == first
    ));
}

#[test]
fn updates_bump_versions_and_keep_dedup_true() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let a = engine.create(new("alpha")).expect("a");
    let b = engine.create(new("beta")).expect("b");
    let patch = |content: &str| MemoryPatch {
        content: Some(content.into()),
        ..MemoryPatch::default()
    };
    // Taking content another memory holds is refused.
    assert!(matches!(
        engine.update(&b.id, patch("alpha")),
        Err(EngineError::Duplicate { existing }) if existing == a.id
    ));
    let b2 = engine.update(&b.id, patch("gamma")).expect("update");
    assert_eq!(b2.version, 2);
    assert!(b2.updated_at_us >= b.updated_at_us);
    assert_eq!(b2.embedding, None, "new content drops the old vector");
    assert_eq!(b2.embedding_status, EmbeddingStatus::None);
    // "beta" was released by the change, so it can be stored again.
    engine
        .create(new("beta"))
        .expect("released content is free");
    // A soft delete releases the hash; restoring it re-claims and so meets the new holder.
    engine.delete(&a.id, false).expect("delete");
    let a2 = engine.create(new("alpha")).expect("free after the delete");
    let restore = MemoryPatch {
        status: Some(Status::Active),
        ..MemoryPatch::default()
    };
    assert!(matches!(
        engine.update(&a.id, restore),
        Err(EngineError::Duplicate { existing }) if existing == a2.id
    ));
    // Deleting twice is not found; a purge of a deleted memory removes it for good.
    assert!(matches!(
        engine.delete(&a.id, false),
        Err(EngineError::NotFound(_))
    ));
    assert!(engine.delete(&a.id, true).expect("purge").purged);
    assert_eq!(engine.get(&a.id).expect("get"), None);
    engine.close().expect("close");
}

#[test]
fn imports_keep_ids_and_refuse_what_would_break_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let stored = engine.create(new("kept")).expect("create");
    let mut copy = stored.clone();
    copy.id = Uuid::now_v7();
    copy.namespace = "other".into();
    let one = |m: &Memory| Exported {
        memory: m.clone(),
        versions: Vec::new(),
    };
    let results = engine.import_batch(vec![one(&stored), one(&copy)], false);
    assert!(matches!(&results[0], Err(EngineError::IdExists(id)) if *id == stored.id));
    let imported = &results[1].as_ref().expect("imported").memory;
    assert_eq!((imported.id, imported.version), (copy.id, stored.version));
    let mut bad = copy.clone();
    bad.id = Uuid::now_v7();
    bad.namespace = "third".into();
    bad.content = "changed without its hash".into();
    assert!(matches!(
        &engine.import_batch(vec![one(&bad)], false)[0],
        Err(EngineError::Invalid {
            field: "content_hash",
            ..
        })
    ));
    // Replacing never reaches into another namespace under the same id.
    let mut elsewhere = stored.clone();
    elsewhere.namespace = "fourth".into();
    assert!(matches!(
        &engine.import_batch(vec![one(&elsewhere)], true)[0],
        Err(EngineError::IdExists(_))
    ));
}

#[test]
fn an_import_rebuilds_every_version_and_may_replace_in_its_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let v1 = engine.create(new("lives in Paris")).expect("create");
    let v2 = engine
        .update(
            &v1.id,
            MemoryPatch {
                content: Some("lives in Berlin".into()),
                ..MemoryPatch::default()
            },
        )
        .expect("update");
    let v3 = engine
        .update(
            &v1.id,
            MemoryPatch {
                tags: Some(vec!["city".into()]),
                importance: Some(0.9),
                ..MemoryPatch::default()
            },
        )
        .expect("update");
    let past = engine.past_versions(&v3).expect("past");
    assert_eq!(past.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2]);
    let exported = Exported {
        memory: v3.clone(),
        versions: past.clone(),
    };
    // The same id in the same namespace: refused, then replaced.
    assert!(matches!(
        &engine.import_batch(vec![exported.clone()], false)[0],
        Err(EngineError::IdExists(_))
    ));
    let r = engine.import_batch(vec![exported.clone()], true);
    let back = r[0].as_ref().expect("replaced");
    assert!(back.replaced);
    for (want, v) in [(&v1, 1), (&v2, 2)] {
        let got = engine.get_version(&v1.id, v).expect("version");
        assert_eq!(
            (got.content.as_str(), got.updated_at_us, &got.tags),
            (want.content.as_str(), want.updated_at_us, &want.tags),
            "version {v}"
        );
    }
    let page = engine.history(&v1.id, None, 10).expect("history");
    assert_eq!(page.versions.len(), 3);
    // Versions must run one by one up to the memory's own.
    let mut gap = exported.clone();
    gap.versions.remove(1);
    assert!(matches!(
        &engine.import_batch(vec![gap], true)[0],
        Err(EngineError::Invalid {
            field: "versions",
            ..
        })
    ));
    engine.close().expect("close");
}

#[test]
fn a_full_working_tier_moves_the_least_valuable_to_warm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 4);
    let mut ids = Vec::new();
    for i in 0..10 {
        let mut m = new(&format!("memory {i}"));
        m.importance = if i == 0 { 1.0 } else { 0.1 };
        ids.push(engine.create(m).expect("create").id);
    }
    let stats = engine.stats();
    assert!(stats.working <= 4, "working holds {}", stats.working);
    assert_eq!(stats.working + stats.warm, 10);
    let first = engine.get(&ids[0]).expect("get").expect("present");
    assert_eq!(first.tier, Tier::Working, "the most important memory stays");
    for id in &ids {
        assert!(engine.get(id).expect("get").is_some(), "{id} is somewhere");
    }
    engine.close().expect("close");
}

#[test]
fn chunked_logging_commits_every_chunk_and_stops_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let inner = &engine.inner;
    let ids: Vec<Uuid> = (0..600).map(|_| Uuid::now_v7()).collect();
    let before = inner.wal.last_lsn();
    // One access record per item: 600 records over three holds of the writer lock.
    let logged = inner
        .log_in_chunks(ids.iter().copied(), |w, id| {
            let delta = AccessDelta {
                id,
                count: 1,
                last_accessed_at_us: 1,
            };
            Ok(Logged::Yes(inner.log(w, Op::Access(vec![delta]))?))
        })
        .expect("logged");
    assert_eq!(logged, 600);
    assert_eq!(inner.wal.last_lsn().records_after(before), 600);
    assert_eq!(
        inner.applied_lsn.load(Ordering::Acquire),
        inner.wal.last_lsn()
    );
    let mut seen = 0;
    let logged = inner
        .log_in_chunks(0..1000, |_, i| {
            seen += 1;
            Ok(if i == 3 { Logged::Stop } else { Logged::No })
        })
        .expect("stopped");
    assert_eq!((logged, seen), (0, 4));
}

#[test]
fn groups_hold_distinct_ids_and_order_sensitive_records_alone() {
    let m = |id: Uuid, tier: Tier| Memory {
        id,
        tier,
        ..crate::codec::tests::sample_memory()
    };
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let access = Op::Access(vec![]);
    let ready = vec![
        put(m(a, Tier::Working), None, None),
        put(m(b, Tier::Working), None, None),
        put(m(a, Tier::Warm), Some(Tier::Working), None),
        access,
        put(m(b, Tier::Working), Some(Tier::Warm), None),
        put(m(a, Tier::Warm), Some(Tier::Warm), None),
    ]
    .into_iter()
    .zip(1..)
    .map(|(op, n)| (Lsn::new(n), op))
    .collect::<Vec<_>>();
    assert_eq!(
        group_end(&ready, 0),
        2,
        "a second record of `a` starts a new group"
    );
    assert_eq!(group_end(&ready, 2), 3, "an access record is alone");
    assert_eq!(group_end(&ready, 3), 4);
    assert_eq!(group_end(&ready, 4), 5, "a promotion is alone");
    assert_eq!(group_end(&ready, 5), 6);
    let many: Vec<(Lsn, Op)> = (0..1000)
        .map(|i| {
            (
                Lsn::new(i + 1),
                put(m(Uuid::now_v7(), Tier::Warm), None, None),
            )
        })
        .collect();
    assert_eq!(group_end(&many, 0), super::apply::APPLY_GROUP_RECORDS);
}

#[test]
fn dedup_changes_release_and_claim_by_the_rule() {
    let mut memory = crate::codec::tests::sample_memory();
    let old = memory.content_hash;
    let same = put(memory.clone(), Some(Tier::Warm), Some(old));
    let d = DedupChange::of(&same);
    assert!(d.release.is_none(), "unchanged content keeps its claim");
    assert_eq!(d.claim.map(|c| c.2), Some(memory.id));

    memory.content_hash = [7; 32];
    let changed = put(memory.clone(), Some(Tier::Warm), Some(old));
    let d = DedupChange::of(&changed);
    assert_eq!(d.release.map(|r| r.1), Some(old));
    assert_eq!(d.claim.map(|c| c.1), Some([7; 32]));
    assert_eq!(d.keys().count(), 2);

    memory.status = Status::Deleted;
    let deleted = put(memory.clone(), Some(Tier::Warm), Some([7; 32]));
    let d = DedupChange::of(&deleted);
    assert_eq!(d.release.map(|r| r.1), Some([7; 32]));
    assert!(d.claim.is_none(), "a deleted memory holds nothing");

    let purge = Op::Purge {
        id: memory.id,
        namespace: memory.namespace.clone(),
        release_hash: None,
        previous_tier: Tier::Warm,
    };
    let d = DedupChange::of(&purge);
    assert!(d.release.is_none() && d.claim.is_none());
}

#[test]
fn expiry_follows_the_clock_without_sleeping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0_US);
    let engine = open_with(dir.path(), 100, clock.clone());
    let mut m = new("short-lived");
    m.expires_at_us = Some(T0_US + 60_000_000);
    let stored = engine.create(m).expect("create");
    assert_eq!(stored.created_at_us, T0_US);
    clock.advance(std::time::Duration::from_secs(59));
    assert!(engine.get(&stored.id).expect("get").is_some());
    clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(
        engine.get(&stored.id).expect("get"),
        None,
        "gone the moment it expires"
    );
    engine.inner.purge_expired().expect("purge");
    assert_eq!(
        engine.counters().memories_expired.load(Ordering::Relaxed),
        1
    );
    let stats = engine.stats();
    assert_eq!(stats.working + stats.warm + stats.cold, 0);
    engine
        .create(new("short-lived"))
        .expect("the purge released the content");
}

#[test]
fn an_expired_memory_frees_its_content_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0_US);
    let engine = open_with(dir.path(), 100, clock.clone());
    let mut m = new("see you tomorrow");
    m.expires_at_us = Some(T0_US + 1_000_000);
    let old = engine.create(m).expect("create");
    assert!(matches!(
        engine.create(new("see you tomorrow")),
        Err(EngineError::Duplicate { existing }) if existing == old.id
    ));
    clock.advance(std::time::Duration::from_secs(2));
    // Before the background purge runs, the content is free: the expired holder is purged by
    // the write that needs its content, not reported as a duplicate that answers 404.
    let again = engine
        .create(new("see you tomorrow"))
        .expect("the expired memory no longer holds its content");
    assert_ne!(again.id, old.id);
    assert_eq!(engine.get(&old.id).expect("get"), None);
    assert_eq!(
        engine.counters().memories_expired.load(Ordering::Relaxed),
        1
    );
    engine.inner.purge_expired().expect("purge");
    assert_eq!(
        engine.counters().memories_expired.load(Ordering::Relaxed),
        1,
        "not counted twice"
    );
    // The new holder keeps the content through the purge and a reopen.
    assert!(matches!(
        engine.create(new("see you tomorrow")),
        Err(EngineError::Duplicate { existing }) if existing == again.id
    ));
    engine.close().expect("close");
    let engine = open_with(dir.path(), 100, clock);
    assert!(matches!(
        engine.create(new("see you tomorrow")),
        Err(EngineError::Duplicate { existing }) if existing == again.id
    ));
}

#[test]
fn a_patch_that_changes_nothing_logs_nothing_and_a_move_keeps_the_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let stored = engine.create(new("a settled fact")).expect("create");
    let lsn = engine.inner.wal.last_lsn();
    let same = MemoryPatch {
        importance: Some(stored.importance),
        content: Some(stored.content.clone()),
        ..MemoryPatch::default()
    };
    let after = engine.update(&stored.id, same).expect("no-op patch");
    assert_eq!(after.version, 1);
    assert_eq!(after.updated_at_us, stored.updated_at_us);
    assert_eq!(engine.inner.wal.last_lsn(), lsn, "nothing was logged");
    let moved = engine.move_to(&stored.id, Tier::Warm).expect("move");
    assert_eq!((moved.tier, moved.version), (Tier::Warm, 1));
    let moved = engine.get(&stored.id).expect("get").expect("present");
    assert_eq!((moved.tier, moved.version), (Tier::Warm, 1));
    let changed = engine
        .update(
            &stored.id,
            MemoryPatch {
                importance: Some(0.9),
                ..MemoryPatch::default()
            },
        )
        .expect("a real change");
    assert_eq!(changed.version, 2);
}

#[test]
fn the_policy_demotes_what_the_clock_says_went_unused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Clock::manual(T0_US);
    let engine = open_with(dir.path(), 100, clock.clone());
    let mut idle = new("idle");
    idle.importance = 0.0;
    let idle = engine.create(idle).expect("create");
    let mut kept = new("important");
    kept.importance = 1.0;
    let kept = engine.create(kept).expect("create");
    assert!(
        engine.migrate(true).expect("plan").moves.is_empty(),
        "nothing is idle yet"
    );
    // Retention exp(-t/S) with S = 1 day for an unused, unimportant memory: below the
    // working tier's threshold after `working_to_warm_after` (1 day).
    clock.advance(std::time::Duration::from_secs(86_400 + 60));
    let report = engine.migrate(false).expect("migrate");
    let moved: Vec<Uuid> = report.moves.iter().map(|m| m.id).collect();
    assert_eq!(moved, vec![idle.id]);
    let tier = |id: &Uuid| engine.get(id).expect("get").expect("present").tier;
    assert_eq!(
        (tier(&idle.id), tier(&kept.id)),
        (Tier::Warm, Tier::Working)
    );
}

#[test]
fn reads_that_need_no_cold_segment_are_answered_inline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let hot = engine.create(new("hot")).expect("create");
    let cold = engine.create(new("cold")).expect("create");
    engine.move_to(&cold.id, Tier::Cold).expect("seal");
    let got = engine.get_unless_cold(&hot.id, true).expect("read");
    assert_eq!(got.flatten().map(|m| m.id), Some(hot.id));
    assert_eq!(
        engine.get_unless_cold(&cold.id, false).expect("read"),
        None,
        "cold: go blocking"
    );
    let absent = Uuid::now_v7();
    assert_eq!(
        engine.get_unless_cold(&absent, false).expect("read"),
        Some(None)
    );
    // The touch counted an access, as get_and_touch does.
    let again = engine.get(&hot.id).expect("get").expect("present");
    assert_eq!(again.access_count, 1);
}

#[test]
fn an_access_logged_after_a_purge_leaves_no_promotion_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let warm = engine.create(new("read, then purged")).expect("create");
    engine.move_to(&warm.id, Tier::Warm).expect("move");
    let kept = engine.create(new("read and kept")).expect("create");
    engine.move_to(&kept.id, Tier::Warm).expect("move");
    // Reads are counted at once and logged at the next flush; the purge comes in between.
    engine
        .get_and_touch(&warm.id)
        .expect("read")
        .expect("found");
    engine
        .get_and_touch(&kept.id)
        .expect("read")
        .expect("found");
    engine.delete(&warm.id, true).expect("purge");
    engine.inner.flush_access().expect("flush");
    let hits = engine.inner.accesses_since_move.lock();
    assert_eq!(hits.get(&warm.id), None, "a purged memory keeps a count");
    assert_eq!(hits.get(&kept.id), Some(&1));
}

#[test]
fn a_promotion_takes_free_room_in_working_and_never_evicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 3);
    let a = engine.create(new("a")).expect("create");
    let b = engine.create(new("b")).expect("create");
    let used = engine.create(new("used again")).expect("create");
    engine.move_to(&used.id, Tier::Warm).expect("move");
    let d = engine.create(new("d")).expect("create");
    let tier = |id: &Uuid| engine.get(id).expect("get").expect("present").tier;
    let use_three_times = || {
        for _ in 0..3 {
            engine
                .get_and_touch(&used.id)
                .expect("read")
                .expect("found");
        }
        engine.inner.flush_access().expect("flush");
        engine.migrate(false).expect("migrate")
    };
    // Working is full: the memory used again stays warm, nothing is evicted for it, and its
    // count starts again.
    let report = use_three_times();
    assert!(report.moves.is_empty(), "moved: {:?}", report.moves);
    assert_eq!(tier(&used.id), Tier::Warm);
    for id in [&a.id, &b.id, &d.id] {
        assert_eq!(tier(id), Tier::Working);
    }
    assert_eq!(engine.inner.accesses_since_move.lock().get(&used.id), None);
    // With room, the same use brings it up.
    engine.move_to(&d.id, Tier::Warm).expect("move");
    use_three_times();
    assert_eq!(tier(&used.id), Tier::Working);
    assert_eq!(tier(&a.id), Tier::Working);
    assert_eq!(tier(&b.id), Tier::Working);
}

/// Polls a future on this thread, parking between wake-ups (the engine has no async runtime).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn async_creates_are_committed_by_the_committer_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = std::sync::Arc::new(open(dir.path(), 1000));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let engine = std::sync::Arc::clone(&engine);
            std::thread::spawn(move || {
                (0..100)
                    .map(|i| {
                        let mut r = block_on(
                            engine.create_batch_async(vec![new(&format!("thread {t} memory {i}"))]),
                        );
                        r.pop().expect("one result").expect("stored")
                    })
                    .collect::<Vec<Memory>>()
            })
        })
        .collect();
    let mut stored: Vec<Memory> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("writer thread"))
        .collect();
    // Every acknowledged memory is applied when its future resolves: readable at once.
    for m in &stored {
        assert!(m.lsn > Lsn::ZERO);
        let got = engine
            .get(&m.id)
            .expect("get")
            .expect("applied before the ack");
        assert_eq!(got.content, m.content);
    }
    // Fewer fsyncs than writes: the committer groups what arrives while it syncs.
    let syncs = engine.inner.wal.fsync_count();
    assert!(syncs < 400, "{syncs} fsyncs for 400 creates");
    // A batch whose future is dropped unpolled is still committed (it is in the log), and one
    // awaited after the engine stopped resolves too.
    drop(engine.create_batch_async(vec![new("dropped future")]));
    let late = engine.create_batch_async(vec![new("awaited after close"), new("dropped future")]);
    let engine = std::sync::Arc::into_inner(engine).expect("the only handle");
    engine.close().expect("close");
    let late = block_on(late);
    let late_memory = late[0].as_ref().expect("stored").clone();
    assert!(
        matches!(late[1], Err(EngineError::Duplicate { .. })),
        "{:?}",
        late[1]
    );
    stored.push(late_memory);

    let engine = open(dir.path(), 1000);
    for m in &stored {
        assert!(
            engine.get(&m.id).expect("get").is_some(),
            "{} lost",
            m.content
        );
    }
    let page = engine
        .list(&crate::model::ListFilter::default(), None, 1000)
        .expect("list");
    assert_eq!(
        page.memories.len(),
        402,
        "400 + the dropped future's + the late one"
    );
}

#[test]
fn a_purge_drops_every_kept_version_and_replay_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let kept = engine.create(new("kept v1")).expect("create");
    let purged = engine.create(new("purged v1")).expect("create");
    for v in 2..=4 {
        for id in [kept.id, purged.id] {
            let patch = MemoryPatch {
                importance: Some(v as f32 / 10.0),
                ..MemoryPatch::default()
            };
            engine.update(&id, patch).expect("update");
        }
    }
    let versions = |e: &Engine, id: &Uuid| -> Vec<u64> {
        let warm = &e.inner.warm;
        warm.versions(id, u64::MAX, 100)
            .expect("versions")
            .iter()
            .map(|d| d.version)
            .collect()
    };
    assert_eq!(versions(&engine, &purged.id), [3, 2, 1]);
    engine.delete(&purged.id, true).expect("purge");
    assert!(
        versions(&engine, &purged.id).is_empty(),
        "no row of it is left"
    );
    assert_eq!(versions(&engine, &kept.id), [3, 2, 1]);
    // Dropped without a checkpoint: the WAL is replayed into RocksDB at open, and replaying
    // the updates does not bring back the purged memory's versions.
    drop(engine);
    let engine = open(dir.path(), 100);
    assert!(versions(&engine, &purged.id).is_empty());
    assert_eq!(versions(&engine, &kept.id), [3, 2, 1]);
    let v2 = engine.get_version(&kept.id, 2).expect("version 2");
    assert_eq!((v2.version, v2.importance), (2, 0.2));
    assert!(matches!(
        engine.get_version(&purged.id, 2),
        Err(EngineError::NotFound(_))
    ));
}

#[test]
fn an_export_reads_a_memory_that_moved_after_its_tier_was_looked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let to = |id: &Uuid, tier: Tier| {
        engine
            .update(
                id,
                MemoryPatch {
                    tier: Some(tier),
                    ..MemoryPatch::default()
                },
            )
            .expect("move");
    };
    // In id order: a warm one, a cold one, then working ones. The export looks up the first
    // two, then emits the first working one; at that moment the two move (warm to cold, cold
    // to warm), so where it looked is no longer where they are.
    let warm = engine.create(new("was warm")).expect("create");
    let cold = engine.create(new("was cold")).expect("create");
    to(&warm.id, Tier::Warm);
    to(&cold.id, Tier::Cold);
    let rest: Vec<Uuid> = (0..5)
        .map(|i| {
            engine
                .create(new(&format!("working {i}")))
                .expect("create")
                .id
        })
        .collect();
    let mut seen = Vec::new();
    let mut moved = false;
    let count = engine
        .export_namespace("n", |e| {
            if !moved {
                moved = true;
                to(&warm.id, Tier::Cold);
                to(&cold.id, Tier::Warm);
            }
            seen.push(e.memory.id);
            Ok(())
        })
        .expect("export");
    assert!(moved);
    seen.sort_unstable();
    let mut all = vec![warm.id, cold.id];
    all.extend(rest);
    all.sort_unstable();
    assert_eq!(seen, all, "each memory exactly once");
    assert_eq!(count.memories, 7);
    engine.close().expect("close");
}
