"""The web console in a real browser: headless Chromium (Debian's chromium and chromium-driver)
driven by selenium against a live engramd with the built-in embedding model. Every page must
load with no console errors; a memory created through the API shows in the browser; a search
from the playground shows the expected memory first with its score bars; editing importance in
the UI changes it in the API; delete and purge remove it; an embedding migration is started,
activated, deactivated and dropped from the models page, and the store's own vectors dropped
after a cut-over; with keys configured the key prompt works and a wrong key is refused. It also checks the headers, the first load's size, a narrow
window and `console.enabled = false`.

ENGRAM_CONSOLE_SCREENSHOTS=DIR writes a screenshot of each page there (the README's come from
`ENGRAM_CONSOLE_SCREENSHOTS=docs/images`), after half a minute of light traffic on the overview so
its charts have lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from engramd import Daemon, model_dir, release_dir  # noqa: E402

ADMIN_KEY = "console-admin-key-1"
NAMESPACE = "console-test"
WAIT_S = 20


@pytest.fixture(scope="module")
def daemon():
    d = Daemon({"embedding.provider": "local", "embedding.model_dir": model_dir()}).start()
    yield d
    d.cleanup()


def make_browser(width: int = 1280, height: int = 800) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--disable-extensions", "--no-first-run"]:
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=options, service=service)


@pytest.fixture(scope="module")
def browser():
    b = make_browser()
    yield b
    b.quit()


def errors_in_console(b: webdriver.Chrome, allowed: tuple[str, ...] = ()) -> list[str]:
    """SEVERE entries of the browser's console since the last call, minus the expected ones."""
    return [e["message"] for e in b.get_log("browser")
            if e["level"] == "SEVERE" and not any(a in e["message"] for a in allowed)]


def wait_for(b: webdriver.Chrome, css: str, text: Optional[str] = None):
    if text is None:
        return WebDriverWait(b, WAIT_S).until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))
    WebDriverWait(b, WAIT_S).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return b.find_element(By.CSS_SELECTOR, css)


def screenshot(b: webdriver.Chrome, name: str) -> None:
    out = os.environ.get("ENGRAM_CONSOLE_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        b.execute_script("document.getElementById('toasts').replaceChildren()")
        # The whole page, not just the window: stretch the window to the page's height.
        height = b.execute_script("return document.documentElement.scrollHeight")
        width = b.get_window_size()["width"]
        b.set_window_size(width, max(800, height + 120))
        b.save_screenshot(str(Path(out) / f"console-{name}.png"))
        b.set_window_size(width, 800)


def go(b: webdriver.Chrome, d: Daemon, page: str) -> None:
    b.get(f"{d.url}/console#/{page}")


@pytest.fixture(scope="module")
def memories(daemon):
    contents = [
        "Caroline adopted a grey cat named Oscar from the shelter in March",
        "The quarterly budget review moved to Thursday at 10am",
        "Melanie painted a lake at sunrise and gave it to her sister",
    ]
    ids = []
    for i, c in enumerate(contents):
        r = daemon.api("POST", "/api/v1/memories?wait_for_embedding=true",
                       json={"content": c, "namespace": NAMESPACE, "importance_score": 0.3 + 0.2 * i, "tags": ["console"]})
        assert r.status_code == 201, r.text
        assert r.json()["embedding_status"] == "ready", r.text
        ids.append(r.json()["id"])
    return dict(zip(contents, ids))


def test_headers_and_first_load(daemon):
    r = daemon.api("GET", "/console")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-cache"
    again = daemon.api("GET", "/console/app.js", headers={"if-none-match": daemon.api("GET", "/console/app.js").headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert daemon.api("GET", "/console/nope.js").json()["error"]["code"] == "ROUTE_NOT_FOUND"


def test_overview_loads_with_live_charts(daemon, browser, memories):
    started = time.monotonic()
    go(browser, daemon, "overview")
    wait_for(browser, "main h1", "Overview")
    wait_for(browser, ".card .pill.good", "healthy")
    shown_s = time.monotonic() - started
    # Two samples 2 s apart make the first chart point.
    WebDriverWait(browser, WAIT_S).until(lambda b: b.find_elements(By.CSS_SELECTOR, "svg.chart path.line"))
    text = browser.find_element(By.TAG_NAME, "main").text.lower()
    assert "memories" in text and "wal durable lsn" in text and "disk free" in text, text
    assert "working" in text
    transferred = browser.execute_script(
        "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
        ".filter(e => e.name.includes('/console')).reduce((a, e) => a + e.transferSize, 0)")
    interactive_ms = browser.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; return n.domInteractive")
    print(f"console first load: {transferred} bytes transferred, DOM interactive at {interactive_ms:.0f} ms, overview shown after {shown_s:.2f} s")
    assert 0 < transferred <= 200_000, transferred
    assert errors_in_console(browser) == []
    if os.environ.get("ENGRAM_CONSOLE_SCREENSHOTS"):
        # Light traffic for the charts: reads and searches, a few errors.
        deadline = time.monotonic() + 30
        ids = list(memories.values())
        with httpx.Client(base_url=daemon.url) as c:
            while time.monotonic() < deadline:
                for i in ids:
                    c.get(f"/api/v1/memories/{i}")
                c.post("/api/v1/search", json={"namespace": NAMESPACE, "query_text": "budget", "search_type": "text"})
                c.get("/api/v1/memories/not-an-id")
                time.sleep(0.05)
        time.sleep(2.5)
    screenshot(browser, "overview")


def test_memories_list_detail_edit_delete(daemon, browser, memories):
    content, mid = next(iter(memories.items()))
    go(browser, daemon, f"memories?namespace={NAMESPACE}")
    wait_for(browser, "#memory-table", content)
    rows = browser.find_elements(By.CSS_SELECTOR, "#memory-table tbody tr")
    assert len(rows) == len(memories)
    browser.find_element(By.CSS_SELECTOR, f"tr[data-id='{mid}']").click()
    wait_for(browser, "#memory-detail", mid)
    browser.find_element(By.ID, "show-vector").click()
    wait_for(browser, "#memory-detail", "384 dimensions, norm 1.0000")
    importance = wait_for(browser, "#edit-importance")
    importance.clear()
    importance.send_keys("0.95")
    browser.find_element(By.ID, "save-memory").click()
    wait_for(browser, "#toasts", "Saved: version 2")
    r = daemon.api("GET", f"/api/v1/memories/{mid}")
    assert r.json()["importance_score"] == 0.95 and r.json()["version"] == 2, r.text
    screenshot(browser, "memories")

    # Delete, confirmed in the dialog: the API shows it deleted.
    browser.find_element(By.ID, "delete-memory").click()
    wait_for(browser, "#confirm-dialog", "Delete this memory?")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_for(browser, "#toasts", "Deleted.")
    assert daemon.api("GET", f"/api/v1/memories/{mid}").json()["status"] == "deleted"
    WebDriverWait(browser, WAIT_S).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#memory-table tbody tr")) == len(memories) - 1)

    # Purge needs the word typed; the memory is then gone from the API.
    go(browser, daemon, f"memories?namespace={NAMESPACE}&status=deleted&id={mid}")
    wait_for(browser, "#memory-detail", mid)
    browser.find_element(By.ID, "purge-memory").click()
    ok = wait_for(browser, "#confirm-ok")
    assert not ok.is_enabled()
    browser.find_element(By.ID, "confirm-typed").send_keys("purge")
    assert ok.is_enabled()
    ok.click()
    wait_for(browser, "#toasts", "Purged.")
    assert daemon.api("GET", f"/api/v1/memories/{mid}").status_code == 404
    assert errors_in_console(browser) == []


def test_search_playground_ranks_and_explains(daemon, browser, memories):
    content = "The quarterly budget review moved to Thursday at 10am"
    go(browser, daemon, f"search?q=when+is+the+budget+meeting&namespace={NAMESPACE}")
    wait_for(browser, "#search-results .result")
    first = browser.find_elements(By.CSS_SELECTOR, "#search-results .result")[0]
    assert first.get_attribute("data-id") == memories[content]
    assert content in first.text
    bars = first.find_elements(By.CSS_SELECTOR, ".stack span")
    kinds = {b.get_attribute("class") for b in bars}
    assert {"c-semantic", "c-text"} <= kinds, kinds
    # The weights are sent: text alone ranks by BM25.
    for name, value in [("semantic", 0), ("text", 1), ("importance", 0), ("recency", 0), ("context", 0)]:
        browser.execute_script("const s = document.getElementById(arguments[0]); s.value = arguments[1]; s.dispatchEvent(new Event('input'));", f"weight-{name}", value)
    browser.find_element(By.ID, "search-go").click()
    WebDriverWait(browser, WAIT_S).until(lambda b: {s.get_attribute("class") for s in b.find_elements(By.CSS_SELECTOR, "#search-results .result .stack span")} == {"c-text"})
    assert errors_in_console(browser) == []
    screenshot(browser, "search")


def test_tiers_curve_plan_and_backups(daemon, browser, memories):
    go(browser, daemon, "tiers")
    wait_for(browser, "#tier-table", "working")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart path.line"), "retention curve"
    browser.find_element(By.ID, "plan-button").click()
    wait_for(browser, "#plan", "nothing")
    screenshot(browser, "tiers")
    assert errors_in_console(browser) == []

    go(browser, daemon, "backups")
    wait_for(browser, "main h1", "Backups")
    wait_for(browser, "main", "No snapshots yet.")
    browser.find_element(By.ID, "take-snapshot").click()
    wait_for(browser, "#snapshot-table")
    snaps = daemon.api("GET", "/api/v1/admin/snapshots").json()
    assert len(snaps["snapshots"]) == 1
    wait_for(browser, "#snapshot-table", snaps["snapshots"][0]["id"])
    wait_for(browser, "#pitr-window", "Restorable from")
    assert errors_in_console(browser) == []
    screenshot(browser, "backups")


def test_models_page_runs_a_migration_to_its_cut_over(daemon, browser, memories):
    """An embedding migration started from the form, watched until ready, activated (the
    store's searches then rank its space), deactivated and dropped with the word typed."""
    base = "/api/v1/admin/embedding/migrations"
    go(browser, daemon, "models")
    wait_for(browser, "main h1", "Embedding models")
    wait_for(browser, "#search-space", "the store's own vectors")
    wait_for(browser, "#migrations", "No embedding migrations.")
    # The URL is asked for only where the provider has one; a refusal names its field.
    provider = Select(browser.find_element(By.ID, "migration-provider"))
    assert not browser.find_element(By.ID, "migration-url").is_displayed()
    provider.select_by_value("openai")
    assert browser.find_element(By.ID, "migration-url").is_displayed()
    assert browser.find_element(By.ID, "migration-key-env").is_displayed()
    provider.select_by_value("local")
    dims = browser.find_element(By.ID, "migration-dimensions")
    dims.clear()
    dims.send_keys("768")
    browser.find_element(By.ID, "start-migration").click()
    wait_for(browser, "#toasts", "Starting failed")
    assert daemon.api("GET", base).json()["migrations"] == []
    dims.clear()
    dims.send_keys("384")
    browser.find_element(By.ID, "start-migration").click()
    wait_for(browser, "#toasts", "started (local all-MiniLM-L6-v2, 384 dimensions)")
    wait_for(browser, "#migration-table .state", "ready")
    row = browser.find_element(By.CSS_SELECTOR, "#migration-table tbody tr")
    mid = row.get_attribute("data-id")
    assert daemon.api("GET", f"{base}/{mid}").json()["state"] == "ready"
    row.find_element(By.CSS_SELECTOR, "[data-action=activate]").click()
    wait_for(browser, "#search-space", f"migration {mid}")
    assert daemon.api("GET", f"{base}/{mid}").json()["active"] is True
    r = daemon.api("POST", "/api/v1/search", json={"namespace": NAMESPACE, "query_text": "a painting of a lake at dawn",
                                                   "search_type": "semantic", "limit": 1})
    assert r.json()["results"][0]["memory"]["content"].startswith("Melanie painted"), r.text
    screenshot(browser, "models")
    wait_for(browser, "[data-action=deactivate]").click()
    wait_for(browser, "#search-space", "the store's own vectors")
    wait_for(browser, "[data-action=drop]").click()
    wait_for(browser, "#confirm-dialog", f"Drop migration {mid}?")
    browser.find_element(By.ID, "confirm-typed").send_keys("drop")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_for(browser, "#toasts", f"Migration {mid} dropped.")
    wait_for(browser, "#migrations", "No embedding migrations.")
    assert daemon.api("GET", base).json()["migrations"] == []
    assert errors_in_console(browser, allowed=("400",)) == []


def test_narrow_window_has_no_sideways_scroll(daemon, memories):
    b = make_browser(420, 800)
    try:
        for page in ["overview", f"memories?namespace={NAMESPACE}", "search", "tiers", "backups", "models"]:
            go(b, daemon, page)
            wait_for(b, "main h1")
            time.sleep(0.5)  # let the page's first request land before measuring its width
            overflow = b.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{page}: {overflow} px wider than the window"
        assert errors_in_console(b) == []
        go(b, daemon, f"memories?namespace={NAMESPACE}")
        wait_for(b, "#memory-table")
        screenshot(b, "narrow")
    finally:
        b.quit()


def test_key_prompt_refuses_a_wrong_key_and_takes_the_right_one():
    d = Daemon({"auth.api_keys": ADMIN_KEY, "embedding.dimensions": "8"}).start()
    b = make_browser()
    try:
        assert d.api("POST", "/api/v1/memories", key=ADMIN_KEY, json={"content": "behind a key"}).status_code == 201
        go(b, d, "memories")
        wait_for(b, "#key-dialog", "needs an API key")
        b.find_element(By.ID, "key-input").send_keys("not-the-key")
        b.find_element(By.ID, "key-ok").click()
        wait_for(b, "#key-dialog", "The key was refused")
        b.find_element(By.ID, "key-input").send_keys(ADMIN_KEY)
        b.find_element(By.ID, "key-ok").click()
        wait_for(b, "#memory-table", "behind a key")
        assert b.execute_script("return sessionStorage.getItem('engram.apiKey')") == ADMIN_KEY
        # The 401s that made the prompt appear are the only errors.
        assert errors_in_console(b, allowed=("401",)) == []
    finally:
        b.quit()
        d.cleanup()


def test_a_read_key_sees_but_cannot_change(tmp_path):
    """The console holds no privilege: a read-only key limited to one namespace lists and reads
    there, and the API refuses its delete, which the page shows; other namespaces stay hidden."""
    made = subprocess.run([str(release_dir() / "engramctl"), "key", "new", "--name", "viewer", "--role", "read",
                           "--namespace", NAMESPACE], capture_output=True, text=True, check=True).stdout
    read_key = next(line.strip() for line in made.splitlines() if line.strip().startswith("egk_"))
    entry = made[made.index("[[auth.keys]]"):]
    config = tmp_path / "engram.toml"
    config.write_text(f'[auth]\napi_keys = ["{ADMIN_KEY}"]\n\n{entry}')
    d = Daemon({"embedding.dimensions": "8"}, args=["--config", str(config)]).start()
    b = make_browser()
    try:
        mine = d.api("POST", "/api/v1/memories", key=ADMIN_KEY, json={"content": "visible to the viewer", "namespace": NAMESPACE}).json()["id"]
        d.api("POST", "/api/v1/memories", key=ADMIN_KEY, json={"content": "another team's memory", "namespace": "elsewhere"})
        go(b, d, f"memories?namespace={NAMESPACE}&id={mine}")
        wait_for(b, "#key-dialog", "needs an API key")
        b.find_element(By.ID, "key-input").send_keys(read_key)
        b.find_element(By.ID, "key-ok").click()
        wait_for(b, "#memory-table", "visible to the viewer")
        wait_for(b, "#memory-detail", mine)
        b.find_element(By.ID, "delete-memory").click()
        b.find_element(By.ID, "confirm-ok").click()
        wait_for(b, "#memory-detail .error", "FORBIDDEN")
        assert d.api("GET", f"/api/v1/memories/{mine}", key=ADMIN_KEY).json()["status"] == "active"
        go(b, d, "memories?namespace=elsewhere")
        wait_for(b, "main .error", "FORBIDDEN")
        assert "another team" not in b.find_element(By.TAG_NAME, "main").text
        go(b, d, "backups")
        wait_for(b, "main .error", "admin")
        assert errors_in_console(b, allowed=("401", "403")) == []
    finally:
        b.quit()
        d.cleanup()


def test_models_page_drops_the_old_vectors_after_a_cut_over(daemon, browser, memories):
    """Last on the shared daemon, since it cannot be undone: a migration activated through the
    API, then the store's own vectors dropped from the models page with the word typed; the
    active migration then offers no way back."""
    base = "/api/v1/admin/embedding/migrations"
    mid = daemon.api("POST", base, json={"provider": "local", "dimensions": 384}).json()["id"]
    deadline = time.time() + 120
    while daemon.api("GET", f"{base}/{mid}").json()["state"] != "ready":
        assert time.time() < deadline, "the migration did not become ready"
        time.sleep(0.2)
    assert daemon.api("POST", f"{base}/{mid}/activate", json={}).status_code == 200
    go(browser, daemon, "models")
    wait_for(browser, "#search-space", f"migration {mid}")
    wait_for(browser, "#own-vectors", "kept until you drop them")
    assert browser.find_elements(By.CSS_SELECTOR, "[data-action=deactivate]")
    wait_for(browser, "[data-action=drop-own]").click()
    wait_for(browser, "#confirm-dialog", "Drop the store's own vectors?")
    browser.find_element(By.ID, "confirm-typed").send_keys("drop")
    browser.find_element(By.ID, "confirm-ok").click()
    wait_for(browser, "#toasts", "The store's own vectors were dropped.")
    wait_for(browser, "#own-vectors", "this migration holds all of them")
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-action=deactivate]")
    own = daemon.api("GET", "/api/v1/admin/embedding/own-vectors").json()
    assert (own["dropped"], own["migration"], own["model"]) == (True, mid, "all-MiniLM-L6-v2")
    r = daemon.api("POST", "/api/v1/search", json={"namespace": NAMESPACE, "query_text": "a painting of a lake at dawn",
                                                   "search_type": "semantic", "limit": 1})
    assert r.json()["results"][0]["memory"]["content"].startswith("Melanie painted"), r.text
    assert errors_in_console(browser) == []


def test_console_can_be_turned_off():
    d = Daemon({"console.enabled": "false", "embedding.dimensions": "8"}).start()
    try:
        r = d.api("GET", "/console")
        assert r.status_code == 404 and r.json()["error"]["code"] == "ROUTE_NOT_FOUND"
    finally:
        d.cleanup()
