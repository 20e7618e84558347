//! A hasher for keys that are already random: UUIDv7 ids (their last 8 bytes are random) and
//! graph keys (those same bytes). The search filter looks up two maps for every node the HNSW
//! walk visits; SipHash made that lookup most of a search's cost.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Folds the written bytes into 64 bits and mixes them once.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(29) ^ u64::from_le_bytes(b))
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;
pub type IdSet<K> = HashSet<K, BuildHasherDefault<KeyHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets() {
        // UUIDv7 made in one millisecond share their first bytes: the hash must still differ.
        let ids: Vec<uuid::Uuid> = (0..10_000).map(|_| uuid::Uuid::now_v7()).collect();
        let hashes: IdSet<u64> = ids
            .iter()
            .map(|id| {
                let mut h = KeyHasher::default();
                std::hash::Hash::hash(id, &mut h);
                h.finish() & 0xFFFF
            })
            .collect();
        assert!(hashes.len() > 8_000, "{} distinct low bits", hashes.len());
    }
}
