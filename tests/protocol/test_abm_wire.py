"""ABM wire formats (protocol/dep.py) against the real responses in shared/vectors, and every answer of the
ABM emulator (and every request of our client) validated against the JSON Schemas of Apple's objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from pomona.net.abm import HttpAbmClient
from pomona.pki.abm import decrypt_token, make_keypair
from pomona.protocol.dep import (
    AbmDevice,
    ServerToken,
    decode_fetch_page,
    decode_server_token,
    encode_device,
    encode_server_token,
    error_code,
)
from pomona.protocol.errors import DepParseError
from pomona.testing.abm_emulator import AbmEmulator

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def vectors(shared: Path) -> Path:
    return shared / "vectors"


@pytest.fixture(scope="module")
def schemas(vectors: Path) -> dict[str, Any]:
    """Apple's object schemas, with the Device $ref inlined (the validator has no file resolver)."""
    folder = vectors / "micromdm+apple-device-services" / "dep" / "schemas"
    out = {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}
    fetch = json.loads(json.dumps(out["FetchDeviceResponse"]))
    fetch["properties"]["devices"]["items"] = out["Device"]
    out["FetchDeviceResponse"] = fetch
    return out


def valid(schema: dict[str, Any], instance: object) -> None:
    errors = [
        e.message for e in jsonschema_rs.validator_for(schema, validate_formats=True).iter_errors(instance)
    ]
    assert errors == [], errors


class TestRealResponses:
    def test_fetch_response_decodes(self, vectors: Path, schemas: dict[str, Any]) -> None:
        """micromdm's captured /server/devices answer decodes, every field kept, and is schema-valid."""
        raw = (vectors / "micromdm+micromdm" / "dep" / "testdata" / "device_response.json").read_bytes()
        valid(schemas["FetchDeviceResponse"], json.loads(raw))
        page = decode_fetch_page(raw)
        (d,) = page.devices
        assert (d.serial_number, d.model, d.os, d.device_family, d.color) == (
            "C02T0HL0GGC0",
            "MacBook Pro",
            "OSX",
            "Mac",
            "SPACE GRAY",
        )
        assert (d.profile_status, d.profile_uuid, d.device_assigned_by) == (
            "assigned",
            "C1F123098EB5074580041E69883004C3",
            "apple-dep@acme.co",
        )
        assert d.profile_assign_time == datetime(2018, 9, 8, 16, 49, 9, tzinfo=UTC)
        assert page.more_to_follow is False and page.cursor.startswith("MDow")
        assert encode_device(d) == json.loads(raw)["devices"][0]

    def test_empty_sync_decodes(self, vectors: Path) -> None:
        """An empty sync answer has no devices and a cursor."""
        raw = (vectors / "micromdm+micromdm" / "dep" / "testdata" / "empty_sync_response.json").read_bytes()
        page = decode_fetch_page(raw)
        assert page.devices == [] and page.cursor and page.fetched_until is not None

    def test_schema_catches_a_wrong_value(self, schemas: dict[str, Any]) -> None:
        """The validator used below does refuse what Apple would not send."""
        bad = {"cursor": "x", "fetched_until": "2018-09-08T17:28:18Z", "more_to_follow": "no"}
        assert not jsonschema_rs.validator_for(schemas["FetchDeviceResponse"]).is_valid(bad)

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[]",
            b'{"cursor": 1, "more_to_follow": false}',
            b'{"cursor": "c", "more_to_follow": false, "devices": [{}]}',
        ],
    )
    def test_malformed_pages(self, body: bytes) -> None:
        """A body that is not a FetchDeviceResponse is a DepParseError."""
        with pytest.raises(DepParseError):
            decode_fetch_page(body)


class TestServerToken:
    def test_round_trip(self) -> None:
        """A token's plaintext (a MIME part holding the JSON message) reads back as written."""
        t = ServerToken("CK_a", "CS_b", "AT_c", "AS_d", NOW)
        assert decode_server_token(encode_server_token(t)) == t

    @pytest.mark.parametrize(
        "plaintext",
        [
            b"hello",
            b"-----BEGIN MESSAGE-----\n[]\n-----END MESSAGE-----",
            b'{"consumer_key": "a", "consumer_secret": "b", "access_token": "c", "access_secret": "d"}',
            b'{"consumer_key": "", "consumer_secret": "b", "access_token": "c", "access_secret": "d", '
            b'"access_token_expiry": "2030-01-01T00:00:00Z"}',
        ],
    )
    def test_incomplete_tokens(self, plaintext: bytes) -> None:
        """No JSON, no object, no expiry, an empty key: DepParseError."""
        with pytest.raises(DepParseError):
            decode_server_token(plaintext)


class TestErrorCodes:
    @pytest.mark.parametrize(
        ("body", "code"),
        [
            (b"EXPIRED_CURSOR", "EXPIRED_CURSOR"),
            (b'"T_C_NOT_SIGNED"', "T_C_NOT_SIGNED"),
            (b'{"code": "THROTTLED", "retry_after_seconds": 5}', "THROTTLED"),
            (b"oauth_problem_adv=token_expired", "token_expired"),
            (b"", ""),
        ],
    )
    def test_error_code(self, body: bytes, code: str) -> None:
        """Apple's code is read from a plain, quoted, JSON or OAuth problem body."""
        assert error_code(body) == code


@pytest.fixture
def session() -> Iterator[tuple[AbmEmulator, HttpAbmClient, list[httpx.Request]]]:
    """An emulator with 30 devices, and a client of ours over it that records every request it sends."""
    emu = AbmEmulator(devices=30)
    cert, key = make_keypair("test")
    creds = decode_server_token(decrypt_token(emu.issue_token(cert), cert, key))
    inner = emu.transport()
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return inner.handle_request(request)

    client = HttpAbmClient(creds, "http://abm.test", transport=httpx.MockTransport(record))
    yield emu, client, sent
    client.close()


class TestEmulatorAnswersValidate:
    def test_fetch_and_sync_pages(
        self, session: tuple[AbmEmulator, HttpAbmClient, list[httpx.Request]], schemas: dict[str, Any]
    ) -> None:
        """Every page of a full fetch and of a sync is a valid FetchDeviceResponse; every sync request a
        valid SyncDeviceRequest; the full fetch lists every device once."""
        emu, client, sent = session
        serials: list[str] = []
        cursor = None
        while True:
            page = client.fetch_devices(cursor, 7)
            serials += [d.serial_number for d in page.devices]
            cursor = page.cursor
            if not page.more_to_follow:
                break
        assert sorted(serials) == sorted(emu.s.devices) and len(serials) == 30
        emu.add_device("NEW000000001")
        client.sync_devices(cursor, 100)
        for r in sent:
            if r.url.path in ("/server/devices", "/devices/sync"):
                answer = emu.handle(r.method, str(r.url), dict(r.headers), r.content)
                valid(schemas["FetchDeviceResponse"], json.loads(answer[2]))
            if r.url.path == "/devices/sync":
                valid(schemas["SyncDeviceRequest"], json.loads(r.content))
            if r.url.path != "/session":
                assert r.headers["X-Server-Protocol-Version"] and r.headers["X-ADM-Auth-Session"]

    def test_sync_reports_operations(
        self, session: tuple[AbmEmulator, HttpAbmClient, list[httpx.Request]]
    ) -> None:
        """After a full fetch, a sync names each change with op_type and op_date."""
        emu, client, _ = session
        page = client.fetch_devices(None, 1000)
        emu.add_device("NEW000000001")
        first = emu.s.order[0]
        emu.handle("POST", "http://x/_emulator/fault", {}, b"")  # a bad control call changes nothing
        emu._remove(first)
        changes = client.sync_devices(page.cursor, 1000)
        assert [(d.serial_number, d.op_type) for d in changes.devices] == [
            ("NEW000000001", "added"),
            (first, "deleted"),
        ]
        assert all(d.op_date is not None for d in changes.devices)

    def test_profile_define_get_assign_clear(
        self, session: tuple[AbmEmulator, HttpAbmClient, list[httpx.Request]], schemas: dict[str, Any]
    ) -> None:
        """A defined profile reads back as a valid Profile; assign and clear answers are valid
        AssignProfileResponses and change the device's profile_status."""
        emu, client, _ = session
        serial = emu.s.order[0]
        uuid = client.define_profile(
            {"profile_name": "Default", "url": "https://mdm.acme.example/ade/enroll", "is_supervised": True}
        )
        got = client.get_profile(uuid)
        valid(schemas["Profile"], got)
        assert got["profile_uuid"] == uuid
        assert client.assign_profile(uuid, [serial, "NOPE00000000"]) == {
            serial: "SUCCESS",
            "NOPE00000000": "NOT_ACCESSIBLE",
        }
        d = emu.device(serial)
        assert d is not None and (d.profile_status, d.profile_uuid) == ("assigned", uuid)
        answer = emu.handle(
            "PUT",
            "http://abm.test/profile/devices",
            {"X-ADM-Auth-Session": client.session_token or "", "X-Server-Protocol-Version": "10"},
            json.dumps({"profile_uuid": uuid, "devices": [serial]}).encode(),
        )
        valid(schemas["AssignProfileResponse"], json.loads(answer[2]))
        assert client.clear_profile(uuid, [serial]) == {serial: "SUCCESS"}
        d = emu.device(serial)
        assert d is not None and d.profile_status == "empty"

    def test_device_details_and_disown(
        self, session: tuple[AbmEmulator, HttpAbmClient, list[httpx.Request]], schemas: dict[str, Any]
    ) -> None:
        """Device details are valid Devices with a response_status; a disowned device leaves the list."""
        emu, client, _ = session
        serial = emu.s.order[1]
        status, _, body = emu.handle(
            "POST",
            "http://abm.test/devices",
            {"X-ADM-Auth-Session": client.authenticate(), "X-Server-Protocol-Version": "10"},
            json.dumps({"devices": [serial]}).encode(),
        )
        detail = json.loads(body)["devices"][serial]
        valid(schemas["Device"], detail)
        assert (status, detail["response_status"]) == (200, "SUCCESS")
        assert client.disown([serial]) == {serial: "SUCCESS"}
        assert emu.device(serial) is None

    def test_account_has_the_captured_shape(
        self, session: tuple[AbmEmulator, HttpAbmClient, list[httpx.Request]], vectors: Path
    ) -> None:
        """/account answers every key the captured account answer has."""
        _, client, _ = session
        captured = json.loads(
            (vectors / "micromdm+micromdm" / "dep" / "testdata" / "account_response.json").read_text()
        )
        assert set(captured) <= set(client.account())


class TestEmulatorDevices:
    def test_generated_devices(self) -> None:
        """Generated devices have 12-character serials with the prefix, and Apple's family and os values."""
        emu = AbmEmulator(devices=8, serial_prefix="ZZ", clock=lambda: NOW)
        assert all(len(s) == 12 and s.startswith("ZZ") for s in emu.s.devices)
        families = {(d.device_family, d.os) for d in emu.s.devices.values()}
        assert families == {("iPhone", "iOS"), ("iPad", "iPadOS")}
        assert all(d.device_assigned_date == NOW for d in emu.s.devices.values())

    def test_state_dir_keeps_devices_and_tokens(self, tmp_path: Path) -> None:
        """With a state folder, a restarted emulator still lists its devices and accepts its tokens."""
        emu = AbmEmulator(devices=3, state_dir=tmp_path)
        cert, key = make_keypair("t")
        creds = decode_server_token(
            decrypt_token(emu.issue_token(cert, expires_in=timedelta(days=9)), cert, key)
        )
        emu.save()
        again = AbmEmulator(state_dir=tmp_path)
        assert sorted(again.s.devices) == sorted(emu.s.devices)
        client = HttpAbmClient(creds, "http://abm.test", transport=again.transport())
        assert client.authenticate()

    def test_unknown_fault_is_refused(self) -> None:
        """A fault name the emulator does not know is an error, not silently ignored."""
        with pytest.raises(ValueError):
            AbmEmulator().set_fault("meteor-strike")

    def test_deleted_sync_entries_are_devices(self) -> None:
        """A deletion in a sync answer still carries the serial (and what ABM knew of the device)."""
        d = AbmDevice("X1", model="iPad", op_type="deleted", op_date=NOW)
        assert encode_device(d, sync=True)["op_type"] == "deleted"
