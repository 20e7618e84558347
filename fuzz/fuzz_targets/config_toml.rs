//! Fuzz target: engramd's configuration file. Parsing and validating any text gives settings or
//! an error naming a key, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = engram_server::config::from_toml_str(text, "fuzz.toml") {
            assert!(!e.to_string().is_empty());
        }
    }
});
