"""What the console's overview page costs an idle daemon: engramd's CPU time (utime + stime
from /proc) over a window with nobody watching, then over the same window with the overview
open in headless Chromium (polling /api/v1/health and /metrics every 2 s). Prints both as a
share of one core. Usage: python benches/console/idle_cpu.py [SECONDS]  (ENGRAM_BIN: engramd)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "console"))
from engramd import Daemon  # noqa: E402
from test_console import make_browser  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pid: int, seconds: float) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    d = Daemon({"embedding.dimensions": "8"}).start()
    try:
        time.sleep(5)  # past start-up work
        idle = measure(d.proc.pid, seconds)
        b = make_browser()
        try:
            b.get(f"{d.url}/console#/overview")
            time.sleep(5)
            watched = measure(d.proc.pid, seconds)
        finally:
            b.quit()
        print(f"engramd CPU over {seconds:.0f} s: idle {100 * idle:.3f}% of a core, "
              f"overview open {100 * watched:.3f}%, added {100 * (watched - idle):.3f}%")
    finally:
        d.cleanup()


if __name__ == "__main__":
    main()
