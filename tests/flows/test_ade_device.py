"""The ADE virtual device's side, before the server's ADE endpoint exists: the ABM emulator's activation
record (over HTTP and in-process, with the device-cannot-reach-apple fault), Setup Assistant's steps up
to the server (DEP_NETWORK_ERROR, DEP_PROFILE_NOT_ASSIGNED), the answers of the enrollment endpoint read
as the contract defines them (a stand-in endpoint handing out the real server's BYOD profile), the wait for
DeviceConfigured, and `pomona simulate --ade`'s options and JSON."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jsonschema_rs
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from helpers import TenantSetup, setup_tenant
from pomona.app import Pomona, create_app
from pomona.net.abm import HttpAbmClient
from pomona.pki.abm import decrypt_token, make_keypair
from pomona.protocol import machineinfo
from pomona.protocol.dep import decode_server_token
from pomona.services.portal import totp_now
from pomona.testing.abm_emulator import ACTIVATION_PATH, AbmEmulator
from pomona.testing.ade_device import (
    DEVICEINFO_HEADER,
    AdeResult,
    AdeStep,
    run_setup_assistant,
    wait_for_release,
)
from pomona.testing.device_ca import CA_FILE, TestDeviceCa
from pomona.testing.virtual_device import VirtualDevice

ABM = "http://abm.test"
PUBLIC = "https://mdm.acme.example"
SERIAL = "ACME00000001"


@pytest.fixture(scope="module")
def device_ca() -> TestDeviceCa:
    return TestDeviceCa.generate()


@pytest.fixture
def emu() -> Iterator[tuple[AbmEmulator, HttpAbmClient]]:
    """An emulator listing SERIAL and one more device, and an ABM client of ours holding a token of it."""
    emu = AbmEmulator()
    emu.add_device(SERIAL)
    emu.add_device("ACME00000002", product="iPad14,1")
    cert, key = make_keypair("test")
    creds = decode_server_token(decrypt_token(emu.issue_token(cert), cert, key))
    client = HttpAbmClient(creds, ABM, transport=emu.transport())
    yield emu, client
    client.close()


def assign(client: HttpAbmClient, serial: str = SERIAL, **fields: object) -> str:
    """Define a profile at the emulator (the server's URLs by default) and assign it to ``serial``."""
    profile: dict[str, object] = {
        "profile_name": "Staff",
        "url": f"{PUBLIC}/ade/T1/enroll",
        "is_supervised": True,
        "is_mdm_removable": False,
        "await_device_configured": True,
        **fields,
    }
    uuid = client.define_profile(profile)
    assert client.assign_profile(uuid, [serial]) == {serial: "SUCCESS"}
    return uuid


def activation(transport: httpx.BaseTransport, serial: str) -> httpx.Response:
    with httpx.Client(transport=transport) as c:
        return c.post(ABM + ACTIVATION_PATH, json={"serial_number": serial})


class TestActivationRecord:
    def test_assigned_device_gets_its_profile_and_is_pushed(
        self, emu: tuple[AbmEmulator, HttpAbmClient], shared: Path
    ) -> None:
        """An assigned serial gets the profile as defined plus its profile_uuid (a valid Profile), and ABM
        then shows the profile pushed (with a push time), which a sync reports as a modification."""
        emulator, client = emu
        cursor = client.fetch_devices(None, 100).cursor
        uuid = assign(client, configuration_web_url=f"{PUBLIC}/ade/T1/web")
        r = activation(emulator.transport(), SERIAL)
        assert r.status_code == 200
        record = r.json()
        assert record["profile_uuid"] == uuid and record["profile_name"] == "Staff"
        assert record["url"] == f"{PUBLIC}/ade/T1/enroll"
        assert record["configuration_web_url"] == f"{PUBLIC}/ade/T1/web"
        assert record["await_device_configured"] is True and record["is_mdm_removable"] is False
        schema = shared / "vectors" / "micromdm+apple-device-services" / "dep" / "schemas" / "Profile.json"
        validator = jsonschema_rs.validator_for(json.loads(schema.read_text()), validate_formats=True)
        assert [e.message for e in validator.iter_errors(record)] == []
        d = emulator.device(SERIAL)
        assert d is not None and d.profile_status == "pushed" and d.profile_push_time is not None
        changes = client.sync_devices(cursor, 100).devices
        assert [(c.serial_number, c.profile_status) for c in changes][-1] == (SERIAL, "pushed")

    def test_no_profile_and_unknown_serial(self, emu: tuple[AbmEmulator, HttpAbmClient]) -> None:
        """A listed serial without a profile gets 404 NOT_ASSIGNED (and stays empty); a serial ABM does
        not list gets 404 NOT_FOUND; a body without a serial is malformed; only POST is answered."""
        emulator, _ = emu
        t = emulator.transport()
        r = activation(t, SERIAL)
        assert (r.status_code, r.json()) == (404, {"error": "NOT_ASSIGNED"})
        d = emulator.device(SERIAL)
        assert d is not None and d.profile_status == "empty"
        r = activation(t, "NOPE00000000")
        assert (r.status_code, r.json()) == (404, {"error": "NOT_FOUND"})
        with httpx.Client(transport=t) as c:
            assert c.post(ABM + ACTIVATION_PATH, json={}).status_code == 400
            assert c.post(ABM + ACTIVATION_PATH, content=b"{").status_code == 400
            assert c.get(ABM + ACTIVATION_PATH).status_code == 405

    def test_profile_forgotten_by_abm_is_not_assigned(self, emu: tuple[AbmEmulator, HttpAbmClient]) -> None:
        """After profile-not-found (ABM forgot every profile) the device has no profile to fetch."""
        emulator, client = emu
        assign(client)
        emulator.set_fault("profile-not-found")
        assert activation(emulator.transport(), SERIAL).json() == {"error": "NOT_ASSIGNED"}

    def test_cannot_reach_apple_in_process(self, emu: tuple[AbmEmulator, HttpAbmClient]) -> None:
        """With device-cannot-reach-apple on a serial, the in-process transport raises a connect error
        for that serial only, and does not mark the profile pushed; `clear` ends it."""
        emulator, client = emu
        assign(client)
        assign(client, "ACME00000002")
        emulator.set_fault("device-cannot-reach-apple", SERIAL)
        with pytest.raises(httpx.ConnectError, match="XPC_TYPE_ERROR Connection invalid"):
            activation(emulator.transport(), SERIAL)
        d = emulator.device(SERIAL)
        assert d is not None and d.profile_status == "assigned"
        assert activation(emulator.transport(), "ACME00000002").status_code == 200
        emulator.set_fault("clear")
        assert activation(emulator.transport(), SERIAL).status_code == 200

    def test_cannot_reach_apple_over_http_drops_the_connection(
        self, emu: tuple[AbmEmulator, HttpAbmClient]
    ) -> None:
        """Over HTTP the fault (set through the control endpoint, as `pomona emulate abm fault` does) gets
        no answer at all: the connection closes; the other device is still served."""
        emulator, client = emu
        assign(client)
        assign(client, "ACME00000002")
        server = emulator.serve_in_thread()
        try:
            with httpx.Client(timeout=5) as c:
                r = c.post(
                    server.url + "/_emulator/fault",
                    json={"fault": "device-cannot-reach-apple", "serial": SERIAL},
                )
                assert r.status_code == 200
                with pytest.raises(httpx.TransportError):
                    c.post(server.url + ACTIVATION_PATH, json={"serial_number": SERIAL})
                ok = c.post(server.url + ACTIVATION_PATH, json={"serial_number": "ACME00000002"})
                assert ok.status_code == 200 and ok.json()["profile_name"] == "Staff"
        finally:
            server.close()


def ade_device(client: httpx.Client | None = None, **kw: Any) -> VirtualDevice:
    return VirtualDevice(serial=kw.pop("serial", SERIAL), client=client, **kw)


class TestSetupAssistantBeforeTheServer:
    def test_device_cannot_reach_apple(
        self, emu: tuple[AbmEmulator, HttpAbmClient], device_ca: TestDeviceCa
    ) -> None:
        """A dropped connection to the activation service is DEP_NETWORK_ERROR ("XPC_TYPE_ERROR
        Connection invalid"); nothing else is tried."""
        emulator, client = emu
        assign(client)
        emulator.set_fault("device-cannot-reach-apple", SERIAL)
        server = emulator.serve_in_thread()
        try:
            with ade_device() as d:
                result = run_setup_assistant(d, server.url, device_ca)
        finally:
            server.close()
        assert not result.ok and result.reason == "DEP_NETWORK_ERROR"
        (step,) = result.steps
        assert step.name == "activation" and step.detail["error"] == "XPC_TYPE_ERROR Connection invalid"
        assert d.requests == 0 and not result.enrolled

    def test_no_profile_assigned(
        self, emu: tuple[AbmEmulator, HttpAbmClient], device_ca: TestDeviceCa
    ) -> None:
        """A device in ABM with no profile stops at DEP_PROFILE_NOT_ASSIGNED; one ABM does not list at
        DEP_DEVICE_NOT_IN_ABM."""
        emulator, _ = emu
        with httpx.Client(transport=emulator.transport()) as abm:
            with ade_device() as d:
                result = run_setup_assistant(d, ABM, device_ca, abm_client=abm)
            assert [(s.name, s.ok, s.reason) for s in result.steps] == [
                ("activation", False, "DEP_PROFILE_NOT_ASSIGNED")
            ]
            with ade_device(serial="NOPE00000000") as d:
                result = run_setup_assistant(d, ABM, device_ca, abm_client=abm)
            assert result.reason == "DEP_DEVICE_NOT_IN_ABM"

    def test_server_unreachable_after_the_profile_was_pushed(
        self, emu: tuple[AbmEmulator, HttpAbmClient], device_ca: TestDeviceCa
    ) -> None:
        """The activation record is fetched (ABM shows it pushed) but the profile's url cannot be
        reached: the machineinfo step fails with NETWORK_ERROR."""
        emulator, client = emu
        assign(client, url="http://127.0.0.1:9/ade/T1/enroll")
        with httpx.Client(transport=emulator.transport()) as abm, ade_device(httpx.Client(timeout=2)) as d:
            result = run_setup_assistant(d, ABM, device_ca, abm_client=abm)
        assert [(s.name, s.ok, s.reason) for s in result.steps] == [
            ("activation", True, None),
            ("machineinfo", False, "NETWORK_ERROR"),
        ]
        assert result.steps[0].detail["await_device_configured"] is True and result.awaited
        pushed = emulator.device(SERIAL)
        assert pushed is not None and pushed.profile_status == "pushed"


# --- a stand-in for the ADE enrollment endpoint (built by another branch; see test_ade_simulate.py) ---


class StandIn:
    """Answers ``/ade/...`` as the contract says the server will, handing out a real BYOD profile of the
    server under test (fetched from ``profile_url``); everything else goes to the real app."""

    def __init__(self, app: TestClient, profile_url: str, device_ca: TestDeviceCa) -> None:
        self.app = app
        self.profile_url = profile_url
        self.device_ca = device_ca
        self.answer: Callable[[httpx.Request], httpx.Response] = self.profile
        self.seen: list[httpx.Request] = []

    def profile(self, request: httpx.Request) -> httpx.Response:
        r = self.app.get(self.profile_url)
        assert r.status_code == 200
        return httpx.Response(200, headers={"Content-Type": r.headers["content-type"]}, content=r.content)

    def route(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/ade/"):
            self.seen.append(request)
            return self.answer(request)
        r = self.app.request(
            request.method, str(request.url), content=request.read(), headers=dict(request.headers)
        )
        return httpx.Response(
            r.status_code, headers={"Content-Type": r.headers.get("content-type", "")}, content=r.content
        )

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.route))


@pytest.fixture
def app(pomona: Pomona) -> Iterator[TestClient]:
    with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture
def acme(pomona: Pomona) -> TenantSetup:
    return setup_tenant(pomona)


@pytest.fixture
def stand_in(app: TestClient, acme: TenantSetup, device_ca: TestDeviceCa) -> StandIn:
    return StandIn(app, acme.enroll_url, device_ca)


def run(
    emu: tuple[AbmEmulator, HttpAbmClient],
    stand_in: StandIn,
    device_ca: TestDeviceCa,
    **kw: Any,
) -> tuple[AdeResult, VirtualDevice]:
    with httpx.Client(transport=emu[0].transport()) as abm:
        d = ade_device(stand_in.client())
        result = run_setup_assistant(d, ABM, device_ca, abm_client=abm, poll_interval=0, **kw)
        return result, d


def basic_challenge(stand_in: StandIn, upn: str, password: str) -> Callable[[httpx.Request], httpx.Response]:
    """Legacy authentication: 401 Basic until the right credentials come, then the profile."""
    expected = "Basic " + base64.b64encode(f"{upn}:{password}".encode()).decode()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != expected:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="acme"'})
        return stand_in.profile(request)

    return answer


class TestEnrollmentEndpointAnswers:
    def test_userless_profile_installs_and_enrolls(
        self,
        emu: tuple[AbmEmulator, HttpAbmClient],
        stand_in: StandIn,
        device_ca: TestDeviceCa,
    ) -> None:
        """The device POSTs a MachineInfo that verifies against the test CA, installs the profile, and
        enrolls (SCEP, Authenticate, TokenUpdate); with no await, there is no release step."""
        assign(emu[1], await_device_configured=False)
        result, d = run(emu, stand_in, device_ca)
        assert result.ok and result.enrolled and result.released is None, result.to_dict()
        assert [s.name for s in result.steps] == [
            "activation",
            "machineinfo",
            "profile",
            "scep",
            "authenticate",
            "tokenupdate",
        ]
        (posted,) = stand_in.seen
        assert posted.method == "POST" and posted.url.path == "/ade/T1/enroll"
        assert posted.headers["content-type"] == machineinfo.MACHINE_INFO_CONTENT_TYPE
        info = machineinfo.verify_machine_info(posted.content, device_ca.trusted_keys)
        assert (info.info.serial, info.info.udid) == (SERIAL, d.udid)
        assert d.enrolled and not d.facts.awaiting_configuration

    def test_legacy_challenge(
        self,
        emu: tuple[AbmEmulator, HttpAbmClient],
        stand_in: StandIn,
        device_ca: TestDeviceCa,
    ) -> None:
        """A 401 Basic challenge without credentials stops at CREDENTIALS_REQUIRED; wrong ones are the
        refusal HTTP_401; the right ones are sent with the same MachineInfo and the device enrolls."""
        assign(emu[1], await_device_configured=False)
        stand_in.answer = basic_challenge(stand_in, "ana@acme.example", "s3cret")
        result, _ = run(emu, stand_in, device_ca)
        assert (result.failed or AdeStep("", True)).name == "machineinfo"
        assert result.reason == "CREDENTIALS_REQUIRED"
        result, _ = run(emu, stand_in, device_ca, upn="ana@acme.example", password="wrong")
        assert result.reason == "HTTP_401"
        stand_in.seen.clear()
        result, _ = run(emu, stand_in, device_ca, upn="ana@acme.example", password="s3cret")
        assert result.ok, result.to_dict()
        first, second = stand_in.seen
        assert first.content == second.content and "authorization" not in first.headers
        assert result.steps[1].detail["user"] == "ana@acme.example"

    def test_software_update_required_and_coded_refusals(
        self,
        emu: tuple[AbmEmulator, HttpAbmClient],
        stand_in: StandIn,
        device_ca: TestDeviceCa,
    ) -> None:
        """Apple's 403 softwareupdate.required body is OS_VERSION_TOO_LOW with software_update_required
        and the version asked for; a JSON {code, message} refusal is reported with its code."""
        assign(emu[1])
        body, ctype = machineinfo.encode_software_update_required(
            machineinfo.SoftwareUpdateRequired(os_version="17.5", build_version="21F79")
        )
        stand_in.answer = lambda r: httpx.Response(403, headers={"Content-Type": ctype}, content=body)
        result, _ = run(emu, stand_in, device_ca)
        failed = result.failed
        assert failed is not None and (failed.name, failed.reason) == ("machineinfo", "OS_VERSION_TOO_LOW")
        assert failed.detail["software_update_required"] is True and failed.detail["os_version"] == "17.5"
        stand_in.answer = lambda r: httpx.Response(
            403, json={"code": "DEP_MFA_WITH_LEGACY_AUTH", "message": "MFA cannot pass here"}
        )
        result, _ = run(emu, stand_in, device_ca, upn="ana@acme.example", password="x")
        assert result.reason == "DEP_MFA_WITH_LEGACY_AUTH" and not result.enrolled

    def test_web_sign_in_with_totp(
        self,
        emu: tuple[AbmEmulator, HttpAbmClient],
        stand_in: StandIn,
        device_ca: TestDeviceCa,
    ) -> None:
        """Modern authentication: the web view carries the MachineInfo header, posts upn, password and
        the page's csrf, then a TOTP code from the secret, and installs the profile it ends with; a
        sign-in page shown again with an error is SIGNIN_REFUSED, a refusal page gives its data-reason."""
        assign(emu[1], await_device_configured=False, configuration_web_url=f"{PUBLIC}/ade/T1/web")
        secret = base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
        stand_in.answer = WebView(stand_in, secret).answer
        result, _ = run(
            emu, stand_in, device_ca, upn="ana@acme.example", password="s3cret", totp_secret=secret
        )
        assert result.ok, result.to_dict()
        signin = result.steps[1]
        assert (signin.name, signin.detail["mfa"], signin.detail["user"]) == (
            "signin",
            True,
            "ana@acme.example",
        )
        for r in stand_in.seen:
            info = machineinfo.verify_machine_info(
                machineinfo.decode_deviceinfo_header(r.headers[DEVICEINFO_HEADER]), device_ca.trusted_keys
            )
            assert info.info.serial == SERIAL
        result, _ = run(emu, stand_in, device_ca, upn="ana@acme.example", password="s3cret")
        assert result.reason == "MFA_REQUIRED"
        result, _ = run(emu, stand_in, device_ca, upn="ana@acme.example", password="nope", totp_secret=secret)
        failed = result.failed
        assert failed is not None and failed.reason == "SIGNIN_REFUSED"
        assert failed.detail["error"] == "portal.signin.bad_credentials"
        result, _ = run(emu, stand_in, device_ca)
        assert result.reason == "CREDENTIALS_REQUIRED"
        result, _ = run(emu, stand_in, device_ca, upn="bo@acme.example", password="x")
        assert result.reason == "USER_NOT_LICENSED"


class WebView:
    """The contract's web pages: sign-in (upn, password, csrf), a redirect, the TOTP page, the profile."""

    FORM = (
        '<html><body>{error}<form method="post" action="{action}">'
        '<input type="hidden" name="csrf" value="{csrf}">{fields}<button>Go</button></form></body></html>'
    )

    def __init__(self, stand_in: StandIn, secret: str) -> None:
        self.stand_in = stand_in
        self.secret = secret
        self.csrf = secrets.token_urlsafe(16)

    def page(self, action: str, fields: str, error: str = "") -> httpx.Response:
        alert = f'<p class="alert" data-error="{error}">no</p>' if error else ""
        html = self.FORM.format(error=alert, action=action, csrf=self.csrf, fields=fields)
        return httpx.Response(
            401 if error else 200,
            headers={"Content-Type": "text/html; charset=utf-8", "Set-Cookie": "ade=1; Path=/; Secure"},
            text=html,
        )

    def answer(self, request: httpx.Request) -> httpx.Response:
        assert DEVICEINFO_HEADER in request.headers
        path = request.url.path
        signin = self.page(
            "/ade/T1/web", '<input name="upn" value=""><input name="password" type="password">'
        )
        if request.method == "GET" and path == "/ade/T1/web":
            return signin
        if request.method == "GET" and path == "/ade/T1/web/mfa":
            return self.page("mfa", '<input name="code">')
        form = dict(parse_qsl(request.content.decode()))
        assert form.get("csrf") == self.csrf
        if path == "/ade/T1/web":
            if form.get("upn") == "bo@acme.example":
                refused = '<section class="card refused" data-reason="USER_NOT_LICENSED"></section>'
                return httpx.Response(403, headers={"Content-Type": "text/html"}, text=refused)
            if (form.get("upn"), form.get("password")) != ("ana@acme.example", "s3cret"):
                return self.page(
                    "/ade/T1/web",
                    '<input name="upn"><input name="password">',
                    error="portal.signin.bad_credentials",
                )
            return httpx.Response(303, headers={"Location": "/ade/T1/web/mfa"})
        if path == "/ade/T1/web/mfa":
            if form.get("code") != totp_now(self.secret, datetime.now(UTC)):
                return self.page("mfa", '<input name="code">', error="portal.mfa.wrong_code")
            return self.stand_in.profile(request)
        return httpx.Response(404)


class TestRelease:
    def test_device_configured_releases_and_its_absence_is_stuck(
        self, app: TestClient, acme: TenantSetup, pomona: Pomona
    ) -> None:
        """An enrolled device held at Setup Assistant polls until DeviceConfigured (queued by the server
        once the device is held) is acknowledged; while it answers NotNow to it, it reports
        AWAITING_CONFIGURATION_STUCK after the wait (polls at 0, 1, 2 and 3 s)."""
        d = VirtualDevice(acme.enroll_url, client=app)  # type: ignore[arg-type]
        d.download()
        d.facts = dataclasses.replace(d.facts, awaiting_configuration=True)
        d.install()
        d.inject("DeviceConfigured", status="NotNow", times=None)
        clock = [0.0]
        stuck = wait_for_release(
            d,
            3,
            poll_interval=1,
            sleep=lambda s: clock.__setitem__(0, clock[0] + s),
            monotonic=lambda: clock[0],
        )
        assert (stuck.ok, stuck.reason, stuck.detail["polls"]) == (False, "AWAITING_CONFIGURATION_STUCK", 4)
        d.clear_faults()
        released = wait_for_release(d, 0, poll_interval=0)
        assert released.ok and "DeviceConfigured" in released.detail["commands"]  # type: ignore[operator]
        assert not d.facts.awaiting_configuration


class TestDeviceCaFolder:
    def test_save_and_load(self, tmp_path: Path, device_ca: TestDeviceCa) -> None:
        """A saved test CA loads back (MachineInfo it signs verifies with the original's trusted keys);
        ca.pem is the device CA certificate and the keys are readable by the owner only."""
        ca_pem = device_ca.save(tmp_path / "ca")
        assert ca_pem == tmp_path / "ca" / CA_FILE
        assert ca_pem.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        assert os.stat(tmp_path / "ca" / "ca.key").st_mode & 0o077 == 0
        loaded, new = TestDeviceCa.load_or_create(tmp_path / "ca")
        assert not new and loaded.device_ca.cert == device_ca.device_ca.cert
        with ade_device() as d:
            machineinfo.verify_machine_info(d.machine_info(loaded), device_ca.trusted_keys)
        made, new = TestDeviceCa.load_or_create(tmp_path / "other")
        assert new and (tmp_path / "other" / CA_FILE).exists()


def simulate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """`pomona simulate ARGS` in this process: (exit code, stdout, stderr)."""
    from pomona.cli.main import main

    monkeypatch.setenv("POMONA_DATA_DIR", str(tmp_path))
    res = CliRunner().invoke(main, ["simulate", *args])
    return res.exit_code, res.stdout, res.stderr


class TestCli:
    @pytest.mark.parametrize(
        "args",
        [
            ["--ade", "--serial", SERIAL, "--device-ca", "ca"],
            ["--ade", "--abm-url", ABM, "--device-ca", "ca"],
            ["--ade", "--abm-url", ABM, "--serial", SERIAL],
            ["--ade", "--abm-url", ABM, "--serial", SERIAL, "--device-ca", "ca", "--password", "x"],
            ["--ade", "--abm-url", ABM, "--serial", SERIAL, "--device-ca", "ca", "--user", "a@b.c"],
            ["--ade", "--abm-url", ABM, "--serial", SERIAL, "--device-ca", "ca", "--totp-secret", "AB"],
            ["--ade", "--abm-url", ABM, "--serial", SERIAL, "--device-ca", "ca", "--wait-release", "-1"],
            ["--devices", "2"],
        ],
    )
    def test_usage_errors(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: list[str]) -> None:
        """--ade needs --abm-url, --serial and --device-ca; a password or TOTP secret needs a user and a
        user a password; without --ade, --enroll-url is required: usage errors (exit 2), nothing made."""
        code, _, _ = simulate(monkeypatch, tmp_path, *args, "--json")
        assert code == 2
        assert not (tmp_path / "ca").exists()

    def test_json_and_table(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emu: tuple[AbmEmulator, HttpAbmClient]
    ) -> None:
        """Against the emulator over HTTP: a device with no profile exits 1 with DEP_PROFILE_NOT_ASSIGNED
        in the JSON (every step with name, ok, reason, detail); the test CA is made in --device-ca once,
        with the setting the server needs on stderr; the table names the step and the code."""
        emulator, _ = emu
        server = emulator.serve_in_thread()
        try:
            base = ["--ade", "--abm-url", server.url, "--serial", SERIAL, "--device-ca", str(tmp_path / "ca")]
            code, out, err = simulate(monkeypatch, tmp_path, *base, "--os-version", "17.5", "--json")
            assert code == 1, (out, err)
            data = json.loads(out)
            assert set(data) == {"serial", "udid", "ok", "reason", "enrolled", "awaited", "released", "steps"}
            assert (data["serial"], data["ok"], data["reason"]) == (SERIAL, False, "DEP_PROFILE_NOT_ASSIGNED")
            assert data["steps"] == [
                {
                    "name": "activation",
                    "ok": False,
                    "reason": "DEP_PROFILE_NOT_ASSIGNED",
                    "detail": {"error": "NOT_ASSIGNED", "serial": SERIAL},
                }
            ]
            assert f"POMONA_ADE_TEST_DEVICE_CA={tmp_path / 'ca' / CA_FILE}" in err
            assert (tmp_path / "ca" / CA_FILE).exists()
            monkeypatch.setenv("POMONA_LANG", "en")
            code, out, err = simulate(monkeypatch, tmp_path, *base, "--user", "a@b.c", "--password", "pw")
            assert code == 1 and "POMONA_ADE_TEST_DEVICE_CA" not in err
            assert "activation" in out and "DEP_PROFILE_NOT_ASSIGNED" in out
            assert re.search(r"stopped at step activation", out)
        finally:
            server.close()
