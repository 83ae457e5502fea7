"""Headless Chromium for the HTML timeline tests (Debian's chromium driven by Playwright).

No browser is ever downloaded: Playwright launches /usr/bin/chromium (or
$CHROMIUM). Without it the tests are skipped locally, but under CI=true they
fail: a missing browser must not turn into a green run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests cannot run under CI: {reason} (run scripts/install-test-deps)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        _unavailable("no chromium at /usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    import asyncio
    try:
        previous = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        previous = None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    # Playwright's sync API leaves its own (closed) loop as the current one; later
    # asyncio tests in the same process must not inherit it.
    asyncio.set_event_loop(previous if previous is not None and not previous.is_closed() else None)


class Opened:
    """A page opened from a file:// URL, with every request it made recorded."""

    def __init__(self, page, url: str) -> None:
        self.page = page
        self.url = url
        self.requests: list[str] = []
        self.errors: list[str] = []

    def foreign_requests(self) -> list[str]:
        return [u for u in self.requests if u.split("#", 1)[0] != self.url]


@pytest.fixture
def open_page(browser):
    contexts = []

    def opener(path: Path, fragment: str = "", ready: bool = True) -> Opened:
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        contexts.append(context)
        page = context.new_page()
        url = path.resolve().as_uri()
        opened = Opened(page, url)
        page.on("request", lambda req: opened.requests.append(req.url))
        page.on("pageerror", lambda exc: opened.errors.append(str(exc)))
        page.goto(url + fragment)
        if ready:
            page.wait_for_selector("body[data-ready='1']", timeout=20000)
        return opened

    yield opener
    for context in contexts:
        context.close()
