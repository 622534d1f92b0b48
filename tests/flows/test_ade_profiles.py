"""ADE profiles and their reconciled assignment through the real CLI and the ABM emulator over HTTP:
create (linted, defined at ABM), edit (defined again, re-assigned), list, assign; the reconciliation
after each sync heals a profile made before the token was uploaded, Apple's ``removed`` status and
PROFILE_NOT_FOUND, and reports an assignment that keeps failing (DEP_PROFILE_NOT_ASSIGNED)."""

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
PUBLIC = "https://mdm.acme.example"


@pytest.fixture
def abm(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AbmEmulator, AbmEmulatorServer]]:
    """An ABM emulator with 5 devices over HTTP; Pomona reaches it through POMONA_ABM_URL and is served
    at an https:// public URL (an ADE profile's url must be https)."""
    emu = AbmEmulator(devices=5, serial_prefix="ACME")
    server = emu.serve_in_thread()
    monkeypatch.setenv("POMONA_ABM_URL", server.url)
    monkeypatch.setenv("POMONA_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("POMONA_ABM_ASSIGN_BACKOFF", "0")
    yield emu, server
    server.close()


def run(monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str) -> tuple[int, Any]:
    """`pomona ARGS --json`: (exit code, the JSON it printed)."""
    code, out = cli(monkeypatch, db_url, *args, "--json")
    try:
        return code, json.loads(out)
    except ValueError:
        return code, json.loads(out.strip().splitlines()[-1])


def ok(monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str) -> Any:
    code, out = run(monkeypatch, db_url, *args)
    assert code == 0, out
    return out


def events(monkeypatch: pytest.MonkeyPatch, db_url: str, reason: str) -> list[dict[str, Any]]:
    """The tenant's events with this reason code."""
    code, out = cli(monkeypatch, db_url, "events", "--tenant", TENANT, "--code", reason, "--json")
    assert code == 0, out
    return [e for e in json.loads(out) if e["reason"] == reason]


def tenant_with_key(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, emu: AbmEmulator) -> Path:
    """A tenant with its ABM key pair, and a token the emulator issued to its certificate (not uploaded)."""
    assert cli(monkeypatch, db_url, "tenant", "create", TENANT, "--domain", "acme.example")[0] == 0
    cert = tmp_path / "abm-cert.pem"
    ok(monkeypatch, db_url, "abm", "keypair", "--tenant", TENANT, "--out", str(cert))
    p7m = tmp_path / "token.p7m"
    p7m.write_bytes(emu.issue_token(cert.read_bytes(), expires_in=timedelta(days=365)))
    return p7m


def upload_and_sync(monkeypatch: pytest.MonkeyPatch, db_url: str, p7m: Path) -> list[dict[str, Any]]:
    ok(
        monkeypatch,
        db_url,
        "abm",
        "token",
        "upload",
        "--tenant",
        TENANT,
        "--file",
        str(p7m),
        "--name",
        "main",
    )
    return ok(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)  # type: ignore[no-any-return]


def sync(monkeypatch: pytest.MonkeyPatch, db_url: str) -> dict[str, Any]:
    return ok(monkeypatch, db_url, "abm", "sync", "--tenant", TENANT)[0]  # type: ignore[no-any-return]


def device(monkeypatch: pytest.MonkeyPatch, db_url: str, serial: str) -> dict[str, Any]:
    """`pomona abm devices --serial S`: the device and its timeline."""
    return ok(monkeypatch, db_url, "abm", "devices", "--tenant", TENANT, "--serial", serial)  # type: ignore[no-any-return]


def create(monkeypatch: pytest.MonkeyPatch, db_url: str, *extra: str, name: str = "staff") -> dict[str, Any]:
    return ok(monkeypatch, db_url, "abm", "profile", "create", "--tenant", TENANT, "--name", name, *extra)  # type: ignore[no-any-return]


class TestProfiles:
    def test_create_defines_at_abm_with_the_server_urls_and_assigns_the_default(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """`profile create --default` lints, defines the profile at ABM (its url the server's ADE endpoint)
        and assigns it to every synced device; `profile list` shows it with Apple's UUID."""
        emu, _ = abm
        upload_and_sync(monkeypatch, db_url, tenant_with_key(monkeypatch, db_url, tmp_path, emu))
        out = create(monkeypatch, db_url, "--await-configured", "--skip", "Siri", "TOS", "--default")
        profile_uuid = out["definitions"]["main"]
        assert out["default"] is True and out["assigned"] == 5 and out["assign_failed"] == 0
        defined = emu.s.profiles[profile_uuid]
        (tenant_id,) = [t["id"] for t in ok(monkeypatch, db_url, "tenant", "list") if t["name"] == TENANT]
        assert defined["url"] == f"{PUBLIC}/ade/{tenant_id}/enroll"
        assert defined["configuration_web_url"] == f"{PUBLIC}/ade/{tenant_id}/web"
        assert defined["skip_setup_items"] == ["Siri", "TOS"]
        assert defined["await_device_configured"] is True and defined["is_mdm_removable"] is False
        assert {d.profile_uuid for d in emu.s.devices.values()} == {profile_uuid}
        listed = ok(monkeypatch, db_url, "abm", "profile", "list", "--tenant", TENANT)
        assert [(p["name"], p["default"], p["definitions"]) for p in listed] == [
            ("staff", True, {"main": profile_uuid})
        ]
        code, text = cli(monkeypatch, db_url, "abm", "profile", "list", "--tenant", TENANT)
        assert code == 0 and "staff" in text and profile_uuid[-8:] in text

    def test_linter_refuses_and_warns(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """DEP_PROFILE_REJECTED before sending: a non-removable unsupervised profile is refused (exit 2,
        an event, nothing sent, the finding printed); a warning alone is printed and the profile kept."""
        emu, _ = abm
        upload_and_sync(monkeypatch, db_url, tenant_with_key(monkeypatch, db_url, tmp_path, emu))
        code, out = run(
            monkeypatch,
            db_url,
            "abm",
            "profile",
            "create",
            "--tenant",
            TENANT,
            "--name",
            "x",
            "--no-supervised",
        )
        assert (code, out["reason"]) == (2, "DEP_PROFILE_REJECTED")
        code, text = cli(
            monkeypatch,
            db_url,
            "abm",
            "profile",
            "create",
            "--tenant",
            TENANT,
            "--name",
            "x",
            "--no-supervised",
        )
        assert code == 2 and "is_mdm_removable" in text
        assert emu.s.profiles == {} and events(monkeypatch, db_url, "DEP_PROFILE_REJECTED")
        code, text = cli(
            monkeypatch, db_url, "abm", "profile", "create", "--tenant", TENANT, "--name", "kiosk",
            "--auth", "none", "--no-supervised", "--removable", "--await-configured",
        )  # fmt: skip
        assert code == 0 and "await_device_configured" in text, text
        assert len(emu.s.profiles) == 1

    def test_apple_rejects_the_definition(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """DEP_PROFILE_REJECTED from ABM (the emulator's profile-rejected fault): the edit fails with the
        code and an event naming Apple's field error; the profile keeps its earlier definition."""
        emu, _ = abm
        upload_and_sync(monkeypatch, db_url, tenant_with_key(monkeypatch, db_url, tmp_path, emu))
        before = create(monkeypatch, db_url)["definitions"]
        emu.set_fault("profile-rejected")
        code, out = run(
            monkeypatch, db_url, "abm", "profile", "edit", "--tenant", TENANT, "--await-configured"
        )
        assert (code, out["reason"]) == (1, "DEP_PROFILE_REJECTED")
        assert [e["detail"].get("code") for e in events(monkeypatch, db_url, "DEP_PROFILE_REJECTED")] == [
            "FLAGS_INVALID"
        ]
        listed = ok(monkeypatch, db_url, "abm", "profile", "list", "--tenant", TENANT)
        assert (
            listed[0]["definitions"] == before and listed[0]["settings"]["await_device_configured"] is False
        )

    def test_edit_defines_again_and_reassigns(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """A profile edit defines it again at ABM (a new UUID) and assigns the new one to its devices."""
        emu, _ = abm
        upload_and_sync(monkeypatch, db_url, tenant_with_key(monkeypatch, db_url, tmp_path, emu))
        old = create(monkeypatch, db_url, "--default")["definitions"]["main"]
        sync(monkeypatch, db_url)
        out = ok(
            monkeypatch,
            db_url,
            "abm",
            "profile",
            "edit",
            "--tenant",
            TENANT,
            "--name",
            "staff",
            "--skip",
            "Siri",
        )
        new = out["definitions"]["main"]
        assert new != old and out["assigned"] == 5 and out["settings"]["skip_setup_items"] == ["Siri"]
        assert {d.profile_uuid for d in emu.s.devices.values()} == {new}
        assert emu.s.profiles[new]["skip_setup_items"] == ["Siri"]

    def test_duplicate_name_and_unknown_profile(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """A second profile of the same name is ALREADY_EXISTS; assigning an unknown one is NOT_FOUND; an
        edit without --name when the tenant has several profiles is INVALID_INPUT naming them."""
        emu, _ = abm
        upload_and_sync(monkeypatch, db_url, tenant_with_key(monkeypatch, db_url, tmp_path, emu))
        create(monkeypatch, db_url)
        code, out = run(
            monkeypatch, db_url, "abm", "profile", "create", "--tenant", TENANT, "--name", "staff"
        )
        assert (code, out["reason"]) == (2, "ALREADY_EXISTS")
        code, out = run(
            monkeypatch, db_url, "abm", "assign", "--tenant", TENANT, "--profile", "nope", "--serial", "X"
        )
        assert (code, out["reason"]) == (2, "NOT_FOUND")
        create(monkeypatch, db_url, name="kiosk")
        code, out = run(
            monkeypatch, db_url, "abm", "profile", "edit", "--tenant", TENANT, "--await-configured"
        )
        assert (code, out["reason"]) == (2, "INVALID_INPUT") and "kiosk, staff" in out["message"]


class TestAssignment:
    def test_assign_by_serial(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """`abm assign` assigns the profile to the serials ABM lists (one not listed yet is pending), and
        the assignment lands in the device's timeline."""
        emu, _ = abm
        upload_and_sync(monkeypatch, db_url, tenant_with_key(monkeypatch, db_url, tmp_path, emu))
        profile_uuid = create(monkeypatch, db_url)["definitions"]["main"]
        first, second = emu.s.order[:2]
        out = ok(
            monkeypatch,
            db_url,
            "abm",
            "assign",
            "--tenant",
            TENANT,
            "--profile",
            "staff",
            "--serial",
            first,
            second,
            "LATER0001",
        )
        assert {r["serial"]: r["answer"] for r in out} == {
            first: "SUCCESS",
            second: "SUCCESS",
            "LATER0001": "pending",
        }
        assert emu.device(first).profile_uuid == profile_uuid  # type: ignore[union-attr]
        assert emu.device(emu.s.order[2]).profile_uuid == ""  # type: ignore[union-attr]
        emu.add_device("LATER0001")
        assert sync(monkeypatch, db_url)["assigned"] == 1  # listed now: assigned after the sync
        history = device(monkeypatch, db_url, first)["history"]
        assert ("assign", profile_uuid) in [(h["op_type"], h["profile_uuid"]) for h in history]

    def test_profile_made_before_the_token_was_uploaded_heals(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """The founding document's "DEP enrollment doesn't start": a default profile made before the token
        was uploaded is defined and assigned by the first sync, with no admin action; the history shows it."""
        emu, _ = abm
        p7m = tenant_with_key(monkeypatch, db_url, tmp_path, emu)
        code, text = cli(
            monkeypatch,
            db_url,
            "abm",
            "profile",
            "create",
            "--tenant",
            TENANT,
            "--name",
            "staff",
            "--default",
        )
        assert code == 0 and "No ABM server token yet" in text
        assert emu.s.profiles == {}
        report = upload_and_sync(monkeypatch, db_url, p7m)[0]
        assert report["assigned"] == 5
        profile_uuid = ok(monkeypatch, db_url, "abm", "profile", "list", "--tenant", TENANT)[0][
            "definitions"
        ]["main"]
        assert {d.profile_uuid for d in emu.s.devices.values()} == {profile_uuid}
        sync(monkeypatch, db_url)
        serial = emu.s.order[0]
        shown = device(monkeypatch, db_url, serial)
        assert (shown["profile_status"], shown["profile_uuid"]) == ("assigned", profile_uuid)
        steps = [(h["op_type"], h["profile_status"]) for h in shown["history"]]
        assert steps[0] == ("added", "empty") and ("assign", "assigned") in steps
        assert steps[-1][1] == "assigned"
        code, text = cli(monkeypatch, db_url, "abm", "devices", "--tenant", TENANT, "--serial", serial)
        assert code == 0 and "assign" in text

    def test_removed_after_reassignment_is_assigned_again(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """Apple's `removed` status (fleetdm/fleet #39871) is a difference: the next sync assigns again."""
        emu, _ = abm
        upload_and_sync(monkeypatch, db_url, tenant_with_key(monkeypatch, db_url, tmp_path, emu))
        profile_uuid = create(monkeypatch, db_url, "--default")["definitions"]["main"]
        sync(monkeypatch, db_url)
        serial = emu.s.order[3]
        emu.set_fault("profile-removed", serial)
        assert sync(monkeypatch, db_url)["assigned"] == 1
        assert emu.device(serial).profile_status == "assigned"  # type: ignore[union-attr]
        sync(monkeypatch, db_url)
        steps = [(h["op_type"], h["profile_status"]) for h in device(monkeypatch, db_url, serial)["history"]]
        assert steps[-3:] == [("modified", "removed"), ("assign", "assigned"), ("modified", "assigned")]
        assert device(monkeypatch, db_url, serial)["profile_uuid"] == profile_uuid

    def test_profile_not_found_defines_again(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """DEP_PROFILE_NOT_FOUND: ABM forgot the profile (the emulator's fault); the next assignment gets
        PROFILE_NOT_FOUND, leaves an event, defines the profile again and assigns the new one."""
        emu, _ = abm
        upload_and_sync(monkeypatch, db_url, tenant_with_key(monkeypatch, db_url, tmp_path, emu))
        old = create(monkeypatch, db_url, "--default")["definitions"]["main"]
        emu.set_fault("profile-not-found")
        emu.add_device("NEWDEVICE01")
        assert sync(monkeypatch, db_url)["assigned"] == 1
        new = ok(monkeypatch, db_url, "abm", "profile", "list", "--tenant", TENANT)[0]["definitions"]["main"]
        assert new != old and new in emu.s.profiles
        assert emu.device("NEWDEVICE01").profile_uuid == new  # type: ignore[union-attr]
        assert [
            e["detail"]["profile_uuid"] for e in events(monkeypatch, db_url, "DEP_PROFILE_NOT_FOUND")
        ] == [old]

    def test_assignment_that_keeps_failing_is_reported(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """DEP_PROFILE_NOT_ASSIGNED: ABM answers FAILED (the emulator's assignment-fails fault); each sync
        tries again, the third failure leaves an event and a health finding, and a success clears it."""
        emu, _ = abm
        upload_and_sync(monkeypatch, db_url, tenant_with_key(monkeypatch, db_url, tmp_path, emu))
        create(monkeypatch, db_url)
        serial = emu.s.order[1]
        emu.set_fault("assignment-fails", serial)
        code, out = run(
            monkeypatch, db_url, "abm", "assign", "--tenant", TENANT, "--profile", "staff", "--serial", serial
        )
        assert code == 1 and out == [{"serial": serial, "answer": "FAILED"}]
        assert sync(monkeypatch, db_url)["assign_failed"] == 1
        assert not events(monkeypatch, db_url, "DEP_PROFILE_NOT_ASSIGNED")
        sync(monkeypatch, db_url)
        assert [e["serial"] for e in events(monkeypatch, db_url, "DEP_PROFILE_NOT_ASSIGNED")] == [serial]

        def findings() -> set[tuple[str, str]]:
            code, out = cli(monkeypatch, db_url, "health", "--tenant", TENANT, "--json")
            return {(f["code"], f["subject"]) for f in json.loads(out)["findings"]}

        assert ("DEP_PROFILE_NOT_ASSIGNED", f"abm:device:{serial}") in findings()
        code, out = cli(
            monkeypatch, db_url, "diagnose", "--tenant", TENANT, "--serial", serial,
            "--message", "ADE enrollment does not start", "--json",
        )  # fmt: skip
        answer = json.loads(out)["answer"]
        assert code == 0 and (answer["code"], answer["verdict"]) == ("DEP_PROFILE_NOT_ASSIGNED", "proven")
        history = device(monkeypatch, db_url, serial)["history"]
        assert [(h["op_type"], h["reason"]) for h in history if h["op_type"].startswith("assign")] == [
            ("assign-failed", "FAILED")
        ] * 3
        code, text = cli(monkeypatch, db_url, "abm", "devices", "--tenant", TENANT, "--serial", serial)
        assert code == 0 and text.count("FAILED") == 3
        emu.set_fault("clear")
        assert sync(monkeypatch, db_url)["assigned"] == 1
        sync(monkeypatch, db_url)  # ABM now shows the profile: the assignment is settled
        assert ("DEP_PROFILE_NOT_ASSIGNED", f"abm:device:{serial}") not in findings()

    def test_failed_assignment_backs_off(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """With a backoff, a failed assignment is not tried again by the very next sync."""
        emu, _ = abm
        monkeypatch.setenv("POMONA_ABM_ASSIGN_BACKOFF", "3600")
        upload_and_sync(monkeypatch, db_url, tenant_with_key(monkeypatch, db_url, tmp_path, emu))
        create(monkeypatch, db_url)
        serial = emu.s.order[0]
        emu.set_fault("assignment-fails", serial)
        assert (
            run(
                monkeypatch,
                db_url,
                "abm",
                "assign",
                "--tenant",
                TENANT,
                "--profile",
                "staff",
                "--serial",
                serial,
            )[0]
            == 1
        )
        report = sync(monkeypatch, db_url)
        assert (report["assigned"], report["assign_failed"]) == (0, 0)


class TestRelease:
    def test_release_queues_device_configured(
        self,
        pomona: Pomona,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """`abm release` queues DeviceConfigured for an enrolled device ABM lists, and the device gets it
        at its next check-in; a serial ABM does not list is NOT_FOUND."""
        emu, _ = abm
        setup_tenant(pomona, TENANT)
        cert = tmp_path / "abm-cert.pem"
        ok(monkeypatch, db_url, "abm", "keypair", "--tenant", TENANT, "--out", str(cert))
        p7m = tmp_path / "token.p7m"
        p7m.write_bytes(emu.issue_token(cert.read_bytes()))
        emu.add_device("HELD00000001")
        upload_and_sync(monkeypatch, db_url, p7m)
        with TestClient(create_app(pomona=pomona, eager=False), base_url="https://pomona.test") as client:  # type: ignore[arg-type]
            url = pomona.enrollment.urls.enroll(
                pomona.admin.create_enrollment_token(TENANT, f"ana@{TENANT}.example").secret
            )
            device = VirtualDevice(url, client=client, serial="HELD00000001")  # type: ignore[arg-type]
            device.enroll()
            device.poll()
            out = ok(monkeypatch, db_url, "abm", "release", "--tenant", TENANT, "--serial", "HELD00000001")
            assert out["request_type"] == "DeviceConfigured"
            handled = device.poll()
        assert [(h.command_uuid, h.request_type) for h in handled] == [
            (out["command_uuid"], "DeviceConfigured")
        ]
        code, err = run(monkeypatch, db_url, "abm", "release", "--tenant", TENANT, "--serial", "NOTINABM")
        assert (code, err["reason"]) == (2, "NOT_FOUND")
