"""docs/getting-started.md, run literally from a fresh clone: the demo, the APNs emulator, a tenant made by
the CLI, the server, a virtual iPhone enrolled, the portal and the link-refused page in a real browser
(Debian's Chromium through Playwright; their screenshots are the doc's images), and a refusal diagnosed
and fixed.

Substituted, and only these: the port 8080 and the emulator's 2197 become free ports (the demo gets
`--port` appended, as its block names none). The three terminals are three bash sessions; a block's
exports stay for the next block of its terminal, as when a person pastes them.

The screenshots are written to docs/img/ when POMONA_UPDATE_SCREENSHOTS=1; otherwise they are taken all
the same (the pages must render) and the committed images must exist.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from doc_blocks import ROOT, Background, Terminal, fresh_clone, python_env, shell_blocks
from helpers import free_port, missing

DOC = ROOT / "docs" / "getting-started.md"
IMG = ROOT / "docs" / "img"
DEMO, EMULATOR, SETUP, SERVE, ENROLL, BO_LINK, DIAGNOSE, FIX = range(8)
CHROMIUM = "/usr/bin/chromium"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
PASSWORD = "correct horse battery"
UPDATE = os.environ.get("POMONA_UPDATE_SCREENSHOTS") == "1"


def doc_images() -> list[str]:
    """The images docs/getting-started.md shows (img/NAME.png)."""
    return re.findall(r"\]\(img/([\w.-]+\.png)\)", DOC.read_text("utf-8"))


def screenshot(page: Any, name: str, tmp_path: Path) -> None:
    """The doc's image NAME: rewritten with POMONA_UPDATE_SCREENSHOTS=1, else taken and the committed one
    must exist."""
    target = IMG / name if UPDATE else tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000, name
    committed = IMG / name
    assert committed.is_file() and committed.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", (
        f"docs/img/{name} is missing: run this test with POMONA_UPDATE_SCREENSHOTS=1"
    )


@pytest.fixture
def browser() -> Iterator[Any]:
    """Chromium, or None when it (or Playwright) is missing: the walkthrough then runs without it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        yield None
        return
    if not Path(CHROMIUM).exists():
        yield None
        return
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        yield b
        b.close()


def iphone(browser: Any) -> Any:
    return browser.new_context(
        user_agent=IPHONE,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="en-US",
    )


class TestGettingStarted:
    def test_the_walkthrough_runs_as_written(self, tmp_path: Path, browser: Any) -> None:
        """From a fresh clone, every block of docs/getting-started.md runs as written: a device enrolls,
        Bo's link is refused with USER_NOT_LICENSED (page and simulate), diagnosed, fixed, then enrolls."""
        blocks = [b.text for b in shell_blocks(DOC)]
        assert len(blocks) == 8, [b.splitlines()[0] for b in blocks]
        clone = fresh_clone(tmp_path / "pomona")
        port, apns_port = free_port(), free_port()

        def local(block: str) -> str:
            return block.replace("8080", str(port)).replace("2197", str(apns_port))

        env = python_env()
        url = f"http://127.0.0.1:{port}"
        running: list[Background] = []
        terminal = Terminal(clone, env, "terminal-2")
        try:
            # 1. the demo, stopped with Ctrl-C once it has printed its banner
            demo = Background(blocks[DEMO].rstrip() + f" --port {port}\n", clone, env, "demo")
            running.append(demo)
            demo.wait_for(lambda: "export POMONA_DATA_DIR=" in demo.output(), what="the demo's banner")
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            demo.interrupt()
            assert "Traceback" not in demo.output(), demo.output()
            assert (clone / "pomona-data" / "demo").is_dir()

            # 2. the APNs emulator (terminal 1)
            apple = Background(local(blocks[EMULATOR]), clone, env, "terminal-1")
            running.append(apple)
            apple.wait_for(
                lambda: (clone / "lab/apns/ca.pem").exists() and str(apns_port) in apple.output(),
                what="the emulator's banner",
            )

            # 3. tenant, push certificate, user, link (terminal 2)
            out, err, failed = terminal.run(local(blocks[SETUP]))
            assert not failed and "Warning" not in err, out + err
            assert (clone / "ana-link.txt").read_text().startswith(f"{url}/enroll/")

            # 4. the server (terminal 3)
            server = Background(local(blocks[SERVE]), clone, env, "terminal-3")
            running.append(server)
            server.wait_for(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, what="serving")

            # 5. a virtual iPhone enrolls
            out, err, failed = terminal.run(local(blocks[ENROLL]))
            assert not failed, out + err
            assert "All 1 devices enrolled." in out, out

            # 6. the portal: sign-in and the enrollment page
            if browser is not None:
                ctx = iphone(browser)
                page = ctx.new_page()
                page.goto(f"{url}/portal/acme/signin")
                screenshot(page, "portal-signin.png", tmp_path)
                page.fill("input[name=upn]", "ana@acme.example")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url(f"{url}/portal/acme/devices")
                assert page.locator("li.device").count() == 1
                screenshot(page, "portal-devices.png", tmp_path)
                page.click("#enroll")
                page.wait_for_url(f"{url}/portal/acme/install")
                screenshot(page, "portal-enroll.png", tmp_path)
                ctx.close()

            # 7. Bo: a link with a warning, refused in the browser and to a device, diagnosed, fixed
            out, err, failed = terminal.run(local(blocks[BO_LINK]))
            assert not failed and "Warning [USER_NOT_LICENSED]" in err, out + err
            assert "pomona licence assign --tenant acme --user bo@acme.example" in err
            bo_link = (clone / "bo-link.txt").read_text().strip()
            if browser is not None:
                ctx = iphone(browser)
                page = ctx.new_page()
                response = page.goto(bo_link)
                assert response is not None and response.status == 403
                assert page.text_content("#reason-code") == "USER_NOT_LICENSED"
                screenshot(page, "link-refused.png", tmp_path)
                ctx.close()
            out, err, failed = terminal.run(local(blocks[DIAGNOSE]))
            assert [c.split()[1] for c in failed] == ["simulate"], (failed, out, err)
            assert "USER_NOT_LICENSED" in out, out
            assert "Warning" not in err, err
            out, err, failed = terminal.run(local(blocks[FIX]))
            assert not failed and "All 1 devices enrolled." in out, out + err
        finally:
            terminal.close()
            for process in running:
                process.stop()
        for process in running:
            assert "Traceback" not in process.output(), process.output()
        if browser is None:
            missing("Playwright or Chromium is missing: the walkthrough ran without its screenshots")

    def test_the_images_exist(self) -> None:
        """Every image the walkthrough shows is committed under docs/img/ (a PNG)."""
        names = doc_images()
        assert set(names) >= {
            "portal-signin.png",
            "portal-devices.png",
            "portal-enroll.png",
            "link-refused.png",
        }, names
        for name in names:
            assert (IMG / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
