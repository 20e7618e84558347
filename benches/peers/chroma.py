"""Chroma as a peer in compare.py: its own server (`chroma run`, from the PyPI wheel `chromadb`)
driven over its REST API by wrk, the native HTTP load generator, with one Lua script per
workload. Chroma has no load generator of its own, and its Python client would measure the
GIL: wrk costs the machine little, as engram-bench and pgbench do.

Durability: Chroma runs with its defaults (a write-ahead log in SQLite under --path); this
script does not change how often it syncs, and does not claim it syncs every write as Engram
and PostgreSQL do here.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

PORT = 8011
API = f"http://127.0.0.1:{PORT}/api/v2/tenants/default_tenant/databases/default_database"

# One JSON body per request. `prefix`, `tid` and the counter make ids unique across threads
# and runs; a body that Chroma refuses counts in wrk's "Non-2xx" line, which fails the run.
CREATE_LUA = """
local vec = "%(vec)s"
local prefix = "%(prefix)s"
local n = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function request()
  n = n + 1
  local id = prefix .. "-" .. tid .. "-" .. n
  local body = '{"ids":["' .. id .. '"],"embeddings":[' .. vec .. '],"documents":["bench ' .. id .. '"]}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""

GET_LUA = """
local count = %(count)d
function request()
  local body = '{"ids":["p' .. math.random(0, count - 1) .. '"]}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""

QUERY_LUA = """
local bodies = {}
for line in io.lines("%(file)s") do bodies[#bodies + 1] = line end
function request()
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[math.random(#bodies)])
end
"""


def _post(path: str, body: dict, method: str = "POST") -> dict:
    req = urllib.request.Request(API + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        text = r.read().decode()
    return json.loads(text) if text else {}


def _vec(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in v) + "]"


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


class Chroma:
    def __init__(self, root: Path):
        self.root = root
        self.exe = shutil.which("chroma") or str(Path(sys.executable).parent / "chroma")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.proc = subprocess.Popen(
            [self.exe, "run", "--path", str(self.root / "data"), "--host", "127.0.0.1",
             "--port", str(PORT)],
            stdout=open(self.root / "log", "w"), stderr=subprocess.STDOUT)
        for _ in range(600):
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma exited (port {PORT} taken?): see {self.root / 'log'}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/v2/heartbeat", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("chroma did not start")

    def stop(self) -> None:
        if self.proc:
            # `chroma run` ignores SIGTERM; it stops on SIGINT.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def collection(self, name: str, ef_search: int = 100) -> str:
        """A cosine collection with the HNSW settings pgvector gets (m 16, ef_construction 64)."""
        reply = _post("/collections", {"name": name, "configuration": {"hnsw": {
            "space": "cosine", "ef_construction": 64, "ef_search": ef_search,
            "max_neighbors": 16}}})
        return reply["id"]

    def add(self, coll: str, ids: list[str], vectors: np.ndarray, docs: list[str]) -> None:
        _post(f"/collections/{coll}/add", {"ids": ids, "embeddings": vectors.tolist(),
                                            "documents": docs})

    def query_ids(self, coll: str, q: np.ndarray, n: int = 10) -> list[str]:
        reply = _post(f"/collections/{coll}/query", {"query_embeddings": [q.tolist()],
                                                      "n_results": n, "include": []})
        return reply["ids"][0]

    def wrk(self, path: str, lua: str, clients: int, secs: float, work: Path) -> dict:
        script = work / "chroma.lua"
        script.write_text(lua)
        out = subprocess.run(
            ["wrk", "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{int(secs)}s",
             "--latency", "-s", str(script), API + path],
            check=True, text=True, capture_output=True).stdout
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if bad:
            raise RuntimeError(f"chroma refused {bad.group(1)} requests:\n{out}")
        rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
        lat = {q: _ms(v, u) for q, v, u in re.findall(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s)$", out, re.M)}
        return {"rate": rate, "p50_ms": lat["50"], "p99_ms": lat["99"]}

    def creates(self, coll: str, vec: np.ndarray, clients: int, secs: float, work: Path, tag: str) -> dict:
        lua = CREATE_LUA % {"vec": _vec(vec), "prefix": tag}
        return self.wrk(f"/collections/{coll}/add", lua, clients, secs, work)

    def gets(self, coll: str, vec: np.ndarray, count: int, clients: int, secs: float, work: Path) -> dict:
        for start in range(0, count, 1000):
            ids = [f"p{i}" for i in range(start, min(count, start + 1000))]
            self.add(coll, ids, np.tile(vec, (len(ids), 1)), [f"preloaded {i}" for i in ids])
        return self.wrk(f"/collections/{coll}/get", GET_LUA % {"count": count}, clients, secs, work)

    def load(self, coll: str, vectors: np.ndarray) -> None:
        for start in range(0, len(vectors), 1000):
            chunk = vectors[start:start + 1000]
            ids = [str(i) for i in range(start, start + len(chunk))]
            self.add(coll, ids, chunk, [f"search bench memory {i}" for i in ids])

    def searches(self, coll: str, pool: np.ndarray, clients: int, secs: float, work: Path) -> dict:
        bodies = work / "chroma-queries.jsonl"
        with open(bodies, "w") as f:
            for q in pool:
                f.write(json.dumps({"query_embeddings": [q.tolist()], "n_results": 10,
                                    "include": ["distances"]}) + "\n")
        return self.wrk(f"/collections/{coll}/query", QUERY_LUA % {"file": bodies}, clients, secs, work)


def record_chroma(chroma: Chroma, vec: np.ndarray, secs: float, work: Path, record, rnd: int) -> None:
    """Creates (1 and 64 clients) and gets (16 clients, 10,000 preloaded), each on a fresh
    server, as Engram and PostgreSQL get them."""
    for c in (1, 64):
        chroma.start()
        coll = chroma.collection("bench")
        record(f"create-{c}", "chroma", chroma.creates(coll, vec, c, secs, work, f"r{rnd}c{c}"))
        chroma.stop()
    chroma.start()
    coll = chroma.collection("bench")
    record("get-16", "chroma", chroma.gets(coll, vec, 10_000, 16, secs, work))
    chroma.stop()


def record_chroma_search(chroma: Chroma, data: Path, efs: list[int], secs: float, work: Path,
                         record, dims: int) -> None:
    """Search at each ef_search on a fresh server whose collection was created with it: Chroma
    takes no new ef_search on a loaded collection (a `PUT` of `new_configuration` changed
    neither rate nor recall), so each setting pays its own load."""
    vectors = np.fromfile(data / "vectors.f32", dtype="<f4").reshape(-1, dims)
    recall_q = np.fromfile(data / "recall_queries.f32", dtype="<f4").reshape(-1, dims)
    pool = np.fromfile(data / "queries.f32", dtype="<f4").reshape(-1, dims)
    truth = [set(np.argsort(-(vectors @ q))[:10]) for q in recall_q]
    for ef in efs:
        chroma.start()
        try:
            coll = chroma.collection("warm", ef)
            started = time.monotonic()
            chroma.load(coll, vectors)
            print(f"  chroma ef_search={ef}: {len(vectors)} vectors added in "
                  f"{time.monotonic() - started:.1f} s", flush=True)
            hits = sum(len(t & {int(i) for i in chroma.query_ids(coll, q)}) for q, t in zip(recall_q, truth))
            r = chroma.searches(coll, pool, 16, secs, work)
            r["recall"] = hits / (10 * len(recall_q))
            record("search-16", f"chroma ef_search={ef}", r)
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"chroma: {e}: {e.read().decode(errors='replace')}") from e
        finally:
            chroma.stop()
