"""The ADE enrollment endpoint through the real ASGI app, the ABM emulator and virtual devices signing their
MachineInfo with a test device CA (POMONA_ADE_TEST_DEVICE_CA), on SQLite and PostgreSQL: auth none, legacy
and modern, each refusal code with its event, and Apple's software update answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from starlette.testclient import TestClient

from helpers import TenantSetup, setup_tenant
from pomona.app import Pomona, Settings, build, create_app
from pomona.domain.ade_profile import AuthMode
from pomona.domain.models import EnrollmentType, Outcome, Step
from pomona.protocol.machineinfo import decode_software_update_required
from pomona.services.portal import totp_now
from pomona.testing.abm_emulator import AbmEmulator, AbmEmulatorServer
from pomona.testing.device_ca import TestDeviceCa
from pomona.testing.virtual_device import EnrollmentRefused, VirtualDevice

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def device_ca() -> TestDeviceCa:
    return TestDeviceCa.generate()


@pytest.fixture
def abm() -> Iterator[tuple[AbmEmulator, AbmEmulatorServer]]:
    emu = AbmEmulator(devices=4, serial_prefix="ADE")
    server = emu.serve_in_thread()
    yield emu, server
    server.close()


def _pomona(db_url: str, tmp_path: Path, abm_url: str, ca_file: Path | None) -> Pomona:
    return build(
        Settings(
            data_dir=tmp_path,
            database_url=db_url,
            public_url="https://pomona.test",
            abm_url=abm_url,
            abm_assign_backoff=0,
            ade_test_device_ca=ca_file,
        )
    )


@dataclass
class Ade:
    p: Pomona
    client: TestClient
    emu: AbmEmulator
    s: TenantSetup
    ca: TestDeviceCa
    serials: list[str]

    @property
    def url(self) -> str:
        return f"https://pomona.test/ade/{self.s.tenant_id}/enroll"

    def device(self, serial: str | None = None, **kw: object) -> VirtualDevice:
        return VirtualDevice(serial=serial or self.serials[0], client=self.client, **kw)  # type: ignore[arg-type]

    def events(self, **filters: object) -> list[object]:
        return [e for e in self.p.commands.events(self.s.name, **filters) if e.step is Step.ADE]  # type: ignore[arg-type]

    def failures(self) -> list[str]:
        return [e.reason for e in self.events() if e.outcome is Outcome.FAILED]  # type: ignore[attr-defined]


def make_ade(
    db_url: str,
    tmp_path: Path,
    abm: tuple[AbmEmulator, AbmEmulatorServer],
    ca: TestDeviceCa,
    *,
    trust: bool = True,
    auth: AuthMode = AuthMode.NONE,
) -> Iterator[Ade]:
    emu, server = abm
    ca_file = None
    if trust:
        ca_file = tmp_path / "device-ca.pem"
        ca_file.write_bytes(ca.device_ca.cert.public_bytes(serialization.Encoding.PEM))
    p = _pomona(db_url, tmp_path, server.url, ca_file)
    s = setup_tenant(p)
    p.admin.set_password(s.name, s.upn, PASSWORD)
    cert, _ = p.abm.keypair(s.name)
    p.abm.upload_token(s.name, emu.issue_token(cert, expires_in=timedelta(days=365)), "main")
    p.abm.sync(s.name)
    p.abm.create_profile(s.name, "staff", auth=auth, default=True)
    serials = sorted(emu.s.devices)
    with TestClient(create_app(pomona=p, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield Ade(p, c, emu, s, ca, serials)
    p.close()


@pytest.fixture
def none_auth(
    db_url: str, tmp_path: Path, abm: tuple[AbmEmulator, AbmEmulatorServer], device_ca: TestDeviceCa
) -> Iterator[Ade]:
    yield from make_ade(db_url, tmp_path, abm, device_ca)


@pytest.fixture
def legacy_auth(
    db_url: str, tmp_path: Path, abm: tuple[AbmEmulator, AbmEmulatorServer], device_ca: TestDeviceCa
) -> Iterator[Ade]:
    yield from make_ade(db_url, tmp_path, abm, device_ca, auth=AuthMode.LEGACY)


@pytest.fixture
def modern_auth(
    db_url: str, tmp_path: Path, abm: tuple[AbmEmulator, AbmEmulatorServer], device_ca: TestDeviceCa
) -> Iterator[Ade]:
    yield from make_ade(db_url, tmp_path, abm, device_ca, auth=AuthMode.MODERN)


def refusal(r: object) -> str:
    """The reason code of a JSON refusal (the contract's ``code``)."""
    data = r.json()  # type: ignore[attr-defined]
    assert data["code"] == data["reason"]
    return str(data["code"])


class TestNoneAuth:
    def test_enrolls_end_to_end_as_ade_without_a_user(self, none_auth: Ade) -> None:
        """MachineInfo -> profile -> SCEP -> Authenticate -> TokenUpdate: an ADE enrollment, no user."""
        a = none_auth
        d = a.device()
        r = d.post_machine_info(a.url, a.ca)
        profile = d.accept_profile(r)
        assert profile.scep_url.endswith(f"/scep/{a.s.tenant_id}") and profile.scep_challenge
        d.install()
        views, _ = a.p.commands.list_devices(a.s.name, limit=10)
        (view,) = [v for v in views if v.device.serial == d.serial]  # type: ignore[attr-defined]
        assert view.enrollment.type is EnrollmentType.ADE and view.enrollment.user_id is None  # type: ignore[attr-defined]
        ok = [e.detail for e in a.events() if e.outcome is Outcome.OK]  # type: ignore[attr-defined]
        assert {x["stage"] for x in ok} == {"machineinfo", "profile"}
        assert any(x.get("auth") == "none" and x.get("profile") == "staff" for x in ok)
        auth_events = [e for e in a.p.commands.events(a.s.name, udid=d.udid) if e.step is Step.AUTHENTICATE]
        assert auth_events[-1].detail["type"] == "ade"

    def test_challenge_is_bound_to_the_serial(self, none_auth: Ade) -> None:
        """Another device using an ADE profile's challenge is refused at Authenticate (CERT_DEVICE_MISMATCH);
        the challenge fetched as an enrollment link is an unknown link."""
        a = none_auth
        r = a.device().post_machine_info(a.url, a.ca)
        other = a.device(a.serials[1])
        other.accept_profile(r)
        with pytest.raises(EnrollmentRefused) as e:
            other.install()
        assert e.value.reason == "CERT_DEVICE_MISMATCH"
        # and an ADE profile's challenge is no enrollment link
        d = a.device(a.serials[2])
        challenge = d.accept_profile(d.post_machine_info(a.url, a.ca)).scep_challenge
        r = a.client.get(f"/enroll/{challenge}")
        assert r.status_code == 403 and r.json()["reason"] == "ENROLLMENT_TOKEN_INVALID"

    def test_serial_not_in_abm(self, none_auth: Ade) -> None:
        """A serial ABM does not list for the tenant: 403 DEP_DEVICE_NOT_IN_ABM, with its event."""
        a = none_auth
        r = a.device("NOTINABM0001").post_machine_info(a.url, a.ca)
        assert r.status_code == 403 and refusal(r) == "DEP_DEVICE_NOT_IN_ABM"
        (e,) = [e for e in a.events() if e.reason == "DEP_DEVICE_NOT_IN_ABM"]  # type: ignore[attr-defined]
        assert e.serial == "NOTINABM0001" and e.udid  # type: ignore[attr-defined]

    def test_malformed_and_untrusted_signatures(self, none_auth: Ade) -> None:
        """Garbage (or too much of it) is MACHINEINFO_MALFORMED; a MachineInfo of another device CA
        MACHINEINFO_SIGNER_UNTRUSTED; an unknown tenant UNKNOWN_ENROLLMENT (no event); a GET 405."""
        a = none_auth
        r = a.client.post(a.url, content=b"not a SignedData")
        assert r.status_code == 400 and refusal(r) == "MACHINEINFO_MALFORMED"
        r = a.device().post_machine_info(a.url, TestDeviceCa.generate())
        assert r.status_code == 401 and refusal(r) == "MACHINEINFO_SIGNER_UNTRUSTED"
        assert {"MACHINEINFO_MALFORMED", "MACHINEINFO_SIGNER_UNTRUSTED"} <= set(a.failures())
        big = a.client.post(a.url, content=b"x" * (70 * 1024))
        assert big.status_code == 400 and "Traceback" not in big.text
        r = a.client.post("/ade/00000000-0000-4000-8000-000000000000/enroll", content=b"x")
        assert r.status_code == 401 and refusal(r) == "UNKNOWN_ENROLLMENT"
        assert a.client.get(a.url).status_code == 405

    def test_blocked_device_platform_and_authority(self, none_auth: Ade) -> None:
        """A blocked serial is DEVICE_BLOCKED, a blocked platform PLATFORM_BLOCKED, a tenant without an MDM
        authority MDM_AUTHORITY_NOT_SET (the policy applies, first refusal first)."""
        a = none_auth
        a.p.policy.block(a.s.name, serial=a.serials[0])
        r = a.device().post_machine_info(a.url, a.ca)
        assert r.status_code == 403 and refusal(r) == "DEVICE_BLOCKED"
        a.p.policy.edit_restriction(a.s.name, type_="platform", default=True, ios="block")
        r = a.device(a.serials[1]).post_machine_info(a.url, a.ca)
        assert r.status_code == 403 and refusal(r) == "PLATFORM_BLOCKED"
        assert {"DEVICE_BLOCKED", "PLATFORM_BLOCKED"} <= set(a.failures())
        with a.p.db.unit_of_work() as uow:  # a tenant an older release made without an authority
            uow.tenants.set_authority(a.s.tenant_id, "")
        r = a.device(a.serials[2]).post_machine_info(a.url, a.ca)
        assert r.status_code == 403 and refusal(r) == "MDM_AUTHORITY_NOT_SET"

    def test_os_range(self, none_auth: Ade) -> None:
        """Below the minimum: Apple's 403 softwareupdate.required when the device can update, else
        OS_VERSION_TOO_LOW; above the maximum OS_VERSION_TOO_HIGH. Each leaves its event."""
        a = none_auth
        a.p.policy.edit_restriction(a.s.name, type_="platform", default=True, min_os="17.5", max_os="17")
        r = a.device().post_machine_info(a.url, a.ca)
        assert r.status_code == 403
        update = decode_software_update_required(r.content)
        assert update is not None and update.os_version == "17.5"
        r = a.device().post_machine_info(a.url, a.ca, can_request_software_update=False)
        assert r.status_code == 403 and refusal(r) == "OS_VERSION_TOO_LOW"
        low = [e.detail for e in a.events() if e.reason == "OS_VERSION_TOO_LOW"]  # type: ignore[attr-defined]
        assert sorted(x["software_update_required"] for x in low) == [False, True]
        a.p.policy.edit_restriction(a.s.name, type_="platform", default=True, min_os="", max_os="16")
        r = a.device().post_machine_info(a.url, a.ca)
        assert r.status_code == 403 and refusal(r) == "OS_VERSION_TOO_HIGH"


class TestTestCaOff:
    def test_virtual_devices_are_untrusted_without_the_setting(
        self, db_url: str, tmp_path: Path, abm: tuple[AbmEmulator, AbmEmulatorServer], device_ca: TestDeviceCa
    ) -> None:
        """Without POMONA_ADE_TEST_DEVICE_CA only Apple's key is trusted: MACHINEINFO_SIGNER_UNTRUSTED."""
        for a in make_ade(db_url, tmp_path, abm, device_ca, trust=False):
            r = a.device().post_machine_info(a.url, a.ca)
            assert r.status_code == 401 and refusal(r) == "MACHINEINFO_SIGNER_UNTRUSTED"
            assert a.failures() == ["MACHINEINFO_SIGNER_UNTRUSTED"]


class TestLegacyAuth:
    def test_401_then_credentials_enroll_with_the_user(self, legacy_auth: Ade) -> None:
        """Without credentials: 401 Basic; a wrong password: 401 again; the right one: the user's profile."""
        a = legacy_auth
        d = a.device()
        r = d.post_machine_info(a.url, a.ca)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith('Basic realm="acme"')
        r = d.post_machine_info(a.url, a.ca, credentials=(a.s.upn, "wrong"))
        assert r.status_code == 401
        d.accept_profile(d.post_machine_info(a.url, a.ca, credentials=(a.s.upn, PASSWORD)))
        d.install()
        views, _ = a.p.commands.list_devices(a.s.name, limit=10)
        (view,) = [v for v in views if v.device.serial == d.serial]  # type: ignore[attr-defined]
        assert view.enrollment.type is EnrollmentType.ADE and view.enrollment.user_id is not None  # type: ignore[attr-defined]
        served = [e.detail for e in a.events() if e.outcome is Outcome.OK and e.detail["stage"] == "profile"]  # type: ignore[attr-defined]
        assert served[-1]["upn"] == a.s.upn and served[-1]["auth"] == "legacy"

    def test_wrong_passwords_are_rate_limited(self, legacy_auth: Ade) -> None:
        """Past the portal's limit of wrong tries for this address and UPN: 429 with Retry-After."""
        from pomona.services.portal import MAX_TRIES

        a = legacy_auth
        d = a.device()
        for _ in range(MAX_TRIES):
            assert d.post_machine_info(a.url, a.ca, credentials=(a.s.upn, "wrong")).status_code == 401
        r = d.post_machine_info(a.url, a.ca, credentials=(a.s.upn, PASSWORD))
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0

    def test_mfa_user_is_refused(self, legacy_auth: Ade) -> None:
        """An MFA-required user on a legacy-auth profile: DEP_MFA_WITH_LEGACY_AUTH, its event naming the UPN."""
        a = legacy_auth
        a.p.policy.set_user_flags(a.s.name, a.s.upn, mfa_required=True)
        r = a.device().post_machine_info(a.url, a.ca, credentials=(a.s.upn, PASSWORD))
        assert r.status_code == 403 and refusal(r) == "DEP_MFA_WITH_LEGACY_AUTH"
        (e,) = [e for e in a.events() if e.reason == "DEP_MFA_WITH_LEGACY_AUTH"]  # type: ignore[attr-defined]
        assert e.upn == a.s.upn and e.detail["profile"] == "staff"  # type: ignore[attr-defined]

    def test_disabled_and_unlicensed_users(self, legacy_auth: Ade) -> None:
        """The user's checks run with the user: USER_DISABLED, USER_NOT_LICENSED."""
        a = legacy_auth
        a.p.policy.licence(a.s.name, a.s.upn, assign=False)
        r = a.device().post_machine_info(a.url, a.ca, credentials=(a.s.upn, PASSWORD))
        assert r.status_code == 403 and refusal(r) == "USER_NOT_LICENSED"
        a.p.policy.set_user_flags(a.s.name, a.s.upn, enabled=False)
        r = a.device().post_machine_info(a.url, a.ca, credentials=(a.s.upn, PASSWORD))
        assert r.status_code == 403 and refusal(r) == "USER_DISABLED"
        assert {"USER_NOT_LICENSED", "USER_DISABLED"} <= set(a.failures())


class TestModernAuth:
    def _csrf(self, html: str) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', html)
        assert m is not None
        return m.group(1)

    def test_sign_in_with_totp_then_profile(self, modern_auth: Ade) -> None:
        """The web view: MachineInfo header -> sign-in -> TOTP -> the profile, bound to the user; the
        device enrolls with it."""
        import base64

        a = modern_auth
        secret = "JBSWY3DPEHPK3PXP"
        a.p.policy.set_user_flags(a.s.name, a.s.upn, mfa_required=True, totp_secret=secret)
        d = a.device()
        web = f"https://pomona.test/ade/{a.s.tenant_id}/web"
        header = base64.b64encode(d.machine_info(a.ca)).decode()
        page = a.client.get(web, headers={"x-apple-aspen-deviceinfo": header})
        assert page.status_code == 200 and d.serial in page.text
        r = a.client.post(
            web,
            data={"upn": a.s.upn, "password": PASSWORD, "csrf": self._csrf(page.text)},
            follow_redirects=True,
        )
        assert r.status_code == 200 and 'name="code"' in r.text
        code = totp_now(secret, a.p.clock.now())
        r = a.client.post(f"{web}/mfa", data={"code": code, "csrf": self._csrf(r.text)})
        d.accept_profile(r)
        d.install()
        views, _ = a.p.commands.list_devices(a.s.name, limit=10)
        (view,) = [v for v in views if v.device.serial == d.serial]  # type: ignore[attr-defined]
        assert view.enrollment.type is EnrollmentType.ADE and view.enrollment.user_id is not None  # type: ignore[attr-defined]

    def test_sign_in_page_in_chinese_and_a_wrong_password(self, modern_auth: Ade) -> None:
        """The web view speaks the device's language (zh-CN) and answers a wrong password with 401."""
        import base64

        a = modern_auth
        web = f"https://pomona.test/ade/{a.s.tenant_id}/web"
        header = base64.b64encode(a.device().machine_info(a.ca)).decode()
        page = a.client.get(web, headers={"x-apple-aspen-deviceinfo": header, "accept-language": "zh-CN"})
        assert page.status_code == 200 and "设置你的设备" in page.text
        r = a.client.post(web, data={"upn": a.s.upn, "password": "wrong", "csrf": self._csrf(page.text)})
        assert r.status_code == 401 and 'data-error="portal.signin.bad_credentials"' in r.text

    def test_web_view_refuses_without_machine_info(self, modern_auth: Ade) -> None:
        """No header and no state: a refusal page; a header of another CA: MACHINEINFO_SIGNER_UNTRUSTED."""
        import base64

        a = modern_auth
        web = f"https://pomona.test/ade/{a.s.tenant_id}/web"
        assert a.client.get(web).status_code == 400
        header = base64.b64encode(a.device().machine_info(TestDeviceCa.generate())).decode()
        r = a.client.get(web, headers={"x-apple-aspen-deviceinfo": header})
        assert r.status_code == 401 and 'data-reason="MACHINEINFO_SIGNER_UNTRUSTED"' in r.text


class TestTestCaSetting:
    def test_apple_key_always_and_the_test_ca_logged(
        self, tmp_path: Path, device_ca: TestDeviceCa, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Apple's pinned key is always trusted; the test CA is added only when set, with a warning."""
        from pomona.app import ade_trusted_keys
        from pomona.protocol.machineinfo import apple_device_ca_keys

        apple = apple_device_ca_keys()[0].public_numbers()  # type: ignore[union-attr]
        keys = ade_trusted_keys(Settings(data_dir=tmp_path))
        assert [k.public_numbers() for k in keys] == [apple]
        assert not caplog.records
        pem = tmp_path / "ca.pem"
        pem.write_bytes(device_ca.device_ca.cert.public_bytes(serialization.Encoding.PEM))
        keys = ade_trusted_keys(Settings(data_dir=tmp_path, ade_test_device_ca=pem))
        assert len(keys) == 2 and keys[0].public_numbers() == apple
        (record,) = caplog.records
        assert record.levelname == "WARNING" and str(pem) in record.getMessage()

    def test_doctor_warns(self, tmp_path: Path, device_ca: TestDeviceCa) -> None:
        """`pomona doctor` shows a warning line ADE_TEST_DEVICE_CA_TRUSTED naming the file, only when set."""
        from helpers import free_port
        from pomona.app import run_doctor

        data = tmp_path / "data"
        build(Settings(data_dir=data)).close()
        url = f"http://127.0.0.1:{free_port()}"
        lines = run_doctor(Settings(data_dir=data), public_url=url, ca_file=None)
        assert "ade_device_ca" not in [x.check for x in lines]
        pem = tmp_path / "ca.pem"
        pem.write_bytes(device_ca.device_ca.cert.public_bytes(serialization.Encoding.PEM))
        lines = run_doctor(Settings(data_dir=data, ade_test_device_ca=pem), public_url=url, ca_file=None)
        (found,) = [x for x in lines if x.check == "ade_device_ca"]
        assert found.status == "warning" and found.subject == str(pem)
        assert [f.code.value for f in found.findings] == ["ADE_TEST_DEVICE_CA_TRUSTED"]

    def test_unusable_file_is_cert_file_invalid(self, tmp_path: Path) -> None:
        """A missing or non-PEM file stops the start with CERT_FILE_INVALID."""
        from pomona.app import ade_trusted_keys
        from pomona.domain.errors import CertFileError

        bad = tmp_path / "bad.pem"
        bad.write_text("not a pem")
        for path in (bad, tmp_path / "missing.pem"):
            with pytest.raises(CertFileError):
                ade_trusted_keys(Settings(data_dir=tmp_path, ade_test_device_ca=path))


class TestBasicCredentials:
    def test_parses_basic_only(self) -> None:
        """``Authorization: Basic`` gives (user, password); anything else, or garbage, gives None."""
        import base64

        from pomona.services.ade import basic_credentials

        good = "Basic " + base64.b64encode(b"ana@acme.example:pa:ss").decode()
        assert basic_credentials(good) == ("ana@acme.example", "pa:ss")
        assert basic_credentials(None) is None
        assert basic_credentials("Bearer x") is None
        assert basic_credentials("Basic !!!") is None
        assert basic_credentials("Basic " + base64.b64encode(b"nocolon").decode()) is None
        assert basic_credentials("Basic " + "A" * 2000) is None
