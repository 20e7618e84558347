//! The log sequence number.

use std::fmt;
use std::str::FromStr;

/// Log sequence number: 1 for the first record ever written, +1 for each record after it.
///
/// [`Lsn::ZERO`] means "before the first record": the checkpoint of an empty store, the durable
/// LSN of a log nothing was written to. An `Lsn` is not a count and has no arithmetic beyond
/// stepping to its neighbours; [`Lsn::records_after`] gives the distance between two of them.
/// On disk and on the wire it is the plain `u64` (`serde(transparent)`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(u64);

impl Lsn {
    /// Before the first record.
    pub const ZERO: Lsn = Lsn(0);
    /// The first record ever written.
    pub const FIRST: Lsn = Lsn(1);
    /// Above every LSN a log can reach; a bound for "everything".
    pub const MAX: Lsn = Lsn(u64::MAX);

    pub const fn new(n: u64) -> Lsn {
        Lsn(n)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The LSN of the record after this one.
    pub const fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }

    /// The LSN of the record before this one; [`Lsn::ZERO`] stays zero.
    pub const fn prev(self) -> Lsn {
        Lsn(self.0.saturating_sub(1))
    }

    /// How many records lie after `earlier` up to and including `self` (0 if `earlier` is not
    /// earlier).
    pub const fn records_after(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    pub const fn to_le_bytes(self) -> [u8; 8] {
        self.0.to_le_bytes()
    }

    pub const fn from_le_bytes(bytes: [u8; 8]) -> Lsn {
        Lsn(u64::from_le_bytes(bytes))
    }
}

/// An [`Lsn`] shared between threads (the log's written and durable marks).
#[derive(Debug, Default)]
pub struct AtomicLsn(std::sync::atomic::AtomicU64);

impl AtomicLsn {
    pub const fn new(lsn: Lsn) -> AtomicLsn {
        AtomicLsn(std::sync::atomic::AtomicU64::new(lsn.0))
    }

    pub fn load(&self, order: std::sync::atomic::Ordering) -> Lsn {
        Lsn(self.0.load(order))
    }

    pub fn store(&self, lsn: Lsn, order: std::sync::atomic::Ordering) {
        self.0.store(lsn.0, order);
    }

    /// Raises the mark to `lsn` if it is lower; returns the mark before.
    pub fn fetch_max(&self, lsn: Lsn, order: std::sync::atomic::Ordering) -> Lsn {
        Lsn(self.0.fetch_max(lsn.0, order))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for Lsn {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Lsn, Self::Err> {
        s.parse().map(Lsn)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> u64 {
        lsn.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_distances() {
        assert_eq!(Lsn::ZERO.next(), Lsn::FIRST);
        assert_eq!(Lsn::ZERO.prev(), Lsn::ZERO);
        assert_eq!(Lsn::new(10).records_after(Lsn::new(4)), 6);
        assert_eq!(Lsn::new(4).records_after(Lsn::new(10)), 0);
        assert_eq!(Lsn::from_le_bytes(Lsn::new(77).to_le_bytes()), Lsn::new(77));
        assert_eq!("42".parse::<Lsn>().expect("parses"), Lsn::new(42));
        assert_eq!(Lsn::new(42).to_string(), "42");
    }

    #[test]
    fn serialises_as_the_plain_number() {
        assert_eq!(serde_json::to_string(&Lsn::new(9)).expect("json"), "9");
        assert_eq!(serde_json::from_str::<Lsn>("9").expect("json"), Lsn::new(9));
    }
}
