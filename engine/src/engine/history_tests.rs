//! Unit tests of what versions keep, on a real store in a temporary directory (the rules the
//! end-to-end history tests exercise through HTTP).

use super::tests::{new, DIMS};
use super::Engine;
use crate::config::EngineConfig;
use crate::model::MemoryPatch;

#[test]
fn history_keep_vectors_off_keeps_a_replaced_text_but_not_its_vector() {
    for keep_vectors in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = EngineConfig::new(dir.path());
        config.dimensions = DIMS;
        config.working_heap_bytes = 1 << 24;
        config.migration.enabled = false;
        config.history_keep_vectors = keep_vectors;
        let engine = Engine::open(config).expect("open").0;
        let mut first = new("The user lives in Lisbon and works as a nurse.");
        first.embedding = Some(vec![1.0, 0.0, 0.0, 0.0]);
        let first = engine.create(first).expect("create");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let patch = MemoryPatch {
            content: Some("The user lives in Porto and works as a nurse.".into()),
            embedding: Some(Some(vec![0.0, 1.0, 0.0, 0.0])),
            ..MemoryPatch::default()
        };
        let second = engine.update(&first.id, patch).expect("update");
        assert_eq!(second.embedding, Some(vec![0.0, 1.0, 0.0, 0.0]));

        let v1 = engine.get_version(&first.id, 1).expect("version 1");
        assert_eq!(v1.content, first.content, "the text is kept either way");
        let kept = keep_vectors.then(|| vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(v1.embedding, kept, "keep_vectors={keep_vectors}");

        // The past, searched by the old vector: found only if its vector was kept.
        let mut q = crate::search::SearchQuery::new("n");
        q.embedding = Some(vec![1.0, 0.0, 0.0, 0.0]);
        q.mode = crate::search::SearchMode::Semantic;
        q.as_of_us = Some(first.updated_at_us);
        let past = engine.search(&q).expect("as-of search");
        let found: Vec<_> = past
            .hits
            .iter()
            .map(|h| h.memory.content.as_str())
            .collect();
        let expected = if keep_vectors {
            vec![first.content.as_str()]
        } else {
            vec![]
        };
        assert_eq!(found, expected, "keep_vectors={keep_vectors}");
        // By its words, it is found either way.
        q.embedding = None;
        q.text = Some("Lisbon".into());
        q.mode = crate::search::SearchMode::Text;
        let past = engine.search(&q).expect("as-of text search");
        assert_eq!(past.hits.len(), 1);
        assert_eq!(past.hits[0].memory.content, first.content);
        engine.close().expect("close");
    }
}
