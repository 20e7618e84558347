"""What the client costs over raw httpx, in one run: alternating blocks of GET by id and of
text recall, each through a bare ``httpx.Client`` and through ``engram.Engram`` (which parses
into dataclasses), same connection settings, same daemon. Prints the p50 of each and the
difference.

Usage: python bench.py URL [--calls N] [--block N]
"""

import argparse
import json
import statistics
import time

import httpx

import engram


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--block", type=int, default=200)
    args = ap.parse_args()

    db = engram.Engram(args.url)
    raw = httpx.Client(base_url=args.url, headers={"accept": "application/json"})
    space = f"pybench-{time.time_ns()}"
    ids = [m.id for m in db.batch([{"content": f"bench memory {i} about lighthouses", "namespace": space} for i in range(500)])]

    def raw_get(i):
        r = raw.get(f"/api/v1/memories/{ids[i % len(ids)]}")
        r.raise_for_status()
        return r.json()

    def client_get(i):
        return db.get(ids[i % len(ids)])

    def raw_recall(i):
        r = raw.post("/api/v1/search", json={"namespace": space, "query_text": f"memory {i % 500}", "search_type": "text", "limit": 5})
        r.raise_for_status()
        return r.json()

    def client_recall(i):
        return db.recall(f"memory {i % 500}", namespace=space, mode="text", limit=5)

    result = {}
    for name, a, b in [("get", raw_get, client_get), ("recall", raw_recall, client_recall)]:
        ta, tb = [], []
        for start in range(0, args.calls, args.block):
            for times, f in ((ta, a), (tb, b)):
                for i in range(start, start + args.block):
                    t = time.perf_counter()
                    f(i)
                    times.append((time.perf_counter() - t) * 1000)
        pa, pb = statistics.median(ta), statistics.median(tb)
        result[name] = {"httpx_p50_ms": round(pa, 4), "client_p50_ms": round(pb, 4), "added_ms": round(pb - pa, 4), "calls_each": len(ta)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
