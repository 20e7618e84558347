//! The admin endpoints: snapshots, the migration policy, compaction and the tier report. Only a
//! key that is not limited to namespaces reaches them (checked by the router).

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;

use crate::api::replies::{
    ArchiveOut, CompactOut, MigrateOut, SnapshotDeletedOut, SnapshotListOut, SnapshotOut,
    TestClockOut, TiersOut,
};
use crate::api::{MigrateRequest, TestClockRequest};
use crate::error::ApiError;
use crate::http::body::{blocking, parse_json, read_body};
use crate::http::{json_reply, AppState, Reply};

pub(crate) async fn snapshot_create(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let started = Instant::now();
    let manifest = blocking(move || engine.create_snapshot()).await??;
    state
        .metrics
        .operations
        .with_label_values(&["snapshot"])
        .inc();
    let body = SnapshotOut {
        took_ms: Some(started.elapsed().as_millis() as u64),
        ..SnapshotOut::from(&manifest)
    };
    Ok(json_reply(StatusCode::CREATED, &body))
}

pub(crate) async fn snapshot_list(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let (all, archive) =
        blocking(move || engine.list_snapshots().map(|l| (l, engine.archive_usage()))).await??;
    let body = SnapshotListOut {
        archive: ArchiveOut {
            segments: archive.segments,
            bytes: archive.bytes,
            retention_seconds: state
                .settings
                .wal_archive_retention
                .map(|d| d.as_secs_f64()),
        },
        snapshots: all.iter().map(SnapshotOut::from).collect(),
        restorable_from: all
            .iter()
            .map(|m| m.commit_time_us)
            .min()
            .map(crate::api::format_time),
    };
    Ok(json_reply(StatusCode::OK, &body))
}

pub(crate) async fn snapshot_delete(state: &Arc<AppState>, id: String) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let owned = id.clone();
    if !blocking(move || engine.delete_snapshot(&owned)).await?? {
        return Err(ApiError {
            details: json!({ "id": id }),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "SNAPSHOT_NOT_FOUND",
                format!("no snapshot {id}"),
            )
        });
    }
    Ok(json_reply(
        StatusCode::OK,
        &SnapshotDeletedOut { id, deleted: true },
    ))
}

pub(crate) async fn migrate(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let dry_run = if body.is_empty() {
        false
    } else {
        parse_json::<MigrateRequest>(&body)?
            .dry_run
            .unwrap_or(false)
    };
    let engine = Arc::clone(&state.engine);
    let report = blocking(move || engine.migrate(dry_run)).await??;
    Ok(json_reply(StatusCode::OK, &MigrateOut::from(report)))
}

pub(crate) async fn compact(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let report = blocking(move || engine.compact()).await??;
    Ok(json_reply(StatusCode::OK, &CompactOut::from(report)))
}

pub(crate) async fn tiers(state: &Arc<AppState>) -> Result<Reply, ApiError> {
    let engine = Arc::clone(&state.engine);
    let (report, segments) =
        blocking(move || engine.tier_report().map(|r| (r, engine.cold_segments()))).await??;
    Ok(json_reply(
        StatusCode::OK,
        &TiersOut::new(&report, &segments, &state.settings.migration),
    ))
}

/// Longest single move: a year. Enough for any TTL or policy test; a typo of many more digits
/// is refused rather than pushing every expiry past.
const MAX_CLOCK_ADVANCE_MS: u64 = 366 * 86_400_000;

/// Moves the engine's clock forward, on a daemon started with `ENGRAM_TEST_CLOCK=adjustable`.
/// Anywhere else the route does not exist.
pub(crate) async fn test_clock(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let clock = &state.engine.config().clock;
    if !clock.is_adjustable() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "ROUTE_NOT_FOUND",
            "no route for /api/v1/admin/test-clock (the daemon was not started with ENGRAM_TEST_CLOCK=adjustable)",
        ));
    }
    let body = read_body(req, state.settings.max_body_bytes).await?;
    let advance_ms = parse_json::<TestClockRequest>(&body)?.advance_ms;
    if advance_ms > MAX_CLOCK_ADVANCE_MS {
        return Err(ApiError::invalid(
            "advance_ms",
            format!("must be at most {MAX_CLOCK_ADVANCE_MS} (a year)"),
        ));
    }
    clock.advance(std::time::Duration::from_millis(advance_ms));
    tracing::warn!(advance_ms, "test clock moved forward");
    Ok(json_reply(
        StatusCode::OK,
        &TestClockOut {
            now: crate::api::format_time(clock.now_us()),
            ahead_ms: clock.ahead_of_system_us() / 1000,
        },
    ))
}
