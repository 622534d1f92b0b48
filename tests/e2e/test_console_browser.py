"""The console in a real browser (Debian's Chromium through Playwright) against a live `pomona serve`:
an admin signs in and sees the dashboard, in English and in Chinese. Screenshots of both are saved
under the test's tmp dir (artifacts, not committed)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import LiveServer, free_port, missing, setup_tenant, start_server
from pomona.app import Settings, build

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

ADMIN = "admin@acme.example"
PASSWORD = "console-pass-1"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    """A tenant with a console admin, served by a real server."""
    port = free_port()
    p = build(Settings(data_dir=tmp_path, public_url=f"http://127.0.0.1:{port}"))
    try:
        setup_tenant(p, "acme")
        p.console.create_account(ADMIN, PASSWORD, "admin", "acme")
    finally:
        p.close()
    server = start_server(tmp_path, port=port)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Debian's Chromium with the CJK fonts (as tests/e2e/test_portal_browser.py launches it)."""
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


class TestConsoleInBrowser:
    def test_admin_signs_in_and_sees_the_dashboard(
        self,
        live: LiveServer,
        chromium: Any,
        tmp_path: Path,  # noqa: F811
    ) -> None:
        """Sign in with the keyboard, land on the dashboard, switch to Chinese, troubleshoot a user;
        screenshots of the dashboard and troubleshoot pages in both languages."""
        ctx = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        page = ctx.new_page()
        page.goto(f"{live.url}/console")
        assert page.url.endswith("/console/signin") and page.get_attribute("html", "lang") == "en"
        page.fill("input[name=email]", ADMIN)
        page.fill("input[name=password]", PASSWORD)
        page.press("input[name=password]", "Enter")
        page.wait_for_url("**/console/t/acme")
        assert (
            page.is_visible("#health") and page.is_visible("#push-cert") and page.is_visible("#top-reasons")
        )
        days = page.get_attribute("#push-cert [data-days-left]", "data-days-left")
        assert days is not None and int(days) > 300  # the stand-in certificate is valid for a year
        page.screenshot(path=str(tmp_path / "console-dashboard-en.png"), full_page=True)
        page.click("#lang-switch")
        page.wait_for_function("document.documentElement.lang === 'zh-CN'")
        assert "健康检查发现" in page.inner_text("#health")
        page.screenshot(path=str(tmp_path / "console-dashboard-zh-CN.png"), full_page=True)
        page.click("#nav-troubleshoot")
        page.fill("input[name=upn]", "ana@acme.example")
        page.fill("textarea[name=message]", "配置文件安装失败。无法建立到服务器的连接。")
        page.click("#diagnose")
        page.wait_for_selector("#diagnosis")
        page.screenshot(path=str(tmp_path / "console-troubleshoot-zh-CN.png"), full_page=True)
        page.click("#lang-switch")
        page.wait_for_function("document.documentElement.lang === 'en'")
        assert page.is_visible("#diagnosis") and page.is_visible("#dry-run")
        page.screenshot(path=str(tmp_path / "console-troubleshoot-en.png"), full_page=True)
        page.click("#nav-devices")
        page.wait_for_url("**/console/t/acme/devices")
        assert page.is_visible("#total")
        ctx.close()
        assert (tmp_path / "console-dashboard-en.png").stat().st_size > 10_000

    def test_admin_changes_a_restriction_priority_and_the_dry_run_follows(
        self,
        live: LiveServer,
        chromium: Any,
        tmp_path: Path,  # noqa: F811
    ) -> None:
        """Ana is in Sales (limit 1, priority 1) and Staff (limit 5, priority 2): the dry run names Sales's
        restriction; the admin gives it priority 3, and the dry run now names Staff's."""
        p = build(Settings(data_dir=tmp_path, public_url=live.url))
        try:
            for g, n, limit in (("Sales", 1, 1), ("Staff", 2, 5)):
                p.policy.create_group("acme", g)
                p.policy.add_member("acme", g, "ana@acme.example")
                p.policy.create_restriction(
                    "acme", type_="limit", priority=n, groups=[g], name=f"{g} limit", limit=limit
                )
        finally:
            p.close()
        page = chromium.new_page()
        page.goto(f"{live.url}/console/signin")
        page.fill("input[name=email]", ADMIN)
        page.fill("input[name=password]", PASSWORD)
        page.press("input[name=password]", "Enter")
        page.wait_for_url("**/console/t/acme")
        page.click("#nav-restrictions")
        page.fill("#dry-run-form input[name=upn]", "ana@acme.example")
        page.click("#dry-run-go")
        assert "Sales limit" in page.inner_text("#dry-run [data-applied=limit]")
        row = page.locator("#restrictions-limit tr[data-name='Sales limit']")
        row.locator("input[name=priority]").fill("3")
        row.locator("button[type=submit]").click()
        page.wait_for_selector("[data-notice=priority]")
        applied = page.inner_text("#dry-run [data-applied=limit]")
        assert "Staff limit" in applied and "Staff" in applied
        names = page.locator("#restrictions-limit tr[data-name]").evaluate_all(
            "rs => rs.map(r => r.dataset.name)"
        )
        assert names[:2] == ["Staff limit", "Sales limit"]
        page.close()

    def test_admin_renews_the_push_certificate_and_a_replacement_is_refused(
        self,
        live: LiveServer,
        chromium: Any,
        tmp_path: Path,  # noqa: F811
    ) -> None:
        """On Apple settings the admin downloads a CSR, uploads Apple's renewal (same topic): accepted;
        a certificate of another topic is refused with APNS_TOPIC_CHANGED, the replace guard shows, and
        the topic stays. Screenshots of both answers."""
        from pomona.testing.apns_emulator import ApnsEmulator

        apple = ApnsEmulator()  # plays Apple's Push Certificates Portal: it signs requests, serves nothing
        page = chromium.new_page()
        page.goto(f"{live.url}/console/signin")
        page.fill("input[name=email]", ADMIN)
        page.fill("input[name=password]", PASSWORD)
        page.press("input[name=password]", "Enter")
        page.wait_for_url("**/console/t/acme")
        page.click("#nav-apple")
        page.wait_for_url("**/console/t/acme/apple")
        topic = page.inner_text("#push-topic")

        def signed(new_topic: str | None, name: str) -> Path:
            with page.expect_download() as got:
                page.click("#csr-download")
            csr = Path(got.value.path()).read_text()
            assert "BEGIN CERTIFICATE REQUEST" in csr and got.value.suggested_filename == "acme-push.csr"
            out = tmp_path / name
            out.write_bytes(apple.sign_push_request(csr, new_topic))
            return out

        page.set_input_files("#push-upload-form input[name=cert]", str(signed(topic, "renewed.pem")))
        page.fill("#push-upload-form input[name=apple_id]", "it-admin@acme.example")
        page.click("#push-upload")
        page.wait_for_selector("[data-notice=renewed]")
        assert page.inner_text("#push-topic") == topic
        assert page.inner_text("#push-apple-id") == "it-admin@acme.example"
        page.screenshot(path=str(tmp_path / "console-apple-renewed.png"), full_page=True)
        page.set_input_files("#push-upload-form input[name=cert]", str(signed(None, "other.pem")))
        page.click("#push-upload")
        page.wait_for_selector("#push-refusal")
        assert page.get_attribute("#push-refusal", "data-reason") == "APNS_TOPIC_CHANGED"
        assert topic in page.inner_text("#push-refusal") and page.is_visible("#replace-guard")
        assert page.inner_text("#push-topic") == topic  # nothing changed
        page.screenshot(path=str(tmp_path / "console-apple-refused.png"), full_page=True)
        page.close()
        apple.close()
