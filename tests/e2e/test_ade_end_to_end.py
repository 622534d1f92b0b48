"""Automated Device Enrollment from end to end, as an admin sets it up and a new iPhone goes through
Setup Assistant (issue 12's "what it must show"), through the ABM emulator over HTTP and a virtual device:

1. `pomona abm keypair` makes the certificate the admin uploads to ABM;
2. ABM's server token (a .p7m encrypted to it) is uploaded with `pomona abm token upload`;
3. `pomona abm sync` fetches the 1,000 devices ABM lists for this server;
4. `pomona abm profile create --default` defines the profile at ABM and every device is assigned it;
5. one device runs Setup Assistant: its activation record, the web view's sign-in (modern
   authentication), the enrollment profile, SCEP, Authenticate and TokenUpdate; it is held at Setup
   Assistant (await_device_configured) until the server releases it with DeviceConfigured.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from helpers import cli, same_data_dir, setup_tenant  # noqa: F401 - same_data_dir is autouse here
from pomona.app import Pomona, create_app
from pomona.domain.models import EnrollmentStatus, EnrollmentType
from pomona.testing.abm_emulator import AbmEmulator, AbmEmulatorServer
from pomona.testing.ade_device import run_setup_assistant
from pomona.testing.device_ca import TestDeviceCa
from pomona.testing.virtual_device import VirtualDevice

TENANT = "acme"
PUBLIC = "https://mdm.acme.example"
FLEET = 1000
PASSWORD = "correct horse battery staple"


def ok(monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str) -> Any:
    """`pomona ARGS --json`, which must exit 0: the JSON it printed."""
    code, out = cli(monkeypatch, db_url, *args, "--json")
    assert code == 0, out
    return json.loads(out)


@pytest.fixture
def abm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[AbmEmulator, AbmEmulatorServer, Path]]:
    """ABM (the emulator, over HTTP) listing FLEET devices, and a server that trusts the test device CA
    the virtual devices' MachineInfo is signed under (POMONA_ADE_TEST_DEVICE_CA, test mode only)."""
    emu = AbmEmulator(devices=FLEET, serial_prefix="ACME")
    server = emu.serve_in_thread()
    ca_pem = TestDeviceCa.generate().save(tmp_path / "device-ca")
    monkeypatch.setenv("POMONA_ABM_URL", server.url)
    monkeypatch.setenv("POMONA_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("POMONA_ADE_TEST_DEVICE_CA", str(ca_pem))
    yield emu, server, ca_pem.parent
    server.close()


def test_keypair_token_sync_default_profile_enroll_hold_release(
    monkeypatch: pytest.MonkeyPatch,
    db_url: str,
    tmp_path: Path,
    abm: tuple[AbmEmulator, AbmEmulatorServer, Path],
) -> None:
    """Keypair, token upload, a 1,000-device sync, the default profile on all of them, then one device
    enrolls by ADE with its user, is held at Setup Assistant and is released."""
    from pomona.app import build
    from pomona.settings import Settings

    emu, emu_server, device_ca_dir = abm
    monkeypatch.setenv("POMONA_DATABASE_URL", db_url)
    p: Pomona = build(Settings.from_env())
    try:
        s = setup_tenant(p, TENANT)
        p.admin.set_password(TENANT, s.upn, PASSWORD)

        # 1. The certificate the admin uploads to ABM; 2. the token ABM gives back, encrypted to it.
        cert = tmp_path / "abm-cert.pem"
        ok(monkeypatch, db_url, "abm", "keypair", "--tenant", TENANT, "--out", str(cert))
        p7m = tmp_path / "token.p7m"
        p7m.write_bytes(emu.issue_token(cert.read_bytes(), expires_in=timedelta(days=365)))
        token = ok(
            monkeypatch, db_url, "abm", "token", "upload", "--tenant", TENANT, "--file", str(p7m),
            "--name", "main",
        )  # fmt: skip
        assert token["state"] == "ok", token

        # 3. The full fetch: every device ABM lists for this server.
        (report,) = ok(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        assert report["full"] and report["fetched"] == FLEET and report["added"] == FLEET, report
        assert p.abm.device_count(TENANT) == FLEET

        # 4. The default profile, defined at ABM and assigned to all of them.
        created = ok(
            monkeypatch, db_url, "abm", "profile", "create", "--tenant", TENANT, "--name", "corp",
            "--auth", "modern", "--await-configured", "--default",
        )  # fmt: skip
        profile_uuid = created["definitions"]["main"]
        assert created["assigned"] == FLEET and created["assign_failed"] == 0, created
        held = {d.serial_number: (d.profile_uuid, d.profile_status) for d in emu.s.devices.values()}
        assert set(held.values()) == {(profile_uuid, "assigned")}
        serial = sorted(held)[0]

        # 5. The device in Setup Assistant, against the real server's HTTP app.
        with (
            TestClient(create_app(pomona=p, eager=False), base_url=PUBLIC) as app,  # type: ignore[arg-type]
            httpx.Client(timeout=10) as abm_client,
        ):
            device = VirtualDevice(serial=serial, client=app)  # type: ignore[arg-type]
            result = run_setup_assistant(
                device,
                emu_server.url,
                TestDeviceCa.load(device_ca_dir),
                abm_client=abm_client,
                upn=s.upn,
                password=PASSWORD,
                wait_release=20,
                poll_interval=0.05,
            )
        assert result.ok and result.enrolled and result.awaited and result.released, result.to_dict()
        assert [step.name for step in result.steps] == [
            "activation",
            "signin",
            "profile",
            "scep",
            "authenticate",
            "tokenupdate",
            "release",
        ]

        # What the server and ABM now say about the device.
        view = p.commands.device(TENANT, serial)
        assert view.enrollment is not None and view.enrollment.status is EnrollmentStatus.ACTIVE
        assert view.enrollment.type is EnrollmentType.ADE
        (user,) = [u for u in p.admin.list_users(TENANT) if u.upn == s.upn]  # the web view's sign-in
        assert view.enrollment.user_id == user.id
        assert not view.enrollment.awaiting_configuration  # released
        released = [c for c in view.commands if c.request_type == "DeviceConfigured"]
        assert [c.status.value for c in released] == ["Acknowledged"]
        token_updates = [e for e in p.commands.events(TENANT, udid=device.udid) if e.step == "tokenupdate"]
        assert any(e.detail.get("awaiting_configuration") for e in token_updates)  # it was held
        assert emu.device(serial) is not None and emu.device(serial).profile_status == "pushed"  # type: ignore[union-attr]
        ok(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)  # the cursor: what changed since
        shown = ok(monkeypatch, db_url, "abm", "devices", "--tenant", TENANT, "--serial", serial)
        assert (shown["profile_uuid"], shown["profile_status"]) == (profile_uuid, "pushed"), shown
        timeline = [(h["op_type"], h["profile_status"]) for h in shown["history"]]
        assert timeline[:2] == [("added", "empty"), ("assign", "assigned")], timeline
        assert timeline[-1] == ("modified", "pushed"), timeline  # the device fetched its profile
        findings = p.health.run(TENANT)["findings"]
        assert not [f for f in findings if f["code"] == "AWAITING_CONFIGURATION_STUCK"], findings
    finally:
        p.close()
