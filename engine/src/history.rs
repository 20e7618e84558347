//! Versions of a memory: what an update keeps of the version it replaces.
//!
//! An update's WAL record carries a [`VersionDelta`]: the replaced version's values of every
//! field that differs from the new version's (a reverse delta), with the time span it was
//! current. The warm tier stores the deltas by `(id, version)` beside the records; reading
//! version N starts from the current image and applies the deltas newest first down to N. A
//! version that only changed tags or importance costs a few dozen bytes; one that changed the
//! content keeps the part of the old text the new one does not share (a correction of a few
//! words keeps those words), and the old vector (as-of search ranks the past by it).
//!
//! Fields that are not versioned: the tier (where the memory lives now), access statistics,
//! the namespace, `created_at` and the id (none of them change with an update).

use uuid::Uuid;

use crate::codec::{DecodeError, Reader, Writer};
use crate::model::{content_hash, EmbeddingStatus, Memory, Status};

/// Version byte of an encoded delta. Format 1 kept a replaced text whole; it still decodes.
const DELTA_VERSION: u8 = 2;

/// How a replaced text is kept: the bytes it shares with the next version's text at the start
/// (`prefix`) and at the end (`suffix`); the delta's `old.content` holds what lies between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TextEdit {
    prefix: u32,
    suffix: u32,
}

impl TextEdit {
    /// The longest start and end `older` shares with `newer`, cut at characters and never
    /// overlapping; `older`'s middle is what is left.
    fn between<'a>(older: &'a str, newer: &str) -> (TextEdit, &'a str) {
        let (a, b) = (older.as_bytes(), newer.as_bytes());
        let boundary = |n: usize, from_end: bool| {
            let at = |s: &str| s.is_char_boundary(if from_end { s.len() - n } else { n });
            at(older) && at(newer)
        };
        let mut prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        while !boundary(prefix, false) {
            prefix -= 1;
        }
        let room = a.len().min(b.len()) - prefix;
        let mut suffix = a
            .iter()
            .rev()
            .zip(b.iter().rev())
            .take(room)
            .take_while(|(x, y)| x == y)
            .count();
        while !boundary(suffix, true) {
            suffix -= 1;
        }
        let edit = TextEdit {
            prefix: u32::try_from(prefix).expect("texts are bounded"),
            suffix: u32::try_from(suffix).expect("texts are bounded"),
        };
        (edit, &older[prefix..older.len() - suffix])
    }

    /// The older text, from the next version's and the kept middle. A next text that cannot
    /// hold the shared parts (only a damaged store could give one) contributes nothing.
    fn apply(self, newer: &str, middle: &str) -> String {
        let (p, s) = (self.prefix as usize, self.suffix as usize);
        let start = newer.get(..p).unwrap_or_default();
        let end = newer
            .len()
            .checked_sub(s)
            .filter(|at| *at >= p)
            .and_then(|at| newer.get(at..))
            .unwrap_or_default();
        let mut text = String::with_capacity(start.len() + middle.len() + end.len());
        text.push_str(start);
        text.push_str(middle);
        text.push_str(end);
        text
    }
}

/// A versioned field, as `changed` lists name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Content,
    Embedding,
    Importance,
    Metadata,
    Tags,
    Status,
    ParentId,
    ExpiresAt,
    SupersededBy,
    Actor,
}

impl Field {
    pub const ALL: [Field; 10] = [
        Field::Content,
        Field::Embedding,
        Field::Importance,
        Field::Metadata,
        Field::Tags,
        Field::Status,
        Field::ParentId,
        Field::ExpiresAt,
        Field::SupersededBy,
        Field::Actor,
    ];

    /// The name the API gives the field.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Content => "content",
            Field::Embedding => "embedding",
            Field::Importance => "importance",
            Field::Metadata => "metadata",
            Field::Tags => "tags",
            Field::Status => "status",
            Field::ParentId => "parent_id",
            Field::ExpiresAt => "expires_at",
            Field::SupersededBy => "superseded_by",
            Field::Actor => "actor",
        }
    }

    fn bit(self) -> u16 {
        1 << (Field::ALL
            .iter()
            .position(|f| *f == self)
            .expect("every field is in ALL"))
    }
}

/// A set of [`Field`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields(u16);

impl Fields {
    pub fn contains(self, f: Field) -> bool {
        self.0 & f.bit() != 0
    }

    fn insert(&mut self, f: Field) {
        self.0 |= f.bit();
    }

    pub fn iter(self) -> impl Iterator<Item = Field> {
        Field::ALL.into_iter().filter(move |f| self.contains(*f))
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// A replaced version: its number, when it was current, and its values of the fields the next
/// version changed.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionDelta {
    pub version: u64,
    /// Its `updated_at`: when it became current.
    pub valid_from_us: i64,
    /// The next version's `updated_at`: when it stopped being current.
    pub valid_to_us: i64,
    /// The fields the next version changed; `old` holds this version's values of them.
    pub changed: Fields,
    /// With `Field::Content`: what the replaced text shares with the next one (`old.content`
    /// is the rest).
    text: TextEdit,
    old: Memory,
}

impl VersionDelta {
    /// What `newer` (the next version of `older`) changed, with `older`'s values.
    pub fn between(older: &Memory, newer: &Memory) -> VersionDelta {
        let mut changed = Fields::default();
        let mut mark = |f: Field, differs: bool| {
            if differs {
                changed.insert(f);
            }
        };
        mark(Field::Content, older.content != newer.content);
        mark(
            Field::Embedding,
            older.embedding != newer.embedding
                || older.embedding_status != newer.embedding_status
                || older.embedding_model != newer.embedding_model,
        );
        mark(
            Field::Importance,
            older.importance.to_bits() != newer.importance.to_bits(),
        );
        mark(Field::Metadata, older.metadata_json != newer.metadata_json);
        mark(Field::Tags, older.tags != newer.tags);
        mark(Field::Status, older.status != newer.status);
        mark(Field::ParentId, older.parent_id != newer.parent_id);
        mark(Field::ExpiresAt, older.expires_at_us != newer.expires_at_us);
        mark(
            Field::SupersededBy,
            older.superseded_by != newer.superseded_by,
        );
        mark(Field::Actor, older.actor != newer.actor);
        // Only the changed fields are kept (and compared): what a decoded delta has.
        let mut old = blank();
        let picked = VersionDelta {
            version: older.version,
            valid_from_us: older.updated_at_us,
            valid_to_us: newer.updated_at_us,
            changed,
            text: TextEdit::default(),
            old: older.clone(),
        };
        picked.restore(&mut old);
        // The version and times live in the delta itself; the hash is recomputed on restore
        // (a decoded delta has none).
        old.version = 0;
        old.updated_at_us = 0;
        old.content_hash = [0; 32];
        let mut text = TextEdit::default();
        if changed.contains(Field::Content) {
            let (edit, middle) = TextEdit::between(&older.content, &newer.content);
            text = edit;
            old.content = middle.to_owned();
        }
        VersionDelta {
            text,
            old,
            ..picked
        }
    }

    /// Forgets the replaced version's vector (`history.keep_vectors` is off, or the store's own
    /// vectors were dropped); `true` if it had one. The delta still says the embedding changed.
    pub fn strip_embedding(&mut self) -> bool {
        let had = self.changed.contains(Field::Embedding)
            && (self.old.embedding.is_some() || self.old.embedding_model.is_some());
        if had {
            self.old.embedding = None;
            self.old.embedding_status = EmbeddingStatus::None;
            self.old.embedding_model = None;
        }
        had
    }

    /// Turns `m` (the next version, as reconstructed so far) into this version.
    pub fn restore(&self, m: &mut Memory) {
        let old = &self.old;
        for f in self.changed.iter() {
            match f {
                Field::Content => {
                    m.content = self.text.apply(&m.content, &old.content);
                    m.content_hash = content_hash(&m.content);
                }
                Field::Embedding => {
                    m.embedding.clone_from(&old.embedding);
                    m.embedding_status = old.embedding_status.clone();
                    m.embedding_model.clone_from(&old.embedding_model);
                }
                Field::Importance => m.importance = old.importance,
                Field::Metadata => m.metadata_json.clone_from(&old.metadata_json),
                Field::Tags => m.tags.clone_from(&old.tags),
                Field::Status => m.status = old.status,
                Field::ParentId => m.parent_id = old.parent_id,
                Field::ExpiresAt => m.expires_at_us = old.expires_at_us,
                Field::SupersededBy => m.superseded_by = old.superseded_by,
                Field::Actor => m.actor.clone_from(&old.actor),
            }
        }
        m.version = self.version;
        m.updated_at_us = self.valid_from_us;
    }

    /// Appends the delta's bytes: only the changed fields are written.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer(out);
        let old = &self.old;
        w.u8(DELTA_VERSION);
        w.u64(self.version);
        w.i64(self.valid_from_us);
        w.i64(self.valid_to_us);
        w.bytes(&self.changed.0.to_le_bytes());
        for f in self.changed.iter() {
            match f {
                Field::Content => {
                    w.u32(self.text.prefix);
                    w.u32(self.text.suffix);
                    w.str(&old.content);
                }
                Field::Embedding => {
                    match &old.embedding {
                        Some(v) => {
                            w.u8(1);
                            w.u32(u32::try_from(v.len()).expect("dimensions are bounded"));
                            for x in v {
                                w.f32(*x);
                            }
                        }
                        None => w.u8(0),
                    }
                    w.u8(old.embedding_status.code());
                    if let EmbeddingStatus::Failed(reason) = &old.embedding_status {
                        w.str(reason);
                    }
                    opt_str(&mut w, old.embedding_model.as_deref());
                }
                Field::Importance => w.f32(old.importance),
                Field::Metadata => w.str(&old.metadata_json),
                Field::Tags => {
                    w.u32(u32::try_from(old.tags.len()).expect("tags are bounded"));
                    for t in &old.tags {
                        w.str(t);
                    }
                }
                Field::Status => w.u8(old.status.code()),
                Field::ParentId => w.opt_uuid(old.parent_id),
                Field::ExpiresAt => w.opt_i64(old.expires_at_us),
                Field::SupersededBy => w.opt_uuid(old.superseded_by),
                Field::Actor => opt_str(&mut w, old.actor.as_deref()),
            }
        }
    }

    /// Reads a delta written by [`VersionDelta::encode`] from the front of `r`.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<VersionDelta, DecodeError> {
        let format = r.u8()?;
        if format != 1 && format != DELTA_VERSION {
            return Err(r.err(format!("version delta format {format}")));
        }
        let version = r.u64()?;
        let valid_from_us = r.i64()?;
        let valid_to_us = r.i64()?;
        let bits = u16::from_le_bytes(r.array()?);
        if bits >> Field::ALL.len() != 0 {
            return Err(r.err(format!("field set {bits:#x}")));
        }
        let changed = Fields(bits);
        let mut old = blank();
        let mut text = TextEdit::default();
        for f in changed.iter() {
            match f {
                Field::Content => {
                    if format > 1 {
                        text = TextEdit {
                            prefix: r.u32()?,
                            suffix: r.u32()?,
                        };
                    }
                    old.content = r.str()?;
                }
                Field::Embedding => {
                    old.embedding = if r.flag()? {
                        let n = r.u32()? as usize;
                        if n > crate::model::MAX_DIMENSIONS {
                            return Err(r.err(format!("{n} dimensions")));
                        }
                        let mut v = Vec::with_capacity(n);
                        for _ in 0..n {
                            v.push(r.f32()?);
                        }
                        Some(v)
                    } else {
                        None
                    };
                    old.embedding_status = match r.u8()? {
                        0 => EmbeddingStatus::None,
                        1 => EmbeddingStatus::Pending,
                        2 => EmbeddingStatus::Ready,
                        3 => EmbeddingStatus::Failed(r.str()?),
                        other => return Err(r.err(format!("embedding status {other}"))),
                    };
                    old.embedding_model = read_opt_str(r)?;
                }
                Field::Importance => old.importance = r.f32()?,
                Field::Metadata => old.metadata_json = r.str()?,
                Field::Tags => {
                    let n = r.u32()? as usize;
                    if n > crate::model::MAX_TAGS {
                        return Err(r.err(format!("{n} tags")));
                    }
                    old.tags = (0..n).map(|_| r.str()).collect::<Result<_, _>>()?;
                }
                Field::Status => {
                    let code = r.u8()?;
                    old.status =
                        Status::from_code(code).ok_or_else(|| r.err(format!("status {code}")))?;
                }
                Field::ParentId => old.parent_id = r.opt_uuid()?,
                Field::ExpiresAt => old.expires_at_us = r.opt_i64()?,
                Field::SupersededBy => old.superseded_by = r.opt_uuid()?,
                Field::Actor => old.actor = read_opt_str(r)?,
            }
        }
        Ok(VersionDelta {
            version,
            valid_from_us,
            valid_to_us,
            changed,
            text,
            old,
        })
    }
}

/// Decodes one stored delta.
pub(crate) fn decode_delta(bytes: &[u8]) -> Result<VersionDelta, DecodeError> {
    let mut r = Reader {
        buf: bytes,
        what: "version delta",
    };
    let d = VersionDelta::read(&mut r)?;
    r.finish()?;
    Ok(d)
}

fn opt_str(w: &mut Writer<'_>, v: Option<&str>) {
    match v {
        Some(s) => {
            w.u8(1);
            w.str(s);
        }
        None => w.u8(0),
    }
}

fn read_opt_str(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    Ok(if r.flag()? { Some(r.str()?) } else { None })
}

/// The holder of a delta's values; only the changed fields are set.
fn blank() -> Memory {
    Memory {
        id: Uuid::nil(),
        namespace: String::new(),
        content: String::new(),
        content_hash: [0; 32],
        embedding: None,
        embedding_status: EmbeddingStatus::None,
        embedding_model: None,
        tier: crate::model::Tier::Warm,
        status: Status::Active,
        importance: 0.0,
        access_count: 0,
        last_accessed_at_us: None,
        metadata_json: String::new(),
        tags: Vec::new(),
        parent_id: None,
        created_at_us: 0,
        updated_at_us: 0,
        expires_at_us: None,
        version: 0,
        superseded_by: None,
        actor: None,
        lsn: engram_wal::Lsn::ZERO,
    }
}

/// One version of a memory as history lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    /// The memory as it was (tier and access statistics are today's).
    pub memory: Memory,
    pub valid_from_us: i64,
    /// `None` for the current version.
    pub valid_to_us: Option<i64>,
    /// What this version changed from the one before (`None`: version 1, or the one before
    /// is no longer kept).
    pub changed: Option<Fields>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delta_restores_the_older_version_and_round_trips() {
        let older = crate::codec::tests::sample_memory();
        let mut newer = older.clone();
        newer.version += 1;
        newer.updated_at_us += 10;
        newer.content = "moved to Berlin".into();
        newer.content_hash = content_hash(&newer.content);
        newer.embedding = None;
        newer.embedding_status = EmbeddingStatus::Pending;
        newer.embedding_model = None;
        newer.tags = vec!["city".into()];
        newer.status = Status::Superseded;
        newer.superseded_by = Some(Uuid::now_v7());
        newer.actor = Some("agent-8".into());
        let delta = VersionDelta::between(&older, &newer);
        let names: Vec<_> = delta.changed.iter().map(Field::as_str).collect();
        assert_eq!(
            names,
            [
                "content",
                "embedding",
                "tags",
                "status",
                "superseded_by",
                "actor"
            ]
        );
        let mut bytes = Vec::new();
        delta.encode(&mut bytes);
        let back = decode_delta(&bytes).expect("decodes");
        assert_eq!(back.changed, delta.changed);
        let mut m = newer.clone();
        back.restore(&mut m);
        assert_eq!(m, older);
        for cut in 0..bytes.len() {
            assert!(decode_delta(&bytes[..cut]).is_err());
        }
    }

    fn text_memory(text: &str) -> Memory {
        Memory {
            content: text.to_owned(),
            content_hash: content_hash(text),
            ..crate::codec::tests::sample_memory()
        }
    }

    fn with_content(older: &Memory, text: &str) -> Memory {
        Memory {
            content: text.to_owned(),
            content_hash: content_hash(text),
            version: older.version + 1,
            updated_at_us: older.updated_at_us + 1,
            ..older.clone()
        }
    }

    fn round_trip(older: &Memory, newer: &Memory) -> Vec<u8> {
        let mut bytes = Vec::new();
        VersionDelta::between(older, newer).encode(&mut bytes);
        let mut m = newer.clone();
        decode_delta(&bytes).expect("decodes").restore(&mut m);
        assert_eq!(&m, older, "{:?} -> {:?}", older.content, newer.content);
        bytes
    }

    #[test]
    fn a_corrected_text_keeps_only_the_words_that_changed() {
        let older =
            text_memory("The user lives in Lisbon and works as a nurse at the city hospital.");
        let newer = with_content(&older, &older.content.replace("Lisbon", "Porto"));
        let bytes = round_trip(&older, &newer);
        // Header 27, then the edit (8) and the 6 bytes "Lisbon" with their length (4).
        assert_eq!(bytes.len(), 27 + 8 + 4 + "Lisbon".len());
        // Texts that share nothing, one inside the other, repeats, the empty text, and cuts
        // that would fall inside a character.
        for (a, b) in [
            ("abc", "xyz"),
            ("abc", "abcabc"),
            ("abcabc", "abc"),
            ("aaaa", "aa"),
            ("", "something"),
            ("something", ""),
            ("naïve café", "naïve cafés"),
            ("a\u{e9}b", "a\u{e8}b"),
            ("\u{1F600}\u{1F601}", "\u{1F600}\u{1F602}"),
            ("\u{1F601}x", "\u{1F602}x"),
        ] {
            let older = text_memory(a);
            round_trip(&older, &with_content(&older, b));
        }
    }

    #[test]
    fn a_format_1_delta_keeps_its_text_whole() {
        let mut bytes = vec![1];
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(&10i64.to_le_bytes());
        bytes.extend_from_slice(&20i64.to_le_bytes());
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.extend_from_slice(&5u32.to_le_bytes());
        bytes.extend_from_slice(b"older");
        let newer = with_content(&crate::codec::tests::sample_memory(), "newer text");
        let mut m = newer.clone();
        decode_delta(&bytes).expect("decodes").restore(&mut m);
        assert_eq!((m.content.as_str(), m.version), ("older", 3));
    }

    #[test]
    fn an_importance_change_costs_a_few_bytes() {
        let older = crate::codec::tests::sample_memory();
        let newer = Memory {
            importance: 0.9,
            version: older.version + 1,
            updated_at_us: older.updated_at_us + 1,
            ..older.clone()
        };
        let mut bytes = Vec::new();
        VersionDelta::between(&older, &newer).encode(&mut bytes);
        assert_eq!(bytes.len(), 1 + 8 + 8 + 8 + 2 + 4);
    }
}
