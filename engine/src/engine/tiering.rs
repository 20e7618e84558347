//! Moves between tiers decided by the engine itself: eviction from a full working tier,
//! promotion of memories used again, the retention policy's demotions, and the purge of expired
//! memories. Each logs its moves a chunk per hold of the writer lock ([`Inner::log_in_chunks`]),
//! so writers never wait behind a long scan.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use engram_wal::Lsn;
use uuid::Uuid;

use super::read::is_expired;
use super::writer::{WriterEvictions, WriterState};
use super::Inner;
use crate::codec::{Op, PutKind};
use crate::model::{Memory, Status, Tier};
use crate::policy::{MigrationReport, PlannedMove};
use crate::EngineError;

/// Most memories one eviction pass moves to warm beyond what is needed.
const EVICTION_CHUNK: usize = 8192;
/// Least time between two log lines about writers evicting (see `make_room`).
const EVICTION_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// Records logged per hold of the writer lock by background work (eviction, promotion,
/// migration, expiry).
const LOG_CHUNK_RECORDS: usize = 256;
/// Background eviction starts when fewer than capacity / this many working slots are free
/// (95% full); a writer that has to evict moves that many beyond what it needs.
const EVICTION_START_DIVISOR: usize = 20;
/// Background eviction moves memories until capacity / this many slots are free (90% full).
const EVICTION_TARGET_DIVISOR: usize = 10;

/// Longest a write waits for the graph to catch up before it goes ahead anyway: a graph
/// rebuilt after a restart can take minutes, and no write should hang that long.
pub const GRAPH_WAIT_MAX: Duration = Duration::from_secs(2);
/// How often a waiting write looks at the graph's backlog again.
pub const GRAPH_WAIT_STEP: Duration = Duration::from_millis(1);

/// How long a victim scan's order is used by writers that evict (see `make_room`).
pub(super) const VICTIMS_FRESH: Duration = Duration::from_secs(1);

/// Why a memory goes up a tier, as reports say it.
const PROMOTION_REASON: &str = "used again";

/// What [`Inner::log_in_chunks`]'s callback did with one item.
pub(super) enum Logged {
    /// Logged a record at this LSN.
    Yes(Lsn),
    /// Nothing to log for this item.
    No,
    /// Nothing more to do: commit what was logged and return.
    Stop,
}

impl Inner {
    /// Runs `log_one` over `items` under the writer lock, [`LOG_CHUNK_RECORDS`] items per hold,
    /// and commits each chunk before taking the lock again: background work never keeps
    /// writers waiting for more than one chunk, and what it logged is durable and applied when
    /// this returns. Stops early when the engine is closing. Returns how many records it logged.
    pub(super) fn log_in_chunks<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        mut log_one: impl FnMut(&mut WriterState, T) -> Result<Logged, EngineError>,
    ) -> Result<usize, EngineError> {
        let mut items = items.into_iter();
        let mut logged = 0;
        loop {
            let mut last = None;
            let mut done = false;
            {
                let mut w = self.writer.lock();
                for _ in 0..LOG_CHUNK_RECORDS {
                    let Some(item) = items.next() else {
                        done = true;
                        break;
                    };
                    match log_one(&mut w, item)? {
                        Logged::Yes(lsn) => {
                            last = Some(lsn);
                            logged += 1;
                        }
                        Logged::No => {}
                        Logged::Stop => {
                            done = true;
                            break;
                        }
                    }
                }
            }
            if let Some(lsn) = last {
                self.sync_and_apply(lsn)?;
            }
            if done || self.stop.load(Ordering::Acquire) {
                return Ok(logged);
            }
        }
    }

    /// Purges memories whose `expires_at` has passed, a chunk per hold of the writer lock.
    pub(super) fn purge_expired(&self) -> Result<(), EngineError> {
        let now = self.now_us();
        let due: Vec<Uuid> = {
            let expiry = self.expiry.lock();
            expiry
                .iter()
                .take_while(|(at, _)| *at <= now)
                .map(|(_, id)| *id)
                .collect()
        };
        let purged = self.log_in_chunks(due, |w, id| {
            // Re-checked under the writer lock: an update may have moved the date.
            Ok(match self.current(w, &id)? {
                Some(m) if is_expired(&m, now) => {
                    Logged::Yes(self.log_delete(w, &id, true, None)?.0)
                }
                _ => Logged::No,
            })
        })?;
        self.counters
            .memories_expired
            .fetch_add(purged as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Before `incoming` memories enter the working tier: if it would exceed its capacity, log
    /// moves of the least valuable (lowest importance, then least recently used) to warm.
    /// `Ok(false)` when there is still no room: everything in the tier is an in-flight write.
    pub(super) fn make_room(
        &self,
        w: &mut WriterState,
        incoming: usize,
    ) -> Result<bool, EngineError> {
        let capacity = self.config.working_capacity;
        if w.working_projected + incoming <= capacity {
            return Ok(true);
        }
        // Evict a twentieth of the tier beyond the need (at most EVICTION_CHUNK), so that
        // background eviction has time to catch up. But no more than the graph's backlog has
        // room for: each evicted vector joins it, and writers waiting for it should go on as
        // the graph catches up, not a twentieth of the tier at a time. The rest of that
        // twentieth waits in `victims` for the next writers (for at most VICTIMS_FRESH): the
        // same memories the eager eviction would have moved at once.
        let started = Instant::now();
        let excess = w.working_projected + incoming - capacity;
        let extra = (capacity / EVICTION_START_DIVISOR).min(EVICTION_CHUNK);
        let chunk = excess + extra;
        let want = excess + extra.min(self.graph_room().saturating_sub(excess));
        let mut moved = 0;
        let mut scanned = false;
        if w.victims_at.is_none_or(|at| at.elapsed() > VICTIMS_FRESH) {
            w.victims.clear();
        }
        while moved < want {
            let Some(id) = w.victims.pop_front() else {
                if scanned {
                    break;
                }
                // Memories with a write in flight are passed over, so take that many more.
                let take = chunk + w.pending.len();
                w.victims = self.eviction_order().into_iter().take(take).collect();
                w.victims_at = Some(Instant::now());
                scanned = true;
                continue;
            };
            if w.pending.contains_key(&id) {
                continue;
            }
            if self.log_move_to_warm(w, &id)?.is_some() {
                moved += 1;
            }
        }
        self.counters
            .count_move(Tier::Working, Tier::Warm, moved as u64);
        // Every writer waits for this: background eviction fell behind. Said at most once a
        // second, with how often it happened since.
        let e = &mut w.writer_evictions;
        e.times += 1;
        e.moved += moved as u64;
        if e.logged_at
            .is_none_or(|at| at.elapsed() >= EVICTION_LOG_INTERVAL)
        {
            tracing::info!(
                times = e.times,
                moved = e.moved,
                last_took_ms = started.elapsed().as_millis() as u64,
                "working tier full: writers evicted to warm themselves"
            );
            *e = WriterEvictions {
                logged_at: Some(Instant::now()),
                ..WriterEvictions::default()
            };
        }
        Ok(w.working_projected + incoming <= capacity)
    }

    /// Working-tier memories, least valuable first: lowest importance, then least recently used.
    pub(super) fn eviction_order(&self) -> Vec<Uuid> {
        let mut candidates = self.working.eviction_inputs();
        candidates.sort_by(|a, b| {
            a.importance
                .total_cmp(&b.importance)
                .then(a.last_used_us.cmp(&b.last_used_us))
        });
        candidates.into_iter().map(|c| c.id).collect()
    }

    /// Logs a move of `id` from the working tier to warm. `None` if it is no longer there.
    pub(super) fn log_move_to_warm(
        &self,
        w: &mut WriterState,
        id: &Uuid,
    ) -> Result<Option<Lsn>, EngineError> {
        let Some(mut memory) = self.working.get(id)? else {
            return Ok(None);
        };
        memory.tier = Tier::Warm;
        let holds = memory.status != Status::Deleted;
        let hash = memory.content_hash;
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Move,
                memory,
                previous_tier: Some(Tier::Working),
                previous_hash: holds.then_some(hash),
                history: Vec::new(),
            },
        )?;
        w.working_projected -= 1;
        Ok(Some(lsn))
    }

    /// How many more vectors the graph's backlog (warm vectors waiting for it, each scanned
    /// exactly by every search and held in memory) may take before `search.hnsw_max_lagging`;
    /// unlimited without a bound.
    fn graph_room(&self) -> usize {
        match self.config.search.max_lagging {
            0 => usize::MAX,
            max => max.saturating_sub(self.search.hnsw.lagging_len()),
        }
    }

    /// Whether the graph's backlog is at its bound.
    pub(super) fn graph_backlog_full(&self) -> bool {
        self.graph_room() == 0
    }

    /// Whether `incoming` new memories should wait before they are logged: the graph's backlog
    /// is full and the working tier cannot take them without moving others to warm, each of
    /// which would join the backlog. So sustained writes into a full working tier go at the
    /// graph's pace instead of growing the backlog without bound.
    pub(super) fn should_wait_for_graph(&self, incoming: usize) -> bool {
        // The writer lock only once the backlog is full: the count `make_room` goes by
        // includes writes logged and not yet applied.
        self.graph_backlog_full()
            && self.writer.lock().working_projected + incoming > self.config.working_capacity
    }

    /// Waits (sleeping) while [`Inner::should_wait_for_graph`], at most [`GRAPH_WAIT_MAX`].
    pub(super) fn wait_for_graph(&self, incoming: usize) {
        if !self.should_wait_for_graph(incoming) {
            return;
        }
        let started = Instant::now();
        while started.elapsed() < GRAPH_WAIT_MAX && self.should_wait_for_graph(incoming) {
            std::thread::sleep(GRAPH_WAIT_STEP);
        }
        self.note_graph_wait(started.elapsed());
    }

    /// Counts a write's wait for the graph and says so in the log, at most once a second.
    pub(super) fn note_graph_wait(&self, waited: Duration) {
        let c = &self.counters;
        c.graph_waits.fetch_add(1, Ordering::Relaxed);
        c.graph_wait_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        let now = self.now_us();
        let last = c.graph_wait_logged_us.load(Ordering::Relaxed);
        if now - last >= 1_000_000
            && c.graph_wait_logged_us
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::info!(
                lagging = self.search.hnsw.lagging_len(),
                max_lagging = self.config.search.max_lagging,
                waits = c.graph_waits.load(Ordering::Relaxed),
                waited_ms = waited.as_millis() as u64,
                "writes into a full working tier wait for the vector index to catch up"
            );
        }
    }

    /// Memories in working above which background eviction starts (95% of capacity).
    fn eviction_start(&self) -> usize {
        let capacity = self.config.working_capacity;
        capacity - capacity / EVICTION_START_DIVISOR
    }

    /// Background eviction: above 95% of capacity, move the least valuable memories to warm
    /// until 90%, a few hundred per hold of the writer lock, so writers never wait for the
    /// victim scan. `make_room` remains for bursts this cannot keep up with.
    pub(super) fn evict_in_background(&self) -> Result<(), EngineError> {
        let capacity = self.config.working_capacity;
        let high = self.eviction_start();
        let low = capacity - capacity / EVICTION_TARGET_DIVISOR;
        let projected = self.writer.lock().working_projected;
        // No more than the graph's backlog has room for (the moves join it only as they are
        // applied, so the count is taken once, up front). While it is full, memories stay in
        // working up to its capacity; writers that would have to evict wait for the graph
        // instead (`should_wait_for_graph`).
        if projected <= high {
            return Ok(());
        }
        let mut want = (projected - low).min(self.graph_room());
        if want == 0 {
            return Ok(());
        }
        let moved = self.log_in_chunks(self.eviction_order(), |w, id| {
            if want == 0 {
                return Ok(Logged::Stop);
            }
            if w.pending.contains_key(&id) {
                return Ok(Logged::No);
            }
            Ok(match self.log_move_to_warm(w, &id)? {
                Some(lsn) => {
                    want -= 1;
                    Logged::Yes(lsn)
                }
                None => Logged::No,
            })
        })?;
        self.counters
            .count_move(Tier::Working, Tier::Warm, moved as u64);
        Ok(())
    }

    /// Moves `id` one tier up (cold → warm → working). `None` if it is not there any more.
    pub(super) fn log_promotion(
        &self,
        w: &mut WriterState,
        id: &Uuid,
    ) -> Result<Option<(Lsn, Tier, Tier)>, EngineError> {
        let Some(current) = self.current(w, id)? else {
            return Ok(None);
        };
        if current.status == Status::Deleted || is_expired(&current, self.now_us()) {
            return Ok(None);
        }
        let Some(to) = current.tier.up() else {
            return Ok(None);
        };
        // A promotion takes free room in working and never evicts for it, not even by the
        // background eviction it would start: when the memories in use outnumber the tier,
        // evicting one for another only moves them back and forth (each move a WAL record,
        // RocksDB writes and a graph insert). The memory stays warm, its count starts again,
        // and it goes up once idle memories have left.
        if to == Tier::Working && w.working_projected >= self.eviction_start() {
            self.accesses_since_move.lock().remove(id);
            return Ok(None);
        }
        let from = current.tier;
        let hash = current.content_hash;
        let lsn = self.log(
            w,
            Op::Put {
                kind: PutKind::Move,
                memory: Memory {
                    tier: to,
                    ..current
                },
                previous_tier: Some(from),
                previous_hash: Some(hash),
                history: Vec::new(),
            },
        )?;
        self.adjust_projected(w, Some(from), Some(to));
        Ok(Some((lsn, from, to)))
    }

    /// Promotes the memories used often enough since their last move.
    pub(super) fn promote_queued(&self) -> Result<Vec<PlannedMove>, EngineError> {
        let ids: Vec<Uuid> = std::mem::take(&mut *self.promote.lock())
            .into_iter()
            .collect();
        let mut moves = Vec::new();
        self.log_in_chunks(ids, |w, id| {
            Ok(match self.log_promotion(w, &id)? {
                Some((lsn, from, to)) => {
                    moves.push(PlannedMove {
                        id,
                        from,
                        to,
                        retention: 1.0,
                        reason: PROMOTION_REASON,
                    });
                    Logged::Yes(lsn)
                }
                None => Logged::No,
            })
        })?;
        for m in &moves {
            self.counters.count_move(m.from, m.to, 1);
        }
        Ok(moves)
    }

    /// The policy's demotions: working and warm memories whose retention fell below their
    /// tier's threshold, least retained first.
    pub(super) fn plan_demotions(&self) -> Result<Vec<PlannedMove>, EngineError> {
        let policy = &self.config.migration;
        let now = self.now_us();
        let idle = |last: i64| (now - last) as f64 / 1e6;
        let mut moves = Vec::new();
        for s in self.working.eviction_inputs() {
            if let Some((to, r)) = policy.demotion(
                Tier::Working,
                idle(s.last_used_us),
                s.access_count,
                s.importance,
            ) {
                moves.push(PlannedMove {
                    id: s.id,
                    from: Tier::Working,
                    to,
                    retention: r,
                    reason: "retention below working_to_warm_after",
                });
            }
        }
        // Warm: active memories (their attributes are in memory), with access state from
        // RocksDB.
        let mut access: HashMap<Uuid, (u64, Option<i64>)> = HashMap::new();
        self.warm.scan_access(|id, count, last| {
            access.insert(id, (count, last));
        })?;
        // Copy out under the read lock (appliers wait for it), decide outside.
        let warm: Vec<(Uuid, f32, i64)> = self
            .search
            .attrs
            .read()
            .by_id
            .iter()
            .filter(|(_, a)| {
                a.tier == Tier::Warm && a.importance < policy.min_importance_to_stay_warm
            })
            .map(|(id, a)| (*id, a.importance, a.created_at_us))
            .collect();
        for (id, importance, created) in warm {
            let (count, last) = access.get(&id).copied().unwrap_or((0, None));
            let last = last.unwrap_or(created);
            if let Some((to, r)) = policy.demotion(Tier::Warm, idle(last), count, importance) {
                moves.push(PlannedMove {
                    id,
                    from: Tier::Warm,
                    to,
                    retention: r,
                    reason: "retention below warm_to_cold_after",
                });
            }
        }
        moves.sort_by(|a, b| a.retention.total_cmp(&b.retention));
        Ok(moves)
    }

    /// Runs the migration policy now: promotions of memories used again, then demotions.
    pub(super) fn migrate(&self, dry_run: bool) -> Result<MigrationReport, EngineError> {
        let _one = self.migration_lock.lock();
        let started = Instant::now();
        let planned = self.plan_demotions()?;
        if dry_run {
            let mut moves: Vec<PlannedMove> = self
                .promote
                .lock()
                .iter()
                .filter_map(|id| {
                    let m = self.read(id).ok().flatten()?;
                    Some(PlannedMove {
                        id: *id,
                        from: m.tier,
                        to: m.tier.up()?,
                        retention: 1.0,
                        reason: PROMOTION_REASON,
                    })
                })
                .collect();
            moves.extend(planned);
            return Ok(MigrationReport {
                dry_run,
                moves,
                skipped: 0,
                took: started.elapsed(),
            });
        }
        let mut moves = self.promote_queued()?;
        let mut skipped = 0;
        // Working → warm, a chunk per hold of the writer lock.
        let to_warm = planned.iter().filter(|m| m.to == Tier::Warm);
        self.log_in_chunks(to_warm, |w, m| {
            if w.pending.contains_key(&m.id) {
                skipped += 1;
                return Ok(Logged::No);
            }
            Ok(match self.log_move_to_warm(w, &m.id)? {
                Some(lsn) => {
                    moves.push(m.clone());
                    Logged::Yes(lsn)
                }
                None => {
                    skipped += 1;
                    Logged::No
                }
            })
        })?;
        self.counters.count_move(
            Tier::Working,
            Tier::Warm,
            moves.iter().filter(|m| m.from == Tier::Working).count() as u64,
        );
        // Warm → cold, a segment at a time.
        let to_cold: Vec<&PlannedMove> = planned.iter().filter(|m| m.to == Tier::Cold).collect();
        // Sealed in id order: the warm reads are then nearly sequential, and each segment
        // holds a range of ids (all planned moves are made, so retention order does not
        // matter here).
        let mut cold_ids: Vec<Uuid> = to_cold.iter().map(|m| m.id).collect();
        cold_ids.sort_unstable();
        let sealed: std::collections::HashSet<Uuid> = self
            .seal(cold_ids, false)?
            .into_iter()
            .map(|m| m.id)
            .collect();
        for m in to_cold {
            if sealed.contains(&m.id) {
                moves.push(m.clone());
            } else {
                skipped += 1;
            }
        }
        Ok(MigrationReport {
            dry_run,
            moves,
            skipped,
            took: started.elapsed(),
        })
    }
}
