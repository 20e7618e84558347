//! Prometheus metrics, named `engram_<subsystem>_<noun>_<unit>[_total]`. Gauges that mirror
//! engine state are refreshed at scrape time, so they are never stale.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use engram_engine::{Engine, EngineStats};

use crate::embed::EmbedStats;

/// Every metric the daemon exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub operations: IntCounterVec,
    pub mcp_tool_calls: IntCounterVec,
    pub http_duration: HistogramVec,
    pub http_requests: IntCounterVec,
    tier_memories: IntGaugeVec,
    pub wal_fsync_duration: prometheus::Histogram,
    wal_durable_lsn: IntGauge,
    wal_active_segments: IntGauge,
    engine_poisoned: IntGauge,
    tier_bytes: IntGaugeVec,
    uptime_seconds: IntGauge,
    migrations: IntCounterVec,
    checkpoints: prometheus::IntCounter,
    embedding_queue: IntGauge,
    embeddings: IntCounterVec,
    vector_index: IntGaugeVec,
    expired: prometheus::IntCounter,
    graph_waits: prometheus::IntCounter,
    graph_wait_seconds: prometheus::Counter,
    cold_segments: IntGauge,
    compactions: prometheus::IntCounter,
    compaction_seconds: prometheus::Counter,
    compaction_dead: prometheus::IntCounter,
    cold_dead_entries: IntGauge,
    warm_memory: IntGaugeVec,
    storage_free_bytes: IntGauge,
    archive_bytes: IntGauge,
    archive_segments: IntGauge,
    archive_oldest_timestamp: prometheus::Gauge,
    snapshots: IntGauge,
    snapshot_last_timestamp: prometheus::Gauge,
    migration_vectors: IntGaugeVec,
    migration_rate: prometheus::GaugeVec,
    migration_embedded: IntCounterVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("metric definitions are static and valid")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let operations = must(IntCounterVec::new(
            Opts::new(
                "engram_memory_operations_total",
                "Memory operations completed, by operation.",
            ),
            &["operation"],
        ));
        let mcp_tool_calls = must(IntCounterVec::new(
            Opts::new(
                "engram_mcp_tool_calls_total",
                "MCP tool calls, by tool and outcome (ok, error, invalid_params).",
            ),
            &["tool", "outcome"],
        ));
        let http_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "engram_http_request_duration_seconds",
                "HTTP request latency, by route and status.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ]),
            &["route", "status"],
        ));
        let http_requests = must(IntCounterVec::new(
            Opts::new(
                "engram_http_requests_total",
                "HTTP requests, by route and status.",
            ),
            &["route", "status"],
        ));
        let tier_memories = must(IntGaugeVec::new(
            Opts::new("engram_tier_memories", "Memories stored, by tier."),
            &["tier"],
        ));
        let wal_fsync_duration = must(prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "engram_wal_fsync_duration_seconds",
                "WAL fdatasync latency.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0,
            ]),
        ));
        let wal_durable_lsn = must(IntGauge::new(
            "engram_wal_durable_lsn",
            "Highest LSN on disk.",
        ));
        let wal_active_segments = must(IntGauge::new(
            "engram_wal_active_segments",
            "WAL segments not yet covered by a checkpoint.",
        ));
        let engine_poisoned = must(IntGauge::new(
            "engram_engine_poisoned",
            "1 when a failed write or fsync has stopped writes until restart.",
        ));
        let tier_bytes = must(IntGaugeVec::new(
            Opts::new(
                "engram_tier_bytes",
                "Bytes used on disk or in heap, by tier.",
            ),
            &["tier"],
        ));
        let uptime_seconds = must(IntGauge::new(
            "engram_uptime_seconds",
            "Seconds since the daemon started.",
        ));
        let migrations = must(IntCounterVec::new(
            Opts::new(
                "engram_tier_migrations_total",
                "Memories moved between tiers by the engine, by direction.",
            ),
            &["from", "to"],
        ));
        let checkpoints = must(prometheus::IntCounter::new(
            "engram_engine_checkpoints_total",
            "Checkpoints: tiers made durable and the WAL trimmed.",
        ));
        let embedding_queue = must(IntGauge::new(
            "engram_embedding_queue_depth",
            "Memories waiting for the background embedder.",
        ));
        let embeddings = must(IntCounterVec::new(
            Opts::new(
                "engram_embeddings_total",
                "Memories the background embedder finished, by outcome (ready, failed).",
            ),
            &["outcome"],
        ));
        let vector_index = must(IntGaugeVec::new(
            Opts::new(
                "engram_vector_index_vectors",
                "Warm vectors in the HNSW graph (graph) and waiting for it (lagging, scanned exactly).",
            ),
            &["state"],
        ));
        let expired = must(prometheus::IntCounter::new(
            "engram_memories_expired_total",
            "Memories purged because their expires_at passed.",
        ));
        let graph_waits = must(prometheus::IntCounter::new(
            "engram_graph_waits_total",
            "Writes into a full working tier that waited for the vector index to catch up (search.hnsw_max_lagging).",
        ));
        let graph_wait_seconds = must(prometheus::Counter::new(
            "engram_graph_wait_seconds_total",
            "Time those writes spent waiting.",
        ));
        let cold_segments = must(IntGauge::new("engram_cold_segments", "Live cold segments."));
        let compactions = must(prometheus::IntCounter::new(
            "engram_cold_compactions_total",
            "Cold compaction runs.",
        ));
        let compaction_seconds = must(prometheus::Counter::new(
            "engram_cold_compaction_seconds_total",
            "Time spent compacting cold segments.",
        ));
        let compaction_dead = must(prometheus::IntCounter::new(
            "engram_cold_compaction_dead_entries_total",
            "Dead cold entries (updated, deleted or promoted memories) compaction dropped.",
        ));
        let cold_dead_entries = must(IntGauge::new(
            "engram_cold_dead_entries",
            "Entries of live cold segments whose memory changed, moved or went since (compaction drops them).",
        ));
        let warm_memory = must(IntGaugeVec::new(
            Opts::new(
                "engram_warm_memory_bytes",
                "What RocksDB holds in memory: memtables, table readers (index and filter blocks), block cache.",
            ),
            &["kind"],
        ));
        let storage_free_bytes = must(IntGauge::new(
            "engram_storage_free_bytes",
            "Free bytes on the data directory's file system (looked up at most a second ago).",
        ));
        let archive_bytes = must(IntGauge::new(
            "engram_wal_archive_bytes",
            "Bytes of closed WAL segments kept for point-in-time restore.",
        ));
        let archive_segments = must(IntGauge::new(
            "engram_wal_archive_segments",
            "Closed WAL segments kept for point-in-time restore.",
        ));
        let archive_oldest_timestamp = must(prometheus::Gauge::new(
            "engram_wal_archive_oldest_timestamp_seconds",
            "Unix time the oldest archived WAL segment was last written (0: none).",
        ));
        let snapshots = must(IntGauge::new("engram_snapshots", "Snapshots kept."));
        let snapshot_last_timestamp = must(prometheus::Gauge::new(
            "engram_snapshot_last_timestamp_seconds",
            "Unix time the newest kept snapshot was taken (0: none).",
        ));
        let migration_vectors = must(IntGaugeVec::new(
            Opts::new(
                "engram_embedding_migration_memories",
                "Embedding migrations: memories with a vector in the new space (vectors), changed since theirs was computed (pending_changes), searchable in the store (searchable), in the new space's graph (indexed).",
            ),
            &["migration", "kind"],
        ));
        let migration_rate = must(prometheus::GaugeVec::new(
            Opts::new(
                "engram_embedding_migration_rate",
                "Embedding migrations: vectors per second over the current stretch of work (0 when idle).",
            ),
            &["migration"],
        ));
        let migration_embedded = must(IntCounterVec::new(
            Opts::new(
                "engram_embedding_migration_embedded_total",
                "Embedding migrations: vectors stored since the daemon started.",
            ),
            &["migration"],
        ));
        // Known label values exist from the start (at 0), so alerts and dashboards find the
        // series before the first embedding.
        for outcome in ["ready", "failed"] {
            embeddings.with_label_values(&[outcome]);
        }
        for c in [
            Box::new(expired.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(graph_waits.clone()),
            Box::new(graph_wait_seconds.clone()),
            Box::new(cold_dead_entries.clone()),
            Box::new(warm_memory.clone()),
            Box::new(storage_free_bytes.clone()),
            Box::new(archive_bytes.clone()),
            Box::new(archive_segments.clone()),
            Box::new(archive_oldest_timestamp.clone()),
            Box::new(snapshots.clone()),
            Box::new(snapshot_last_timestamp.clone()),
            Box::new(cold_segments.clone()),
            Box::new(compactions.clone()),
            Box::new(compaction_seconds.clone()),
            Box::new(compaction_dead.clone()),
            Box::new(embedding_queue.clone()),
            Box::new(embeddings.clone()),
            Box::new(vector_index.clone()),
            Box::new(operations.clone()),
            Box::new(mcp_tool_calls.clone()),
            Box::new(http_duration.clone()),
            Box::new(http_requests.clone()),
            Box::new(tier_memories.clone()),
            Box::new(wal_fsync_duration.clone()),
            Box::new(wal_durable_lsn.clone()),
            Box::new(wal_active_segments.clone()),
            Box::new(engine_poisoned.clone()),
            Box::new(tier_bytes.clone()),
            Box::new(uptime_seconds.clone()),
            Box::new(migrations.clone()),
            Box::new(checkpoints.clone()),
            Box::new(migration_vectors.clone()),
            Box::new(migration_rate.clone()),
            Box::new(migration_embedded.clone()),
        ] {
            must(registry.register(c));
        }
        Metrics {
            registry,
            operations,
            mcp_tool_calls,
            http_duration,
            http_requests,
            tier_memories,
            wal_fsync_duration,
            wal_durable_lsn,
            wal_active_segments,
            engine_poisoned,
            tier_bytes,
            uptime_seconds,
            migrations,
            checkpoints,
            embedding_queue,
            embeddings,
            vector_index,
            expired,
            graph_waits,
            graph_wait_seconds,
            cold_segments,
            compactions,
            compaction_seconds,
            compaction_dead,
            cold_dead_entries,
            warm_memory,
            storage_free_bytes,
            archive_bytes,
            archive_segments,
            archive_oldest_timestamp,
            snapshots,
            snapshot_last_timestamp,
            migration_vectors,
            migration_rate,
            migration_embedded,
        }
    }

    fn refresh(&self, stats: &EngineStats, uptime_seconds: u64) {
        for (tier, n) in [
            ("working", stats.working),
            ("warm", stats.warm),
            ("cold", stats.cold),
        ] {
            self.tier_memories
                .with_label_values(&[tier])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.tier_bytes
            .with_label_values(&["working"])
            .set(i64::try_from(stats.working_heap_live_bytes).unwrap_or(i64::MAX));
        self.tier_bytes
            .with_label_values(&["warm"])
            .set(i64::try_from(stats.warm_disk_bytes).unwrap_or(i64::MAX));
        self.tier_bytes
            .with_label_values(&["cold"])
            .set(i64::try_from(stats.cold_disk_bytes).unwrap_or(i64::MAX));
        self.cold_segments
            .set(i64::try_from(stats.cold_segments).unwrap_or(i64::MAX));
        self.wal_durable_lsn
            .set(i64::try_from(stats.durable_lsn.get()).unwrap_or(i64::MAX));
        self.wal_active_segments
            .set(i64::try_from(stats.wal_active_segments).unwrap_or(i64::MAX));
        self.engine_poisoned.set(i64::from(stats.poisoned));
        self.cold_dead_entries
            .set(i64::try_from(stats.cold_dead_entries).unwrap_or(i64::MAX));
        self.storage_free_bytes
            .set(i64::try_from(stats.free_disk_bytes).unwrap_or(i64::MAX));
        for (kind, bytes) in [
            ("memtables", stats.warm_memory.memtables),
            ("table_readers", stats.warm_memory.table_readers),
            ("block_cache", stats.warm_memory.block_cache),
        ] {
            self.warm_memory
                .with_label_values(&[kind])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        self.uptime_seconds
            .set(i64::try_from(uptime_seconds).unwrap_or(i64::MAX));
    }

    /// Copies a monotonic engine counter into a Prometheus counter.
    fn mirror(counter: &prometheus::IntCounter, value: u64) {
        let seen = counter.get();
        if value > seen {
            counter.inc_by(value - seen);
        }
    }

    /// [`Metrics::mirror`] for a seconds counter fed from a count of microseconds.
    fn mirror_seconds(counter: &prometheus::Counter, micros: u64) {
        let secs = micros as f64 / 1e6;
        let seen = counter.get();
        if secs > seen {
            counter.inc_by(secs - seen);
        }
    }

    /// Sets the embedding migrations' series (a dropped migration's disappear).
    pub fn observe_migrations(
        &self,
        migrations: &[(
            engram_engine::SpaceInfo,
            std::sync::Arc<crate::migrations::WorkerStats>,
        )],
    ) {
        self.migration_vectors.reset();
        self.migration_rate.reset();
        self.migration_embedded.reset();
        for (info, stats) in migrations {
            let id = info.id.to_string();
            for (kind, n) in [
                ("vectors", info.vectors),
                ("pending_changes", info.dirty),
                ("searchable", info.searchable),
                ("indexed", info.indexed),
            ] {
                self.migration_vectors
                    .with_label_values(&[id.as_str(), kind])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            self.migration_rate
                .with_label_values(&[id.as_str()])
                .set(stats.rate());
            self.migration_embedded
                .with_label_values(&[id.as_str()])
                .inc_by(stats.embedded.load(std::sync::atomic::Ordering::Relaxed));
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn render(
        &self,
        engine: &Engine,
        embed: Option<&EmbedStats>,
        uptime_seconds: u64,
    ) -> String {
        self.refresh(&engine.stats(), uptime_seconds);
        let archive = engine.archive_usage();
        self.archive_segments
            .set(i64::try_from(archive.segments).unwrap_or(i64::MAX));
        self.archive_bytes
            .set(i64::try_from(archive.bytes).unwrap_or(i64::MAX));
        self.archive_oldest_timestamp
            .set(archive.oldest_modified_us.map_or(0.0, |us| us as f64 / 1e6));
        // A snapshot directory being written or removed meanwhile only hides it until the next
        // scrape.
        if let Ok(all) = engine.list_snapshots() {
            self.snapshots
                .set(i64::try_from(all.len()).unwrap_or(i64::MAX));
            self.snapshot_last_timestamp.set(
                all.iter()
                    .map(|m| m.created_at_us)
                    .max()
                    .map_or(0.0, |us| us as f64 / 1e6),
            );
        }
        self.embedding_queue
            .set(i64::try_from(engine.pending_embedding_count()).unwrap_or(i64::MAX));
        if let Some(e) = embed {
            Self::mirror(
                &self.embeddings.with_label_values(&["ready"]),
                e.embedded.load(std::sync::atomic::Ordering::Relaxed),
            );
            Self::mirror(
                &self.embeddings.with_label_values(&["failed"]),
                e.failed.load(std::sync::atomic::Ordering::Relaxed),
            );
        }
        let (graph, lagging) = engine.vector_index_sizes();
        self.vector_index
            .with_label_values(&["graph"])
            .set(i64::try_from(graph).unwrap_or(i64::MAX));
        self.vector_index
            .with_label_values(&["lagging"])
            .set(i64::try_from(lagging).unwrap_or(i64::MAX));
        let counters = engine.counters();
        for from in engram_engine::Tier::ALL {
            for to in engram_engine::Tier::ALL {
                if from != to {
                    Self::mirror(
                        &self
                            .migrations
                            .with_label_values(&[from.as_str(), to.as_str()]),
                        counters.migrated(from, to),
                    );
                }
            }
        }
        Self::mirror(
            &self.compactions,
            counters
                .compactions
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        Self::mirror(
            &self.compaction_dead,
            counters
                .compaction_dead_dropped
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        Self::mirror_seconds(
            &self.compaction_seconds,
            counters
                .compaction_us
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        Self::mirror(
            &self.checkpoints,
            counters
                .checkpoints
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        Self::mirror(
            &self.expired,
            counters
                .memories_expired
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        Self::mirror(
            &self.graph_waits,
            counters
                .graph_waits
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        Self::mirror_seconds(
            &self.graph_wait_seconds,
            counters
                .graph_wait_us
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(out).expect("the text encoder writes UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
