"""The console's ADE profile page (issue 13, page 7) through the real ASGI app and the ABM emulator over
HTTP, on SQLite and PostgreSQL: editing with the linter, assignment by serial, the default, rules, the
per-device status (keyset pages), helpdesk's refusals, and tenant isolation."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from helpers import CONSOLE_PASSWORD, ConsoleBrowser, TenantSetup, cli, setup_tenant
from pomona.app import Pomona, Settings, build, create_app
from pomona.domain.models import Device, Event, Outcome, Step
from pomona.testing.abm_emulator import AbmEmulator

BASE = "https://pomona.test"
PASSWORD = CONSOLE_PASSWORD
DEVICES = 55  # more than a page (50)
CJK = re.compile("[\u4e00-\u9fff]")


Admin = ConsoleBrowser


@dataclass
class Ade:
    """A tenant (acme) with an ABM token ("main") synced from the emulator, one profile ("staff"), and
    the console app of a Pomona that reaches the emulator."""

    p: Pomona
    app: object
    emu: AbmEmulator
    acme: TenantSetup
    profile_id: str
    abm_url: str

    @property
    def page(self) -> str:
        return f"/console/t/acme/apple/profiles/{self.profile_id}"

    def browser(self, email: str, role: str = "admin", lang: str = "en", tenant: str = "acme") -> Admin:
        self.p.console.create_account(email, PASSWORD, role, tenant)
        b = Admin(self.app, lang)
        b.must_sign_in(email)
        b.get(self.page)
        return b

    def profile(self) -> Any:
        return next(v.record for v in self.p.abm.profiles("acme") if v.record.id == self.profile_id)

    def audit(self) -> list[tuple[str, Any]]:
        return [(e.action, e.detail) for e in self.p.console.audit_log("acme")]


@pytest.fixture
def ade(pomona: Pomona, db_url: str, tmp_path: Any) -> Iterator[Ade]:
    emu = AbmEmulator(devices=DEVICES, serial_prefix="ACME")  # ACME00000000, ...04, ...08: iPad minis
    server = emu.serve_in_thread()
    acme = setup_tenant(pomona, "acme")
    p = build(
        Settings(
            data_dir=tmp_path,
            database_url=db_url,
            public_url="https://pomona.test",
            abm_url=server.url,
            abm_assign_backoff=0,
        )
    )
    cert, _ = p.abm.keypair("acme")
    p.abm.upload_token("acme", emu.issue_token(cert), "main")
    p.abm.sync("acme")
    report = p.abm.create_profile("acme", "staff")
    yield Ade(p, create_app(pomona=p, eager=False), emu, acme, report.profile.record.id, server.url)
    p.close()
    server.close()


def rows(html: str) -> dict[str, dict[str, str]]:
    """The device list's rows: serial -> its data- attributes."""
    section = html[html.find('id="profile-devices"') :]
    out: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"<tr (data-serial=[^>]*)>", section):
        attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', m.group(1)))
        out[attrs["serial"]] = attrs
    return out


def sync(b: Admin) -> None:
    """Sync now, from the Apple settings page: the list shows ABM's status as this sync saw it."""
    b.get("/console/t/acme/apple")
    assert b.post("/console/t/acme/apple/abm/sync", {"token": ""}).status_code == 200


def answers(html: str) -> dict[str, tuple[str, str]]:
    """The assignment's answers: serial -> (kind, reason code)."""
    table = html[html.find('id="assign-answers"') : html.find("</table>", html.find('id="assign-answers"'))]
    return {
        s: (k, c)
        for s, k, c in re.findall(r'data-serial="([^"]+)" data-answer="([^"]+)" data-reason="([^"]*)"', table)
    }


class TestEdit:
    def test_lint_error_refused_warning_shown_and_saved(self, ade: Ade) -> None:
        """The list links the profile's page, pre-filled; a blocking finding refuses the save with its
        reason beside its field (nothing kept, nothing sent to ABM); a warning does not: the profile is
        saved (renamed), defined again at ABM, the warning shown, the change audited."""
        b = ade.browser("ad@acme.example")
        assert f'href="{ade.page}"' in b.get("/console/t/acme/apple").text
        r = b.get(ade.page)
        assert r.status_code == 200 and 'name="name" maxlength="300" value="staff"' in r.text
        assert re.search(r'<input type="checkbox" name="supervised" value="yes" checked>', r.text)
        defined = dict(ade.emu.s.profiles)
        r = b.post(ade.page, {"name": "staff", "auth": "modern"})  # neither supervised nor removable
        assert r.status_code == 422 and 'id="profile-refusal" data-reason="DEP_PROFILE_REJECTED"' in r.text
        assert re.search(
            r'data-lint-field="is_mdm_removable"><li data-rule="removable_needs_supervision" data-severity="critical"',
            r.text,
        )
        assert "Traceback" not in r.text and ade.profile().settings.get("is_supervised") is True
        assert ade.emu.s.profiles == defined
        form = {"name": "staff-2", "auth": "modern", "supervised": "yes", "skip": "Siri Siri"}
        r = b.post(ade.page, form)
        assert r.status_code == 303 and r.headers["location"] == f"{ade.page}?done=saved", r.text[:800]
        r = b.get(r.headers["location"])
        assert 'data-notice="saved"' in r.text and 'value="staff-2"' in r.text
        assert re.search(
            r'data-lint-field="skip_setup_items"><li data-rule="skip_item_duplicate" data-severity="warning"',
            r.text,
        )
        kept = ade.profile()
        assert kept.name == "staff-2" and kept.settings["skip_setup_items"] == ["Siri", "Siri"]
        assert kept.definitions and set(kept.definitions.values()) <= set(ade.emu.s.profiles)
        assert len(ade.emu.s.profiles) == len(defined) + 1  # defined again: a new UUID
        log = ade.audit()
        assert ("ade_profile.edit", log[0][1]) == log[0] and log[0][1]["renamed_from"] == "staff"
        ade.p.abm.create_profile("acme", "taken")
        r = b.post(ade.page, {**form, "name": "taken"})
        assert r.status_code == 409 and 'id="profile-refusal" data-reason="ALREADY_EXISTS"' in r.text
        assert 'value="taken"' in r.text and ade.profile().name == "staff-2"
        assert any(a == "console.change_refused" and d["reason"] == "DEP_PROFILE_REJECTED" for a, d in log)
        b.close()

    def test_page_in_chinese(self, ade: Ade) -> None:
        """The page reads in Chinese, with no catalogue key left untranslated."""
        b = ade.browser("ad@acme.example", lang="zh-CN")
        r = b.get(ade.page)
        assert r.status_code == 200 and '<html lang="zh-CN">' in r.text and "分配规则" in r.text
        text = re.sub(r'data-[a-z-]+="[^"]*"', "", r.text)
        assert not re.search(r"\b(console|portal|error)\.[a-z_]+\.", text)
        b.close()


class TestAssignment:
    def test_assign_serials_with_abm_answers(self, ade: Ade) -> None:
        """Serials pasted one per line are assigned: ABM's SUCCESS, a serial ABM does not list yet
        (pending), and ABM's refusal shown with its code and its text in the visitor's language; the
        device list then says each is explicit, with ABM's status."""
        ade.emu.set_fault("assignment-fails", "ACME00000002")
        b = ade.browser("ad@acme.example", lang="zh-CN")
        text = "ACME00000001\r\nACME00000002\r\n\r\nNOTINABM0001\r\nACME00000001"
        r = b.post(f"{ade.page}/assign", {"serials": text})
        assert r.status_code == 200, r.text[:500]
        got = answers(r.text)
        assert got == {
            "ACME00000001": ("ok", ""),
            "ACME00000002": ("refused", "DEP_PROFILE_NOT_ASSIGNED"),
            "NOTINABM0001": ("pending", ""),
        }
        refused = re.search(
            r'data-serial="ACME00000002" data-answer="refused"[^>]*><td>.*?</tr>', r.text, re.S
        )
        assert refused and CJK.search(refused.group(0)), refused
        assert rows(r.text)["ACME00000001"]["status"] == "empty"  # as the last sync saw it
        sync(b)
        listed = rows(b.get(ade.page).text)
        assert listed["ACME00000001"]["how"] == "explicit" and listed["ACME00000001"]["status"] == "assigned"
        assert listed["ACME00000001"]["held"] == "True"
        assert listed["ACME00000002"]["how"] == "explicit" and listed["ACME00000002"]["held"] == "False"
        assert listed["NOTINABM0001"]["status"] == "" and listed["NOTINABM0001"]["how"] == "explicit"
        detail = next(d for a, d in ade.audit() if a == "ade_profile.assign")
        assert detail["serials"] == 3
        assert detail["refused"] == ["ACME00000002"]
        b.close()

    def test_too_many_serials_and_abm_refusal(self, ade: Ade) -> None:
        """More than 1,000 serials is refused before ABM is asked; ABM refusing the whole request
        (terms not accepted) shows its DEP_* code and text, not a traceback."""
        b = ade.browser("ad@acme.example")
        many = "\n".join(f"S{n:08d}" for n in range(1001))
        r = b.post(f"{ade.page}/assign", {"serials": many})
        assert r.status_code == 422 and 'id="assign-refusal" data-reason="INVALID_INPUT"' in r.text
        r = b.post(f"{ade.page}/assign", {"serials": " \n "})
        assert r.status_code == 422 and 'id="assign-refusal" data-reason="INVALID_INPUT"' in r.text
        ade.emu.set_fault("terms-not-accepted")
        r = b.post(f"{ade.page}/assign", {"serials": "ACME00000001"})
        assert r.status_code == 502 and 'id="assign-refusal" data-reason="DEP_TERMS_NOT_ACCEPTED"' in r.text
        assert "Traceback" not in r.text and "ACME00000001" in r.text  # the textarea keeps the serials
        b.close()

    def test_default_rules_and_per_device_list(self, ade: Ade) -> None:
        """Made the token's default, the profile is adopted by every device ABM gives without one; a
        model rule is listed and its devices say "by rule"; removing it gives them the default again;
        the list pages by 50 (keyset), links an enrolled serial to its device and shows the serial's
        last ADE event."""
        b = ade.browser("ad@acme.example")
        other = ade.p.abm.create_profile("acme", "ipads").profile.record  # the rule's profile
        r = b.post(f"{ade.page}/default", {"token": "main"})
        assert r.status_code == 303 and r.headers["location"].endswith("?done=default")
        kept = ade.profile()
        assert kept.is_default and kept.token_id is not None
        with ade.p.db.unit_of_work() as uow:
            d = uow.devices.upsert(
                Device(
                    str(uuid.uuid4()),
                    ade.acme.tenant_id,
                    "UDID-1",
                    "ACME00000003",
                    created_at=datetime.now(UTC),
                )
            )
            uow.events.append(
                Event(
                    ade.acme.tenant_id,
                    datetime.now(UTC),
                    Step.ADE,
                    Outcome.FAILED,
                    reason="DEP_PROFILE_NOT_ASSIGNED",
                    serial="ACME00000003",
                )
            )
        sync(b)
        r = b.get(f"{ade.page}?done=default")
        assert 'data-notice="default"' in r.text
        listed = rows(r.text)
        assert len(listed) == 50 and min(listed) == "ACME00000000" and 'id="next-page"' in r.text
        assert all(v["how"] == "default" and v["held"] == "True" for v in listed.values())
        assert f'href="/console/t/acme/devices/{d.id}"><code>ACME00000003</code>' in r.text
        assert listed["ACME00000003"]["event"] == "failed"
        assert listed["ACME00000003"]["event-reason"] == "DEP_PROFILE_NOT_ASSIGNED"
        nxt = re.search(r'id="next-page" href="([^"]+)"', r.text)[1]  # type: ignore[index]
        second = rows(b.get(nxt.replace("&amp;", "&")).text)
        assert sorted(second) == [f"ACME{n:08d}" for n in range(50, DEVICES)]
        assert 'id="next-page"' not in b.last and 'id="first-page"' in b.last
        # a rule, on the other profile's page: its devices leave this one
        page2 = f"/console/t/acme/apple/profiles/{other.id}"
        b.get(page2)
        r = b.post(f"{page2}/rules", {"field": "model", "value": "iPad mini", "priority": ""})
        assert r.status_code == 303 and r.headers["location"].endswith("?done=rule_added"), r.text[:800]
        r = b.get(page2)
        rule = re.search(r'<tr data-rule="([^"]+)" data-field="model" data-value="iPad mini">', r.text)
        assert rule
        ipads = rows(r.text)
        assert "ACME00000004" in ipads and ipads["ACME00000004"]["how"] == "rule"
        sync(b)
        assert "ACME00000004" not in rows(b.get(ade.page).text)  # ABM now shows the other profile
        b.get(page2)
        r = b.post(f"{page2}/rules", {"field": "colour", "value": "x"})
        assert r.status_code == 422 and 'id="rule-refusal" data-reason="INVALID_INPUT"' in r.text
        r = b.post(f"{page2}/rules/{rule[1]}/remove")
        assert r.status_code == 303 and r.headers["location"].endswith("?done=rule_removed")
        assert ade.p.abm.rules("acme") == []
        assert rows(b.get(ade.page).text)["ACME00000004"]["how"] == "default"
        b.get(ade.page)
        r = b.post(f"{ade.page}/default", {"token": ""})  # the default of every token
        assert r.status_code == 303 and ade.profile().token_id is None and ade.profile().is_default
        actions = [a for a, _ in ade.audit()]
        for a in ("ade_profile.default", "ade_profile.rule_add", "ade_profile.rule_remove"):
            assert a in actions, a
        b.close()


class TestRefusals:
    def test_helpdesk_views_but_every_change_is_refused(self, ade: Ade) -> None:
        """Helpdesk sees the page (no form), and each change is 403 and audited, nothing changed."""
        b = ade.browser("hd@acme.example", role="helpdesk")
        r = b.get(ade.page)
        assert r.status_code == 200 and 'value="staff"' in r.text and "data-ade-form" not in r.text
        rule = ade.p.abm.add_rule("acme", "staff", "model", "iPad*")[0].rule.id
        for path, form in (
            ("", {"name": "x", "auth": "modern", "supervised": "yes"}),
            ("/assign", {"serials": "ACME00000001"}),
            ("/default", {"token": ""}),
            ("/rules", {"field": "model", "value": "iPhone*"}),
            (f"/rules/{rule}/remove", {}),
        ):
            r = b.post(ade.page + path, form)
            assert r.status_code == 403 and 'data-message="console.error.role.body"' in r.text, path
            b.get(ade.page)
        assert ade.profile().name == "staff" and not ade.profile().is_default
        assert len(ade.p.abm.rules("acme")) == 1
        assert [a for a, _ in ade.audit()].count("console.refused") == 5
        b.close()

    def test_csrf_and_other_tenants(self, ade: Ade, pomona: Pomona) -> None:
        """A POST without the session's CSRF token is refused; another tenant's profile id is not found,
        read or changed, whoever's URL it is put in."""
        b = ade.browser("ad@acme.example")
        r = b.post(f"{ade.page}/assign", {"serials": "ACME00000001"}, csrf="forged")
        assert r.status_code == 403 and "ade_profile.assign" not in [a for a, _ in ade.audit()]
        setup_tenant(pomona, "globex")
        theirs = ade.p.abm.create_profile("globex", "globex-staff").profile.record.id
        g = Admin(ade.app)
        ade.p.console.create_account("ad@globex.example", PASSWORD, "admin", "globex")
        g.must_sign_in("ad@globex.example")
        g.get("/console/t/globex/apple")
        assert g.get(ade.page).status_code == 404 and "staff" not in g.last
        assert g.get(f"/console/t/globex/apple/profiles/{ade.profile_id}").status_code == 404
        g.get("/console/t/globex/apple")
        r = g.post(f"/console/t/globex/apple/profiles/{ade.profile_id}/assign", {"serials": "ACME00000001"})
        assert r.status_code == 404
        assert b.get(f"/console/t/acme/apple/profiles/{theirs}").status_code == 404
        b.get(ade.page)
        r = b.post(f"/console/t/acme/apple/profiles/{theirs}/default", {"token": ""})
        assert r.status_code == 404 and not any(v.record.is_default for v in ade.p.abm.profiles("globex"))
        g.close()
        b.close()


def test_admin_values_are_escaped(ade: Ade) -> None:
    """A profile named <script> and a rule matching <script> show as text on the profile's page."""
    evil = '<script>alert("pwned")</script>'
    other = ade.p.abm.create_profile("acme", evil).profile.record.id
    ade.p.abm.add_rule("acme", evil, "model", evil)
    b = ade.browser("ad@acme.example")
    r = b.get(f"/console/t/acme/apple/profiles/{other}")
    assert r.status_code == 200 and "<script>" not in r.text
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in r.text
    b.close()


def test_cli_edit_renames_and_moves_between_tokens(
    ade: Ade, db_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pomona abm profile edit` takes the same rename and token as the page: --rename, --token NAME,
    --every-token (not with --token: INVALID_INPUT, exit 2)."""
    monkeypatch.setenv("POMONA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POMONA_ABM_URL", ade.abm_url)
    monkeypatch.setenv("POMONA_PUBLIC_URL", "https://pomona.test")
    base = ("abm", "profile", "edit", "--tenant", "acme", "--name")
    code, out = cli(monkeypatch, db_url, *base, "staff", "--rename", "crew", "--token", "main", "--json")
    assert code == 0, out
    got = json.loads(out)
    assert (got["name"], got["token"]) == ("crew", "main") and ade.profile().token_id is not None
    code, out = cli(monkeypatch, db_url, *base, "crew", "--token", "main", "--every-token", "--json")
    assert code == 2 and "INVALID_INPUT" in out and ade.profile().token_id is not None
    code, out = cli(monkeypatch, db_url, *base, "crew", "--every-token", "--json")
    assert code == 0 and json.loads(out)["token"] is None and ade.profile().token_id is None
