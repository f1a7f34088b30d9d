"""Helpers for the UI's browser tests: Debian's Chromium driven by Playwright (the system browser,
never a downloaded one), every page's console errors and every request it makes recorded, and
screenshots written to ``test-artifacts/screenshots/`` (``$INTERPLAB_SCREENSHOTS``)."""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

CHROMIUM = os.environ.get("INTERPLAB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]
SHOTS = Path(os.environ.get("INTERPLAB_SCREENSHOTS", Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"))


def chromium_path() -> str:
    path = shutil.which(CHROMIUM) or CHROMIUM
    if not Path(path).is_file():
        raise RuntimeError(f"Chromium is not installed at {CHROMIUM}: `make install-test` installs Debian's "
                           "chromium package (apt-get install chromium); set INTERPLAB_CHROMIUM to use another.")
    return path


@contextlib.contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    """A page with its console errors, page errors and the hosts it asked for."""

    page: object
    base: str
    errors: list[str] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)

    def open(self, path: str, ready: bool = True):
        self.page.goto(self.base + path)
        if ready:
            self.page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        return self.page

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        out = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(out), full_page=True)
        return out


@contextlib.contextmanager
def tab(browser, base: str, width: int = 1280, height: int = 900, route: bool = True):
    """A new browser context and page. ``route``: every request passes through a handler that
    records its host and refuses any outside loopback (Playwright then bypasses the HTTP cache;
    the benchmark measures cached loads with ``route=False``)."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    t = Tab(page, base)
    page.on("console", lambda m: t.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: t.errors.append(f"page error: {e}"))

    def record(route):
        host = urlparse(route.request.url).hostname or ""
        t.hosts.add(host)
        if host not in ("127.0.0.1", "localhost"):
            return route.abort()  # the network is off for the UI: nothing may leave loopback
        return route.continue_()

    if route:
        page.route("**/*", record)
    try:
        yield t
    finally:
        context.close()
