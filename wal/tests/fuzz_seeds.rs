//! The `wal_record` fuzz target's property, run over its committed corpus
//! (`fuzz/seeds/wal_record/`, minimized after 11M executions): the frame decoder and the
//! segment scanner never panic, and a frame they accept re-encodes to the same bytes.

use engram_wal::frame::{self, Decoded};
use engram_wal::{segment, Lsn};

#[test]
fn the_wal_record_corpus_decodes_safely() {
    // The checkout the test runs in (cargo and nextest set it at run time): a test binary
    // reused from a shared target directory was compiled in another checkout's path.
    let root = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let dir = std::path::Path::new(&root).join("../fuzz/seeds/wal_record");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/wal_record") {
        let data = std::fs::read(entry.expect("entry").path()).expect("seed");
        if let Ok(Decoded::Record(r, len)) = frame::decode(&data) {
            let mut again = Vec::new();
            frame::encode(&mut again, r.lsn, r.commit_time_us, r.payload);
            assert_eq!(&again[..len], &data[..len]);
        }
        let mut expected = None;
        let _ = segment::scan(&data, &mut expected, |_, _| Ok::<(), ()>(()));
        let _ = segment::valid_frame_after(&data, 0, Lsn::ZERO);
        let _ = segment::check_header(&data, 1);
        checked += 1;
    }
    assert!(checked > 100, "only {checked} seeds");
}
