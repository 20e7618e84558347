"""Plots a soak's samples (scripts/soak.sh): memory, open files, latency, requests."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> None:
    with open(src) as f:
        header = f.readline().lstrip("# ").strip()
        rows = list(csv.DictReader(f))
    col = lambda name: [float(r[name]) for r in rows]  # noqa: E731
    minutes = [s / 60 for s in col("seconds")]
    window = col("seconds")[1] - col("seconds")[0] if len(rows) > 1 else 1.0
    fig, ax = plt.subplots(2, 2, figsize=(12, 7), sharex=True)
    ax[0][0].plot(minutes, col("rss_mib"), label="RSS")
    ax[0][0].plot(minutes, col("anon_mib"), label="anonymous (heap)")
    if "memtables_mib" in rows[0]:
        ax[0][0].plot(minutes, col("memtables_mib"), label="RocksDB memtables")
        ax[0][0].plot(minutes, col("block_cache_mib"), label="RocksDB block cache")
    ax[0][0].set_ylabel("MiB")
    ax[0][0].set_ylim(bottom=0)
    ax[0][0].legend()
    ax[0][0].set_title("engramd memory")
    ax[0][1].plot(minutes, col("open_files"), label="open files")
    ax[0][1].plot(minutes, col("threads"), label="threads")
    if "memories" in rows[0]:
        ax[0][1].plot(minutes, [m / 100 for m in col("memories")], label="memories stored / 100")
    ax[0][1].set_ylim(bottom=0)
    ax[0][1].legend()
    ax[0][1].set_title("descriptors and threads")
    for name, label in [("p50_ms", "p50 all"), ("p99_ms", "p99 all"), ("write_p99_ms", "p99 writes"),
                        ("read_p99_ms", "p99 reads"), ("search_p99_ms", "p99 searches")]:
        ax[1][0].plot(minutes, col(name), label=label)
    ax[1][0].set_ylabel("ms")
    ax[1][0].set_ylim(bottom=0)
    ax[1][0].legend(fontsize="small")
    ax[1][0].set_title("latency per window")
    ax[1][1].plot(minutes, [r / window for r in col("requests")], label="requests/s")
    ax[1][1].plot(minutes, [e / window for e in col("errors")], label="errors/s")
    ax[1][1].set_ylim(bottom=0)
    ax[1][1].legend()
    ax[1][1].set_title("load")
    for a in ax[1]:
        a.set_xlabel("minutes")
    fig.suptitle(f"Engram soak: {header}")
    fig.tight_layout()
    fig.savefig(dst, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
