//! The three tiers, each with its own storage and the LSN its durable image reflects:
//! `working` (memory-mapped slots, lock-free reads), `warm` (RocksDB, which also holds the
//! store-wide indexes) and `cold` (immutable zstd segments). They know the memory model and the
//! codec, not the engine: the engine decides what moves where and applies it to them.

pub(crate) mod cold;
pub(crate) mod warm;
pub(crate) mod working;
