"""Starts real engramd daemons for the Python test suites (tests/console, tests/deploy): a free
port, a data directory, settings as --set flags (API keys through the environment, never the
command line), graceful stop. The binary is ENGRAM_BIN, or engramd in the cargo target
directory."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import httpx


def release_dir() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/engram/target"))
    return Path(target) / "release"


def engramd_path() -> str:
    return os.environ.get("ENGRAM_BIN") or str(release_dir() / "engramd")


def model_dir() -> str:
    return os.environ.get(
        "ENGRAM_EMBEDDING_MODEL_DIR", os.path.expanduser("~/.cache/engram/models/all-MiniLM-L6-v2")
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One engramd; `data` defaults to a fresh temporary directory (removed by `cleanup`).
    Restartable on the same port and directory."""

    def __init__(self, settings: Optional[dict[str, str]] = None, data: Optional[Path] = None,
                 args: Optional[list[str]] = None) -> None:
        self.owned = data is None
        self.dir = Path(tempfile.mkdtemp(prefix="engram-py-")) if data is None else data.parent
        self.data = self.dir / "data" if data is None else data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args or [])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}
        for k, v in (settings or {}).items():
            if k == "auth.api_keys":
                self.env["ENGRAM_AUTH_API_KEYS"] = v
            else:
                self.args += ["--set", f"{k}={v}"]
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Daemon":
        log_path = self.dir / f"engramd-{self.port}.log"
        with open(log_path, "ab") as log:
            cmd = [engramd_path(), "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data), *self.args]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engramd exited: {log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("engramd did not answer within 60 s")

    def api(self, method: str, path: str, key: Optional[str] = None,
            headers: Optional[dict] = None, **kw) -> httpx.Response:
        headers = {**(headers or {}), **({"authorization": f"Bearer {key}"} if key else {})}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kw)

    def stop(self) -> None:
        """SIGTERM; the daemon must exit cleanly."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(30) == 0, "engramd did not exit cleanly"
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self.owned:
            shutil.rmtree(self.dir, ignore_errors=True)
