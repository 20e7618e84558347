//! Unit tests of the vector spaces of embedding migrations (`spaces.rs`), on a real store in a
//! temporary directory: a space covers every tier and follows changes, its worker's races, the
//! cut-over of searches, and the vectors clients send while a space is active.

use uuid::Uuid;

use super::tests::{new, open, DIMS};
use super::Engine;
use crate::model::{MemoryPatch, NewMemory, Tier};
use crate::EngineError;

/// A stand-in model for the space tests: 3 dimensions from the content's bytes, so equal texts
/// get equal vectors and the test can say which memory a query vector should find.
fn space_vector(content: &str) -> Vec<f32> {
    let b = content.as_bytes();
    let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
    vec![
        1.0 + (sum % 7) as f32,
        (b.len() % 11) as f32,
        f32::from(b.last().copied().unwrap_or(0) % 13),
    ]
}

/// Runs a space's work to the end with [`space_vector`]; returns how many were embedded.
fn drain_space(engine: &Engine, space: u32) -> usize {
    let mut n = 0;
    loop {
        let jobs = engine.space_work(space, 7).expect("work");
        if jobs.is_empty() {
            return n;
        }
        let vectors = jobs.iter().map(|j| space_vector(&j.content)).collect();
        n += engine
            .store_space_vectors(space, &jobs, vectors)
            .expect("store");
    }
}

#[test]
fn a_space_covers_every_tier_follows_changes_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let ids: Vec<Uuid> = (0..30)
        .map(|i| {
            engine
                .create(new(&format!("memory number {i}")))
                .expect("create")
                .id
        })
        .collect();
    engine.move_to(&ids[0], Tier::Warm).expect("to warm");
    engine.move_to(&ids[1], Tier::Cold).expect("to cold");
    let space = engine
        .create_space(3, "{\"model\":\"test\"}".into())
        .expect("space")
        .id;
    assert_eq!(
        drain_space(&engine, space),
        30,
        "every memory of every tier"
    );
    let info = engine.space(space).expect("info");
    assert_eq!((info.vectors, info.dirty, info.caught_up), (30, 0, true));
    assert!(info.backfilled_at_us.is_some());

    // A change made after the pass is found through its dirty mark.
    let patch = |content: &str| MemoryPatch {
        content: Some(content.into()),
        ..Default::default()
    };
    engine
        .update(&ids[2], patch("changed text"))
        .expect("update");
    assert_eq!(engine.space(space).expect("info").dirty, 1);
    assert_eq!(drain_space(&engine, space), 1);
    // A change racing the worker: its mark survives the store of the older content.
    engine
        .update(&ids[3], patch("first change"))
        .expect("update");
    let jobs = engine.space_work(space, 10).expect("work");
    assert_eq!(jobs.len(), 1);
    engine
        .update(&ids[3], patch("second change"))
        .expect("update");
    let vectors = jobs.iter().map(|j| space_vector(&j.content)).collect();
    engine
        .store_space_vectors(space, &jobs, vectors)
        .expect("store");
    let again = engine.space_work(space, 10).expect("work");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].content, "second change");
    let vectors = again.iter().map(|j| space_vector(&j.content)).collect();
    engine
        .store_space_vectors(space, &again, vectors)
        .expect("store");

    // A tier move is not a change; a delete drops the row; a purge removes it.
    engine.move_to(&ids[4], Tier::Warm).expect("move");
    engine.delete(&ids[5], false).expect("delete");
    engine.delete(&ids[6], true).expect("purge");
    assert_eq!(drain_space(&engine, space), 0);
    let info = engine.space(space).expect("info");
    assert_eq!((info.vectors, info.dirty, info.caught_up), (28, 0, true));

    // Search ranks only the space's vectors, with its dimensions.
    let target = engine.get(&ids[7]).expect("get").expect("there");
    let hits = engine
        .search_space(space, &space_vector(&target.content), "n", 30, false)
        .expect("search");
    assert!(
        (hits[0].1 - 1.0).abs() < 1e-5,
        "an equal vector first: {hits:?}"
    );
    assert!(hits.iter().all(|(m, _)| m.id != ids[5] && m.id != ids[6]));
    assert_eq!(hits.len(), 28);
    match engine.search_space(space, &[0.5; DIMS], "n", 5, false) {
        Err(EngineError::Invalid { field, message }) => {
            assert_eq!(field, "query_embedding");
            assert!(message.contains("3"), "{message}");
        }
        other => panic!("expected a dimensions error, got {other:?}"),
    }
    assert!(matches!(
        engine.space_work(99, 1),
        Err(EngineError::SpaceNotFound(99))
    ));

    // Activated: the store's searches rank the space's vectors, with the query's filters.
    let cold = engine.get(&ids[1]).expect("get").expect("there");
    let search = |engine: &Engine, v: Vec<f32>, tiers: Vec<Tier>| {
        let mut q = crate::search::SearchQuery::new("n");
        q.embedding = Some(v);
        q.mode = crate::search::SearchMode::Semantic;
        q.tiers = tiers;
        q.limit = 1;
        engine.search(&q)
    };
    let all = vec![Tier::Working, Tier::Warm, Tier::Cold];
    assert!(matches!(
        search(&engine, space_vector(&cold.content), all.clone()),
        Err(EngineError::Invalid { .. })
    ));
    engine.activate_space(space).expect("activate");
    let hits = search(&engine, space_vector(&cold.content), all.clone()).expect("search");
    assert_eq!(
        hits.hits[0].memory.id, cold.id,
        "a cold memory, by its space vector"
    );
    let hits = search(&engine, space_vector(&cold.content), vec![Tier::Working]).expect("search");
    assert_ne!(hits.hits[0].memory.id, cold.id, "the tier filter holds");
    assert!(matches!(
        engine.set_space_paused(space, true),
        Err(EngineError::SpaceConflict {
            code: "MIGRATION_ACTIVE",
            ..
        })
    ));
    assert!(matches!(
        engine.drop_space(space),
        Err(EngineError::SpaceConflict {
            code: "MIGRATION_ACTIVE",
            ..
        })
    ));
    engine.deactivate_space(space).expect("deactivate");
    assert!(search(&engine, vec![0.5; DIMS], all).is_ok());

    // Paused: no work, and the pause outlives a reopen; rows too.
    engine.set_space_paused(space, true).expect("pause");
    engine
        .update(&ids[8], patch("while paused"))
        .expect("update");
    assert!(engine.space_work(space, 10).expect("work").is_empty());
    engine.close().expect("close");
    let engine = open(dir.path(), 100);
    let info = engine.space(space).expect("info");
    assert!(info.paused);
    assert_eq!((info.vectors, info.dirty), (28, 1));
    engine.set_space_paused(space, false).expect("resume");
    assert_eq!(
        drain_space(&engine, space),
        1,
        "only the change made while paused"
    );
    assert!(engine.space(space).expect("info").caught_up);

    engine.drop_space(space).expect("drop");
    assert!(engine.spaces().expect("spaces").is_empty());
    assert!(!dir.path().join("spaces").join(space.to_string()).exists());
    engine.close().expect("close");
    let engine = open(dir.path(), 100);
    assert!(engine.spaces().expect("spaces").is_empty());
    // A new space after a drop starts empty.
    let next = engine.create_space(3, "{}".into()).expect("space");
    assert_eq!(next.vectors, 0);
    // A bounded number at once.
    for _ in 1..super::spaces::MAX_SPACES {
        engine.create_space(3, "{}".into()).expect("space");
    }
    assert!(matches!(
        engine.create_space(3, "{}".into()),
        Err(EngineError::Invalid { .. })
    ));
}

#[test]
fn a_client_vector_written_while_a_space_is_active_is_the_spaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let ids: Vec<Uuid> = (0..5)
        .map(|i| {
            engine
                .create(new(&format!("memory {i}")))
                .expect("create")
                .id
        })
        .collect();
    let space = engine.create_space(3, "{}".into()).expect("space").id;
    drain_space(&engine, space);
    engine.activate_space(space).expect("activate");
    let nearest = |engine: &Engine, v: &[f32]| {
        engine
            .search_space(space, v, "n", 1, false)
            .expect("search")
            .pop()
            .map(|(m, sim)| (m.id, sim))
            .expect("a hit")
    };

    // The store's dimensions are refused now; the space's go to the space, not the tiers.
    match engine.create(new("old model")) {
        Err(EngineError::Invalid { field, message }) => {
            assert_eq!(field, "embedding");
            assert!(message.contains("active embedding space"), "{message}");
        }
        other => panic!("expected a dimensions error, got {other:?}"),
    }
    let mine = [0.0, 9.0, 1.0];
    let created = engine
        .create(NewMemory {
            embedding: Some(mine.to_vec()),
            ..new("embedded by the client")
        })
        .expect("create");
    assert_eq!(
        created.embedding, None,
        "the store's own space has no vector"
    );
    let (id, sim) = nearest(&engine, &mine);
    assert_eq!(id, created.id);
    assert!((sim - 1.0).abs() < 1e-5, "{sim}");
    assert_eq!(engine.space(space).expect("info").dirty, 0, "settled");

    // Racing the worker: a job for a content change, then the client's vector for it; the
    // worker's vector of the same content does not replace the client's.
    engine
        .update(
            &ids[0],
            MemoryPatch {
                content: Some("changed".into()),
                ..Default::default()
            },
        )
        .expect("update");
    let jobs = engine.space_work(space, 10).expect("work");
    assert_eq!(jobs.len(), 1);
    let theirs = [0.0, 0.0, 1.0];
    engine
        .update(
            &ids[0],
            MemoryPatch {
                embedding: Some(Some(theirs.to_vec())),
                ..Default::default()
            },
        )
        .expect("update with a vector");
    let vectors = jobs.iter().map(|j| space_vector(&j.content)).collect();
    assert_eq!(
        engine
            .store_space_vectors(space, &jobs, vectors)
            .expect("store"),
        0
    );
    assert_eq!(nearest(&engine, &theirs).0, ids[0]);
    assert!(engine.space_work(space, 10).expect("work").is_empty());

    // Replayed and reopened: still the client's vectors.
    engine.close().expect("close");
    let engine = open(dir.path(), 100);
    assert_eq!(nearest(&engine, &mine).0, created.id);
    assert_eq!(nearest(&engine, &theirs).0, ids[0]);
    assert!(engine.space_work(space, 10).expect("work").is_empty());
    // Back on the store's own space, the store's dimensions are accepted again.
    engine.deactivate_space(space).expect("deactivate");
    engine.create(new("old model")).expect("create");
}

/// The store's own vectors dropped after a cut-over: the space's vectors are read, searched and
/// exported in their place, writes store none of their own, the sweep rewrites every working
/// and warm record, and all of it holds after a reopen.
#[test]
fn dropping_the_own_vectors_hands_every_read_to_the_active_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), 100);
    let ids: Vec<Uuid> = (0..12)
        .map(|i| engine.create(new(&format!("fact {i}"))).expect("create").id)
        .collect();
    engine.move_to(&ids[0], Tier::Warm).expect("to warm");
    engine.move_to(&ids[1], Tier::Cold).expect("to cold");
    let before_update = engine.get(&ids[2]).expect("get").expect("there");
    std::thread::sleep(std::time::Duration::from_millis(5));
    let at_before = crate::model::now_us();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let patch = MemoryPatch {
        content: Some("fact two, corrected".into()),
        ..Default::default()
    };
    engine.update(&ids[2], patch).expect("update");

    // Only once a space is active.
    match engine.drop_own_vectors() {
        Err(EngineError::SpaceConflict { code, .. }) => assert_eq!(code, "MIGRATION_NOT_ACTIVE"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let space = engine
        .create_space(3, "{\"model\":\"test-model\"}".into())
        .expect("space")
        .id;
    drain_space(&engine, space);
    engine.activate_space(space).expect("activate");
    let own = engine.drop_own_vectors().expect("drop");
    assert_eq!(own.dropped.as_ref().map(|d| d.space), Some(space));
    engine
        .inner
        .search
        .hnsw
        .save()
        .expect("the indexer's queue is done");
    assert_eq!(
        engine.vector_index_sizes(),
        (0, 0),
        "the own graph is emptied"
    );

    // Reads show the space's vector of each memory's content, in every tier.
    let shown = |id: &Uuid| engine.get(id).expect("get").expect("there");
    for id in &ids {
        let m = shown(id);
        assert_eq!(m.embedding, Some(space_vector(&m.content)), "{}", m.content);
        assert_eq!(m.embedding_model.as_deref(), Some("test-model"));
        assert_eq!(m.embedding_status, crate::model::EmbeddingStatus::Ready);
    }
    // The past: version 1 of the updated memory had other content, which the space never
    // embedded; as-of searches rank by the space too.
    let v1 = engine.get_version(&ids[2], 1).expect("v1");
    assert_eq!(
        (v1.content.as_str(), v1.embedding.as_ref()),
        (before_update.content.as_str(), None)
    );
    let mut q = crate::search::SearchQuery::new("n");
    q.embedding = Some(space_vector("fact 5"));
    q.mode = crate::search::SearchMode::Semantic;
    q.limit = 1;
    q.as_of_us = Some(at_before);
    let past = engine.search(&q).expect("as-of search");
    assert_eq!(past.hits[0].memory.content, "fact 5");
    q.embedding = Some(vec![0.5; DIMS]);
    assert!(
        matches!(engine.search(&q), Err(EngineError::Invalid { .. })),
        "a vector of the old dimensions is refused, in the past too"
    );
    q.as_of_us = None;
    assert!(matches!(
        engine.search(&q),
        Err(EngineError::Invalid { .. })
    ));

    // Writes keep no own vector: a client's vector is the space's, a memory without one
    // waits for the space's worker.
    let mut sent = new("sent with a vector");
    sent.embedding = Some(vec![0.0, 1.0, 2.0]);
    let sent = engine.create(sent).expect("create with a space vector");
    assert_eq!(sent.embedding, Some(vec![0.0, 1.0, 2.0]));
    let mut bare = new("sent without one");
    bare.embedding = None;
    let bare = engine.create(bare).expect("create");
    assert_eq!(
        bare.embedding_status,
        crate::model::EmbeddingStatus::Pending
    );
    assert!(engine.pending_embeddings(10).expect("queue").is_empty());
    drain_space(&engine, space);
    assert_eq!(
        shown(&bare.id).embedding,
        Some(space_vector("sent without one"))
    );

    // The space stays: no switching back, no other space.
    match engine.deactivate_space(space) {
        Err(EngineError::SpaceConflict { code, .. }) => assert_eq!(code, "OWN_VECTORS_DROPPED"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    engine
        .activate_space(space)
        .expect("activating it again is harmless");

    // The sweep rewrites working and warm records, the cold segment and the kept versions.
    let raw_v1 = |engine: &Engine| engine.inner.version(&ids[2], 1).expect("v1").embedding;
    assert!(raw_v1(&engine).is_some(), "version 1 kept its old vector");
    let cold_before = engine.cold_segments();
    assert_eq!(cold_before.len(), 1);
    while !engine.own_vectors().dropped.expect("dropped").swept {
        engine.inner.sweep_own_vectors().expect("sweep");
    }
    for id in &ids {
        let raw = engine.inner.read(id).expect("read").expect("there");
        assert_eq!((raw.embedding, raw.embedding_model), (None, None), "{id}");
    }
    assert_eq!(
        engine
            .inner
            .read(&ids[1])
            .expect("read")
            .expect("there")
            .tier,
        Tier::Cold
    );
    let cold_after = engine.cold_segments();
    assert_eq!(cold_after.len(), 1);
    assert_ne!(
        cold_after[0].id, cold_before[0].id,
        "the segment was rewritten"
    );
    assert!(cold_after[0].bytes < cold_before[0].bytes);
    // Eleven outside cold, less the updated one: its new content came without a vector.
    assert_eq!(raw_v1(&engine), None);
    let own = engine.own_vectors();
    assert_eq!((own.stripped, own.segments, own.versions), (10, 1, 1));

    engine.close().expect("close");
    let engine = open(dir.path(), 100);
    let own = engine.own_vectors().dropped.expect("still dropped");
    assert!(own.swept);
    assert_eq!(engine.vector_index_sizes(), (0, 0));
    for id in &ids {
        let m = engine.get(id).expect("get").expect("there");
        assert_eq!(m.embedding, Some(space_vector(&m.content)));
    }
    q.embedding = Some(space_vector("fact 7"));
    assert_eq!(
        engine.search(&q).expect("search").hits[0].memory.content,
        "fact 7"
    );

    // A later model change: a second space, activated in the first one's place, which can
    // then be dropped; reads name the second model.
    let second = engine
        .create_space(3, "{\"model\":\"second-model\"}".into())
        .expect("second space")
        .id;
    drain_space(&engine, second);
    engine
        .activate_space(second)
        .expect("switch to the second space");
    match engine.drop_space(second) {
        Err(EngineError::SpaceConflict { code, .. }) => assert_eq!(code, "MIGRATION_ACTIVE"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    engine
        .drop_space(space)
        .expect("the first space can go now");
    let own = engine.own_vectors().dropped.expect("dropped");
    assert_eq!((own.space, own.model.as_str()), (second, "second-model"));
    for id in &ids {
        let m = engine.get(id).expect("get").expect("there");
        assert_eq!(m.embedding, Some(space_vector(&m.content)));
        assert_eq!(m.embedding_model.as_deref(), Some("second-model"));
    }
    assert_eq!(
        engine.search(&q).expect("search").hits[0].memory.content,
        "fact 7"
    );
}
