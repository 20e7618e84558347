//! Fuzz target: a cold segment file (header, zstd blocks, quantized section, footer, trailer).
//! Opening, inspecting, scanning, point reads and search never panic and never allocate what a
//! damaged length merely claims. The property is `engram_engine::fuzzing::cold_segment`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// Segments are read with positioned reads from a file: one scratch file per process, in
/// memory-backed /dev/shm when there is one.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("engram-fuzz-{}.cold", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| engram_engine::fuzzing::cold_segment(data, scratch()));
