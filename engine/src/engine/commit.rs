//! The committer: one thread that makes logged records durable and applies them for callers that
//! do not wait on a thread of their own. An async caller (the HTTP server) logs its write on its
//! own task — the writer lock and the WAL append, memory work — and awaits a [`Committing`]
//! future; the committer writes and fdatasyncs everything appended since its last round (one
//! group commit), applies it, and wakes every waiter it covered.
//!
//! Why: with a blocking thread per waiting create, each waiting first on the WAL leader's
//! condvar and then on the apply lock, `perf` put 39% of the daemon's CPU in the kernel's
//! context-switch and wake-up paths at 64 clients.
//!
//! Blocking callers keep [`Inner::sync_and_apply`]: they may lead a group commit themselves, and
//! the two kinds of committer share the WAL's leader election and the apply lock.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use engram_wal::{AtomicLsn, Lsn};
use parking_lot::{Condvar, Mutex};

use super::Inner;
use crate::model::Memory;
use crate::EngineError;

/// How long the committer sleeps without a request before it looks again anyway (a safety net:
/// every request rings it).
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// The committer's mailbox: what writers want committed and who is waiting.
pub(super) struct Committer {
    /// Highest LSN a waiter needs durable and applied.
    wanted: AtomicLsn,
    /// Set while the thread waits (or is about to) for `wanted` to move.
    sleeping: AtomicBool,
    bell: Mutex<()>,
    ring: Condvar,
    /// Wakers of pending [`Committing`] futures, with the LSN each waits for.
    waiters: Mutex<Vec<(Lsn, Waker)>>,
}

impl Committer {
    pub(super) fn new() -> Committer {
        Committer {
            wanted: AtomicLsn::new(Lsn::ZERO),
            sleeping: AtomicBool::new(false),
            bell: Mutex::new(()),
            ring: Condvar::new(),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Asks for everything up to `lsn` to be made durable and applied soon. Rings only when the
    /// thread sleeps: the thread reads `wanted` after announcing its sleep, under the bell, so
    /// either it sees this request or this sees it sleeping.
    fn request(&self, lsn: Lsn) {
        self.wanted.fetch_max(lsn, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            let _bell = self.bell.lock();
            self.ring.notify_one();
        }
    }

    /// Wakes the thread whatever it is doing (to stop).
    pub(super) fn ring(&self) {
        let _bell = self.bell.lock();
        self.ring.notify_one();
    }
}

impl Inner {
    /// The committer thread: commits rounds until the engine stops, then a last one for what was
    /// requested; returns early if the engine is poisoned (every waiter then fails).
    pub(super) fn commit_loop(&self) {
        loop {
            let target = self.committer.wanted.load(Ordering::SeqCst);
            if target > self.applied_lsn.load(Ordering::Acquire) {
                // The apply wakes the waiters it covered; a failure poisons the engine, and
                // then every waiter is woken to find that out.
                if let Err(e) = self.sync_and_apply(target) {
                    tracing::error!(error = %e, "the committer's group commit failed");
                    self.wake_committed();
                }
                if self.is_poisoned() {
                    return;
                }
                continue;
            }
            // Records another thread applied: their waiters were woken there; this is a net.
            self.wake_committed();
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let mut bell = self.committer.bell.lock();
            self.committer.sleeping.store(true, Ordering::SeqCst);
            if self.committer.wanted.load(Ordering::SeqCst)
                <= self.applied_lsn.load(Ordering::Acquire)
                && !self.stop.load(Ordering::Acquire)
            {
                self.committer.ring.wait_for(&mut bell, IDLE_WAIT);
            }
            self.committer.sleeping.store(false, Ordering::SeqCst);
        }
    }

    /// Wakes the waiters whose records are applied (all of them if the engine is poisoned or
    /// stopping: they then find out for themselves). Called by every thread that applies.
    pub(super) fn wake_committed(&self) {
        let applied = self.applied_lsn.load(Ordering::Acquire);
        let all = self.is_poisoned() || self.stop.load(Ordering::Acquire);
        let ready: Vec<Waker> = {
            let mut waiters = self.committer.waiters.lock();
            let mut ready = Vec::new();
            waiters.retain(|(lsn, waker)| {
                if all || *lsn <= applied {
                    ready.push(waker.clone());
                    false
                } else {
                    true
                }
            });
            ready
        };
        for waker in ready {
            waker.wake();
        }
    }
}

/// Writes that are logged and will be durable and applied: resolves to their results once they
/// are (an `Ok` becomes the commit's error if it fails). Dropping it does not undo the writes:
/// they are in the log and the committer applies them.
#[must_use = "the results are known only once the writes are committed"]
pub struct Committing {
    inner: Arc<Inner>,
    /// The last LSN of the writes (`ZERO`: nothing was logged).
    lsn: Lsn,
    results: Option<Vec<Result<Memory, EngineError>>>,
}

impl std::fmt::Debug for Committing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committing")
            .field("lsn", &self.lsn)
            .finish_non_exhaustive()
    }
}

impl Committing {
    pub(super) fn new(
        inner: Arc<Inner>,
        lsn: Lsn,
        results: Vec<Result<Memory, EngineError>>,
    ) -> Committing {
        if lsn > Lsn::ZERO {
            inner.committer.request(lsn);
        }
        Committing {
            inner,
            lsn,
            results: Some(results),
        }
    }

    fn finish(&mut self, outcome: Result<(), EngineError>) -> Vec<Result<Memory, EngineError>> {
        let mut results = self
            .results
            .take()
            .expect("a Committing is polled after it finished");
        if let Err(e) = outcome {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(e.clone());
            }
            return results;
        }
        self.inner.present_results(results)
    }
}

impl Future for Committing {
    type Output = Vec<Result<Memory, EngineError>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = Arc::clone(&this.inner);
        let lsn = this.lsn;
        let applied = || inner.applied_lsn.load(Ordering::Acquire) >= lsn;
        if applied() {
            return Poll::Ready(this.finish(Ok(())));
        }
        if inner.is_poisoned() {
            return Poll::Ready(this.finish(Err(EngineError::Poisoned)));
        }
        if inner.stop.load(Ordering::Acquire) {
            // The committer is gone or going (shutdown): commit here.
            let outcome = inner.sync_and_apply(lsn);
            return Poll::Ready(this.finish(outcome));
        }
        {
            // Checked again under the lock the committer wakes under: it stores `applied_lsn`
            // (or poisons) before taking it, so no wake-up is missed.
            let mut waiters = inner.committer.waiters.lock();
            if !applied() && !inner.is_poisoned() {
                waiters.push((lsn, cx.waker().clone()));
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
