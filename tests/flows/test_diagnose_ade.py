"""Diagnose the ADE codes from Apple Business Manager's own state: one scenario per code through the ABM
emulator (over HTTP) and the real services, each with its twin where the cause is absent. The ADE
endpoint's events (Step.ADE) and ABM's answers that another helper's code records are appended through
the event store, as those writers leave them."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from diag_helpers import SERVER_HOST, World, Zone, later_clock
from pomona.app import Pomona, Settings, build
from pomona.domain.ade_profile import AuthMode
from pomona.domain.errors import AbmError, AbmTokenFileError
from pomona.domain.models import Event, Outcome, Step
from pomona.services.diagnose import to_json
from pomona.testing.abm_emulator import AbmEmulator


@pytest.fixture
def db_url(tmp_path: Path, sqlite_template: Path) -> str:
    """SQLite only: the checkers read through the stores, whose queries tests/storage runs on both backends."""
    target = tmp_path / "pomona.db"
    shutil.copyfile(sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def emu() -> Iterator[tuple[AbmEmulator, str]]:
    e = AbmEmulator(devices=3, serial_prefix="ACME")
    server = e.serve_in_thread()
    yield e, server.url
    server.close()


@pytest.fixture
def p(db_url: str, tmp_path: Path, zone: Zone, emu: tuple[AbmEmulator, str]) -> Iterator[Pomona]:
    """The diagnose world's Pomona (diag_helpers), reaching the ABM emulator, assignments without backoff."""
    pom = build(
        Settings(
            data_dir=tmp_path,
            database_url=db_url,
            public_url=f"https://{SERVER_HOST}",
            dns_server=f"127.0.0.1:{zone.port}",
            abm_url=emu[1],
            abm_assign_backoff=0,
        )
    )
    yield pom
    pom.close()


@dataclass
class Ade:
    w: World
    emu: AbmEmulator

    @property
    def tenant(self) -> str:
        return self.w.s.name

    def token(self, days: int = 365) -> None:
        """Upload a server token the emulator issued to the tenant's ABM key."""
        cert, _ = self.w.p.abm.keypair(self.tenant)
        self.w.p.abm.upload_token(
            self.tenant, self.emu.issue_token(cert, expires_in=timedelta(days=days)), "main"
        )

    def sync(self) -> None:
        self.w.p.abm.sync(self.tenant)

    def profile(self, auth: AuthMode = AuthMode.MODERN, *, default: bool = True, name: str = "staff") -> None:
        self.w.p.abm.create_profile(self.tenant, name, auth=auth, default=default)

    def serial(self, i: int = 0) -> str:
        return self.emu.s.order[i]

    def event(self, step: Step, outcome: Outcome, reason: str | None = None, **kw: object) -> None:
        """An event as the ADE endpoint (or ABM's release handling) records it."""
        detail = kw.pop("detail", {})
        with self.w.p.db.unit_of_work() as uow:
            uow.events.append(
                Event(
                    self.w.s.tenant_id,
                    datetime.now(UTC),
                    step,
                    outcome,
                    reason,
                    detail=detail,  # type: ignore[arg-type]
                    **kw,  # type: ignore[arg-type]
                )
            )

    def machine_info(self, serial: str) -> None:
        self.event(
            Step.ADE,
            Outcome.OK,
            serial=serial,
            udid="UDID-" + serial,
            detail={"stage": "machineinfo", "product": "iPhone15,2", "os_version": "17.4", "auth": "modern"},
        )

    def diagnose(self, lang: str = "en", **kw: object) -> dict[str, object]:
        return to_json(self.w.p.diagnose.diagnose(self.tenant, **kw), lang)  # type: ignore[arg-type]


@pytest.fixture
def a(w: World, emu: tuple[AbmEmulator, str]) -> Ade:
    return Ade(w, emu[0])


def finding(r: dict[str, object], code: str) -> dict[str, object]:
    """The code's finding, in the findings or under also_wrong."""
    for f in [*r["findings"], *r["also_wrong"]]:  # type: ignore[misc]
        if f["code"] == code:
            return f  # type: ignore[no-any-return]
    raise AssertionError(f"{code} not checked: {r['findings']}")


def answer(r: dict[str, object]) -> tuple[str, str]:
    first = r["findings"][0]  # type: ignore[index]
    return first["code"], first["verdict"]


class TestProfileNotAssigned:
    def test_profile_made_before_the_token_upload(self, a: Ade) -> None:
        """ "DEP enrollment doesn't start": ABM shows the device no profile, the assignments failed, and the
        profile was made before the token was uploaded: proven, said in both languages."""
        a.profile()  # no token yet: kept, not defined
        serial = a.serial(1)
        a.emu.set_fault("assignment-fails", serial)
        a.token()
        a.sync()
        d = a.w.p.diagnose.diagnose(a.tenant, serial=serial, message="DEP enrollment doesn't start")
        en, zh = to_json(d, "en"), to_json(d, "zh-CN")
        assert answer(en) == ("DEP_PROFILE_NOT_ASSIGNED", "proven")
        first = en["findings"][0]  # type: ignore[index]
        assert (
            "before token main was uploaded" in first["observed"]
            and "1 assignment(s) failed" in first["observed"]
        )
        facts = d.findings[0].facts
        assert (facts["token"], facts["profile"], facts["serial"]) == ("main", "staff", serial)
        assert any(e["kind"] == "abm_history" and e["reason"] == "FAILED" for e in first["evidence"])
        zfirst = zh["findings"][0]  # type: ignore[index]
        assert "早于令牌 main 的上传时间" in zfirst["observed"] and "没有分配注册配置文件" in zfirst["title"]
        assert zfirst["resolution"] and "pomona abm assign" in zfirst["resolution"][0]
        # Twin: the fault is gone, the next sync assigns the profile, and ABM shows it.
        a.emu.set_fault("clear")
        a.sync()
        r = a.diagnose(serial=serial, message="DEP enrollment doesn't start")
        assert finding(r, "DEP_PROFILE_NOT_ASSIGNED")["verdict"] == "ruled_out"
        assert answer(r)[0] != "DEP_PROFILE_NOT_ASSIGNED"

    def test_no_profile_at_all_then_machine_info_rules_it_out(self, a: Ade) -> None:
        """A synced device with no profile is proven not assigned; once its MachineInfo reached the ADE
        endpoint, Apple had given it a profile: ruled out."""
        a.token()
        a.sync()
        serial = a.serial(0)
        r = a.diagnose(serial=serial, message="ADE enrollment does not start")
        assert answer(r) == ("DEP_PROFILE_NOT_ASSIGNED", "proven")
        assert "no enrollment profile (status empty)" in r["findings"][0]["observed"]  # type: ignore[index]
        a.machine_info(serial)
        r = a.diagnose(serial=serial, message="ADE enrollment does not start")
        f = finding(r, "DEP_PROFILE_NOT_ASSIGNED")
        assert f["verdict"] == "ruled_out" and "MachineInfo" in str(f["observed"])


class TestAppleAnswers:
    def test_profile_not_found(self, a: Ade) -> None:
        """PROFILE_NOT_FOUND for the device's profile while ABM shows it none: proven; a device ABM shows
        the (defined again) profile on: ruled out."""
        a.token()
        a.sync()
        a.profile()
        a.emu.set_fault("profile-not-found")
        a.emu.add_device("ACMENEW00001")
        a.emu.set_fault("assignment-fails", "ACMENEW00001")
        a.sync()
        r = a.diagnose(serial="ACMENEW00001", message="PROFILE_NOT_FOUND")
        assert answer(r) == ("DEP_PROFILE_NOT_FOUND", "proven")
        assert "Apple answered DEP_PROFILE_NOT_FOUND for profile staff" in r["findings"][0]["observed"]  # type: ignore[index]
        r = a.diagnose(serial=a.serial(0), message="PROFILE_NOT_FOUND")
        assert finding(r, "DEP_PROFILE_NOT_FOUND")["verdict"] == "ruled_out"

    def test_profile_rejected(self, a: Ade) -> None:
        """Apple refused the profile's definition and the device has none: proven; the twin (the profile
        accepted and assigned) rules it out."""
        a.token()
        a.sync()
        a.emu.set_fault("profile-rejected")
        with pytest.raises(AbmError):
            a.profile()
        r = a.diagnose(serial=a.serial(0), message="DEP enrollment doesn't start")
        assert finding(r, "DEP_PROFILE_REJECTED")["verdict"] == "proven"
        assert answer(r)[1] == "proven"
        a.emu.set_fault("clear")
        a.profile()
        r = a.diagnose(serial=a.serial(0), message="CONFIG_URL_REQUIRED")
        assert finding(r, "DEP_PROFILE_REJECTED")["verdict"] == "ruled_out"


class TestTokens:
    def test_token_missing(self, a: Ade) -> None:
        """A profile but no token: proven (the tenant set ADE up); with a token, ruled out; a tenant that
        never set ADE up is not told."""
        r = a.diagnose(upn=a.w.s.upn)
        assert finding(r, "DEP_TOKEN_MISSING")["verdict"] == "unknown"
        a.profile()
        r = a.diagnose(serial=a.serial(0), message="DEP enrollment doesn't start")
        assert answer(r) == ("DEP_TOKEN_MISSING", "proven")  # nothing else fits: the tenant fault answers
        a.token()
        r = a.diagnose(serial=a.serial(0), message="DEP_TOKEN_MISSING")
        assert finding(r, "DEP_TOKEN_MISSING")["verdict"] == "ruled_out"

    def test_token_expiring_and_valid(self, a: Ade) -> None:
        """A token with 10 days left is DEP_TOKEN_EXPIRED (warned from 30 days); a year's token rules it out."""
        a.token(days=10)
        r = a.diagnose(message="DEP_TOKEN_EXPIRED", lang="zh-CN")
        assert answer(r) == ("DEP_TOKEN_EXPIRED", "proven")
        assert "令牌 main 将于" in r["findings"][0]["observed"]  # type: ignore[index]
        a.w.p.abm.remove_token(a.tenant, "main")
        a.token()
        assert finding(a.diagnose(message="DEP_TOKEN_EXPIRED"), "DEP_TOKEN_EXPIRED")["verdict"] == "ruled_out"

    @pytest.mark.parametrize(
        ("fault", "code"),
        [
            ("token-revoked", "DEP_TOKEN_INVALID"),
            ("terms-not-accepted", "DEP_TERMS_NOT_ACCEPTED"),
            ("token-expired", "DEP_TOKEN_EXPIRED"),  # Apple says so before the date Pomona knows
        ],
    )
    def test_last_sync_failed(self, a: Ade, fault: str, code: str) -> None:
        """The last sync's reason code (Apple refused the token, new terms): proven; after a good sync, ruled out."""
        a.token()
        a.sync()
        assert finding(a.diagnose(message=code), code)["verdict"] == "ruled_out"
        a.emu.set_fault(fault)
        with pytest.raises(AbmError):
            a.sync()
        r = a.diagnose(serial=a.serial(0), message=code)
        assert answer(r) == (code, "proven"), r["findings"]
        assert "the last sync of token main failed" in r["findings"][0]["observed"]  # type: ignore[index]

    def test_refused_upload(self, a: Ade) -> None:
        """A token file that does not open was refused and none is kept: DEP_TOKEN_INVALID proven, and the
        missing token with it."""
        a.w.p.abm.keypair(a.tenant)
        with pytest.raises(AbmTokenFileError):
            a.w.p.abm.upload_token(a.tenant, b"not a server token")
        r = a.diagnose(message="DEP_TOKEN_INVALID")
        assert answer(r) == ("DEP_TOKEN_INVALID", "proven")
        assert "a token upload was refused" in r["findings"][0]["observed"]  # type: ignore[index]
        assert finding(a.diagnose(upn=a.w.s.upn), "DEP_TOKEN_MISSING")["verdict"] == "proven"

    def test_cursor_expired(self, a: Ade) -> None:
        """An expired cursor is healed by a full fetch, and shown as what happened; none: ruled out."""
        a.token()
        a.sync()
        assert finding(a.diagnose(message="EXPIRED_CURSOR"), "DEP_CURSOR_EXPIRED")["verdict"] == "ruled_out"
        a.emu.set_fault("cursor-expired")
        a.sync()
        r = a.diagnose(message="EXPIRED_CURSOR")
        assert answer(r) == ("DEP_CURSOR_EXPIRED", "proven")
        assert "a sync succeeded since" in r["findings"][0]["observed"]  # type: ignore[index]


class TestElsewhere:
    def test_assigned_elsewhere_and_other_mdm(self, a: Ade) -> None:
        """ABM moved the device to another MDM server: the sync that sees it leave asks ABM, whose own
        answer (the event naming the serial) proves it, and ENROLLED_WITH_OTHER_MDM with it."""
        a.token()
        a.sync()
        serial = a.serial(2)
        r = a.diagnose(serial=serial, message="DEP enrollment doesn't start")
        assert finding(r, "DEP_DEVICE_ASSIGNED_ELSEWHERE")["verdict"] == "ruled_out"
        a.emu.set_fault("assigned-elsewhere", serial)
        a.sync()
        r = a.diagnose(serial=serial, message="DEP enrollment doesn't start", lang="zh-CN")
        assert answer(r) == ("DEP_DEVICE_ASSIGNED_ELSEWHERE", "proven")
        assert "已分配给其他 MDM 服务器" in r["findings"][0]["observed"]  # type: ignore[index]
        r = a.diagnose(serial=serial, message="MCMDMErrorDomain 12021")
        other = finding(r, "ENROLLED_WITH_OTHER_MDM")
        assert other["verdict"] == "proven" and "another MDM server" in str(other["observed"])

    def test_not_accessible_to_an_assignment(self, a: Ade) -> None:
        """ABM answered NOT_ACCESSIBLE when Pomona assigned the device (it left Pomona's server since the
        last sync): ABM's own answer, in the timeline, proves it."""
        a.token()
        a.sync()
        a.profile(default=False)
        serial = a.serial(0)
        a.emu.set_fault("assigned-elsewhere", serial)
        assert a.w.p.abm.assign(a.tenant, "staff", [serial]).answers == {serial: "NOT_ACCESSIBLE"}
        r = a.diagnose(serial=serial, message="DEP enrollment doesn't start")
        f = finding(r, "DEP_DEVICE_ASSIGNED_ELSEWHERE")
        assert f["verdict"] == "proven" and "another MDM server" in str(f["observed"])
        assert answer(r) == ("DEP_DEVICE_ASSIGNED_ELSEWHERE", "proven")


class TestSignIn:
    def test_refused_at_the_ade_endpoint(self, a: Ade) -> None:
        """ "Stuck at user login": the ADE endpoint's refusal proves DEP_MFA_WITH_LEGACY_AUTH."""
        a.token()
        a.sync()
        a.profile(AuthMode.LEGACY)
        serial = a.serial(0)
        a.event(
            Step.ADE,
            Outcome.FAILED,
            "DEP_MFA_WITH_LEGACY_AUTH",
            serial=serial,
            upn=a.w.s.upn,
            detail={"upn": a.w.s.upn, "profile": "staff"},
        )
        r = a.diagnose(serial=serial, message="在用户登录时，DEP 注册停滞", lang="zh-CN")
        assert answer(r) == ("DEP_MFA_WITH_LEGACY_AUTH", "proven")
        assert r["findings"][0]["basis"] == "evidence"  # type: ignore[index]  # the refusal is the attempt's
        assert "旧版" in r["findings"][0]["cause"] or "多重身份验证" in r["findings"][0]["title"]  # type: ignore[index]

    def test_configuration_makes_it_likely(self, a: Ade) -> None:
        """No refusal yet: the device's profile uses legacy authentication and the user must pass MFA:
        likely; the same user behind a modern profile: ruled out."""
        a.token()
        a.sync()
        a.profile(AuthMode.LEGACY)
        a.w.p.admin.create_user(a.tenant, "mo@acme.example", mfa_required=True)
        serial = a.serial(0)
        r = a.diagnose(serial=serial, upn="mo@acme.example", message="ADE stuck at user login")
        assert answer(r) == ("DEP_MFA_WITH_LEGACY_AUTH", "likely")
        assert "legacy way and mo@acme.example must pass MFA" in r["findings"][0]["observed"]  # type: ignore[index]
        r = a.diagnose(serial=serial, upn=a.w.s.upn, message="ADE stuck at user login")
        assert finding(r, "DEP_MFA_WITH_LEGACY_AUTH")["verdict"] == "ruled_out"
        a.profile(AuthMode.MODERN, name="web")
        a.w.p.abm.assign(a.tenant, "web", [serial])
        a.sync()
        r = a.diagnose(serial=serial, upn="mo@acme.example", message="ADE stuck at user login")
        assert finding(r, "DEP_MFA_WITH_LEGACY_AUTH")["verdict"] == "ruled_out"


class TestNetwork:
    def test_assigned_but_never_reached_pomona(self, a: Ade) -> None:
        """XPC_TYPE_ERROR Connection invalid: ABM shows our profile on the device, and no MachineInfo ever
        came: likely, with the device-side checks; once a MachineInfo arrived, ruled out."""
        a.token()
        a.sync()
        a.profile()
        a.sync()
        serial = a.serial(1)
        r = a.diagnose(serial=serial, message="XPC_TYPE_ERROR Connection invalid")
        assert answer(r) == ("DEP_NETWORK_ERROR", "likely")
        first = r["findings"][0]  # type: ignore[index]
        assert "never posted its MachineInfo" in first["observed"]
        assert any("albert.apple.com" in c for c in first["device_checks"])
        assert any("date and time" in c for c in first["device_checks"])
        a.machine_info(serial)
        r = a.diagnose(serial=serial, message="XPC_TYPE_ERROR Connection invalid")
        assert finding(r, "DEP_NETWORK_ERROR")["verdict"] == "ruled_out"
        assert answer(r)[0] != "DEP_NETWORK_ERROR"


class TestHealth:
    def test_tokens_syncs_and_legacy_profiles(self, a: Ade) -> None:
        """Health lists the token's expiry (from 30 days), a sync not done for two intervals, and a
        legacy-auth profile while the tenant has MFA users; a modern profile and a fresh sync raise none."""
        a.token(days=10)
        a.sync()
        a.profile(AuthMode.LEGACY)

        def found() -> set[tuple[str, str]]:
            return {(f["code"], f["subject"]) for f in a.w.p.health.run(a.tenant)["findings"]}

        now = found()
        assert ("DEP_TOKEN_EXPIRED", "abm:main:expiry:14d") in now
        assert not {c for c, _ in now} & {"DEP_MFA_WITH_LEGACY_AUTH", "DEP_SYNC_STALE"}
        a.w.p.admin.create_user(a.tenant, "mo@acme.example", mfa_required=True)
        assert ("DEP_MFA_WITH_LEGACY_AUTH", "abm:profile:staff") in found()
        a.w.p.health.clock = later_clock(11)  # type: ignore[assignment]
        assert ("DEP_SYNC_STALE", "abm:main:stale") in found()
        a.w.p.abm.edit_profile(a.tenant, "staff", auth=AuthMode.MODERN)
        a.w.p.health.clock = later_clock(0)  # type: ignore[assignment]
        a.sync()
        assert not {c for c, _ in found()} & {"DEP_MFA_WITH_LEGACY_AUTH", "DEP_SYNC_STALE"}
