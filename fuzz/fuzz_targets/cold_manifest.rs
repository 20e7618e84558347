//! Fuzz target: the cold tier's MANIFEST. Never panics; what it accepts re-encodes canonically. The property
//! is `engram_engine::fuzzing::cold_manifest`, which a unit test also runs on the seed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| engram_engine::fuzzing::cold_manifest(data));
