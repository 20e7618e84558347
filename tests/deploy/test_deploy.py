"""The ops kit of deploy/ and the runbook, checked against the real tools and a live engramd:
promtool (Debian's prometheus package) checks the scrape config and the alert rules and runs
their unit tests; every metric the alerts and the Grafana dashboard use must exist in a live
/metrics; systemd-analyze verifies the unit; the example configuration starts a daemon; and
every shell block of docs/runbook.md marked runnable runs against a live daemon, with its paths
rewritten to temporary directories — including the rollback, which must bring back the state of
the moment the deploy started."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from engramd import Daemon, model_dir, release_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ADMIN_KEY = "runbook-admin-key-1"


def call(d: Daemon, method: str, path: str, **kw) -> httpx.Response:
    return d.api(method, path, key=ADMIN_KEY, **kw)


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="engram-deploy-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run(cmd: list[str], cwd: Path = REPO) -> str:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def test_prometheus_config_and_alert_rules_check_and_fire():
    run(["promtool", "check", "config", "deploy/prometheus.yml"])
    out = run(["promtool", "check", "rules", "deploy/alerts.yml"])
    assert "SUCCESS" in out
    assert "SUCCESS" in run(["promtool", "test", "rules", "alerts_test.yml"], cwd=DEPLOY)


def test_every_metric_in_alerts_and_dashboard_exists(workdir):
    d = Daemon({"embedding.dimensions": "4", "auth.api_keys": ADMIN_KEY}, data=workdir / "data").start()
    try:
        # Some of everything, so labelled series exist.
        assert call(d, "POST", "/api/v1/memories", json={"content": "a fact", "embedding": [1, 0, 0, 0]}).status_code == 201
        assert call(d, "POST", "/api/v1/search", json={"query_text": "fact"}).status_code == 200
        assert call(d, "POST", "/api/v1/admin/snapshots").status_code == 201
        exposed = set(re.findall(r"^# TYPE (\S+)", httpx.get(f"{d.url}/metrics").text, re.M))
    finally:
        d.stop()
    used = set()
    for text in [(DEPLOY / "alerts.yml").read_text(), (DEPLOY / "grafana/engram-overview.json").read_text()]:
        used |= {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\bengram_[a-z_]+", text)}
    assert used, "no metric names found"
    missing = sorted(used - exposed)
    assert missing == [], f"used but not exported: {missing}"
    dash = json.loads((DEPLOY / "grafana/engram-overview.json").read_text())
    assert dash["title"] == "Engram Overview"
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ["request rate", "latency", "errors", "tier", "fsync", "embedding", "search latency", "migrations", "compaction", "disk"]:
        assert topic in titles, topic


def test_systemd_unit_verifies(workdir):
    unit = (DEPLOY / "engram.service").read_text()
    # systemd-analyze checks that ExecStart's binary exists: point it at the one just built.
    local = unit.replace("/usr/local/bin/engramd", str(release_dir() / "engramd"))
    (workdir / "engram.service").write_text(local)
    out = subprocess.run(["systemd-analyze", "verify", str(workdir / "engram.service")], capture_output=True, text=True)
    problems = [l for l in (out.stdout + out.stderr).splitlines() if "engram.service" in l]
    assert out.returncode == 0 and problems == [], out.stdout + out.stderr
    for line in ["NoNewPrivileges=true", "ProtectSystem=strict", "ReadWritePaths=/var/lib/engram", "Restart=on-failure", "User=engram"]:
        assert line in unit, line
    stop_s = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))
    shutdown_s = int(re.search(r'^shutdown_timeout = "(\d+)s"', (DEPLOY / "engram.toml").read_text(), re.M).group(1))
    assert stop_s > shutdown_s
    assert int(re.search(r"^LimitNOFILE=(\d+)$", unit, re.M).group(1)) >= 65536


def test_example_configuration_starts_a_daemon(workdir):
    d = Daemon({"embedding.model_dir": model_dir()}, data=workdir / "data", args=["--config", str(DEPLOY / "engram.toml")]).start()
    try:
        h = httpx.get(f"{d.url}/api/v1/health").json()
        assert h["embedding"]["model"] == "all-MiniLM-L6-v2", h
        assert httpx.get(f"{d.url}/console").status_code == 200
    finally:
        d.stop()


def runnable_blocks() -> list[tuple[bool, str]]:
    text = (REPO / "docs/runbook.md").read_text()
    return [(bool(m.group(1)), m.group(2)) for m in re.finditer(r"```sh runnable( stopped)?\n(.*?)```", text, re.S)]


def test_runbook_runs(workdir):
    blocks = runnable_blocks()
    assert len(blocks) >= 5 and any(stopped for stopped, _ in blocks)
    data = workdir / "var-lib-engram"
    d = Daemon({"embedding.dimensions": "4", "backup.snapshots_kept": "3", "auth.api_keys": ADMIN_KEY}, data=data).start()
    before = call(d, "POST", "/api/v1/memories", json={"content": "written before the deploy", "embedding": [0, 1, 0, 0]})
    assert before.status_code == 201
    state = workdir / "state.sh"
    state.write_text("")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ENGRAM_")},
           "ENGRAM_API_KEY": ADMIN_KEY, "PATH": f"{release_dir()}:{os.environ['PATH']}"}
    after_id = None
    try:
        for stopped, block in blocks:
            script = (block.replace("/var/lib/engram", str(data)).replace("/backup/engram", str(workdir / "backup"))
                      .replace("http://127.0.0.1:3333", d.url))
            if stopped:
                d.stop()
            r = subprocess.run(["bash", "-c", f"set -euo pipefail\nsource {state}\n{script}\nexport -p > {state}"],
                               capture_output=True, text=True, env=env, cwd=workdir)
            assert r.returncode == 0, f"runbook block failed:\n{block}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
            if stopped:
                d.start()
            if "DEPLOY_STARTED=" in block:
                # The deploy goes wrong: a write after its start must not survive the rollback.
                r = call(d, "POST", "/api/v1/memories", json={"content": "written after the deploy started", "embedding": [0, 0, 1, 0]})
                assert r.status_code == 201
                after_id = r.json()["id"]
        assert after_id, "the runbook's deploy block sets DEPLOY_STARTED"
        assert call(d, "GET", f"/api/v1/memories/{before.json()['id']}").status_code == 200
        assert call(d, "GET", f"/api/v1/memories/{after_id}").status_code == 404
        assert (workdir / "var-lib-engram-failed-deploy").is_dir()
    finally:
        d.stop()
