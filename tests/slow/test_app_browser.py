"""app.py: the run browser's data layer on a small recorded run, on disk and pushed by the real writers to a local
Hub (tests/helpers/local_hub.py), and the app itself in a real headless Chromium (Debian's `chromium`, driven by
playwright): funnel chart, filtering by verdict, a sample's chain, the evaluation, bad inputs."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT
from helpers.local_hub import LocalHub
from helpers.recorded_run import HUB_REPO, finalize, hub_refs

from selfalign.funnel import Funnel

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In the app's process: SIGKILL it when the test process dies, even by SIGKILL."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory, hub: LocalHub) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("app") / "app.log").open("w")
    env = {**os.environ, **hub.env(tmp_path_factory.mktemp("app-hf-home")), "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"app did not start: {Path(log.name).read_text()[-3000:]}")
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    assert proc.poll() is not None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (make setup installs it when run as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        chromium = driver.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            yield chromium
        finally:
            chromium.close()


def open_in_page(page: Any, url: str, spec: str, revision: str = "") -> str:
    page.goto(url)
    page.locator("#spec textarea, #spec input").first.fill(spec)
    page.locator("#revision textarea, #revision input").first.fill(revision)
    page.locator("#open").click()
    page.wait_for_function("/Opened|⚠️/.test(document.querySelector('#message').innerText)", timeout=60_000)
    return page.locator("#message").inner_text()


BODY_ROWS = "#samples [role=row]:not(thead [role=row])"  # gradio's grid: a header row, then one row per sample


def table_rows(page: Any) -> list[list[str]]:
    return [[cell.strip() for cell in text.split("\n") if cell.strip()]
            for text in page.locator(BODY_ROWS).all_inner_texts()]


def test_app_in_a_real_browser(app_url: str, browser: Any, recorded_run: Path, tmp_path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    message = open_in_page(page, app_url, str(recorded_run))
    assert "Opened local run" in message and "verified" in message, message
    chart = page.locator("#funnels img").first
    chart.wait_for(timeout=30_000)
    size = chart.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size[0] > 400 and size[1] > 400  # four stages' panels, rendered by matplotlib
    page.wait_for_function(f"document.querySelectorAll('{BODY_ROWS}').length >= 6", timeout=30_000)
    everything = table_rows(page)
    assert len(everything) == 6
    page.locator("#verdict").get_by_text("pass", exact=True).click()
    page.wait_for_function(f"document.querySelectorAll('{BODY_ROWS}').length == 3", timeout=30_000)
    passed = table_rows(page)
    assert len(passed) == 3 and all("pass" in row for row in passed), passed
    page.screenshot(path=str(tmp_path / "app-filtered.png"), full_page=True)

    page.locator("#samples").get_by_text("inst-rgb_to_yiq-0", exact=True).click()  # a row: its chain
    page.wait_for_function("document.querySelector('#chain').innerText.includes('Sample inst-rgb_to_yiq-0')",
                           timeout=30_000)
    assert "def rgb_to_yiq(" in page.locator("#chain").inner_text()
    page.locator("#sample-id textarea, #sample-id input").first.fill("inst-hsv_to_rgb-0")  # or typed
    page.locator("#show-chain").click()
    chain_view = page.locator("#chain")
    page.wait_for_function("document.querySelector('#chain').innerText.includes('Sample inst-hsv_to_rgb-0')",
                           timeout=30_000)
    text = chain_view.inner_text()
    assert "def hsv_to_rgb(" in text and "which of 6 equal sectors" in text and "int(h * 6.0) % 6" in text
    assert page.locator("#eval-chart img").first.is_visible()
    assert "Problems only **base**" not in page.locator("#eval-summary").inner_text()  # rendered, not raw
    assert "only self-aligned solves: 1" in page.locator("#eval-summary").inner_text()
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    if os.environ.get("SELFALIGN_APP_SCREENSHOT"):  # refresh the README's picture: docs/app.png
        from PIL import Image

        page.set_viewport_size({"width": 1100, "height": 900})
        page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
        with Image.open(tmp_path / "docs.png") as shot:  # 256 colours: a small file for the repo
            shot.convert("RGB").quantize(256).save(os.environ["SELFALIGN_APP_SCREENSHOT"], optimize=True)
    page.close()


def test_app_opens_a_pushed_run_at_main_a_tag_and_a_commit(app_url: str, browser: Any, recorded_run: Path,
                                                           tmp_path: Path):
    """`python app.py` on the run the writers pushed to the local Hub: funnels, samples, chain and evaluation."""
    head, tags = hub_refs()
    verified_tag = next(tag for tag in tags if tag.startswith("verified-"))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    for revision, evaluated in (("", 2), (verified_tag, 0), (head, 2)):
        message = open_in_page(page, app_url, HUB_REPO, revision)
        commit = tags.get(revision) or head
        assert message.startswith(f"Opened hub run {HUB_REPO}{'@' + revision if revision else ''}")
        assert (revision == commit or f"(commit {commit[:12]})" in message) and commit[:12] in message, message
        assert f"{evaluated} evaluated model(s)" in message, message
        chart = page.locator("#funnels img").first
        chart.wait_for(timeout=30_000)
        assert chart.evaluate("img => img.naturalHeight") > 400  # four stages' panels
        page.wait_for_function(f"document.querySelectorAll('{BODY_ROWS}').length >= 6", timeout=30_000)
        assert len(table_rows(page)) == 6
        if evaluated:
            page.locator("#eval-chart img").first.wait_for(timeout=30_000)
            assert "only self-aligned solves: 1" in page.locator("#eval-summary").inner_text()
        else:
            assert "This run has no evaluation" in page.locator("#eval-summary").inner_text()
    page.locator("#verdict").get_by_text("pass", exact=True).click()  # at the commit: filter, then a chain
    page.wait_for_function(f"document.querySelectorAll('{BODY_ROWS}').length == 3", timeout=30_000)
    assert all("pass" in row for row in table_rows(page))
    page.locator("#samples").get_by_text("inst-rgb_to_yiq-0", exact=True).click()
    page.wait_for_function("document.querySelector('#chain').innerText.includes('Sample inst-rgb_to_yiq-0')",
                           timeout=30_000)
    assert "def rgb_to_yiq(" in page.locator("#chain").inner_text()
    page.screenshot(path=str(tmp_path / "app-hub.png"), full_page=True)
    page.close()


def test_app_shows_bad_input_as_a_message(app_url: str, browser: Any, tmp_path: Path):
    missing_columns = tmp_path / "odd" / "verified"
    finalize(missing_columns, "verified", [{"x": 1}], Funnel("verified"), extra={"verdicts": [{"verdict": "pass"}]})
    page = browser.new_page()
    cases = [(str(tmp_path / "no-such-dir"), "run not found"),
             ("someone/no-such-run", "cannot load the Hub dataset repo someone/no-such-run"),
             (str(tmp_path / "odd"), "lacks column(s) reason, instruction")]
    for spec, expected in cases:
        message = open_in_page(page, app_url, spec)
        assert expected in message and "Traceback" not in page.content(), (spec, message)
    page.close()
