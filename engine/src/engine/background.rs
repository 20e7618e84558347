//! The background thread: a table of periodic jobs (free-space check, expiry, eviction,
//! promotion, the migration policy, access flushing, scheduled snapshots, checkpoints), and the
//! checkpoint itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::locks::RankedGuard;
use super::Inner;
use crate::EngineError;

/// How often the background thread wakes to look for work.
const BACKGROUND_TICK: Duration = Duration::from_millis(100);
/// How often the data directory's free space is read (writes are refused below the minimum).
const FREE_SPACE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A job the background thread runs itself, at most every `every` (every tick when zero),
/// while the engine is not poisoned.
struct Periodic {
    /// What the job does, for the log line when it fails.
    name: &'static str,
    every: Duration,
    last: Instant,
    run: fn(&Inner) -> Result<(), EngineError>,
}

impl Periodic {
    fn new(
        name: &'static str,
        every: Duration,
        run: fn(&Inner) -> Result<(), EngineError>,
    ) -> Self {
        Periodic {
            name,
            every,
            last: Instant::now(),
            run,
        }
    }

    /// A job that runs at the first tick, then every `every`.
    fn due_at_start(self) -> Self {
        Periodic {
            last: Instant::now().checked_sub(self.every).unwrap_or(self.last),
            ..self
        }
    }

    fn due(&mut self) -> bool {
        let due = self.last.elapsed() >= self.every;
        if due {
            self.last = Instant::now();
        }
        due
    }
}

/// How often versions past `history.keep_versions` / `history.keep_for` are removed.
const HISTORY_SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// The jobs run on the background thread itself, in this order each tick.
fn periodic_jobs(inner: &Inner) -> Vec<Periodic> {
    let mut jobs = vec![
        Periodic::new(
            "purging expired memories",
            Duration::ZERO,
            Inner::purge_expired,
        ),
        Periodic::new(
            "moving memories from the working tier to warm",
            Duration::ZERO,
            Inner::evict_in_background,
        ),
        Periodic::new("promoting memories", Duration::ZERO, |inner| {
            if inner.promote.lock().is_empty() {
                return Ok(());
            }
            inner.promote_queued().map(drop)
        }),
    ];
    let policy = &inner.config.migration;
    if policy.enabled && inner.search.is_enabled() {
        jobs.push(Periodic::new(
            "tier migration and cold compaction",
            policy.interval,
            Inner::run_policy,
        ));
    }
    if inner.search.is_enabled() {
        jobs.push(Periodic::new(
            "dropping the store's own vectors",
            Duration::ZERO,
            Inner::sweep_own_vectors,
        ));
    }
    jobs.push(
        Periodic::new(
            "history retention",
            HISTORY_SWEEP_INTERVAL,
            Inner::sweep_history,
        )
        .due_at_start(),
    );
    jobs.push(Periodic::new(
        "logging access statistics",
        inner.config.access_flush_interval,
        Inner::flush_access,
    ));
    jobs
}

/// A job the background thread starts on a thread of its own (it may take seconds), at most
/// one at a time, joined before the background thread ends.
struct Detached<T> {
    running: Option<(std::thread::JoinHandle<T>, u64)>,
}

impl<T: Send + 'static> Detached<T> {
    fn new() -> Self {
        Detached { running: None }
    }

    fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts `f` on a thread named `name`, remembering `tag` with it.
    fn start(&mut self, name: &str, tag: u64, f: impl FnOnce() -> T + Send + 'static) {
        match std::thread::Builder::new().name(name.to_owned()).spawn(f) {
            Ok(handle) => self.running = Some((handle, tag)),
            Err(e) => tracing::error!(error = %e, thread = name, "could not start a thread"),
        }
    }

    /// The result and tag of a finished run (`Err` if it panicked); `None` while it runs.
    fn finished(&mut self) -> Option<(std::thread::Result<T>, u64)> {
        if !self.running.as_ref().is_some_and(|(h, _)| h.is_finished()) {
            return None;
        }
        let (handle, tag) = self.running.take().expect("checked above");
        Some((handle.join(), tag))
    }

    fn join(&mut self) {
        if let Some((handle, _)) = self.running.take() {
            let _ = handle.join();
        }
    }
}

impl Inner {
    /// Makes every tier durable at the applied LSN, writes the cold manifest, trims the WAL
    /// and prunes the archive.
    pub(super) fn checkpoint(&self) -> Result<(), EngineError> {
        let held = self.checkpoint_lock.lock();
        self.checkpoint_held(&held)
    }

    /// A checkpoint unless a snapshot is holding them off (`Ok(false)`): the background thread
    /// must not block for the length of a snapshot, or eviction and access flushing stop and
    /// writers end up evicting in the foreground.
    fn try_checkpoint(&self) -> Result<bool, EngineError> {
        let Some(held) = self.checkpoint_lock.try_lock() else {
            return Ok(false);
        };
        self.checkpoint_held(&held).map(|()| true)
    }

    fn checkpoint_held(&self, _held: &RankedGuard<'_, ()>) -> Result<(), EngineError> {
        if self.is_poisoned() {
            return Err(EngineError::Poisoned);
        }
        let started = Instant::now();
        let lsn = self.applied_lsn.load(Ordering::Acquire);
        let warm_lsn = self.warm.applied_lsn()?;
        self.warm.flush()?;
        self.working.checkpoint(lsn)?;
        // Every cold change up to `lsn` is applied, and each was made durable when applied.
        self.cold.write_manifest(lsn)?;
        self.wal.checkpoint(lsn.min(warm_lsn))?;
        if let Some(retention) = self.config.wal_archive_retention {
            let cutoff = std::time::SystemTime::now()
                .checked_sub(retention)
                .unwrap_or(std::time::UNIX_EPOCH);
            // Keep what restoring from the oldest snapshot needs, whatever its age.
            let keep_from = self.oldest_snapshot_replay_start()?;
            self.wal.prune_archive(cutoff, keep_from)?;
        }
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            lsn = lsn.get(),
            took_ms = started.elapsed().as_millis() as u64,
            "checkpoint"
        );
        Ok(())
    }

    /// The migration policy, then cold compaction (each logged when it did something).
    fn run_policy(&self) -> Result<(), EngineError> {
        let migrated = self.migrate(false).map(|r| {
            if !r.moves.is_empty() {
                tracing::info!(
                    moves = r.moves.len(),
                    skipped = r.skipped,
                    took_ms = r.took.as_millis() as u64,
                    "tier migration"
                );
            }
        });
        let compacted = self.compact(false).map(|r| {
            if r.segments_in > 0 {
                tracing::info!(
                    segments_in = r.segments_in,
                    dead_dropped = r.dead_dropped,
                    "cold compaction"
                );
            }
        });
        migrated.and(compacted)
    }

    /// The background thread: the free-space check, the [`periodic_jobs`], scheduled snapshots
    /// and checkpoints (both on threads of their own, so eviction and access flushing go on
    /// meanwhile; a checkpoint at 1M memories takes seconds, and a writer would otherwise
    /// have to evict in the foreground).
    pub(super) fn background(self: &Arc<Self>) {
        let mut jobs = periodic_jobs(self);
        let mut last_free_space_check = Instant::now();
        let mut snapshot = Detached::<()>::new();
        let mut last_snapshot = Instant::now();
        // A checkpoint's tag is the WAL bytes written when it started.
        let mut checkpoint = Detached::<Result<bool, EngineError>>::new();
        let mut last_checkpoint = Instant::now();
        let mut wal_bytes_at_checkpoint = self.wal.bytes_written();
        while !self.stop.load(Ordering::Acquire) {
            std::thread::park_timeout(BACKGROUND_TICK);
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            if last_free_space_check.elapsed() >= FREE_SPACE_CHECK_INTERVAL {
                // Released at open and when RocksDB meets a full disk; allocated again once
                // the disk has room (a stat when it is in place).
                self.ballast_missing.store(
                    self.layout.restore_ballast(self.config.min_free_disk_bytes),
                    Ordering::Release,
                );
                self.free_disk_bytes
                    .store(self.layout.free_bytes(), Ordering::Relaxed);
                last_free_space_check = Instant::now();
            }
            if self.is_poisoned() {
                continue;
            }
            for job in &mut jobs {
                if job.due() {
                    if let Err(e) = (job.run)(self) {
                        tracing::error!(error = %e, job = job.name, "background job failed");
                    }
                }
            }
            if let Some(every) = self.config.snapshot_interval {
                // A finished snapshot logged its own outcome.
                let _ = snapshot.finished();
                if last_snapshot.elapsed() >= every && !snapshot.is_running() {
                    last_snapshot = Instant::now();
                    let inner = Arc::clone(self);
                    snapshot.start("engram-scheduled-snapshot", 0, move || {
                        if let Err(e) = inner
                            .create_snapshot()
                            .and_then(|_| inner.prune_snapshots())
                        {
                            tracing::error!(error = %e, "scheduled snapshot failed");
                        }
                    });
                }
            }
            // A checkpoint finished: note when, and how much WAL it covered.
            if let Some((result, covered)) = checkpoint.finished() {
                match result.unwrap_or_else(|_| {
                    Err(EngineError::Invariant(
                        "the checkpoint thread panicked".to_owned(),
                    ))
                }) {
                    Ok(true) => {
                        last_checkpoint = Instant::now();
                        wal_bytes_at_checkpoint = covered;
                    }
                    Ok(false) => {} // a snapshot holds checkpoints off: try again next tick
                    // Out of descriptors or disk space: nothing is lost (the WAL is trimmed
                    // only after the tiers are durable), so the next interval tries again.
                    Err(e) if e.is_resource_shortage() => {
                        tracing::error!(error = %e, "checkpoint failed for want of file descriptors or disk space; retrying at the next interval");
                        last_checkpoint = Instant::now();
                        wal_bytes_at_checkpoint = covered;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "checkpoint failed");
                        self.poison(&e);
                        last_checkpoint = Instant::now();
                        wal_bytes_at_checkpoint = covered;
                    }
                }
            }
            let wal_bytes = self.wal.bytes_written();
            // While a snapshot holds checkpoints off, starting a thread would only find it held.
            if !checkpoint.is_running()
                && !self.checkpoint_lock.is_locked()
                && (last_checkpoint.elapsed() >= self.config.checkpoint_interval
                    || wal_bytes - wal_bytes_at_checkpoint >= self.config.checkpoint_wal_bytes)
            {
                let inner = Arc::clone(self);
                checkpoint.start("engram-checkpoint", wal_bytes, move || {
                    inner.try_checkpoint()
                });
            }
        }
        checkpoint.join();
        snapshot.join();
    }
}
