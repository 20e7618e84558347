//! The engine's lock order, in code: every engine-level mutex has a [`Rank`], and a thread may
//! only take a lock of a higher rank than every lock it already holds. Taking one out of order
//! panics at once, naming both locks, instead of deadlocking some day under load.
//!
//! The order (lowest first):
//!
//! | rank | lock | held for |
//! |---|---|---|
//! | `Migration` | `migration_lock` | one policy run or compaction |
//! | `Checkpoint` | `checkpoint_lock` | one checkpoint, or one snapshot's file work |
//! | `Apply` | `apply_lock` | applying the durable records of one commit, in LSN order |
//! | `Writer` | `writer` | deciding and appending a few records (never across an fsync) |
//! | `Queue` | `queue` | pushing or draining logged records |
//! | `ExpiryOf` | `expiry_of` | one expiry update (then `expiry`) |
//! | `Expiry` | `expiry` | one expiry update or a scan for due ids |
//! | `Leaf` | `accesses_since_move`, `promote`, `embed_pending`, `access_pending` | a map update; nothing else is taken meanwhile |
//!
//! The checks are on in every build (the tests run release binaries): a check is a
//! thread-local push and pop, small beside the microseconds a lock guards here.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use parking_lot::{Mutex, MutexGuard};

/// A lock's place in the order; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Rank {
    Migration,
    Checkpoint,
    Apply,
    Writer,
    Queue,
    ExpiryOf,
    Expiry,
    Leaf,
}

thread_local! {
    /// Ranks of the ranked locks this thread holds, in the order taken.
    static HELD: RefCell<Vec<Rank>> = const { RefCell::new(Vec::new()) };
}

/// A mutex with a rank.
pub(super) struct RankedMutex<T> {
    rank: Rank,
    mutex: Mutex<T>,
}

impl<T> RankedMutex<T> {
    pub(super) const fn new(rank: Rank, value: T) -> RankedMutex<T> {
        RankedMutex {
            rank,
            mutex: Mutex::new(value),
        }
    }

    /// Takes the lock, waiting if needed.
    ///
    /// # Panics
    /// If this thread holds a lock of the same or a higher rank: that order can deadlock.
    pub(super) fn lock(&self) -> RankedGuard<'_, T> {
        HELD.with(|held| {
            let held = held.borrow();
            if let Some(top) = held.iter().max() {
                assert!(
                    *top < self.rank,
                    "lock order violated: taking {:?} while holding {:?}",
                    self.rank,
                    top
                );
            }
        });
        let guard = self.mutex.lock();
        self.held(guard)
    }

    /// Takes the lock if it is free. A try cannot deadlock, so any order is allowed.
    pub(super) fn try_lock(&self) -> Option<RankedGuard<'_, T>> {
        self.mutex.try_lock().map(|g| self.held(g))
    }

    pub(super) fn is_locked(&self) -> bool {
        self.mutex.is_locked()
    }

    fn held<'a>(&self, guard: MutexGuard<'a, T>) -> RankedGuard<'a, T> {
        HELD.with(|held| held.borrow_mut().push(self.rank));
        RankedGuard {
            guard,
            rank: self.rank,
        }
    }
}

/// A held [`RankedMutex`]; releases the lock and its rank when dropped.
pub(super) struct RankedGuard<'a, T> {
    guard: MutexGuard<'a, T>,
    rank: Rank,
}

impl<T> Drop for RankedGuard<'_, T> {
    fn drop(&mut self) {
        HELD.with(|held| {
            let mut held = held.borrow_mut();
            // Guards may be dropped in any order: forget the newest hold of this rank.
            let at = held
                .iter()
                .rposition(|r| *r == self.rank)
                .expect("a held guard has its rank recorded");
            held.remove(at);
        });
    }
}

impl<T> Deref for RankedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for RankedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_in_rank_order_are_taken_and_released() {
        let apply = RankedMutex::new(Rank::Apply, ());
        let writer = RankedMutex::new(Rank::Writer, 1);
        let queue = RankedMutex::new(Rank::Queue, ());
        {
            let _a = apply.lock();
            let mut w = writer.lock();
            *w += 1;
            let _q = queue.lock();
        }
        // Released: the lower rank can be taken again, and out-of-order drops are fine.
        let w = writer.lock();
        let a = apply.try_lock().expect("free");
        drop(w);
        drop(a);
        let _a = apply.lock();
    }

    #[test]
    #[should_panic(expected = "lock order violated: taking Apply while holding Writer")]
    fn taking_a_lower_rank_panics() {
        let apply = RankedMutex::new(Rank::Apply, ());
        let writer = RankedMutex::new(Rank::Writer, ());
        let _w = writer.lock();
        let _a = apply.lock();
    }

    #[test]
    #[should_panic(expected = "lock order violated: taking Leaf while holding Leaf")]
    fn two_leaves_at_once_panic() {
        let hits = RankedMutex::new(Rank::Leaf, ());
        let promote = RankedMutex::new(Rank::Leaf, ());
        let _h = hits.lock();
        let _p = promote.lock();
    }
}
