"""A real headless browser for tests: Playwright driving the system's Chromium, with the network cut off.

Playwright's own browser download needs the internet, so the tests launch the Chromium the machine has
(Debian's `chromium`, installed by `make system-deps`). Every request to anything but the loopback address
is aborted and recorded, so a page that would need a CDN shows up as a failure, not as a slow load.

    with offline_page() as (page, outside):
        page.goto(url)
        ...
        assert not outside
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest

# Chromium's own background traffic (updates, sync, Google host look-ups) off; names resolve to nothing but
# loopback, so even a request Playwright's router did not see cannot leave the machine.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no system Chromium: install it (`make system-deps`, or apt-get install chromium)",
                    pytrace=False)
    return path


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob", "about") or parts.hostname in LOCAL_HOSTS


@contextmanager
def offline_page(viewport: dict | None = None) -> Iterator[tuple[object, list[str]]]:
    """(a Playwright page, the list of outside URLs it tried to load), in a fresh headless Chromium."""
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})

            def refuse(route) -> None:
                outside.append(route.request.url)
                route.abort("internetdisconnected")

            context.route(lambda url: not is_local(url), refuse)
            yield context.new_page(), outside
        finally:
            browser.close()
