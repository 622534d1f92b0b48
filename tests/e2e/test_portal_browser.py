"""The portal in a real browser (Debian's Chromium through Playwright) against a live `pomona serve`,
as an iPhone: sign in, be refused for the device limit in English and in Chinese, remove a device, and
download the profile; open a used enrollment link and see its refusal page. Screenshots of the refusal
pages are saved under the test's tmp dir.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import LiveServer, free_port, missing, setup_tenant, start_server
from pomona.app import Settings, build
from pomona.i18n import catalogue
from pomona.protocol import cms
from pomona.protocol.profile import decode_profile
from pomona.testing.virtual_device import VirtualDevice

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
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
PIA = "pia@acme.example"
PASSWORD = "portal-pass-1"

# Renders each string on a canvas in the page's own font and returns the pixels' hashes: real CJK glyphs
# differ from one another and from the tofu box of a code point no font has.
GLYPHS_JS = """
([font, texts]) => texts.map((s) => {
  const c = document.createElement('canvas'); c.width = 64; c.height = 64;
  const g = c.getContext('2d'); g.font = font; g.fillStyle = '#000'; g.textBaseline = 'top';
  g.fillText(s, 4, 4);
  const d = g.getImageData(0, 0, 64, 64).data; let h = 0, ink = 0;
  for (let i = 3; i < d.length; i += 4) { h = (h * 31 + d[i]) >>> 0; if (d[i]) ink++; }
  return [h, ink, g.measureText(s).width];
})
"""


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveServer, str, str]]:
    """A tenant whose user has one device enrolled (with a one-time link, now used) and a device limit
    of 1, served by a real server: the server, the tenant's name and the used link."""
    port = free_port()
    p = build(Settings(data_dir=tmp_path, public_url=f"http://127.0.0.1:{port}"))
    try:
        s = setup_tenant(p, "acme")
        p.admin.create_user("acme", PIA, password=PASSWORD)
        p.policy.licence("acme", PIA, assign=True)
        p.policy.edit_restriction("acme", type_="limit", default=True, limit=1)
        url = p.enrollment.urls.enroll(p.admin.create_enrollment_token("acme", PIA).secret)
    finally:
        p.close()
    server = start_server(tmp_path, port=port)
    try:
        with VirtualDevice(url, product="iPhone14,7", os_version="17.2", device_name="Old iPhone") as d:
            d.enroll()
        yield server, s.name, url
    finally:
        server.stop()


@pytest.fixture
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    fc = shutil.which("fc-list")
    if fc is None or "Noto Sans CJK SC" not in subprocess.run([fc], capture_output=True, text=True).stdout:
        missing("the Noto CJK fonts are missing (apt-get install fonts-noto-cjk)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


class TestPortalInBrowser:
    def test_refused_remove_and_download(
        self, live: tuple[LiveServer, str, str], chromium: Any, tmp_path: Path
    ) -> None:
        """An iPhone signs in, is refused for the device limit (en, zh-CN), removes a device, gets the profile."""
        server, tenant, _ = live
        ctx = chromium.new_context(
            user_agent=IPHONE,
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            locale="en-US",
            accept_downloads=True,
        )
        page = ctx.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        base = f"{server.url}/portal/{tenant}"

        # (1) sign in
        page.goto(f"{base}/signin")
        assert page.get_attribute("html", "lang") == "en"
        page.fill("input[name=upn]", PIA)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/devices")
        assert page.locator("li.device").count() == 1

        # (2) refused for the device limit, in English, then in Chinese through the switch
        page.click("#enroll")
        page.wait_for_url(f"{base}/refused")
        assert page.text_content("#reason-code") == "DEVICE_LIMIT_REACHED"
        assert page.get_attribute("html", "lang") == "en"
        page.screenshot(path=str(tmp_path / "portal-refused-en.png"), full_page=True)
        page.click("#lang-switch")
        page.wait_for_function("document.documentElement.lang === 'zh-CN'")
        assert page.text_content("#reason-code") == "DEVICE_LIMIT_REACHED"
        shot = tmp_path / "portal-refused-zh-CN.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        # Real CJK glyphs render (not tofu): in the page's font, distinct characters give distinct ink.
        font = page.evaluate("getComputedStyle(document.querySelector('h1')).fontFamily")
        (a, b, tofu) = page.evaluate(GLYPHS_JS, [f"32px {font}", ["设", "备", "\U0010fffd"]])
        assert a[1] > 0 and b[1] > 0, "no ink for CJK characters"
        assert a[0] != b[0] and a[0] != tofu[0] and b[0] != tofu[0], "CJK characters render as tofu"
        assert page.evaluate("document.fonts.check('16px \"Noto Sans CJK SC\"')")

        # (3) remove the old device (htmx swaps the list), then try again
        page.click("button.retire")
        page.wait_for_selector("[data-notice='portal.devices.retired']")
        assert page.locator("li.device").count() == 0
        page.click("#retry")
        page.wait_for_url(f"{base}/install")

        # (4) download the profile: the right content type, signed, and it decodes
        with page.expect_response(lambda r: r.url.endswith("/profile")) as resp_info:
            with page.expect_download() as dl_info:
                page.click("#download")
        response = resp_info.value
        assert response.status == 200
        assert response.headers["content-type"] == "application/x-apple-aspen-config"
        path = dl_info.value.path()
        assert path is not None
        content, _ = cms.verify_attached(Path(path).read_bytes())
        assert decode_profile(content).scep_challenge
        ctx.close()


class TestEnrollmentLinkInBrowser:
    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_used_link_page(
        self, live: tuple[LiveServer, str, str], chromium: Any, tmp_path: Path, lang: str
    ) -> None:
        """A used link opened on an iPhone is a styled page in the phone's language, with code and request id."""
        _, tenant, url = live
        ctx = chromium.new_context(
            user_agent=IPHONE, viewport={"width": 390, "height": 844}, is_mobile=True, locale=lang
        )
        page = ctx.new_page()
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        response = page.goto(url)
        assert response is not None and response.status == 403
        assert page.get_attribute("html", "lang") == lang
        assert page.text_content("h1") == catalogue(lang)["link.token_used.title"]
        assert page.text_content("#reason-code") == "ENROLLMENT_TOKEN_INVALID"
        assert page.text_content("#request-id") == response.headers["x-request-id"]
        # the portal's stylesheet is served and applied (no CDN, no CSP refusal)
        assert (
            page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
            == "rgb(245, 245, 247)"
        )
        assert (
            page.evaluate("getComputedStyle(document.querySelector('.refused')).borderLeftStyle") == "solid"
        )
        assert not blocked, blocked
        assert tenant not in (page.content() or "")
        shot = tmp_path / f"link-refused-{lang}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        ctx.close()
