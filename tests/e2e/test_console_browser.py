"""The console in a real browser (Debian's Chromium through Playwright) against a live `pomona serve`:
an admin signs in and sees the dashboard in English and in Chinese; helpdesk pastes a Chinese error
message for a user at the device limit and gets that cause first, in Chinese; helpdesk is refused a
policy change; an admin retires a device; an admin of one tenant cannot open another tenant's device
by URL; restriction priorities and the push certificate's renewal.

Screenshots of the dashboard and the troubleshoot page in both languages are saved under the test's tmp
dir (artifacts). With POMONA_UPDATE_SCREENSHOTS=1 the two the README shows (the dashboard in English and
helpdesk's troubleshoot page in Chinese, both of a tenant with a refusal) are rewritten in docs/img/;
otherwise the committed ones must exist."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import LiveServer, free_port, missing, setup_tenant, start_server
from pomona.app import Settings, build
from pomona.testing.virtual_device import VirtualDevice, VirtualDeviceError

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

ADMIN = "admin@acme.example"
HELPDESK = "help@acme.example"
PASSWORD = "console-pass-1"
ROOT = Path(__file__).resolve().parents[2]
README_SHOTS = ("console-dashboard.png", "console-troubleshoot.png")  # shown in README.md
UPDATE = os.environ.get("POMONA_UPDATE_SCREENSHOTS") == "1"


def shot(page: Any, name: str, tmp_path: Path) -> None:
    """A screenshot artifact; the README's own are rewritten in docs/img/ with POMONA_UPDATE_SCREENSHOTS=1."""
    page.screenshot(path=str(tmp_path / name), full_page=True)
    assert (tmp_path / name).stat().st_size > 10_000, name
    if name in README_SHOTS and UPDATE:
        shutil.copyfile(tmp_path / name, ROOT / "docs" / "img" / name)


def sign_in(page: Any, url: str, email: str) -> None:
    page.goto(f"{url}/console/signin")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.press("input[name=password]", "Enter")
    page.wait_for_url("**/console/t/acme")


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
        shot(page, "console-dashboard-en.png", tmp_path)
        page.click("#lang-switch")
        page.wait_for_function("document.documentElement.lang === 'zh-CN'")
        assert "健康检查发现" in page.inner_text("#health")
        shot(page, "console-dashboard-zh-CN.png", tmp_path)
        page.click("#nav-troubleshoot")
        page.fill("input[name=upn]", "ana@acme.example")
        page.fill("textarea[name=message]", "配置文件安装失败。无法建立到服务器的连接。")
        page.click("#diagnose")
        page.wait_for_selector("#diagnosis")
        shot(page, "console-troubleshoot-zh-CN.png", tmp_path)
        page.click("#lang-switch")
        page.wait_for_function("document.documentElement.lang === 'en'")
        assert page.is_visible("#diagnosis") and page.is_visible("#dry-run")
        shot(page, "console-troubleshoot-en.png", tmp_path)
        page.click("#nav-devices")
        page.wait_for_url("**/console/t/acme/devices")
        assert page.is_visible("#total")
        ctx.close()

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

    def test_admin_creates_assigns_and_deletes_a_restriction_and_the_dry_run_follows(
        self,
        live: LiveServer,
        chromium: Any,
        tmp_path: Path,  # noqa: F811
    ) -> None:
        """With JavaScript off: the admin creates a device type restriction blocking iPadOS, assigns Sales
        on its page (the dry run for an iPad now refuses), then deletes it (confirmed) and the dry run
        allows again. Screenshots of both pages."""
        p = build(Settings(data_dir=tmp_path, public_url=live.url))
        try:
            p.policy.create_group("acme", "Sales")
            p.policy.add_member("acme", "Sales", "ana@acme.example")
        finally:
            p.close()
        ctx = chromium.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        sign_in(page, live.url, ADMIN)
        page.goto(f"{live.url}/console/t/acme/restrictions?upn=ana@acme.example&platform=ipados")
        assert page.get_attribute("#dry-run", "data-allowed") == "True"
        page.click("#restrictions-platform summary")
        form = page.locator("#create-platform")
        form.locator("input[name=name]").fill("No iPads")
        form.locator("input[name=priority]").fill("1")
        form.locator("select[name=ipados]").select_option("block")
        form.locator("button[type=submit]").click()
        page.wait_for_selector("[data-notice=created]")
        shot(page, "console-restrictions.png", tmp_path)
        page.click("#restrictions-platform tr[data-name='No iPads'] a[data-open]")
        page.select_option("#assign-form select[name=group]", "Sales")
        page.click("#assign-go")
        page.wait_for_selector("[data-notice=assigned]")
        assert page.get_attribute("#dry-run [data-reason]", "data-reason") == "PLATFORM_BLOCKED"
        assert page.inner_text("#assigned-groups").strip().startswith("Sales")
        shot(page, "console-restriction.png", tmp_path)
        page.click("#delete-link")
        page.check("input[name=confirm]")
        page.click("#delete-confirm")
        page.wait_for_selector("[data-notice=deleted]")
        assert "No iPads" not in page.inner_text("#restrictions-platform")
        assert page.get_attribute("#dry-run", "data-allowed") == "True"
        ctx.close()

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


@pytest.fixture
def fleet(live: LiveServer, tmp_path: Path) -> dict[str, str]:
    """Ana at her device limit (a limit restriction of 1, one device enrolled, a second refused), a
    helpdesk account, and tenant globex with a device of its own: its id."""
    p = build(Settings(data_dir=tmp_path, public_url=live.url))
    try:
        p.policy.create_group("acme", "Sales")
        p.policy.add_member("acme", "Sales", "ana@acme.example")
        p.policy.create_restriction(
            "acme", type_="limit", priority=1, groups=["Sales"], name="Sales limit", limit=1
        )
        p.console.create_account(HELPDESK, PASSWORD, "helpdesk", "acme")
        link = p.enrollment.urls.enroll(
            p.admin.create_enrollment_token("acme", "ana@acme.example", uses=5).secret
        )
        other = setup_tenant(p, "globex")
    finally:
        p.close()
    VirtualDevice(link, device_name="Ana's iPhone").enroll()
    with pytest.raises(VirtualDeviceError):
        VirtualDevice(link).enroll()  # the second device: DEVICE_LIMIT_REACHED
    theirs = VirtualDevice(other.enroll_url, device_name="Globex iPad", product="iPad13,18")
    theirs.enroll()
    p = build(Settings(data_dir=tmp_path, public_url=live.url))
    try:
        (ours,), _ = p.commands.list_devices("acme")
        return {
            "acme_device": ours.device.id,
            "globex_device": p.commands.device("globex", theirs.udid).device.id,
        }
    finally:
        p.close()


class TestHelpdeskAndAdminInBrowser:
    def test_helpdesk_pastes_a_chinese_message_for_a_user_at_the_device_limit(
        self, live: LiveServer, chromium: Any, fleet: dict[str, str], tmp_path: Path
    ) -> None:
        """ "配置文件安装失败。无法建立到服务器的连接。" for Ana, at her limit of 1: the top cause is
        DEVICE_LIMIT_REACHED, and the page says so in Chinese; helpdesk sees no policy form, and a policy
        change it sends all the same is refused (403) and changes nothing."""
        ctx = chromium.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        page = ctx.new_page()
        sign_in(page, live.url, HELPDESK)
        if page.get_attribute("html", "lang") != "zh-CN":
            page.click("#lang-switch")
            page.wait_for_function("document.documentElement.lang === 'zh-CN'")
        page.click("#nav-troubleshoot")
        page.fill("input[name=upn]", "ana@acme.example")
        page.fill("textarea[name=message]", "配置文件安装失败。无法建立到服务器的连接。")
        page.click("#diagnose")
        page.wait_for_selector("#diagnosis")
        assert page.get_attribute("#diagnosis", "data-top") == "DEVICE_LIMIT_REACHED"
        top = page.inner_text("#diagnosis")
        assert "设备" in top and "DEVICE_LIMIT_REACHED" in top, top
        shot(page, "console-troubleshoot.png", tmp_path)  # the README's (Chinese)

        page.click("#nav-restrictions")
        assert page.locator("input[name=priority]").count() == 0  # read-only for helpdesk
        csrf = page.get_attribute("input[name=csrf]", "value") or ""
        before = page.inner_text("#restrictions-limit")
        rid = page.get_attribute("#restrictions-limit tr[data-name='Sales limit']", "data-restriction")
        r = page.request.post(
            f"{live.url}/console/t/acme/restrictions/{rid}/priority", form={"csrf": csrf, "priority": "7"}
        )
        assert r.status == 403, r.status
        page.reload()
        assert page.inner_text("#restrictions-limit") == before
        ctx.close()

    def test_admin_retires_a_device_and_cannot_open_another_tenants(
        self, live: LiveServer, chromium: Any, fleet: dict[str, str], tmp_path: Path
    ) -> None:
        """The admin retires Ana's iPhone from its page (with the confirmation); globex's device is not
        found under either tenant's URL."""
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        sign_in(page, live.url, ADMIN)
        assert "DEVICE_LIMIT_REACHED" in page.inner_text("#top-reasons")
        shot(page, "console-dashboard.png", tmp_path)  # the README's (English)
        page.goto(f"{live.url}/console/t/acme/devices/{fleet['acme_device']}")
        page.click("#retire")
        page.check("input[name=confirm]")
        page.click("#retire-confirm")
        page.wait_for_selector("[data-notice]")
        p = build(Settings(data_dir=tmp_path, public_url=live.url))
        try:
            view = p.commands.device("acme", fleet["acme_device"])
            assert view.enrollment is None and view.history[0].status.value == "retired"
        finally:
            p.close()
        for tenant in ("acme", "globex"):
            r = page.goto(f"{live.url}/console/t/{tenant}/devices/{fleet['globex_device']}")
            assert r is not None and r.status == 404, (tenant, r.status if r else None)
            assert "Globex iPad" not in page.content()
        page.close()


def test_the_readme_shows_the_committed_screenshots() -> None:
    """README.md shows the two console screenshots, and they are committed PNGs (made by the tests above
    with POMONA_UPDATE_SCREENSHOTS=1)."""
    readme = (ROOT / "README.md").read_text("utf-8")
    for name in README_SHOTS:
        assert f"(docs/img/{name})" in readme, name
        committed = ROOT / "docs" / "img" / name
        assert committed.is_file() and committed.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", (
            f"docs/img/{name} is missing: run tests/e2e/test_console_browser.py with POMONA_UPDATE_SCREENSHOTS=1"
        )
