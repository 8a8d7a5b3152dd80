"""Headless Chromium for the browser tests: Debian's package driven by Playwright (no downloaded
browser), its screenshots in .rollout/test-artifacts/browser/, and a watch on every request the
pages make: anything not for 127.0.0.1 is refused and recorded, and so is any violation of a
page's Content-Security-Policy."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from rollout.paths import STATE_DIR

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = STATE_DIR / "test-artifacts" / "browser"


@dataclass
class Watch:
    """What the pages asked for beyond 127.0.0.1 (refused), and the policy violations seen."""

    outside: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


@contextmanager
def open_browser() -> Iterator[tuple[object, Watch]]:
    """A page whose requests to any host but 127.0.0.1 are refused and recorded."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(
            "browser test: no Chromium (Debian package `chromium`; `make test` installs it as root)"
        )
    SHOTS.mkdir(parents=True, exist_ok=True)
    watch = Watch()

    def only_here(route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            watch.outside.append(url)
            route.abort()

    def console(message) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            watch.violations.append(message.text)

    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.context.route("**/*", only_here)
        page.on("console", console)
        try:
            yield page, watch
        finally:
            browser.close()


def shot(page, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_for(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def log_in(airflow, page, user: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{airflow.url}/auth/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", airflow.password_of(user))
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/auth/login" not in url)
