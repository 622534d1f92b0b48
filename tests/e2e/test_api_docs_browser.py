"""The admin API documentation in a real browser (Debian's Chromium through Playwright) against a live
`pomona serve`, with every request to another host blocked: Swagger UI renders every operation, the
Authorize button, and the command types of the enqueue body. A screenshot is saved under the test's
tmp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from helpers import LiveServer, missing, start_server
from pomona.protocol.command import COMMAND_TYPES

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    s = start_server(tmp_path)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


def test_docs_render_offline(server: LiveServer, chromium: Any, tmp_path: Path) -> None:
    """With other hosts unreachable, /api/v1/docs shows every operation, Authorize and the command types."""
    own = urlsplit(server.url).netloc
    elsewhere: list[str] = []

    def only_pomona(route: Any) -> None:
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page = chromium.new_page()
    page.route("**/*", only_pomona)
    page.goto(f"{server.url}/api/v1/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    spec = page.evaluate("fetch('/api/v1/openapi.json').then((r) => r.json())")
    n_ops = sum(len(item) for item in spec["paths"].values())
    assert page.locator(".opblock").count() == n_ops >= 40
    assert page.locator("button.authorize").is_visible()
    assert "Create an enrollment link" in page.inner_text("#swagger-ui")
    page.screenshot(path=str(tmp_path / "api-docs.png"), full_page=False)

    # The enqueue operation, opened: its body schema names the command types.
    page.locator(".opblock-summary", has_text="Send a command").first.click()
    page.locator(".opblock-body .tablinks", has_text="Schema").first.click()
    page.wait_for_selector(".opblock-body .model-box", timeout=10_000)
    body = page.locator(".opblock-body").first
    body.get_by_role("button", name="Expand all").first.click()  # the request_type property
    text = body.inner_text()
    assert all(t in text for t in COMMAND_TYPES), text[:2000]
    assert elsewhere == []
    page.close()
