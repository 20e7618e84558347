"""Starts real engramd daemons for the client's tests (no mocks: every call crosses HTTP to the
daemon and its storage). The binary is ENGRAM_BIN, or engramd in the cargo target directory."""

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
import pytest

ADMIN_KEY = "py-admin-key-1"
TEAM_KEY = "py-team-key-1"


def engramd_path() -> str:
    if os.environ.get("ENGRAM_BIN"):
        return os.environ["ENGRAM_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/engram/target"))
    return str(Path(target) / "release" / "engramd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One engramd on a free port with its own data directory; restartable on the same port."""

    def __init__(self, settings: dict[str, str], env: Optional[dict[str, str]] = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="engram-py-"))
        self.data = self.dir / "data"
        self.settings = settings
        self.env = env or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, env: Optional[dict[str, str]] = None) -> "Daemon":
        args = [engramd_path(), "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data)]
        for k, v in self.settings.items():
            args += ["--set", f"{k}={v}"]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")}
        environ.update(self.env if env is None else env)
        log = open(self.dir / "engramd.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, env=environ)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engramd exited: {(self.dir / 'engramd.log').read_text()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code in (200, 503):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise RuntimeError("engramd did not answer within 60 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def daemon():
    d = Daemon({"auth.api_keys": f"{ADMIN_KEY},{TEAM_KEY}:team-a", "embedding.dimensions": "8"}).start()
    yield d
    d.cleanup()


@pytest.fixture
def fresh_daemon():
    """A daemon of the test's own, for tests that stop, break or restart it."""
    made = []

    def make(settings: Optional[dict[str, str]] = None, env: Optional[dict[str, str]] = None) -> Daemon:
        d = Daemon({"embedding.dimensions": "8", **(settings or {})}, env)
        made.append(d)
        return d.start()

    yield make
    for d in made:
        d.cleanup()
