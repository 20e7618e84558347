//! What the `request_body` fuzz target checks, kept in the crate so its committed seeds run as a
//! unit test too: any bytes, as the body of every endpoint that takes one, parse and validate
//! into a value or a 4xx error with a message, never a panic or a 5xx.

use engram_engine::search::SearchMode;

use crate::api::{
    BatchCreate, CreateMemory, MigrateRequest, PatchMemory, SearchRequest, TestClockRequest,
};
use crate::error::ApiError;
use crate::http::body::parse_json;

/// Runs `bytes` through every request body's parser and validator.
pub fn request_bodies(bytes: &[u8]) {
    let create =
        |bytes: &[u8]| parse_json::<CreateMemory>(bytes).and_then(|c| c.into_new().map(drop));
    refused_cleanly(create(bytes));
    if let Ok(batch) = parse_json::<BatchCreate>(bytes) {
        for item in &batch.memories {
            refused_cleanly(create(item.get().as_bytes()));
        }
    }
    refused_cleanly(parse_json::<PatchMemory>(bytes).and_then(|p| p.into_patch().map(drop)));
    for forced in [None, Some(SearchMode::Text), Some(SearchMode::Semantic)] {
        refused_cleanly(
            parse_json::<SearchRequest>(bytes).and_then(|s| s.into_query(forced).map(drop)),
        );
    }
    refused_cleanly(parse_json::<MigrateRequest>(bytes).map(drop));
    refused_cleanly(parse_json::<TestClockRequest>(bytes).map(drop));
}

fn refused_cleanly(result: Result<(), ApiError>) {
    if let Err(e) = result {
        assert!(
            e.status.is_client_error(),
            "a body was answered {}: {}",
            e.status,
            e.message
        );
        assert!(!e.message.is_empty(), "an error without a message");
    }
}

#[cfg(test)]
mod tests {
    /// The committed seeds (and any crash reproducer added to them) pass the property.
    #[test]
    fn fuzz_seed_corpus() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/request_body");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/request_body") {
            let bytes = std::fs::read(entry.expect("dir entry").path()).expect("seed");
            super::request_bodies(&bytes);
            seen += 1;
        }
        assert!(seen >= 5, "the seed corpus is there");
    }
}
