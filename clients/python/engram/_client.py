"""The clients: ``Engram`` (blocking) and ``AsyncEngram`` (asyncio), one method per operation.

Both build their requests with the same ``_Call`` descriptions and read the answers with the
same parsers; only the transport (``httpx.Client`` or ``httpx.AsyncClient``) and how they wait
between retries differ.
"""

from __future__ import annotations

import asyncio
import base64
import random
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import httpx

from ._errors import (
    ConflictError,
    ConnectionError,
    EngramError,
    RateLimitError,
    TimeoutError,
    UnavailableError,
    error_from_item,
    error_from_response,
)
from ._types import Deleted, Health, Memory, Migration, Namespace, OwnVectors, SearchResults, Snapshot, SpaceHit, Version

__all__ = ["Engram", "AsyncEngram", "RetryPolicy", "UNSET"]

DEFAULT_URL = "http://127.0.0.1:3333"
DEFAULT_TIMEOUT = 30.0
Time = Union[datetime, str]


class _Unset:
    """Marks an argument left out (``None`` means JSON ``null``: clear the field)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry.

    A request is retried after 429 (waiting the ``Retry-After`` the daemon sends), 503 and a
    connection that could not be opened; a connection that broke mid-request is retried only
    for requests that are safe to repeat (reads, deletes, searches and single creates — a
    repeated create is caught by the daemon's duplicate check, and ``remember`` then returns the
    memory the first attempt stored). Waits grow exponentially from ``backoff`` up to
    ``max_backoff`` seconds, with jitter.
    """

    max_retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 5.0

    def delay(self, attempt: int, error: EngramError) -> float:
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            return min(error.retry_after, self.max_backoff)
        base = min(self.backoff * (2**attempt), self.max_backoff)
        return base * (0.5 + random.random() / 2)


NO_RETRIES = RetryPolicy(max_retries=0)


@dataclass
class _Call:
    """One request, and how to read its answer."""

    method: str
    path: str
    parse: Callable[[Any], Any]
    json: Any = None
    params: Optional[dict[str, Any]] = None
    # A body that is not JSON (an export to import), with its headers.
    content: Optional[bytes] = None
    headers: Optional[dict[str, str]] = None
    # Hand the parser the raw bytes of the answer (an export), not JSON.
    raw: bool = False
    # Safe to send again after a connection broke mid-request.
    repeatable: bool = True
    # A create: a 409 duplicate on a retry means the first attempt stored it.
    create: bool = False


@dataclass(frozen=True)
class _StoredEarlier:
    """A retried create found the memory its first attempt stored."""

    id: str


def _time(value: Optional[Time], name: str) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        # A naive datetime is local time, as datetime.astimezone reads it.
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    raise TypeError(f"{name} must be a datetime or an RFC 3339 string, not {type(value).__name__}")


def _ttl(ttl: Union[timedelta, float, int, None]) -> Optional[str]:
    if ttl is None:
        return None
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if seconds <= 0:
        raise ValueError("ttl must be positive")
    return _time(datetime.now(timezone.utc) + timedelta(seconds=seconds), "ttl")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _vector_b64(v: Optional[Sequence[float]]) -> Optional[str]:
    """A vector as the server's ``*_b64`` fields take it: base64 of little-endian f32s (half
    the bytes of decimal JSON, and no float parsing on either side)."""
    if v is None:
        return None
    values = list(v)
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")


def _memory_body(
    content: str,
    namespace: Optional[str],
    importance: Optional[float],
    tags: Optional[Sequence[str]],
    metadata: Optional[Mapping[str, Any]],
    embedding: Optional[Sequence[float]],
    created_at: Optional[Time],
    expires_at: Optional[Time],
    ttl: Union[timedelta, float, int, None],
    parent_id: Optional[str],
) -> dict[str, Any]:
    if ttl is not None and expires_at is not None:
        raise ValueError("give ttl or expires_at, not both")
    return _drop_none(
        {
            "content": content,
            "namespace": namespace,
            "importance_score": importance,
            "tags": list(tags) if tags is not None else None,
            "metadata": dict(metadata) if metadata is not None else None,
            "embedding_b64": _vector_b64(embedding),
            "created_at": _time(created_at, "created_at"),
            "expires_at": _time(expires_at, "expires_at") or _ttl(ttl),
            "parent_id": parent_id,
        }
    )


def _batch_results(v: Any) -> list[Union[Memory, EngramError]]:
    return [
        error_from_item(item["error"]) if "error" in item else Memory.from_json(item)
        for item in v["results"]
    ]


class _Calls:
    """The requests of every operation, shared by both clients."""

    @staticmethod
    def remember(body: dict[str, Any], wait_for_embedding: bool) -> _Call:
        params = {"wait_for_embedding": "true"} if wait_for_embedding else None
        return _Call("POST", "/api/v1/memories", Memory.from_json, json=body, params=params, create=True)

    @staticmethod
    def recall(
        query: Optional[str],
        *,
        namespace: Optional[str],
        limit: int,
        mode: Optional[str],
        embedding: Optional[Sequence[float]],
        tags: Optional[Sequence[str]],
        any_tags: Optional[Sequence[str]],
        metadata: Optional[Mapping[str, Any]],
        since: Optional[Time],
        until: Optional[Time],
        min_importance: Optional[float],
        max_importance: Optional[float],
        tiers: Optional[Sequence[str]],
        offset: Optional[int],
        similarity_threshold: Optional[float],
        explain: bool,
        include_metadata: bool,
        as_of: Optional[Time] = None,
        include_superseded: bool = False,
    ) -> _Call:
        body = _drop_none(
            {
                "query_text": query,
                "query_embedding_b64": _vector_b64(embedding),
                "search_type": mode,
                "namespace": namespace,
                "limit": limit,
                "offset": offset,
                "tiers": list(tiers) if tiers is not None else None,
                "metadata_filters": dict(metadata) if metadata is not None else None,
                "similarity_threshold": similarity_threshold,
                "explain_score": explain or None,
                "include_metadata": include_metadata,
                "as_of": _time(as_of, "as_of"),
                "include_superseded": include_superseded or None,
            }
        )
        if tags is not None or any_tags is not None:
            body["tags"] = _drop_none(
                {
                    "all_of": list(tags) if tags is not None else None,
                    "any_of": list(any_tags) if any_tags is not None else None,
                }
            )
        if min_importance is not None or max_importance is not None:
            body["importance_range"] = _drop_none({"min": min_importance, "max": max_importance})
        if since is not None or until is not None:
            body["date_range"] = _drop_none({"start": _time(since, "since"), "end": _time(until, "until")})
        return _Call("POST", "/api/v1/search", SearchResults.from_json, json=body)

    @staticmethod
    def get(
        memory_id: str, include_embedding: bool, version: Optional[int] = None, as_of: Optional[Time] = None
    ) -> _Call:
        params: dict[str, Any] = {"include_embedding": "true", "embedding_format": "base64"} if include_embedding else {}
        if version is not None:
            params["version"] = str(version)
        if as_of is not None:
            params["as_of"] = _time(as_of, "as_of")
        return _Call("GET", f"/api/v1/memories/{memory_id}", Memory.from_json, params=params or None)

    @staticmethod
    def history(memory_id: str, limit: int, cursor: Optional[str]) -> _Call:
        params = _drop_none({"limit": limit, "cursor": cursor})
        return _Call("GET", f"/api/v1/memories/{memory_id}/history", lambda v: v, params=params)

    @staticmethod
    def revert(memory_id: str, version: int, actor: Optional[str]) -> _Call:
        body = _drop_none({"version": version, "actor": actor})
        return _Call("POST", f"/api/v1/memories/{memory_id}/revert", Memory.from_json, json=body, repeatable=False)

    @staticmethod
    def namespaces() -> _Call:
        return _Call("GET", "/api/v1/namespaces", lambda v: [Namespace.from_json(n) for n in v["namespaces"]])

    @staticmethod
    def export_namespace(namespace: str, compress: bool, embedding_format: str) -> _Call:
        params = {}
        if compress:
            params["compress"] = "zstd"
        if embedding_format != "float":
            params["embedding_format"] = embedding_format
        return _Call("GET", f"/api/v1/namespaces/{namespace}/export", lambda b: b, params=params or None, raw=True)

    @staticmethod
    def import_namespace(namespace: str, export: bytes, on_conflict: str, compressed: Optional[bool]) -> _Call:
        if compressed is None:
            # A zstd frame starts with its magic number.
            compressed = export[:4] == b"\x28\xb5\x2f\xfd"
        content_type = "application/zstd" if compressed else "application/x-ndjson"
        return _Call(
            "POST", f"/api/v1/namespaces/{namespace}/import", lambda v: v,
            params={"on_conflict": on_conflict}, content=export, headers={"content-type": content_type},
            repeatable=False,
        )

    @staticmethod
    def delete_namespace(namespace: str, purge: bool) -> _Call:
        params = {"purge": "true"} if purge else None
        return _Call("DELETE", f"/api/v1/namespaces/{namespace}", lambda v: v, params=params)

    @staticmethod
    def update(memory_id: str, fields: dict[str, Any]) -> _Call:
        body: dict[str, Any] = {}
        names = {"importance": "importance_score"}
        for name, value in fields.items():
            if value is UNSET:
                continue
            if name in ("expires_at",) and value is not None:
                value = _time(value, name)
            if name == "tags" and value is not None:
                value = list(value)
            if name == "embedding" and value is not None:
                name, value = "embedding_b64", _vector_b64(value)
            if name == "metadata" and value is not None:
                value = dict(value)
            body[names.get(name, name)] = value
        if not body:
            raise ValueError("update names no field to change")
        return _Call("PATCH", f"/api/v1/memories/{memory_id}", Memory.from_json, json=body, repeatable=False)

    @staticmethod
    def forget(memory_id: str, purge: bool) -> _Call:
        params = {"purge": "true"} if purge else None
        return _Call("DELETE", f"/api/v1/memories/{memory_id}", Deleted.from_json, params=params)

    @staticmethod
    def batch(memories: Iterable[Mapping[str, Any]]) -> _Call:
        items = []
        for m in memories:
            m = dict(m)
            if "importance" in m:
                m["importance_score"] = m.pop("importance")
            for k in ("created_at", "expires_at"):
                if k in m and not isinstance(m[k], str) and m[k] is not None:
                    m[k] = _time(m[k], k)
            if "ttl" in m:
                if m.get("expires_at") is not None:
                    raise ValueError("give ttl or expires_at, not both")
                m["expires_at"] = _ttl(m.pop("ttl"))
            items.append(m)
        return _Call("POST", "/api/v1/memories/batch", _batch_results, json={"memories": items}, repeatable=False)

    @staticmethod
    def page(
        namespace: Optional[str],
        tier: Optional[str],
        status: Optional[str],
        tag: Optional[str],
        page_size: int,
        cursor: Optional[str],
    ) -> _Call:
        params = _drop_none(
            {"namespace": namespace, "tier": tier, "status": status, "tag": tag, "limit": page_size, "cursor": cursor}
        )
        return _Call("GET", "/api/v1/memories", lambda v: v, params=params)

    @staticmethod
    def health() -> _Call:
        return _Call("GET", "/api/v1/health", Health.from_json)

    @staticmethod
    def snapshots() -> _Call:
        return _Call("GET", "/api/v1/admin/snapshots", lambda v: [Snapshot.from_json(s) for s in v["snapshots"]])

    @staticmethod
    def create_snapshot() -> _Call:
        return _Call("POST", "/api/v1/admin/snapshots", Snapshot.from_json, repeatable=False)

    @staticmethod
    def delete_snapshot(snapshot_id: str) -> _Call:
        return _Call("DELETE", f"/api/v1/admin/snapshots/{snapshot_id}", lambda v: bool(v["deleted"]))

    @staticmethod
    def migrations() -> _Call:
        return _Call("GET", _MIGRATIONS, lambda v: [Migration.from_json(m) for m in v["migrations"]])

    @staticmethod
    def start_migration(
        provider: str, model: Optional[str], dimensions: int, url: Optional[str], api_key_env: Optional[str]
    ) -> _Call:
        body = _drop_none(
            {"provider": provider, "model": model, "dimensions": dimensions, "url": url, "api_key_env": api_key_env}
        )
        return _Call("POST", _MIGRATIONS, Migration.from_json, json=body, repeatable=False)

    @staticmethod
    def migration(migration_id: int, action: Optional[str] = None) -> _Call:
        if action is None:
            return _Call("GET", f"{_MIGRATIONS}/{migration_id}", Migration.from_json)
        return _Call("POST", f"{_MIGRATIONS}/{migration_id}/{action}", Migration.from_json, json={})

    @staticmethod
    def drop_migration(migration_id: int) -> _Call:
        return _Call("DELETE", f"{_MIGRATIONS}/{migration_id}", lambda v: bool(v["deleted"]))

    @staticmethod
    def own_vectors(drop: bool) -> _Call:
        return _Call("DELETE" if drop else "GET", _OWN_VECTORS, OwnVectors.from_json)

    @staticmethod
    def search_migration(
        migration_id: int,
        query: Optional[str],
        embedding: Optional[Sequence[float]],
        namespace: Optional[str],
        limit: int,
        include_superseded: bool,
    ) -> _Call:
        body = _drop_none(
            {
                "query_text": query,
                "query_embedding_b64": _vector_b64(embedding),
                "namespace": namespace,
                "limit": limit,
                "include_superseded": include_superseded or None,
            }
        )
        return _Call(
            "POST",
            f"{_MIGRATIONS}/{migration_id}/search",
            lambda v: [SpaceHit.from_json(h) for h in v["results"]],
            json=body,
        )


_MIGRATIONS = "/api/v1/admin/embedding/migrations"
_OWN_VECTORS = "/api/v1/admin/embedding/own-vectors"


def _headers(api_key: Optional[str]) -> dict[str, str]:
    h = {"user-agent": "engram-client-python/0.1.0", "accept": "application/json"}
    if api_key:
        h["authorization"] = f"Bearer {api_key}"
    return h


def _answer(call: _Call, response: httpx.Response) -> Any:
    if call.raw and response.status_code < 400:
        return call.parse(response.content)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        raise error_from_response(response.status_code, body, response.headers)
    return call.parse(body)


def _transport_error(e: httpx.HTTPError, call: _Call) -> tuple[EngramError, bool]:
    """The client error for a transport failure, and whether retrying is safe."""
    where = f"{call.method} {call.path}"
    if isinstance(e, httpx.ConnectError):
        return ConnectionError(f"cannot connect for {where}: {e}"), True
    if isinstance(e, httpx.ConnectTimeout):
        return TimeoutError(f"connecting timed out for {where}: {e}"), True
    if isinstance(e, httpx.TimeoutException):
        return TimeoutError(f"{where} timed out: {e}"), False
    return ConnectionError(f"connection broke during {where}: {e}"), call.repeatable


def _stored_earlier(call: _Call, e: EngramError, attempt: int) -> bool:
    return call.create and attempt > 0 and isinstance(e, ConflictError) and bool(e.existing_id)


def _retryable(e: EngramError) -> bool:
    return isinstance(e, (RateLimitError, UnavailableError))


class Engram:
    """A blocking client.

    >>> db = Engram("http://127.0.0.1:3333", api_key="…")
    >>> m = db.remember("Caroline is allergic to peanuts", namespace="agent-7", importance=0.9)
    >>> for hit in db.recall("food allergies", namespace="agent-7"):
    ...     print(hit.score, hit.memory.content)
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        http_client: Optional[httpx.Client] = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        self._own = http_client is None
        self._http = http_client or httpx.Client(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> "Engram":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self, call: _Call) -> tuple[Any, int]:
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, params=call.params, json=call.json, content=call.content, headers=call.headers
                )
                return _answer(call, response), attempt
            except httpx.HTTPError as e:
                error, safe = _transport_error(e, call)
            except EngramError as e:
                if _stored_earlier(call, e, attempt):
                    return _StoredEarlier(e.details["existing_id"]), attempt
                error, safe = e, _retryable(e)
            if not safe or attempt >= self.retry.max_retries:
                raise error
            time.sleep(self.retry.delay(attempt, error))
            attempt += 1

    def _do(self, call: _Call) -> Any:
        return self._send(call)[0]

    def remember(
        self,
        content: str,
        *,
        namespace: Optional[str] = None,
        importance: Optional[float] = None,
        tags: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        embedding: Optional[Sequence[float]] = None,
        created_at: Optional[Time] = None,
        expires_at: Optional[Time] = None,
        ttl: Union[timedelta, float, int, None] = None,
        parent_id: Optional[str] = None,
        supersedes: Optional[Sequence[str]] = None,
        actor: Optional[str] = None,
        wait_for_embedding: bool = False,
    ) -> Memory:
        """Stores a memory and returns it. Raises ``ConflictError`` (with ``existing_id``) when
        the namespace already holds the same content — except when the conflict comes from
        retrying this very call, which then returns the memory the first attempt stored."""
        body = _memory_body(content, namespace, importance, tags, metadata, embedding, created_at, expires_at, ttl, parent_id)
        body.update(_drop_none({"supersedes": list(supersedes) if supersedes else None, "actor": actor}))
        value, _ = self._send(_Calls.remember(body, wait_for_embedding))
        if isinstance(value, _StoredEarlier):
            return self.get(value.id)
        return value

    def recall(
        self,
        query: Optional[str] = None,
        *,
        namespace: Optional[str] = None,
        limit: int = 10,
        mode: Optional[str] = None,
        embedding: Optional[Sequence[float]] = None,
        tags: Optional[Sequence[str]] = None,
        any_tags: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        since: Optional[Time] = None,
        until: Optional[Time] = None,
        min_importance: Optional[float] = None,
        max_importance: Optional[float] = None,
        tiers: Optional[Sequence[str]] = None,
        offset: Optional[int] = None,
        similarity_threshold: Optional[float] = None,
        explain: bool = False,
        include_metadata: bool = True,
        as_of: Optional[Time] = None,
        include_superseded: bool = False,
    ) -> SearchResults:
        """Searches by meaning and words (``mode``: hybrid, semantic or text), best first."""
        return self._do(
            _Calls.recall(
                query, namespace=namespace, limit=limit, mode=mode, embedding=embedding, tags=tags,
                any_tags=any_tags, metadata=metadata, since=since, until=until,
                min_importance=min_importance, max_importance=max_importance, tiers=tiers,
                offset=offset, similarity_threshold=similarity_threshold, explain=explain,
                include_metadata=include_metadata, as_of=as_of, include_superseded=include_superseded,
            )
        )

    def get(
        self,
        memory_id: str,
        *,
        include_embedding: bool = False,
        version: Optional[int] = None,
        as_of: Optional[Time] = None,
    ) -> Memory:
        """A memory as it is, or a past version of it (``version=N``, or the one current at
        ``as_of``)."""
        return self._do(_Calls.get(memory_id, include_embedding, version, as_of))

    def history(self, memory_id: str, *, page_size: int = 20) -> Iterator[Version]:
        """Every kept version of a memory, newest first, fetched a page at a time."""
        cursor = None
        while True:
            page = self._do(_Calls.history(memory_id, page_size, cursor))
            for v in page["versions"]:
                yield Version.from_json(v)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def revert(self, memory_id: str, version: int, *, actor: Optional[str] = None) -> Memory:
        """Makes a new version equal to version ``version`` (history is never rewritten)."""
        return self._do(_Calls.revert(memory_id, version, actor))

    def namespaces(self) -> list[Namespace]:
        """Every namespace the key may see, with its counts per tier."""
        return self._do(_Calls.namespaces())

    def export_namespace(
        self, namespace: str, *, compress: bool = False, embedding_format: str = "float"
    ) -> bytes:
        """Every memory of a namespace with its versions: the export stream (JSON lines, or one
        zstd stream), for ``import_namespace`` or ``engramctl import``. ``embedding_format=
        "base64"`` writes vectors as ``embedding_b64``: half the bytes, faster both ways."""
        return self._do(_Calls.export_namespace(namespace, compress, embedding_format))

    def import_namespace(
        self, namespace: str, export: bytes, *, on_conflict: str = "skip", compressed: Optional[bool] = None
    ) -> dict[str, Any]:
        """Stores an export into ``namespace``; ``on_conflict`` is skip, replace or fail. Returns
        the counts (imported, replaced, versions, skipped, conflicts, complete)."""
        return self._do(_Calls.import_namespace(namespace, export, on_conflict, compressed))

    def delete_namespace(self, namespace: str, *, purge: bool = False) -> dict[str, Any]:
        """Deletes every memory of a namespace; ``purge=True`` (admin key) erases it for good."""
        return self._do(_Calls.delete_namespace(namespace, purge))

    def update(
        self,
        memory_id: str,
        *,
        content: Any = UNSET,
        importance: Any = UNSET,
        tags: Any = UNSET,
        metadata: Any = UNSET,
        embedding: Any = UNSET,
        expires_at: Any = UNSET,
        parent_id: Any = UNSET,
        status: Any = UNSET,
        tier: Any = UNSET,
    ) -> Memory:
        """Changes the fields given; ``None`` clears ``expires_at``, ``parent_id`` or ``embedding``."""
        fields = dict(content=content, importance=importance, tags=tags, metadata=metadata, embedding=embedding,
                      expires_at=expires_at, parent_id=parent_id, status=status, tier=tier)
        return self._do(_Calls.update(memory_id, fields))

    def forget(self, memory_id: str, *, purge: bool = False) -> Deleted:
        """Soft-deletes a memory, or removes it for good with ``purge=True``."""
        return self._do(_Calls.forget(memory_id, purge))

    def batch(self, memories: Iterable[Mapping[str, Any]]) -> list[Union[Memory, EngramError]]:
        """Stores up to 1,000 memories in one request: one ``Memory`` or error per item, in
        order (items take the ``remember`` keywords; a failed item does not stop the others)."""
        return self._do(_Calls.batch(memories))

    def list(
        self,
        *,
        namespace: Optional[str] = None,
        tier: Optional[str] = None,
        status: Optional[str] = None,
        tag: Optional[str] = None,
        page_size: int = 100,
    ) -> Iterator[Memory]:
        """Every matching memory in id order, fetched a page at a time as you iterate."""
        cursor = None
        while True:
            page = self._do(_Calls.page(namespace, tier, status, tag, page_size, cursor))
            for m in page["memories"]:
                yield Memory.from_json(m)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def health(self) -> Health:
        """The health report (raises ``UnavailableError`` when writes are stopped)."""
        return self._do(_Calls.health())

    def snapshots(self) -> list[Snapshot]:
        """The daemon's online snapshots, oldest first (admin key)."""
        return self._do(_Calls.snapshots())

    def create_snapshot(self) -> Snapshot:
        return self._do(_Calls.create_snapshot())

    def delete_snapshot(self, snapshot_id: str) -> bool:
        return self._do(_Calls.delete_snapshot(snapshot_id))

    # Embedding migrations (admin key): re-embed the store into a new vector space in the
    # background, judge it, then switch the store's searches to it.

    def migrations(self) -> list[Migration]:
        return self._do(_Calls.migrations())

    def start_migration(
        self,
        provider: str,
        dimensions: int,
        *,
        model: Optional[str] = None,
        url: Optional[str] = None,
        api_key_env: Optional[str] = None,
    ) -> Migration:
        """Starts re-embedding every memory with ``provider``/``model`` (``local``, ``ollama``
        or ``openai``) into a new space of ``dimensions``."""
        return self._do(_Calls.start_migration(provider, model, dimensions, url, api_key_env))

    def migration(self, migration_id: int) -> Migration:
        return self._do(_Calls.migration(migration_id))

    def wait_for_migration(self, migration_id: int, *, timeout: float = 600.0, poll: float = 0.2) -> Migration:
        """Polls until the migration is ``ready`` (raises ``TimeoutError`` after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.migration(migration_id)
            if m.ready:
                return m
            if time.monotonic() >= deadline:
                raise TimeoutError(f"migration {migration_id} not ready after {timeout} s: {m.state}, {m.progress:.0%}")
            time.sleep(poll)

    def pause_migration(self, migration_id: int) -> Migration:
        return self._do(_Calls.migration(migration_id, "pause"))

    def resume_migration(self, migration_id: int) -> Migration:
        return self._do(_Calls.migration(migration_id, "resume"))

    def activate_migration(self, migration_id: int) -> Migration:
        """Switches the store's searches to the migration's space (it must be ready)."""
        return self._do(_Calls.migration(migration_id, "activate"))

    def deactivate_migration(self, migration_id: int) -> Migration:
        return self._do(_Calls.migration(migration_id, "deactivate"))

    def drop_migration(self, migration_id: int) -> bool:
        return self._do(_Calls.drop_migration(migration_id))

    def own_vectors(self) -> OwnVectors:
        """Whether the store's own vectors were dropped, and how far the sweep has got."""
        return self._do(_Calls.own_vectors(False))

    def drop_own_vectors(self) -> OwnVectors:
        """Gives up the store's own vectors for the active migration's (durable when it
        returns; needs an active migration, else ConflictError)."""
        return self._do(_Calls.own_vectors(True))

    def search_migration(
        self,
        migration_id: int,
        query: Optional[str] = None,
        *,
        embedding: Optional[Sequence[float]] = None,
        namespace: Optional[str] = None,
        limit: int = 10,
        include_superseded: bool = False,
    ) -> list[SpaceHit]:
        """Nearest neighbours in the migration's space alone, to judge it before activating."""
        return self._do(_Calls.search_migration(migration_id, query, embedding, namespace, limit, include_superseded))


class AsyncEngram:
    """The asyncio client: the same methods as ``Engram``, awaited; ``list`` is an async iterator."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        http_client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        self._own = http_client is None
        self._http = http_client or httpx.AsyncClient(base_url=self.url, headers=_headers(api_key), timeout=timeout)

    async def close(self) -> None:
        if self._own:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncEngram":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def _send(self, call: _Call) -> tuple[Any, int]:
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, params=call.params, json=call.json, content=call.content, headers=call.headers
                )
                return _answer(call, response), attempt
            except httpx.HTTPError as e:
                error, safe = _transport_error(e, call)
            except EngramError as e:
                if _stored_earlier(call, e, attempt):
                    return _StoredEarlier(e.details["existing_id"]), attempt
                error, safe = e, _retryable(e)
            if not safe or attempt >= self.retry.max_retries:
                raise error
            await asyncio.sleep(self.retry.delay(attempt, error))
            attempt += 1

    async def _do(self, call: _Call) -> Any:
        return (await self._send(call))[0]

    async def remember(
        self,
        content: str,
        *,
        namespace: Optional[str] = None,
        importance: Optional[float] = None,
        tags: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        embedding: Optional[Sequence[float]] = None,
        created_at: Optional[Time] = None,
        expires_at: Optional[Time] = None,
        ttl: Union[timedelta, float, int, None] = None,
        parent_id: Optional[str] = None,
        supersedes: Optional[Sequence[str]] = None,
        actor: Optional[str] = None,
        wait_for_embedding: bool = False,
    ) -> Memory:
        body = _memory_body(content, namespace, importance, tags, metadata, embedding, created_at, expires_at, ttl, parent_id)
        body.update(_drop_none({"supersedes": list(supersedes) if supersedes else None, "actor": actor}))
        value, _ = await self._send(_Calls.remember(body, wait_for_embedding))
        if isinstance(value, _StoredEarlier):
            return await self.get(value.id)
        return value

    async def recall(
        self,
        query: Optional[str] = None,
        *,
        namespace: Optional[str] = None,
        limit: int = 10,
        mode: Optional[str] = None,
        embedding: Optional[Sequence[float]] = None,
        tags: Optional[Sequence[str]] = None,
        any_tags: Optional[Sequence[str]] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        since: Optional[Time] = None,
        until: Optional[Time] = None,
        min_importance: Optional[float] = None,
        max_importance: Optional[float] = None,
        tiers: Optional[Sequence[str]] = None,
        offset: Optional[int] = None,
        similarity_threshold: Optional[float] = None,
        explain: bool = False,
        include_metadata: bool = True,
        as_of: Optional[Time] = None,
        include_superseded: bool = False,
    ) -> SearchResults:
        return await self._do(
            _Calls.recall(
                query, namespace=namespace, limit=limit, mode=mode, embedding=embedding, tags=tags,
                any_tags=any_tags, metadata=metadata, since=since, until=until,
                min_importance=min_importance, max_importance=max_importance, tiers=tiers,
                offset=offset, similarity_threshold=similarity_threshold, explain=explain,
                include_metadata=include_metadata, as_of=as_of, include_superseded=include_superseded,
            )
        )

    async def get(
        self,
        memory_id: str,
        *,
        include_embedding: bool = False,
        version: Optional[int] = None,
        as_of: Optional[Time] = None,
    ) -> Memory:
        return await self._do(_Calls.get(memory_id, include_embedding, version, as_of))

    async def history(self, memory_id: str, *, page_size: int = 20) -> AsyncIterator[Version]:
        cursor = None
        while True:
            page = await self._do(_Calls.history(memory_id, page_size, cursor))
            for v in page["versions"]:
                yield Version.from_json(v)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def revert(self, memory_id: str, version: int, *, actor: Optional[str] = None) -> Memory:
        return await self._do(_Calls.revert(memory_id, version, actor))

    async def namespaces(self) -> list[Namespace]:
        return await self._do(_Calls.namespaces())

    async def export_namespace(
        self, namespace: str, *, compress: bool = False, embedding_format: str = "float"
    ) -> bytes:
        return await self._do(_Calls.export_namespace(namespace, compress, embedding_format))

    async def import_namespace(
        self, namespace: str, export: bytes, *, on_conflict: str = "skip", compressed: Optional[bool] = None
    ) -> dict[str, Any]:
        return await self._do(_Calls.import_namespace(namespace, export, on_conflict, compressed))

    async def delete_namespace(self, namespace: str, *, purge: bool = False) -> dict[str, Any]:
        return await self._do(_Calls.delete_namespace(namespace, purge))

    async def update(
        self,
        memory_id: str,
        *,
        content: Any = UNSET,
        importance: Any = UNSET,
        tags: Any = UNSET,
        metadata: Any = UNSET,
        embedding: Any = UNSET,
        expires_at: Any = UNSET,
        parent_id: Any = UNSET,
        status: Any = UNSET,
        tier: Any = UNSET,
    ) -> Memory:
        fields = dict(content=content, importance=importance, tags=tags, metadata=metadata, embedding=embedding,
                      expires_at=expires_at, parent_id=parent_id, status=status, tier=tier)
        return await self._do(_Calls.update(memory_id, fields))

    async def forget(self, memory_id: str, *, purge: bool = False) -> Deleted:
        return await self._do(_Calls.forget(memory_id, purge))

    async def batch(self, memories: Iterable[Mapping[str, Any]]) -> list[Union[Memory, EngramError]]:
        return await self._do(_Calls.batch(memories))

    async def list(
        self,
        *,
        namespace: Optional[str] = None,
        tier: Optional[str] = None,
        status: Optional[str] = None,
        tag: Optional[str] = None,
        page_size: int = 100,
    ) -> AsyncIterator[Memory]:
        cursor = None
        while True:
            page = await self._do(_Calls.page(namespace, tier, status, tag, page_size, cursor))
            for m in page["memories"]:
                yield Memory.from_json(m)
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def health(self) -> Health:
        return await self._do(_Calls.health())

    async def snapshots(self) -> list[Snapshot]:
        return await self._do(_Calls.snapshots())

    async def create_snapshot(self) -> Snapshot:
        return await self._do(_Calls.create_snapshot())

    async def delete_snapshot(self, snapshot_id: str) -> bool:
        return await self._do(_Calls.delete_snapshot(snapshot_id))

    async def migrations(self) -> list[Migration]:
        return await self._do(_Calls.migrations())

    async def start_migration(
        self,
        provider: str,
        dimensions: int,
        *,
        model: Optional[str] = None,
        url: Optional[str] = None,
        api_key_env: Optional[str] = None,
    ) -> Migration:
        return await self._do(_Calls.start_migration(provider, model, dimensions, url, api_key_env))

    async def migration(self, migration_id: int) -> Migration:
        return await self._do(_Calls.migration(migration_id))

    async def wait_for_migration(self, migration_id: int, *, timeout: float = 600.0, poll: float = 0.2) -> Migration:
        deadline = time.monotonic() + timeout
        while True:
            m = await self.migration(migration_id)
            if m.ready:
                return m
            if time.monotonic() >= deadline:
                raise TimeoutError(f"migration {migration_id} not ready after {timeout} s: {m.state}, {m.progress:.0%}")
            await asyncio.sleep(poll)

    async def pause_migration(self, migration_id: int) -> Migration:
        return await self._do(_Calls.migration(migration_id, "pause"))

    async def resume_migration(self, migration_id: int) -> Migration:
        return await self._do(_Calls.migration(migration_id, "resume"))

    async def activate_migration(self, migration_id: int) -> Migration:
        return await self._do(_Calls.migration(migration_id, "activate"))

    async def deactivate_migration(self, migration_id: int) -> Migration:
        return await self._do(_Calls.migration(migration_id, "deactivate"))

    async def drop_migration(self, migration_id: int) -> bool:
        return await self._do(_Calls.drop_migration(migration_id))

    async def own_vectors(self) -> OwnVectors:
        return await self._do(_Calls.own_vectors(False))

    async def drop_own_vectors(self) -> OwnVectors:
        return await self._do(_Calls.own_vectors(True))

    async def search_migration(
        self,
        migration_id: int,
        query: Optional[str] = None,
        *,
        embedding: Optional[Sequence[float]] = None,
        namespace: Optional[str] = None,
        limit: int = 10,
        include_superseded: bool = False,
    ) -> list[SpaceHit]:
        return await self._do(
            _Calls.search_migration(migration_id, query, embedding, namespace, limit, include_superseded)
        )
