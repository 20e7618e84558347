//! Fuzz target: any bytes as the body of every endpoint that takes one (create, batch, patch,
//! search on each path, migrate, test clock). Parsing and validation give a value or a 4xx
//! error with a message, never a panic. The property is `engram_server::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    engram_server::fuzzing::request_bodies(data);
});
