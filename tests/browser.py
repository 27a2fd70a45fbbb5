"""Headless Chromium for the page tests: the system's chromium driven by playwright, and what the page saw."""
from __future__ import annotations

import shutil
from contextlib import contextmanager

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run"]


def chromium_path() -> str | None:
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


@contextmanager
def open_page():
    """(a fresh page, the problems it saw: console errors, page errors, failed requests, 4xx/5xx answers);
    the test skips when playwright or a chromium binary is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install "
                                                                 "playwright; it drives the system chromium)")
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium binary found (apt-get install chromium); the browser test needs one")
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
            page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
            page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
            page.on("response", lambda res: problems.append(f"{res.status}: {res.url}") if res.status >= 400 else None)
            yield page, problems
        finally:
            browser.close()
