"""The admin API's ABM operations (`/api/v1/tenants/{tenant}/abm/...`) through the real ASGI app and the
ABM emulator over HTTP: the same operations as `pomona abm`, ABM's refusals with their DEP_* codes, and
another tenant's objects answering NOT_FOUND."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from pomona.app import Pomona, Settings, build, create_app
from pomona.testing.abm_emulator import AbmEmulator, AbmEmulatorServer
from pomona.testing.virtual_device import VirtualDevice

TENANT = "acme"
PUBLIC = "https://mdm.acme.example"


@dataclass
class World:
    p: Pomona
    client: TestClient
    emu: AbmEmulator
    server_auth: dict[str, str]  # a server-wide admin token
    acme_auth: dict[str, str]  # acme's own token
    beta_auth: dict[str, str]  # another tenant's token

    def url(self, path: str, tenant: str = TENANT) -> str:
        return f"/api/v1/tenants/{tenant}/abm/{path}"

    def upload(self, name: str = "main") -> dict[str, Any]:
        """Make the key pair, have ABM issue a token to it, upload that token."""
        cert = self.client.post(self.url("keypair"), headers=self.acme_auth).json()["certificate"]
        p7m = self.emu.issue_token(cert.encode())
        r = self.client.post(
            self.url("tokens"),
            content=p7m,
            params={"name": name},
            headers={**self.acme_auth, "Content-Type": "application/pkcs7-mime"},
        )
        assert r.status_code == 201, r.text
        return dict(r.json())


@pytest.fixture
def abm() -> Iterator[tuple[AbmEmulator, AbmEmulatorServer]]:
    """An ABM emulator with 6 devices, served over HTTP."""
    emu = AbmEmulator(devices=6, serial_prefix="ACME")
    server = emu.serve_in_thread()
    yield emu, server
    server.close()


@pytest.fixture
def w(db_url: str, tmp_path: Path, abm: tuple[AbmEmulator, AbmEmulatorServer]) -> Iterator[World]:
    """Pomona on the test's database reaching the emulator; tenants acme and beta, each with an admin token."""
    emu, server = abm
    p = build(
        Settings(
            data_dir=tmp_path,
            database_url=db_url,
            public_url=PUBLIC,
            abm_url=server.url,
            abm_assign_backoff=0,
        )
    )
    try:
        p.admin.create_tenant(TENANT, "acme.example", key_type="p256")
        p.admin.create_tenant("beta", "beta.example", key_type="p256")

        def bearer(tenant: str | None) -> dict[str, str]:
            return {"Authorization": f"Bearer {p.admin.create_api_token(tenant, 'abm').secret}"}

        with TestClient(create_app(pomona=p, eager=False), base_url=PUBLIC) as client:  # type: ignore[arg-type]
            yield World(p, client, emu, bearer(None), bearer(TENANT), bearer("beta"))
    finally:
        p.close()


def refused(r: Any, status: int, reason: str) -> None:
    assert (r.status_code, r.json()["reason"]) == (status, reason), r.text
    assert r.json()["request_id"] and r.json()["message"]


class TestTokensAndDevices:
    def test_keypair_token_sync_devices(self, w: World) -> None:
        """Keypair (made once, downloadable as PEM), token upload (.p7m body), list, sync, the device list
        (paged, serial filter) and one device with its timeline, then token removal."""
        c = w.client
        refused(c.get(w.url("keypair"), headers=w.acme_auth), 404, "NOT_FOUND")
        made = c.post(w.url("keypair"), headers=w.acme_auth).json()
        again = c.post(w.url("keypair"), headers=w.acme_auth).json()
        assert (made["made"], again["made"]) == (True, False) and made["certificate"] == again["certificate"]
        pem = c.get(w.url("keypair"), headers=w.acme_auth)
        assert pem.status_code == 200 and pem.headers["content-type"].startswith("application/x-pem-file")
        assert pem.text == made["certificate"]
        token = w.upload()
        assert (token["name"], token["state"]) == ("main", "ok")
        listed = c.get(w.url("tokens"), headers=w.acme_auth).json()["tokens"]
        assert [t["name"] for t in listed] == ["main"] and "access_secret" not in str(listed)
        r = c.post(w.url("sync"), json={"full": True}, headers=w.acme_auth)
        assert r.status_code == 200, r.text
        (report,) = r.json()["reports"]
        assert (report["full"], report["added"]) == (True, 6)
        page = c.get(w.url("devices"), params={"limit": 4, "offset": 4}, headers=w.acme_auth).json()
        assert len(page["devices"]) == 2
        serial = page["devices"][0]["serial_number"]
        one = c.get(w.url("devices"), params={"serial": serial}, headers=w.acme_auth).json()["devices"]
        assert [d["serial_number"] for d in one] == [serial]
        device = c.get(w.url(f"devices/{serial}"), headers=w.acme_auth).json()
        assert device["model"] and device["history"][0]["op_type"] == "added"
        refused(c.get(w.url("devices/NOPE"), headers=w.acme_auth), 404, "NOT_FOUND")
        assert c.delete(w.url("tokens/main"), headers=w.acme_auth).status_code == 204
        assert c.get(w.url("tokens"), headers=w.acme_auth).json()["tokens"] == []
        refused(c.delete(w.url("tokens/main"), headers=w.acme_auth), 404, "NOT_FOUND")

    def test_abm_errors_carry_their_dep_codes(self, w: World) -> None:
        """A token for another key is DEP_TOKEN_INVALID (422), an expired one DEP_TOKEN_EXPIRED (422: the
        admin's file, not ABM's answer); ABM's refusals during a sync answer 502 with
        their DEP_* code (terms not accepted, token revoked)."""
        from pomona.pki.abm import make_keypair

        c = w.client
        c.post(w.url("keypair"), headers=w.acme_auth)
        other_cert, _ = make_keypair("someone else")
        r = c.post(
            w.url("tokens"),
            content=w.emu.issue_token(other_cert),
            headers={**w.acme_auth, "Content-Type": "application/pkcs7-mime"},
        )
        refused(r, 422, "DEP_TOKEN_INVALID")
        cert = c.get(w.url("keypair"), headers=w.acme_auth).content
        r = c.post(
            w.url("tokens"),
            content=w.emu.issue_token(cert, expires_in=timedelta(days=-1)),
            headers={**w.acme_auth, "Content-Type": "application/pkcs7-mime"},
        )
        refused(r, 422, "DEP_TOKEN_EXPIRED")
        w.upload()
        w.emu.set_fault("terms-not-accepted")
        refused(c.post(w.url("sync"), headers=w.acme_auth), 502, "DEP_TERMS_NOT_ACCEPTED")
        w.emu.set_fault("clear")
        w.emu.set_fault("token-revoked")
        refused(c.post(w.url("sync"), headers=w.acme_auth), 502, "DEP_TOKEN_INVALID")
        listed = c.get(w.url("tokens"), headers=w.acme_auth).json()["tokens"]
        assert listed[0]["last_error"] == "DEP_TOKEN_INVALID"


class TestProfilesAndAssignment:
    def test_profiles_assign_rules(self, w: World) -> None:
        """Create (default: every device gets it), list, edit, a linter refusal with its findings, an
        explicit assignment, and a rule (add, list, remove) through the API."""
        c = w.client
        w.upload()
        c.post(w.url("sync"), headers=w.acme_auth)
        r = c.post(w.url("profiles"), json={"name": "staff", "default": True}, headers=w.acme_auth)
        assert r.status_code == 201, r.text
        assert (r.json()["default"], r.json()["assigned"]) == (True, 6)
        staff_uuid = r.json()["definitions"]["main"]
        c.post(w.url("sync"), headers=w.acme_auth)  # Pomona sees ABM's assignments
        r = c.post(w.url("profiles"), json={"name": "kiosk", "auth": "none"}, headers=w.acme_auth)
        assert r.status_code == 201 and r.json()["assigned"] == 0
        refused(c.post(w.url("profiles"), json={"name": "kiosk"}, headers=w.acme_auth), 409, "ALREADY_EXISTS")
        bad = c.post(w.url("profiles"), json={"name": "bad", "supervised": False}, headers=w.acme_auth)
        refused(bad, 422, "DEP_PROFILE_REJECTED")
        assert bad.json()["findings"] and "bad" not in w.emu.s.profiles
        r = c.patch(w.url("profiles/kiosk"), json={"await_configured": True}, headers=w.acme_auth)
        assert r.status_code == 200 and r.json()["settings"]["await_device_configured"] is True
        refused(c.patch(w.url("profiles/nope"), json={}, headers=w.acme_auth), 404, "NOT_FOUND")
        names = [x["name"] for x in c.get(w.url("profiles"), headers=w.acme_auth).json()["profiles"]]
        assert names == ["kiosk", "staff"]
        serials = sorted(w.emu.s.devices)
        r = c.post(
            w.url("assignments"),
            json={"profile": "kiosk", "serials": [serials[0], "LATER"]},
            headers=w.acme_auth,
        )
        assert r.status_code == 200 and r.json()["devices"] == {serials[0]: "SUCCESS", "LATER": "pending"}
        kiosk_uuid = c.get(w.url("profiles"), headers=w.acme_auth).json()["profiles"][0]["definitions"][
            "main"
        ]
        assert w.emu.s.devices[serials[0]].profile_uuid == kiosk_uuid
        refused(
            c.post(w.url("assignments"), json={"profile": "nope", "serials": ["X"]}, headers=w.acme_auth),
            404,
            "NOT_FOUND",
        )
        refused(
            c.post(w.url("assignments"), json={"profile": "kiosk", "serials": []}, headers=w.acme_auth),
            422,
            "INVALID_INPUT",
        )
        # a rule: every iPad gets kiosk (the emulator makes every fourth device an iPad mini)
        c.post(w.url("sync"), headers=w.acme_auth)
        r = c.post(
            w.url("rules"),
            json={"profile": "kiosk", "field": "device_family", "value": "ipad"},
            headers=w.acme_auth,
        )
        assert r.status_code == 201, r.text
        rule = r.json()
        ipads = [s for s, d in w.emu.s.devices.items() if d.device_family == "iPad" and s != serials[0]]
        assert ipads and rule["assigned"] == len(ipads)
        assert {w.emu.s.devices[s].profile_uuid for s in ipads} == {kiosk_uuid}
        assert [x["id"] for x in c.get(w.url("rules"), headers=w.acme_auth).json()["rules"]] == [rule["id"]]
        refused(
            c.post(
                w.url("rules"),
                json={"profile": "kiosk", "field": "colour", "value": "x"},
                headers=w.acme_auth,
            ),
            422,
            "INVALID_INPUT",
        )
        c.post(w.url("sync"), headers=w.acme_auth)  # Pomona sees the rule's assignments
        assert c.delete(w.url(f"rules/{rule['id']}"), headers=w.acme_auth).status_code == 204
        assert {w.emu.s.devices[s].profile_uuid for s in ipads} == {staff_uuid}  # the default again
        refused(c.delete(w.url(f"rules/{rule['id']}"), headers=w.acme_auth), 404, "NOT_FOUND")

    def test_release(self, w: World) -> None:
        """Release queues DeviceConfigured for an enrolled device ABM lists (it gets it at its next
        check-in); a serial ABM does not list is NOT_FOUND."""
        from helpers import setup_tenant

        setup = setup_tenant(w.p, "gamma")
        w.emu.add_device("HELD00000001")
        cert = w.client.post(w.url("keypair", "gamma"), headers=w.server_auth).json()["certificate"]
        r = w.client.post(
            w.url("tokens", "gamma"),
            content=w.emu.issue_token(cert.encode()),
            headers={**w.server_auth, "Content-Type": "application/pkcs7-mime"},
        )
        assert r.status_code == 201, r.text
        assert w.client.post(w.url("sync", "gamma"), headers=w.server_auth).status_code == 200
        device = VirtualDevice(setup.enroll_url, client=w.client, serial="HELD00000001")  # type: ignore[arg-type]
        device.enroll()
        device.poll()
        r = w.client.post(w.url("release", "gamma"), json={"serial": "HELD00000001"}, headers=w.server_auth)
        assert r.status_code == 200 and r.json()["request_type"] == "DeviceConfigured", r.text
        assert [h.command_uuid for h in device.poll()] == [r.json()["command_uuid"]]
        refused(
            w.client.post(w.url("release", "gamma"), json={"serial": "NOTINABM"}, headers=w.server_auth),
            404,
            "NOT_FOUND",
        )


class TestTenantIsolation:
    def test_another_tenant_is_not_found(self, w: World) -> None:
        """A tenant token reaches no other tenant's ABM routes (NOT_FOUND, as if missing), and another
        tenant's token, profile or rule named under one's own tenant is NOT_FOUND too."""
        c = w.client
        w.upload()
        c.post(w.url("sync"), headers=w.acme_auth)
        c.post(w.url("profiles"), json={"name": "staff"}, headers=w.acme_auth)
        rule = c.post(
            w.url("rules"), json={"profile": "staff", "field": "model", "value": "iPad*"}, headers=w.acme_auth
        ).json()
        for method, path, body in (
            ("get", "keypair", None),
            ("post", "keypair", None),
            ("get", "tokens", None),
            ("delete", "tokens/main", None),
            ("post", "sync", {}),
            ("get", "devices", None),
            ("get", "profiles", None),
            ("patch", "profiles/staff", {}),
            ("post", "assignments", {"profile": "staff", "serials": ["X"]}),
            ("get", "rules", None),
            ("delete", f"rules/{rule['id']}", None),
            ("post", "release", {"serial": "X"}),
        ):
            kw: dict[str, Any] = {"headers": w.beta_auth} | ({} if body is None else {"json": body})
            refused(c.request(method.upper(), w.url(path), **kw), 404, "NOT_FOUND")
        r = c.post(
            w.url("tokens"), content=b"p7m", headers={**w.beta_auth, "Content-Type": "application/pkcs7-mime"}
        )
        refused(r, 404, "NOT_FOUND")
        # beta's own routes, with acme's object ids: not found in beta
        token_id = c.get(w.url("tokens"), headers=w.acme_auth).json()["tokens"][0]["id"]
        refused(c.delete(w.url(f"tokens/{token_id}", "beta"), headers=w.beta_auth), 404, "NOT_FOUND")
        refused(c.delete(w.url(f"rules/{rule['id']}", "beta"), headers=w.beta_auth), 404, "NOT_FOUND")
        refused(c.patch(w.url("profiles/staff", "beta"), json={}, headers=w.beta_auth), 404, "NOT_FOUND")
        serial = sorted(w.emu.s.devices)[0]
        refused(c.get(w.url(f"devices/{serial}", "beta"), headers=w.beta_auth), 404, "NOT_FOUND")
        assert c.get(w.url("devices", "beta"), headers=w.beta_auth).json()["devices"] == []
        # and nothing of acme's changed
        assert [t["name"] for t in c.get(w.url("tokens"), headers=w.acme_auth).json()["tokens"]] == ["main"]
        assert len(c.get(w.url("rules"), headers=w.acme_auth).json()["rules"]) == 1
        refused(c.get(w.url("tokens"), headers={}), 401, "API_AUTH_FAILED")
