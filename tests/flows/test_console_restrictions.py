"""The console's enrollment restrictions page (issue 13, page 5) through the real ASGI app, on SQLite and
PostgreSQL: create, edit, delete, group assignment, each answered by the dry run on the page it comes
back to; helpdesk refused, another tenant's restriction not found, refusals shown in the visitor's
language."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from helpers import CONSOLE_PASSWORD, ConsoleBrowser, TenantSetup, priorities, setup_tenant, two_limits
from pomona.app import Pomona, create_app
from pomona.domain.policy import Restriction

ACME = "/console/t/acme/restrictions"
BASE = "https://pomona.test"
PASSWORD = CONSOLE_PASSWORD


Admin = ConsoleBrowser


def account(p: Pomona, email: str, role: str, tenant: str | None = None) -> None:
    p.console.create_account(email, PASSWORD, role, tenant)


@pytest.fixture
def app(pomona: Pomona) -> object:
    return create_app(pomona=pomona, eager=False)


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona, "acme")


@pytest.fixture
def admin(pomona: Pomona, app: object, acme: TenantSetup) -> Iterator[Admin]:
    """acme's admin, signed in, on the restrictions page."""
    account(pomona, "ad@acme.example", "admin", "acme")
    b = Admin(app)
    b.must_sign_in("ad@acme.example")
    b.get(ACME)
    yield b
    b.close()


def by_name(p: Pomona, tenant: str, name: str) -> Restriction:
    rs, _ = p.policy.list_restrictions(tenant)
    return next(r for r in rs if r.name == name)


def default_of(p: Pomona, tenant: str, kind: str) -> Restriction:
    rs, _ = p.policy.list_restrictions(tenant)
    return next(r for r in rs if r.is_default and r.kind.value == kind)


def follow(b: Admin, r: httpx.Response) -> httpx.Response:
    assert r.status_code == 303, r.text[:800]
    return b.get(r.headers["location"])


def dry(text: str) -> dict[str, str]:
    """The dry run's answer on a page: allowed, the restrictions applied, the refusal's reason."""
    m = re.search(
        r'id="dry-run" data-allowed="(\w+)" data-platform-restriction="([^"]*)" data-limit-restriction="([^"]*)"',
        text,
    )
    assert m, "no dry run on the page"
    reason = re.search(r'id="dry-run".*?data-reason="([A-Z_]+)"', text, re.S)
    return {
        "allowed": m[1],
        "platform": m[2],
        "limit": m[3],
        "reason": reason[1] if reason else "",
    }


def last_audit(p: Pomona) -> tuple[str, str, str | None]:
    e = p.console.audit_log("acme")[0]
    return e.actor, e.action, e.target


PLATFORM_FORM = {
    "type": "platform",
    "ios": "allow",
    "ipados": "block",
    "ios_personal": "allow",
    "ipados_personal": "allow",
    "ios_min_os": "16",
    "ios_max_os": "",
    "ipados_min_os": "",
    "ipados_max_os": "",
}


class TestCreate:
    def test_admin_creates_both_kinds_and_the_dry_run_answers_with_them(
        self, pomona: Pomona, acme: TenantSetup, admin: Admin
    ) -> None:
        """A limit restriction (1 device, Sales) and a device type one (iPadOS blocked, iOS 16+) are
        created from the page's forms; the page they come back to runs the dry run with each applied,
        and both are audited."""
        pomona.policy.create_group("acme", "Sales")
        pomona.policy.add_member("acme", "Sales", acme.upn)
        r = admin.get(f"{ACME}?upn={acme.upn}&platform=ipados")
        assert dry(r.text)["allowed"] == "True"
        assert 'id="create-limit"' in r.text and 'id="create-platform"' in r.text
        form = {"type": "limit", "name": "One each", "priority": "1", "group": "Sales", "limit": "1"}
        r = follow(admin, admin.post(ACME, {**form, "upn": acme.upn, "platform": "ipados"}))
        one = by_name(pomona, "acme", "One each")
        assert 'data-notice="created"' in r.text and one.device_limit == 1  # type: ignore[union-attr]
        assert dry(r.text)["limit"] == one.id
        assert last_audit(pomona) == ("ad@acme.example", "restriction.create", "One each")
        form = {**PLATFORM_FORM, "name": "No iPads", "priority": "1", "group": "Sales"}
        r = follow(admin, admin.post(ACME, {**form, "upn": acme.upn, "platform": "ipados"}))
        no_ipads = by_name(pomona, "acme", "No iPads")
        assert (no_ipads.ipados_allowed, no_ipads.ios_min_os) == (False, "16")  # type: ignore[union-attr]
        answer = dry(r.text)
        assert (answer["allowed"], answer["platform"], answer["reason"]) == (
            "False",
            no_ipads.id,
            "PLATFORM_BLOCKED",
        )
        r = admin.get(f"{ACME}?upn={acme.upn}&platform=ios&os=15.7")
        assert dry(r.text)["reason"] == "OS_VERSION_TOO_LOW"
        entry = pomona.console.audit_log("acme")[0]
        assert entry.action == "restriction.create" and entry.detail["ipados"] == "block"

    def test_a_restriction_without_a_name_or_group(self, pomona: Pomona, admin: Admin) -> None:
        """Name and group are optional: Pomona names it, and it applies to nobody until assigned."""
        r = follow(admin, admin.post(ACME, {"type": "limit", "priority": "4", "limit": "2"}))
        row = re.search(r'<tr data-restriction="([^"]+)" data-name="limit restriction 4"', r.text)
        assert row and "No group yet" in r.text

    @pytest.mark.parametrize("lang", ["en", "zh-CN"])
    def test_refusals_come_back_on_the_page_in_the_visitors_language(
        self, pomona: Pomona, app: object, acme: TenantSetup, lang: str
    ) -> None:
        """A limit out of range, a taken priority, a bad OS version, a group that does not exist: the
        page again (422 or 409) with the catalogue's text in the visitor's language, the reason code,
        the form as typed, and nothing created; never a traceback."""
        two_limits(pomona, acme)
        account(pomona, "ad@acme.example", "admin", "acme")
        b = Admin(app, lang)
        b.must_sign_in("ad@acme.example")
        b.get(ACME)
        texts = {
            "en": ("the device limit is a number from 1 to 15", "already has priority 1"),
            "zh-CN": ("设备上限必须是 1 到 15 之间的数字", "已有一个 limit 限制使用优先级 1"),
        }[lang]
        cases = [
            (
                {"type": "limit", "name": "Big", "priority": "5", "limit": "99"},
                422,
                "INVALID_INPUT",
                texts[0],
            ),
            (
                {"type": "limit", "name": "Big", "priority": "5", "limit": "many"},
                422,
                "INVALID_INPUT",
                texts[0],
            ),
            (
                {"type": "limit", "name": "Big", "priority": "1", "limit": "3"},
                409,
                "ALREADY_EXISTS",
                texts[1],
            ),
            (
                {**PLATFORM_FORM, "name": "Big", "priority": "5", "ios_min_os": "sixteen"},
                422,
                "INVALID_INPUT",
                "",
            ),
            ({"type": "limit", "name": "Big", "priority": "5", "group": "Nobody"}, 422, "NOT_FOUND", ""),
            ({"type": "limit", "name": "Big", "priority": "x"}, 422, "INVALID_INPUT", ""),
            ({"type": "device", "name": "Big", "priority": "5"}, 422, "INVALID_INPUT", ""),
        ]
        for form, status, code, text in cases:
            r = b.post(ACME, form)
            assert r.status_code == status, (form, r.text[:500])
            assert f'id="create-refusal" data-reason="{code}"' in r.text, form
            assert text in r.text, (form, text)
            assert "Traceback" not in r.text
            assert ('value="Big"' in r.text) is (
                form["type"] != "device"
            )  # the form as typed, when there is one
            assert f'<html lang="{lang}">' in r.text
        assert "Big" not in priorities(pomona, "acme")
        b.close()

    def test_a_forged_csrf_token_is_refused(self, pomona: Pomona, admin: Admin) -> None:
        """Without the session's CSRF token a create is 403 and nothing is created."""
        r = admin.post(ACME, {"type": "limit", "priority": "4", "limit": "2"}, csrf="forged")
        assert r.status_code == 403
        assert len(priorities(pomona, "acme")) == 2  # the two Defaults


class TestEdit:
    def test_admin_edits_a_limit_and_the_dry_run_follows(
        self, pomona: Pomona, acme: TenantSetup, admin: Admin
    ) -> None:
        """Tight (limit 1) gets limit 4 and priority 7 from its page; the page comes back with the dry
        run counting against 4, now via Loose (priority 2) first; audited with the change."""
        tight, loose = two_limits(pomona, acme)
        r = admin.get(f"{ACME}/{tight}?upn={acme.upn}")
        assert 'id="edit-form"' in r.text and dry(r.text)["limit"] == tight
        r = follow(
            admin,
            admin.post(f"{ACME}/{tight}", {"type": "limit", "priority": "7", "limit": "4", "upn": acme.upn}),
        )
        assert 'data-notice="edited"' in r.text and dry(r.text)["limit"] == loose
        assert by_name(pomona, "acme", "Tight").device_limit == 4  # type: ignore[union-attr]
        assert priorities(pomona, "acme")["Tight"] == 7
        entry = pomona.console.audit_log("acme")[0]
        assert (entry.action, entry.target) == ("restriction.edit", "Tight")
        assert entry.detail == {"type": "limit", "limit": 4, "from": 1, "to": 7}

    def test_the_default_settings_change_its_priority_does_not(
        self, pomona: Pomona, acme: TenantSetup, admin: Admin
    ) -> None:
        """The Default device type restriction's page has no priority field and no delete; its settings
        change (iOS 17 minimum, then cleared) and the dry run follows; a priority posted for it is
        refused on the page (the Default ranks last), and it cannot be deleted."""
        d = default_of(pomona, "acme", "platform")
        r = admin.get(f"{ACME}/{d.id}")
        assert 'name="priority"' not in r.text and 'id="delete-link"' not in r.text
        assert 'id="assign-form"' not in r.text
        form = {
            **PLATFORM_FORM,
            "ipados": "allow",
            "ios_min_os": "17",
            "upn": acme.upn,
            "platform": "ios",
            "os": "16.4",
        }
        r = follow(admin, admin.post(f"{ACME}/{d.id}", form))
        assert dry(r.text)["reason"] == "OS_VERSION_TOO_LOW"
        r = follow(admin, admin.post(f"{ACME}/{d.id}", {**form, "ios_min_os": ""}))
        assert dry(r.text)["allowed"] == "True"
        assert default_of(pomona, "acme", "platform").ios_min_os is None  # type: ignore[union-attr]
        r = admin.post(f"{ACME}/{d.id}", {**form, "priority": "3"})
        assert r.status_code == 422 and 'id="edit-refusal" data-reason="INVALID_INPUT"' in r.text
        assert "always ranks last" in r.text
        r = admin.post(f"{ACME}/{d.id}/delete", {"confirm": "yes"})
        assert r.status_code == 422 and "can be edited but not deleted" in r.text
        assert default_of(pomona, "acme", "platform").priority == d.priority
        r = admin.post(f"{ACME}/{d.id}/groups", {"group": "Sales"})
        assert r.status_code == 422 and "applies to everyone" in r.text

    def test_an_edit_refusal_keeps_the_form(self, pomona: Pomona, acme: TenantSetup, admin: Admin) -> None:
        """A limit of 0 and a taken priority come back on the restriction's page, with what was typed."""
        tight, _ = two_limits(pomona, acme)
        admin.get(f"{ACME}/{tight}")
        r = admin.post(f"{ACME}/{tight}", {"type": "limit", "priority": "1", "limit": "0"})
        assert r.status_code == 422 and 'value="0"' in r.text and "from 1 to 15" in r.text
        r = admin.post(f"{ACME}/{tight}", {"type": "limit", "priority": "2", "limit": "3"})
        assert r.status_code == 409 and 'data-reason="ALREADY_EXISTS"' in r.text
        assert by_name(pomona, "acme", "Tight").device_limit == 1  # type: ignore[union-attr]


class TestDelete:
    def test_delete_asks_first_then_the_dry_run_falls_back(
        self, pomona: Pomona, acme: TenantSetup, admin: Admin
    ) -> None:
        """The confirmation page; a POST without the confirmation goes back to it and deletes nothing;
        confirmed, Tight is gone, the list's dry run names Loose, and the delete is audited."""
        tight, loose = two_limits(pomona, acme)
        r = admin.get(f"{ACME}/{tight}/delete?upn={acme.upn}")
        assert r.status_code == 200 and 'id="delete-confirm"' in r.text
        r = admin.post(f"{ACME}/{tight}/delete", {"upn": acme.upn})
        assert r.status_code == 303 and r.headers["location"].startswith(f"{ACME}/{tight}/delete")
        assert "Tight" in priorities(pomona, "acme")
        admin.get(f"{ACME}/{tight}/delete")
        r = follow(admin, admin.post(f"{ACME}/{tight}/delete", {"confirm": "yes", "upn": acme.upn}))
        assert 'data-notice="deleted"' in r.text and dry(r.text)["limit"] == loose
        assert "Tight" not in priorities(pomona, "acme")
        assert last_audit(pomona) == ("ad@acme.example", "restriction.delete", "Tight")
        assert admin.get(f"{ACME}/{tight}").status_code == 404


class TestGroups:
    def test_assign_and_unassign_change_the_dry_runs_answer(
        self, pomona: Pomona, acme: TenantSetup, admin: Admin
    ) -> None:
        """A device type restriction blocking iPadOS, in no group: the dry run (iPadOS) allows. Sales
        assigned: it refuses with PLATFORM_BLOCKED via that restriction; unassigned: it allows again.
        Both audited; the page lists the assigned groups."""
        pomona.policy.create_group("acme", "Sales")
        pomona.policy.add_member("acme", "Sales", acme.upn)
        r = pomona.policy.create_restriction(
            "acme", type_="platform", priority=1, groups=[], name="No iPads", ipados="block"
        )
        page = f"{ACME}/{r.id}"
        q = {"upn": acme.upn, "platform": "ipados"}
        got = admin.get(f"{page}?upn={acme.upn}&platform=ipados")
        assert dry(got.text)["allowed"] == "True" and "No group yet" in got.text
        got = follow(admin, admin.post(f"{page}/groups", {"group": "Sales", **q}))
        assert 'data-notice="assigned"' in got.text and 'data-group="Sales"' in got.text
        assert dry(got.text) == {
            "allowed": "False",
            "platform": r.id,
            "limit": dry(got.text)["limit"],
            "reason": "PLATFORM_BLOCKED",
        }
        assert last_audit(pomona) == ("ad@acme.example", "restriction.assign", "No iPads")
        got = follow(admin, admin.post(f"{page}/groups/remove", {"group": "Sales", **q}))
        assert 'data-notice="unassigned"' in got.text and 'data-group="Sales"' not in got.text
        assert dry(got.text)["allowed"] == "True"
        assert last_audit(pomona) == ("ad@acme.example", "restriction.unassign", "No iPads")
        got = admin.post(f"{page}/groups", {"group": "Nobody"})
        assert got.status_code == 422 and 'id="group-refusal" data-reason="NOT_FOUND"' in got.text
        assert "no group &#39;Nobody&#39;" in got.text
        got = admin.post(f"{page}/groups", {"group": " "})
        assert got.status_code == 422 and "name the group" in got.text

    def test_the_group_picker_searches_the_tenants_groups(
        self, pomona: Pomona, acme: TenantSetup, admin: Admin
    ) -> None:
        """With many groups the picker offers the first 100 by name and ?gq= narrows them (any case);
        assigned groups are not offered again; another tenant's groups never appear."""
        for i in range(120):
            pomona.policy.create_group("acme", f"Team {i:03d}")
        setup_tenant(pomona, "globex")
        pomona.policy.create_group("globex", "Globex team")
        r = pomona.policy.create_restriction("acme", type_="limit", priority=1, groups=["Team 005"], limit=3)
        got = admin.get(f"{ACME}/{r.id}")
        assert 'data-matching="120"' in got.text and got.text.count('<option value="Team ') == 99
        got = admin.get(f"{ACME}/{r.id}?gq=team 01")
        assert 'data-matching="10"' in got.text and "Team 011" in got.text and "Team 020" not in got.text
        got = admin.get(f"{ACME}/{r.id}?gq=globex")
        assert 'data-matching="0"' in got.text and "Globex team" not in got.text

    def test_names_people_typed_are_escaped(self, pomona: Pomona, acme: TenantSetup, admin: Admin) -> None:
        """A restriction and a group named <script> show as text on the restriction's page, its group
        list and picker, the delete confirmation, and a refusal naming the group."""
        evil = '<script>alert("pwned")</script>'
        pomona.policy.create_group("acme", evil)
        pomona.policy.create_group("acme", evil + "2")
        r = pomona.policy.create_restriction(
            "acme", type_="limit", priority=1, groups=[evil], name=evil, limit=2
        )
        for path in (f"{ACME}/{r.id}", f"{ACME}/{r.id}?gq=<script>", f"{ACME}/{r.id}/delete", ACME):
            got = admin.get(path)
            assert got.status_code == 200 and "<script>" not in got.text and "&lt;script&gt;" in got.text, (
                path
            )
        admin.get(f"{ACME}/{r.id}")
        got = admin.post(f"{ACME}/{r.id}/groups", {"group": "<script>x"})
        assert got.status_code == 422 and "<script>" not in got.text


class TestRoles:
    def test_helpdesk_reads_and_runs_the_dry_run_but_every_change_is_refused(
        self, pomona: Pomona, app: object, acme: TenantSetup
    ) -> None:
        """Helpdesk sees the list, a restriction's page and the dry run, and no change form; every change
        (create, edit, priority, assign, unassign, delete) is 403, audited as console.refused, and
        changes nothing."""
        tight, _ = two_limits(pomona, acme)
        account(pomona, "hd@acme.example", "helpdesk", "acme")
        b = Admin(app)
        b.must_sign_in("hd@acme.example")
        r = b.get(f"{ACME}?upn={acme.upn}")
        assert dry(r.text)["limit"] == tight
        assert "data-create" not in r.text and "data-priority-submit" not in r.text
        r = b.get(f"{ACME}/{tight}?upn={acme.upn}")
        assert r.status_code == 200 and dry(r.text)["limit"] == tight and 'data-group="Sales"' in r.text
        assert (
            'id="edit-form"' not in r.text
            and 'id="assign-form"' not in r.text
            and "data-unassign" not in r.text
        )
        assert b.get(f"{ACME}/{tight}/delete").status_code == 403
        before = priorities(pomona, "acme")
        b.get(ACME)
        changes = [
            (ACME, {"type": "limit", "priority": "9", "limit": "2"}),
            (f"{ACME}/{tight}", {"type": "limit", "priority": "9", "limit": "9"}),
            (f"{ACME}/{tight}/priority", {"priority": "9"}),
            (f"{ACME}/{tight}/groups", {"group": "Staff"}),
            (f"{ACME}/{tight}/groups/remove", {"group": "Sales"}),
            (f"{ACME}/{tight}/delete", {"confirm": "yes"}),
        ]
        for path, form in changes:
            r = b.post(path, form)
            assert r.status_code == 403 and 'data-message="console.error.role.body"' in r.text, path
            assert last_audit(pomona) == ("hd@acme.example", "console.refused", "policy"), path
            b.get(ACME)
        assert priorities(pomona, "acme") == before
        tight_now = by_name(pomona, "acme", "Tight")
        assert tight_now.device_limit == 1 and len(tight_now.group_ids) == 1  # type: ignore[union-attr]
        b.close()

    def test_another_tenants_restriction_is_not_found(
        self, pomona: Pomona, acme: TenantSetup, admin: Admin
    ) -> None:
        """globex's restriction id under acme's URL, or under globex's, is 404 for acme's admin on every
        route, and nothing of globex's changes."""
        globex = setup_tenant(pomona, "globex")
        theirs, _ = two_limits(pomona, globex)
        for base in (ACME, "/console/t/globex/restrictions"):
            assert admin.get(f"{base}/{theirs}").status_code == 404
            assert admin.get(f"{base}/{theirs}/delete").status_code == 404
            admin.get(ACME)
            for suffix, form in (
                ("", {"type": "limit", "priority": "9", "limit": "9"}),
                ("/priority", {"priority": "9"}),
                ("/groups", {"group": "Staff"}),
                ("/groups/remove", {"group": "Sales"}),
                ("/delete", {"confirm": "yes"}),
            ):
                r = admin.post(f"{base}/{theirs}{suffix}", form)
                assert r.status_code == 404, (base, suffix)
                admin.get(ACME)
        r = admin.post("/console/t/globex/restrictions", {"type": "limit", "priority": "9", "limit": "2"})
        assert r.status_code == 404
        assert priorities(pomona, "globex") == {
            "Tight": 1,
            "Loose": 2,
            "Default platform restriction": None,
            "Default limit restriction": None,
        }
        assert by_name(pomona, "globex", "Tight").device_limit == 1  # type: ignore[union-attr]


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_every_restriction_page_in_both_languages(
    pomona: Pomona, app: object, acme: TenantSetup, lang: str
) -> None:
    """The list, a restriction's page, the Default's and the delete confirmation answer 200 in the
    visitor's language, with no raw catalogue keys."""
    tight, _ = two_limits(pomona, acme)
    d = default_of(pomona, "acme", "limit")
    account(pomona, "ad@acme.example", "admin", "acme")
    b = Admin(app, lang)
    b.must_sign_in("ad@acme.example")
    marker = {"en": "Enrollment restrictions", "zh-CN": "注册限制"}[lang]
    for path in (ACME, f"{ACME}/{tight}?upn={acme.upn}", f"{ACME}/{d.id}", f"{ACME}/{tight}/delete"):
        r = b.get(path)
        assert r.status_code == 200, (path, r.text[:500])
        assert f'<html lang="{lang}">' in r.text and marker in r.text
        text = re.sub(r'data-[a-z-]+="[^"]*"', "", r.text)
        assert not re.search(r"\b(console|portal|cli|error)\.[a-z_]+\.", text), path
    b.close()
