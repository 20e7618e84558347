"""Typed results: what the daemon answers, as dataclasses."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional


def parse_time(s: Optional[str]) -> Optional[datetime]:
    """An RFC 3339 time from the daemon (always UTC, ``Z``) as an aware datetime."""
    if s is None:
        return None
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    # Python before 3.11 takes at most 6 fractional digits, which is what the daemon writes.
    return datetime.fromisoformat(s)


def _vector(v: dict[str, Any]) -> Optional[list[float]]:
    """A memory's vector, written as numbers (``embedding``) or base64 of little-endian f32s
    (``embedding_b64``)."""
    if v.get("embedding_b64") is not None:
        raw = base64.b64decode(v["embedding_b64"])
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return v.get("embedding")


@dataclass(frozen=True)
class Memory:
    """A stored memory."""

    id: str
    namespace: str
    content: str
    content_hash: str
    importance: float
    tags: list[str]
    metadata: Optional[dict[str, Any]]
    tier: str
    status: str
    access_count: int
    last_accessed_at: Optional[datetime]
    created_at: datetime
    updated_at: datetime
    expires_at: Optional[datetime]
    version: int
    parent_id: Optional[str]
    has_embedding: bool
    embedding_status: str
    embedding_model: Optional[str]
    embedding_error: Optional[str] = None
    embedding: Optional[list[float]] = None
    superseded_by: Optional[str] = None
    actor: Optional[str] = None

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "Memory":
        return cls(
            id=v["id"],
            namespace=v["namespace"],
            content=v["content"],
            content_hash=v["content_hash"],
            importance=v["importance_score"],
            tags=list(v.get("tags") or []),
            metadata=v.get("metadata"),
            tier=v["tier"],
            status=v["status"],
            access_count=v["access_count"],
            last_accessed_at=parse_time(v.get("last_accessed_at")),
            created_at=parse_time(v["created_at"]),  # type: ignore[arg-type]
            updated_at=parse_time(v["updated_at"]),  # type: ignore[arg-type]
            expires_at=parse_time(v.get("expires_at")),
            version=v["version"],
            parent_id=v.get("parent_id"),
            has_embedding=v["has_embedding"],
            embedding_status=v["embedding_status"],
            embedding_model=v.get("embedding_model"),
            embedding_error=v.get("embedding_error"),
            embedding=_vector(v),
            superseded_by=v.get("superseded_by"),
            actor=v.get("actor"),
        )


@dataclass(frozen=True)
class Version:
    """One version of a memory: when it was current, what it changed, who made it, and the
    memory as it was."""

    version: int
    valid_from: datetime
    valid_to: Optional[datetime]
    changed: Optional[list[str]]
    actor: Optional[str]
    memory: Memory

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "Version":
        return cls(
            version=v["version"],
            valid_from=parse_time(v["valid_from"]),  # type: ignore[arg-type]
            valid_to=parse_time(v.get("valid_to")),
            changed=v.get("changed"),
            actor=v.get("actor"),
            memory=Memory.from_json(v["memory"]),
        )


@dataclass(frozen=True)
class Namespace:
    """A namespace's memories: all of them (deleted ones too, until purged), those a search
    can find, how many live in each tier, and the bytes they take as stored (in all and per
    tier; current images and vectors, not versions or indexes)."""

    namespace: str
    memories: int
    searchable: int
    tiers: dict[str, int]
    bytes: int = 0
    tier_bytes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "Namespace":
        return cls(
            namespace=v["namespace"],
            memories=v["memories"],
            searchable=v["searchable"],
            tiers=dict(v["tiers"]),
            bytes=v.get("bytes", 0),
            tier_bytes=dict(v.get("tier_bytes", {})),
        )


@dataclass(frozen=True)
class SearchHit:
    """One recall result: the memory, its score, and (with ``explain=True``) the score's parts."""

    memory: Memory
    score: float
    distance: Optional[float]
    explanation: Optional[dict[str, Any]] = None

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "SearchHit":
        return cls(
            memory=Memory.from_json(v["memory"]),
            score=v["score"],
            distance=v.get("distance"),
            explanation=v.get("explanation"),
        )


@dataclass(frozen=True)
class SearchResults:
    """A recall's results, best first."""

    hits: list[SearchHit]
    total_count: int
    query_time_ms: float
    warnings: list[str] = field(default_factory=list)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "SearchResults":
        return cls(
            hits=[SearchHit.from_json(h) for h in v["results"]],
            total_count=v["total_count"],
            query_time_ms=v["query_time_ms"],
            warnings=list(v.get("warnings") or []),
        )


@dataclass(frozen=True)
class Deleted:
    """What ``forget`` did."""

    id: str
    deleted_at: datetime
    purged: bool

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "Deleted":
        return cls(id=v["id"], deleted_at=parse_time(v["deleted_at"]), purged=v["purged"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class Health:
    """The daemon's health report."""

    status: str
    database_connected: bool
    embedding_service_available: bool
    version: str
    uptime_seconds: int
    tiers: dict[str, int]
    embedding: dict[str, Any]
    durable_lsn: int

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "Health":
        return cls(
            status=v["status"],
            database_connected=v["database_connected"],
            embedding_service_available=v["embedding_service_available"],
            version=v["version"],
            uptime_seconds=v["uptime_seconds"],
            tiers=dict(v["tiers"]),
            embedding=dict(v["embedding"]),
            durable_lsn=v["wal"]["durable_lsn"],
        )


@dataclass(frozen=True)
class Snapshot:
    """An online snapshot in the daemon's data directory."""

    id: str
    lsn: int
    commit_time: Optional[datetime]
    created_at: datetime
    files: int
    bytes: int
    took_ms: Optional[int] = None

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "Snapshot":
        return cls(
            id=v["id"],
            lsn=v["lsn"],
            commit_time=parse_time(v.get("commit_time")),
            created_at=parse_time(v["created_at"]),  # type: ignore[arg-type]
            files=v["files"],
            bytes=v["bytes"],
            took_ms=v.get("took_ms"),
        )


@dataclass(frozen=True)
class Migration:
    """An embedding migration: a new vector space the store is re-embedded into, and how far
    it has got (``state``: ``running``, ``paused`` or ``ready``; ``active`` once the store's
    searches rank it)."""

    id: int
    provider: str
    model: str
    dimensions: int
    state: str
    created_at: datetime
    backfilled_at: Optional[datetime]
    vectors: int
    pending_changes: int
    searchable: int
    progress: float
    indexed: int
    rate_per_second: float
    embedded: int
    failed_batches: int
    last_error: Optional[str]
    active: bool

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "Migration":
        return cls(
            id=v["id"],
            provider=v["provider"],
            model=v["model"],
            dimensions=v["dimensions"],
            state=v["state"],
            created_at=parse_time(v["created_at"]),  # type: ignore[arg-type]
            backfilled_at=parse_time(v.get("backfilled_at")),
            vectors=v["vectors"],
            pending_changes=v["pending_changes"],
            searchable=v["searchable"],
            progress=v["progress"],
            indexed=v["indexed"],
            rate_per_second=v["rate_per_second"],
            embedded=v["embedded"],
            failed_batches=v["failed_batches"],
            last_error=v.get("last_error"),
            active=v["active"],
        )


@dataclass(frozen=True)
class OwnVectors:
    """The store's own vectors: kept, or dropped for an active migration's (``migration``,
    ``model``), and whether the sweep that rewrites the records without them is done."""

    dropped: bool
    migration: Optional[int]
    model: Optional[str]
    swept: bool
    stripped: int

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "OwnVectors":
        return cls(
            dropped=v["dropped"],
            migration=v.get("migration"),
            model=v.get("model"),
            swept=v["swept"],
            stripped=v["stripped"],
        )


@dataclass(frozen=True)
class SpaceHit:
    """A result of a search in one migration's space: the memory and its cosine similarity."""

    memory: Memory
    similarity: float

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> "SpaceHit":
        return cls(memory=Memory.from_json(v["memory"]), similarity=v["similarity"])
