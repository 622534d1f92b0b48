"""The admin and helpdesk console through the real ASGI app and the real CLI, on SQLite and PostgreSQL:
sign-in, CSRF, roles, tenant isolation, escaping, and every page in English and Simplified Chinese."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from helpers import (  # noqa: F401
    CONSOLE_PASSWORD,
    ConsoleBrowser,
    TenantSetup,
    cli,
    priorities,
    same_data_dir,
    setup_tenant,
    two_limits,
)
from pomona.app import Pomona, create_app
from pomona.services.portal import totp_now
from pomona.testing.virtual_device import VirtualDevice

BASE = "https://pomona.test"
PASSWORD = CONSOLE_PASSWORD
EVIL = '<script>alert("pwned")</script>'


Admin = ConsoleBrowser


@pytest.fixture
def app(pomona: Pomona) -> object:
    return create_app(pomona=pomona, eager=False)


@pytest.fixture
def client(app: object) -> Iterator[TestClient]:
    with TestClient(app, base_url=BASE) as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona, "acme")


@pytest.fixture
def globex(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona, "globex")


def account(p: Pomona, email: str, role: str, tenant: str | None = None, **kw: Any) -> Any:
    return p.console.create_account(email, PASSWORD, role, tenant, **kw)


@pytest.fixture
def browser(app: object) -> Iterator[Admin]:
    b = Admin(app)
    yield b
    b.close()


def enrolled(p: Pomona, client: TestClient, s: TenantSetup, **kw: Any) -> VirtualDevice:
    d = VirtualDevice(s.enroll_url, client=client, **kw)
    d.enroll()
    return d


def strip_data(html: str) -> str:
    return re.sub(r'data-[a-z-]+="[^"]*"', "", html)


def device_id(p: Pomona, tenant: str, udid: str) -> str:
    return p.commands.device(tenant, udid).device.id


class TestAccountsCli:
    def test_create_list_disable_reset(
        self, monkeypatch: pytest.MonkeyPatch, db_url: str, pomona: Pomona, acme: TenantSetup
    ) -> None:
        """`pomona admin` creates, lists (table and --json), disables and resets accounts; each is audited."""
        code, out = cli(
            monkeypatch,
            db_url,
            "admin",
            "create",
            "--email",
            "Op@Example.com",
            "--password-stdin",
            "--role",
            "operator",
            stdin=PASSWORD + "\n",
        )
        assert code == 0, out
        code, out = cli(
            monkeypatch,
            db_url,
            "admin",
            "create",
            "--email",
            "hd@acme.example",
            "--password-stdin",
            "--tenant",
            "acme",
            "--role",
            "helpdesk",
            "--json",
            stdin=PASSWORD + "\n",
        )
        assert code == 0 and json.loads(out)["role"] == "helpdesk", out
        code, out = cli(monkeypatch, db_url, "admin", "list", "--json")
        rows = {a["email"]: a for a in json.loads(out)}
        assert rows["op@example.com"]["role"] == "operator" and rows["op@example.com"]["tenant"] is None
        assert rows["hd@acme.example"]["tenant"] == "acme"
        code, out = cli(monkeypatch, db_url, "admin", "list")
        assert code == 0 and "hd@acme.example" in out
        assert cli(monkeypatch, db_url, "admin", "disable", "hd@acme.example")[0] == 0
        code, out = cli(
            monkeypatch,
            db_url,
            "admin",
            "reset-password",
            "hd@acme.example",
            "--password-stdin",
            stdin="another-pass-2\n",
        )
        assert code == 0, out
        code, out = cli(monkeypatch, db_url, "admin", "list", "--json")
        assert {a["email"]: a["enabled"] for a in json.loads(out)}["hd@acme.example"] is False
        actions = [e.action for e in pomona.console.audit_log()]
        assert actions == ["admin.reset_password", "admin.disable", "admin.create", "admin.create"]

    def test_refusals_are_one_line(
        self, monkeypatch: pytest.MonkeyPatch, db_url: str, acme: TenantSetup
    ) -> None:
        """A helpdesk without a tenant, a short password, a taken email: one line with a reason, exit 2."""
        args = ("admin", "create", "--email", "x@acme.example", "--password-stdin")
        code, out = cli(monkeypatch, db_url, *args, "--role", "helpdesk", stdin=PASSWORD + "\n")
        assert code == 2 and "INVALID_INPUT" in out and "Traceback" not in out
        code, out = cli(monkeypatch, db_url, *args, "--role", "admin", "--tenant", "acme", stdin="short\n")
        assert code == 2 and "INVALID_INPUT" in out
        assert (
            cli(monkeypatch, db_url, *args, "--role", "admin", "--tenant", "acme", stdin=PASSWORD + "\n")[0]
            == 0
        )
        code, out = cli(
            monkeypatch, db_url, *args, "--role", "admin", "--tenant", "acme", stdin=PASSWORD + "\n"
        )
        assert code == 2 and "ALREADY_EXISTS" in out and len(out.strip().splitlines()) == 1


class TestSignIn:
    def test_the_server_address_leads_to_the_console(self, browser: Admin) -> None:
        """`/` sends a browser to the console (before: the API's 404 JSON), whose sign-in page answers."""
        r = browser.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/console/"
        r = browser.get("/console/", follow_redirects=True)
        assert r.status_code == 200 and str(r.url).endswith("/console/signin")
        assert browser.c.post("/").status_code != 303  # only a page view is redirected

    def test_sign_in_and_out(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """A tenant admin signs in, lands on the tenant's dashboard; signed out, the cookie no longer works."""
        account(pomona, "ad@acme.example", "admin", "acme")
        r = browser.sign_in("AD@acme.example")
        assert r.status_code == 200 and str(r.url).endswith("/console/t/acme")
        assert 'id="health"' in r.text and 'id="push-cert"' in r.text
        cookie = browser.c.cookies.get("pomona_console")
        assert cookie
        h = r.headers
        assert h["x-frame-options"] == "DENY" and "no-store" in h["cache-control"]
        assert browser.post("/console/signout").status_code == 303
        again = TestClient(
            browser.c.app, base_url=BASE, cookies={"pomona_console": cookie}, follow_redirects=False
        )
        assert again.get("/console/t/acme").headers["location"] == "/console/signin"
        actions = [e.action for e in pomona.console.audit_log("acme")]
        assert actions[:2] == ["console.sign_out", "console.sign_in"]

    def test_wrong_password_and_rate_limit(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """A wrong password is 401 with the same words as an unknown email; past 10 tries, 429."""
        account(pomona, "ad@acme.example", "admin", "acme")
        r = browser.sign_in("ad@acme.example", "wrong-password")
        assert r.status_code == 401 and 'data-error="console.signin.bad_credentials"' in r.text
        assert browser.sign_in("nobody@acme.example").status_code == 401
        codes = [browser.sign_in("ad@acme.example", "wrong-password").status_code for _ in range(9)]
        assert codes[-1] == 429
        assert browser.sign_in("ad@acme.example").status_code == 429  # even the right password, for now

    def test_totp(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """An account with TOTP needs the current code after its password; a code works once."""
        a = account(pomona, "ad@acme.example", "admin", "acme", totp=True)
        r = browser.sign_in("ad@acme.example")
        assert r.status_code == 401 and 'data-error="console.signin.code_needed"' in r.text
        code = totp_now(a.totp_secret, pomona.clock.now())
        assert browser.sign_in("ad@acme.example", code=code).status_code == 200
        other = Admin(browser.c.app)
        assert other.sign_in("ad@acme.example", code=code).status_code == 401
        other.close()

    def test_csrf_refused(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """A sign-in or a sign-out without the session's CSRF token is refused with 403."""
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.get("/console/signin")
        r = browser.post("/console/signin", {"email": "ad@acme.example", "password": PASSWORD}, csrf="forged")
        assert r.status_code == 403 and 'data-message="portal.error.csrf.body"' in r.text
        browser.sign_in("ad@acme.example")
        assert browser.post("/console/signout", csrf="forged").status_code == 403
        assert browser.get("/console/t/acme").status_code == 200  # still signed in

    def test_disabled_and_reset_end_sessions(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """Disabling an account, or a new password, ends its open sessions at once."""
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        pomona.console.reset_password("ad@acme.example", "new-password-2")
        assert browser.get("/console/t/acme").status_code == 303
        browser.sign_in("ad@acme.example", "new-password-2")
        pomona.console.set_enabled("ad@acme.example", False)
        assert browser.get("/console/t/acme").status_code == 303
        assert browser.sign_in("ad@acme.example", "new-password-2").status_code == 401


class TestRolesAndTenants:
    def test_tenant_admin_never_sees_another_tenant(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, globex: TenantSetup, browser: Admin
    ) -> None:
        """An admin of acme gets 404 for globex's dashboard, devices, device page and troubleshoot, even
        by URL, and the answer names nothing of globex's."""
        d = enrolled(pomona, client, globex, device_name="Globex secret phone")
        gid = device_id(pomona, "globex", d.udid)
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        for path in (
            "",
            "/devices",
            f"/devices/{gid}",
            f"/devices/{gid}/retire",
            "/troubleshoot?upn=x",
            "/audit",
        ):
            r = browser.get(f"/console/t/globex{path}")
            assert r.status_code == 404, path
            assert "Globex secret phone" not in r.text
        # globex's device under acme's name is not found either
        assert browser.get(f"/console/t/acme/devices/{gid}").status_code == 404
        assert browser.post(f"/console/t/globex/devices/{gid}/retire", {"confirm": "yes"}).status_code == 404
        assert pomona.commands.device("globex", d.udid).enrollment is not None

    def test_operator_sees_every_tenant(
        self, pomona: Pomona, acme: TenantSetup, globex: TenantSetup, browser: Admin
    ) -> None:
        """The operator gets the list of tenants and opens each."""
        account(pomona, "op@example.com", "operator")
        r = browser.sign_in("op@example.com")
        assert set(re.findall(r'data-tenant="([^"]+)"', r.text)) == {"acme", "globex"}
        assert browser.get("/console/t/globex").status_code == 200

    def test_helpdesk_retires_and_repushes(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, browser: Admin
    ) -> None:
        """Helpdesk may retire (after confirming) and re-push; both are audited with who and from where."""
        d = enrolled(pomona, client, acme)
        did = device_id(pomona, "acme", d.udid)
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        browser.sign_in("hd@acme.example")
        browser.get(f"/console/t/acme/devices/{did}")
        assert browser.post(f"/console/t/acme/devices/{did}/repush").status_code == 303
        browser.get(f"/console/t/acme/devices/{did}/retire")
        r = browser.post(f"/console/t/acme/devices/{did}/retire", {})  # not confirmed: nothing happens
        assert r.headers["location"].endswith("/retire")
        assert pomona.commands.device("acme", d.udid).enrollment is not None
        browser.get(f"/console/t/acme/devices/{did}/retire")
        r = browser.post(f"/console/t/acme/devices/{did}/retire", {"confirm": "yes"})
        assert r.status_code == 303 and r.headers["location"].endswith("?done=retired")
        assert pomona.commands.device("acme", d.udid).enrollment is None
        log = pomona.console.audit_log("acme")
        got = [(e.actor, e.action, e.target, e.source) for e in log if e.action.startswith("device.")]
        assert got == [
            ("hd@acme.example", "device.retire", d.udid, "testclient"),
            ("hd@acme.example", "device.repush", d.udid, "testclient"),
        ]
        page = browser.get("/console/t/acme/audit").text
        assert re.findall(r'data-action="([a-z_.]+)"', page)[:3] == [
            "device.retire",
            "device.repush",
            "console.sign_in",
        ]

    def test_helpdesk_role_has_no_policy_or_certificate_changes(
        self, pomona: Pomona, acme: TenantSetup
    ) -> None:
        """The role table: helpdesk reads, diagnoses, retires and re-pushes, and nothing else."""
        from pomona.domain.errors import ForbiddenError

        hd = account(pomona, "hd@acme.example", "helpdesk", "acme")
        for action in ("read", "diagnose", "retire", "repush"):
            pomona.console.scope(hd, "acme", action)
        for action in ("policy", "certificate", "accounts"):
            with pytest.raises(ForbiddenError):
                pomona.console.scope(hd, "acme", action)


class TestPages:
    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_every_page_in_both_languages(
        self, pomona: Pomona, client: TestClient, app: object, acme: TenantSetup, lang: str
    ) -> None:
        """Dashboard, devices, device, retire, troubleshoot: 200 in the visitor's language, no raw keys."""
        d = enrolled(pomona, client, acme, device_name="Ana's iPhone")
        did = device_id(pomona, "acme", d.udid)
        account(pomona, "ad@acme.example", "admin", "acme")
        b = Admin(app, lang)
        b.sign_in("ad@acme.example")
        marker = {"en": "Devices", "zh-CN": "设备"}[lang]
        for path in (
            "",
            "/audit",
            "/devices",
            "/devices?sort=last_seen&q=Ana",
            f"/devices/{did}",
            f"/devices/{did}/retire",
            f"/troubleshoot?upn={acme.upn}&message=Profile+installation+failed",
        ):
            r = b.get(f"/console/t/acme{path}")
            assert r.status_code == 200, (path, r.text[:500])
            assert f'<html lang="{lang}">' in r.text and marker in r.text
            assert not re.search(r"\b(console|portal)\.[a-z_]+\.", strip_data(r.text)), path  # no raw key
            assert "Server-Timing" in r.headers or "server-timing" in r.headers
        b.close()

    def test_language_switch(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """The switch sets the lang cookie and goes back to the page (only within the console)."""
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        r = browser.get("/console/lang/zh-CN?next=/console/t/acme", follow_redirects=True)
        assert '<html lang="zh-CN">' in r.text and "健康检查发现" in r.text
        r = browser.get("/console/lang/en?next=https://evil.example/")
        assert r.headers["location"] == "/console"

    def test_device_controlled_values_are_escaped(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, browser: Admin
    ) -> None:
        """A device named <script> shows as text on the list, its page and the troubleshoot page."""
        d = enrolled(pomona, client, acme, device_name=EVIL)
        did = device_id(pomona, "acme", d.udid)
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        for path in (
            "/devices",
            f"/devices/{did}",
            f"/devices/{did}/retire",
            f"/troubleshoot?upn={acme.upn}",
            f"/troubleshoot?message={EVIL}&serial={EVIL}",
        ):
            r = browser.get(f"/console/t/acme{path}")
            assert r.status_code == 200, path
            assert "<script>" not in r.text, path
        assert (
            "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;"
            in browser.get("/console/t/acme/devices").text
        )

    def test_device_list_pages_by_keyset(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, browser: Admin
    ) -> None:
        """With more devices than a page, "next" leads to the rest, each device once, in name order."""
        for i in range(3):
            enrolled(pomona, client, acme, device_name=f"dev-{i}")
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        page = pomona.console.devices(pomona.console.list_accounts()[0][0], "acme", limit=2)
        assert [r.device.device_name for r in page.rows] == ["dev-0", "dev-1"] and page.total == 3
        rest = pomona.console.devices(pomona.console.list_accounts()[0][0], "acme", limit=2, after=page.next)
        assert [r.device.device_name for r in rest.rows] == ["dev-2"] and rest.next is None
        for junk in ("after=not-a-cursor", "after=WyJ4Il0", "sort=evil", "q=" + "x" * 5000):
            assert browser.get(f"/console/t/acme/devices?{junk}").status_code == 200, junk  # the first page
        assert browser.get("/console/t/acme/audit?before=x").status_code == 200
        r = browser.get("/console/t/acme/devices?q=dev-2")
        assert re.findall(r">dev-\d<", r.text) == [">dev-2<"]

    def test_troubleshoot_shows_the_diagnosis_and_the_users_devices(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, browser: Admin
    ) -> None:
        """Troubleshoot for a user shows a ranked diagnosis, the licence and the user's devices."""
        enrolled(pomona, client, acme, device_name="Ana phone")
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        browser.sign_in("hd@acme.example")
        r = browser.get(f"/console/t/acme/troubleshoot?upn={acme.upn}")
        assert r.status_code == 200 and re.search(r'id="diagnosis" data-top="[A-Z_]+"', r.text)
        assert 'data-licensed="True"' in r.text and "Ana phone" in r.text

    def test_unknown_paths_and_signed_out(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """Signed out, every page leads to the sign-in page; an unknown path is the console's 404."""
        assert browser.get("/console/t/acme/devices").headers["location"] == "/console/signin"
        r = browser.get("/console/nope")
        assert r.status_code == 404 and "Traceback" not in r.text


class TestDashboard:
    def test_findings_certificate_and_top_reasons(self, pomona: Pomona, browser: Admin) -> None:
        """Health's open findings critical first, a missing certificate, and the top failure reasons of 30
        days, each linking to its incident summary; a code without a text shows as itself."""
        from pomona.domain.models import Event, Outcome, Step

        bare = pomona.admin.create_tenant("bare", "bare.example")  # no authority, no push certificate
        found = pomona.health.run("bare")["findings"]
        now = pomona.clock.now()
        with pomona.db.unit_of_work() as uow:
            for reason, n in (("DEVICE_LIMIT_REACHED", 3), ("A_CODE_OF_ANOTHER_VERSION", 1)):
                for _ in range(n):
                    uow.events.append(Event(bare.id, now, Step.PORTAL, Outcome.FAILED, reason=reason))
        account(pomona, "ad@bare.example", "admin", "bare")
        r = browser.sign_in("ad@bare.example")
        assert r.status_code == 200
        shown = re.findall(r'<tr data-code="([A-Z_]+)">', r.text)
        assert "MDM_AUTHORITY_NOT_SET" in shown and shown == [f["code"] for f in found]
        reasons = re.findall(r'<tr data-reason="([A-Z_]+)">', r.text)
        assert reasons == ["DEVICE_LIMIT_REACHED", "A_CODE_OF_ANOTHER_VERSION"]
        assert "/reports/incident?code=DEVICE_LIMIT_REACHED" in r.text  # its incident summary
        assert 'data-days-left=""' in r.text  # no push certificate yet


class TestTroubleshoot:
    def test_device_limit_in_chinese(
        self, pomona: Pomona, client: TestClient, app: object, acme: TenantSetup
    ) -> None:
        """Helpdesk pastes the Chinese "profile installation failed" message for a user at their device
        limit: the top cause is DEVICE_LIMIT_REACHED, in Chinese, and the dry run refuses the same way."""
        from pomona.testing.virtual_device import EnrollmentRefused

        pomona.policy.edit_restriction("acme", type_="limit", default=True, limit=1)
        enrolled(pomona, client, acme, device_name="First phone")
        with pytest.raises(EnrollmentRefused):
            enrolled(pomona, client, acme, device_name="Second phone")
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        b = Admin(app, "zh-CN")
        b.sign_in("hd@acme.example")
        r = b.get(
            "/console/t/acme/troubleshoot",
            params={"upn": acme.upn, "message": "配置文件安装失败。无法建立到服务器的连接。"},
        )
        assert r.status_code == 200
        assert 'data-top="DEVICE_LIMIT_REACHED"' in r.text
        top = re.search(r'<li data-code="DEVICE_LIMIT_REACHED"[^>]*>\s*<strong>([^<]+)</strong>', r.text)
        assert top and re.search(r"[\u4e00-\u9fff]", top.group(1)), r.text[:2000]
        assert re.search(r'id="dry-run" data-allowed="False"', r.text)
        assert 'data-reason="DEVICE_LIMIT_REACHED"' in r.text and "First phone" in r.text
        b.close()


# --- users and groups, enrollment restrictions (issue 13, pages 4 and 5) ------------------------------


class TestUsersPage:
    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_users_and_restrictions_in_both_languages(
        self, pomona: Pomona, app: object, acme: TenantSetup, lang: str
    ) -> None:
        """Users and Restrictions (with a dry run) answer 200 in the visitor's language, no raw keys, and
        the navigation links to both."""
        two_limits(pomona, acme)
        account(pomona, "ad@acme.example", "admin", "acme")
        b = Admin(app, lang)
        b.sign_in("ad@acme.example")
        marker = {"en": "Enrollment restrictions", "zh-CN": "注册限制"}[lang]
        for path in (
            "/users",
            "/users?q=ana",
            "/restrictions",
            f"/restrictions?upn={acme.upn}&platform=ios&os=17.4",
            "/restrictions?upn=nobody@acme.example&os=not-a-version",
        ):
            r = b.get(f"/console/t/acme{path}")
            assert r.status_code == 200, (path, r.text[:500])
            assert f'<html lang="{lang}">' in r.text and marker in r.text
            assert 'id="nav-users"' in r.text and 'id="nav-restrictions"' in r.text
            assert not re.search(r"\b(console|portal|cli)\.[a-z_]+\.", strip_data(r.text)), path
        b.close()

    def test_keyset_pages_search_and_facts(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, browser: Admin
    ) -> None:
        """Users page by UPN with a keyset cursor, search by UPN prefix, and show licence, active devices,
        DEM and groups."""
        for i in range(4):
            pomona.admin.create_user("acme", f"bob{i}@acme.example", is_dem=i == 0)
        pomona.policy.create_group("acme", "Sales")
        pomona.policy.add_member("acme", "Sales", "bob1@acme.example")
        enrolled(pomona, client, acme)
        hd = account(pomona, "hd@acme.example", "helpdesk", "acme")
        first = pomona.console.users(hd, "acme", limit=2)
        assert [r.user.upn for r in first.rows] == ["ana@acme.example", "bob0@acme.example"]
        assert first.total == 5 and first.next == "bob0@acme.example"
        rest = pomona.console.users(hd, "acme", limit=10, after=first.next)
        assert [r.user.upn for r in rest.rows][:1] == ["bob1@acme.example"] and rest.next is None
        browser.sign_in("hd@acme.example")
        r = browser.get("/console/t/acme/users")
        rows = re.findall(
            r'<tr data-upn="([^"]+)" data-licensed="(\w+)" data-devices="(\d+)" data-dem="(\w+)"', r.text
        )
        assert rows[0] == ("ana@acme.example", "True", "1", "False")
        assert ("bob0@acme.example", "False", "0", "True") in rows
        assert "Sales" in r.text and "data-licence-action" not in r.text  # helpdesk: read-only
        r = browser.get("/console/t/acme/users?q=BOB1")
        assert re.findall(r'<tr data-upn="([^"]+)"', r.text) == ["bob1@acme.example"]
        assert 'id="next-page"' not in r.text
        for junk in ("after=" + "z" * 5000, "q=" + "%" * 400, "after=%01x"):
            assert browser.get(f"/console/t/acme/users?{junk}").status_code == 200, junk

    def test_admin_assigns_a_licence_helpdesk_is_refused(
        self, pomona: Pomona, app: object, acme: TenantSetup, browser: Admin
    ) -> None:
        """An admin assigns and removes a licence (CSRF, audited); helpdesk's POST is 403 and changes
        nothing; a forged CSRF token is refused."""
        pomona.admin.create_user("acme", "bob@acme.example")
        account(pomona, "ad@acme.example", "admin", "acme")
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        browser.sign_in("ad@acme.example")
        browser.get("/console/t/acme/users")
        form = {"upn": "bob@acme.example", "assign": "yes"}
        assert browser.post("/console/t/acme/users/licence", form, csrf="forged").status_code == 403
        r = browser.post("/console/t/acme/users/licence", form)
        assert r.status_code == 303 and "done=licence.assign" in r.headers["location"]
        assert pomona.policy.user_detail("acme", "bob@acme.example").user.licensed
        r = browser.get(r.headers["location"])
        assert 'data-notice="licence.assign"' in r.text
        hd = Admin(app)
        hd.sign_in("hd@acme.example")
        hd.get("/console/t/acme/users")
        r = hd.post("/console/t/acme/users/licence", {"upn": "bob@acme.example", "assign": "no"})
        assert r.status_code == 403 and 'data-message="console.error.role.body"' in r.text
        hd.close()
        assert pomona.policy.user_detail("acme", "bob@acme.example").user.licensed
        log = [(e.actor, e.action, e.target) for e in pomona.console.audit_log("acme")]
        assert log[0] == ("hd@acme.example", "console.refused", "policy")
        assert ("ad@acme.example", "licence.assign", "bob@acme.example") in log


class TestRestrictionsPage:
    def test_priority_change_reorders_and_the_dry_run_follows(
        self, pomona: Pomona, acme: TenantSetup, browser: Admin
    ) -> None:
        """The dry run names Tight (via Sales); an admin gives Tight priority 3: the list shows Loose
        first, the dry run now names Loose (via Staff), and the change is audited."""
        tight, loose = two_limits(pomona, acme)
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        r = browser.get(f"/console/t/acme/restrictions?upn={acme.upn}")
        assert f'data-limit-restriction="{tight}"' in r.text and "Sales" in r.text
        limits = r.text[r.text.index('id="restrictions-limit"') :]
        assert re.findall(r'data-name="([^"]+)"', limits) == ["Tight", "Loose", "Default limit restriction"]
        r = browser.post(f"/console/t/acme/restrictions/{tight}/priority", {"priority": "3", "upn": acme.upn})
        assert r.status_code == 303, r.text[:500]
        r = browser.get(r.headers["location"])
        assert 'data-notice="priority"' in r.text
        assert f'data-limit-restriction="{loose}"' in r.text and "Staff" in r.text
        limits = r.text[r.text.index('id="restrictions-limit"') :]
        assert re.findall(r'data-name="([^"]+)"', limits) == ["Loose", "Tight", "Default limit restriction"]
        assert priorities(pomona, "acme")["Tight"] == 3
        entry = pomona.console.audit_log("acme")[0]
        assert (entry.actor, entry.action, entry.target) == (
            "ad@acme.example",
            "restriction.priority",
            "Tight",
        )
        assert entry.detail == {"type": "limit", "from": 1, "to": 3}
        # a taken priority, a bad one: the page says why, nothing changes
        assert (
            browser.post(f"/console/t/acme/restrictions/{loose}/priority", {"priority": "3"}).status_code
            == 409
        )
        assert browser.get("/console/t/acme/restrictions").status_code == 200
        for bad in ("0", "x", "-1", "99999999999"):
            r = browser.post(f"/console/t/acme/restrictions/{loose}/priority", {"priority": bad})
            assert r.status_code == 422, bad
            browser.get("/console/t/acme/restrictions")
        assert priorities(pomona, "acme")["Loose"] == 2

    def test_helpdesk_is_refused_a_policy_change(
        self, pomona: Pomona, acme: TenantSetup, browser: Admin
    ) -> None:
        """Helpdesk reads the page and runs the dry run, sees no change form; its POST is 403, the
        priority stays, and the refusal leaves an audit entry and an event."""
        tight, _ = two_limits(pomona, acme)
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        browser.sign_in("hd@acme.example")
        r = browser.get(f"/console/t/acme/restrictions?upn={acme.upn}")
        assert r.status_code == 200 and f'data-limit-restriction="{tight}"' in r.text
        assert "data-priority-submit" not in r.text
        r = browser.post(f"/console/t/acme/restrictions/{tight}/priority", {"priority": "3"})
        assert r.status_code == 403 and 'data-message="console.error.role.body"' in r.text
        assert priorities(pomona, "acme")["Tight"] == 1
        entry = pomona.console.audit_log("acme")[0]
        assert (entry.actor, entry.action) == ("hd@acme.example", "console.refused")
        with pomona.db.unit_of_work(readonly=True) as uow:
            events = uow.events.query(acme.tenant_id, limit=5)
        assert any(e.reason == "API_AUTH_FAILED" and e.step.value == "admin" for e in events)

    def test_tenant_admin_cannot_change_another_tenants_restriction(
        self, pomona: Pomona, acme: TenantSetup, globex: TenantSetup, browser: Admin
    ) -> None:
        """acme's admin gets 404 for globex's restriction, by id under acme's name or under globex's."""
        theirs, _ = two_limits(pomona, globex)
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        browser.get("/console/t/acme/restrictions")
        for path in (
            f"/console/t/acme/restrictions/{theirs}/priority",
            f"/console/t/globex/restrictions/{theirs}/priority",
        ):
            assert browser.post(path, {"priority": "7"}).status_code == 404, path
            browser.get("/console/t/acme/restrictions")
        assert browser.get("/console/t/globex/restrictions").status_code == 404
        assert browser.get("/console/t/globex/users").status_code == 404
        assert priorities(pomona, "globex")["Tight"] == 1

    def test_user_and_admin_values_are_escaped(
        self, pomona: Pomona, acme: TenantSetup, browser: Admin
    ) -> None:
        """A user, a group and a restriction named <script> show as text on both pages and the dry run."""
        pomona.admin.create_user("acme", "eve@acme.example", display_name=EVIL)
        pomona.policy.create_group("acme", EVIL)
        pomona.policy.add_member("acme", EVIL, "eve@acme.example")
        pomona.policy.create_restriction("acme", type_="limit", priority=1, groups=[EVIL], name=EVIL, limit=2)
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        for path in (
            "/users",
            "/users?q=" + EVIL,
            "/restrictions?upn=eve@acme.example",
            f"/restrictions?upn={EVIL}",
        ):
            r = browser.get(f"/console/t/acme{path}")
            assert r.status_code == 200 and "<script>" not in r.text, path
        assert "&lt;script&gt;" in browser.get("/console/t/acme/restrictions?upn=eve@acme.example").text


# --- Apple settings (issue 13, page 7): push certificate, ABM tokens, ADE profiles ---------------------
APPLE = "/console/t/acme/apple"


def upload(b: Admin, path: str, field: str, data: bytes, **form: str) -> httpx.Response:
    """A multipart POST of one file with the page's CSRF token (as the browser's upload form sends)."""
    r = b.c.post(
        path, data={"csrf": b.csrf(), **form}, files={field: ("upload.bin", data, "application/octet-stream")}
    )
    b.last = r.text
    return r


def signed_by_apple(b: Admin, apple: Any, topic: str | None) -> bytes:
    """Download a request from the page and have the APNs emulator (Apple's portal) sign it: the same
    topic renews, None makes a new certificate (another topic)."""
    b.get(APPLE)
    r = b.post(f"{APPLE}/push/csr", {"email": "it-admin@acme.example"})
    assert r.status_code == 200 and "BEGIN CERTIFICATE REQUEST" in r.text, r.text[:300]
    assert r.headers["content-disposition"] == 'attachment; filename="acme-push.csr"'
    return bytes(apple.sign_push_request(r.text, topic))


@pytest.fixture
def abm_emu() -> Iterator[Any]:
    """An ABM emulator with 5 devices over HTTP."""
    from pomona.testing.abm_emulator import AbmEmulator

    emu = AbmEmulator(devices=5, serial_prefix="ACME")
    server = emu.serve_in_thread()
    emu.url = server.url
    yield emu
    server.close()


@pytest.fixture
def abm_app(abm_emu: Any, pomona: Pomona, db_url: str, tmp_path: Any) -> Iterator[object]:
    """The console of a Pomona on the test's database and data folder that reaches the ABM emulator."""
    from pomona.app import Settings, build

    p = build(
        Settings(
            data_dir=tmp_path,
            database_url=db_url,
            public_url="https://pomona.test",
            abm_url=abm_emu.url,
            abm_assign_backoff=0,
        )
    )
    yield create_app(pomona=p, eager=False)
    p.close()


class TestAppleSettings:
    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_page_for_admin_and_helpdesk(
        self, pomona: Pomona, app: object, acme: TenantSetup, lang: str
    ) -> None:
        """The page shows the certificate's topic and countdown in both languages, linked from the
        navigation; the admin gets every form, helpdesk the same facts and no form."""
        account(pomona, "ad@acme.example", "admin", "acme")
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        for email, forms in (("ad@acme.example", 5), ("hd@acme.example", 0)):  # no token: no sync form
            b = Admin(app, lang)
            b.sign_in(email)
            assert 'id="nav-apple"' in b.last
            r = b.get(APPLE)
            assert r.status_code == 200 and f'<html lang="{lang}">' in r.text
            assert (
                acme.topic in r.text
                and int(re.search(r'id="push-expiry" data-days-left="(\d+)"', r.text)[1]) > 300
            )  # type: ignore[index]
            assert 'id="renewal-guidance"' in r.text and 'id="canary" data-result="' in r.text
            assert len(re.findall(r"data-apple-form=", r.text)) == forms, email
            assert not re.search(r"\b(console|portal|cli|error)\.[a-z_]+\.", strip_data(r.text))
            assert ("Apple 设置" if lang == "zh-CN" else "Apple settings") in r.text
            b.close()

    def test_renewal_accepted_another_topic_refused(
        self, pomona: Pomona, acme: TenantSetup, browser: Admin
    ) -> None:
        """An admin downloads a CSR and uploads Apple's renewal (same topic): accepted, audited; a
        certificate of another topic is refused with APNS_TOPIC_CHANGED and the catalogue's text, and
        nothing changes; "replace" without its confirmation is refused too; both ticked, it replaces."""
        from pomona.testing.apns_emulator import ApnsEmulator

        apple = ApnsEmulator()  # its portal signs requests; nothing is served
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        renewed = signed_by_apple(browser, apple, acme.topic)
        browser.get(APPLE)
        r = upload(browser, f"{APPLE}/push", "cert", renewed, apple_id="it-admin@acme.example")
        assert r.status_code == 303 and r.headers["location"].endswith("?done=renewed"), r.text[:500]
        r = browser.get(r.headers["location"])
        assert 'data-notice="renewed"' in r.text and "it-admin@acme.example" in r.text
        assert 'id="canary" data-result="no_enrolled_devices"' in r.text  # the upload's canary, recorded
        other = signed_by_apple(browser, apple, None)
        apple.close()
        browser.get(APPLE)
        r = upload(browser, f"{APPLE}/push", "cert", other)
        assert r.status_code == 409 and 'id="push-refusal" data-reason="APNS_TOPIC_CHANGED"' in r.text
        assert acme.topic in r.text and 'id="replace-guard"' in r.text and "Traceback" not in r.text
        assert pomona.apns.status("acme")["topic"] == acme.topic
        r = upload(browser, f"{APPLE}/push", "cert", other, replace="yes")
        assert r.status_code == 422 and 'id="replace-guard"' in r.text
        with pomona.db.unit_of_work(readonly=True) as uow:
            last = uow.events.query(acme.tenant_id, limit=1)[0]
        assert (last.reason, last.detail.get("field")) == ("INVALID_INPUT", "confirm")  # the refusal's event
        assert pomona.apns.status("acme")["topic"] == acme.topic
        r = upload(browser, f"{APPLE}/push", "cert", b"not a certificate")
        assert r.status_code == 422 and 'data-reason="APNS_CERT_INVALID"' in r.text
        r = upload(browser, f"{APPLE}/push", "cert", other, replace="yes", confirm="yes")
        assert r.status_code == 303 and r.headers["location"].endswith("?done=replaced")
        assert pomona.apns.status("acme")["topic"] != acme.topic
        log = [(e.action, e.detail.get("reason")) for e in pomona.console.audit_log("acme")]
        assert log[:5] == [
            ("apns.replace", None),
            ("console.change_refused", "APNS_CERT_INVALID"),
            ("console.change_refused", "INVALID_INPUT"),
            ("console.change_refused", "APNS_TOPIC_CHANGED"),
            ("apns.csr", None),
        ]
        assert ("apns.renew", None) in log

    def test_abm_token_upload_sync_and_profiles(
        self, abm_emu: Any, abm_app: object, pomona: Pomona, acme: TenantSetup
    ) -> None:
        """The ABM certificate downloads, the token ABM encrypts to it uploads, "sync now" shows its
        report; a profile the linter blocks is refused per field (DEP_PROFILE_REJECTED, nothing kept or
        sent), a good default one is defined at ABM and its devices counted."""
        account(pomona, "ad@acme.example", "admin", "acme")
        browser = Admin(abm_app)
        browser.sign_in("ad@acme.example")
        browser.get(APPLE)
        r = browser.post(f"{APPLE}/abm/keypair")
        assert r.status_code == 200 and "BEGIN CERTIFICATE" in r.text
        p7m = abm_emu.issue_token(r.content)
        browser.get(APPLE)
        assert upload(browser, f"{APPLE}/abm/token", "token", b"junk").status_code == 422
        assert 'id="abm-refusal" data-reason="DEP_TOKEN_INVALID"' in browser.last
        r = upload(browser, f"{APPLE}/abm/token", "token", p7m, name="main")
        assert r.status_code == 303 and r.headers["location"].endswith("?done=token")
        r = browser.get(r.headers["location"])
        assert '<tr data-token="main" data-state="ok">' in r.text
        abm_emu.set_fault("terms-not-accepted")  # Apple refuses: the reason on the page and on the token
        r = browser.post(f"{APPLE}/abm/sync", {"token": ""})
        assert r.status_code == 502 and 'id="abm-refusal" data-reason="DEP_TERMS_NOT_ACCEPTED"' in r.text
        assert '<span data-error="DEP_TERMS_NOT_ACCEPTED">' in r.text and "Traceback" not in r.text
        abm_emu.set_fault("clear")
        r = browser.post(f"{APPLE}/abm/sync", {"token": ""})
        assert r.status_code == 200 and '<tr data-synced="main" data-fetched="5">' in r.text, re.findall(
            r'id="abm-refusal".*?</div>', r.text, re.S
        )
        r = browser.post(f"{APPLE}/profiles", {"name": "staff", "auth": "modern", "skip": "Siri Bogus"})
        assert r.status_code == 422 and 'id="profile-refusal" data-reason="DEP_PROFILE_REJECTED"' in r.text
        assert re.search(r'data-lint-field="skip_setup_items"><li data-rule="skip_item_unknown"', r.text)
        assert re.search(
            r'data-lint-field="is_mdm_removable"><li data-rule="removable_needs_supervision"', r.text
        )
        assert 'value="Siri Bogus"' in r.text  # the form keeps what was typed
        assert pomona.abm.profiles("acme") == [] and abm_emu.s.profiles == {}
        form = {"name": "staff", "auth": "modern", "supervised": "yes", "skip": "Siri, TOS", "default": "yes"}
        r = browser.post(f"{APPLE}/profiles", form)
        assert r.status_code == 303 and r.headers["location"].endswith("?done=profile"), r.text[:800]
        browser.get(APPLE)
        browser.post(f"{APPLE}/abm/sync", {"token": "main"})  # ABM now shows the profile on its devices
        r = browser.get(APPLE)
        row = re.search(
            r'<tr data-profile="staff" data-auth="modern" data-default="True" data-wanted="(\d+)" data-held="(\d+)"',
            r.text,
        )
        assert row and row.groups() == ("5", "5"), r.text[r.text.find('id="ade-profiles"') :][:800]
        actions = [e.action for e in pomona.console.audit_log("acme")]
        for a in (
            "abm.keypair",
            "abm.token_upload",
            "abm.sync",
            "ade_profile.create",
            "console.change_refused",
        ):
            assert a in actions, a
        browser.close()

    def test_helpdesk_and_other_tenants_are_refused(
        self, pomona: Pomona, app: object, acme: TenantSetup, globex: TenantSetup, browser: Admin
    ) -> None:
        """Helpdesk's every POST is 403 and changes nothing (audited, an event); acme's admin gets 404 for
        globex's page and forms."""
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        browser.sign_in("hd@acme.example")
        browser.get(APPLE)
        for path, form in (
            ("/push/csr", {}),
            ("/abm/keypair", {}),
            ("/abm/sync", {}),
            ("/profiles", {"name": "p", "auth": "modern", "supervised": "yes"}),
        ):
            r = browser.post(APPLE + path, form)
            assert r.status_code == 403 and 'data-message="console.error.role.body"' in r.text, path
            browser.get(APPLE)
        r = upload(browser, f"{APPLE}/push", "cert", make_cert())
        assert r.status_code == 403
        assert pomona.apns.status("acme")["pending_csr"] is False and pomona.abm.certificate("acme") is None
        refused = [e.detail for e in pomona.console.audit_log("acme") if e.action == "console.refused"]
        assert len(refused) == 5
        account(pomona, "ad@acme.example", "admin", "acme")
        b = Admin(app)
        b.sign_in("ad@acme.example")
        b.get(APPLE)
        assert b.get("/console/t/globex/apple").status_code == 404 and globex.topic not in b.last
        b.get(APPLE)
        assert b.post("/console/t/globex/apple/push/csr").status_code == 404
        b.get(APPLE)
        assert upload(b, "/console/t/globex/apple/push", "cert", make_cert()).status_code == 404
        assert pomona.apns.status("globex")["pending_csr"] is False
        b.close()


def make_cert() -> bytes:
    from pomona.testing.pushcert import make_standin_push_cert

    return make_standin_push_cert()[0]


class TestAppleSettingsValues:
    def test_admin_values_are_escaped(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """An Apple ID and an ADE profile named <script> show as text on the Apple settings page."""
        from pomona.testing.pushcert import make_standin_push_cert

        cert, key = make_standin_push_cert(acme.topic)
        pomona.apns.upload("acme", cert, key, apple_id=EVIL, canary=False)
        pomona.abm.create_profile("acme", EVIL)  # no token yet: kept, defined at ABM later
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        r = browser.get(APPLE)
        assert r.status_code == 200 and "<script>" not in r.text
        assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in r.text
        assert 'data-wanted="0" data-held="0" data-failing="0"' in r.text

    def test_p12_renewal_with_its_password(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """A .p12 of the same topic, with its password, renews; a wrong password is APNS_CERT_INVALID."""
        from pomona.pki.apns_certs import load_pem_cert, load_pem_key, make_p12
        from pomona.testing.pushcert import make_standin_push_cert

        cert, key = make_standin_push_cert(acme.topic)
        p12 = make_p12(load_pem_cert(cert), load_pem_key(key), b"secret")
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        browser.get(APPLE)
        r = upload(browser, f"{APPLE}/push", "cert", p12, password="wrong")
        assert r.status_code == 422 and 'data-reason="APNS_CERT_INVALID"' in r.text
        r = upload(browser, f"{APPLE}/push", "cert", p12, password="secret")
        assert r.status_code == 303 and r.headers["location"].endswith("?done=renewed")


# --- pages 6 and 10: corporate identifiers, administration (http/console_admin.py) ------------------
CORP = "/console/t/acme/corporate"
ADMIN = "/console/t/acme/admin"


def csv_upload(b: Admin, path: str, text: str) -> httpx.Response:
    r = b.c.post(path, data={"csrf": b.csrf()}, files={"file": ("ids.csv", text.encode(), "text/csv")})
    b.last = r.text
    return r


def audited(p: Pomona, tenant: str, action: str) -> list[Any]:
    return [e for e in p.console.audit_log(tenant, limit=200) if e.action == action]


class TestCorporatePage:
    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_csv_per_row_report_then_import(
        self, pomona: Pomona, app: object, acme: TenantSetup, lang: str
    ) -> None:
        """A bad row imports nothing and the report names each row (reason code, text in the language);
        the good file imports, is audited, and the list shows the statuses."""
        account(pomona, "ad@acme.example", "admin", "acme")
        b = Admin(app, lang)
        b.sign_in("ad@acme.example")
        b.get(CORP)
        r = csv_upload(
            b, CORP, f"serial,description\nF2LX12345678,cart\nbad!,x\nF2LX12345678,again\n{EVIL},y\n"
        )
        assert r.status_code == 422
        rows = re.findall(r'data-row="(\d+)" data-result="(\w+)" data-reason="(\w*)"', r.text)
        assert rows == [
            ("2", "accepted", ""),
            ("3", "error", "INVALID_INPUT"),
            ("4", "error", "INVALID_INPUT"),
            ("5", "error", "INVALID_INPUT"),
        ]
        assert {"en": "Duplicate of an earlier row", "zh-CN": "与前面的某一行重复"}[lang] in r.text
        assert EVIL not in r.text and "&lt;script&gt;" in r.text
        assert pomona.policy.list_corporate("acme") == []
        assert audited(pomona, "acme", "console.change_refused")[0].detail["rows"] == [3, 4, 5]
        b.get(CORP)
        r = csv_upload(b, CORP, "F2LX12345678,cart\n35 209900 176148 1\n")
        assert r.status_code == 200 and 'data-imported="2"' in r.text
        assert 'data-identifier="F2LX12345678" data-state="not_contacted"' in r.text
        assert {"en": "not contacted", "zh-CN": "未联系"}[lang] in r.text
        (entry,) = audited(pomona, "acme", "corporate.import")
        assert entry.actor == "ad@acme.example" and entry.detail == {"imported": 2, "unchanged": 0}
        b.close()

    def test_bounds_helpdesk_and_other_tenants(
        self, pomona: Pomona, app: object, acme: TenantSetup, globex: TenantSetup, browser: Admin
    ) -> None:
        """A file over the bound or not UTF-8 is refused (event and audit); helpdesk reads but an upload is
        403; another tenant's page is 404; a POST without the CSRF token is refused."""
        from pomona.http.console_admin import MAX_CSV

        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        browser.get(CORP)
        r = csv_upload(browser, CORP, "F2LX12345678\n" * (MAX_CSV // 13 + 1))
        assert r.status_code == 422 and 'data-reason="INVALID_INPUT"' in r.text
        browser.get(CORP)
        r = browser.c.post(
            CORP, data={"csrf": browser.csrf()}, files={"file": ("x.csv", b"\xff\xfe\x00", "text/csv")}
        )
        assert r.status_code == 422 and 'id="import-refusal"' in r.text
        assert pomona.commands.events("acme", reason="INVALID_INPUT")
        assert len(audited(pomona, "acme", "console.change_refused")) == 2
        r = browser.c.post(
            CORP, data={"csrf": "nope"}, files={"file": ("x.csv", b"F2LX12345678\n", "text/csv")}
        )
        assert r.status_code == 403 and pomona.policy.list_corporate("acme") == []
        assert browser.get("/console/t/globex/corporate").status_code == 404
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        hd = Admin(app)
        hd.sign_in("hd@acme.example")
        assert hd.get(CORP).status_code == 200 and 'id="corporate-form"' not in hd.last
        r = csv_upload(hd, CORP, "F2LX12345678\n")
        assert r.status_code == 403 and pomona.policy.list_corporate("acme") == []
        assert audited(pomona, "acme", "console.refused")[0].actor == "hd@acme.example"
        hd.close()


@pytest.fixture
def hook_receiver() -> Iterator[Any]:
    """A local webhook receiver (the tests' app allows private targets: POMONA_WEBHOOK_ALLOW_PRIVATE)."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    hits: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            hits.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(500 if len(hits) > 1 else 204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    server.hits = hits  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def private_app(pomona: Pomona, db_url: str, tmp_path: Any) -> Iterator[tuple[Pomona, object]]:
    """The console of a Pomona on the test's database that may deliver webhooks to a local receiver."""
    from pomona.app import Settings, build

    p = build(
        Settings(
            data_dir=tmp_path,
            database_url=db_url,
            public_url="https://pomona.test",
            webhook_allow_private=True,
        )
    )
    yield p, create_app(pomona=p, eager=False)
    p.close()


class TestAdministrationPage:
    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_accounts_tokens_links_in_both_languages(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup, lang: str
    ) -> None:
        """An admin creates and disables a helpdesk account, creates an API token (its secret shown once,
        working on the API) and revokes it (the API refuses it), revokes a link; each audited."""
        account(pomona, "ad@acme.example", "admin", "acme")
        b = Admin(app, lang)
        b.sign_in("ad@acme.example")
        assert b.get(ADMIN).status_code == 200
        assert {"en": "Admin accounts and roles", "zh-CN": "管理员账户和角色"}[lang] in b.last
        r = b.post(
            f"{ADMIN}/accounts", {"email": "New.HD@acme.example", "password": PASSWORD, "role": "helpdesk"}
        )
        assert r.status_code == 303 and r.headers["location"].endswith("?done=account.create")
        new = next(a for a, _ in pomona.console.list_accounts("acme") if a.email == "new.hd@acme.example")
        assert new.role == "helpdesk" and new.tenant_id == acme.tenant_id
        b.get(ADMIN)
        r = b.post(
            f"{ADMIN}/accounts", {"email": "op2@acme.example", "password": PASSWORD, "role": "operator"}
        )
        assert r.status_code == 422 and 'id="account-refusal"' in r.text
        assert all(a.email != "op2@acme.example" for a, _ in pomona.console.list_accounts())
        r = b.post(f"{ADMIN}/accounts/{new.id}/disable")
        assert r.status_code == 303
        assert not next(a for a, _ in pomona.console.list_accounts("acme") if a.id == new.id).enabled
        # An API token: the secret once, in the POST's answer only.
        b.get(ADMIN)
        r = b.post(f"{ADMIN}/tokens", {"name": f"ci {EVIL}", "days": "30"})
        assert r.status_code == 200 and "no-store" in r.headers["cache-control"]
        secret = re.search(r'id="token-secret">([^<]+)<', r.text)
        assert secret and EVIL not in r.text
        auth = {"Authorization": f"Bearer {secret.group(1)}"}
        assert client.get("/api/v1/tenants/acme/devices", headers=auth).status_code == 200
        page = b.get(ADMIN).text
        assert secret.group(1) not in page
        tok = next(x for x in pomona.admin.list_api_tokens("acme") if x.name.startswith("ci "))
        assert f'data-token="{tok.id}" data-state="active"' in page
        r = b.post(f"{ADMIN}/tokens/{tok.id}/revoke")
        assert r.status_code == 303 and f'data-token="{tok.id}" data-state="revoked"' in b.get(ADMIN).text
        refused = client.get("/api/v1/tenants/acme/devices", headers=auth)
        assert refused.status_code in (401, 403) and refused.json()["reason"] == "API_TOKEN_REVOKED"
        # Enrollment links.
        (link, user) = pomona.admin.list_enrollment_tokens("acme")[0]
        assert (
            f'data-link="{link.id}" data-state="active"' in b.last and user is not None and user.upn in b.last
        )
        r = b.post(f"{ADMIN}/links/{link.id}/revoke")
        assert r.status_code == 303 and f'data-link="{link.id}" data-state="revoked"' in b.get(ADMIN).text
        actions = [(e.actor, e.action) for e in pomona.console.audit_log("acme", limit=100)]
        for action in (
            "admin.create",
            "admin.disable",
            "token.create",
            "token.revoke",
            "enroll_token.revoke",
        ):
            assert ("ad@acme.example", action) in actions, action
        assert ("ad@acme.example", "console.change_refused") in actions  # the operator role refused
        b.close()

    def test_helpdesk_reads_and_is_refused_every_change(
        self, pomona: Pomona, app: object, acme: TenantSetup, browser: Admin
    ) -> None:
        """Helpdesk sees the page without its forms; every POST is 403 (change_scope: audited)."""
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        browser.sign_in("hd@acme.example")
        assert browser.get(ADMIN).status_code == 200 and 'id="token-form"' not in browser.last
        tok = pomona.admin.list_api_tokens("acme")[0]
        link = pomona.admin.list_enrollment_tokens("acme")[0][0]
        for path, form in (
            ("/accounts", {"email": "x@acme.example", "password": PASSWORD, "role": "admin"}),
            ("/tokens", {"name": "x", "days": "30"}),
            (f"/tokens/{tok.id}/revoke", {}),
            (f"/links/{link.id}/revoke", {}),
            ("/webhook", {"url": "https://hooks.example/x", "secret": "s" * 20}),
            ("/webhook/test", {}),
        ):
            r = browser.post(ADMIN + path, form)
            assert r.status_code == 403 and 'data-message="console.error.role.body"' in r.text, path
            browser.get(ADMIN)
        assert pomona.admin.list_api_tokens("acme")[0].revoked_at is None
        assert len(audited(pomona, "acme", "console.refused")) == 6

    def test_tenant_isolation_by_url(
        self, pomona: Pomona, app: object, acme: TenantSetup, globex: TenantSetup, browser: Admin
    ) -> None:
        """acme's admin cannot revoke globex's token or link, nor disable its account, by id: 404."""
        account(pomona, "ad@acme.example", "admin", "acme")
        other = account(pomona, "ad@globex.example", "admin", "globex")
        browser.sign_in("ad@acme.example")
        tok = pomona.admin.list_api_tokens("globex")[0]
        link = pomona.admin.list_enrollment_tokens("globex")[0][0]
        assert browser.get("/console/t/globex/admin").status_code == 404
        for path in (f"/tokens/{tok.id}/revoke", f"/links/{link.id}/revoke", f"/accounts/{other.id}/disable"):
            browser.get(ADMIN)
            assert browser.post(ADMIN + path).status_code == 404, path
            browser.get(ADMIN)
            assert browser.post("/console/t/globex/admin" + path).status_code == 404, path
        assert pomona.admin.list_api_tokens("globex")[0].revoked_at is None
        assert pomona.admin.list_enrollment_tokens("globex")[0][0].revoked is False
        assert next(a for a, _ in pomona.console.list_accounts("globex")).enabled

    def test_webhook_set_and_test_shows_the_delivery(
        self, private_app: tuple[Pomona, object], acme: TenantSetup, hook_receiver: Any
    ) -> None:
        """The admin sets the webhook and presses test: delivered (HTTP 204), then failed (HTTP 500, its
        error shown); both audited; a loopback target is refused where private targets are not allowed."""
        p, app = private_app
        account(p, "ad@acme.example", "admin", "acme")
        b = Admin(app, "zh-CN")
        b.sign_in("ad@acme.example")
        b.get(ADMIN)
        url = f"http://127.0.0.1:{hook_receiver.server_address[1]}/hook?n={EVIL}"
        r = b.post(f"{ADMIN}/webhook", {"url": url, "secret": "s3cret-s3cret-s3cret"})
        assert r.status_code == 303
        page = b.get(ADMIN).text
        assert EVIL not in page and 'id="webhook-url">http://127.0.0.1:' in page and "&lt;script&gt;" in page
        r = b.post(f"{ADMIN}/webhook/test")
        assert r.status_code == 200 and 'data-status="delivered" data-http-status="204"' in r.text
        assert "测试已送达" in r.text and len(hook_receiver.hits) == 1
        r = b.post(f"{ADMIN}/webhook/test")
        assert 'data-status="failed" data-http-status="500"' in r.text and "HTTP 500" in r.text
        tests = [e.detail["status"] for e in audited(p, "acme", "webhook.test")]
        assert sorted(tests) == ["delivered", "failed"] and audited(p, "acme", "webhook.set")
        b.close()

    def test_loopback_webhook_refused_without_the_setting(
        self, pomona: Pomona, acme: TenantSetup, browser: Admin
    ) -> None:
        """The default server refuses a loopback webhook (WEBHOOK_TARGET_REFUSED) beside the form; a test
        without a webhook says so."""
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        browser.get(ADMIN)
        r = browser.post(
            f"{ADMIN}/webhook", {"url": "http://127.0.0.1:9/hook", "secret": "s3cret-s3cret-s3cret"}
        )
        assert r.status_code == 422 and 'data-reason="WEBHOOK_TARGET_REFUSED"' in r.text
        r = browser.post(f"{ADMIN}/webhook/test")
        assert r.status_code == 404 and 'id="webhook-refusal"' in r.text

    def test_audit_filters(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """The audit log filters by who, action (prefix), from and date; the older link keeps them."""
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        pomona.console.audit("cli", "token.create", acme.tenant_id, "x", "cli", {})
        page = browser.get("/console/t/acme/audit?who=ad@acme.example").text
        assert set(re.findall(r'data-action="([a-z_.]+)"', page)) == {"console.sign_in"}
        page = browser.get("/console/t/acme/audit?action=token.").text
        assert re.findall(r'data-action="([a-z_.]+)"', page) == ["token.create"]
        page = browser.get("/console/t/acme/audit?from=testclient").text
        assert set(re.findall(r'data-action="([a-z_.]+)"', page)) == {"console.sign_in"}
        page = browser.get("/console/t/acme/audit?from=cli").text
        assert re.findall(r'data-action="([a-z_.]+)"', page) == ["token.create", "admin.create"]
        today = pomona.clock.now().date().isoformat()
        page = browser.get(f"/console/t/acme/audit?since={today}&until={today}").text
        assert "token.create" in page and 'value="' + today + '"' in page
        page = browser.get("/console/t/acme/audit?until=2001-01-01").text
        assert re.findall(r'data-action="([a-z_.]+)"', page) == []
        assert browser.get("/console/t/acme/audit?since=nonsense&who=%3Cscript%3E").status_code == 200
        assert "<script>" not in browser.last

    def test_operator_server_tokens(
        self, pomona: Pomona, app: object, client: TestClient, acme: TenantSetup, browser: Admin
    ) -> None:
        """An operator creates a server-wide token on a tenant's page and revokes it; a tenant admin is
        refused a server token (audited) and does not see the server's tokens."""
        account(pomona, "op@example.com", "operator")
        browser.sign_in("op@example.com")
        browser.get(ADMIN)
        r = browser.post(f"{ADMIN}/tokens", {"name": "fleet", "days": "0", "scope": "server"})
        assert r.status_code == 200 and 'id="token-secret"' in r.text
        tok = next(x for x in pomona.admin.list_api_tokens() if x.name == "fleet")
        assert tok.tenant_id is None and tok.expires_at is None
        assert f'data-token="{tok.id}" data-state="active"' in browser.get(ADMIN).text
        account(pomona, "ad@acme.example", "admin", "acme")
        b = Admin(app)
        b.sign_in("ad@acme.example")
        assert f'data-token="{tok.id}"' not in b.get(ADMIN).text and 'name="scope"' not in b.last
        r = b.post(f"{ADMIN}/tokens", {"name": "mine", "days": "7", "scope": "server"})
        assert r.status_code == 422 and 'id="token-refusal"' in r.text
        assert all(x.name != "mine" for x in pomona.admin.list_api_tokens())
        b.get(ADMIN)
        assert b.post(f"{ADMIN}/tokens/{tok.id}/revoke").status_code == 404
        b.close()
        browser.get(ADMIN)
        assert browser.post(f"{ADMIN}/tokens/{tok.id}/revoke").status_code == 303
        assert next(x for x in pomona.admin.list_api_tokens() if x.id == tok.id).revoked_at is not None
        assert ("op@example.com", "token.revoke") in [
            (e.actor, e.action) for e in pomona.console.audit_log("acme")
        ]


# --- the device list's filters, the device page's actions, troubleshoot's actions -------------------
# (name, product, OS, active/ended enrollment type or None, its status, awaiting, days since last check-in)
FLEET: list[tuple[str, str, str, str | None, str, bool, int | None]] = [
    ("phone-byod", "iPhone15,2", "17.4", "byod", "active", False, 1),
    ("phone-corp", "iPhone14,7", "16.7.2", "corporate", "active", False, 40),
    ("pad-ade", "iPad13,18", "18.1", "ade", "active", True, 0),
    ("pad-dem", "iPad13,18", "17.0", "dem", "active", False, 10),
    ("phone-retired", "iPhone15,2", "9.3", "byod", "retired", False, 100),
    ("pod-idle", "iPod9,1", "15.8", None, "", False, None),
    ("phone-corpid", "iPhone15,2", "17.5", "byod", "active", False, 2),
    ("phone-blocked", "iPhone15,2", "16.0", "byod", "active", False, 3),
    ("phone-silent", "iPhone15,2", "16.1", "byod", "active", False, 0),
]


def seed_fleet(p: Pomona, s: TenantSetup) -> None:
    """FLEET in the database (no device talks: the list's filters are what is tested), then a corporate
    identifier, a block and an unanswered push, as the services record them."""
    from datetime import timedelta

    from pomona.domain.models import Device, Enrollment, EnrollmentStatus, EnrollmentType
    from pomona.ports import PushAttempt

    now = p.clock.now()
    with p.db.unit_of_work() as uow:
        for i, (name, product, os_version, etype, status, awaiting, days) in enumerate(FLEET):
            udid = f"00008030-CD{i:014d}"
            uow.devices.upsert(
                Device(
                    id=f"dev-{name}",
                    tenant_id=s.tenant_id,
                    udid=udid,
                    serial=f"CD{i:08d}",
                    product_name=product,
                    device_name=name,
                    os_version=os_version,
                    last_seen_at=None if days is None else now - timedelta(days=days, minutes=1),
                    created_at=now,
                )
            )
            if etype is not None:
                uow.enrollments.add(
                    Enrollment(
                        id=f"enr-{name}",
                        tenant_id=s.tenant_id,
                        device_id=f"dev-{name}",
                        udid=udid,
                        user_id=None,
                        status=EnrollmentStatus(status),
                        type=EnrollmentType(etype),
                        cert_fingerprint=f"{i:064x}",
                        topic=s.topic,
                        started_at=now,
                        awaiting_configuration=awaiting,
                    )
                )
        uow.reachability.record_pushes(
            [PushAttempt("enr-phone-silent", now, "delivered", now - timedelta(hours=5))]
        )
    p.policy.import_corporate(s.name, "CD00000006\n")  # phone-corpid
    p.policy.block(s.name, serial="CD00000007")  # phone-blocked


def listed(b: Admin, query: str) -> set[str]:
    r = b.get(f"/console/t/acme/devices?{query}")
    assert r.status_code == 200, (query, r.text[:300])
    return {name.removeprefix("dev-") for name in re.findall(r'data-device="([^"]+)"', r.text)}


PHONES = {"phone-byod", "phone-corp", "phone-retired", "phone-corpid", "phone-blocked", "phone-silent"}
FILTERS: list[tuple[str, set[str]]] = [
    ("platform=ios", PHONES | {"pod-idle"}),
    ("platform=ipados", {"pad-ade", "pad-dem"}),
    ("os=17", {"phone-byod", "pad-dem", "phone-corpid"}),
    ("os=16.7", {"phone-corp"}),
    ("os_min=17.4", {"phone-byod", "pad-ade", "phone-corpid"}),  # 9.3 is not above 17.4
    ("ownership=corporate", {"phone-corp", "pad-ade", "phone-corpid"}),
    (
        "ownership=personal",
        {"phone-byod", "pad-dem", "phone-retired", "pod-idle", "phone-blocked", "phone-silent"},
    ),
    ("type=byod", {"phone-byod", "phone-corpid", "phone-silent"}),
    ("type=dem", {"pad-dem"}),
    ("type=ade", {"pad-ade"}),
    ("state=active", {"phone-byod", "phone-corp", "pad-ade", "pad-dem", "phone-corpid", "phone-silent"}),
    ("state=awaiting", {"pad-ade"}),
    ("state=unresponsive", {"phone-silent"}),
    ("state=retired", {"phone-retired"}),
    ("state=blocked", {"phone-blocked"}),
    ("state=unenrolled", {"phone-retired", "pod-idle", "phone-blocked"}),
    ("stale=30", {"phone-corp", "phone-retired", "pod-idle"}),
    # combinations
    ("platform=ios&state=active&stale=7", {"phone-corp"}),
    ("platform=ipados&ownership=personal", {"pad-dem"}),
    ("ownership=personal&os_min=16&type=byod&sort=last_seen", {"phone-byod", "phone-silent"}),
    ("q=phone-c&ownership=corporate", {"phone-corp", "phone-corpid"}),
    # anything else is no filter
    ("platform=evil&os=x.y&os_min=1.2.3.4&state=gone&stale=-1&type=nope", {n for n, *_ in FLEET}),
]


class TestDeviceFilters:
    def test_each_filter_and_combinations(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """Platform, OS prefix and minimum, ownership, enrollment type, state, last check-in, and their
        combinations each list exactly the devices they describe; a value that is not a choice is none."""
        seed_fleet(pomona, acme)
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        for query, expected in FILTERS:
            assert listed(browser, query) == expected, query
        r = browser.get("/console/t/acme/devices?state=awaiting&platform=ipados")
        assert 'data-total="1"' in r.text and 'value="ipados" selected' in r.text

    def test_filters_are_kept_across_keyset_pages(
        self, pomona: Pomona, acme: TenantSetup, app: object, browser: Admin
    ) -> None:
        """A filtered list pages by its cursor with the filters in the query string, each device once;
        the page is in Chinese too."""
        from pomona.domain.models import Device

        seed_fleet(pomona, acme)
        with pomona.db.unit_of_work() as uow:
            for i in range(52):
                uow.devices.upsert(
                    Device(
                        id=f"dev-pad-{i:02d}",
                        tenant_id=acme.tenant_id,
                        udid=f"UDID-PAD-{i:02d}",
                        serial=f"PAD{i:07d}",
                        product_name="iPad14,1",
                        device_name=f"pad-{i:02d}",
                        os_version="17.2",
                        created_at=pomona.clock.now(),
                    )
                )
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        r = browser.get("/console/t/acme/devices?platform=ipados&state=unenrolled&sort=serial")
        first = re.findall(r'data-device="([^"]+)"', r.text)
        assert len(first) == 50 and 'data-total=""' in r.text  # not counted: more than a page
        link = re.search(r'id="next-page" href="([^"]+)"', r.text)
        assert link is not None
        href = link.group(1).replace("&amp;", "&")
        assert "platform=ipados" in href and "state=unenrolled" in href and "sort=serial" in href
        rest = re.findall(r'data-device="([^"]+)"', browser.get(href).text)
        assert sorted(first + rest) == sorted(f"dev-pad-{i:02d}" for i in range(52))
        zh = Admin(app, "zh-CN")
        zh.sign_in("ad@acme.example")
        page = zh.get("/console/t/acme/devices?state=awaiting").text
        assert "等待配置" in page and "注册类型" in page and "dev-pad-ade" in page
        assert not re.search(r"\bconsole\.[a-z_]+\.", strip_data(page))
        zh.close()


def queued(p: Pomona, tenant: str, udid: str) -> list[tuple[str, dict[str, Any]]]:
    """The device's command queue, oldest first: (RequestType, the command's keys)."""
    import plistlib

    out = []
    for c in reversed(p.commands.device(tenant, udid).commands):
        body = plistlib.loads(c.body)["Command"]
        out.append((c.request_type, {k: v for k, v in body.items() if k != "RequestType"}))
    return out


class TestDeviceActions:
    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_admin_actions_queue_their_commands(
        self, pomona: Pomona, client: TestClient, app: object, acme: TenantSetup, lang: str
    ) -> None:
        """Lock, restart, rename, erase (only with the serial typed) queue DeviceLock, RestartDevice,
        Settings DeviceName and EraseDevice, each audited and shown in the queue; block ends the
        enrollment."""
        d = enrolled(pomona, client, acme, device_name="Ana phone")
        did = device_id(pomona, "acme", d.udid)
        before = len(queued(pomona, "acme", d.udid))
        account(pomona, "ad@acme.example", "admin", "acme")
        b = Admin(app, lang)
        b.sign_in("ad@acme.example")
        b.get(f"/console/t/acme/devices/{did}")
        base = f"/console/t/acme/devices/{did}"
        for action in ("lock", "erase", "block"):  # no CSRF token: refused, nothing done
            assert (
                b.post(f"{base}/{action}", {"serial": d.serial, "confirm": "yes"}, csrf="x").status_code
                == 403
            )
        assert len(queued(pomona, "acme", d.udid)) == before
        b.get(base)
        for action, form in (
            ("lock", {"message": "Call IT"}),
            ("restart", {}),
            ("rename", {"name": "Ana's new phone"}),
        ):
            r = b.post(f"{base}/{action}", form)
            assert r.status_code == 303 and r.headers["location"].endswith(f"?done={action}"), action
            b.get(base)
        r = b.get(f"{base}/erase")
        assert r.status_code == 200 and d.serial in r.text
        for typed in ("", "WRONG", d.serial[:-1]):
            r = b.post(f"{base}/erase", {"serial": typed})
            assert r.status_code == 422 and 'id="erase-error"' in r.text
        assert [t for t, _ in queued(pomona, "acme", d.udid)[before:]] == [
            "DeviceLock",
            "RestartDevice",
            "Settings",
        ]
        r = b.post(f"{base}/erase", {"serial": f" {d.serial.lower()} "})
        assert r.status_code == 303
        got = queued(pomona, "acme", d.udid)[before:]
        assert [t for t, _ in got] == ["DeviceLock", "RestartDevice", "Settings", "EraseDevice"]
        assert got[0][1]["Message"] == "Call IT"
        assert got[2][1]["Settings"] == [{"Item": "DeviceName", "DeviceName": "Ana's new phone"}]
        page = b.get(f"{base}?done=erase")
        assert page.status_code == 200 and 'data-notice="erase"' in page.text
        assert re.findall(r'data-command="(\w+)"', page.text)[:4] == [
            "EraseDevice",
            "Settings",
            "RestartDevice",
            "DeviceLock",
        ]
        assert not re.search(r"\bconsole\.[a-z_]+\.", strip_data(page.text))
        b.post(f"{base}/block", {})  # not confirmed: nothing happens
        assert pomona.commands.device("acme", d.udid).enrollment is not None
        b.get(base)
        assert b.post(f"{base}/block", {"confirm": "yes"}).status_code == 303
        assert pomona.commands.device("acme", d.udid).enrollment is None
        log = [e for e in pomona.console.audit_log("acme") if e.action.startswith("device.")]
        assert [e.action for e in reversed(log)] == [
            "device.lock",
            "device.restart",
            "device.rename",
            "device.erase",
            "device.block",
        ]
        assert all(e.actor == "ad@acme.example" and e.target == d.udid for e in log)
        assert log[1].detail["request_type"] == "EraseDevice" and log[1].detail["command_uuid"]
        b.close()

    def test_helpdesk_is_refused_lock_and_erase(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, browser: Admin
    ) -> None:
        """Helpdesk gets 403 for lock, erase, restart, rename and block: nothing is queued, each refusal is
        in the audit log; the device page offers none of them."""
        d = enrolled(pomona, client, acme)
        did = device_id(pomona, "acme", d.udid)
        before = queued(pomona, "acme", d.udid)
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        browser.sign_in("hd@acme.example")
        page = browser.get(f"/console/t/acme/devices/{did}").text
        assert 'id="actions"' not in page and 'id="repush"' in page
        for action, form in (
            ("lock", {}),
            ("erase", {"serial": d.serial}),
            ("restart", {}),
            ("rename", {"name": "x"}),
            ("block", {"confirm": "yes"}),
        ):
            r = browser.post(f"/console/t/acme/devices/{did}/{action}", form)
            assert r.status_code == 403, action
            browser.get(f"/console/t/acme/devices/{did}")
        assert browser.get(f"/console/t/acme/devices/{did}/erase").status_code == 403
        assert queued(pomona, "acme", d.udid) == before
        assert pomona.commands.device("acme", d.udid).enrollment is not None
        refused = [e for e in pomona.console.audit_log("acme") if e.action == "console.refused"]
        assert [e.target for e in reversed(refused)] == ["lock", "erase", "restart", "rename", "block"]
        assert all(e.actor == "hd@acme.example" for e in refused)

    def test_another_tenants_device_by_url(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, globex: TenantSetup, browser: Admin
    ) -> None:
        """An admin of acme locks or erases nothing of globex's, by either tenant's URL: 404, nothing
        queued."""
        d = enrolled(pomona, client, globex)
        gid = device_id(pomona, "globex", d.udid)
        before = queued(pomona, "globex", d.udid)
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        browser.get("/console/t/acme/devices")
        for tenant in ("globex", "acme"):
            for action in ("lock", "erase", "restart", "block"):
                r = browser.post(
                    f"/console/t/{tenant}/devices/{gid}/{action}", {"serial": d.serial, "confirm": "yes"}
                )
                assert r.status_code == 404, (tenant, action)
            assert browser.get(f"/console/t/{tenant}/devices/{gid}/erase").status_code == 404
        assert browser.get("/console/t/globex/devices?state=active").status_code == 404
        assert gid not in listed(browser, "state=active")  # acme's list has none of globex's
        assert queued(pomona, "globex", d.udid) == before
        assert pomona.commands.device("globex", d.udid).enrollment is not None

    def test_device_controlled_values_stay_text(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, browser: Admin
    ) -> None:
        """A device named <script>, renamed to <script>, shows as text on the list (filtered), its page,
        the erase page and the audit log."""
        d = enrolled(pomona, client, acme, device_name=EVIL)
        did = device_id(pomona, "acme", d.udid)
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        browser.get(f"/console/t/acme/devices/{did}")
        assert browser.post(f"/console/t/acme/devices/{did}/rename", {"name": EVIL}).status_code == 303
        for path in (
            "/devices?state=active&platform=ios",
            f"/devices/{did}",
            f"/devices/{did}/erase",
            "/audit",
            "/devices?os=" + EVIL,
        ):
            r = browser.get(f"/console/t/acme{path}")
            assert r.status_code == 200, path
            assert "<script>" not in r.text, path


class TestTroubleshootActions:
    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_resend_device_configured_and_the_incident_summary(
        self, pomona: Pomona, client: TestClient, app: object, acme: TenantSetup, lang: str
    ) -> None:
        """Helpdesk resends DeviceConfigured to the user's device that awaits configuration (back on the
        page, audited), and the page shows `pomona incident`'s text read-only with a copy button that
        only script shows."""
        from pomona.testing.virtual_device import EnrollmentRefused

        pomona.policy.edit_restriction("acme", type_="limit", default=True, limit=1)
        d = enrolled(pomona, client, acme, device_name=EVIL)
        with pytest.raises(EnrollmentRefused):
            enrolled(pomona, client, acme, device_name="Second phone")
        e = pomona.commands.device("acme", d.udid).enrollment
        assert e is not None
        with pomona.db.unit_of_work() as uow:
            uow.enrollments.set_awaiting_configuration(e.id, True)
        before = len(queued(pomona, "acme", d.udid))
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        b = Admin(app, lang)
        b.sign_in("hd@acme.example")
        message = (
            "配置文件安装失败。无法建立到服务器的连接。" if lang == "zh-CN" else "Profile installation failed"
        )
        r = b.get("/console/t/acme/troubleshoot", params={"upn": acme.upn, "message": message})
        assert r.status_code == 200 and "<script>" not in r.text
        m = re.search(r'<textarea id="incident-summary" readonly[^>]*>([^<]*)</textarea>', r.text)
        assert m is not None and "DEVICE_LIMIT_REACHED" in m.group(1)
        now = pomona.clock.now()
        from datetime import timedelta

        inc = pomona.reports.incident(
            "acme",
            codes=["DEVICE_LIMIT_REACHED"],
            since=now - timedelta(days=7),
            until=now,
            message=message,
        )
        import html as htmllib

        assert (
            htmllib.unescape(m.group(1)).splitlines()[0]
            == pomona.reports.incident_markdown(inc, lang).splitlines()[0]
        )
        assert (
            '<button type="button" id="copy-summary" hidden' in r.text
            and "/console/_static/copy.js" in r.text
        )
        assert b.get("/console/_static/copy.js").status_code == 200
        b.get(f"/console/t/acme/troubleshoot?upn={acme.upn}")
        here = f"/console/t/acme/troubleshoot?upn={acme.upn.replace('@', '%40')}"
        form = re.search(r'<form method="post" action="([^"]+/release)"', b.last)
        assert form is not None
        r = b.post(form.group(1), {"back": here + "&done=pushed"})
        assert r.status_code == 303 and r.headers["location"] == here + "&done=released"
        got = queued(pomona, "acme", d.udid)[before:]
        assert [t for t, _ in got] == ["DeviceConfigured"]
        page = b.get(r.headers["location"]).text
        assert 'data-notice="released"' in page
        # a back address outside this tenant's troubleshoot page leads to the device page instead
        r = b.post(form.group(1), {"back": "https://evil.example/console/t/acme/troubleshoot"})
        assert r.headers["location"].startswith("/console/t/acme/devices/")
        log = [e.action for e in pomona.console.audit_log("acme") if e.actor == "hd@acme.example"]
        assert log[:2] == ["device.release", "device.release"]


# --- pages 1 (the chart), 8 and 9: http/console_reports.py -------------------------------------------
def failures(p: Pomona, tenant_id: str, *rows: tuple[int, str, int, dict[str, object]]) -> None:
    """Failure events (days ago, reason, how many, detail): they add to the failure roll-up as in use."""
    from pomona.domain.models import Event, Outcome, Step

    now = p.clock.now()
    with p.db.unit_of_work() as uow:
        for days, reason, n, detail in rows:
            step = Step(str(detail.pop("step", "portal")))
            for _ in range(n):
                at = now - timedelta(days=days)
                uow.events.append(
                    Event(tenant_id, at, step, Outcome.FAILED, reason=reason, detail=dict(detail))
                )


def svg_of(html: str) -> str:
    m = re.search(r'<svg [^>]*class="chart".*?</svg>', html, re.S)
    assert m, html[:500]
    return m.group(0)


@pytest.fixture
def dns_zone(pomona: Pomona) -> Iterator[Any]:
    """The diagnose tests' local DNS zone (dnslib on 127.0.0.1), asked by the real resolver adapter."""
    from diag_helpers import Zone
    from pomona.net.dns import DnsResolver

    z = Zone()
    pomona.console_reports.resolver = DnsResolver(f"127.0.0.1:{z.port}", timeout=1.0)
    yield z
    z.stop()


class TestReportsPages:
    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_dashboard_chart_totals_and_incident_link(
        self, pomona: Pomona, client: TestClient, app: object, acme: TenantSetup, lang: str
    ) -> None:
        """The dashboard's SVG chart carries the 30 days' totals (older failures left out), a title, a
        description and a table; a top reason links to its incident summary, which reads as the CLI's."""
        enrolled(pomona, client, acme)
        failures(
            pomona,
            acme.tenant_id,
            (0, "DEVICE_LIMIT_REACHED", 3, {}),
            (2, "USER_NOT_LICENSED", 2, {"step": "profile"}),
            (40, "DEVICE_LIMIT_REACHED", 5, {}),  # outside the 30 days
        )
        account(pomona, "ad@acme.example", "admin", "acme")
        b = Admin(app, lang)
        r = b.sign_in("ad@acme.example")
        svg = svg_of(r.text)
        assert 'data-total-failures="5"' in svg and 'data-total-enrollments="1"' in svg
        assert '<title id="chart-title">' in svg and '<desc id="chart-desc">' in svg
        assert 'data-legend="DEVICE_LIMIT_REACHED"' in svg and 'data-legend="USER_NOT_LICENSED"' in svg
        assert len(re.findall(r"<tr data-day=", r.text)) == 30
        assert re.search(r'id="total-failures">5<', r.text) and re.search(
            r'id="total-enrollments">1<', r.text
        )
        assert not re.search(r"\b(console|portal)\.[a-z_]+\.", strip_data(r.text))
        link = "/console/t/acme/reports/incident?code=DEVICE_LIMIT_REACHED"
        assert link in r.text
        page = b.get(link)
        assert page.status_code == 200 and "DEVICE_LIMIT_REACHED" in page.text
        now = pomona.clock.now()
        inc = pomona.reports.incident(
            "acme", codes=["DEVICE_LIMIT_REACHED"], since=now - timedelta(days=30), until=now
        )
        assert (
            inc["failures"] == 3 and pomona.reports.incident_markdown(inc, lang).splitlines()[0] in page.text
        )
        b.close()

    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_reports_filter_group_and_chart_for_helpdesk(
        self, pomona: Pomona, app: object, acme: TenantSetup, lang: str
    ) -> None:
        """Helpdesk reads the report: filters by reason, step and platform, groups by day or step, and
        its chart counts what the filters keep."""
        failures(
            pomona,
            acme.tenant_id,
            (0, "DEVICE_LIMIT_REACHED", 2, {"platform": "ios"}),
            (1, "DEVICE_LIMIT_REACHED", 1, {"platform": "ipados", "step": "profile"}),
            (1, "USER_NOT_LICENSED", 4, {"platform": "ios"}),
        )
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        b = Admin(app, lang)
        b.sign_in("hd@acme.example")
        r = b.get("/console/t/acme/reports")
        assert r.status_code == 200 and f'<html lang="{lang}">' in r.text
        assert not re.search(r"\b(console|portal)\.[a-z_]+\.", strip_data(r.text))
        assert re.findall(r'<tr data-key="([A-Z_]+)">', r.text) == [
            "USER_NOT_LICENSED",
            "DEVICE_LIMIT_REACHED",
        ]
        assert 'data-total-failures="7"' in svg_of(r.text) and re.search(r'id="report-total">7<', r.text)
        r = b.get("/console/t/acme/reports?reason=DEVICE_LIMIT_REACHED&group=step")
        assert re.findall(r'<tr data-key="([a-z]+)"><td>[a-z]+</td><td class="num">(\d+)', r.text) == [
            ("portal", "2"),
            ("profile", "1"),
        ]
        assert 'data-total-failures="3"' in svg_of(r.text)
        r = b.get("/console/t/acme/reports?platform=ios&step=portal&group=day")
        today = pomona.clock.now().date()
        keys = re.findall(r'<tr data-key="([0-9-]+)">', r.text)
        assert keys == sorted(keys) and keys[-1] == today.isoformat()
        assert 'data-total-failures="6"' in svg_of(r.text)
        got = b.get("/console/t/acme/reports?reason=USER_NOT_LICENSED&format=csv")
        assert got.status_code == 200 and got.text.splitlines()[1].endswith(",4")  # helpdesk exports too
        for junk in ("since=nope&until=x", "group=evil", "reason=" + "x" * 500):
            assert b.get(f"/console/t/acme/reports?{junk}").status_code == 200, junk
        r = b.get("/console/t/acme/reports?since=2026-01-10&until=2026-01-01")
        assert r.status_code == 422 and "Traceback" not in r.text
        b.close()

    def test_csv_export_is_an_attachment_safe_from_formulas(
        self, pomona: Pomona, acme: TenantSetup, browser: Admin
    ) -> None:
        """?format=csv downloads the groups as an attachment; a cell starting with = + - @ gets a leading
        apostrophe, and a reason named <script> is text on the page and in the chart."""
        failures(
            pomona,
            acme.tenant_id,
            (0, "DEVICE_LIMIT_REACHED", 2, {}),
            (0, '=HYPERLINK("http://evil.example")', 1, {}),
            (0, "+1", 1, {}),
            (0, "-1", 1, {}),
            (0, "@SUM(A1)", 1, {}),
            (0, EVIL[:60], 1, {}),
        )
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        r = browser.get("/console/t/acme/reports?format=csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"].startswith('attachment; filename="failures-acme-')
        rows = list(csv.reader(r.text.splitlines()))
        assert rows[0] == ["reason", "title", "count"]
        cells = {row[0]: row for row in rows[1:]}
        assert cells["DEVICE_LIMIT_REACHED"][2] == "2" and cells["DEVICE_LIMIT_REACHED"][1]
        for bad in ('=HYPERLINK("http://evil.example")', "+1", "-1", "@SUM(A1)"):
            assert "'" + bad in cells and bad not in cells, bad
        assert all(not c.startswith(("=", "+", "-", "@")) for row in rows for c in row)
        r = browser.get("/console/t/acme/reports?group=day&format=csv")
        assert list(csv.reader(r.text.splitlines()))[1][2] == "7"
        page = browser.get("/console/t/acme/reports")
        assert "<script>" not in page.text and "&lt;script&gt;" in svg_of(page.text)
        assert "<script>" not in browser.get("/console/t/acme").text

    def test_tenant_isolation(
        self, pomona: Pomona, acme: TenantSetup, globex: TenantSetup, browser: Admin
    ) -> None:
        """Another tenant's reports, domains and incident pages are the console's 404; a tenant's report
        and chart count only its own failures."""
        failures(pomona, acme.tenant_id, (0, "DEVICE_LIMIT_REACHED", 2, {}))
        failures(pomona, globex.tenant_id, (0, "USER_NOT_LICENSED", 9, {}))
        account(pomona, "ad@acme.example", "admin", "acme")
        r = browser.sign_in("ad@acme.example")
        assert 'data-total-failures="2"' in svg_of(r.text) and "USER_NOT_LICENSED" not in r.text
        for path in (
            "/reports",
            "/reports?format=csv",
            "/domains",
            "/reports/incident?code=USER_NOT_LICENSED",
        ):
            got = browser.get(f"/console/t/globex{path}")
            assert got.status_code == 404 and "USER_NOT_LICENSED<" not in got.text, path
            assert "incident in tenant" not in got.text and "data-total" not in got.text, path
        r = browser.get("/console/t/acme/reports?format=csv")
        assert "USER_NOT_LICENSED" not in r.text and "DEVICE_LIMIT_REACHED,".lower() in r.text.lower()

    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_domains_dns_statuses(
        self, pomona: Pomona, app: object, acme: TenantSetup, dns_zone: Any, lang: str
    ) -> None:
        """The domains page lists the discovery CNAMEs with their target and what the test zone answers:
        ok, then missing, then pointing elsewhere."""
        zone = dns_zone
        zone.cnames["enterpriseenrollment.acme.example"] = "pomona.test"
        zone.cnames["enterpriseregistration.acme.example"] = "pomona.test"
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        b = Admin(app, lang)
        b.sign_in("hd@acme.example")

        def statuses() -> dict[str, str]:
            r = b.get("/console/t/acme/domains")
            assert r.status_code == 200 and f'<html lang="{lang}">' in r.text
            assert not re.search(r"\b(console|portal)\.[a-z_]+\.", strip_data(r.text))
            assert "enterpriseenrollment.acme.example. 3600 IN CNAME pomona.test." in r.text
            return dict(re.findall(r'data-record="(\w+)" data-status="(\w+)"', r.text))

        assert statuses() == {"EnterpriseEnrollment": "ok", "EnterpriseRegistration": "ok"}
        del zone.cnames["enterpriseregistration.acme.example"]
        assert statuses() == {"EnterpriseEnrollment": "ok", "EnterpriseRegistration": "missing"}
        zone.cnames["enterpriseenrollment.acme.example"] = "mdm.elsewhere.example"
        r = b.get("/console/t/acme/domains")
        assert 'data-record="EnterpriseEnrollment" data-status="wrong"' in r.text
        assert "mdm.elsewhere.example" in r.text
        b.close()


# --- sign-in beyond a password: TOTP enrolment and reset, OpenID Connect per tenant ------------------
def _secret(html: str) -> str:
    m = re.search(r'data-secret="([A-Z2-7]+)"', html)
    assert m, html[:400]
    return m.group(1)


def _next_code(secret: str, p: Pomona) -> str:
    """The code of the next 30-second step (accepted: one step of skew), after any code used this step."""
    from pomona.services.portal import totp_at

    return totp_at(secret, int(p.clock.now().timestamp()) // 30 + 1)


class TestTotpEnrolment:
    def test_first_sign_in_enrols(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """An account that must use TOTP is shown a secret after its password and keeps it at one right code."""
        account(pomona, "ad@acme.example", "admin", "acme")
        pomona.console_auth.require_totp("ad@acme.example")
        r = browser.sign_in("ad@acme.example")
        assert r.status_code == 200 and 'id="totp-uri"' in r.text and "otpauth://totp/" in r.text
        secret = _secret(r.text)
        assert browser.get("/console/t/acme").status_code == 303  # no session before the code
        browser.get("/console/signin")
        r = browser.sign_in("ad@acme.example")
        assert _secret(r.text) == secret  # the same secret while it waits
        code = totp_now(secret, pomona.clock.now())
        r = browser.post("/console/signin/totp", {"code": code})
        assert r.status_code == 303 and r.headers["location"] == "/console"
        assert browser.get("/console/t/acme").status_code == 200
        assert pomona.console.list_accounts("acme")[0][0].totp_secret == secret
        actions = [e.action for e in pomona.console.audit_log("acme")]
        assert "admin.totp_enrol" in actions and "admin.totp_require" in actions
        other = Admin(browser.c.app)
        assert other.sign_in("ad@acme.example", code=code).status_code == 401  # the code was used
        other.close()

    def test_wrong_confirmation_code(self, pomona: Pomona, acme: TenantSetup) -> None:
        """A wrong first code keeps nothing and opens no session; the page asks again, in Chinese too."""
        account(pomona, "ad@acme.example", "admin", "acme")
        pomona.console_auth.require_totp("ad@acme.example")
        b = Admin(browser_app(pomona), "zh-CN")
        r = b.sign_in("ad@acme.example")
        assert "设置身份验证器" in r.text
        secret = _secret(r.text)
        wrong = "000000" if totp_now(secret, pomona.clock.now()) != "000000" else "111111"
        r = b.post("/console/signin/totp", {"code": wrong})
        assert (
            r.status_code == 401 and 'data-error="console.totp.bad_code"' in r.text and "验证码错误" in r.text
        )
        assert pomona.console.list_accounts("acme")[0][0].totp_secret == "-"
        assert b.get("/console/t/acme").status_code == 303
        assert "admin.totp_refused" in [e.action for e in pomona.console.audit_log("acme")]
        b.close()

    def test_reset_own_totp(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """The security page replaces the account's TOTP after its password and one code of the new secret."""
        a = account(pomona, "ad@acme.example", "admin", "acme", totp=True)
        assert (
            browser.sign_in("ad@acme.example", code=totp_now(a.totp_secret, pomona.clock.now())).status_code
            == 200
        )
        r = browser.get("/console/security")
        assert r.status_code == 200 and 'data-totp="on"' in r.text
        assert (
            browser.post("/console/security/totp", {"password": PASSWORD}, csrf="forged").status_code == 403
        )
        r = browser.post("/console/security/totp", {"password": "wrong-password"})
        assert r.status_code == 401 and "console.security.bad_password" in r.text
        r = browser.post("/console/security/totp", {"password": PASSWORD})
        new = _secret(r.text)
        assert new != a.totp_secret
        r = browser.post("/console/security/totp/confirm", {"code": _next_code(new, pomona)})
        assert r.status_code == 303 and r.headers["location"] == "/console/security?done=totp"
        assert pomona.console.list_accounts("acme")[0][0].totp_secret == new
        entry = next(e for e in pomona.console.audit_log("acme") if e.action == "admin.totp_reset")
        assert entry.actor == "ad@acme.example" and entry.source


def browser_app(p: Pomona) -> object:
    return create_app(pomona=p, eager=False)


# OpenID Connect: two providers on 127.0.0.1, one per tenant.
@pytest.fixture(scope="module")
def idps() -> Iterator[tuple[Any, Any]]:
    from pomona.testing.oidc_emulator import OidcEmulator

    a, b = OidcEmulator("console-acme"), OidcEmulator("console-globex")
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def sso(pomona: Pomona, acme: TenantSetup, globex: TenantSetup, idps: tuple[Any, Any]) -> tuple[Any, Any]:
    a, b = idps
    for idp in (a, b):
        idp.reset_faults()
    pomona.console_auth.set_oidc(
        "acme", issuer=a.issuer, client_id=a.client_id, client_secret=a.client_secret, name="Acme ID"
    )
    pomona.console_auth.set_oidc(
        "globex", issuer=b.issuer, client_id=b.client_id, client_secret=b.client_secret
    )
    account(pomona, "ad@acme.example", "admin", "acme")
    account(pomona, "gx@globex.example", "admin", "globex")
    a.user, b.user = "ad@acme.example", "gx@globex.example"
    return a, b


def oidc_round_trip(b: Admin, tenant: str) -> httpx.Response:
    """The browser's trip: our start -> the provider's authorize (approves) -> our callback."""
    from urllib.parse import urlsplit

    start = b.get(f"/console/t/{tenant}/oidc/start")
    assert start.status_code == 303, start.text[:300]
    at_idp = httpx.get(start.headers["location"], follow_redirects=False)
    assert at_idp.status_code == 302, at_idp.text
    back = urlsplit(at_idp.headers["location"])
    return b.get(f"{back.path}?{back.query}")


def refusals(p: Pomona, tenant: str) -> list[str]:
    return [
        str(e.detail.get("why")) for e in p.console.audit_log(tenant) if e.action == "console.sign_in_refused"
    ]


class TestOidc:
    def test_happy_path(self, pomona: Pomona, sso: tuple[Any, Any], browser: Admin) -> None:
        """The sign-in page offers the tenant's provider; its user signs in as the account of that email."""
        r = browser.get("/console/signin?tenant=acme")
        assert 'id="sso"' in r.text and "Sign in with Acme ID" in r.text
        assert 'id="sso"' not in browser.get("/console/signin").text
        r = oidc_round_trip(browser, "acme")
        assert r.status_code == 303 and r.headers["location"] == "/console"
        page = browser.get("/console/t/acme")
        assert page.status_code == 200 and 'data-role="admin"' in page.text
        entry = next(e for e in pomona.console.audit_log("acme") if e.action == "console.sign_in")
        assert entry.detail == {"method": "oidc"} and entry.actor == "ad@acme.example"

    def test_signin_page_in_chinese(self, pomona: Pomona, sso: tuple[Any, Any]) -> None:
        """The provider's button is in Chinese for a Chinese browser."""
        b = Admin(browser_app(pomona), "zh-CN")
        assert "使用 Acme ID 登录" in b.get("/console/signin?tenant=acme").text
        b.close()

    def test_wrong_state(self, pomona: Pomona, sso: tuple[Any, Any], browser: Admin) -> None:
        """A callback whose state is not the session's is refused before any token request, and recorded."""
        a, _ = sso
        browser.get("/console/t/acme/oidc/start")
        before = a.token_requests
        r = browser.get("/console/t/acme/oidc/callback", params={"code": "x", "state": "forged"})
        assert r.status_code == 403 and r.headers["x-pomona-refused"] == "state"
        assert a.token_requests == before and refusals(pomona, "acme") == ["state"]
        with pomona.db.unit_of_work(readonly=True) as uow:
            t = uow.tenants.by_name("acme")
            assert t is not None
            events = uow.events.query(t.id, limit=5)
        assert any(e.reason == "API_AUTH_FAILED" and e.detail.get("why") == "state" for e in events)

    @pytest.mark.parametrize(
        ("fault", "why"),
        [("nonce", "nonce"), ("expired", "expired"), ("audience", "audience"), ("key", "signature")],
    )
    def test_bad_id_token(
        self, pomona: Pomona, sso: tuple[Any, Any], browser: Admin, fault: str, why: str
    ) -> None:
        """An ID token with another nonce, expired, for another client, or signed by an unknown key is refused."""
        from pomona.testing.oidc_emulator import RsaKey

        a, _ = sso
        if fault == "nonce":
            a.nonce = "another-nonce"
        elif fault == "expired":
            a.exp_offset = -600  # past the two minutes of skew
        elif fault == "audience":
            a.audience = "someone-else"
        else:
            a.sign_key = RsaKey("rogue")
        r = oidc_round_trip(browser, "acme")
        assert r.status_code == 403 and r.headers["x-pomona-refused"] == why
        assert browser.get("/console/t/acme").status_code == 303
        assert refusals(pomona, "acme") == [why]

    def test_unknown_email_refused(self, pomona: Pomona, sso: tuple[Any, Any], browser: Admin) -> None:
        """An email no account of the tenant has is refused (USER_NOT_FOUND event, audit); none is created."""
        a, _ = sso
        a.user = "stranger@acme.example"
        r = oidc_round_trip(browser, "acme")
        assert r.status_code == 403 and 'data-message="console.oidc.unknown_account"' in r.text
        assert refusals(pomona, "acme") == ["unknown_account"]
        assert [x.email for x, _ in pomona.console.list_accounts("acme")] == ["ad@acme.example"]
        with pomona.db.unit_of_work(readonly=True) as uow:
            t = uow.tenants.by_name("acme")
            assert t is not None
            assert uow.events.query(t.id, limit=1)[0].reason == "USER_NOT_FOUND"

    def test_tenant_isolation(self, pomona: Pomona, sso: tuple[Any, Any], browser: Admin) -> None:
        """Tenant A's provider cannot sign in tenant B's account, nor can A's state finish at B's callback."""
        a, _ = sso
        a.user = "gx@globex.example"  # acme's provider vouches for globex's admin
        r = oidc_round_trip(browser, "acme")
        assert r.status_code == 403 and r.headers["x-pomona-refused"] == "unknown_account"
        a.user = "ad@acme.example"
        start = browser.get("/console/t/acme/oidc/start")
        at_idp = httpx.get(start.headers["location"], follow_redirects=False)
        query = at_idp.headers["location"].split("?", 1)[1]
        r = browser.get(f"/console/t/globex/oidc/callback?{query}")
        assert r.status_code == 403 and r.headers["x-pomona-refused"] == "state"
        assert browser.get("/console/t/globex").status_code == 303

    def test_cli_set_show_clear(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        pomona: Pomona,
        acme: TenantSetup,
        idps: tuple[Any, Any],
    ) -> None:
        """`pomona admin oidc set|show|clear --json`; the client secret is read from stdin and never shown."""
        a, _ = idps
        code, out = cli(
            monkeypatch,
            db_url,
            "admin",
            "oidc",
            "set",
            "--tenant",
            "acme",
            "--issuer",
            a.issuer,
            "--client-id",
            a.client_id,
            "--client-secret-stdin",
            "--json",
            stdin=a.client_secret + "\n",
        )
        assert code == 0, out
        data = json.loads(out)
        assert data["configured"] and data["redirect_uri"].endswith("/console/t/acme/oidc/callback")
        code, out = cli(monkeypatch, db_url, "admin", "oidc", "show", "--tenant", "acme", "--json")
        assert code == 0 and json.loads(out)["issuer"] == a.issuer and a.client_secret not in out
        assert cli(monkeypatch, db_url, "admin", "oidc", "clear", "--tenant", "acme", "--json")[0] == 0
        code, out = cli(monkeypatch, db_url, "admin", "oidc", "show", "--tenant", "acme", "--json")
        assert json.loads(out) == {"tenant": "acme", "configured": False}
        code, out = cli(monkeypatch, db_url, "admin", "totp-reset", "nobody@acme.example", "--json")
        assert code != 0
        account(pomona, "ad@acme.example", "admin", "acme")
        code, out = cli(monkeypatch, db_url, "admin", "totp-reset", "ad@acme.example", "--json")
        assert code == 0 and json.loads(out) == {"email": "ad@acme.example", "totp": "pending"}
        code, out = cli(monkeypatch, db_url, "admin", "list", "--tenant", "acme", "--json")
        assert json.loads(out)[0]["totp_pending"] is True

    def test_unverified_email_refused(self, pomona: Pomona, sso: tuple[Any, Any], browser: Admin) -> None:
        """An email the provider says it did not verify names no account."""
        a, _ = sso
        a.extra = {"email_verified": False}
        r = oidc_round_trip(browser, "acme")
        assert r.status_code == 403 and r.headers["x-pomona-refused"] == "unknown_account"


class TestSsoPage:
    def test_admin_sets_and_clears(self, pomona: Pomona, acme: TenantSetup, idps: tuple[Any, Any]) -> None:
        """The tenant's admin sets the provider on the SSO page (in Chinese too) and removes it; both audited."""
        a, _ = idps
        account(pomona, "ad@acme.example", "admin", "acme")
        b = Admin(browser_app(pomona), "zh-CN")
        b.sign_in("ad@acme.example")
        r = b.get("/console/t/acme/sso")
        assert r.status_code == 200 and "单点登录" in r.text and 'data-sso="off"' in r.text
        bad = b.post("/console/t/acme/sso", {"issuer": "ftp://x", "client_id": "c", "client_secret": "s"})
        assert bad.status_code == 422
        form = {
            "issuer": a.issuer,
            "client_id": a.client_id,
            "client_secret": a.client_secret,
            "name": "Acme ID",
        }
        r = b.post("/console/t/acme/sso", form)
        assert r.status_code == 303 and r.headers["location"].endswith("/sso?done=set")
        page = b.get("/console/t/acme/sso").text
        assert 'data-sso="on"' in page and a.client_secret not in page
        assert (
            "使用 Acme ID 登录" in Admin(browser_app(pomona), "zh-CN").get("/console/signin?tenant=acme").text
        )
        assert b.post("/console/t/acme/sso", {"clear": "yes"}).status_code == 303
        assert 'data-sso="off"' in b.get("/console/t/acme/sso").text
        actions = [e.action for e in pomona.console.audit_log("acme")]
        assert "console.oidc.set" in actions and "console.oidc.clear" in actions
        b.close()

    def test_helpdesk_refused(self, pomona: Pomona, acme: TenantSetup, browser: Admin) -> None:
        """Helpdesk may not change single sign-on: 403, recorded as a refusal."""
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        browser.sign_in("hd@acme.example")
        assert browser.get("/console/t/acme/sso").status_code == 403
        browser.get("/console/t/acme")
        r = browser.post(
            "/console/t/acme/sso", {"issuer": "https://idp.example", "client_id": "c", "client_secret": "s"}
        )
        assert r.status_code == 403
        assert "console.refused" in [e.action for e in pomona.console.audit_log("acme")]
        assert pomona.console_auth.show_oidc("acme")[1] is None


def test_security_page_in_chinese(pomona: Pomona, acme: TenantSetup) -> None:
    """The security page and its new key are in Chinese for a Chinese browser."""
    account(pomona, "ad@acme.example", "admin", "acme")
    b = Admin(browser_app(pomona), "zh-CN")
    b.sign_in("ad@acme.example")
    r = b.get("/console/security")
    assert "登录安全" in r.text and 'data-totp="off"' in r.text
    r = b.post("/console/security/totp", {"password": PASSWORD})
    assert "设置身份验证器" in r.text and _secret(r.text)
    b.close()


# --- the device page's timeline, Unblock, and API tokens' last use ------------------------------------
@pytest.fixture(scope="module")
def apns_emu() -> Iterator[Any]:
    from pomona.testing.apns_emulator import ApnsEmulator

    with ApnsEmulator.start(seed=1) as e:
        yield e


def push_batch(p: Pomona, emu: Any) -> Any:
    """One push worker batch on a fresh loop, its APNs client pointed at the emulator."""
    import asyncio

    from pomona.push.apns import ApnsClient
    from pomona.push.gateway import ApnsGateway, TenantIdentitySource

    async def go() -> Any:
        source = TenantIdentitySource(p.db, p.apns.kit.open)
        client = ApnsClient(source, base_url=emu.url, verify=emu.ca_pem, max_attempts=2, backoff=0.01)
        p.push.gateway = ApnsGateway(client, source)
        try:
            return await p.push.run_once()
        finally:
            await asyncio.to_thread(client.close)
            p.push.gateway = None

    return asyncio.run(go())


def abm_entry(op: str, *, status: str = "assigned", reason: str | None = None) -> Any:
    from datetime import UTC, datetime

    from pomona.ports import AbmHistoryEntry

    now = datetime.now(UTC)
    return AbmHistoryEntry(now, op, now, status, "P-1", None, None, "", "abm-token", reason)


def timeline(html: str) -> list[tuple[str, str, str]]:
    """The device page's timeline rows, newest first: (kind, what, the row's text)."""
    section = html[html.index('id="timeline"') :]
    rows = re.findall(r'<tr data-kind="(\w+)" data-what="([\w-]+)">(.*?)</tr>', section, re.S)
    return [(k, w, re.sub(r"<[^>]+>", " ", text)) for k, w, text in rows]


class TestDeviceTimeline:
    def test_command_push_and_abm_change_in_order(
        self, pomona: Pomona, client: TestClient, app: object, apns_emu: Any
    ) -> None:
        """The device page's one timeline merges events, commands (queued, then done), the push that woke
        the device and its ABM timeline, newest first, in both languages, with reason codes and titles;
        ABM values stay text."""
        s = setup_tenant(pomona, "acme", uses=20, push=False)
        cert, key = apns_emu.issue_push_cert()
        pomona.apns.upload("acme", cert, key, apple_id="mdm@acme.example", canary=False)
        d = enrolled(pomona, client, s)
        did = device_id(pomona, "acme", d.udid)
        with pomona.db.unit_of_work() as uow:
            uow.abm.add_history(s.tenant_id, [(d.serial, abm_entry("added", status="<svg/onload=1>"))])
        account(pomona, "ad@acme.example", "admin", "acme")
        b = Admin(app)
        b.sign_in("ad@acme.example")
        base = f"/console/t/acme/devices/{did}"
        b.get(base)
        assert b.post(f"{base}/lock", {"message": ""}).status_code == 303
        assert push_batch(pomona, apns_emu).sent >= 1
        assert [c.request_type for c in d.poll() if c.status == "Acknowledged"][-1:] == ["DeviceLock"]
        with pomona.db.unit_of_work() as uow:
            code = "DEP_DEVICE_ASSIGNED_ELSEWHERE"
            uow.abm.add_history(s.tenant_id, [(d.serial, abm_entry("elsewhere", status="", reason=code))])
        page = b.get(base).text
        rows = timeline(page)
        lock = [(k, w) for k, w, text in rows if k == "command" and "DeviceLock" in text]
        assert lock == [("command", "Acknowledged"), ("command", "Queued")]

        def at(kind: str, what: str, word: str = "") -> int:
            return next(i for i, (k, w, text) in enumerate(rows) if (k, w) == (kind, what) and word in text)

        assert (
            at("abm", "elsewhere")
            < at("command", "Acknowledged", "DeviceLock")
            < at("push", "sent")
            < at("command", "Queued", "DeviceLock")
            < at("abm", "added")
            < at("event", "authenticate")
        )
        elsewhere = rows[at("abm", "elsewhere")][2]
        assert "DEP_DEVICE_ASSIGNED_ELSEWHERE" in elsewhere and "Assigned to another MDM server" in elsewhere
        assert "DeviceLock done" in rows[at("command", "Acknowledged", "DeviceLock")][2]
        assert "<svg" not in page and "&lt;svg/onload=1&gt;" in page
        assert 'id="timeline-older"' not in page
        zh = Admin(app, "zh-CN")
        zh.sign_in("ad@acme.example")
        zh_page = zh.get(base).text
        zh_rows = timeline(zh_page)
        assert [(k, w) for k, w, _ in zh_rows] == [(k, w) for k, w, _ in rows]
        assert "DeviceLock 已完成" in zh_page and "已分配给另一台 MDM 服务器" in zh_page
        assert not re.search(r"\bconsole\.[a-z_]+\.", strip_data(zh_page))
        b.close()
        zh.close()

    def test_pages_back_by_keyset_without_losing_an_instant(
        self, pomona: Pomona, client: TestClient, acme: TenantSetup, browser: Admin
    ) -> None:
        """With more entries than a page, the newest page links to the older ones; following the links
        shows every entry once, entries of one instant never split across pages."""
        from datetime import UTC, datetime

        from pomona.domain.models import Event, Outcome, Step

        d = enrolled(pomona, client, acme)
        did = device_id(pomona, "acme", d.udid)
        start = datetime.now(UTC) - timedelta(days=1)
        # 130 events: 61 of them (i = 10..70) at one instant, where the first page of 100 ends
        times = [start + timedelta(seconds=10 if 10 <= i <= 70 else i) for i in range(130)]
        with pomona.db.unit_of_work() as uow:
            for at in times:
                uow.events.append(
                    Event(acme.tenant_id, at, Step.ADMIN, Outcome.OK, serial=d.serial, detail={"n": 1})
                )
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        path: str | None = f"/console/t/acme/devices/{did}"
        pages = []
        while path is not None:
            page = browser.get(path).text
            pages.append(timeline(page))
            m = re.search(r'href="([^"]+)" id="timeline-older"', page)
            path = m.group(1).replace("&amp;", "&") if m else None
            assert len(pages) < 5
        assert len(pages) == 2 and 0 < len(pages[0]) <= 100
        assert sum(1 for p in pages for k, w, _ in p if (k, w) == ("event", "admin")) == 130
        first_admin = [r for r in pages[0] if r[:2] == ("event", "admin")]
        newer = len(pages[0]) - len(first_admin)
        assert newer + 59 < 100 < newer + 59 + 61  # the page would end inside the instant of 61...
        assert len(first_admin) == 59  # ...which it leaves to the next page whole
        assert 'id="timeline-newest"' in browser.last
        assert browser.get(f"/console/t/acme/devices/{did}?older=garbage").status_code == 200


class TestUnblock:
    def test_admin_unblocks_helpdesk_is_refused(
        self, pomona: Pomona, client: TestClient, app: object, acme: TenantSetup, browser: Admin
    ) -> None:
        """A blocked device (by serial from the console, or by UDID from the CLI) shows Unblock; helpdesk
        is refused (403, audited, still blocked); an admin unblocks it (audited, notice, Block again)."""
        d = enrolled(pomona, client, acme)
        did = device_id(pomona, "acme", d.udid)
        base = f"/console/t/acme/devices/{did}"
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        page = browser.get(base).text
        assert 'id="block-form"' in page and 'id="unblock"' not in page
        assert browser.post(f"{base}/unblock").status_code == 409  # not blocked
        browser.get(base)
        assert browser.post(f"{base}/block", {"confirm": "yes"}).status_code == 303
        pomona.policy.block("acme", udid=d.udid)  # `pomona device block --udid`
        page = browser.get(base).text
        assert 'id="unblock"' in page and 'id="blocked-note"' in page and 'id="block-form"' not in page
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        hd = Admin(app)
        hd.sign_in("hd@acme.example")
        assert 'id="unblock"' not in hd.get(base).text
        assert hd.post(f"{base}/unblock").status_code == 403
        hd.get(base)
        assert hd.post(f"{base}/unblock", csrf="x").status_code == 403
        hd.close()
        tid = acme.tenant_id
        with pomona.db.unit_of_work(readonly=True) as uow:
            assert uow.blocks.is_blocked(tid, serial=d.serial) and uow.blocks.is_blocked(tid, udid=d.udid)
        refused = [e for e in pomona.console.audit_log("acme") if e.action == "console.refused"]
        assert [(e.actor, e.target) for e in refused] == [("hd@acme.example", "unblock")]
        browser.get(base)
        assert browser.post(f"{base}/unblock", csrf="x").status_code == 403
        r = browser.post(f"{base}/unblock")
        assert r.status_code == 303 and r.headers["location"].endswith("?done=unblock")
        page = browser.get(r.headers["location"]).text
        assert 'data-notice="unblock"' in page and 'id="block-form"' in page and 'id="unblock"' not in page
        with pomona.db.unit_of_work(readonly=True) as uow:
            assert not uow.blocks.is_blocked(tid, serial=d.serial, udid=d.udid)
        (entry,) = [e for e in pomona.console.audit_log("acme") if e.action == "device.unblock"]
        assert entry.actor == "ad@acme.example" and entry.target == d.udid
        assert entry.detail["unblocked"] == ["serial", "udid"]


class TestTokenLastUse:
    def test_shown_and_written_at_most_once_a_minute(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        pomona: Pomona,
        client: TestClient,
        acme: TenantSetup,
        browser: Admin,
    ) -> None:
        """A token's last use shows on the Administration page and in `pomona token list` (table and
        --json); requests within the minute do not write it again; one after a minute does."""
        from datetime import UTC, datetime

        issued = pomona.admin.create_api_token("acme", "ci-loop")
        tok = issued.token
        account(pomona, "ad@acme.example", "admin", "acme")
        browser.sign_in("ad@acme.example")
        row = re.search(rf'data-token="{tok.id}".*?</tr>', browser.get(ADMIN).text, re.S)
        assert row and "never used" in row.group(0)

        def last_used() -> datetime | None:
            with pomona.db.unit_of_work(readonly=True) as uow:
                got = uow.api_tokens.get(tok.id)
            assert got is not None
            return got.last_used_at

        auth = {"Authorization": f"Bearer {issued.secret}"}
        assert client.get("/api/v1/tenants/acme/devices", headers=auth).status_code == 200
        first = last_used()
        assert first is not None and datetime.now(UTC) - first < timedelta(seconds=30)
        for _ in range(5):
            assert client.get("/api/v1/tenants/acme/devices", headers=auth).status_code == 200
        assert last_used() == first
        row = re.search(rf'data-token="{tok.id}".*?</tr>', browser.get(ADMIN).text, re.S)
        assert row and "never used" not in row.group(0) and first.strftime("%Y-%m-%d %H:%M") in row.group(0)
        code, out = cli(monkeypatch, db_url, "token", "list", "--tenant", "acme", "--json")
        assert code == 0, out
        listed = {x["id"]: x for x in json.loads(out)}
        assert listed[tok.id]["last_used_at"] == first.isoformat()
        monkeypatch.setenv("COLUMNS", "250")  # the table unfolded
        code, out = cli(monkeypatch, db_url, "token", "list", "--tenant", "acme")
        assert code == 0 and "Last used" in out and first.strftime("%Y-%m-%d %H:%M") in out
        earlier = first - timedelta(minutes=2)  # as if the last request were two minutes ago
        with pomona.db.unit_of_work() as uow:
            uow.api_tokens.mark_used(tok.id, earlier, since=first)
        assert last_used() == earlier
        assert client.get("/api/v1/tenants/acme/devices", headers=auth).status_code == 200
        again = last_used()
        assert again is not None and again >= first
