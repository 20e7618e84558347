//! Wire types of whole namespaces: `GET /api/v1/namespaces`, `GET /api/v1/namespaces/{ns}` and
//! `DELETE /api/v1/namespaces/{ns}`.

use engram_engine::{NamespaceCounts, NamespacePurge};
use schemars::JsonSchema;
use serde::Serialize;

/// Memories of a namespace per tier (deleted ones included until purged).
#[derive(Debug, Serialize, JsonSchema)]
pub struct NamespaceTiersOut {
    pub working: u64,
    pub warm: u64,
    pub cold: u64,
}

/// One namespace.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NamespaceOut {
    pub namespace: String,
    /// Every memory it holds, deleted ones included until purged.
    pub memories: u64,
    /// Active and superseded memories, which a search can find.
    pub searchable: u64,
    pub tiers: NamespaceTiersOut,
    /// Bytes its memories take as stored: each one's current image and vector (working: heap
    /// entry and vector; warm: record and vector before RocksDB's block compression; cold: its
    /// share of its segment's compressed bytes). Kept versions and indexes are not counted.
    pub bytes: u64,
    /// `bytes` per tier.
    pub tier_bytes: NamespaceTiersOut,
}

impl From<NamespaceCounts> for NamespaceOut {
    fn from(c: NamespaceCounts) -> NamespaceOut {
        NamespaceOut {
            memories: c.memories(),
            searchable: c.searchable,
            tiers: NamespaceTiersOut {
                working: c.working,
                warm: c.warm,
                cold: c.cold,
            },
            bytes: c.bytes(),
            tier_bytes: NamespaceTiersOut {
                working: c.working_bytes,
                warm: c.warm_bytes,
                cold: c.cold_bytes,
            },
            namespace: c.namespace,
        }
    }
}

/// `GET /api/v1/namespaces`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NamespacesOut {
    /// In name order; only those the key may access.
    pub namespaces: Vec<NamespaceOut>,
}

/// `DELETE /api/v1/namespaces/{ns}`: what was deleted, or purged and scrubbed.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NamespaceDeletedOut {
    pub namespace: String,
    /// Memories deleted (soft: each keeps its versions and can be restored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<usize>,
    /// With `purge=true`: memories purged with every version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purged: Option<usize>,
    /// With `purge=true`: what the scrub did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrub: Option<ScrubOut>,
    pub took_ms: u64,
}

/// What a purge removed from the live data files after purging the records.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ScrubOut {
    /// Working-tier heap bytes overwritten with zeros.
    pub working_bytes_zeroed: u64,
    /// Cold segments rewritten without dead entries, and the segments that replaced them.
    pub cold_segments_rewritten: usize,
    pub cold_segments_written: usize,
    /// The checkpoint taken after the purge: no active WAL segment holds a record at or below
    /// it (archived segments still do, until archive retention removes them).
    pub checkpoint_lsn: u64,
}

impl From<NamespacePurge> for NamespaceDeletedOut {
    fn from(p: NamespacePurge) -> NamespaceDeletedOut {
        NamespaceDeletedOut {
            deleted: None,
            purged: Some(p.purged),
            scrub: Some(ScrubOut {
                working_bytes_zeroed: p.working_bytes_zeroed,
                cold_segments_rewritten: p.cold_segments_rewritten,
                cold_segments_written: p.cold_segments_written,
                checkpoint_lsn: p.checkpoint_lsn.get(),
            }),
            took_ms: p.took.as_millis() as u64,
            namespace: p.namespace,
        }
    }
}

/// `POST /api/v1/namespaces/{ns}/import`: what was imported.
#[derive(Debug, Serialize, JsonSchema)]
pub struct NamespaceImportOut {
    pub namespace: String,
    /// Memories stored (replaced ones included).
    pub imported: u64,
    /// Of those, memories that replaced a stored one of the same id (`on_conflict=replace`).
    pub replaced: u64,
    /// Past versions stored with them.
    pub versions: u64,
    /// Memories left out because of a conflict (`on_conflict=skip`).
    pub skipped: u64,
    /// The first 100 conflicts.
    pub conflicts: Vec<ImportConflictOut>,
    /// The stream ended with an export's last line, and held as many memories as it says.
    /// `false`: the export was cut short (or written by hand): what arrived is imported.
    pub complete: bool,
    pub took_ms: u64,
}

/// One memory an import left out.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ImportConflictOut {
    /// The line of the stream (1-based).
    pub line: usize,
    pub id: String,
    /// `ID_EXISTS` or `DUPLICATE_CONTENT`.
    pub code: &'static str,
    /// With `DUPLICATE_CONTENT`: the memory that holds the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_id: Option<String>,
}
