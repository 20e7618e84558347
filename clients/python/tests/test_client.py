"""The Python client against real engramd daemons: every method, pagination, every error class,
retries, and the async client."""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import engram
from engram import AsyncEngram, Engram, RetryPolicy

from conftest import ADMIN_KEY, TEAM_KEY


def vec(seed: int) -> list[float]:
    return [((seed * 31 + d * 7) % 17) / 17.0 - 0.5 for d in range(8)]


@pytest.fixture
def db(daemon):
    with Engram(daemon.url, api_key=ADMIN_KEY) as client:
        yield client


def ns() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_remember_get_update_forget(db):
    space = ns()
    created = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    m = db.remember(
        "Caroline is allergic to peanuts",
        namespace=space,
        importance=0.9,
        tags=["health", "caroline"],
        metadata={"speaker": "Mel", "session": 3},
        embedding=vec(1),
        created_at=created,
        ttl=timedelta(days=7),
    )
    assert isinstance(m, engram.Memory)
    assert (m.namespace, m.tier, m.status, m.version) == (space, "working", "active", 1)
    assert m.importance == pytest.approx(0.9)
    assert m.created_at == created
    assert m.expires_at is not None and m.expires_at > datetime.now(timezone.utc) + timedelta(days=6)
    assert m.metadata == {"speaker": "Mel", "session": 3}
    assert m.has_embedding and m.embedding is None

    got = db.get(m.id, include_embedding=True)
    assert got.content == m.content and got.access_count == 1
    assert got.embedding == pytest.approx(vec(1))
    # Vectors travel as base64 of little-endian f32s: exactly the f32 of each number sent.
    assert got.embedding == [struct.unpack("<f", struct.pack("<f", x))[0] for x in vec(1)]

    updated = db.update(m.id, importance=0.4, tags=["health"], expires_at=None)
    assert (updated.version, updated.tags, updated.expires_at) == (2, ["health"], None)
    assert updated.importance == pytest.approx(0.4)
    db.update(m.id, embedding=vec(2))
    assert db.get(m.id, include_embedding=True).embedding == pytest.approx(vec(2))
    assert updated.metadata == {"speaker": "Mel", "session": 3}, "fields left out are kept"

    gone = db.forget(m.id)
    assert gone.purged is False and gone.id == m.id
    assert db.get(m.id).status == "deleted"
    assert db.forget(m.id, purge=True).purged is True
    with pytest.raises(engram.NotFoundError) as e:
        db.get(m.id)
    assert e.value.code == "MEMORY_NOT_FOUND" and e.value.status == 404 and e.value.request_id


def test_recall_by_words_meaning_and_filters(db):
    space = ns()
    a = db.remember("the ferry to the island leaves at nine", namespace=space, tags=["travel"],
                    metadata={"day": 1}, importance=0.8, embedding=vec(2))
    db.remember("the budget review moved to thursday", namespace=space, tags=["work"],
                metadata={"day": 5}, importance=0.2, embedding=vec(3))
    text = db.recall("ferry island", namespace=space, mode="text")
    assert [h.memory.id for h in text] == [a.id]
    assert len(text) == 1 and text.total_count == 1 and text.query_time_ms >= 0

    semantic = db.recall(namespace=space, mode="semantic", embedding=vec(2), limit=1, explain=True)
    assert semantic.hits[0].memory.id == a.id
    assert semantic.hits[0].score > 0 and semantic.hits[0].explanation is not None

    hybrid = db.recall("thursday ferry", namespace=space, embedding=vec(2))
    assert {h.memory.id for h in hybrid} >= {a.id}
    assert [h.memory.id for h in db.recall("the", namespace=space, mode="text", tags=["travel"])] == [a.id]
    assert [h.memory.id for h in db.recall("the", namespace=space, mode="text", any_tags=["nope", "travel"])] == [a.id]
    assert [h.memory.id for h in db.recall("the", namespace=space, mode="text", metadata={"day": {"$lt": 3}})] == [a.id]
    assert [h.memory.id for h in db.recall("the", namespace=space, mode="text", min_importance=0.5)] == [a.id]
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert len(db.recall("the", namespace=space, mode="text", since=future)) == 0
    assert len(db.recall("the", namespace=space, mode="text", until=future)) == 2
    no_meta = db.recall("ferry", namespace=space, mode="text", include_metadata=False)
    assert no_meta.hits[0].memory.metadata is None


def test_batch_places_each_result_and_error(db):
    space = ns()
    results = db.batch(
        [
            {"content": "first", "namespace": space, "importance": 0.5},
            {"content": "second", "namespace": space, "importance": 7},
            {"content": "third", "namespace": space, "tags": ["x"], "ttl": 60},
        ]
    )
    assert isinstance(results[0], engram.Memory) and isinstance(results[2], engram.Memory)
    assert isinstance(results[1], engram.ValidationError)
    assert results[1].field == "memories[1].importance_score"
    assert results[2].expires_at is not None


def test_list_follows_cursors_over_2500_memories(db):
    space = ns()
    ids = []
    for start in range(0, 2500, 1000):
        batch = db.batch([{"content": f"memory {i}", "namespace": space} for i in range(start, min(start + 1000, 2500))])
        assert all(isinstance(m, engram.Memory) for m in batch)
        ids += [m.id for m in batch]
    listed = [m.id for m in db.list(namespace=space, page_size=300)]
    assert len(listed) == 2500
    assert listed == sorted(ids), "in id order, each memory once"
    assert [m.id for m in db.list(namespace=space, page_size=1000)] == listed


def test_versions_supersede_and_as_of(db):
    space = ns()
    m = db.remember("Caroline lives in Paris", namespace=space, tags=["city"], actor="agent-1")
    assert m.actor == "agent-1"
    moved = db.update(m.id, content="Caroline lives in Berlin")
    assert moved.version == 2
    versions = list(db.history(m.id, page_size=1))
    assert [v.version for v in versions] == [2, 1]
    assert versions[0].changed == ["content"]
    assert versions[1].valid_to == versions[0].valid_from
    assert versions[1].memory.content == "Caroline lives in Paris"
    assert db.get(m.id, version=1).content == "Caroline lives in Paris"
    assert db.get(m.id, as_of=versions[1].valid_from).version == 1
    then = db.recall("Caroline", namespace=space, mode="text", as_of=versions[1].valid_from)
    assert [h.memory.content for h in then] == ["Caroline lives in Paris"]
    back = db.revert(m.id, 1, actor="agent-2")
    assert (back.version, back.content, back.actor) == (3, "Caroline lives in Paris", "agent-2")
    newer = db.remember("Caroline lives in Lisbon", namespace=space, supersedes=[m.id])
    old = db.get(m.id)
    assert (old.status, old.superseded_by) == ("superseded", newer.id)
    assert [h.memory.id for h in db.recall("Caroline", namespace=space, mode="text")] == [newer.id]
    both = db.recall("Caroline", namespace=space, mode="text", include_superseded=True)
    assert {h.memory.id for h in both} == {m.id, newer.id}
    with pytest.raises(engram.NotFoundError):
        db.get(m.id, version=9)


def test_namespaces_export_purge_import(db):
    space = ns()
    first = db.remember("the lighthouse keeper's log", namespace=space, embedding=vec(3), tags=["sea"])
    db.update(first.id, importance=0.9)
    for i in range(30):
        db.remember(f"harbour note {i}", namespace=space, embedding=vec(10 + i))
    listed = {n.namespace: n for n in db.namespaces()}
    assert listed[space].memories == 31 and listed[space].searchable == 31
    assert listed[space].bytes == sum(listed[space].tier_bytes.values()) > 0
    plain = db.export_namespace(space)
    packed = db.export_namespace(space, compress=True)
    lines = plain.decode().splitlines()
    assert len(lines) == 33 and '"engram_export_end":true' in lines[-1]
    b64 = db.export_namespace(space, embedding_format="base64").decode().splitlines()
    assert '"engram_export":2' in b64[0] and '"embedding_b64":"' in b64[1]
    assert len(b64) == 33 and len("\n".join(b64)) < len(plain)
    assert packed[:4] == b"\x28\xb5\x2f\xfd"
    purged = db.delete_namespace(space, purge=True)
    assert purged["purged"] == 31
    with pytest.raises(engram.NotFoundError):
        db.get(first.id)
    out = db.import_namespace(space, packed)
    assert (out["imported"], out["versions"], out["complete"]) == (31, 1, True)
    assert db.get(first.id, version=1).importance != db.get(first.id).importance
    again = db.import_namespace(space, plain)
    assert (again["imported"], again["skipped"]) == (0, 31)
    with pytest.raises(engram.ConflictError):
        db.import_namespace(space, plain, on_conflict="fail")
    with pytest.raises(engram.ValidationError):
        db.import_namespace(space, b"not an export\n")
    assert db.delete_namespace(space)["deleted"] == 31


def test_health_and_snapshots(db):
    h = db.health()
    assert h.healthy and h.database_connected and h.version
    assert set(h.tiers) == {"working", "warm", "cold"}
    before = {s.id for s in db.snapshots()}
    snap = db.create_snapshot()
    assert snap.took_ms is not None and snap.files > 0 and snap.bytes > 0
    assert {s.id for s in db.snapshots()} == before | {snap.id}
    assert db.delete_snapshot(snap.id) is True
    with pytest.raises(engram.NotFoundError) as e:
        db.delete_snapshot(snap.id)
    assert e.value.code == "SNAPSHOT_NOT_FOUND"


def test_every_error_class(daemon, db, fresh_daemon):
    space = ns()
    with pytest.raises(engram.ValidationError) as e:
        db.remember("x", namespace=space, importance=1.5)
    assert (e.value.field, e.value.status, e.value.code) == ("importance_score", 400, "INVALID_REQUEST")
    with pytest.raises(engram.ValidationError) as e:
        db.remember("x", namespace=space, embedding=[0.5, 0.5])
    assert e.value.field == "embedding"
    with pytest.raises(ValueError):
        db.update(str(uuid.uuid4()))

    first = db.remember("only once", namespace=space)
    with pytest.raises(engram.ConflictError) as e:
        db.remember("only once", namespace=space)
    assert e.value.existing_id == first.id and e.value.status == 409

    with pytest.raises(engram.PayloadTooLargeError) as e:
        db.remember("x" * (1024 * 1024 + 1), namespace=space)
    assert e.value.field == "content"

    with Engram(daemon.url) as anonymous:
        with pytest.raises(engram.AuthenticationError) as e:
            anonymous.recall("x", mode="text")
        assert e.value.code == "UNAUTHORIZED"

    with Engram(daemon.url, api_key=TEAM_KEY) as team:
        team.remember("team a memory", namespace="team-a")
        with pytest.raises(engram.PermissionDeniedError) as e:
            team.remember("elsewhere", namespace=space)
        assert e.value.code == "FORBIDDEN"
        with pytest.raises(engram.PermissionDeniedError):
            team.snapshots()

    with pytest.raises(engram.NotFoundError):
        db.get(str(uuid.uuid4()))

    # Nothing listening.
    with Engram(f"http://127.0.0.1:{free_port_closed()}", retry=RetryPolicy(max_retries=1, backoff=0.01)) as nobody:
        with pytest.raises(engram.ConnectionError):
            nobody.health()

    # A peer that accepts and never answers.
    with silent_server() as port:
        with Engram(f"http://127.0.0.1:{port}", timeout=0.3, retry=RetryPolicy(max_retries=0)) as slow:
            with pytest.raises(engram.TimeoutError):
                slow.health()

    # 429 from the daemon's rate limiter (no retries).
    limited = fresh_daemon({"rate_limit.requests_per_second": "1", "rate_limit.burst": "1"})
    with Engram(limited.url, retry=RetryPolicy(max_retries=0)) as c:
        c.recall("x", mode="text")
        with pytest.raises(engram.RateLimitError) as e:
            c.recall("x", mode="text")
        assert e.value.retry_after is not None and e.value.retry_after >= 1

    # 503: writes stopped after an fsync failure.
    failing = fresh_daemon(env={"ENGRAM_FAULT_FSYNC_FAIL_AFTER": "2"})
    with Engram(failing.url, retry=RetryPolicy(max_retries=0)) as c:
        with pytest.raises((engram.UnavailableError, engram.ServerError)):
            for i in range(10):
                c.remember(f"write {i}")
        with pytest.raises(engram.UnavailableError) as e:
            c.remember("after the failure")
        assert e.value.code == "SERVICE_UNAVAILABLE"

    # 500: a damaged cold segment block, found when a memory in it is read.
    broken = fresh_daemon()
    with Engram(broken.url) as c:
        cold = c.remember("kept in the cold tier", namespace="cold")
        c.update(cold.id, tier="cold")
    broken.stop()
    segment = next((broken.data / "cold").glob("*.cold"))
    raw = bytearray(segment.read_bytes())
    raw[60] ^= 0xFF  # in the first block's compressed bytes (after the 32-byte header and 16-byte block header)
    segment.write_bytes(bytes(raw))
    broken.start()
    with Engram(broken.url) as c:
        with pytest.raises(engram.ServerError) as e:
            c.get(cold.id)
        assert e.value.status == 500 and e.value.code == "INTERNAL_ERROR"


def free_port_closed() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class silent_server:
    """A TCP listener that accepts connections and never writes a byte."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.conns = []
        self.stop = False

        def accept() -> None:
            self.sock.settimeout(0.1)
            while not self.stop:
                try:
                    self.conns.append(self.sock.accept()[0])
                except OSError:
                    pass

        self.thread = threading.Thread(target=accept, daemon=True)
        self.thread.start()
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.stop = True
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


def test_retries_a_daemon_that_is_restarting(fresh_daemon):
    """Writes fail with 503 (fsync failure), the operator restarts the daemon, and a client with
    retries gets through: 503, then connection refused while it is down, then success."""
    d = fresh_daemon(env={"ENGRAM_FAULT_FSYNC_FAIL_AFTER": "2"})
    with Engram(d.url, retry=RetryPolicy(max_retries=0)) as c:
        for i in range(10):
            try:
                c.remember(f"warm-up {i}")
            except engram.UnavailableError:
                break
        with pytest.raises(engram.UnavailableError):
            c.remember("refused")

    def restart() -> None:
        time.sleep(0.3)
        d.stop()
        d.start(env={})

    t = threading.Thread(target=restart)
    t.start()
    started = time.monotonic()
    with Engram(d.url, retry=RetryPolicy(max_retries=12, backoff=0.1, max_backoff=1.0)) as c:
        m = c.remember("written once the daemon is back")
    t.join()
    assert m.version == 1 and time.monotonic() - started > 0.3
    with Engram(d.url) as c:
        assert c.get(m.id).content == "written once the daemon is back"


def test_retries_429_after_retry_after(fresh_daemon):
    d = fresh_daemon({"rate_limit.requests_per_second": "2", "rate_limit.burst": "2"})
    with Engram(d.url, retry=RetryPolicy(max_retries=5)) as c:
        started = time.monotonic()
        for i in range(6):
            c.remember(f"paced {i}")
        assert time.monotonic() - started >= 1.0, "the client waited for the bucket to refill"
        assert len(list(c.list())) == 6


async def test_async_client(daemon):
    space = ns()
    async with AsyncEngram(daemon.url, api_key=ADMIN_KEY) as db:
        m = await db.remember("async memory about lighthouses", namespace=space, tags=["sea"], embedding=vec(9))
        assert (await db.get(m.id)).content == m.content
        hits = await db.recall("lighthouses", namespace=space, mode="text")
        assert hits.hits[0].memory.id == m.id
        updated = await db.update(m.id, content="async memory about harbours")
        assert updated.version == 2
        assert [v.version async for v in db.history(m.id)] == [2, 1]
        assert (await db.get(m.id, version=1)).content == "async memory about lighthouses"
        assert space in {n.namespace for n in await db.namespaces()}
        exported = await db.export_namespace(space)
        assert exported.count(b"\n") == 3
        batch = await db.batch([{"content": f"async {i}", "namespace": space} for i in range(250)])
        assert sum(isinstance(x, engram.Memory) for x in batch) == 250
        seen = [x.id async for x in db.list(namespace=space, page_size=100)]
        assert len(seen) == 251
        assert (await db.health()).healthy
        with pytest.raises(engram.ConflictError):
            await db.remember("async 7", namespace=space)
        snap = await db.create_snapshot()
        assert snap.id in {s.id for s in await db.snapshots()}
        assert await db.delete_snapshot(snap.id)
        assert (await db.forget(m.id, purge=True)).purged
        with pytest.raises(engram.NotFoundError):
            await db.get(m.id)


def model_dir() -> str:
    import os

    return os.environ.get(
        "ENGRAM_EMBEDDING_MODEL_DIR", os.path.expanduser("~/.cache/engram/models/all-MiniLM-L6-v2")
    )


def test_an_embedding_migration_from_start_to_cut_over(fresh_daemon):
    # A store of 8-d client vectors and no embedder of its own gains a 384-d space of the
    # built-in model, is judged in it, and switches its searches to it.
    d = fresh_daemon({"embedding.model_dir": model_dir()})
    space = ns()
    with Engram(d.url) as db:
        puppy = db.remember("I adopted a golden retriever puppy", namespace=space, embedding=vec(1))
        db.remember("The stock market fell sharply today", namespace=space, embedding=vec(2))
        with pytest.raises(engram.ValidationError):
            db.start_migration("local", 768)
        m = db.start_migration("local", 384)
        assert (m.provider, m.model, m.dimensions, m.active) == ("local", "all-MiniLM-L6-v2", 384, False)
        assert m.id in {x.id for x in db.migrations()}
        m = db.wait_for_migration(m.id, timeout=120)
        assert (m.vectors, m.progress) == (2, 1.0)
        hits = db.search_migration(m.id, "a new dog", namespace=space, limit=1)
        assert hits[0].memory.id == puppy.id and hits[0].similarity > 0.3
        with pytest.raises(engram.ValidationError):
            db.search_migration(m.id, embedding=vec(3))
        assert db.pause_migration(m.id).state == "paused"
        with pytest.raises(engram.ConflictError):
            db.activate_migration(m.id)
        db.resume_migration(m.id)
        db.wait_for_migration(m.id, timeout=60)
        assert db.activate_migration(m.id).active
        # The store's searches now rank the new space; its model embeds the query, client
        # vectors have its dimensions, and a write can wait until it is found by meaning.
        assert db.recall("a new dog", namespace=space, mode="semantic", limit=1).hits[0].memory.id == puppy.id
        with pytest.raises(engram.ValidationError):
            db.remember("an old-model vector", namespace=space, embedding=vec(4))
        own = db.remember("a note the client embedded", namespace=space, embedding=[0.0] * 383 + [1.0])
        found = db.recall(embedding=[0.0] * 383 + [1.0], namespace=space, mode="semantic", limit=1)
        assert found.hits[0].memory.id == own.id
        hiking = db.remember("We hiked up the mountain trail at dawn", namespace=space, wait_for_embedding=True)
        assert db.recall("climbing a peak", namespace=space, mode="semantic", limit=1).hits[0].memory.id == hiking.id
        with pytest.raises(engram.ConflictError):
            db.drop_migration(m.id)
        assert not db.deactivate_migration(m.id).active
        assert db.drop_migration(m.id)
        assert db.migrations() == []
        with pytest.raises(engram.NotFoundError):
            db.migration(m.id)


def test_the_old_vectors_are_dropped_after_the_cut_over(fresh_daemon):
    # After the cut-over the store gives up its 8-d client vectors; reads then show the new
    # space's 384-d vectors, and the migration cannot be switched off.
    d = fresh_daemon({"embedding.model_dir": model_dir()})
    space = ns()
    with Engram(d.url) as db:
        puppy = db.remember("I adopted a golden retriever puppy", namespace=space, embedding=vec(1))
        assert not db.own_vectors().dropped
        with pytest.raises(engram.ConflictError):
            db.drop_own_vectors()
        m = db.wait_for_migration(db.start_migration("local", 384).id, timeout=120)
        db.activate_migration(m.id)
        own = db.drop_own_vectors()
        assert (own.dropped, own.migration, own.model) == (True, m.id, "all-MiniLM-L6-v2")
        got = db.get(puppy.id, include_embedding=True)
        assert (got.embedding_model, len(got.embedding or [])) == ("all-MiniLM-L6-v2", 384)
        assert db.recall("a new dog", namespace=space, mode="semantic", limit=1).hits[0].memory.id == puppy.id
        with pytest.raises(engram.ConflictError):
            db.deactivate_migration(m.id)
