//! Fuzz target: the WAL frame decoder and the segment scanner must never panic on any bytes, and
//! a frame they accept must re-encode to the same bytes.
#![no_main]

use engram_wal::frame::{self, Decoded};
use engram_wal::{segment, Lsn};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Record(r, len)) = frame::decode(data) {
        let mut again = Vec::new();
        frame::encode(&mut again, r.lsn, r.commit_time_us, r.payload);
        assert_eq!(&again[..len], &data[..len]);
    }
    let mut expected = None;
    let _ = segment::scan(data, &mut expected, |_, _| Ok::<(), ()>(()));
    let _ = segment::valid_frame_after(data, 0, Lsn::ZERO);
    let _ = segment::check_header(data, 1);
});
