//! Fuzz target: the engine's WAL operation decoder (record payloads) must return an error, never
//! panic or allocate without bound, on any bytes; what it accepts re-encodes identically.
#![no_main]

use engram_engine::{decode_op, encode_op};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(op) = decode_op(data, 1) {
        assert_eq!(encode_op(&op), data);
    }
});
