"""Assignment rules (`pomona abm rule add|list|remove`) through the real CLI and the ABM emulator over HTTP:
a rule gives its profile to the devices a sync brings, explicit assignments beat rules and rules beat the
token's default, and a removed rule's devices get the default at the next reconciliation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers import cli, same_data_dir  # noqa: F401 - same_data_dir is autouse here
from pomona.testing.abm_emulator import AbmEmulator, AbmEmulatorServer

TENANT = "acme"


@pytest.fixture
def abm(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[AbmEmulator, AbmEmulatorServer]]:
    """An ABM emulator with 5 devices (ACME00000000 and ACME00000004 are iPad minis, the others iPhone 14
    Pros) over HTTP, reached through POMONA_ABM_URL; the server at an https:// public URL."""
    emu = AbmEmulator(devices=5, serial_prefix="ACME")
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


def abm_cli(monkeypatch: pytest.MonkeyPatch, db_url: str, *args: str) -> Any:
    return ok(monkeypatch, db_url, "abm", *args, "--tenant", TENANT)


def synced_tenant(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path, emu: AbmEmulator) -> None:
    """A tenant with its ABM key pair and an uploaded token, synced once."""
    assert cli(monkeypatch, db_url, "tenant", "create", TENANT, "--domain", "acme.example")[0] == 0
    cert = tmp_path / "abm-cert.pem"
    abm_cli(monkeypatch, db_url, "keypair", "--out", str(cert))
    p7m = tmp_path / "token.p7m"
    p7m.write_bytes(emu.issue_token(cert.read_bytes(), expires_in=timedelta(days=365)))
    abm_cli(monkeypatch, db_url, "token", "upload", "--file", str(p7m), "--name", "main")
    abm_cli(monkeypatch, db_url, "sync")


def uuids(monkeypatch: pytest.MonkeyPatch, db_url: str) -> dict[str, str]:
    """Each profile's UUID at ABM, by name."""
    return {p["name"]: p["definitions"]["main"] for p in abm_cli(monkeypatch, db_url, "profile", "list")}


def held(emu: AbmEmulator, names: dict[str, str]) -> dict[str, str]:
    """Each device's profile at ABM (by Pomona's profile name)."""
    back = {u: n for n, u in names.items()}
    return {s: back.get(d.profile_uuid, d.profile_uuid) for s, d in sorted(emu.s.devices.items())}


class TestRules:
    def test_rule_assigns_new_devices_at_their_first_sync(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """Devices a sync brings that match a rule (family, or order number) get its profile at that sync's
        reconciliation; the others get the default. `rule add` and `rule list` answer the rule's JSON."""
        emu, _ = abm
        synced_tenant(monkeypatch, db_url, tmp_path, emu)
        for name, extra in (("staff", ("--default",)), ("kiosk", ()), ("orders", ())):
            abm_cli(monkeypatch, db_url, "profile", "create", "--name", name, *extra)
        rule = abm_cli(monkeypatch, db_url, "rule", "add", "--profile", "kiosk", "--family", "iPad")
        assert set(rule) == {
            "id",
            "profile",
            "field",
            "value",
            "priority",
            "created_at",
            "assigned",
            "assign_failed",
        }
        assert (rule["profile"], rule["field"], rule["value"], rule["priority"]) == (
            "kiosk",
            "device_family",
            "iPad",
            10,
        )
        order = abm_cli(monkeypatch, db_url, "rule", "add", "--profile", "orders", "--order", "PO-778")
        assert (order["field"], order["priority"]) == ("order_number", 20)
        listed = abm_cli(monkeypatch, db_url, "rule", "list")
        assert [(r["id"], r["field"]) for r in listed] == [
            (rule["id"], "device_family"),
            (order["id"], "order_number"),
        ]
        emu.add_device("NEWIPAD00001", product="iPad13,18")
        emu.add_device("BOUGHT000001", order_number="PO-778")
        emu.add_device("NEWPHONE0001")
        report = abm_cli(monkeypatch, db_url, "sync")[0]
        assert report["added"] == 3 and report["assign_failed"] == 0
        got = held(emu, uuids(monkeypatch, db_url))
        assert (got["NEWIPAD00001"], got["BOUGHT000001"], got["NEWPHONE0001"]) == ("kiosk", "orders", "staff")
        device = abm_cli(monkeypatch, db_url, "devices", "--serial", "BOUGHT000001")
        assert device["order_number"] == "PO-778"

    def test_explicit_beats_rule_beats_default_and_removal_restores_the_default(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """An explicit assignment wins over a matching rule, a rule over the default; once the rule is
        removed its devices get the default at the next reconciliation, the explicit one keeps its own."""
        emu, _ = abm
        synced_tenant(monkeypatch, db_url, tmp_path, emu)
        abm_cli(monkeypatch, db_url, "profile", "create", "--name", "staff", "--default")
        abm_cli(monkeypatch, db_url, "profile", "create", "--name", "kiosk")
        abm_cli(monkeypatch, db_url, "profile", "create", "--name", "lab")
        abm_cli(monkeypatch, db_url, "sync")
        rule = abm_cli(monkeypatch, db_url, "rule", "add", "--profile", "lab", "--model", "iphone 14*")
        assert rule["assigned"] == 3
        abm_cli(monkeypatch, db_url, "assign", "--profile", "kiosk", "--serial", "ACME00000001")
        abm_cli(monkeypatch, db_url, "sync")
        names = uuids(monkeypatch, db_url)
        assert held(emu, names) == {
            "ACME00000000": "staff",
            "ACME00000001": "kiosk",
            "ACME00000002": "lab",
            "ACME00000003": "lab",
            "ACME00000004": "staff",
        }
        code, text = cli(monkeypatch, db_url, "abm", "rule", "list", "--tenant", TENANT)
        assert code == 0 and "iphone 14*" in text and "lab" in text
        removed = abm_cli(monkeypatch, db_url, "rule", "remove", "--id", rule["id"])
        assert (removed["removed"], removed["id"], removed["assigned"]) == (True, rule["id"], 2)
        assert held(emu, names) == {
            "ACME00000000": "staff",
            "ACME00000001": "kiosk",
            "ACME00000002": "staff",
            "ACME00000003": "staff",
            "ACME00000004": "staff",
        }
        assert abm_cli(monkeypatch, db_url, "rule", "list") == []
        code, out = cli(monkeypatch, db_url, "abm", "rule", "remove", "--tenant", TENANT, "--id", rule["id"])
        assert code == 2 and "No assignment rule" in out

    def test_rule_needs_one_field_and_a_known_profile(
        self,
        monkeypatch: pytest.MonkeyPatch,
        db_url: str,
        tmp_path: Path,
        abm: tuple[AbmEmulator, AbmEmulatorServer],
    ) -> None:
        """INVALID_INPUT without a field or with two; NOT_FOUND for an unknown profile (JSON errors)."""
        emu, _ = abm
        synced_tenant(monkeypatch, db_url, tmp_path, emu)
        base = ("abm", "rule", "add", "--tenant", TENANT, "--profile")
        for args, reason in (
            ((*base, "staff"), "INVALID_INPUT"),
            ((*base, "staff", "--model", "x", "--family", "iPad"), "INVALID_INPUT"),
            ((*base, "nope", "--model", "x"), "NOT_FOUND"),
        ):
            code, out = cli(monkeypatch, db_url, *args, "--json")
            assert code == 2 and json.loads(out.strip().splitlines()[-1])["reason"] == reason, out
