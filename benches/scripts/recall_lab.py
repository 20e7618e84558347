"""Retrieval lab for a labelled dataset (../shared/data/locomo-dev layout): asks a real engramd
with the built-in embedder for each query's candidates once (semantic and text, 100 each, with
their raw similarity and BM25), then scores ways of fusing them offline — the current weighted
sum, min-max and z-score normalisation, reciprocal-rank fusion, lending score to adjacent turns —
by recall@5/10, MRR and nDCG@10. Parameters are chosen by cross-validation over the dataset's
namespaces (fit on all but one conversation, score on the held-out one), never on the
questions scored.

Usage: python benches/scripts/recall_lab.py DATASET_DIR [--candidates FILE]
(ENGRAM_BIN, ENGRAM_EMBEDDING_MODEL_DIR as for tests/python/engramd.py)."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "python"))

from engramd import Daemon, model_dir  # noqa: E402

POOL = 100


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def gather(dataset: Path) -> dict:
    """Ingests the dataset into a fresh daemon and returns every query's candidates."""
    memories = read_jsonl(dataset / "memories.jsonl")
    queries = read_jsonl(dataset / "queries.jsonl")
    d = Daemon({"embedding.provider": "local", "embedding.model_dir": model_dir()}).start()
    try:
        to_dataset: dict[str, str] = {}
        for i in range(0, len(memories), 100):
            chunk = memories[i:i + 100]
            items = [{"namespace": m["namespace"], "content": m["content"],
                      "metadata": m.get("metadata", {}), "created_at": m["created_at"]}
                     for m in chunk]
            r = d.api("POST", "/api/v1/memories/batch", json={"memories": items})
            assert r.status_code in (200, 201, 207), r.text
            for m, item in zip(chunk, r.json()["results"]):
                to_dataset[item["id"]] = m["id"]
        while d.api("GET", "/api/v1/health").json()["embedding"]["pending"]:
            time.sleep(0.1)
        out = []
        for q in queries:
            entry = {"id": q["id"], "namespace": q["namespace"], "query": q["query"],
                     "relevant": q["relevant"], "category": q.get("category")}
            for mode in ("semantic", "text"):
                r = d.api("POST", "/api/v1/search", json={
                    "query_text": q["query"], "namespace": q["namespace"], "search_type": mode,
                    "limit": POOL, "explain_score": True, "include_metadata": False})
                assert r.status_code == 200, r.text
                entry[mode] = [(to_dataset[x["memory"]["id"]], x["score"]) for x in r.json()["results"]]
            out.append(entry)
        return {"memories": memories, "queries": out}
    finally:
        d.cleanup()


def metrics(ranked: list[str], relevant: list[str]) -> tuple[float, float, float, float]:
    rel = set(relevant)
    r5 = len(rel & set(ranked[:5])) / len(rel)
    r10 = len(rel & set(ranked[:10])) / len(rel)
    mrr = next((1 / (i + 1) for i, x in enumerate(ranked) if x in rel), 0.0)
    dcg = sum(1 / math.log2(i + 2) for i, x in enumerate(ranked[:10]) if x in rel)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(rel), 10)))
    return r5, r10, mrr, dcg / ideal


def minmax(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    return {k: (v - lo) / (hi - lo) if hi > lo else 1.0 for k, v in scores.items()}


def zscore(scores: dict[str, float]) -> dict[str, float]:
    if len(scores) < 2:
        return {k: 0.0 for k in scores}
    mu = statistics.fmean(scores.values())
    sd = statistics.pstdev(scores.values()) or 1.0
    return {k: (v - mu) / sd for k, v in scores.items()}


def fuse(q: dict, method: str, p: dict, neighbours: dict[str, list[str]]) -> list[str]:
    sem = dict(q["semantic"])
    text = dict(q["text"])
    w = p.get("w", 0.5)
    if method == "semantic":
        fused = sem
    elif method == "text":
        fused = text
    elif method == "current":
        best = max(text.values(), default=0.0)
        fused = {k: 0.5 * max(sem.get(k, 0.0), 0.0) + 0.4 * (text.get(k, 0.0) / best if best else 0)
                 for k in sem.keys() | text.keys()}
    elif method == "weighted":
        best = max(text.values(), default=0.0)
        fused = {k: w * max(sem.get(k, 0.0), 0.0) + (1 - w) * (text.get(k, 0.0) / best if best else 0)
                 for k in sem.keys() | text.keys()}
    elif method in ("minmax", "zscore", "minmax_max"):
        norm = zscore if method == "zscore" else minmax
        ns = norm(sem)
        if method == "minmax_max":
            # Semantic min-max over the pool, text divided by the best BM25 (no floor).
            best = max(text.values(), default=0.0)
            nt = {k: v / best for k, v in text.items()} if best else {}
        else:
            nt = norm(text)
        floor_s = min(ns.values(), default=0.0)
        floor_t = min(nt.values(), default=0.0)
        fused = {k: w * ns.get(k, floor_s) + (1 - w) * nt.get(k, floor_t) for k in sem.keys() | text.keys()}
    elif method == "rrf":
        k0 = p.get("k", 60)
        fused = {}
        for lst, wt in ((q["semantic"], w), (q["text"], 1 - w)):
            for rank, (k, _) in enumerate(lst):
                fused[k] = fused.get(k, 0.0) + wt / (k0 + rank + 1)
    else:
        raise ValueError(method)
    beta = p.get("beta", 0.0)
    if beta:
        # Rescaled to 0..1 first, unless "raw": the fused scores lent as they are.
        base = dict(fused) if p.get("raw") else minmax(fused)
        lent = {}
        for k in list(base):
            for n in neighbours.get(k, []):
                if p.get("lend") == "sum":
                    lent[n] = lent.get(n, 0.0) + base[k]
                else:
                    lent[n] = max(lent.get(n, 0.0), base[k])
        fused = {k: base.get(k, 0.0) + beta * lent.get(k, 0.0) for k in base.keys() | lent.keys()}
    return [k for k, _ in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))]


def neighbour_map(memories: list[dict], span: int) -> dict[str, list[str]]:
    """Each memory's turns within `span` in its conversation and session (same day)."""
    out: dict[str, list[str]] = {}
    by_ns: dict[str, list[dict]] = {}
    for m in memories:
        by_ns.setdefault(m["namespace"], []).append(m)
    for ms in by_ns.values():
        ms.sort(key=lambda m: m["created_at"])
        for i, m in enumerate(ms):
            out[m["id"]] = [ms[j]["id"] for j in range(max(0, i - span), min(len(ms), i + span + 1))
                            if j != i and ms[j].get("metadata", {}).get("session") == m.get("metadata", {}).get("session")]
    return out


def score(queries: list[dict], method: str, p: dict, neighbours) -> tuple[float, ...]:
    rows = [metrics(fuse(q, method, p, neighbours), q["relevant"]) for q in queries]
    return tuple(statistics.fmean(r[i] for r in rows) for i in range(4))


GRIDS = {
    "semantic": [{}],
    "text": [{}],
    "current": [{}],
    "weighted": [{"w": w / 10} for w in range(1, 10)],
    "minmax": [{"w": w / 10} for w in range(1, 10)],
    "zscore": [{"w": w / 10} for w in range(1, 10)],
    "rrf": [{"w": w / 10, "k": k} for w in range(2, 9) for k in (5, 10, 20, 60)],
    "minmax_max": [{"w": w / 10} for w in range(1, 10)],
    "minmax raw": [{"w": w / 10, "raw": True} for w in range(1, 10)],
    "minmax_max raw": [{"w": w / 10, "raw": True} for w in range(1, 10)],
    "minmax_max raw sum": [{"w": w / 10, "raw": True, "lend": "sum"} for w in range(1, 10)],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--candidates", type=Path, help="cache of the gathered candidates")
    ap.add_argument("--methods", help="comma-separated subset of the methods")
    args = ap.parse_args()
    if args.candidates and args.candidates.exists():
        data = json.loads(args.candidates.read_text())
    else:
        data = gather(args.dataset)
        if args.candidates:
            args.candidates.write_text(json.dumps(data))
    queries = data["queries"]
    namespaces = sorted({q["namespace"] for q in queries})
    print(f"{len(data['memories'])} memories, {len(queries)} queries, folds: {namespaces}")
    print("| method | held-out params | recall@5 | recall@10 | MRR | nDCG@10 |")
    print("|---|---|---|---|---|---|")
    chosen_methods = args.methods.split(",") if args.methods else list(GRIDS)
    for label0 in chosen_methods:
        grid = GRIDS[label0]
        method = label0.split(" ")[0]
        for span, betas in ((0, [0.0]), (1, [0.1, 0.2, 0.3, 0.5, 0.7, 1.0]), (2, [0.1, 0.2, 0.3])):
            if span and method in ("semantic", "text", "current"):
                continue
            neighbours = neighbour_map(data["memories"], span) if span else {}
            params = [dict(g, beta=b) for g, b in itertools.product(grid, betas)]
            held = []
            chosen = []
            for ns in namespaces:
                fit = [q for q in queries if q["namespace"] != ns]
                test = [q for q in queries if q["namespace"] == ns]
                best = max(params, key=lambda p: score(fit, method, p, neighbours)[1])
                chosen.append(best)
                held.append((len(test), score(test, method, best, neighbours)))
            n = sum(c for c, _ in held)
            agg = [sum(c * s[i] for c, s in held) / n for i in range(4)]
            label = label0 + (f", neighbours ±{span}" if span else "")
            print(f"| {label} | {'; '.join(json.dumps(c) for c in chosen)} | "
                  + " | ".join(f"{x:.3f}" for x in agg) + " |")


if __name__ == "__main__":
    main()
