"""DEP_DEVICE_ASSIGNED_ELSEWHERE proven from ABM's own answer (issue 12, "Other MDM servers"), through the
real CLI and the ABM emulator over HTTP: a device ABM moves to another MDM server leaves this server's
list, and ABM's device details answer NOT_ACCESSIBLE for it; the device's timeline, an event, `pomona abm
devices --serial` and health say so, until ABM lists the device again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from helpers import cli, same_data_dir, setup_tenant  # noqa: F401 - same_data_dir is autouse here
from pomona.app import Pomona, create_app
from pomona.testing.abm_emulator import AbmEmulator, AbmEmulatorServer
from pomona.testing.virtual_device import VirtualDevice

TENANT = "acme"
CODE = "DEP_DEVICE_ASSIGNED_ELSEWHERE"


@pytest.fixture
def abm(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AbmEmulator, AbmEmulatorServer]]:
    """An ABM emulator with 3 devices over HTTP, and an https public URL (an ADE profile needs one)."""
    emu = AbmEmulator(devices=3, serial_prefix="ACME")
    server = emu.serve_in_thread()
    monkeypatch.setenv("POMONA_ABM_URL", server.url)
    monkeypatch.setenv("POMONA_PUBLIC_URL", "https://mdm.acme.example")
    monkeypatch.setenv("POMONA_ABM_ASSIGN_BACKOFF", "0")
    yield emu, server
    server.close()


def ok(monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str) -> Any:
    """`pomona ARGS --json`, which must succeed: the JSON it printed."""
    code, out = cli(monkeypatch, db_url, *args, "--json")
    assert code == 0, out
    return json.loads(out)


def synced(
    monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, emu: AbmEmulator, *, create: bool = True
) -> list[str]:
    """A tenant (made here unless ``create`` is false) with an uploaded token, synced once: the serials
    ABM lists."""
    if create:
        assert cli(monkeypatch, db_url, "tenant", "create", TENANT, "--domain", "acme.example")[0] == 0
    cert = tmp_path / "abm-cert.pem"
    ok(monkeypatch, db_url, "abm", "keypair", "--tenant", TENANT, "--out", str(cert))
    p7m = tmp_path / "token.p7m"
    p7m.write_bytes(emu.issue_token(cert.read_bytes(), expires_in=timedelta(days=365)))
    ok(monkeypatch, db_url, "abm", "token", "upload", "--tenant", TENANT, "--file", str(p7m))
    ok(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
    return sorted(emu.s.devices)


def device(monkeypatch: pytest.MonkeyPatch, db_url: str, serial: str) -> dict[str, Any]:
    return ok(monkeypatch, db_url, "abm", "devices", "--tenant", TENANT, "--serial", serial)  # type: ignore[no-any-return]


def elsewhere_findings(monkeypatch: pytest.MonkeyPatch, db_url: str) -> list[tuple[str, str]]:
    found = ok(monkeypatch, db_url, "health", "--tenant", TENANT)["findings"]
    return [(f["subject"], f["facts"]["serial"]) for f in found if f["code"] == CODE]


def elsewhere_events(monkeypatch: pytest.MonkeyPatch, db_url: str) -> list[tuple[str, str, str]]:
    got = ok(monkeypatch, db_url, "events", "--tenant", TENANT, "--code", CODE)
    return [(e["outcome"], e["step"], e["serial"]) for e in got if e["reason"] == CODE]


class TestAssignedElsewhere:
    def test_a_sync_that_sees_the_device_leave_asks_abm(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """ABM gives a device to another MDM server: the sync sees it deleted, ABM's device details say
        NOT_ACCESSIBLE, and the timeline, one failed event, `abm devices --serial` and health say
        DEP_DEVICE_ASSIGNED_ELSEWHERE (not again on the next sync); once ABM lists it again, it clears."""
        emu, _ = abm
        s1, s2, _ = synced(monkeypatch, db_url, tmp_path, emu)
        emu.set_fault("assigned-elsewhere", s1)
        assert ok(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)[0]["deleted"] == 1
        shown = device(monkeypatch, db_url, s1)
        assert shown["assigned_elsewhere"] is True and shown["deleted"] is True
        assert shown["history"][-1]["reason"] == CODE
        assert device(monkeypatch, db_url, s2)["assigned_elsewhere"] is False
        code, text = cli(monkeypatch, db_url, "abm", "devices", "--tenant", TENANT, "--serial", s1)
        assert code == 0 and CODE in text
        assert elsewhere_findings(monkeypatch, db_url) == [(f"abm:device:{s1}", s1)]
        ok(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        assert elsewhere_events(monkeypatch, db_url) == [("failed", "dep", s1)]
        emu.add_device(s1)  # the admin moves it back to this server in ABM
        ok(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
        assert device(monkeypatch, db_url, s1)["assigned_elsewhere"] is False
        assert elsewhere_findings(monkeypatch, db_url) == []

    def test_an_assignment_abm_refuses_as_not_accessible_asks_abm(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """A device moved elsewhere before the next sync: assigning it gets NOT_ACCESSIBLE, ABM's device
        details confirm it is another server's, and it is DEP_DEVICE_ASSIGNED_ELSEWHERE; a device ABM
        merely refuses (FAILED) is not."""
        emu, _ = abm
        s1, s2, _ = synced(monkeypatch, db_url, tmp_path, emu)
        ok(monkeypatch, db_url, "abm", "profile", "create", "--tenant", TENANT, "--name", "staff")
        emu.set_fault("assigned-elsewhere", s1)
        emu.set_fault("assignment-fails", s2)
        code, out = cli(
            monkeypatch,
            db_url,
            *(
                "abm",
                "assign",
                "--tenant",
                TENANT,
                "--profile",
                "staff",
                "--serial",
                s1,
                "--serial",
                s2,
                "--json",
            ),
        )
        assert code == 1 and json.loads(out) == [
            {"serial": s1, "answer": "NOT_ACCESSIBLE"},
            {"serial": s2, "answer": "FAILED"},
        ]
        assert device(monkeypatch, db_url, s1)["assigned_elsewhere"] is True
        assert device(monkeypatch, db_url, s2)["assigned_elsewhere"] is False
        assert elsewhere_events(monkeypatch, db_url) == [("failed", "dep", s1)]
        assert elsewhere_findings(monkeypatch, db_url) == [(f"abm:device:{s1}", s1)]

    def test_the_device_view_shows_it(
        self,
        pomona: Pomona,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """A device enrolled here that ABM then gives to another MDM server: the admin API's device view
        lists health's DEP_DEVICE_ASSIGNED_ELSEWHERE about its serial."""
        emu, _ = abm
        s = setup_tenant(pomona, TENANT)
        s1, _, _ = synced(monkeypatch, db_url, tmp_path, emu, create=False)
        with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as client:  # type: ignore[arg-type]
            VirtualDevice(s.enroll_url, client=client, serial=s1).enroll()  # type: ignore[arg-type]
            emu.set_fault("assigned-elsewhere", s1)
            ok(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)
            ok(monkeypatch, db_url, "health", "--tenant", TENANT)
            auth = {"Authorization": f"Bearer {s.admin_token}"}
            shown = client.get(f"/api/v1/tenants/{TENANT}/devices/{s1}", headers=auth).json()
        assert [(f["code"], f["facts"]["serial"]) for f in shown["findings"]] == [(CODE, s1)]
