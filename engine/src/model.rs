//! The memory model: what a memory is, what a client may ask to create or change, and the limits
//! every field must respect.

use engram_wal::Lsn;
use uuid::Uuid;

/// Largest `content`, in bytes of UTF-8.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;
/// Largest `metadata` object, in bytes of its JSON text.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Most tags on one memory.
pub const MAX_TAGS: usize = 64;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 128;
/// Longest namespace, in bytes (`[A-Za-z0-9._:-]`).
pub const MAX_NAMESPACE_BYTES: usize = 128;
/// Most memories in one batch create.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Largest embedding dimension the engine accepts in config.
pub const MAX_DIMENSIONS: usize = 4096;
/// Longest `actor` (who made a version), in bytes.
pub const MAX_ACTOR_BYTES: usize = 256;
/// Most memories one create may supersede.
pub const MAX_SUPERSEDES: usize = 100;
/// Namespace used when a request names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Importance when a request gives none.
pub const DEFAULT_IMPORTANCE: f32 = 0.5;

/// Where a memory lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Working,
    Warm,
    Cold,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Working, Tier::Warm, Tier::Cold];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Working => "working",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
        }
    }

    /// Case-insensitive parse of `working`, `warm` or `cold`.
    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// Position in [`Tier::ALL`] (working 0, warm 1, cold 2), for per-tier arrays.
    pub const fn index(self) -> usize {
        match self {
            Tier::Working => 0,
            Tier::Warm => 1,
            Tier::Cold => 2,
        }
    }

    /// The tier a promotion moves a memory to (`None` from the working tier).
    pub const fn up(self) -> Option<Tier> {
        match self {
            Tier::Cold => Some(Tier::Warm),
            Tier::Warm => Some(Tier::Working),
            Tier::Working => None,
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Tier::Working => 1,
            Tier::Warm => 2,
            Tier::Cold => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.code() == code)
    }
}

/// Lifecycle state of a memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Active,
    Archived,
    /// Soft-deleted: kept, readable by id, hidden from lists; `?purge=true` removes it for good.
    Deleted,
    /// Replaced by a newer memory (`superseded_by`): kept and readable, hidden from search,
    /// lists and recall unless they ask for superseded memories.
    Superseded,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Active,
        Status::Archived,
        Status::Deleted,
        Status::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Archived => "archived",
            Status::Deleted => "deleted",
            Status::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether search indexes a memory with this status: active ones, and superseded ones
    /// (found only when a search includes them).
    pub fn is_searchable(self) -> bool {
        matches!(self, Status::Active | Status::Superseded)
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Status::Active => 1,
            Status::Archived => 2,
            Status::Deleted => 3,
            Status::Superseded => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|t| t.code() == code)
    }
}

/// Where a memory's embedding stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EmbeddingStatus {
    /// No vector, and none will be computed (no embedder configured, or the client sent none).
    #[default]
    None,
    /// Stored without a vector; the background embedder will compute one.
    Pending,
    /// Has a vector.
    Ready,
    /// The embedder could not compute one; the reason.
    Failed(String),
}

impl EmbeddingStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            EmbeddingStatus::None => "none",
            EmbeddingStatus::Pending => "pending",
            EmbeddingStatus::Ready => "ready",
            EmbeddingStatus::Failed(_) => "failed",
        }
    }

    pub(crate) fn code(&self) -> u8 {
        match self {
            EmbeddingStatus::None => 0,
            EmbeddingStatus::Pending => 1,
            EmbeddingStatus::Ready => 2,
            EmbeddingStatus::Failed(_) => 3,
        }
    }
}

/// A stored memory. Times are microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    pub id: Uuid,
    pub namespace: String,
    pub content: String,
    /// SHA-256 of `content`; unique per namespace among memories that are not deleted.
    pub content_hash: [u8; 32],
    pub embedding: Option<Vec<f32>>,
    pub embedding_status: EmbeddingStatus,
    /// The model that computed `embedding` (`None` when the client sent it).
    pub embedding_model: Option<String>,
    pub tier: Tier,
    pub status: Status,
    pub importance: f32,
    pub access_count: u64,
    pub last_accessed_at_us: Option<i64>,
    /// A JSON object, as text.
    pub metadata_json: String,
    pub tags: Vec<String>,
    pub parent_id: Option<Uuid>,
    pub created_at_us: i64,
    pub updated_at_us: i64,
    pub expires_at_us: Option<i64>,
    /// 1 on create, +1 on every update (moves between tiers and accesses do not count).
    pub version: u64,
    /// The memory that replaced this one (status `superseded`).
    pub superseded_by: Option<Uuid>,
    /// Who made this version, as the request said (`X-Engram-Actor` or `actor`).
    pub actor: Option<String>,
    /// LSN of the WAL record that produced this image.
    pub lsn: Lsn,
}

/// What a client asks to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMemory {
    pub namespace: String,
    pub content: String,
    pub embedding: Option<Vec<f32>>,
    pub importance: f32,
    pub metadata_json: String,
    pub tags: Vec<String>,
    pub parent_id: Option<Uuid>,
    /// `None` means now.
    pub created_at_us: Option<i64>,
    pub expires_at_us: Option<i64>,
    /// Memories this one replaces: each becomes `superseded` in the same group commit.
    pub supersedes: Vec<Uuid>,
    /// Who writes it.
    pub actor: Option<String>,
}

/// A cold segment's id. It names the segment's file, and ids only grow, so they order segments
/// by age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u64);

impl std::fmt::Display for SegmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A name outside a closed set (a tier, a status); its message names the set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be {expected}, got {got:?}")]
pub struct UnknownName {
    pub expected: &'static str,
    pub got: String,
}

impl std::str::FromStr for Tier {
    type Err = UnknownName;

    /// Case-insensitive, as [`Tier::parse`].
    fn from_str(s: &str) -> Result<Tier, UnknownName> {
        Tier::parse(s).ok_or_else(|| UnknownName {
            expected: "working, warm or cold",
            got: s.to_owned(),
        })
    }
}

impl std::str::FromStr for Status {
    type Err = UnknownName;

    /// Case-insensitive, as [`Status::parse`].
    fn from_str(s: &str) -> Result<Status, UnknownName> {
        Status::parse(s).ok_or_else(|| UnknownName {
            expected: "active, archived, deleted or superseded",
            got: s.to_owned(),
        })
    }
}

/// A partial update: `None` leaves a field as it is; `Some(None)` clears a nullable field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryPatch {
    pub content: Option<String>,
    pub embedding: Option<Option<Vec<f32>>>,
    pub importance: Option<f32>,
    pub metadata_json: Option<String>,
    pub tags: Option<Vec<String>>,
    pub status: Option<Status>,
    pub tier: Option<Tier>,
    pub parent_id: Option<Option<Uuid>>,
    pub expires_at_us: Option<Option<i64>>,
    /// Set with `status: superseded` (a supersede or a revert); any other status clears it.
    pub superseded_by: Option<Option<Uuid>>,
    /// Who makes the change; `None` leaves the field to say nobody did.
    pub actor: Option<String>,
}

/// What [`MemoryPatch::apply_to`] changed that needs more than a field copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PatchApplied {
    /// The content is different (its hash was recomputed and the old vector dropped).
    pub content_changed: bool,
    /// The patch set or cleared the vector.
    pub vector_given: bool,
}

impl MemoryPatch {
    /// Copies every field the patch names into `m`. New content replaces the hash and drops the
    /// vector that described the old text (unless the patch gives one). Versions, times, the
    /// embedding status and tier rules are the writer's.
    pub(crate) fn apply_to(self, m: &mut Memory) -> PatchApplied {
        let mut content_changed = false;
        if let Some(content) = self.content {
            if content != m.content {
                m.content_hash = content_hash(&content);
                m.content = content;
                m.embedding = None;
                content_changed = true;
            }
        }
        let vector_given = self.embedding.is_some();
        if let Some(e) = self.embedding {
            m.embedding = e;
        }
        if let Some(i) = self.importance {
            m.importance = i;
        }
        if let Some(j) = self.metadata_json {
            m.metadata_json = j;
        }
        if let Some(t) = self.tags {
            m.tags = t;
        }
        if let Some(s) = self.status {
            m.status = s;
        }
        if let Some(p) = self.parent_id {
            m.parent_id = p;
        }
        if let Some(x) = self.expires_at_us {
            m.expires_at_us = x;
        }
        if let Some(t) = self.tier {
            m.tier = t;
        }
        if let Some(s) = self.superseded_by {
            m.superseded_by = s;
        }
        if m.status != Status::Superseded {
            m.superseded_by = None;
        }
        PatchApplied {
            content_changed,
            vector_given,
        }
    }
}

/// Filters for listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub namespace: Option<String>,
    pub tier: Option<Tier>,
    /// `None` lists every status except `deleted` (unless `include_deleted`).
    pub status: Option<Status>,
    pub tag: Option<String>,
    /// With `status: None`, list deleted memories too (exports).
    pub include_deleted: bool,
    /// With `status: None`, list superseded memories too.
    pub include_superseded: bool,
}

/// Whether `s` is a valid namespace: 1–128 bytes of `[A-Za-z0-9._:-]`.
/// What a valid namespace is, as every error about one says it.
pub fn namespace_rule() -> String {
    format!("must be 1 to {MAX_NAMESPACE_BYTES} characters of A-Z a-z 0-9 . _ : -")
}

/// Whether `s` is a valid namespace (see [`namespace_rule`]).
pub fn is_valid_namespace(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAMESPACE_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// SHA-256 of a memory's content.
pub fn content_hash(content: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(content.as_bytes()).into()
}

/// Lower-case hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Wall clock in microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_copies_what_it_names_and_new_content_drops_the_old_vector() {
        let mut m = crate::codec::tests::sample_memory();
        let before = m.clone();
        let applied = MemoryPatch::default().apply_to(&mut m);
        assert_eq!(m, before);
        assert!(!applied.content_changed && !applied.vector_given);

        let same = MemoryPatch {
            content: Some(before.content.clone()),
            importance: Some(0.9),
            tags: Some(vec!["x".into()]),
            ..MemoryPatch::default()
        };
        let applied = same.apply_to(&mut m);
        assert!(!applied.content_changed, "identical content is no change");
        assert_eq!(m.embedding, before.embedding);
        assert_eq!((m.importance, m.tags.clone()), (0.9, vec!["x".to_owned()]));

        let applied = MemoryPatch {
            content: Some("new text".into()),
            ..MemoryPatch::default()
        }
        .apply_to(&mut m);
        assert!(applied.content_changed);
        assert_eq!(m.content_hash, content_hash("new text"));
        assert_eq!(m.embedding, None, "the old vector described the old text");

        let applied = MemoryPatch {
            content: Some("newer".into()),
            embedding: Some(Some(vec![1.0, 0.0])),
            expires_at_us: Some(None),
            ..MemoryPatch::default()
        }
        .apply_to(&mut m);
        assert!(applied.content_changed && applied.vector_given);
        assert_eq!(m.embedding, Some(vec![1.0, 0.0]));
        assert_eq!(m.expires_at_us, None);
    }

    #[test]
    fn namespace_rules() {
        assert!(is_valid_namespace("agent-1.profile:v2_x"));
        assert!(is_valid_namespace(&"a".repeat(MAX_NAMESPACE_BYTES)));
        assert!(!is_valid_namespace(&"a".repeat(MAX_NAMESPACE_BYTES + 1)));
        assert!(!is_valid_namespace(""));
        assert!(!is_valid_namespace("has space"));
        assert!(!is_valid_namespace("slash/no"));
    }

    #[test]
    fn tier_and_status_parse_case_insensitively() {
        assert_eq!(Tier::parse("WaRm"), Some(Tier::Warm));
        assert_eq!(Tier::parse("hot"), None);
        assert_eq!(Status::parse("ARCHIVED"), Some(Status::Archived));
        for t in Tier::ALL {
            assert_eq!(Tier::from_code(t.code()), Some(t));
        }
    }

    #[test]
    fn hash_hex() {
        assert_eq!(
            hex(&content_hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
